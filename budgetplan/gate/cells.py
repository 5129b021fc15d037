"""The cells of a check: each device × budget solved for one model, and what fails.

A cell fails when no plan fits, when its plan breaks a stated floor (``min_trained``: the
share of the model's plannable weights trained; ``max_peak``: the predicted peak as a
share of the device's SRAM), or when, against the baseline plan committed for the same
device and budget, its peak grew or its trained share fell by more than the tolerance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from budgetplan.costs.table import CostTable
from budgetplan.device.profile import DeviceProfile
from budgetplan.errors import BudgetPlanError, InfeasibleError, PlanError
from budgetplan.plan.model import Plan
from budgetplan.planning.assemble import plan_problem
from budgetplan.planning.problem import Problem
from budgetplan.units import format_bytes


@dataclass(frozen=True)
class Limits:
    """The floors and tolerances a cell is held to (shares in [0, 1]; None: not checked)."""

    min_trained: float | None = None
    max_peak: float | None = None
    peak_growth: float = 0.01  # against the baseline: the peak may grow by this share
    trained_drop: float = 0.0  # and the trained share fall by this many points


@dataclass
class Cell:
    """One device at one budget: its plan, or why there is none, and what failed."""

    device: DeviceProfile
    budget: int
    plan: Plan | None = None
    failures: list[str] = field(default_factory=list)
    baseline: Plan | None = None

    @property
    def name(self) -> str:
        return f"{self.device.name} @ {format_bytes(self.budget)}"

    @property
    def passed(self) -> bool:
        return not self.failures


def solve_cells(
    devices: Sequence[DeviceProfile],
    budgets: Sequence[int] | None,
    trace: Callable[[DeviceProfile], CostTable],
    importance: str | None,
    options: dict[str, Any],
) -> list[Cell]:
    """Every device at every budget (each device's own when ``budgets`` is None), the
    model traced once per executor."""
    traces: dict[str, CostTable] = {}
    cells = []
    for device in devices:
        key = device.executor.value
        if key not in traces:
            traces[key] = trace(device)
        costs = traces[key]  # the trace depends on the device only through its executor
        for budget in budgets or [device.budget]:
            cell = Cell(device, budget)
            try:
                cell.plan = plan_problem(Problem.from_costs(costs, device, importance, **{**options, "budget": budget}))
            except InfeasibleError as err:
                cell.failures.append(f"infeasible: {err}")
            cells.append(cell)
    return cells


def apply_limits(cells: Sequence[Cell], limits: Limits) -> None:
    """Add to each cell the floors its plan breaks."""
    for cell in cells:
        plan = cell.plan
        if plan is None:
            continue
        trained, peak = plan.trained_fraction(), plan.predicted.peak_bytes / cell.device.sram
        if limits.min_trained is not None and trained < limits.min_trained:
            cell.failures.append(f"trains {trained:.1%} of the weights, under the floor of {limits.min_trained:.1%}")
        if limits.max_peak is not None and peak > limits.max_peak:
            cell.failures.append(
                f"peak {format_bytes(plan.predicted.peak_bytes)} is {peak:.1%} of the SRAM, over {limits.max_peak:.1%}"
            )


def load_baselines(directory: Path) -> dict[tuple[str, int], Plan]:
    """The plans under ``directory`` (``.yaml``, ``.yml``, ``.json``) by device and budget."""
    if not directory.is_dir():
        raise BudgetPlanError(f"--baseline {directory}: not a directory of plan files")
    plans = {}
    for path in sorted(directory.iterdir()):
        if path.suffix in (".yaml", ".yml", ".json"):
            try:
                plan = Plan.load(path)
            except PlanError as err:
                raise BudgetPlanError(f"--baseline: {err}") from None
            plans[(plan.device.name, plan.budget_bytes)] = plan
    return plans


def compare_baselines(cells: Sequence[Cell], baselines: dict[tuple[str, int], Plan], limits: Limits) -> None:
    """Add to each cell how its plan fell behind the baseline plan of its device and budget."""
    for cell in cells:
        before = baselines.get((cell.device.name, cell.budget))
        cell.baseline = before
        if before is None or cell.plan is None:
            continue
        was, now = before.predicted.peak_bytes, cell.plan.predicted.peak_bytes
        if now > was * (1 + limits.peak_growth):
            cell.failures.append(
                f"peak grew by {format_bytes(now - was)} ({now / was - 1:+.1%}) over the baseline's "
                f"{format_bytes(was)}, more than {limits.peak_growth:.1%}"
            )
        trained_was, trained_now = before.trained_fraction(), cell.plan.trained_fraction()
        if trained_now < trained_was - limits.trained_drop - 1e-12:
            cell.failures.append(
                f"trained share fell by {100 * (trained_was - trained_now):.2f} points, from {trained_was:.2%} "
                f"in the baseline to {trained_now:.2%}"
            )


def baseline_name(cell: Cell) -> str:
    """The file a cell's plan is saved as in a baseline directory."""
    return f"{cell.device.name}-{cell.budget}.yaml"
