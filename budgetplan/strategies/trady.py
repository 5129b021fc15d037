"""TraDy (Quélennec et al., ICLR 2026, §4): channels across the top-K layers, until a limit."""

from __future__ import annotations

import random

from budgetplan.costs.table import CostTable
from budgetplan.device.profile import DeviceProfile
from budgetplan.errors import InfeasibleError
from budgetplan.importance.scores import TOP_SHARE, Importance, ranking, top_layers
from budgetplan.plan.model import Plan
from budgetplan.planning.assemble import plan_from_choices
from budgetplan.planning.memory import Choice
from budgetplan.planning.objective import objective
from budgetplan.planning.options import PlannerOptions
from budgetplan.planning.problem import Problem
from budgetplan.planning.solve import Solution, fits_with_stage, patch_stage
from budgetplan.strategies.base import Draw, LayerToTrain, Strategy, Training, register_strategy
from budgetplan.units import format_bytes


@register_strategy
class TraDy(Strategy):
    """The fewest layers holding 97% of the cumulative importance (top-K), then input
    channels drawn uniformly at random across those layers, one by one, until the next
    would break a limit; redrawn every epoch, so per-layer counts vary. The classifier
    (the required layers) is trained in full first. Where the top-K layers fit in full,
    TraDy trains within the budget it is given: the next layers down its ranking join, one
    at a time, while memory remains (``reached_layers``). Memory: each epoch's draw is
    checked with the memory model before it is used (docs/planner.md)."""

    name = "trady"
    layers = "top-K holding 97% of importance (TraDy, Quélennec et al. 2026), further down while memory remains"
    channels = "uniform across those layers, one by one until the next breaks a limit; every epoch"
    memory = "each epoch's draw checked by the memory model before use"
    planned = False
    measure = "rgn"  # its own score ranks its layers
    source = "Quélennec et al., ICLR 2026"

    def __init__(self) -> None:
        self.problem: Problem | None = None

    def prepare(self, plan: Plan | None, problem: Problem | None) -> Training:
        assert problem is not None, "trady draws from the problem"
        self.problem = problem
        costs = problem.costs
        required = required_layers(costs, problem.options)
        options, device = problem.options, problem.device
        names = dict.fromkeys([*required, *reached_layers(costs, device, problem.importance, options)])
        layers = tuple(LayerToTrain(n, costs.layer(n).in_channels, 0, costs.layer(n).bias_param) for n in names)
        biases = tuple(bias for n in required if (bias := costs.layer(n).bias_param))
        return Training(layers, biases, None)

    def draw(self, seed: int) -> Draw:
        problem = self.problem
        assert problem is not None, "prepare comes first"
        costs, device, importance, options = problem.costs, problem.device, problem.importance, problem.options
        choices, channels = trady_draw(costs, device, importance, options, seed)
        value = objective(costs, importance, options, choices)
        stage = patch_stage(costs, device, options, choices)
        solution = Solution(choices, "drawn", value, self.name, 0.0, required_layers(costs, options), stage)
        return Draw(plan_from_choices(costs, device, importance, options, solution), channels)


def required_layers(costs: CostTable, options: PlannerOptions) -> tuple[str, ...]:
    """The layers TraDy trains in full: ``options.require``, by default the classifier."""
    return options.require if options.require is not None else (costs.layers[-1].name,)


def reached_layers(
    costs: CostTable, device: DeviceProfile, importance: Importance, options: PlannerOptions, share: float = TOP_SHARE
) -> list[str]:
    """The layers TraDy draws channels from: its top-K and, where they fit in full with the
    required layers, the next layers down the ranking while each fits in full, and the
    first that does not."""
    required = required_layers(costs, options)
    chosen = {name: Choice(costs.layer(name).in_channels, costs.layer(name).bias_elements > 0) for name in required}
    reached = [name for name in top_layers(importance, share) if name not in chosen]
    chosen.update({name: Choice(costs.layer(name).in_channels) for name in reached})
    if not fits_with_stage(costs, device, options, chosen):
        return reached
    known = {layer.name for layer in costs.layers}
    for name, _, _ in ranking(importance):
        if name in chosen or name not in known:
            continue
        reached.append(name)
        chosen[name] = Choice(costs.layer(name).in_channels)
        if not fits_with_stage(costs, device, options, chosen):
            break
    return reached


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
    limit still holds; after them the channels of each further layer of
    ``reached_layers``, in a random order of its own. Memory only grows along that order,
    so the longest fitting prefix is found by bisection. With ``executor: patch`` each prefix is checked with the patch
    stage it would run (adding channels only removes stages, so that stays monotone).

    >>> import torch
    >>> from budgetplan.costs.build import layer_costs
    >>> from budgetplan.device.profile import load_device
    >>> from budgetplan.importance.scores import prior_importance
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
    if not fits_with_stage(costs, device, options, base):
        raise InfeasibleError(
            f"trady: training {', '.join(required)} in full does not fit a budget of "
            f"{format_bytes(options.budget_on(device))} on {device.name}"
        )
    reached = [name for name in reached_layers(costs, device, importance, options, share) if name not in base]
    pool = _channel_order(costs, reached, set(top_layers(importance, share)), seed)

    def choices_of(n: int) -> dict[str, Choice]:
        counts: dict[str, int] = {}
        for name, _ in pool[:n]:
            counts[name] = counts.get(name, 0) + 1
        return {**base, **{name: Choice(count) for name, count in counts.items()}}

    low, high = 0, len(pool)  # choices_of(low) fits; find the largest n that does
    while low < high:
        mid = (low + high + 1) // 2
        if fits_with_stage(costs, device, options, choices_of(mid)):
            low = mid
        else:
            high = mid - 1
    drawn: dict[str, list[int]] = {name: list(range(costs.layer(name).in_channels)) for name in base}
    for name, c in pool[:low]:
        drawn.setdefault(name, []).append(c)
    return choices_of(low), {name: sorted(idx) for name, idx in drawn.items()}


def _channel_order(costs: CostTable, reached: list[str], top: set[str], seed: int) -> list[tuple[str, int]]:
    """The top-K layers' channels in one random order, then each further layer's in its own."""
    shuffle = random.Random(seed).shuffle
    order = [(name, c) for name in reached if name in top for c in range(costs.layer(name).in_channels)]
    shuffle(order)
    for name in (name for name in reached if name not in top):
        further = [(name, c) for c in range(costs.layer(name).in_channels)]
        shuffle(further)
        order += further
    return order
