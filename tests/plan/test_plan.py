"""Plan files: round trip, atomic writes, schema and model checks."""

import pytest
import torch
import yaml

from budgetplan import Plan, PlanError, layer_costs, solve
from budgetplan.errors import BudgetPlanError
from budgetplan.files import write_atomic
from budgetplan.zoo.models import build_model


@pytest.fixture(scope="module")
def plan_and_model():
    model, name = build_model()
    plan = solve(model, torch.zeros(1, 3, 128, 128), "cortex-m7", model_name=name, budget="300KB")
    return plan, model


@pytest.mark.slow
def test_round_trip(tmp_path, plan_and_model):
    plan, _ = plan_and_model
    path = tmp_path / "plan.yaml"
    plan.save(path)
    loaded = Plan.load(path)
    assert loaded.to_dict() == plan.to_dict()
    assert loaded.device == plan.device.__class__(**{**plan.device.__dict__, "source": loaded.device.source})
    assert loaded.channels() == plan.channels() and loaded.fingerprint == plan.fingerprint


def test_plan_is_self_contained(tmp_path, plan_and_model):
    plan, _ = plan_and_model
    data = plan.to_dict()
    for key in ("device", "budget_bytes", "predicted_bytes", "status", "solve_seconds", "objective", "layers"):
        assert key in data
    assert data["device_profile"]["sram"] == 320 * 1024  # the profile travels with the plan
    assert data["accounting"].startswith("physical")
    assert data["importance_source"].startswith("shipped table: mobilenet_v2-imagenet, by layer name")
    assert {layer["update"] for layer in data["layers"]} <= {"none", "bias", "weight"}


def test_check_against_the_model(plan_and_model):
    plan, model = plan_and_model
    plan.check_matches(layer_costs(model, torch.zeros(1, 3, 128, 128)))
    other, _ = build_model("mobilenet_v2", 5, 0.35)  # the same network with a 5-class head
    with pytest.raises(PlanError) as err:
        plan.check_matches(layer_costs(other, torch.zeros(1, 3, 128, 128)))
    assert str(err.value).endswith("does not match this model: classifier.1 (plan weight [10, 1280], model [5, 1280])")
    resnet, _ = build_model("resnet18", 10)
    with pytest.raises(PlanError) as err:
        plan.check_matches(layer_costs(resnet, torch.zeros(1, 3, 64, 64)))
    # 53 plan layers and 21 model layers, none shared: 8 named, the rest counted
    assert "features.0.0 (in the plan, not in the model)" in str(err.value)
    assert str(err.value).endswith("and 66 more")


def test_schema_version_is_checked(tmp_path, plan_and_model):
    plan, _ = plan_and_model
    data = plan.to_dict()
    data["schema_version"] = 99
    path = tmp_path / "future.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PlanError, match=r"schema_version.*99.*reads version 1"):
        Plan.load(path)


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda d: d.pop("layers"), "'layers' is missing"),
        (lambda d: d["layers"][0].update(update="maybe"), "update 'maybe'"),
        (lambda d: d["layers"][0].update(weight_shape=[1, 2]), "fingerprint"),
        (lambda d: d["device_profile"].update(sram="-1KB"), "field 'sram'"),
    ],
)
def test_damaged_plan_files(tmp_path, plan_and_model, mutate, words):
    plan, _ = plan_and_model
    data = plan.to_dict()
    mutate(data)
    path = tmp_path / "damaged.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PlanError, match=words):
        Plan.load(path)


def test_not_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("layers: [unclosed\n")
    with pytest.raises(PlanError, match="not valid YAML"):
        Plan.load(path)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "plan.yaml"
    path.write_text("old plan\n")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("budgetplan.files.os.replace", crash)
    with pytest.raises(BudgetPlanError, match=r"cannot write \(disk full\); the old file is kept"):
        write_atomic(path, "new plan\n")
    assert path.read_text() == "old plan\n"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
