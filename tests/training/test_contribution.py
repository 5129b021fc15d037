"""Sparse Update's contribution analysis: trials valued against a hand computation, the
module left as it was, and the ILP's search over exactly the measured choices."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import yaml
from torch import nn

from budgetplan import BudgetPlanCallback
from budgetplan.costs.build import layer_costs
from budgetplan.device.profile import load_device
from budgetplan.errors import BudgetPlanError
from budgetplan.importance import get_measure
from budgetplan.importance.scores import Importance, load_importance
from budgetplan.planning.assemble import plan_from_costs
from budgetplan.planning.memory import Choice
from budgetplan.planning.objective import bias_order, objective
from budgetplan.planning.options import SPARSE_UPDATE_RATIOS, planner_options
from budgetplan.planning.solve import fits_with_stage
from budgetplan.training.contribution import contributions_on_batches
from budgetplan.training.measure import MeasuredImportance

from ..helpers.tiny_modules import TinyModule, trainer


def learnable(n: int) -> list:
    """Batches of 8 whose class c < 3 brightens input channel c (class 3: none)."""
    generator = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (n,), generator=generator)
    x = torch.randn(n, 3, 8, 8, generator=generator)
    x[y < 3, y[y < 3]] += 1.5
    return list(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8))


def _analysis(module, batches, **options):
    dtype = next(module.parameters()).dtype
    costs = layer_costs(module, torch.zeros(1, 3, 8, 8, dtype=dtype))
    return costs, contributions_on_batches(module, batches, costs, "test batches", **options)


def test_a_trial_is_its_held_out_loss_decrease_over_the_classifier_alone():
    module = TinyModule(dropout=0.0).double()  # float64: the gains are small differences of losses
    module.lr = 0.5  # where Lightning's tuner finds it; the trials take it
    batches = [(x.double(), y) for x, y in learnable(40)]  # 5 batches: 2 train the trials, 3 value them
    _, importance = _analysis(module, batches, candidates=1, depths=(1,), steps=3)

    def held_out_loss(trained, channels=None):
        net = copy.deepcopy(module.net).eval()  # BatchNorm frozen, as the analysis runs it
        params = [p for name, p in net.named_parameters() if name in trained]
        optimizer = torch.optim.SGD(params, lr=0.5, momentum=0.9)
        for step in range(3):
            x, y = batches[step % 2]
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            for name, p in net.named_parameters():
                if name not in trained:
                    p.grad = None
            if channels is not None:  # only these input channels of features.6 move
                keep = torch.zeros_like(net.features[6].weight)
                keep[:, channels] = 1
                net.features[6].weight.grad *= keep
            optimizer.step()
        with torch.no_grad():
            return sum(nn.functional.cross_entropy(net(x), y).item() for x, y in batches[2:]) / 3

    head = {"head.1.weight", "head.1.bias"}
    base = held_out_loss(head)
    # the last layer before the head at each ratio: the input channels of largest weight norm
    norms = module.net.features[6].weight.detach().pow(2).sum((0, 2, 3))
    gains = [
        base - held_out_loss(head | {"features.6.weight"}, norms.topk(count).indices)
        for count in (1, 2, 4, 8)  # 1/8, 1/4, 1/2, 1 of 8 input channels
    ]
    # depth 1: the bias of the last layer before the head (its frozen BatchNorm's shift)
    depth = base - held_out_loss(head | {"features.7.bias"})
    scale = importance.scale
    expected = [max(0.0, *gains[: i + 1]) for i in range(4)]  # clipped at 0, never less for more
    assert expected[-1] > 0  # some ratio helps here, else the comparison would be of zeros
    measured = [importance.curves["net.features.6"][r] * scale for r in SPARSE_UPDATE_RATIOS]
    assert measured == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert importance.bias_depths[1] * scale == pytest.approx(max(0.0, depth), rel=1e-9, abs=1e-12)
    assert set(importance.curves) == {"net.features.6"}
    assert f"held-out loss {base:.4g}" in importance.source


def test_the_analysis_changes_nothing_and_is_repeatable():
    module = TinyModule()
    module.lr = 0.5
    module.net.features[0].weight.requires_grad_(False)
    module.train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    batches = learnable(48)
    _, importance = _analysis(module, batches, candidates=2, depths=(1, 2, 5))
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert not module.net.features[0].weight.requires_grad and module.net.head[1].weight.requires_grad
    assert module.training and all(p.grad is None for p in module.parameters())
    assert "log" not in vars(module)
    # the two layers before the head, at Sparse Update's ratios; more is never worth less
    assert set(importance.curves) == {"net.features.3", "net.features.6"}
    for curve in importance.curves.values():
        assert tuple(curve) == SPARSE_UPDATE_RATIOS
        assert list(curve.values()) == sorted(curve.values())
    assert list(importance.bias_depths) == [1, 2, 3]  # depth 5 is capped at the 3 biases there are
    assert list(importance.bias_depths.values()) == sorted(importance.bias_depths.values())
    assert importance.unit.startswith("held-out loss decrease")
    assert _analysis(module, batches, candidates=2, depths=(1, 2, 5))[1] == importance
    with pytest.raises(BudgetPlanError, match="more than 3 batches"):
        _analysis(module, batches[:3])


@pytest.fixture(scope="module")
def measured_choices():
    """A MobileNetV2-like chain with made-up contributions for four layers and three depths."""
    import torchvision

    model = torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10)
    device = load_device("cortex-m7")
    costs = layer_costs(model, torch.zeros(1, 3, 96, 96), device)
    analysed = [layer.name for layer in costs.layers[-5:-1]]
    curves = {
        name: {r: (i + 1) * v for r, v in zip(SPARSE_UPDATE_RATIOS, (0.2, 0.35, 0.6, 0.7), strict=True)}
        for i, name in enumerate(analysed)
    }
    weight = {layer.name: max(curves.get(layer.name, {0: 0.0}).values()) for layer in costs.layers}
    depths = {2: 0.5, 8: 1.4, 16: 1.6}
    importance = Importance("made up", weight, {}, "loss", None, curves, depths).normalised()
    return costs, device, importance


@pytest.mark.slow
@pytest.mark.parametrize("cap", ["40KB", "80KB", "160KB"])
def test_the_ilp_finds_the_best_scheme_among_the_measured_choices(measured_choices, cap):
    costs, device, importance = measured_choices
    options = planner_options(training_memory=cap, ratios=SPARSE_UPDATE_RATIOS, utility="linear")
    plan = plan_from_costs(costs, device, importance, options)
    head = costs.layers[-1].name
    # weights: only analysed layers (and the required head), at measured ratios
    for layer in plan.layers:
        if layer.channels and layer.name != head:
            assert layer.name in importance.curves
            assert layer.channels in {round(r * layer.total_channels) for r in SPARSE_UPDATE_RATIOS}
    # biases: the last k of a measured depth, nothing else but the head's
    order = bias_order(costs)
    trained = [layer.name for layer in plan.layers if layer.bias and layer.name != head]
    assert len(trained) in {0, *importance.bias_depths} and set(trained) == set(order[: len(trained)])
    # exhaustive search over every scheme of the measured choices that keeps the limits
    head_choice = {head: Choice(costs.layer(head).in_channels, True)}
    analysed = list(importance.curves)
    best = 0.0
    for depth in (0, *importance.bias_depths):
        for ratios in itertools.product((0.0, *SPARSE_UPDATE_RATIOS), repeat=len(analysed)):
            choices = dict(head_choice)
            for name in order[:depth]:
                choices[name] = Choice(0, True)
            for name, r in zip(analysed, ratios, strict=True):
                if r:
                    count = round(r * costs.layer(name).in_channels)
                    choices[name] = Choice(count, choices.get(name, Choice()).bias)
            if fits_with_stage(costs, device, options, choices):
                best = max(best, objective(costs, importance, options, choices))
    assert best > 0
    assert plan.objective == pytest.approx(best, abs=1e-5)


def test_contribution_files_round_trip(tmp_path, measured_choices):
    costs, _, importance = measured_choices
    path = tmp_path / "contribution.yaml"
    MeasuredImportance(importance, {}, 4, "made up", get_measure("contribution")).save(path)
    loaded = load_importance(path, costs)
    assert loaded.curves.keys() == importance.curves.keys()
    for name, curve in importance.curves.items():
        assert loaded.curves[name] == pytest.approx(curve)
    assert loaded.bias_depths == pytest.approx(importance.bias_depths)
    data_ = yaml.safe_load(path.read_text())
    data_["bias_depths"] = {0.5: 1.0}
    path.write_text(yaml.safe_dump(data_))
    with pytest.raises(BudgetPlanError, match=r"bias_depths.*layer counts"):
        load_importance(path, costs)


def test_sparse_update_plans_with_its_own_analysis():
    budget = BudgetPlanCallback(device="cortex-m7", training_memory=4 * 1024, strategy="sparse-update", batch_size=8)
    samples = [(x, y) for batch in learnable(48) for x, y in zip(*batch, strict=True)]
    loader = torch.utils.data.DataLoader(samples, batch_size=8)
    trainer(1, [budget]).fit(TinyModule(dropout=0.0), loader)
    plan = budget.plan
    assert plan is not None and plan.importance_source.startswith("measured: contribution analysis")
    analysed = {"net.features.0", "net.features.3", "net.features.6"}  # every layer before the head
    assert {layer.name for layer in plan.layers if layer.channels} <= analysed | {"net.head.1"}


@pytest.mark.slow
def test_contribution_command_plans_among_the_analysed_choices(tmp_path):
    from ..helpers.cli import run_cli

    out = tmp_path / "contribution.yaml"
    result = run_cli(
        "importance", "--model", "mobilenet_v2", "--pretrained", "--input-size", "32", "--steps", "2",
        "--batch-size", "8", "--measure", "contribution", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    written = yaml.safe_load(out.read_text())
    assert written["measure"].startswith("contribution analysis") and written["bias_depths"]
    analysed = {name for name, layer in written["layers"].items() if "curve" in layer}
    assert len(analysed) == 12
    solved = run_cli("solve", "--model", "mobilenet_v2", "--input-size", "32", "--device", "raspberry-pi-4",
                     "--importance", str(out), "--format", "json")  # fmt: skip
    assert solved.returncode == 0, solved.stderr[-2000:]
    import json

    plan = json.loads(solved.stdout)
    weights = {layer["name"] for layer in plan["layers"] if layer["channels"]}
    assert weights - analysed <= {plan["layers"][-1]["name"]}  # analysed layers, and the classifier
