"""Measured importance: gradient energy and TraDy's reweighted gradient norm, against hand
computations; the measurement the callback makes at setup."""

import copy

import pytest
import torch
import yaml
from torch import nn

from budgetplan import BudgetPlanError, load_device, measure_importance
from budgetplan.costs.build import layer_costs
from budgetplan.importance.scores import load_importance
from budgetplan.planning.assemble import plan_from_costs

from ..helpers.cli import run_cli


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    )  # fmt: skip


def test_one_step_equals_a_hand_computation():
    net = small_net()
    x, y = torch.randn(6, 3, 5, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=6)
    measured = measure_importance(net, loader, steps=1, measure="rgn")

    hand = copy.deepcopy(net)
    nn.functional.cross_entropy(hand(x), y).backward()
    expected_weight = {
        # sum over input channels of ||dL/dW[:, c]|| / (C_W + C_A)
        "0": sum(hand[0].weight.grad[:, c].norm().item() for c in range(3)) / (4 * 9 + 25),
        "2": sum(hand[2].weight.grad[c].norm().item() for c in range(4)) / (9 + 25),
        "6": sum(hand[6].weight.grad[:, c].norm().item() for c in range(4)) / (3 + 1),
    }
    expected_bias = {
        "0": hand[0].bias.grad.norm().item() / 4,
        "2": hand[2].bias.grad.norm().item() / 4,
        "6": hand[6].bias.grad.norm().item() / 3,
    }
    total = sum(expected_weight.values()) + sum(expected_bias.values())
    for name in expected_weight:
        assert measured.importance.weight[name] == pytest.approx(expected_weight[name] / total, rel=1e-5)
        assert measured.importance.bias[name] == pytest.approx(expected_bias[name] / total, rel=1e-5)
    # the user's model is not changed by the measurement
    fresh = small_net().state_dict().values()
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), fresh, strict=True))


def test_energy_is_the_first_order_loss_decrease_per_step():
    """Weight channels and biases on one scale: ||g||^2, the loss decrease of an SGD step
    of unit learning rate to first order, averaged over the steps."""
    net = small_net()
    x, y = torch.randn(8, 3, 5, 5), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    measured = measure_importance(net, loader, steps=1)
    hand = copy.deepcopy(net)
    loss = nn.functional.cross_entropy(hand(x), y)
    loss.backward()
    weight = {n: hand[int(n)].weight.grad.pow(2).sum().item() for n in ("0", "2", "6")}
    bias = {n: hand[int(n)].bias.grad.pow(2).sum().item() for n in ("0", "2", "6")}
    total = sum(weight.values()) + sum(bias.values())
    for name in weight:
        assert measured.importance.weight[name] == pytest.approx(weight[name] / total, rel=1e-5)
        assert measured.importance.bias[name] == pytest.approx(bias[name] / total, rel=1e-5)
    assert f"total {total:.4g} loss decrease per SGD step" in measured.importance.source
    # the first-order prediction: a tiny step of every parameter lowers the loss by lr * total
    lr = 1e-4
    with torch.no_grad():
        for p in hand.parameters():
            p -= lr * p.grad
        decrease = loss.item() - nn.functional.cross_entropy(hand(x), y).item()
    assert decrease == pytest.approx(lr * total, rel=0.05)


def test_measurement_at_setup_changes_nothing():
    """``importance_on_batches``: gradients of the module as it is, norms frozen; flags,
    modes, statistics and parameters as they were."""
    from budgetplan.training.measure import importance_on_batches

    from ..helpers.tiny_modules import TinyModule, data

    module = TinyModule()
    module.net.features[0].weight.requires_grad_(False)
    module.train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    costs = layer_costs(module, torch.zeros(1, 3, 8, 8))
    batches = list(data(16))
    importance = importance_on_batches(module, batches, costs, "test batches")
    assert importance.source.startswith("measured: gradient energy, 2 batches of test batches")
    assert set(importance.weight) == {"net.features.0", "net.features.3", "net.features.6", "net.head.1"}
    assert importance.bias["net.features.0"] > 0  # the frozen BatchNorm's shift: the folded bias
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())  # running stats too
    assert not module.net.features[0].weight.requires_grad and module.net.head[1].weight.requires_grad
    assert module.training and module.net.features[1].training
    assert all(p.grad is None for p in module.parameters())
    assert "log" not in vars(module)
    # the same batches give the same scores; none gives an error
    assert importance_on_batches(module, batches, costs, "test batches") == importance
    from budgetplan.errors import BudgetPlanError

    with pytest.raises(BudgetPlanError, match="no batch"):
        importance_on_batches(module, [], costs, "nothing")


def test_measurement_batches_leave_the_loader_alone():
    from budgetplan.training.plan_source import measurement_batches

    generator = torch.Generator().manual_seed(3)
    dataset = torch.utils.data.TensorDataset(torch.arange(40.0)[:, None], torch.zeros(40))
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True, generator=generator)
    state = generator.get_state()
    first = [b[0].flatten().tolist() for b in measurement_batches(loader, 3, seed=0)]
    again = [b[0].flatten().tolist() for b in measurement_batches(loader, 3, seed=0)]
    other = [b[0].flatten().tolist() for b in measurement_batches(loader, 3, seed=1)]
    assert first == again and first != other and len(first) == 3
    assert sorted(x for batch in first for x in batch) != list(range(12))  # drawn across the data set
    assert torch.equal(generator.get_state(), state)


