"""Every fixed recipe is a point of the plan space: at the same budget the planner's
optimum is worth at least as much, by its own objective, as each recipe that fits."""

import random
from pathlib import Path

import pytest

from budgetplan.device.profile import load_device
from budgetplan.importance.scores import Importance, prior_importance
from budgetplan.interop.scheme import load_scheme
from budgetplan.interop.tiny_training import choices_from_scheme
from budgetplan.planning.ilp import OPTIMALITY_GAP
from budgetplan.planning.memory import Choice
from budgetplan.planning.objective import objective
from budgetplan.planning.options import PlannerOptions
from budgetplan.planning.solve import fits_with_stage, solve_choices
from budgetplan.strategies.trady import trady_draw

SCHEMES = sorted((Path(__file__).parents[2] / "examples" / "tiny-training").glob("*.yaml"))


def recipes(costs, device, importance, options):
    """(name, choices) of the one-line recipes at this budget: classifier only, every bias,
    the last k layers in full, Sparse Update's published schemes, TraDy's draws."""
    head = costs.layers[-1]
    full_head = {head.name: Choice(head.in_channels, head.bias_elements > 0)}
    yield "classifier", full_head
    yield "bias", {**full_head, **{layer.name: Choice(0, True) for layer in costs.layers[:-1] if layer.bias_elements}}
    for k in range(2, len(costs.layers) + 1):
        last = costs.layers[-k:]
        yield f"last {k}", {layer.name: Choice(layer.in_channels, layer.bias_elements > 0) for layer in last}
    for path in SCHEMES:
        yield path.stem, choices_from_scheme(load_scheme(path), costs)
    for seed in range(3):
        yield f"trady seed {seed}", trady_draw(costs, device, importance, options, seed)[0]


def random_importance(costs, seed):
    rng = random.Random(seed)
    return Importance(
        f"random {seed}",
        {layer.name: rng.random() for layer in costs.layers},
        {layer.name: rng.random() * 0.1 for layer in costs.layers if layer.bias_elements},
    ).normalised()


@pytest.mark.slow
@pytest.mark.parametrize("importance_seed", [None, 1])
def test_the_optimum_is_worth_at_least_every_recipe(importance_seed, default_costs_by_executor):
    """With the prior, and with made-up importance (the property holds for any weights)."""
    costs = default_costs_by_executor["patch"]
    device = load_device("cortex-m7")
    importance = prior_importance(costs) if importance_seed is None else random_importance(costs, importance_seed)
    fitted = set()
    for budget_kb in (96, 128, 256, 1024):
        options = PlannerOptions(budget=budget_kb * 1024)
        best = solve_choices(costs, device, importance, options).objective
        for name, choices in recipes(costs, device, importance, options):
            if not fits_with_stage(costs, device, options, choices):
                continue
            fitted.add(name.split(" seed")[0].split(" ")[0] if not name.startswith("mbv2") else "sparse-update")
            value = objective(costs, importance, options, choices)
            assert best >= value - OPTIMALITY_GAP, (budget_kb, name, best, value)
    # every kind of recipe was a feasible point somewhere
    assert fitted == {"classifier", "bias", "last", "sparse-update", "trady"}


def test_trady_fills_its_budget_down_its_ranking_once_its_top_layers_fit(default_costs_by_executor):
    """TraDy trains within the budget it is given: with one layer holding 97% of the score,
    the layers after it in the ranking join while memory remains."""
    costs, device = default_costs_by_executor["patch"], load_device("cortex-m7")
    names = [layer.name for layer in costs.layers]
    top, rest = names[-3], [n for n in names if n != names[-3]]
    weights = {top: 0.98, **{name: 0.02 * (i + 1) / sum(range(1, len(rest) + 1)) for i, name in enumerate(rest)}}
    importance = Importance("one layer", weights)
    options = PlannerOptions(budget=256 * 1024)
    choices, drawn = trady_draw(costs, device, importance, options, seed=0)
    assert top in choices and len(choices) > 2  # more than the top layer and the classifier
    assert choices[top].channels == costs.layer(top).in_channels
    partial = [name for name, choice in choices.items() if choice.channels < costs.layer(name).in_channels]
    assert len(partial) <= 1  # every layer reached trains in full but the last one
    for name in partial:  # one more of its channels breaks a limit
        more = {**choices, name: Choice(choices[name].channels + 1, choices[name].bias)}
        assert not fits_with_stage(costs, device, options, more)
    assert all(len(drawn[name]) == choice.channels for name, choice in choices.items())
