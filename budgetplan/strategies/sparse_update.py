"""The ``sparse-update`` strategy: Sparse Update's contribution analysis and scheme search
(Lin et al., NeurIPS 2022), solved exactly by the ILP."""

from __future__ import annotations

from typing import Any

from budgetplan.costs.table import CostTable
from budgetplan.planning.options import SPARSE_UPDATE_RATIOS
from budgetplan.strategies.base import Strategy, register_strategy


@register_strategy
class SparseUpdate(Strategy):
    """Sparse Update (Lin et al., NeurIPS 2022, §3.2): contribution analysis on the training
    data, then the scheme (biases of the last k layers, weights of some layers at ratios
    1/8, 1/4, 1/2 or 1) of largest summed contribution under the limits, solved exactly by
    the ILP; the input channels of largest weight norm, never resampled. With
    ``importance=`` given, the ILP's layers under that importance with the same channel
    rule. Memory: the plan's."""

    name = "sparse-update"
    layers = (
        "Sparse Update (Lin et al. 2022): contribution analysis on the training data (biases of the last k "
        "layers; each late layer's weight at 1/8–1 of its channels), then the best scheme under the limits, "
        "solved by the ILP"
    )
    channels = "largest weight norm, never resampled"
    memory = "plan's"
    sampler = "magnitude"
    resample = "never"
    measure = "contribution"
    source = "Lin et al., NeurIPS 2022"

    def planner_overrides(self, costs: CostTable) -> dict[str, Any]:
        return {"ratios": SPARSE_UPDATE_RATIOS}  # the ratios its analysis measures
