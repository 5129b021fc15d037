"""Gradient energy: the first-order loss decrease of one SGD step (docs/importance.md).

A step of learning rate ``lr`` on the channels ``c`` of a weight lowers the loss by
``lr · ||dL/dW[:, c]||²`` to first order, so the squared gradient norm, averaged over the
steps, is what training that slice is worth per step and per unit learning rate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from budgetplan.importance.measure import Measure, register_measure
from budgetplan.importance.scores import ENERGY_UNIT

if TYPE_CHECKING:
    from torch import Tensor

    from budgetplan.costs.table import LayerCost


@register_measure
class Energy(Measure):
    """Gradient energy, ``||dL/dW[:, c]||²`` per step (the callback's default measure)."""

    name = "energy"
    description = "gradient energy: first-order loss decrease per SGD step per unit learning rate, ||dL/dW[:, c]||^2"
    short = "gradient energy"
    unit = ENERGY_UNIT
    per_step = True

    def channel_scores(self, norms: Tensor, layer: LayerCost) -> Tensor:
        return norms * norms

    def bias_score(self, norm: float, layer: LayerCost) -> float:
        return norm * norm
