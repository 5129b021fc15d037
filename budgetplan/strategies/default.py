"""The default strategy, ``budgetplan``: the ILP plan, the channels of largest weight
norm kept for the whole fit, adaptive gradient clipping."""

from __future__ import annotations

from budgetplan.strategies.base import Strategy, register_strategy


@register_strategy
class BudgetPlan(Strategy):
    """The ILP plan (layers, per-layer channel counts, biases); the input channels of
    largest weight norm, kept for the whole fit (``resample="epoch"`` with
    ``sampler="uniform"`` redraws them every epoch, as TraDy does); each trained unit's
    gradient clipped to 0.5 of its weight norm (``budgetplan.training.clipping``), so a plan
    that trains high-ratio layers stays stable at the rate that suits the rest. Memory: the
    plan's prediction, the same every step. Where a table ships for the network, the plan
    of that table or of gradient energy measured on the training data, whichever a short
    trial fine-tune prefers (docs/importance.md)."""

    name = "budgetplan"
    layers = "ILP plan (linear utility); each unit's gradient clipped to 0.5 of its weight norm"
    channels = "plan's count per layer, largest weight norm, kept for the whole fit"
    memory = "plan's prediction, the same every step"
    sampler = "magnitude"
    resample = "never"
    clip_ratio = 0.5
    # where its channels are redrawn, those that come back keep their optimizer state: over
    # fine-tunes of 30 epochs it was ahead of reset in every pair (docs/results.md)
    returning_state = "keep"
    tries_importances = True
    source = "ILP plan, largest-norm channels kept"
