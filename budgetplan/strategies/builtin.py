"""The strategies budgetplan ships: what trains, which channels, and when the choice changes.

Every budgeted strategy is held to the same limits (budget, training-memory cap, step
latency) with the same memory model (``budgetplan.planning.memory``); they differ in which layers
train and how the input channels inside them are chosen.

========================  ==============================================================
``budgetplan`` (default)  The ILP plan (layers, per-layer channel counts, biases);
                          the input channels of largest weight norm, kept for the whole
                          fit (it trained best in the README's resampling study; the plan
                          is valued by the linear utility); each unit's gradient clipped
                          to 0.5 of its weight norm (adaptive gradient clipping, Brock et
                          al., ICML 2021). Memory: the plan's prediction, the same every
                          step.
``trady``                 TraDy (Quélennec et al., ICLR 2026, §4): the fewest layers
                          holding 97% of the cumulative importance (top-K), then input
                          channels drawn uniformly at random across those layers, one by
                          one, until the next would break a limit; redrawn every epoch, so
                          per-layer counts vary. The classifier (the required layers) is
                          trained in full first. Memory: each epoch's draw is checked
                          with the memory model before it is used.
``gradient``              MeDyate-style importance sampling: the ILP plan's layers and
                          counts, channels drawn each epoch with probability proportional
                          to the weight-gradient norm seen since the last draw. Memory: the
                          plan's, plus one score per planned input channel (host state).
``dynamic-gradient``      Dynamic Gradient Sparse Update (Li & Chang 2025): the ILP plan's
                          layers and counts, and at every step the channels with the
                          largest gradient signal. Only selected channels have a gradient
                          (that is what saves the memory), so the signal of a channel is
                          its last measured weight-gradient norm; a channel never measured
                          ranks first. Memory: the plan's, plus one score per channel.
``sparse-update``         Sparse Update (Lin et al., NeurIPS 2022, §3.2): contribution
                          analysis on the training data (short trial fine-tunes of the
                          biases of the last k layers, and of each late layer's weight at
                          1/8, 1/4, 1/2 and all input channels), then the scheme of largest
                          summed contribution under the limits (the ILP solves the search
                          exactly); input channels of largest weight norm, never resampled.
                          With ``importance=`` given, the ILP's layers under that
                          importance with the same channel rule. Memory: the plan's.
``classifier``            The last layer (and its bias) only, as far as the budget allows.
``bias``                  Every bias plus the classifier (FT-Bias in TinyTL, Cai et al.,
                          NeurIPS 2020). Memory: the ILP with weights frozen.
``full``                  Dense fine-tuning of every parameter, BatchNorm statistics
                          included; no budget, for reference. Its prediction (frozen-BN
                          accounting, every channel) is reported, never enforced.
========================  ==============================================================
"""

from __future__ import annotations

from typing import Any

from budgetplan.costs.table import CostTable
from budgetplan.plan.model import Plan
from budgetplan.planning.assemble import dense_plan
from budgetplan.planning.options import SPARSE_UPDATE_RATIOS
from budgetplan.planning.problem import Problem
from budgetplan.strategies.base import Strategy, Training, register_strategy
from budgetplan.strategies.trady import TraDy


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
    sampler = "magnitude"
    resample = "never"
    clip_ratio = 0.5
    tries_importances = True
    source = "ILP plan, largest-norm channels kept"


register_strategy(TraDy)  # after budgetplan: the registry lists the default first


@register_strategy
class GradientWeighted(Strategy):
    """MeDyate-style importance sampling: the ILP plan's layers and counts, channels drawn
    each epoch with probability proportional to the weight-gradient norm seen since the
    last draw. Memory: the plan's, plus one score per planned input channel (host state)."""

    name = "gradient"
    sampler = "gradient"
    source = "MeDyate-style gradient-weighted sampling"


@register_strategy
class DynamicGradient(Strategy):
    """Dynamic Gradient Sparse Update (Li & Chang 2025): the ILP plan's layers and counts,
    and at every step the channels with the largest gradient signal. Only selected channels
    have a gradient (that is what saves the memory), so the signal of a channel is its last
    measured weight-gradient norm; a channel never measured ranks first. Memory: the plan's,
    plus one score per channel."""

    name = "dynamic-gradient"
    sampler = "largest"
    resample = "step"
    source = "Li & Chang 2025"


@register_strategy
class SparseUpdate(Strategy):
    """Sparse Update (Lin et al., NeurIPS 2022, §3.2): contribution analysis on the training
    data, then the scheme (biases of the last k layers, weights of some layers at ratios
    1/8, 1/4, 1/2 or 1) of largest summed contribution under the limits, solved exactly by
    the ILP; the input channels of largest weight norm, never resampled. With
    ``importance=`` given, the ILP's layers under that importance with the same channel
    rule. Memory: the plan's."""

    name = "sparse-update"
    sampler = "magnitude"
    resample = "never"
    measure = "contribution"
    source = "Lin et al., NeurIPS 2022"

    def planner_overrides(self, costs: CostTable) -> dict[str, Any]:
        return {"ratios": SPARSE_UPDATE_RATIOS}  # the ratios its analysis measures


@register_strategy
class Classifier(Strategy):
    """The last layer (and its bias) only, as far as the budget allows."""

    name = "classifier"
    resample = "never"
    source = "last layer only"

    def planner_overrides(self, costs: CostTable) -> dict[str, Any]:
        return {"include": (costs.layers[-1].name,)}


@register_strategy
class BiasOnly(Strategy):
    """Every bias plus the classifier (FT-Bias in TinyTL, Cai et al., NeurIPS 2020).
    Memory: the ILP with weights frozen."""

    name = "bias"
    resample = "never"
    source = "TinyTL FT-Bias, Cai et al., NeurIPS 2020"

    def planner_overrides(self, costs: CostTable) -> dict[str, Any]:
        return {"bias_only": True}


@register_strategy
class Full(Strategy):
    """Dense fine-tuning of every parameter, BatchNorm statistics included; no budget, for
    reference. Its prediction (frozen-BN accounting, every channel) is reported, never enforced."""

    name = "full"
    resample = "never"
    planned = False
    dense = True
    source = "dense fine-tuning, no budget"

    def prepare(self, plan: Plan | None, problem: Problem | None) -> Training:
        assert problem is not None, "the dense plan is predicted from the problem"
        return Training((), (), dense_plan(problem))
