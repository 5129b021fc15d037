"""The ``classifier`` strategy: the last layer only."""

from __future__ import annotations

from typing import Any

from budgetplan.costs.table import CostTable
from budgetplan.strategies.base import Strategy, register_strategy


@register_strategy
class Classifier(Strategy):
    """The last layer (and its bias) only, as far as the budget allows."""

    name = "classifier"
    layers = "last layer"
    channels = "all"
    memory = "ILP restricted to the last layer"
    resample = "never"
    source = "last layer only"

    def planner_overrides(self, costs: CostTable) -> dict[str, Any]:
        return {"include": (costs.layers[-1].name,)}
