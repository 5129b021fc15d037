"""Training strategies by name: one class each, in one registry (``STRATEGIES``)."""

from budgetplan.strategies import builtin as _builtin  # registers the shipped strategies
from budgetplan.strategies.base import (
    STRATEGIES,
    Draw,
    LayerToTrain,
    Resample,
    Strategy,
    Training,
    get_strategy,
    register_strategy,
)

__all__ = [
    "STRATEGIES",
    "Draw",
    "LayerToTrain",
    "Resample",
    "Strategy",
    "Training",
    "get_strategy",
    "register_strategy",
]
del _builtin
