"""The default model's plan on every shipped device profile (the device table of docs/devices.md).

Run: python benchmarks/device_table.py [--devices rp2040,cortex-m4]

For each profile in ``device_profiles/``: MobileNetV2 width 0.35 at 128×128 with a new
10-class head, planned at the profile's budget as ``budgetplan solve --device NAME``
does. Prints a Markdown table: the budget, the predicted peak and where it is, the
training memory (updated weights + saved tensors), the patch stage if the plan needs
one, and how many layers train.
"""

from __future__ import annotations

import argparse

import torch

from budgetplan.costs.build import layer_costs
from budgetplan.device.profile import shipped_devices
from budgetplan.errors import InfeasibleError
from budgetplan.importance.scores import resolve_importance
from budgetplan.planning.assemble import plan_from_costs
from budgetplan.units import format_bytes
from budgetplan.zoo.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", help="comma-separated profile names (default: every shipped profile)")
    args = parser.parse_args()
    wanted = set(args.devices.split(",")) if args.devices else None
    model, name = build_model()
    example = torch.zeros(1, 3, 128, 128)
    print("| device | executor | budget | peak | training memory | patch stage | layers updated |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for device in shipped_devices():
        if wanted is not None and device.name not in wanted:
            continue
        costs = layer_costs(model, example, device, model_name=name)
        try:
            plan = plan_from_costs(costs, device, resolve_importance(None, costs))  # as budgetplan solve
        except InfeasibleError as err:
            print(f"| {device.name} | {device.executor} | {format_bytes(device.budget)} | infeasible: {err} | | | |")
            continue
        p = plan.predicted
        stage = f"{p.patch_grid}×{p.patch_grid} before {p.patch_until}" if p.patch_grid else "none"
        updated = sum(layer.update != "none" for layer in plan.layers)
        print(
            f"| {device.name} | {device.executor} | {format_bytes(device.budget)} "
            f"| {format_bytes(p.peak_bytes)} ({p.peak_at}) | {format_bytes(p.training_memory_bytes)} "
            f"| {stage} | {updated} of {len(plan.layers)} |"
        )


if __name__ == "__main__":
    main()
