"""Saved-for-backward memory and step time: a budget plan vs dense vs classifier-only.

Run: python benchmarks/memory_and_speed.py [--steps 30 --batch-size 8]

The default model (MobileNetV2-0.35, 10 classes, 128x128) is trained for a few steps in a
Lightning Trainer three ways: dense full fine-tuning (stock autograd), the classifier
alone (stock autograd, the rest frozen), and the cortex-m7 plan with BudgetPlanCallback.
For each: bytes autograd saves for backward per sample (SavedTensorMeter), the median
training step time (forward + backward + optimizer step), and for the plan the bytes its
memory model predicts at this host's bit widths (fp32 activations, 1-bit masks).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from budgetplan import BudgetPlanCallback, SavedTensorMeter
from budgetplan.costs.build import layer_costs
from budgetplan.device.profile import BitWidths
from budgetplan.planning.memory import Choice, predict
from budgetplan.units import format_bytes
from budgetplan.zoo.models import build_model


class Net(pl.LightningModule):
    def __init__(self, head_only: bool = False) -> None:
        super().__init__()
        self.net, _ = build_model()
        self.example_input_array = torch.zeros(1, 3, 128, 128)
        if head_only:
            for name, param in self.named_parameters():
                param.requires_grad_(name.startswith("net.classifier"))
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.01, momentum=0.9)


class Measure(Callback):
    """Step times and saved bytes per sample: measured here, or read from ``budget``,
    which measures its own lean forward."""

    def __init__(self, budget: BudgetPlanCallback | None = None) -> None:
        self.budget = budget
        self.meter = budget is None
        self.times: list[float] = []
        self.saved: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # type: ignore[no-untyped-def]
        self.start = time.perf_counter()
        self.batch = batch[0].shape[0]
        if self.meter:
            self.open = SavedTensorMeter(pl_module).__enter__()

    def on_before_backward(self, trainer, pl_module, loss):  # type: ignore[no-untyped-def]
        if self.meter:
            self.open.__exit__(None, None, None)
            self.saved.append(self.open.bytes / self.batch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
        self.times.append(time.perf_counter() - self.start)
        if self.budget is not None:
            self.saved.append(self.budget.saved_bytes_per_sample or 0.0)


def run(module: Net, callbacks: list[Callback], steps: int, batch_size: int) -> None:
    x = torch.randn(steps * batch_size, 3, 128, 128)
    y = torch.randint(0, 10, (steps * batch_size,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size)
    trainer = pl.Trainer(
        max_epochs=1,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    trainer.fit(module, loader)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for name in ("dense", "classifier only", "cortex-m7 plan"):
        budget = BudgetPlanCallback(device="cortex-m7") if name == "cortex-m7 plan" else None
        measure = Measure(budget)
        callbacks: list[Callback] = [measure] if budget is None else [budget, measure]
        module = Net(head_only=name == "classifier only")
        run(module, callbacks, args.steps, args.batch_size)
        warm = measure.times[3:] or measure.times
        predicted = None
        if budget is not None and budget.plan is not None:
            plan = budget.plan
            host = dataclasses.replace(plan.device, bits=BitWidths(32, 32, 32, 32, 32, 1))
            costs = layer_costs(module, torch.zeros(1, 3, 128, 128), plan.device)
            choices = {layer.name: Choice(layer.channels, layer.bias) for layer in plan.updated()}
            predicted = predict(costs, host, choices).saved_bytes
        rows.append((name, statistics.median(measure.saved), statistics.median(warm), predicted))

    dense_bytes, dense_time = rows[0][1], rows[0][2]
    print(f"MobileNetV2-0.35 @128, batch {args.batch_size}, {args.steps} steps, {torch.get_num_threads()} threads")
    print()
    print("| training | saved for backward / sample | vs dense | step time (median) | vs dense | predicted |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, saved, seconds, predicted in rows:
        pred = "" if predicted is None else f"{format_bytes(predicted)} ({100 * (saved / predicted - 1):+.1f}%)"
        print(
            f"| {name} | {format_bytes(saved)} | {100 * (saved / dense_bytes - 1):+.1f}% | "
            f"{1000 * seconds:.0f} ms | {seconds / dense_time:.2f}x | {pred} |"
        )


if __name__ == "__main__":
    main()
