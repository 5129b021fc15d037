"""``Measure``: how a layer's importance is measured on data, one subclass per measure
(docs/importance.md).

A measure that scores gradients says how a layer's input channels and bias score from
the norms of their gradients at one optimizer step; the callback and ``budgetplan
importance`` sum the scores over the steps they measure (``budgetplan.training.measure``).
A new one is one subclass with a ``name``, registered with ``register_measure``, in a
module of its own::

    @register_measure
    class ChannelCount(Measure):
        name = "count"
        description = "one point per input channel with a gradient"

        def channel_scores(self, norms, layer):
            return (norms > 0).float()

        def bias_score(self, norm, layer):
            return float(norm > 0)

>>> measure = get_measure("rgn")
>>> measure.name, get_measure(measure) is measure
('rgn', True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from budgetplan.registry import Registry

if TYPE_CHECKING:
    from torch import Tensor

    from budgetplan.costs.table import LayerCost


class Measure:
    """How importance is measured. ``per_step``: the scores are a mean per optimizer step
    (else summed over the steps); ``unit``: what a total of the scores measures, where it
    measures something; ``values_choices``: the measure values choices (a layer's share of
    channels, a bias depth) by short trial fine-tunes rather than layers by gradients."""

    name = ""
    description = ""
    short = ""  # how a plan's importance source names it
    unit = ""
    per_step = False
    values_choices = False

    def channel_scores(self, norms: Tensor, layer: LayerCost) -> Tensor:
        """One score per input channel of ``layer`` from the norms of its weight gradient's
        input-channel slices at one step."""
        raise NotImplementedError(f"{type(self).__name__} does not score gradients")

    def bias_score(self, norm: float, layer: LayerCost) -> float:
        """The score of ``layer``'s bias from the norm of its gradient at one step."""
        raise NotImplementedError(f"{type(self).__name__} does not score gradients")

    def source(self, what: str, total: float) -> str:
        """The importance source of scores measured on ``what`` that sum to ``total``."""
        summed = f" (total {total:.4g} {self.unit})" if self.unit else ""
        return f"measured: {self.short or self.name}, {what}{summed}"


MEASURES: Registry[Measure] = Registry(
    lambda name, known: f"unknown importance measure {name!r}; choose one of {', '.join(known)}"
)
register_measure = MEASURES.register  # class decorator: a measure available by its name
DEFAULT_MEASURE = "energy"  # what the callback and ``budgetplan importance`` measure unless told


def get_measure(measure: str | Measure) -> Measure:
    """The measure called ``measure`` (a measure is returned as it is)."""
    return measure if isinstance(measure, Measure) else MEASURES.create(str(measure))
