"""Named strategies in the callback: memory every step, and each one's selection rule."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from budgetplan import BudgetPlanCallback
from budgetplan.costs.build import layer_costs
from budgetplan.device.profile import BitWidths, load_device
from budgetplan.errors import BudgetPlanError
from budgetplan.importance import get_measure
from budgetplan.importance.scores import (
    Importance,
    prior_importance,
    resolve_importance,
    shipped_importance,
    top_layers,
)
from budgetplan.planning.memory import Choice, predict
from budgetplan.strategies import STRATEGIES
from budgetplan.training.meter import SavedTensorMeter

from ..helpers.tiny_modules import TinyModule, data, trainer

CAP = 4 * 1024  # training memory: the head plus a few channels of the convs, for batch 8
BUDGETED = [name for name in STRATEGIES if name != "full"]


class Steps(Callback):
    """After each step: the selection, and the saved bytes the budget callback measured."""

    def __init__(self, budget: BudgetPlanCallback) -> None:
        self.budget = budget
        self.rows: list[tuple[int, dict[str, list[int]], float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
        selection = {name: idx.tolist() for name, idx in self.budget.selection.items()}
        self.rows.append((trainer.current_epoch, selection, self.budget.saved_bytes_per_sample or 0.0))


def fit(strategy: str, epochs: int = 3, **options) -> tuple[BudgetPlanCallback, Steps]:
    budget = BudgetPlanCallback(device="cortex-m7", training_memory=CAP, strategy=strategy, batch_size=8, **options)
    steps = Steps(budget)
    trainer(epochs, [budget, steps]).fit(TinyModule(dropout=0.0), data())
    return budget, steps


@pytest.mark.parametrize("strategy", BUDGETED)
def test_every_step_stays_within_the_budget(strategy):
    budget, steps = fit(strategy)
    device = load_device("cortex-m7")
    host = dataclasses.replace(device, bits=BitWidths(32, 32, 32, 32, 32, 1))  # fp32 tensors, 1-bit masks
    costs = layer_costs(TinyModule(), torch.zeros(1, 3, 8, 8), device)
    assert budget.plan is not None
    biases = {layer.name for layer in budget.plan.layers if layer.bias}
    assert len(steps.rows) == 12
    with SavedTensorMeter() as loss:  # the meter also sees what the loss keeps; the model does not
        torch.nn.functional.cross_entropy(torch.zeros(8, 4, requires_grad=True), torch.zeros(8, dtype=torch.long))
    for _, selection, measured in steps.rows:
        choices = {n: Choice(len(selection.get(n, [])), n in biases) for n in {*selection, *biases}}
        # what the meter saw is what the memory model predicts at the host's widths (which
        # also counts a 1-bit dropout mask that p=0 never makes) ...
        predicted = predict(costs, host, choices).saved_bytes
        assert 0.95 * predicted <= measured - loss.bytes / 8 <= predicted
        # ... and the same choices hold the device's training-memory cap
        assert predict(costs, device, choices, batch_size=8).training_memory_bytes <= CAP


def test_full_trains_everything_without_a_budget():
    budget, steps = fit("full", epochs=1)
    _, lean_steps = fit("budgetplan", epochs=1)
    assert budget.plan is not None and budget.plan.status == "unconstrained"
    assert budget.plan.predicted.training_memory_bytes > CAP
    assert min(s for _, _, s in steps.rows) > 10 * max(s for _, _, s in lean_steps.rows)
    assert budget.trained_fraction() == 1.0


def test_trady_trains_the_layers_holding_97_percent():
    _, steps = fit("trady")
    costs = layer_costs(TinyModule(), torch.zeros(1, 3, 8, 8))
    importance = prior_importance(costs)
    top = top_layers(importance)
    shares = sorted((w + importance.bias[n] for n, w in importance.weight.items()), reverse=True)
    assert sum(shares[: len(top)]) >= 0.97 > sum(shares[: len(top) - 1])
    trained = {name for _, selection, _ in steps.rows for name in selection}
    assert trained <= {*top, "net.head.1"}
    assert len(trained) > 1
    # the draw is redrawn each epoch and counts per layer vary with it
    per_epoch = {epoch: tuple(sorted(map(tuple, selection.values()))) for epoch, selection, _ in steps.rows}
    assert len(set(per_epoch.values())) > 1


def test_top_layers_follow_the_cumulative_share():
    importance = Importance("t", {"a": 0.5, "b": 0.3, "c": 0.17, "d": 0.03})
    assert top_layers(importance) == ["a", "b", "c"]
    assert top_layers(importance, 0.8) == ["a", "b"]


def test_sparse_update_never_changes_its_selection():
    _, steps = fit("sparse-update")
    first = steps.rows[0][1]
    assert any(len(idx) < 8 for idx in first.values())  # a partial selection, else nothing to test
    assert all(selection == first for _, selection, _ in steps.rows)


def test_dynamic_gradient_changes_its_selection_within_an_epoch():
    _, steps = fit("dynamic-gradient", epochs=1)
    selections = [selection for epoch, selection, _ in steps.rows if epoch == 0]
    assert len({str(s) for s in selections}) > 1


def test_budgetplan_keeps_its_channels_or_redraws_them_every_epoch():
    budget, steps = fit("budgetplan", epochs=2)
    assert len({str(s) for _, s, _ in steps.rows}) == 1  # kept for the whole fit
    assert budget.sampler == "magnitude" and budget.plan is not None and budget.plan.options["utility"] == "linear"
    budget, steps = fit("budgetplan", epochs=2, resample="epoch", sampler="uniform")
    for epoch in (0, 1):
        assert len({str(s) for e, s, _ in steps.rows if e == epoch}) == 1
    assert steps.rows[0][1] != steps.rows[-1][1]
    assert budget.plan is not None and budget.plan.options["utility"] == "coverage"  # what the draws reach
    budget, _ = fit("budgetplan", epochs=1, resample="epoch", utility="linear")
    assert budget.plan is not None and budget.plan.options["utility"] == "linear"  # as asked


def test_classifier_and_bias_strategies():
    classifier, _ = fit("classifier", epochs=1)
    assert classifier.plan is not None
    assert [layer.name for layer in classifier.plan.updated()] == ["net.head.1"]
    bias, steps = fit("bias", epochs=1)
    assert bias.plan is not None
    assert {layer.name for layer in bias.plan.layers if layer.channels} == {"net.head.1"}
    assert sum(layer.bias for layer in bias.plan.layers) > 1
    assert set(steps.rows[0][1]) == {"net.head.1"}


def test_bad_strategy_arguments():
    with pytest.raises(BudgetPlanError, match=r"unknown strategy 'tradyy'; choose one of budgetplan, bias, .*, trady"):
        BudgetPlanCallback(strategy="tradyy")
    with pytest.raises(BudgetPlanError, match="strategy 'trady' makes its own choices"):
        BudgetPlanCallback(strategy="trady", plan="plan.yaml")


def test_shipped_table_applies_to_imagenet_mobilenet_v2_only():
    import torchvision

    example = torch.zeros(1, 3, 64, 64)
    wide = layer_costs(torchvision.models.mobilenet_v2(num_classes=10), example)
    narrow = layer_costs(torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10), example)
    table = shipped_importance(wide)
    assert table is not None and table.source.startswith("shipped table: mobilenet_v2-imagenet")
    assert set(table.weight) == {layer.name for layer in wide.layers}
    assert shipped_importance(narrow) is None  # same names, other widths
    assert resolve_importance("shipped", wide).source == table.source
    with pytest.raises(BudgetPlanError, match=r"importance 'shipped': no table .* matches model .* or use 'prior'"):
        resolve_importance("shipped", narrow)
    assert resolve_importance("prior", wide).source.startswith("prior")
    # without data the default is the table, by layer name where the widths differ
    assert resolve_importance(None, wide) == table
    by_name = resolve_importance(None, narrow)
    assert by_name.source.startswith("shipped table: mobilenet_v2-imagenet, by layer name: measured at other widths")
    assert by_name.weight == pytest.approx(table.weight) and by_name.bias == pytest.approx(table.bias)
    other = layer_costs(torchvision.models.resnet18(num_classes=10), example)
    assert resolve_importance(None, other).source.startswith("prior")  # no table for it


def test_importance_is_measured_on_the_training_data_by_default():
    budget, _ = fit("budgetplan", epochs=1)
    assert budget.plan.importance_source.startswith("measured: gradient energy, 4 batches of the training data")
    rgn, _ = fit("budgetplan", epochs=1, importance_measure="rgn")
    assert rgn.plan.importance_source.startswith("measured: reweighted gradient norm, 4 batches")
    # trady ranks its layers by its own score, measured the same way on every rank
    trady, _ = fit("trady", epochs=1)
    assert trady.plan.importance_source.startswith("measured: reweighted gradient norm, 4 batches")
    never, _ = fit("budgetplan", epochs=1, importance_batches=0)
    assert never.plan.importance_source.startswith("prior")  # no table for this network
    given, _ = fit("budgetplan", epochs=1, importance="prior")
    assert given.plan.importance_source.startswith("prior")


class LossDict(TinyModule):
    """A training_step that returns a dict and reads its optimizer, which does not exist
    before the fit has configured it."""

    def training_step(self, batch, batch_idx):
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return {"loss": super().training_step(batch, batch_idx)}


def test_a_failed_measurement_falls_back_with_a_warning_or_fails_when_insisted_on():
    budget = BudgetPlanCallback(device="cortex-m7", training_memory=CAP, batch_size=8)
    with pytest.warns(UserWarning, match=r"importance not measured \(list index out of range\); planning with prior"):
        trainer(1, [budget]).fit(LossDict(dropout=0.0), data())
    assert budget.plan.importance_source.startswith("prior")
    insist = BudgetPlanCallback(device="cortex-m7", training_memory=CAP, batch_size=8, importance="measured")
    with pytest.raises(BudgetPlanError, match="importance='measured': list index out of range"):
        trainer(1, [insist]).fit(LossDict(dropout=0.0), data())


class OptimizerFree(LossDict):
    def training_step(self, batch, batch_idx):
        return {"loss": TinyModule.training_step(self, batch, batch_idx)}


def test_a_loss_dict_is_measured():
    budget = BudgetPlanCallback(device="cortex-m7", training_memory=CAP, batch_size=8, importance="measured")
    trainer(1, [budget]).fit(OptimizerFree(dropout=0.0), data())
    assert budget.plan.importance_source.startswith("measured: gradient energy")


def test_a_network_with_a_shipped_table_plans_with_it_by_default():
    """The callback's default for MobileNetV2, at any width: the shipped gradient-energy
    table, by layer name; TraDy measures its own score instead."""
    import torchvision

    from budgetplan.training.plan_source import PlanSource

    module = TinyModule()
    module.net = torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=4)
    costs = layer_costs(module, torch.zeros(1, 3, 32, 32))
    default = PlanSource().importance_for(module, costs)
    assert default.source.startswith("shipped table: mobilenet_v2-imagenet, by layer name")
    assert set(default.weight) == {layer.name for layer in costs.layers}
    trady = PlanSource(importance_measure=get_measure("rgn"), loader=data(16)).importance_for(module, costs)
    assert trady.source.startswith("measured: reweighted gradient norm, 2 batches")
