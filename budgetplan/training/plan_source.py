"""Where the callback's plan comes from: given, loaded from a file, or solved for the
LightningModule on an example input, one plan for every rank (docs/training.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities.model_helpers import is_overridden

from budgetplan.costs.build import layer_costs
from budgetplan.device.profile import load_device
from budgetplan.errors import BudgetPlanError, InfeasibleError, ModelError, PlanError, ProfileError
from budgetplan.plan.model import Plan
from budgetplan.planning.assemble import plan_from_costs
from budgetplan.planning.diagnose import check_flash
from budgetplan.planning.importance import Importance, resolve_importance
from budgetplan.planning.options import planner_options
from budgetplan.planning.problem import Problem
from budgetplan.strategies.base import Strategy, Training
from budgetplan.training.batches import first_tensor

_ERRORS: dict[str, type[BudgetPlanError]] = {
    e.__name__: e for e in (InfeasibleError, ModelError, PlanError, ProfileError)
}


def example_input(trainer: pl.Trainer, pl_module: pl.LightningModule, given: Any = None) -> Any:
    """What to trace the model with: ``given``, the module's ``example_input_array``, or one
    sample of the first training batch (from the datamodule, the module, or the loaders
    given to ``Trainer.fit``)."""
    if given is not None:
        return given
    if pl_module.example_input_array is not None:
        return pl_module.example_input_array
    datamodule = getattr(trainer, "datamodule", None)  # set by fit(datamodule=...)
    if datamodule is not None:
        loader = datamodule.train_dataloader()
    elif is_overridden("train_dataloader", pl_module):
        loader = pl_module.train_dataloader()
    else:
        trainer.fit_loop.setup_data()  # the loaders given to fit(); Lightning reuses them
        loader = trainer.train_dataloader
    tensor = first_tensor(next(iter(loader))) if loader is not None else None
    if tensor is None:
        raise BudgetPlanError(
            "BudgetPlanCallback: no example input to plan with; pass example_input=, set "
            "example_input_array on the LightningModule, or give plan="
        )
    return tensor[:1]


def plan_on_every_rank(trainer: pl.Trainer, solve: Callable[[], Plan]) -> Plan:
    """Rank 0 solves; every rank trains with its plan, or raises its error (the other ranks
    would otherwise wait for a plan forever)."""
    data: dict[str, Any] | None = None
    failure: BudgetPlanError | None = None
    if trainer.is_global_zero:
        try:
            data = solve().to_dict()
        except BudgetPlanError as err:
            failure, data = err, {"error": str(err), "kind": type(err).__name__}
    data = trainer.strategy.broadcast(data, src=0)
    assert data is not None
    if "error" in data:
        raise failure or _ERRORS.get(data["kind"], BudgetPlanError)(data["error"])
    return Plan.from_dict(data, source="the solved plan")


@dataclass
class PlanSource:
    """What the callback plans with: a device (default ``cortex-m7``), a budget, an example
    input, importance and planner options, or a plan given outright (a ``Plan`` or a path)."""

    device: str | None = None
    budget: str | int | None = None
    example_input: Any = None
    importance: str | Importance | None = None
    solve_options: dict[str, Any] = field(default_factory=dict)
    plan: str | Plan | None = None

    def training(self, strategy: Strategy, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Training:
        """What ``strategy`` trains in ``pl_module`` for this fit."""
        if strategy.planned:
            return strategy.prepare(self.resolve(strategy, trainer, pl_module), None)
        # every rank computes the same: tracing and the draws are deterministic
        example = example_input(trainer, pl_module, self.example_input)
        return strategy.prepare(None, self.problem(strategy, pl_module, example))

    def problem(self, strategy: Strategy, pl_module: pl.LightningModule, example: Any) -> Problem:
        """The costs of ``pl_module`` traced on ``example``, with the strategy's planner options."""
        device = load_device(self.device or "cortex-m7")
        costs = layer_costs(pl_module, example, device, model_name=type(pl_module).__name__)
        check_flash(costs, device)
        options = {**self.solve_options, **strategy.planner_overrides(costs)}
        if self.budget is not None:
            options["budget"] = self.budget
        return Problem(costs, device, resolve_importance(self.importance, costs), planner_options(**options))

    def resolve(self, strategy: Strategy, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Plan:
        """The given plan, the plan file, or rank 0's solution."""
        if isinstance(self.plan, Plan):
            return self.plan
        if self.plan is not None:
            return Plan.load(self.plan)
        # on every rank: fetching the first batch may wait for the other ranks
        example = example_input(trainer, pl_module, self.example_input)

        def solve() -> Plan:
            problem = self.problem(strategy, pl_module, example)
            return plan_from_costs(problem.costs, problem.device, problem.importance, problem.options)

        return plan_on_every_rank(trainer, solve)
