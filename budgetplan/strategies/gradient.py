"""The ``gradient`` strategy: the ILP plan's layers and counts, channels drawn each epoch
in proportion to their gradient (MeDyate-style)."""

from __future__ import annotations

from budgetplan.strategies.base import Strategy, register_strategy


@register_strategy
class GradientWeighted(Strategy):
    """MeDyate-style importance sampling: the ILP plan's layers and counts, channels drawn
    each epoch with probability proportional to the weight-gradient norm seen since the
    last draw. Memory: the plan's, plus one score per planned input channel (host state)."""

    name = "gradient"
    layers = "ILP plan"
    channels = "∝ gradient norm seen since the last draw (MeDyate-style); every epoch"
    memory = "plan's, + one score per channel on the host"
    sampler = "gradient"
    source = "MeDyate-style gradient-weighted sampling"
