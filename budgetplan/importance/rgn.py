"""TraDy's reweighted gradient norm (Quélennec et al. 2026, §3): a channel's gradient norm
divided by what training it costs, so that cheap channels rank higher (docs/importance.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from budgetplan.importance.measure import Measure, register_measure

if TYPE_CHECKING:
    from torch import Tensor

    from budgetplan.costs.table import LayerCost


@register_measure
class ReweightedGradientNorm(Measure):
    """``||dL/dW[:, c]|| / (C_W + C_A)``, summed over the steps; a bias's norm per element."""

    name = "rgn"
    description = "reweighted gradient norm (TraDy): sum over input channels of ||dL/dW[:, c]|| / (C_W + C_A)"
    short = "reweighted gradient norm"

    def channel_scores(self, norms: Tensor, layer: LayerCost) -> Tensor:
        return norms / (layer.weight_elements_per_channel + layer.activation_elements_per_channel)

    def bias_score(self, norm: float, layer: LayerCost) -> float:
        return norm / max(1, layer.bias_elements)
