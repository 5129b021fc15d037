"""Sparse Update's contribution analysis (Lin et al., NeurIPS 2022, §3.2): the held-out
loss decrease of short fine-tunes of each layer at a few shares of its input channels, and
of the biases of the last ``k`` layers (run by ``budgetplan.training.contribution``)."""

from __future__ import annotations

from budgetplan.importance.measure import Measure, register_measure


@register_measure
class Contribution(Measure):
    """Values choices, not layers: what the ``sparse-update`` strategy plans with."""

    name = "contribution"
    description = (
        "contribution analysis (Sparse Update): held-out loss decrease of a short fine-tune of each "
        "layer's weight at 1/8, 1/4, 1/2 and all input channels, and of the biases of the last k layers"
    )
    short = "contribution analysis"
    values_choices = True
