"""The ILP against exhaustive enumeration, and the planner's options and errors."""

import dataclasses
import itertools
import math
import random

import pytest
import torch

from budgetplan import BudgetPlanError, InfeasibleError, solve
from budgetplan.costs.table import CostTable, PatchOption
from budgetplan.device.profile import BitWidths
from budgetplan.importance.scores import Importance, resolve_importance
from budgetplan.planning.accounting import sparse_update_memory
from budgetplan.planning.assemble import plan_from_costs
from budgetplan.planning.memory import Choice, predict
from budgetplan.planning.objective import channel_options, utility
from budgetplan.planning.options import PlannerOptions
from budgetplan.planning.solve import solve_choices
from budgetplan.zoo.models import build_model

from ..helpers.costs import make_device, random_costs

TOL = 1e-6


def brute_force(costs, device, importance, options):
    """Every combination of per-layer choices, evaluated by the memory model directly.

    Returns (best objective, best choices, smallest feasible peak ignoring the budget)."""
    required = options.require if options.require is not None else (costs.layers[-1].name,)
    per_layer = []
    for layer in costs.layers:
        biases = [False, True] if layer.bias_elements else [False]
        if layer.name in required:
            per_layer.append([Choice(layer.in_channels, bool(layer.bias_elements))])
        else:
            counts = [0, *channel_options(layer, options.ratios)]
            per_layer.append([Choice(c, b) for c in counts for b in biases])
    budget = options.budget if options.budget is not None else device.budget
    best, best_choices, smallest_peak = None, None, None
    for combo in itertools.product(*per_layer):
        if not any(c.updates for c in combo):
            continue
        if options.max_layers is not None and sum(c.updates for c in combo) > options.max_layers:
            continue
        choices = {layer.name: c for layer, c in zip(costs.layers, combo, strict=True) if c.updates}
        first = next(i for i, c in enumerate(combo) if c.updates)
        # with executor: patch, any stage that runs frozen layers only (or none)
        stages = [None, *(o for o in costs.patch_options if o.split <= first)] if costs.executor == "patch" else [None]
        kept = []
        for stage in stages:
            p = predict(costs, device, choices, options.batch_size, stage)
            trained = p.training_memory_bytes
            if options.accounting == "sparse-update":
                trained = sparse_update_memory(costs, choices, options.batch_size)
            if options.training_memory is not None and trained > options.training_memory + TOL:
                continue
            if options.max_step_latency is not None and p.step_seconds > options.max_step_latency * (1 + 1e-9):
                continue
            kept.append(p)
        if not kept:
            continue
        p = min(kept, key=lambda q: q.peak_bytes)
        smallest_peak = p.peak_bytes if smallest_peak is None else min(smallest_peak, p.peak_bytes)
        if p.peak_bytes > budget + TOL:
            continue
        value = sum(
            importance.weight[layer.name] * utility(c.channels / layer.in_channels, options.utility, options.epochs)
            + (importance.bias[layer.name] if c.bias else 0.0)
            for layer, c in zip(costs.layers, combo, strict=True)
        )
        if best is None or value > best:
            best, best_choices = value, choices
    return best, best_choices, smallest_peak


def random_patch_options(rng, costs):
    """A few made-up patch stages: splits after the first layer, working sets around the
    layers' own buffers, some halo MACs."""
    if len(costs.layers) < 2:
        return ()
    options = []
    for _ in range(rng.randint(1, 3)):
        split = rng.randint(1, len(costs.layers) - 1)
        largest = max(layer.forward_live_elements for layer in costs.layers[:split])
        live = int(rng.uniform(0.2, 1.1) * largest)
        options.append(PatchOption(split, rng.choice([2, 3, 4]), live, rng.randint(0, 300)))
    return tuple(options)


