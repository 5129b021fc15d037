"""Trial fine-tunes: what a plan's trial trains, that the module comes back as it was, and
the callback's choice between the shipped table's plan and the measured one."""

from __future__ import annotations

import itertools
import re

import pytest
import torch
import torchvision
from lightning import pytorch as pl
from lightning.pytorch.callbacks import Callback

from budgetplan import BudgetPlanCallback
from budgetplan.costs.build import layer_costs
from budgetplan.device.profile import load_device
from budgetplan.errors import BudgetPlanError
from budgetplan.strategies.base import LayerToTrain, Training
from budgetplan.training.channels import channel_norms
from budgetplan.training.plan_source import PlanSource
from budgetplan.training.trials import (
    PLAN_STEPS,
    VALIDATION_SAMPLES,
    Candidate,
    Progress,
    Trials,
    halving,
    held_batches,
    plan_trial,
    round_sizes,
    trial_losses,
)

from ..helpers.tiny_modules import TinyModule, trainer

HALF_POINTWISE = LayerToTrain("net.features.6", 8, 4, None)  # 4 of the pointwise conv's 8 input channels
HEAD = Training((LayerToTrain("net.head.1", 16, 16, "net.head.1.bias"),), ("net.head.1.bias",), None)
NORM_SHIFT = Training((), ("net.features.1.bias",), None)  # one BatchNorm's shift, nothing else


def learnable_batches(n: int = 56, seed: int = 0, size: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of 8 whose class is the sign pattern of the first two channels' means."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=generator)
    y = (x[:, 0].mean((1, 2)) > 0).long() * 2 + (x[:, 1].mean((1, 2)) > 0).long()
    return [(x[i : i + 8], y[i : i + 8]) for i in range(0, n, 8)]


def test_a_plan_trial_masks_the_drawn_channels_and_leaves_whole_layers_unmasked():
    module = TinyModule(dropout=0.0)
    training = Training((HALF_POINTWISE, *HEAD.layers), HEAD.biases, None)
    trial = plan_trial(module, training, "", "magnitude", seed=0)
    weight = module.net.features[6].weight
    (pointwise, mask), (head, head_mask), (bias, bias_mask) = trial
    assert pointwise is weight and head is module.net.head[1].weight and bias is module.net.head[1].bias
    trained = mask.reshape(16, 8).bool().all(0)  # an input channel is trained for every output
    assert sorted(trained.nonzero().flatten().tolist()) == sorted(channel_norms(weight, 8, 1).topk(4).indices.tolist())
    assert head_mask is None and bias_mask is None


def test_trials_leave_the_module_as_it_was():
    module = TinyModule(dropout=0.0)
    module.net.features[6].weight.requires_grad_(False)
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    flags = {name: p.requires_grad for name, p in module.named_parameters()}
    training = Training((HALF_POINTWISE, *HEAD.layers), HEAD.biases, None)
    tried = [Candidate("half", None, training), Candidate("shift", None, NORM_SHIFT)]
    losses = trial_losses(module, tried, learnable_batches(), lr=0.1, steps=8, check_every=4)
    assert len(losses) == 2 and all(loss > 0 for loss in losses)
    for name, p in module.named_parameters():
        assert torch.equal(p, before[name]), name
        assert p.requires_grad == flags[name] and p.grad is None, name
    assert module.training  # put back in train mode after the eval-mode trials


def test_a_trial_that_can_fit_the_batches_ranks_below_one_that_barely_can():
    module = TinyModule(dropout=0.0)
    batches = learnable_batches(32)
    seen = batches + batches[:3]  # held out: copies of training batches, so fitting them is what counts
    head, shift = trial_losses(module, [Candidate("head", None, HEAD), Candidate("shift", None, NORM_SHIFT)], seen,
                               lr=0.1, steps=24)  # fmt: skip
    assert head < shift


def test_trials_value_on_the_validation_batches_given_and_train_on_every_training_batch():
    module = TinyModule(dropout=0.0)
    batches = learnable_batches(32)
    flipped = [(x, 3 - y) for x, y in batches[:3]]  # the rule reversed: fitting the training batches hurts here
    tried = [Candidate("head", None, HEAD), Candidate("shift", None, NORM_SHIFT)]
    head, shift = trial_losses(module, tried, batches, held=flipped, lr=0.1, steps=24)
    assert head > shift
    held_out = trial_losses(module, tried, batches + batches[:3], lr=0.1, steps=24)  # no validation: copies held out
    assert held_out[0] < held_out[1]


def test_checks_keep_the_lowest_held_out_loss_of_a_trial_that_diverges():
    torch.manual_seed(0)  # the same start every run: where a diverging trial's lowest loss falls depends on it
    module = TinyModule(dropout=0.0)
    batches = learnable_batches()
    trials = Trials(module, batches[:-3], batches[-3:], steps=24, lr=20.0)  # far too large: the loss blows up
    trial = plan_trial(module, HEAD, "", "magnitude", 0)
    final, checked = trials.run(trial), trials.run(trial, check_every=2)
    assert checked < final


class Untouched(Callback):
    """Records whether every parameter is, when the fit starts, what it was before."""

    def __init__(self, before: dict[str, torch.Tensor]) -> None:
        self.before, self.same = before, False

    def on_fit_start(self, trainer, pl_module):  # type: ignore[no-untyped-def]
        self.same = all(torch.equal(p, self.before[n]) for n, p in pl_module.named_parameters())


def mobilenet_module() -> TinyModule:
    module = TinyModule(dropout=0.0)
    module.net = torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=4)
    module.example_input_array = torch.zeros(1, 3, 32, 32)
    return module


