"""``budgetplan check`` from its arguments: parse, solve the cells, judge, report."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from budgetplan.device.profile import DeviceProfile, load_device, shipped_devices
from budgetplan.errors import BudgetPlanError
from budgetplan.gate.cells import Limits, apply_limits, baseline_name, compare_baselines, load_baselines, solve_cells
from budgetplan.gate.reports import cell_rows, github_annotations, junit_xml, text_report


def devices_of(text: str) -> list[DeviceProfile]:
    """``all`` (every shipped profile), or comma-separated names and profile files."""
    if text.strip() == "all":
        return shipped_devices()
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise BudgetPlanError("--devices: give names, profile files, or all")
    return [load_device(name) for name in names]


def run_check(args: argparse.Namespace, trace: object) -> int:
    """Solve, judge and report; 1 when a cell failed, else 0."""
    start = time.perf_counter()
    devices = devices_of(args.devices)
    limits = Limits(args.min_trained, args.max_peak, args.peak_growth, args.trained_drop)
    baselines = load_baselines(Path(args.baseline)) if args.baseline else None
    junit = args.outputs.get("junit")
    options = {"batch_size": args.batch_size}
    cells = solve_cells(devices, args.budget, trace, args.importance, options)  # type: ignore[arg-type]
    apply_limits(cells, limits)
    if baselines is not None:
        compare_baselines(cells, baselines, limits)
    model = next((cell.plan.model for cell in cells if cell.plan is not None), args.model)
    if args.save:
        directory = Path(args.save)
        directory.mkdir(parents=True, exist_ok=True)
        for cell in cells:
            if cell.plan is not None:
                cell.plan.save(directory / baseline_name(cell))
    if junit is not None:
        junit.write(junit_xml(cells, model, time.perf_counter() - start))
    if args.format == "table":
        print(text_report(cells, model))
    else:
        keys = ["device", "budget", "result", "peak", "trained", "baseline", "why"]
        data = [dict(zip(keys, row, strict=True)) for row in cell_rows(cells)]
        print(json.dumps(data, indent=2))
    if os.environ.get("GITHUB_ACTIONS") == "true" and any(not cell.passed for cell in cells):
        print(github_annotations(cells))
    return 0 if all(cell.passed for cell in cells) else 1
