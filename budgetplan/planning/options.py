"""What the planner may choose and the limits it keeps: ``PlannerOptions``.

>>> options = planner_options(budget="200KB", utility="linear")
>>> options.budget, options.utility is Utility.LINEAR, options.solver
(204800, True, <Solver.AUTO: 'auto'>)
>>> PlannerOptions(solver="glpk")
Traceback (most recent call last):
...
budgetplan.errors.BudgetPlanError: solver must be one of auto, highs, cbc, got 'glpk'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from budgetplan.device.profile import DeviceProfile
from budgetplan.enums import EnumStr
from budgetplan.errors import BudgetPlanError
from budgetplan.plan.prediction import Accounting
from budgetplan.units import parse_bytes, parse_seconds

DEFAULT_RATIOS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 3 / 4, 1.0)
MAX_BATCH = 65536  # samples per step; beyond it the byte counts leave what the solvers hold exactly
SPARSE_UPDATE_RATIOS = (1 / 8, 1 / 4, 1 / 2, 1.0)  # Lin et al. 2022, §3.2: the ratios of its analysis


class Utility(EnumStr):
    """What training a fraction ``r`` of a layer's input channels is worth (docs/planner.md)."""

    LINEAR = "linear"  # r: a static selection (the default, as the callback trains by default)
    COVERAGE = "coverage"  # 1-(1-r)^E: channels reached at least once in E epochs of resampling


class Solver(EnumStr):
    """The MILP solver: HiGHS when installed (``auto``), or one named."""

    AUTO = "auto"
    HIGHS = "highs"
    CBC = "cbc"


class Runtime(EnumStr):
    """A runtime whose plan format a plan must fit (``expressible``; planning/expressible.py)."""

    TINY_TRAINING = "tiny-training"


@dataclass(frozen=True)
class PlannerOptions:
    """What the planner may choose and the limits it must keep.

    ``budget`` and ``max_step_latency`` default to the device's. ``training_memory``
    caps the published accounting (updated weights and biases plus saved tensors, no
    working buffers) on top of the physical budget, counted as ``accounting`` says
    (budgetplan's count, or Sparse Update's). ``require`` lists name patterns of
    layers trained in full (every channel and the bias); ``None`` means the classifier
    (the last layer) when it is allowed. ``include``/``exclude`` are name patterns (``fnmatch``).
    ``utility`` is ``linear`` (``r``: the channels kept for the whole fit, the callback's
    default) or ``coverage`` (``1-(1-r)^E``, the expected fraction of a layer's channels
    trained at least once in ``epochs`` epochs of resampling). ``expressible``: a runtime
    whose plan format the plan must fit (``tiny-training``: a ``backward_config``).
    ``bias_only`` keeps the weights of all but the required layers frozen (bias updates only).
    ``verbose`` lets the solver's own log through, on stderr.
    """

    budget: int | None = None
    training_memory: int | None = None
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    epochs: int = 10
    utility: Utility = Utility.LINEAR
    max_layers: int | None = None
    require: tuple[str, ...] | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    batch_size: int = 1
    max_step_latency: float | None = None
    time_limit: float = 10.0
    solver: Solver = Solver.AUTO
    bias_only: bool = False
    verbose: bool = False
    accounting: Accounting = Accounting.BUDGETPLAN
    expressible: Runtime | None = None

    def __post_init__(self) -> None:
        # choices may be given as text, as on the command line
        kinds = (("utility", Utility), ("solver", Solver), ("accounting", Accounting), ("expressible", Runtime))
        for name, kind in kinds:
            value = getattr(self, name)
            if value is None and name == "expressible":
                continue
            try:
                object.__setattr__(self, name, kind.from_str(value))
            except ValueError:
                raise BudgetPlanError(f"{name} must be one of {', '.join(kind.choices())}, got {value!r}") from None

    def budget_on(self, device: DeviceProfile) -> int:
        """The budget in force: this option, else the device's."""
        return self.budget if self.budget is not None else device.budget

    def latency_on(self, device: DeviceProfile) -> float | None:
        """The step latency limit in force: this option, else the device's (or none)."""
        return self.max_step_latency if self.max_step_latency is not None else device.max_step_latency

    def check(self) -> None:
        """Raise ``BudgetPlanError`` naming the first option out of its range."""
        if not self.ratios or any(not 0 < r <= 1 for r in self.ratios):
            raise BudgetPlanError(f"ratios must lie in (0, 1], got {list(self.ratios)}")
        if self.epochs < 1:
            raise BudgetPlanError(f"epochs must be at least 1, got {self.epochs}")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise BudgetPlanError(f"batch size must be from 1 to {MAX_BATCH}, got {self.batch_size}")
        if self.max_layers is not None and self.max_layers < 1:
            raise BudgetPlanError(f"max_layers must be at least 1, got {self.max_layers}")
        if self.time_limit <= 0:
            raise BudgetPlanError(f"time limit must be positive, got {self.time_limit}")
        for name, value in (("budget", self.budget), ("training_memory", self.training_memory)):
            if value is not None and value <= 0:
                raise BudgetPlanError(f"{name} must be positive, got {value}")


def planner_options(**options: Any) -> PlannerOptions:
    """``PlannerOptions`` from keyword arguments; sizes (``"256KB"``), durations (``"2s"``)
    and lists are accepted where the fields are numbers and tuples."""
    for key in ("budget", "training_memory"):
        if isinstance(options.get(key), str):
            options[key] = _parse(parse_bytes, options[key], key)
    if isinstance(options.get("max_step_latency"), str):
        options["max_step_latency"] = _parse(parse_seconds, options["max_step_latency"], "max_step_latency")
    for key in ("ratios", "require", "include", "exclude"):
        if isinstance(options.get(key), Sequence) and not isinstance(options[key], str):
            options[key] = tuple(options[key])
    unknown = set(options) - set(PlannerOptions.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown planner option(s): {', '.join(sorted(unknown))}")
    return PlannerOptions(**options)


def _parse(reader: Any, value: str, key: str) -> Any:
    try:
        return reader(value)
    except ValueError as err:
        raise BudgetPlanError(f"{key}: {err}") from None
