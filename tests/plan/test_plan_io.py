"""A plan file edited by hand is checked in full when it is read."""

from __future__ import annotations

import warnings

import pytest
import torch
import yaml

from budgetplan import cli
from budgetplan.errors import PlanError
from budgetplan.plan.model import Plan


@pytest.fixture(scope="module")
def plan_data(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("plan") / "plan.yaml"
    assert cli.main(["solve", "--model", "resnet18", "--input-size", "32", "--device", "raspberry-pi-4",
                     "--out", str(path)]) == 0  # fmt: skip
    return yaml.safe_load(path.read_text())


def _trained(data: dict) -> dict:
    return next(layer for layer in data["layers"] if 0 < layer["channels"] < layer["total_channels"] or layer["bias"])


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda d: _trained(d).update(channels=1000000), "field 'channels': expected a whole number from 0 to"),
        (lambda d: _trained(d).update(channels=-2), "field 'channels'"),
        (lambda d: _trained(d).update(channels="many"), "got 'many'"),
        (lambda d: _trained(d).update(bias="yes"), "field 'bias': expected true or false"),
        (lambda d: _trained(d).update(bias=True, bias_param=None), "names no bias parameter"),
        (lambda d: _trained(d).update(update="none"), "does not agree with channels and bias"),
        (lambda d: _trained(d).update(activation_bytes=float("nan")), "field 'activation_bytes'"),
        (lambda d: d.update(batch_size=0), "field 'batch_size'"),
        (lambda d: d.update(input_shape="3x32x32"), "field 'input_shape'"),
        (lambda d: d["predicted"].update(peak_bytes="lots"), "predicted: field 'peak_bytes'"),
        (lambda d: d.update(layers=[]), "field 'layers': expected a list"),
    ],
)
def test_edited_fields_are_named(tmp_path, plan_data, edit, words):
    data = yaml.safe_load(yaml.safe_dump(plan_data))
    edit(data)
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PlanError, match=words):
        Plan.load(path)


def test_a_valid_file_reads_back_the_same(tmp_path, plan_data):
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan_data))
    assert Plan.load(path).to_dict() == plan_data


def test_a_device_profile_is_not_taken_for_an_old_plan(capsys):
    from budgetplan.device.profile import profiles_dir

    assert cli.main(["show", str(profiles_dir() / "cortex-m7.yaml")]) == 2
    err = capsys.readouterr().err
    assert "is a device profile, not a plan file" in err and "solve the plan again" not in err


def test_training_data_is_held_to_the_plan(tmp_path):
    """Larger samples are refused; a larger batch warns; smaller ones pass (Plan.check_batch)."""
    from budgetplan import BudgetPlanCallback

    from ..helpers.tiny_modules import TinyModule, data, trainer

    big = BudgetPlanCallback(device="raspberry-pi-4", example_input=torch.zeros(1, 3, 4, 4))
    with pytest.raises(PlanError, match=r"solved for inputs of shape 3x4x4, but training gives 3x8x8"):
        trainer(1, [big]).fit(TinyModule(example=False), data())
    small = BudgetPlanCallback(device="raspberry-pi-4", batch_size=8)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="budgetplan: training batches")
        trainer(1, [small]).fit(TinyModule(), data())
    single = BudgetPlanCallback(device="raspberry-pi-4")  # solved for batch 1
    with pytest.warns(UserWarning, match="training batches hold 8 samples, but the plan was solved for 1"):
        trainer(1, [single]).fit(TinyModule(), data())


def test_an_unknown_option_fails_at_construction():
    from budgetplan import BudgetPlanCallback

    with pytest.raises(TypeError, match="unknown planner option"):
        BudgetPlanCallback(device="cortex-m7", bugdet="100KB")


def test_saving_more_than_the_plan_allows_is_reported(tmp_path):
    from budgetplan import BudgetPlanCallback

    from ..helpers.tiny_modules import TinyModule, data, trainer

    honest = BudgetPlanCallback(device="raspberry-pi-4", batch_size=8)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="budgetplan: autograd saved")
        trainer(1, [honest]).fit(TinyModule(), data())
    assert honest.plan is not None
    shrunk = honest.plan.to_dict()
    shrunk["predicted"]["saved_bytes"] /= 20  # a prediction that misses most of what is saved
    path = tmp_path / "shrunk.yaml"
    path.write_text(yaml.safe_dump(shrunk))
    with pytest.warns(UserWarning, match="autograd saved .* bytes per sample, above the"):
        trainer(1, [BudgetPlanCallback(plan=str(path))]).fit(TinyModule(), data())
