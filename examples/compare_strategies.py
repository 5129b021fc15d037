"""Compare strategies on CIFAR-10, CIFAR-100 or any ImageFolder data set, from a local directory.

Run: python examples/compare_strategies.py --data cifar10 --root ~/data
         [--strategies budgetplan,trady,sparse-update,classifier --budget 256KB --epochs 100 --seeds 0]

ImageNet MobileNetV2 (width 1.0) fine-tuned at 128x128, the resolution of the published
studies (TraDy trained CIFAR-10 for 100 epochs, the default here), SGD lr 0.005, batch 32,
BatchNorm folded into the convolutions (trained, for ``full``), every strategy held to the
same training memory on the STM32F746 study profile. Nothing is downloaded unless
``--download`` is given; missing data fail with the layout expected under ``--root``.
``--data imagefolder`` reads ``ROOT/train/<class>/`` and ``ROOT/val/<class>/``.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import lightning.pytorch as pl
import torch
from digits import fit_strategy
from torch.utils.data import DataLoader, Dataset

from budgetplan.errors import BudgetPlanError
from budgetplan.strategies import get_strategy
from budgetplan.units import format_bytes
from budgetplan.zoo.datasets import image_dataset


class FolderData(pl.LightningDataModule):
    """Train and validation splits (``budgetplan.zoo.datasets.image_dataset``), shuffled by ``seed``."""

    def __init__(self, train_set: Dataset, val_set: Dataset, batch_size: int, seed: int) -> None:
        super().__init__()
        self.train_set, self.val_set, self.batch_size, self.seed = train_set, val_set, batch_size, seed

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=128)


def main(argv: list[str] | None = None) -> None:
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
    try:
        for strategy in strategies:
            get_strategy(strategy)  # a typo fails before any data are read
        train_set = image_dataset(args.data, args.root, True, args.size, args.download)
        val_set = image_dataset(args.data, args.root, False, args.size, args.download)
    except (BudgetPlanError, FileNotFoundError) as err:
        parser.exit(2, f"compare_strategies.py: {err}\n")
    classes = len(train_set.classes)  # type: ignore[attr-defined]
    data = [FolderData(train_set, val_set, args.batch_size, int(seed)) for seed in args.seeds.split(",")]
    print("| strategy | val accuracy | training memory (predicted) | saved for backward / sample | seeds |")
    print("| --- | --- | --- | --- | --- |")
    for strategy in strategies:
        runs = [fit_strategy(d, classes, strategy, args.budget, d.seed, args.epochs) for d in data]
        accuracy = [100 * r["accuracy"] for r in runs]
        spread = statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0
        print(
            f"| {strategy} | {statistics.mean(accuracy):.2f} ± {spread:.2f}% "
            f"| {format_bytes(runs[0]['training_memory'])} "
            f"| {format_bytes(max(r['saved_per_sample'] for r in runs))} | {len(runs)} |",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
