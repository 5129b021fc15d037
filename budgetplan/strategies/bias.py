"""The ``bias`` strategy: every bias and the classifier (TinyTL's FT-Bias, Cai et al.,
NeurIPS 2020)."""

from __future__ import annotations

from typing import Any

from budgetplan.costs.table import CostTable
from budgetplan.strategies.base import Strategy, register_strategy


@register_strategy
class BiasOnly(Strategy):
    """Every bias plus the classifier (FT-Bias in TinyTL, Cai et al., NeurIPS 2020).
    Memory: the ILP with weights frozen."""

    name = "bias"
    layers = "every bias + the classifier (TinyTL's FT-Bias)"
    channels = "–"
    memory = "ILP with weights frozen"
    resample = "never"
    source = "TinyTL FT-Bias, Cai et al., NeurIPS 2020"

    def planner_overrides(self, costs: CostTable) -> dict[str, Any]:
        return {"bias_only": True}
