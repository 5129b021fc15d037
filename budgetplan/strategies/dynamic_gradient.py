"""The ``dynamic-gradient`` strategy: the ILP plan's layers and counts, at every step the
channels of largest gradient signal (Li & Chang 2025)."""

from __future__ import annotations

from budgetplan.strategies.base import Strategy, register_strategy


@register_strategy
class DynamicGradient(Strategy):
    """Dynamic Gradient Sparse Update (Li & Chang 2025): the ILP plan's layers and counts,
    and at every step the channels with the largest gradient signal. Only selected channels
    have a gradient (that is what saves the memory), so the signal of a channel is its last
    measured weight-gradient norm; a channel never measured ranks first. Memory: the plan's,
    plus one score per channel."""

    name = "dynamic-gradient"
    layers = "ILP plan"
    channels = "the largest last-measured gradient norms (Li & Chang 2025); every step"
    memory = "plan's, + one score per channel on the host"
    sampler = "largest"
    resample = "step"
    source = "Li & Chang 2025"
