"""Fine-tune a small vision transformer within a Raspberry Pi 4 training-memory cap.

A torchvision ``VisionTransformer`` (4 encoder layers, width 64, 8x8 patches of 32x32
images) is first trained densely on the digits 0-4, as a stand-in for a pretrained
backbone, then fine-tuned on the digits 5-9 with a new head through
``BudgetPlanCallback``: the plan chooses which projections (query/key/value included)
and MLP layers train and how many of their input features, under the cap; the lean
backward keeps only the selected features' inputs. Run:

    python examples/finetune_transformer.py [--epochs 5 --training-memory 2MB]

Prints the plan, validation accuracy, and the saved-for-backward memory per sample the
callback measured (it also logs it as ``budgetplan/saved_bytes_per_sample``) beside the
plan's prediction and dense fine-tuning's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision.models import VisionTransformer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits import ImageClassifier, quiet_trainer

from budgetplan import BudgetPlanCallback, SavedTensorMeter
from budgetplan.report.text import render_plan
from budgetplan.units import format_bytes
from budgetplan.zoo.datasets import DigitsRGB

IMAGE_SIZE = 32


def small_vit() -> VisionTransformer:
    return VisionTransformer(
        image_size=IMAGE_SIZE, patch_size=8, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=5
    )


def digits(split: str, labels: range, seed: int) -> Subset:
    """The digits of ``labels``, relabelled 0..len(labels)-1."""
    data = DigitsRGB(split, IMAGE_SIZE, seed)
    data.labels = data.labels - labels.start  # the callback and loss see classes 0..4
    keep = [i for i, y in enumerate(data.labels.tolist()) if 0 <= y < len(labels)]
    return Subset(data, keep)


class ViTClassifier(ImageClassifier):
    """``ImageClassifier``'s steps and optimizer around a given network."""

    def __init__(self, net: nn.Module, lr: float) -> None:
        super().__init__(num_classes=5, image_size=IMAGE_SIZE, lr=lr)
        self.net = net


def dense_saved_bytes(net: nn.Module, batch: torch.Tensor) -> float:
    """Bytes per sample that ordinary back-propagation keeps, for comparison."""
    flags = {p: p.requires_grad for p in net.parameters()}
    net.requires_grad_(True)
    with SavedTensorMeter(net) as meter:
        net(batch)
    for p, flag in flags.items():
        p.requires_grad_(flag)
    return meter.bytes / batch.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    parser.add_argument("--training-memory", default="2MB", help="cap on updated weights + saved tensors")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit-batches", type=float, default=1.0, help="fraction (or count) of batches per epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--importance", help="'prior', 'measured' or an importance file (default: the callback's)")
    args = parser.parse_args()
    limit = int(args.limit_batches) if args.limit_batches > 1 else args.limit_batches
    pl.seed_everything(args.seed, verbose=False)

    def loader(split: str, labels: range) -> DataLoader:
        data = digits(split, labels, args.seed)
        return DataLoader(data, batch_size=args.batch_size, shuffle=split == "train")

    # the backbone: dense training on 0-4 (what a downloaded checkpoint would be)
    net = small_vit()
    backbone = ViTClassifier(net, lr=0.05)
    seen, unseen = range(0, 5), range(5, 10)
    quiet_trainer(args.pretrain_epochs, [], limit).fit(backbone, loader("train", seen), loader("val", seen))
    pretrained = float(quiet_trainer(1, [], limit).validate(backbone, loader("val", seen), verbose=False)[0]["val_acc"])
    print(f"backbone: {100 * pretrained:.1f}% on the digits 0-4 after {args.pretrain_epochs} epochs of dense training")

    # the fine-tuning: digits 5-9, a new head, under the device's cap
    net.heads = nn.Sequential(nn.Linear(64, 5))
    model = ViTClassifier(net, lr=0.05)
    callback = BudgetPlanCallback(
        device="raspberry-pi-4",
        training_memory=args.training_memory,
        batch_size=args.batch_size,
        seed=args.seed,
        importance=args.importance,
    )
    trainer = quiet_trainer(args.epochs, [callback], limit)
    start = time.perf_counter()
    trainer.fit(model, loader("train", unseen), loader("val", unseen))
    seconds = time.perf_counter() - start
    assert callback.plan is not None

    print(render_plan(callback.plan))
    print()
    accuracy = float(trainer.callback_metrics["val_acc"])
    print(f"validation accuracy on 5-9 after {args.epochs} epochs: {100 * accuracy:.1f}%  ({seconds:.0f} s)")
    lean = callback.saved_bytes_per_sample or 0.0
    predicted = callback.plan.predicted.saved_bytes / args.batch_size
    dense = dense_saved_bytes(net, next(iter(loader("val", unseen)))[0][:4])
    print(
        f"saved for backward per sample (fp32 on this host): {format_bytes(lean)} measured with the plan, "
        f"{format_bytes(predicted)} predicted, {format_bytes(dense)} for dense fine-tuning"
    )


if __name__ == "__main__":
    main()
