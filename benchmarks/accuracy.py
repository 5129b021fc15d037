"""Accuracy by training scheme at equal training memory, on real pretrained fine-tuning.

Run: python benchmarks/accuracy.py [--epochs 3 --seeds 0,1]

ImageNet MobileNetV2 (width 1.0) fine-tuned on scikit-learn digits (128x128 RGB), SGD
(lr 0.005, momentum 0.9, batch 32), same epochs for every scheme. The budgeted schemes are
held to 256 KB of training memory (the cortex-m7 budget, published accounting) on
examples/stm32f746-disco-study.yaml. Prints mean ± std validation accuracy over seeds,
predicted training memory and measured saved-for-backward bytes per sample.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
from digits import DigitsData, ImageClassifier, quiet_trainer  # noqa: E402

from budgetplan import BudgetPlanCallback, SavedTensorMeter  # noqa: E402
from budgetplan.units import format_bytes  # noqa: E402

PROFILE = str(ROOT / "examples" / "stm32f746-disco-study.yaml")
SCHEMES: dict[str, dict[str, Any] | None] = {
    "plan, uniform channels each epoch (TraDy-style)": {},
    "plan, gradient-weighted channels each epoch": {"sampler": "gradient"},
    "plan, largest-magnitude channels, fixed (static)": {"sampler": "magnitude", "resample": "never"},
    "classifier only": {"include": ("net.classifier.*",)},
    "dense fine-tuning (no budget)": None,
}


class DenseMeter(Callback):
    """Saved-for-backward bytes per sample of an unbudgeted step."""

    def __init__(self) -> None:
        self.saved: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # type: ignore[no-untyped-def]
        self.meter = SavedTensorMeter(pl_module).__enter__()
        self.batch = batch[0].shape[0]

    def on_before_backward(self, trainer, pl_module, loss):  # type: ignore[no-untyped-def]
        self.meter.__exit__(None, None, None)
        self.saved = self.meter.bytes / self.batch


def run(options: dict[str, Any] | None, seed: int, epochs: int, limit: float) -> tuple[float, float | None, float]:
    pl.seed_everything(seed)
    model = ImageClassifier(pretrained=True, lr=0.005)
    dense = DenseMeter()
    budget = None
    callbacks: list[Callback] = [dense]
    if options is not None:
        budget = BudgetPlanCallback(device=PROFILE, training_memory="256KB", seed=seed, **options)
        callbacks = [budget]
    trainer = quiet_trainer(epochs, callbacks, limit)
    trainer.fit(model, DigitsData(128, 32, seed))
    accuracy = float(trainer.callback_metrics["val_acc"])
    if budget is not None and budget.plan is not None:
        return accuracy, budget.plan.predicted.training_memory_bytes, budget.saved_bytes_per_sample or 0.0
    return accuracy, None, dense.saved or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--limit-batches", type=float, default=1.0)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    limit = int(args.limit_batches) if args.limit_batches > 1 else args.limit_batches
    print(f"ImageNet MobileNetV2 -> digits, {args.epochs} epochs, seeds {seeds}")
    print()
    headers = ["scheme", "val accuracy (mean ± std)", "training memory (predicted)", "saved for backward / sample"]
    print("| " + " | ".join([*headers, "time / run"]) + " |")
    print("| --- | --- | --- | --- | --- |")
    for name, options in SCHEMES.items():
        results = []
        start = time.perf_counter()
        for seed in seeds:
            results.append(run(options, seed, args.epochs, limit))
        seconds = (time.perf_counter() - start) / len(seeds)
        accuracies = [100 * r[0] for r in results]
        spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        predicted = results[0][1]
        print(
            f"| {name} | {statistics.mean(accuracies):.2f} ± {spread:.2f}% | "
            f"{format_bytes(predicted) if predicted is not None else 'not budgeted'} | "
            f"{format_bytes(results[0][2] or 0.0)} | {seconds:.0f} s |"
        )


if __name__ == "__main__":
    main()