def mobilenet_data(size: int = 32) -> torch.utils.data.DataLoader:
    x, y = zip(*learnable_batches(64, size=size), strict=True)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.cat(x), torch.cat(y)), batch_size=8)


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "importance"), [("budgetplan", None), ("budgetplan", "measured"), ("bias", None)])
def test_the_default_tries_the_shipped_tables_plan_against_the_measured_one(strategy, importance):
    """Where a table ships (MobileNetV2, by layer name), the default plans with it and with
    gradient energy measured on the training data, tries both, and says which won;
    importance= given plans with that alone, and a fixed recipe keeps the table."""
    module = mobilenet_module()
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    budget = BudgetPlanCallback(
        device="cortex-m7", training_memory="24KB", batch_size=8, importance=importance, strategy=strategy
    )
    untouched = Untouched(before)
    trainer(1, [budget, untouched], limit_train_batches=1).fit(module, mobilenet_data())
    source = budget.plan.importance_source
    if strategy == "bias":
        assert source.startswith("shipped table: mobilenet_v2-imagenet") and "chosen" not in source
    elif importance is None:
        assert f"by trials on 5 training batches ({2 * PLAN_STEPS} steps in 1 round of 2 plans; lowest" in source
        won, lost = (float(x) for x in re.search(r"training batches (\S+) vs (\S+)\)", source).groups())
        assert won <= lost
        assert "chosen over shipped table" in source or "chosen over measured: gradient energy" in source
    else:
        assert source.startswith("measured: gradient energy") and "chosen" not in source
    assert untouched.same  # the trials put every parameter back before the fit


class _Data(pl.LightningDataModule):
    def train_dataloader(self):  # type: ignore[no-untyped-def]
        return mobilenet_data()

    def val_dataloader(self):  # type: ignore[no-untyped-def]
        return torch.utils.data.DataLoader(mobilenet_data().dataset, batch_size=16)


@pytest.mark.parametrize(("size", "batch", "expected"), [(1000, 100, 3), (1000, 128, 2), (64, 16, 4), (1000, 512, 1)])
def test_the_trial_values_on_whole_validation_batches_until_they_hold_its_samples(size, batch, expected):
    """Batches are taken whole until they hold ``VALIDATION_SAMPLES``; a smaller set is taken whole."""
    data = torch.utils.data.TensorDataset(torch.randn(size, 2), torch.arange(size))
    held = held_batches(torch.utils.data.DataLoader(data, batch_size=batch))
    assert len(held) == expected
    taken = sum(len(labels) for _, labels in held)
    assert taken >= min(size, VALIDATION_SAMPLES) and taken - len(held[-1][1]) < VALIDATION_SAMPLES
    as_dicts = [{"image": x, "label": y} for x, y in held]
    again = expected if size >= VALIDATION_SAMPLES else 2 * expected  # samples counted in any batch's first tensor
    assert len(held_batches(as_dicts + as_dicts)) == again
    assert held_batches(None) == []


@pytest.mark.slow
@pytest.mark.parametrize("given", ["fit", "datamodule", "disabled"])
def test_the_trial_values_on_the_fits_validation_batches(given):
    """Validation batches (given to fit or by a datamodule) value the trial and every
    training batch trains; a fit that validates nothing holds training batches out."""
    module = mobilenet_module()
    budget = BudgetPlanCallback(device="cortex-m7", training_memory="24KB", batch_size=8)
    fit = trainer(1, [budget], limit_train_batches=1, limit_val_batches=0 if given == "disabled" else 1.0)
    if given == "datamodule":
        fit.fit(module, datamodule=_Data())
    else:
        fit.fit(module, mobilenet_data(), _Data().val_dataloader())
    source = budget.plan.importance_source
    if given == "disabled":
        assert "by trials on 5 training batches" in source and "on 3 held-out training batches" in source, source
    else:
        assert "by trials on 8 training batches" in source and "lowest loss on 4 validation batches" in source, source