def test_an_empty_loader_fails_with_a_clear_error():
    empty = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(0, 3, 5, 5)), batch_size=2)
    with pytest.raises(BudgetPlanError, match=r"^measure_importance: the data loader yields no batch"):
        measure_importance(small_net(), empty, steps=1)


def test_ranking_and_top_layers():
    net = small_net()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(12, 3, 5, 5), torch.randint(0, 3, (12,))), batch_size=4
    )
    measured = measure_importance(net, loader, steps=3)
    ranking = measured.ranking()
    assert [share for _, share, _ in ranking] == sorted((s for _, s, _ in ranking), reverse=True)
    assert ranking[-1][2] == pytest.approx(1.0)
    top = measured.top_layers()
    held = sum(share for name, share, _ in ranking if name in top)
    assert held >= 0.97 and (len(top) == 1 or held - ranking[len(top) - 1][1] < 0.97)
    assert measured.steps == 3


def test_file_round_trip_and_plan(tmp_path):
    net = small_net()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(8, 3, 5, 5), torch.randint(0, 3, (8,))), batch_size=4
    )
    measured = measure_importance(net, loader, steps=2, data_name="random test data")
    path = tmp_path / "importance.yaml"
    measured.save(path)
    data = yaml.safe_load(path.read_text())
    assert data["steps"] == 2 and data["top_layers_97"] == measured.top_layers()
    costs = layer_costs(net, torch.zeros(1, 3, 5, 5))
    loaded = load_importance(path, costs)
    assert loaded.weight == pytest.approx(measured.importance.weight)
    plan = plan_from_costs(costs, load_device("raspberry-pi-4"), loaded)
    assert plan.importance_source.startswith(f"file: {path} (measured: gradient energy, 2 steps")
    # a file measured on the bare network applies to a module that holds it
    holder = nn.Sequential()
    holder.add_module("net", net)
    assert set(load_importance(path, layer_costs(holder, torch.zeros(1, 3, 5, 5))).weight) == {
        "net.0", "net.2", "net.6",
    }  # fmt: skip


@pytest.mark.slow
def test_importance_command(tmp_path):
    out = tmp_path / "importance.yaml"
    result = run_cli(
        "importance", "--model", "mobilenet_v3_small", "--input-size", "32", "--steps", "2", "--batch-size", "8",
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "most important layers hold 97%" in result.stdout
    solved = run_cli("solve", "--model", "mobilenet_v3_small", "--input-size", "32", "--device", "stm32h743",
                     "--importance", str(out), "--format", "json")  # fmt: skip
    assert solved.returncode == 0, solved.stderr[-2000:]
    import json

    assert json.loads(solved.stdout)["importance_source"].startswith(f"file: {out} (measured")
    bad = run_cli("importance", "--data", str(tmp_path / "nowhere"), "--out", str(out))
    assert bad.returncode == 2 and "ImageFolder" in bad.stderr


def test_importance_from_a_dataset_factory(tmp_path, monkeypatch):
    """``--data package.module:factory``: the factory's dataset, at the input size asked for."""
    (tmp_path / "my_data.py").write_text(
        "import torch\n"
        "def images(input_shape):\n"
        "    x = torch.rand(16, *input_shape, generator=torch.Generator().manual_seed(0))\n"
        "    return torch.utils.data.TensorDataset(x, torch.arange(16) % 3)\n"
        "def broken():\n"
        "    return 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "importance.yaml"
    args = ["importance", "--model", "mobilenet_v3_small", "--input-size", "32", "--num-classes", "3"]
    result = run_cli(*args, "--data", "my_data:images", "--steps", "2", "--batch-size", "8", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 steps on my_data:images" in result.stdout and out.exists()
    for spec, words in (("my_data:broken", "returned int, not a dataset"), ("my_data:nothing", "no attribute")):
        bad = run_cli(*args, "--data", spec, "--out", str(out))
        assert bad.returncode == 2 and words in bad.stderr, bad.stderr


def test_the_objective_reads_in_the_measured_unit(tmp_path):
    """Energy scores keep their total: a plan's objective is a loss decrease per step."""
    net = small_net()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(8, 3, 5, 5), torch.randint(0, 3, (8,))), batch_size=4
    )
    measured = measure_importance(net, loader, steps=2)
    assert measured.importance.unit == "loss decrease per SGD step per unit learning rate"
    path = tmp_path / "importance.yaml"
    measured.save(path)
    costs = layer_costs(net, torch.zeros(1, 3, 5, 5))
    loaded = load_importance(path, costs)
    assert loaded.scale == pytest.approx(measured.importance.scale)
    plan = plan_from_costs(costs, load_device("raspberry-pi-4"), loaded)
    assert plan.objective == pytest.approx(1.0, abs=1e-3)  # a roomy device trains everything
    assert plan.objective_in_unit() == f"{plan.objective * loaded.scale:.4g} {loaded.unit}"
    from budgetplan.report.text import render_plan

    assert f"objective {plan.objective:.4f} = {plan.objective_in_unit()}" in render_plan(plan)
    from budgetplan import Plan

    assert Plan.from_dict(plan.to_dict()).objective_in_unit() == plan.objective_in_unit()
    rgn = measure_importance(net, loader, steps=2, measure="rgn")
    assert rgn.importance.unit == "" and rgn.importance.scale is None
    assert plan_from_costs(costs, load_device("raspberry-pi-4"), rgn.importance).objective_in_unit() is None
