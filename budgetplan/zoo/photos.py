"""Classification tasks made of natural photographs that ship offline, with no image
region shared between training and validation.

Each class is one source photograph; a sample is a square crop of it, of random place and
size, resized. Every photograph is cut once along its longer side: crops for training
come from the first ``1 - val_fraction`` of it, crops for validation from the rest, so a
validation image never shows a pixel a training image shows. To tell the crops apart a
network must recognise the content and texture of the scene from a part it has not seen.

``PhotoRegions``: ten colour photographs (scikit-image's and scikit-learn's bundled
ones). ``GreyRegions``: ten grey-level photographs and textures (coins, the moon, a
clock, cells, brick, grass, gravel, printed text), where colour tells nothing.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from budgetplan.zoo.datasets import IMAGENET_MEAN, IMAGENET_STD

POOL = {"train": 200, "val": 60}  # crops per class before ``per_class`` keeps the first
MIN_SIDE = 0.35  # a crop's side, as a share of the region's shorter side: at least
COLOUR = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
          "stereo_motorcycle", "china.jpg", "flower.jpg")  # fmt: skip
GREY = ("camera", "coins", "moon", "clock", "cell", "brick", "grass", "gravel", "page", "text")


def _photo(name: str) -> Tensor:
    """``3×H×W`` in [0, 1]: a scikit-image photograph, or a scikit-learn sample image (``.jpg``)."""
    if name.endswith(".jpg"):
        from sklearn.datasets import load_sample_image

        image = torch.tensor(load_sample_image(name))
    else:
        from skimage import data

        loaded = getattr(data, name)()
        image = torch.tensor(loaded[0] if isinstance(loaded, tuple) else loaded)  # the left view of a stereo pair
    image = image.float() / 255.0
    return image.permute(2, 0, 1) if image.dim() == 3 else image[None].expand(3, -1, -1)


class PhotoRegions(Dataset[tuple[Tensor, Tensor]]):
    """Crops of the photographs in ``names`` as ``3×size×size`` tensors (ImageNet-normalised),
    labelled by photograph; ``split`` is ``train`` or ``val``, the crops fixed by ``seed``,
    the first ``per_class`` of each class kept. ``span`` narrows the split's part of each
    photograph to that share of it (``tuning_split`` cuts the training part again)."""

    names: tuple[str, ...] = COLOUR

    def __init__(
        self, split: str = "train", size: int = 128, seed: int = 0, per_class: int | None = None,
        val_fraction: float = 0.2, span: tuple[float, float] = (0.0, 1.0),
    ) -> None:  # fmt: skip
        if split not in POOL:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
        if not 0.0 <= span[0] < span[1] <= 1.0:
            raise ValueError(f"span must be (start, end) with 0 <= start < end <= 1, got {span}")
        self.split, self.size, self.seed, self.val_fraction, self.span = split, size, seed, val_fraction, span
        count = min(POOL[split], per_class) if per_class is not None else POOL[split]
        self.labels = torch.arange(len(self.names)).repeat_interleave(count)
        self._count = count
        self._mean = torch.tensor(IMAGENET_MEAN).reshape(3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).reshape(3, 1, 1)

    @functools.cached_property
    def regions(self) -> list[Tensor]:
        """Each photograph's part for this split."""
        parts = []
        for name in self.names:
            photo = _photo(name)
            axis = 1 if photo.shape[1] >= photo.shape[2] else 2  # the longer side is cut
            cut = round((1.0 - self.val_fraction) * photo.shape[axis])
            start, length = (0, cut) if self.split == "train" else (cut, photo.shape[axis] - cut)
            begin, end = (round(share * length) for share in self.span)
            parts.append(photo.narrow(axis, start + begin, end - begin))
        return parts

    def tuning_split(self, share: float = 0.75) -> tuple[PhotoRegions, PhotoRegions]:
        """This split's part of each photograph cut again: crops of the first ``share`` of it
        (``share`` of the crops per class) and of the rest, so that a choice made on the
        second never sees a pixel the first trains on."""
        begin, end = self.span
        cut = begin + share * (end - begin)
        fit = round(share * self._count)
        split, size, seed, fraction = self.split, self.size, self.seed, self.val_fraction
        return (
            type(self)(split, size, seed, fit, fraction, (begin, cut)),
            type(self)(split, size, seed, self._count - fit, fraction, (cut, end)),
        )

    def __len__(self) -> int:
        return self.labels.numel()

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        label = int(self.labels[i])
        generator = torch.Generator().manual_seed((self.seed * 2 + (self.split == "val")) * 1_000_003 + i)
        region = self.regions[label]
        height, width = region.shape[1:]
        shorter = min(height, width)
        side = int(torch.randint(max(8, round(MIN_SIDE * shorter)), shorter + 1, (1,), generator=generator))
        top = int(torch.randint(height - side + 1, (1,), generator=generator))
        left = int(torch.randint(width - side + 1, (1,), generator=generator))
        crop = region[:, top : top + side, left : left + side]
        image = F.interpolate(crop[None], size=self.size, mode="bilinear", align_corners=False)[0]
        return (image - self._mean) / self._std, self.labels[i]


class GreyRegions(PhotoRegions):
    """The grey-level photographs and textures of ``GREY``, as ``PhotoRegions`` cuts them."""

    names = GREY