@pytest.mark.slow
def test_trial_all_tries_kept_and_redrawn_channels_and_the_recipes_and_trains_with_the_winners_rule():
    module = mobilenet_module()
    budget = BudgetPlanCallback(device="cortex-m7", training_memory="24KB", batch_size=8, trial="all", trial_steps=88)
    trainer(3, [budget], limit_train_batches=1).fit(module, mobilenet_data())
    source = budget.plan.importance_source
    # 88 steps shared by the 6 + 3 + 2 plans of three rounds: 8 steps more for each a round
    assert "(88 steps in 3 rounds of 6 plans; lowest loss on 3 held-out training batches" in source, source
    winner = re.search(r"; (.+?) chosen over ", source)[1]  # type: ignore[index]
    tried = ("shipped table", "measured", "biases alone", "TraDy's layers")
    assert winner.startswith(tried), winner
    redrawn = "redrawn every epoch" in winner
    assert (budget.resample.value, budget.sampler) == (("epoch", "uniform") if redrawn else ("never", "magnitude"))
    kept = BudgetPlanCallback(device="cortex-m7", training_memory="24KB", trial="all", resample="never")
    assert kept._rule_given  # a rule given is never replaced by the trial's
    with pytest.raises(BudgetPlanError, match="trial must be one of importance, all, none, not 'some'"):
        BudgetPlanCallback(trial="some")
    with pytest.raises(BudgetPlanError, match="trial_steps must be a whole number of steps > 0 or None, not 0"):
        BudgetPlanCallback(trial="all", trial_steps=0)


@pytest.mark.slow
def test_trial_all_also_chooses_where_no_table_ships():
    """Without a shipped table the plan of measured importance has no rival (the default
    trains it untried), but ``trial="all"`` tries it with channels kept and redrawn, and
    the recipes'."""
    module = TinyModule(dropout=0.0)  # no table ships for it
    budget = BudgetPlanCallback(device="cortex-m7", training_memory="4KB", batch_size=8, trial="all", trial_steps=88)
    trainer(3, [budget], limit_train_batches=1).fit(module, mobilenet_data(size=8))
    source = budget.plan.importance_source
    assert source.startswith("measured: gradient energy")
    assert "(84 steps in 2 rounds of 4 plans;" in source, source  # kept, redrawn, biases alone, TraDy's layers
    winner = re.search(r"; (.+?) chosen over ", source)[1]  # type: ignore[index]
    assert winner.startswith(("measured", "biases alone", "TraDy's layers")), winner
    costs = layer_costs(module, module.example_input_array, load_device("cortex-m7"))
    assert PlanSource(trial="all", loader=[]).tries(budget.strategy, costs)
    assert not PlanSource(trial="importance", loader=[]).tries(budget.strategy, costs)  # the default: untried


class RandomStream(Callback):
    """Records torch's random state when training starts, after the callback's setup."""

    def on_train_start(self, trainer, pl_module):  # type: ignore[no-untyped-def]
        self.state = torch.get_rng_state()


@pytest.mark.slow
def test_trying_two_plans_leaves_the_fits_random_stream_as_with_the_table_alone():
    """The measurement and the trials draw batches and dropout masks; the fit then shuffles
    its data as it would have with the table's plan alone, so the two are paired exactly."""
    states, sources = [], []
    for batches in (8, 0):  # with no batches to measure on, the table plans alone
        torch.manual_seed(0)
        module = mobilenet_module()  # MobileNetV2's classifier keeps its dropout
        budget = BudgetPlanCallback(
            device="cortex-m7", training_memory="24KB", batch_size=8, importance_batches=batches
        )
        stream = RandomStream()
        trainer(1, [budget, stream], limit_train_batches=1).fit(module, mobilenet_data())
        states.append(stream.state)
        sources.append(budget.plan.importance_source)
    assert "chosen over" in sources[0] and sources[1].startswith("shipped table") and "chosen" not in sources[1]
    assert torch.equal(states[0], states[1])


def test_a_redrawn_candidate_trains_a_new_draw_in_each_part_of_its_trial():
    module = TinyModule(dropout=0.0)
    training = Training((HALF_POINTWISE, *HEAD.layers), HEAD.biases, None)
    masks = []
    trials = Trials(module, learnable_batches()[:-3], learnable_batches()[-3:], steps=12, lr=0.1)

    def redraw(epoch):
        trial = plan_trial(module, training, "", "uniform", seed=0, epoch=epoch)
        masks.append(trial[0][1])
        return trial

    trials.run(redraw(0), redraw=redraw, draws=3)
    assert len(masks) == 3 and not torch.equal(masks[0], masks[1]) and not torch.equal(masks[1], masks[2])