def random_instance(seed):
    rng = random.Random(seed)
    costs = random_costs(rng, rng.choice([3, 4]))
    if rng.random() < 0.4:
        # the first layer's buffer the largest, as in image networks: where patches help
        first = dataclasses.replace(
            costs.layers[0], forward_live_elements=3 * max(layer.forward_live_elements for layer in costs.layers)
        )
        costs = dataclasses.replace(costs, layers=(first, *costs.layers[1:]))
        costs = dataclasses.replace(costs, executor="patch", patch_options=random_patch_options(rng, costs))
    linux = rng.random() < 0.3
    bits = (
        BitWidths(weight=32, activation=32, gradient=32, bias=32, optimizer=rng.choice([0, 32, 64]), mask=8)
        if linux
        else BitWidths(weight=8, activation=8, gradient=0, bias=32, optimizer=0, mask=1)
    )
    device = make_device(bits=bits, frozen_weights="sram" if linux else "flash")
    importance = Importance(
        "random",
        {layer.name: rng.random() for layer in costs.layers},
        {layer.name: rng.random() * 0.2 for layer in costs.layers},
    ).normalised()
    ratios = tuple(sorted(rng.sample([1 / 4, 1 / 2, 3 / 4, 1.0], rng.randint(1, 4))))
    options = dict(
        ratios=ratios,
        epochs=rng.choice([1, 5, 20]),
        utility=rng.choice(["coverage", "linear"]),
        batch_size=rng.choice([1, 2]),
        require=rng.choice([None, (), (costs.layers[0].name,)]),
    )
    if rng.random() < 0.3:
        options["max_layers"] = rng.randint(1, 3)
    # a budget drawn from the range of what the combinations need
    unlimited = PlannerOptions(budget=1 << 40, **options)
    _, _, low = brute_force(costs, device, importance, unlimited)
    high = predict(
        costs, device, {layer.name: Choice(layer.in_channels, True) for layer in costs.layers}, options["batch_size"]
    ).peak_bytes
    if costs.executor == "patch":  # mostly budgets where only a patch stage fits
        _, _, whole = brute_force(dataclasses.replace(costs, executor="layer"), device, importance, unlimited)
        high = min(high, 1.1 * whole)
    options["budget"] = int(rng.uniform(0.9 * low, high))
    if rng.random() < 0.25:
        options["training_memory"] = int(rng.uniform(0.2, 1.0) * high)
        options["accounting"] = rng.choice(["budgetplan", "sparse-update"])
    if rng.random() < 0.25:
        options["max_step_latency"] = rng.uniform(0.5, 1.5) * (costs.forward_macs + 600) / device.macs_per_second
    return costs, device, importance, PlannerOptions(**options)


@pytest.mark.parametrize("solver", ["highs", "cbc"])
@pytest.mark.parametrize("seed", range(24))
def test_ilp_optimum_equals_exhaustive_enumeration(seed, solver):
    costs, device, importance, options = random_instance(seed)
    options = PlannerOptions(**{**options.__dict__, "solver": solver})
    best, _, smallest = brute_force(costs, device, importance, options)
    if best is None:
        with pytest.raises(InfeasibleError) as err:
            solve_choices(costs, device, importance, options)
        if smallest is not None:  # the budget alone is the obstacle: the message says what works
            assert abs(err.value.smallest_budget - math.ceil(smallest)) <= 1
            assert "--budget" in str(err.value)
        return
    solution = solve_choices(costs, device, importance, options)
    assert solution.status == "optimal"
    assert solution.objective == pytest.approx(best, rel=1e-4, abs=1e-9)
    # the ILP's choice really fits, by the direct evaluation
    p = predict(costs, device, solution.choices, options.batch_size, solution.patch)
    assert p.peak_bytes <= options.budget + 1e-3


def test_enumeration_has_both_outcomes():
    """The random instances exercise both feasible and infeasible budgets, and plans
    that need a patch stage."""
    outcomes = {brute_force(*random_instance(seed))[0] is None for seed in range(24)}
    assert outcomes == {True, False}
    patched = 0
    for seed in range(24):
        costs, device, importance, options = random_instance(seed)
        if costs.executor == "patch" and brute_force(costs, device, importance, options)[0] is not None:
            patched += solve_choices(costs, device, importance, options).patch is not None
    assert patched >= 2


@pytest.fixture(scope="module")
def default_model():
    model, name = build_model()
    return model, name, torch.zeros(1, 3, 128, 128)


@pytest.mark.slow
def test_default_plan_on_cortex_m7(default_model):
    model, name, example = default_model
    plan = solve(model, example, "cortex-m7", model_name=name)
    assert plan.status == "optimal" and plan.budget_bytes == 256 * 1024
    assert plan.predicted.peak_bytes <= plan.budget_bytes
    head = plan.layers[-1]
    assert (head.name, head.channels, head.total_channels, head.bias) == ("classifier.1", 1280, 1280, True)
    # the plan is the same whichever solver proves it: ties are broken by one rule
    other = solve(model, example, "cortex-m7", model_name=name, solver="cbc")
    assert other.status == "optimal"
    assert other.channels() == plan.channels()
    assert [layer.bias for layer in other.layers] == [layer.bias for layer in plan.layers]


@pytest.mark.parametrize("solver", ["highs", "cbc"])
def test_equal_plans_are_broken_toward_the_later_layer(solver):
    """Two layers alike in every cost and score, room for one: the later one trains."""
    import dataclasses

    layer = random_costs(random.Random(3), 1).layers[0]
    twin = dict(mask_elements=0, path_activation_elements=0, bias_elements=0, bias_param=None)
    layers = tuple(dataclasses.replace(layer, name=f"block{i}", index=i, **twin) for i in range(3))  # type: ignore[arg-type]
    costs = CostTable(model="twins", input_shape=(1, 1, 1), executor="layer", layers=layers)
    device = make_device()
    importance = Importance("equal", {n.name: 1 / 3 for n in layers})
    one = predict(costs, device, {"block0": Choice(layer.in_channels)}).peak_bytes
    options = PlannerOptions(budget=int(one), require=(), ratios=(1.0,), solver=solver)
    assert set(solve_choices(costs, device, importance, options).choices) == {"block2"}


