"""Compare strategies on CIFAR-10, CIFAR-100 or any ImageFolder data set, from a local directory.

Run: python examples/compare_strategies.py --data cifar10 --root ~/data
         [--strategies budgetplan,trady,sparse-update,classifier --budget 256KB --epochs 100 --seeds 0]

ImageNet MobileNetV2 (width 1.0) fine-tuned at 128x128, the resolution of the published
studies (TraDy trained CIFAR-10 for 100 epochs, the default here), SGD lr 0.005, batch 32,
every strategy held to the same training memory on the STM32F746 study profile. Nothing
is downloaded unless ``--download`` is given; missing data fail with the layout expected
under ``--root``. ``--data imagefolder`` reads ``ROOT/train/<class>/`` and ``ROOT/val/<class>/``.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import lightning.pytorch as pl
import torch
from digits import fit_strategy
from torch.utils.data import DataLoader

from budgetplan.datasets import image_dataset
from budgetplan.strategies import STRATEGIES
from budgetplan.units import format_bytes


class FolderData(pl.LightningDataModule):
    """Train and validation splits of a local data set (``budgetplan.datasets.image_dataset``)."""

    def __init__(self, name: str, root: str, size: int, batch_size: int, seed: int, download: bool) -> None:
        super().__init__()
        self.train_set = image_dataset(name, root, True, size, download)
        self.val_set = image_dataset(name, root, False, size, download)
        self.batch_size, self.seed = batch_size, seed
        self.num_classes = len(self.train_set.classes)  # type: ignore[attr-defined]

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=128)


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("cifar10", "cifar100", "imagefolder"), required=True)
    parser.add_argument("--root", required=True, help="directory holding the data set")
    parser.add_argument("--download", action="store_true", help="let torchvision download CIFAR into --root")
    parser.add_argument("--strategies", default="budgetplan,trady,sparse-update,classifier")
    parser.add_argument("--budget", default="256KB", help="training memory of every budgeted strategy")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seeds", default="0")
    args = parser.parse_args(argv)
    strategies = args.strategies.split(",")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        parser.error(f"unknown strategy {unknown[0]!r}; choose from {', '.join(STRATEGIES)}")
    try:
        data = [
            FolderData(args.data, args.root, args.size, args.batch_size, int(s), args.download)
            for s in args.seeds.split(",")
        ]
    except FileNotFoundError as err:
        parser.exit(2, f"compare_strategies.py: {err}\n")
    rows: list[dict[str, object]] = []
    print("| strategy | val accuracy | training memory (predicted) | saved for backward / sample | seeds |")
    print("| --- | --- | --- | --- | --- |")
    for strategy in strategies:
        runs = [fit_strategy(d, d.num_classes, strategy, args.budget, d.seed, args.epochs) for d in data]
        accuracy = [100 * float(r["accuracy"]) for r in runs]
        spread = statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0
        row = {"strategy": strategy, "accuracy": statistics.mean(accuracy), "std": spread, **runs[0]}
        rows.append(row)
        print(
            f"| {strategy} | {row['accuracy']:.2f} ± {spread:.2f}% | {format_bytes(float(runs[0]['training_memory']))} "
            f"| {format_bytes(max(float(r['saved_per_sample']) for r in runs))} | {len(runs)} |",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