@pytest.mark.parametrize("keep_returning", [True, False])
def test_a_redrawn_trial_moves_no_channel_outside_its_draw_as_the_fits_guard(keep_returning):
    module = TinyModule(dropout=0.0)
    training = Training((HALF_POINTWISE, *HEAD.layers), HEAD.biases, None)
    trials = Trials(module, learnable_batches()[:-3], learnable_batches()[-3:], 12, 0.1, keep_returning)

    def redraw(epoch):
        return plan_trial(module, training, "", "uniform", seed=0, epoch=epoch)

    at = Progress()
    trials.run(redraw(0), redraw=redraw, draws=3, progress=at, until=4)  # draw 0 trains steps 0-3
    before, momentum = at.values[0].clone(), at.momentum[0].clone()
    trials.run(redraw(0), redraw=redraw, draws=3, progress=at, until=7)  # draw 1 trains steps 4-6
    outside = ~redraw(1)[0][1].bool()
    assert (outside & (before != module.net.features[6].weight)).any()  # draw 0 trained some of them
    # momentum from draw 0 moves nothing that draw 1 left out, and is held for its return
    assert torch.equal(at.values[0][outside], before[outside])
    assert torch.equal(at.momentum[0][outside], momentum[outside])


def test_halving_keeps_the_better_half_each_round_and_names_them():
    module = TinyModule(dropout=0.0)
    batches = learnable_batches(32)
    seen = batches + batches[:3]
    tried = [
        Candidate(name, None, t) for name, t in (("shift", NORM_SHIFT), ("head", HEAD), ("shift again", NORM_SHIFT))
    ]
    winner, rounds, steps = halving(module, tried, seen, lr=0.1, total_steps=100)
    assert steps == (3 + 2) * 20  # 100 steps shared by the plans of both rounds, 20 more each a round
    assert winner.label == "head"
    assert [len(r) for r in rounds] == [3, 2] and rounds[0][0][0] == "head"
    assert all(a[1] <= b[1] for r in rounds for a, b in itertools.pairwise(r))
    assert [round_sizes(n) for n in (1, 2, 5, 6)] == [[], [2], [5, 3, 2], [6, 3, 2]]


@pytest.mark.parametrize("sampler, draws, keep", [("magnitude", 1, True), ("uniform", 3, True), ("uniform", 3, False)])
def test_a_trial_continued_round_by_round_ends_where_one_run_of_all_its_steps_ends(sampler, draws, keep):
    module = TinyModule(dropout=0.0)
    batches = learnable_batches(40)
    training = Training((HALF_POINTWISE, *HEAD.layers), HEAD.biases, None)
    tried = [Candidate("half", None, training, sampler, draws)]
    options = {"lr": 0.02, "steps": 24, "check_every": 4, "keep_returning": keep}
    whole, parts = [Progress()], [Progress()]
    loss = trial_losses(module, tried, batches, progress=whole, **options)
    for until in (8, 12, 16, 24):  # stopped where draws begin, in the middle of one, then on to the end
        last = trial_losses(module, tried, batches, until=until, progress=parts, **options)
    assert last == pytest.approx(loss, rel=1e-5)
    assert parts[0].done == whole[0].done == 24
    for a, b in zip(parts[0].values + parts[0].momentum, whole[0].values + whole[0].momentum, strict=True):
        torch.testing.assert_close(a, b)  # the same weights and momentum as one run of 24 steps


@pytest.mark.slow
def test_the_recipes_candidates_are_biases_alone_and_tradys_layers_at_the_same_memory():
    module = mobilenet_module()
    source = PlanSource(device="cortex-m7", budget="24KB", trial="all", epochs=3)
    problem = source.problem(BudgetPlanCallback(trial="all").strategy, module, module.example_input_array)
    batches = list(itertools.islice(iter(mobilenet_data()), 4))
    alone, trady = source.recipe_candidates(BudgetPlanCallback().strategy, problem, module, batches)
    weights = [layer.name for layer in alone.plan.updated() if layer.update == "weight"]
    assert alone.label == "biases alone" and weights == [problem.costs.layers[-1].name]  # and the classifier
    assert trady.label.startswith("TraDy's layers") and (trady.sampler, trady.draws) == ("uniform", 3)
    assert trady.plan.predicted.peak_bytes <= 24 * 1024  # TraDy's draw at the default's memory
    assert any(layer.update == "weight" for layer in trady.plan.updated())
