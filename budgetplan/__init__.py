"""budgetplan: hardware-aware budget planning for sparse on-device fine-tuning.

>>> import budgetplan
>>> budgetplan.load_device("cortex-m7").budget
262144
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from budgetplan.device.profile import DeviceProfile, load_device
from budgetplan.errors import BudgetPlanError, InfeasibleError, ModelError, PlanError, ProfileError

if TYPE_CHECKING:
    from budgetplan.costs.build import layer_costs
    from budgetplan.costs.table import CostTable, LayerCost
    from budgetplan.plan.model import Plan
    from budgetplan.planning.assemble import solve
    from budgetplan.planning.options import PlannerOptions
    from budgetplan.training.callback import BudgetPlanCallback
    from budgetplan.training.fold import fold_batchnorm
    from budgetplan.training.measure import measure_importance
    from budgetplan.training.meter import SavedTensorMeter

__version__ = "0.1.0"

# torch-dependent names load on first use, so `budgetplan devices` starts fast
_LAZY = {
    "BudgetPlanCallback": "budgetplan.training.callback",
    "SavedTensorMeter": "budgetplan.training.meter",
    "fold_batchnorm": "budgetplan.training.fold",
    "CostTable": "budgetplan.costs.table",
    "LayerCost": "budgetplan.costs.table",
    "layer_costs": "budgetplan.costs.build",
    "Plan": "budgetplan.plan.model",
    "measure_importance": "budgetplan.training.measure",
    "PlannerOptions": "budgetplan.planning.options",
    "solve": "budgetplan.planning.assemble",
}

__all__ = [
    "BudgetPlanCallback",
    "BudgetPlanError",
    "CostTable",
    "DeviceProfile",
    "InfeasibleError",
    "LayerCost",
    "ModelError",
    "Plan",
    "PlanError",
    "PlannerOptions",
    "ProfileError",
    "SavedTensorMeter",
    "fold_batchnorm",
    "layer_costs",
    "load_device",
    "measure_importance",
    "solve",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'budgetplan' has no attribute {name!r}")
