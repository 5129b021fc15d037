"""The five published Sparse Update schemes for MobileNetV2-w0.35 at 128x128, counted here.

Run: python benchmarks/tiny_training_schemes.py

For each scheme of examples/tiny-training/ (Lin et al., NeurIPS 2022), a Markdown table of
its training memory as Sparse Update counts it (``budgetplan.planning.accounting``, kB =
bytes / 1024) on torchvision's ``mobilenet_v2(width_mult=0.35, num_classes=10)`` and on the
layout of their mbv2-w0.35 model (the same convolutions 0 to 50, no final 1x1 conv to 1280
channels, a 112-input classifier), budgetplan's training memory, and the physical peak
over the step on cortex-m7, as its profile runs the model and with no patch stage
(``executor: inplace-dw``); docs/tiny-training.md explains the differences.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torchvision
from torch import nn

from budgetplan.costs.build import layer_costs
from budgetplan.device.profile import Executor, load_device
from budgetplan.interop.scheme import load_scheme
from budgetplan.interop.tiny_training import choices_from_scheme, plan_from_scheme
from budgetplan.planning.accounting import sparse_update_memory

SCHEMES = Path(__file__).resolve().parent.parent / "examples" / "tiny-training"
LABELS = ("49kb", "73kb", "99kb", "123kb", "138kb")


def their_layout() -> nn.Module:
    """torchvision's MobileNetV2-0.35 without its last 1x1 conv (112 -> 1280): a 112-input classifier."""
    model = torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10)
    model.features = model.features[:18]
    model.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(112, 10))
    return model


def _peak(plan_bytes: float, budget: int) -> str:
    return f"{plan_bytes / 1024:.1f} ({'fits' if plan_bytes <= budget else 'over'})"


def main() -> None:
    device = load_device("cortex-m7")
    whole = dataclasses.replace(device, executor=Executor.INPLACE_DW)  # every layer runs whole
    example = torch.zeros(1, 3, 128, 128)
    name = "mobilenet_v2(width_mult=0.35, num_classes=10)"
    model = torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10)
    costs = layer_costs(model, example, device, model_name=name)
    costs_whole = layer_costs(model, example, whole, model_name=name)
    theirs = layer_costs(their_layout(), example, device, model_name="mbv2-w0.35 layout")
    print(
        "| scheme | Sparse Update accounting, torchvision (kB) | same, their layout (kB) "
        f"| budgetplan training memory (kB) | peak on cortex-m7 ({device.executor}; kB, budget 256) "
        "| peak with no patch stage (kB) |"
    )
    print("| --- | ---: | ---: | ---: | --- | --- |")
    for label in LABELS:
        scheme = load_scheme(SCHEMES / f"mbv2-w0.35-{label}.yaml")
        plan = plan_from_scheme(scheme, costs, device)
        plan_whole = plan_from_scheme(scheme, costs_whole, whole)
        ours = sparse_update_memory(costs, choices_from_scheme(scheme, costs)) / 1024
        layout = sparse_update_memory(theirs, choices_from_scheme(scheme, theirs)) / 1024
        print(
            f"| {label} | {ours:.1f} | {layout:.1f} | {plan.predicted.training_memory_bytes / 1024:.1f} "
            f"| {_peak(plan.predicted.peak_bytes, plan.budget_bytes)} "
            f"| {_peak(plan_whole.predicted.peak_bytes, plan_whole.budget_bytes)} |"
        )


if __name__ == "__main__":
    main()
