"""budgetplan: hardware-aware budget planning for sparse on-device fine-tuning.

>>> import budgetplan
>>> budgetplan.load_device("cortex-m7").budget
262144
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from budgetplan.devices import DeviceProfile, load_device
from budgetplan.errors import BudgetPlanError, InfeasibleError, ModelError, PlanError, ProfileError

if TYPE_CHECKING:
    from budgetplan.callback import BudgetPlanCallback
    from budgetplan.costs import CostTable, LayerCost, layer_costs
    from budgetplan.measure import measure_importance
    from budgetplan.plan import Plan
    from budgetplan.planner import PlannerOptions, solve
    from budgetplan.sparse.fold import fold_batchnorm
    from budgetplan.sparse.meter import SavedTensorMeter

__version__ = "0.1.0"

# torch-dependent names load on first use, so `budgetplan devices` starts fast
_LAZY = {
    "BudgetPlanCallback": "budgetplan.callback",
    "SavedTensorMeter": "budgetplan.sparse.meter",
    "fold_batchnorm": "budgetplan.sparse.fold",
    "CostTable": "budgetplan.costs",
    "LayerCost": "budgetplan.costs",
    "layer_costs": "budgetplan.costs",
    "Plan": "budgetplan.plan",
    "measure_importance": "budgetplan.measure",
    "PlannerOptions": "budgetplan.planner",
    "solve": "budgetplan.planner",
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
