"""Small real data sets that work offline, for examples and benchmarks.

``DigitsRGB`` is scikit-learn's 1,797 handwritten digits (8×8, 10 classes), upscaled to
an RGB image of any size and normalised with the ImageNet statistics, so an
ImageNet-pretrained network can be fine-tuned on it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DigitsRGB(Dataset[tuple[Tensor, Tensor]]):
    """Digits as ``3×size×size`` tensors; ``split`` is ``train`` (80%) or ``val`` (20%),
    stratified and fixed by ``seed``."""

    def __init__(self, split: str = "train", size: int = 128, seed: int = 0) -> None:
        try:
            from sklearn.datasets import load_digits
        except ImportError as err:
            raise ImportError("DigitsRGB needs scikit-learn: pip install scikit-learn") from err
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32) / 16.0
        labels = torch.tensor(digits.target, dtype=torch.long)
        generator = torch.Generator().manual_seed(seed)
        keep = []
        for label in range(10):
            members = (labels == label).nonzero().squeeze(1)
            members = members[torch.randperm(members.numel(), generator=generator)]
            cut = round(0.8 * members.numel())
            keep.append(members[:cut] if split == "train" else members[cut:])
        index = torch.cat(keep).sort().values
        self.images, self.labels, self.size = images[index], labels[index], size
        self._mean = torch.tensor(IMAGENET_MEAN).reshape(3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).reshape(3, 1, 1)

    def __len__(self) -> int:
        return self.labels.numel()

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image = F.interpolate(self.images[i][None, None], size=self.size, mode="bilinear", align_corners=False)[0]
        return (image.expand(3, -1, -1) - self._mean) / self._std, self.labels[i]
