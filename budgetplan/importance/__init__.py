"""Layer importance, the weights of the planner's objective (docs/importance.md).

``scores``: what an importance is (``Importance``), the prior, importance files and the
tables shipped in ``budgetplan/tables/``. ``measure``: how importance is measured on data,
one registered ``Measure`` per module (``energy``, ``rgn``, ``contribution``), imported
here so that every shipped measure is known by its name. Measuring runs a model and so
lives with the rest of the torch state, in ``budgetplan.training.measure``.

>>> from budgetplan.importance import MEASURES
>>> sorted(MEASURES)
['contribution', 'energy', 'rgn']
"""

from budgetplan.importance import contribution, energy, rgn  # noqa: F401  (each registers its measure)
from budgetplan.importance.measure import DEFAULT_MEASURE, MEASURES, Measure, get_measure, register_measure
from budgetplan.importance.scores import Importance, resolve_importance

__all__ = [
    "DEFAULT_MEASURE",
    "MEASURES",
    "Importance",
    "Measure",
    "get_measure",
    "register_measure",
    "resolve_importance",
]
