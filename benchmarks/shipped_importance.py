"""Measure the importance table shipped for ImageNet MobileNetV2 (width 1.0).

Run: python benchmarks/shipped_importance.py [--epochs 4 --measure rgn
     --out budgetplan/tables/mobilenet_v2-imagenet.yaml]

Gradient energy (the default; ``--measure rgn`` for TraDy's reweighted gradient norm;
docs/importance.md) of every layer's input channels and bias, over dense fine-tuning of
torchvision's ImageNet checkpoint on scikit-image's ``lfw_subset`` (100 face and 100
non-face crops, 25×25 grey, upscaled to 128×128 RGB): real images that neither accuracy
benchmark task uses, so the table is measured on other data than it is judged on, as
TraDy proposes (layer rankings transfer across data sets). SGD, lr 0.005, batch 16.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from budgetplan import measure_importance
from budgetplan.zoo.datasets import IMAGENET_MEAN, IMAGENET_STD
from budgetplan.zoo.pretrained import imagenet_mobilenet_v2

ROOT = Path(__file__).resolve().parent.parent


def faces(size: int) -> TensorDataset:
    """scikit-image's face / non-face crops as normalised RGB tensors (label 1 = face)."""
    from skimage import data

    images = torch.tensor(data.lfw_subset(), dtype=torch.float32)[:, None]  # 200×1×25×25 in [0, 1]
    labels = torch.cat([torch.ones(100), torch.zeros(100)]).long()  # the first 100 are faces
    images = F.interpolate(images, size=size, mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
    mean = torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1)
    return TensorDataset((images - mean) / std, labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--measure", choices=("energy", "rgn"), default="energy")
    parser.add_argument("--out", default=str(ROOT / "budgetplan" / "tables" / "mobilenet_v2-imagenet.yaml"))
    args = parser.parse_args()
    torch.manual_seed(0)
    dataset = faces(args.size)
    loader = DataLoader(dataset, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    steps = args.epochs * len(loader)
    start = time.perf_counter()
    measured = measure_importance(
        imagenet_mobilenet_v2(num_classes=2),
        loader,
        steps=steps,
        example_input=dataset[0][0][None],
        lr=0.005,
        data_name=f"scikit-image lfw_subset (200 face / non-face crops at {args.size}x{args.size}), batch 16",
        measure=args.measure,
    )
    measured.save(args.out, channels=False)
    top = measured.top_layers()
    seconds = time.perf_counter() - start
    print(f"{steps} steps in {seconds:.0f} s; {len(top)} of {len(measured.ranking())} layers hold 97%\n")
    print("| rank | layer | share | cumulative |")
    print("| --- | --- | --- | --- |")
    for rank, (name, share, cumulative) in enumerate(measured.ranking()[: len(top)], start=1):
        print(f"| {rank} | {name} | {100 * share:.2f}% | {100 * cumulative:.2f}% |")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
