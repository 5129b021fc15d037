"""Planner speed: solve time and proven optimality, both solvers, three budgets each.

Run: python benchmarks/solve_time.py [--repeats 3]

Times are wall-clock seconds for building the PuLP model, solving it and polishing the
solution (``Solution.solve_seconds``), the median of the repeats; tracing the model is
timed separately. The importance is the command line's default: the table shipped for
the network where one matches it by layer name (MobileNetV2), else the no-data prior.
Prints a Markdown table; "same plan" says whether CBC's plan equals HiGHS's layer for layer.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from budgetplan.costs.build import layer_costs
from budgetplan.device.profile import load_device
from budgetplan.errors import InfeasibleError
from budgetplan.importance.scores import resolve_importance
from budgetplan.planning.assemble import plan_from_costs
from budgetplan.planning.options import PlannerOptions
from budgetplan.units import format_bytes, parse_bytes
from budgetplan.zoo.models import build_model

CASES = [
    # (model, width, input size, device, budgets)
    ("mobilenet_v2", 0.35, 128, "cortex-m7", ("240KB", "256KB", "384KB")),
    ("resnet50", None, 224, "raspberry-pi-4", ("110MB", "160MB", "300MB")),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="mobilenet_v2,resnet50", help="which of the cases to run")
    parser.add_argument("--time-limit", type=float, default=10.0, help="solver time limit per solve (default 10)")
    args = parser.parse_args()
    wanted = args.models.split(",")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print()
    print(
        "| model | device | budget | solver | status | solve s (median) | trace s | layers updated | peak | same plan |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, width, size, device_name, budgets in CASES:
        if name not in wanted:
            continue
        device = load_device(device_name)
        model, description = build_model(name, 10, width)
        start = time.perf_counter()
        costs = layer_costs(model, torch.zeros(1, 3, size, size), device, model_name=description)
        trace_s = time.perf_counter() - start
        label = f"{description} @{size}"
        importance = resolve_importance(None, costs)
        for budget in budgets:
            first: dict[str, int] | None = None
            for solver in ("highs", "cbc"):
                options = PlannerOptions(budget=parse_bytes(budget), solver=solver, time_limit=args.time_limit)
                times, plan = [], None
                try:
                    for _ in range(args.repeats):
                        plan = plan_from_costs(costs, device, importance, options)
                        times.append(plan.solve_seconds)
                except InfeasibleError as err:
                    print(f"| {label} | {device_name} | {budget} | {solver} | infeasible: {err} | | | | | |")
                    continue
                assert plan is not None
                decisions = {layer.name: 2 * layer.channels + layer.bias for layer in plan.layers}
                same = "" if first is None else ("yes" if decisions == first else "no")
                first = first or decisions
                print(
                    f"| {label} | {device_name} | {budget} | {plan.solver} | {plan.status} | "
                    f"{statistics.median(times):.2f} | {trace_s:.2f} | "
                    f"{len(plan.updated())}/{len(plan.layers)} | {format_bytes(plan.predicted.peak_bytes)} | {same} |"
                )


if __name__ == "__main__":
    main()
