"""Memory-lean sparse training: autograd functions, the mode that applies them, the meter."""

from budgetplan.sparse.lean import LeanAutograd
from budgetplan.sparse.meter import SavedTensorMeter

__all__ = ["LeanAutograd", "SavedTensorMeter"]
