"""Why no plan fits: the smallest budget, or the other limit that stands in the way."""

from __future__ import annotations

import dataclasses
import math

from budgetplan.costs.table import CostTable
from budgetplan.device.profile import DeviceProfile
from budgetplan.errors import InfeasibleError
from budgetplan.planning.ilp import _Program
from budgetplan.planning.importance import Importance
from budgetplan.planning.options import PlannerOptions
from budgetplan.units import format_bytes


def _minimum(
    goal: str,
    costs: CostTable,
    device: DeviceProfile,
    importance: Importance,
    options: PlannerOptions,
    allowed: set[str],
    required: tuple[str, ...],
) -> float | None:
    program = _Program(costs, device, importance, options, allowed, required, goal=goal)
    status, _ = program.solve(options.solver, options.time_limit, options.verbose)
    return program.value() if status in ("optimal", "feasible") else None


def budget_argument(n_bytes: float) -> str:
    """A ``--budget`` value at least ``n_bytes``, rounded up to a whole KB (or MB)."""
    if n_bytes < 16 * 1024**2:
        return f"{max(1, math.ceil(n_bytes / 1024 - 1e-9))}KB"
    return f"{math.ceil(n_bytes / 1024**2 - 1e-9)}MB"


def _infeasible(
    costs: CostTable,
    device: DeviceProfile,
    importance: Importance,
    options: PlannerOptions,
    allowed: set[str],
    required: tuple[str, ...],
) -> InfeasibleError:
    budget = options.budget_on(device)
    args = (costs, device, importance, options, allowed, required)
    what = f"no plan for {costs.model} fits a budget of {format_bytes(budget)} on {device.name}"
    if required:
        what += f" while updating {', '.join(required)}"
    smallest = _minimum("peak", *args)
    if smallest is not None:
        arg = budget_argument(smallest)
        return InfeasibleError(
            f"{what}: the smallest budget at which a plan is feasible is {format_bytes(smallest)} (--budget {arg})",
            smallest_budget=math.ceil(smallest),
        )
    # the budget is not the only obstacle: find which other limit is
    hints = []
    unlimited = dataclasses.replace(options, budget=device.sram * 1024)
    if options.training_memory is not None:
        tm = _minimum("training_memory", costs, device, importance, unlimited, allowed, required)
        if tm is not None and tm > options.training_memory:
            hints.append(
                f"the smallest training memory is {format_bytes(tm)} (--training-memory {budget_argument(tm)})"
            )
    latency = options.latency_on(device)
    if latency is not None:
        macs = _minimum("compute", costs, device, importance, unlimited, allowed, required)
        if macs is not None:
            seconds = macs / device.macs_per_second
            if seconds > latency:
                hints.append(f"the shortest step takes {seconds:.3g} s, above the limit of {latency:g} s")
    detail = "; ".join(hints) if hints else "no plan satisfies the other limits at any budget"
    return InfeasibleError(f"{what}: {detail}")


def check_flash(costs: CostTable, device: DeviceProfile) -> None:
    """Raise ``InfeasibleError`` when the whole model does not fit the device's flash."""
    flash_needed = costs.model_bytes(device)
    if flash_needed > device.flash:
        raise InfeasibleError(
            f"{costs.model} needs {format_bytes(flash_needed)} of flash at {device.bits.weight}-bit weights, "
            f"but {device.name} has {format_bytes(device.flash)}: it does not fit by "
            f"{format_bytes(flash_needed - device.flash)}"
        )