@pytest.mark.slow
def test_budget_and_batch_scale_the_plan(default_costs_by_executor):
    costs = default_costs_by_executor["inplace-dw"]
    from budgetplan import load_device

    device = load_device("cortex-m7")
    shipped = resolve_importance(None, costs)  # the command line's importance; the prior solves slower
    small = plan_from_costs(costs, device, shipped, PlannerOptions(budget=240 * 1024))
    large = plan_from_costs(costs, device, shipped, PlannerOptions(budget=400 * 1024))
    assert small.objective < large.objective
    assert small.predicted.peak_bytes <= 240 * 1024 < large.predicted.peak_bytes <= 400 * 1024
    choices = {layer.name: Choice(layer.channels, layer.bias) for layer in small.updated()}
    one, four = predict(costs, device, choices, 1), predict(costs, device, choices, 4)
    assert four.saved_bytes == pytest.approx(4 * one.saved_bytes)
    assert four.resident_bytes == one.resident_bytes  # weights do not scale with the batch


def test_include_exclude_and_max_layers(default_costs_by_executor):
    from budgetplan import load_device

    costs = default_costs_by_executor["inplace-dw"]
    device = load_device("stm32h743")
    plan = plan_from_costs(costs, device, options=PlannerOptions(exclude=("*conv.1.0",), max_layers=4))
    updated = [layer.name for layer in plan.updated()]
    assert len(updated) <= 4 and "classifier.1" in updated
    assert not any(name.endswith("conv.1.0") for name in updated)
    only = plan_from_costs(costs, device, options=PlannerOptions(include=("features.17.*",), require=()))
    block = {layer.name for layer in costs.layers if layer.name.startswith("features.17.")}
    assert {layer.name for layer in only.updated()} <= block
    with pytest.raises(BudgetPlanError, match="matches no layer"):
        plan_from_costs(costs, device, options=PlannerOptions(include=("decoder.*",)))
    with pytest.raises(BudgetPlanError, match="required but excluded"):
        plan_from_costs(costs, device, options=PlannerOptions(require=("classifier.1",), exclude=("classifier*",)))


@pytest.mark.slow
def test_training_memory_cap(default_costs_by_executor):
    from budgetplan import load_device

    costs = default_costs_by_executor["inplace-dw"]
    device = load_device("stm32h743")
    free = plan_from_costs(costs, device)
    capped = plan_from_costs(costs, device, options=PlannerOptions(training_memory=60 * 1024))
    assert free.predicted.training_memory_bytes > 60 * 1024
    assert capped.predicted.training_memory_bytes <= 60 * 1024
    assert "published accounting" in capped.accounting and "published" not in free.accounting


@pytest.mark.slow
def test_step_latency_limits_compute(default_costs_by_executor):
    from budgetplan import load_device

    costs = default_costs_by_executor["inplace-dw"]
    device = load_device("stm32h743")
    free = plan_from_costs(costs, device)
    limit = 0.6 * free.predicted.step_seconds
    quick = plan_from_costs(costs, device, options=PlannerOptions(max_step_latency=limit))
    assert quick.predicted.step_seconds <= limit * (1 + 1e-9)
    with pytest.raises(InfeasibleError, match="shortest step takes"):
        plan_from_costs(costs, device, options=PlannerOptions(max_step_latency=1e-4))


def test_infeasible_budget_names_the_smallest(default_costs_by_executor):
    from budgetplan import load_device

    costs = default_costs_by_executor["inplace-dw"]
    device = load_device("cortex-m7")
    with pytest.raises(InfeasibleError) as err:
        plan_from_costs(costs, device, options=PlannerOptions(budget=100 * 1024))
    smallest = err.value.smallest_budget
    assert smallest is not None and "--budget" in str(err.value)
    plan = plan_from_costs(costs, device, options=PlannerOptions(budget=smallest + 1))
    assert plan.predicted.peak_bytes <= smallest + 1
    with pytest.raises(InfeasibleError):
        plan_from_costs(costs, device, options=PlannerOptions(budget=smallest - 64))


def test_model_larger_than_flash():
    model, name = build_model("resnet50", 10)
    with pytest.raises(InfeasibleError, match=r"does not fit by"):
        solve(model, torch.zeros(1, 3, 64, 64), "cortex-m7", model_name=name)


def test_bad_options():
    with pytest.raises(BudgetPlanError, match="ratios"):
        PlannerOptions(ratios=(0.0, 1.5)).check()
    with pytest.raises(BudgetPlanError, match="batch size"):
        PlannerOptions(batch_size=0).check()
    with pytest.raises(TypeError, match="unknown planner option"):
        solve(torch.nn.Linear(2, 2), torch.zeros(1, 2), "cortex-m7", budgt="1KB")
    with pytest.raises(BudgetPlanError, match="budget"):
        solve(torch.nn.Linear(2, 2), torch.zeros(1, 2), "cortex-m7", budget="lots")
