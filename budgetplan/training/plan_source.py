"""Where the callback's plan comes from when it solves one: an example input, and one plan for every rank."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities.model_helpers import is_overridden

from budgetplan.errors import BudgetPlanError, InfeasibleError, ModelError, PlanError, ProfileError
from budgetplan.plan.model import Plan
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
    tensor = first_tensor(next(iter(loader)))
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
