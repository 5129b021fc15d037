"""Training strategies by name: what trains, which channels, and when the choice changes.

Every budgeted strategy is held to the same limits (budget, training-memory cap, step
latency) with the same memory model (``budgetplan.planning.memory``); they differ in which layers
train and how the input channels inside them are chosen.

========================  ==============================================================
``budgetplan`` (default)  The ILP plan (layers, per-layer channel counts, biases);
                          uniformly random channels, redrawn every epoch. Memory: the
                          plan's prediction, the same every step.
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
``sparse-update``         Sparse Update (Lin et al., NeurIPS 2022): static; the ILP plan's
                          layers, ratios and biases, the input channels of largest weight
                          norm, never resampled. Memory: the plan's.
``classifier``            The last layer (and its bias) only, as far as the budget allows.
``bias``                  Every bias plus the classifier (FT-Bias in TinyTL, Cai et al.,
                          NeurIPS 2020). Memory: the ILP with weights frozen.
``full``                  Dense fine-tuning of every parameter, BatchNorm statistics
                          included; no budget, for reference. Its prediction (frozen-BN
                          accounting, every channel) is reported, never enforced.
========================  ==============================================================
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from budgetplan.costs.table import CostTable
from budgetplan.device.profile import DeviceProfile
from budgetplan.errors import BudgetPlanError, InfeasibleError
from budgetplan.planning.importance import TOP_SHARE, Importance, top_layers
from budgetplan.planning.memory import Choice
from budgetplan.planning.options import PlannerOptions
from budgetplan.planning.solve import fits
from budgetplan.units import format_bytes


@dataclass(frozen=True)
class Strategy:
    """How a named strategy chooses channels: ``sampler`` (``budgetplan.training.samplers``) redrawn
    per ``resample`` (``epoch``, ``step`` or ``never``); ``planned`` says whether its
    layers come from the ILP."""

    name: str
    sampler: str
    resample: str
    planned: bool
    source: str


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("budgetplan", "uniform", "epoch", True, "ILP plan, uniform channels each epoch"),
        Strategy("trady", "uniform", "epoch", False, "Quélennec et al., ICLR 2026"),
        Strategy("gradient", "gradient", "epoch", True, "MeDyate-style gradient-weighted sampling"),
        Strategy("dynamic-gradient", "largest", "step", True, "Li & Chang 2025"),
        Strategy("sparse-update", "magnitude", "never", True, "Lin et al., NeurIPS 2022"),
        Strategy("classifier", "uniform", "never", True, "last layer only"),
        Strategy("bias", "uniform", "never", True, "TinyTL FT-Bias, Cai et al., NeurIPS 2020"),
        Strategy("full", "uniform", "never", False, "dense fine-tuning, no budget"),
    )
}


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``, or a clear error listing the known ones."""
    if name not in STRATEGIES:
        raise BudgetPlanError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def planner_overrides(name: str, costs: CostTable) -> dict[str, object]:
    """The ``PlannerOptions`` fields a planned strategy sets for ``costs``."""
    if name == "classifier":
        return {"include": (costs.layers[-1].name,)}
    if name == "bias":
        return {"bias_only": True}
    return {}


def required_layers(costs: CostTable, options: PlannerOptions) -> tuple[str, ...]:
    """The layers TraDy trains in full: ``options.require``, by default the classifier."""
    return options.require if options.require is not None else (costs.layers[-1].name,)


def trady_draw(
    costs: CostTable,
    device: DeviceProfile,
    importance: Importance,
    options: PlannerOptions,
    seed: int,
    share: float = TOP_SHARE,
) -> tuple[dict[str, Choice], dict[str, list[int]]]:
    """One epoch of TraDy: the choices and the drawn input channels of each layer.

    The required layers (default: the classifier) train in full; then channels of the
    top-K layers, taken in one uniformly random order over all of them, join while every
    limit still holds. Memory only grows along that order, so the longest fitting prefix is
    found by bisection.

    >>> import torch
    >>> from budgetplan.costs.build import layer_costs
    >>> from budgetplan.device.profile import load_device
    >>> from budgetplan.planning.importance import prior_importance
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(16, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(288, 4))
    >>> costs = layer_costs(net, torch.zeros(1, 16, 8, 8))
    >>> options = PlannerOptions(budget=4 * 1024)
    >>> choices, drawn = trady_draw(costs, load_device("cortex-m7"), prior_importance(costs), options, seed=0)
    >>> choices["3"], choices["0"].channels, drawn["0"]
    (Choice(channels=288, bias=True), 11, [1, 2, 3, 5, 7, 8, 9, 10, 11, 13, 14])
    """
    required = required_layers(costs, options)
    base = {name: Choice(costs.layer(name).in_channels, costs.layer(name).bias_elements > 0) for name in required}
    if not fits(costs, device, options, base):
        raise InfeasibleError(
            f"trady: training {', '.join(required)} in full does not fit a budget of "
            f"{format_bytes(options.budget_on(device))} on {device.name}"
        )
    layers = [name for name in top_layers(importance, share) if name not in base]
    pool = [(name, c) for name in layers for c in range(costs.layer(name).in_channels)]
    random.Random(seed).shuffle(pool)

    def choices_of(n: int) -> dict[str, Choice]:
        counts: dict[str, int] = {}
        for name, _ in pool[:n]:
            counts[name] = counts.get(name, 0) + 1
        return {**base, **{name: Choice(count) for name, count in counts.items()}}

    low, high = 0, len(pool)  # choices_of(low) fits; find the largest n that does
    while low < high:
        mid = (low + high + 1) // 2
        if fits(costs, device, options, choices_of(mid)):
            low = mid
        else:
            high = mid - 1
    drawn: dict[str, list[int]] = {name: list(range(costs.layer(name).in_channels)) for name in base}
    for name, c in pool[:low]:
        drawn.setdefault(name, []).append(c)
    return choices_of(low), {name: sorted(idx) for name, idx in drawn.items()}
