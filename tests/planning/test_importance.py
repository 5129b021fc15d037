"""Importance: the prior, importance files, and their effect on the plan."""

import pytest
import yaml

from budgetplan import BudgetPlanError, load_device
from budgetplan.importance.scores import PRIOR_SOURCE, load_importance, prior_importance
from budgetplan.planning.assemble import plan_from_costs

from ..helpers.cli import run_cli


def test_prior_is_the_share_of_trainable_elements(default_costs_by_executor):
    costs = default_costs_by_executor["inplace-dw"]
    prior = prior_importance(costs)
    total = sum(layer.weight_elements + layer.bias_elements for layer in costs.layers)
    head = costs.layer("classifier.1")
    assert prior.weight["classifier.1"] == pytest.approx(head.weight_elements / total)
    assert prior.bias["classifier.1"] == pytest.approx(head.bias_elements / total)
    assert sum(prior.weight.values()) + sum(prior.bias.values()) == pytest.approx(1.0)
    assert prior.source == PRIOR_SOURCE


def _write(tmp_path, costs, favourite, source="test scores"):
    layers = {layer.name: {"weight": 1.0, "bias": 0.0} for layer in costs.layers}
    layers[favourite] = 1000.0
    path = tmp_path / "importance.yaml"
    path.write_text(yaml.safe_dump({"source": source, "layers": layers}))
    return path


@pytest.mark.slow
def test_importance_file_steers_the_plan(tmp_path, default_costs_by_executor):
    costs = default_costs_by_executor["inplace-dw"]
    device = load_device("cortex-m7")
    favourite = "features.15.conv.0.0"  # 56 -> 336 expand conv, not chosen under the prior
    assert plan_from_costs(costs, device).layers[costs.layer(favourite).index].channels == 0
    path = _write(tmp_path, costs, favourite)
    importance = load_importance(path, costs)
    assert importance.source == f"file: {path} (test scores)"
    plan = plan_from_costs(costs, device, importance)
    assert plan.layers[costs.layer(favourite).index].channels > 0
    assert plan.importance_source == importance.source


def test_importance_file_through_the_command_line(tmp_path, default_costs_by_executor):
    costs = default_costs_by_executor["inplace-dw"]
    path = _write(tmp_path, costs, "features.16.conv.0.0")
    result = run_cli("solve", "--importance", str(path), "--format", "json")
    assert result.returncode == 0, result.stderr
    import json

    data = json.loads(result.stdout)
    assert data["importance_source"].startswith(f"file: {path}")
    assert next(layer for layer in data["layers"] if layer["name"] == "features.16.conv.0.0")["channels"] > 0


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ({"layers": {"features.0.0": 1.0}}, "missing layers of the model"),
        ({"layers": "everything"}, "field 'layers'"),
        ({"layers": {"classifier.1": -1.0}}, "expected a number >= 0"),
        ({"layers": {"classifier.1": {"weight": 1.0, "bais": 1.0}}}, "expected a number or"),
    ],
)
def test_bad_importance_files(tmp_path, default_costs_by_executor, content, words):
    costs = default_costs_by_executor["inplace-dw"]
    path = tmp_path / "importance.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(BudgetPlanError, match=words) as err:
        load_importance(path, costs)
    assert str(path) in str(err.value)


def test_importance_for_another_model(tmp_path, default_costs_by_executor):
    costs = default_costs_by_executor["inplace-dw"]
    layers = {layer.name: 1.0 for layer in costs.layers}
    layers["decoder.0"] = 1.0
    path = tmp_path / "importance.yaml"
    path.write_text(yaml.safe_dump({"layers": layers}))
    with pytest.raises(BudgetPlanError, match=r"layers the model does not have: decoder\.0"):
        load_importance(path, costs)


def test_scores_measured_inside_a_lightning_module_fit_the_bare_model(tmp_path, default_costs_by_executor):
    """The callback names layers as the LightningModule does (``net.features...``); the
    same file plans the bare network with ``budgetplan solve --importance``."""
    costs = default_costs_by_executor["inplace-dw"]
    favourite = "features.15.conv.0.0"
    scores = {layer.name: {"weight": 1.0 if layer.name == favourite else 0.01, "bias": 0.02} for layer in costs.layers}
    bare, path = tmp_path / "bare.yaml", tmp_path / "wrapped.yaml"
    bare.write_text(yaml.safe_dump({"layers": scores}))
    layers = {f"net.{name}": value for name, value in scores.items()}
    channels = {f"net.{layer.name}": layer.in_channels for layer in costs.layers}
    path.write_text(yaml.safe_dump({"layers": layers, "in_channels": channels}))
    wrapped, expected = load_importance(path, costs), load_importance(bare, costs)
    assert wrapped.weight == expected.weight and wrapped.bias == expected.bias
    assert wrapped.weight[favourite] > 10 * wrapped.weight["classifier.1"]
    channels[f"net.{favourite}"] += 1  # measured on another width: still refused
    path.write_text(yaml.safe_dump({"layers": layers, "in_channels": channels}))
    with pytest.raises(BudgetPlanError, match=f"input channels differ at {favourite}"):
        load_importance(path, costs)
