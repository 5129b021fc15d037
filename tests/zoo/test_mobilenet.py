"""The command line's MobileNetV2 is torchvision's network, without torchvision's import."""

from __future__ import annotations

import pytest
import torch
import torchvision

from budgetplan.zoo.mobilenet import mobilenet_v2
from budgetplan.zoo.pretrained import checkpoint_path

from ..helpers.cli import imported_by


@pytest.mark.parametrize("width", [0.35, 0.5, 1.0, 1.4])
def test_each_width_has_torchvisions_parameters_by_name_and_shape(width):
    ours = mobilenet_v2(num_classes=7, width_mult=width).state_dict()
    theirs = torchvision.models.mobilenet_v2(num_classes=7, width_mult=width).state_dict()
    assert [(k, v.shape) for k, v in ours.items()] == [(k, v.shape) for k, v in theirs.items()]


def test_the_imagenet_checkpoint_gives_torchvisions_outputs():
    state = torch.load(checkpoint_path(), map_location="cpu", weights_only=True)
    ours, theirs = mobilenet_v2(), torchvision.models.mobilenet_v2()
    ours.load_state_dict(state)
    theirs.load_state_dict(state)
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ours.eval()(x), theirs.eval()(x))


@pytest.mark.slow
def test_the_default_solve_does_not_import_torchvision(tmp_path):
    assert imported_by(["solve", "--device", "cortex-m7", "--out", str(tmp_path / "plan.yaml")], "torchvision") == []
