"""Which clip ratio the default strategy trains with: a grid on the split of the training images.

Run: python benchmarks/clip_ratio.py [--ratios 0,0.1,0.2,0.5,1,2 --epochs 6
     --results benchmarks/results/clip-ratio-study.jsonl]

The default plan (``strategy="budgetplan"``) fine-tuned with adaptive gradient clipping at
each ratio of the grid (``BudgetPlanCallback(clip_ratio=...)``, 0 = none), in four cells of
``benchmarks/accuracy.py``'s benchmark where the plans differ most: two 1 MB plans that
train the stem or many expansion convs (unclipped, they fall to chance at every rate of
the grid), a 128 KB plan of late 1x1 convs, and a 64 KB plan of depthwise convs. Same
protocol as that benchmark (6 epochs, SGD lr 0.005, momentum 0.9, batch 32, BatchNorm
folded), trained on three quarters of seed 0's training images and validated on the other
quarter (80 images), so the validation images of the benchmark never choose the ratio.
Each run is appended to ``--results`` and skipped when the script runs again. It prints
accuracy (and held-out loss) per cell and ratio, and the mean over the cells.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from accuracy import task_data  # noqa: E402
from digits import fit_strategy  # noqa: E402

CELLS = [  # task, network, training memory
    ("digits", "mobilenet_v2", "1MB"),
    ("digits-on-photos", "efficientnet-lite0", "1MB"),
    ("digits-on-photos", "mobilenet_v2", "128KB"),
    ("digits", "efficientnet-lite0", "64KB"),
]
PROTOCOL = {"epochs": 6, "train_per_class": 32, "val_fraction": 0.8, "val_per_class": 100, "lr": 0.005}


def fit(cell: tuple[str, str, str], ratio: float, protocol: dict[str, Any], limit: float | int) -> dict[str, Any]:
    task, network, budget = cell
    data = task_data(task, 0, protocol, tune=True)
    # a quick check (whole batches per epoch) trains the shipped table's plan without a
    # trial: it checks the script, and the trial has tests of its own
    quick = {"trial": "none"} if isinstance(limit, int) else {}
    start = time.perf_counter()
    row = fit_strategy(
        data, 10, "budgetplan", budget, 0, protocol["epochs"], limit, protocol["lr"], True, network,
        clip_ratio=ratio, **quick,
    )  # fmt: skip
    return {"task": task, "network": network, "budget": budget, "clip_ratio": ratio, **protocol, **row,
            "seconds": time.perf_counter() - start}  # fmt: skip


def table(rows: list[dict[str, Any]], ratios: list[float], cells: list[tuple[str, str, str]]) -> str:
    found = {(r["task"], r["network"], r["budget"], r["clip_ratio"]): r for r in rows}
    lines = [
        "| task | network | budget | " + " | ".join(f"λ = {r:g}" if r else "no clipping" for r in ratios) + " |",
        "| --- | --- | --- |" + " --- |" * len(ratios),
    ]
    for cell in cells:
        shown = [found.get((*cell, r)) for r in ratios]
        values = [f"{100 * s['accuracy']:.1f} ({s['loss']:.2f})" if s else "–" for s in shown]
        lines.append(f"| {' | '.join(cell)} | " + " | ".join(values) + " |")
    means = []
    for ratio in ratios:
        runs = [found[(*cell, ratio)]["accuracy"] for cell in cells if (*cell, ratio) in found]
        means.append(f"{100 * statistics.mean(runs):.1f}" if len(runs) == len(cells) else "–")
    lines.append("| mean accuracy | | | " + " | ".join(means) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", default="0,0.1,0.2,0.5,1,2")
    parser.add_argument("--epochs", type=int, default=PROTOCOL["epochs"])
    parser.add_argument("--limit-batches", type=int, default=0, help="a quick check: batches per epoch (0: all)")
    parser.add_argument("--results", default=str(ROOT / "results" / "clip-ratio-study.jsonl"))
    parser.add_argument("--cells", type=int, default=len(CELLS), help="the first this many of the cells")
    args = parser.parse_args()
    if not 1 <= args.cells <= len(CELLS):
        parser.error(f"--cells: 1 to {len(CELLS)}, not {args.cells}")
    cells = CELLS[: args.cells]
    ratios = [float(r) for r in args.ratios.split(",")]
    protocol = {**PROTOCOL, "epochs": args.epochs}
    limit = args.limit_batches or 1.0
    path = Path(args.results)
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    rows = [r for r in rows if all(r[k] == v for k, v in protocol.items())]
    done = {(r["task"], r["network"], r["budget"], r["clip_ratio"]) for r in rows}
    for cell in cells:
        for ratio in ratios:
            if (*cell, ratio) not in done:
                rows.append(fit(cell, ratio, protocol, limit))
                with path.open("a") as out:
                    out.write(json.dumps(rows[-1]) + "\n")
    print("accuracy % (held-out loss) on the split of seed 0's training images, SGD lr 0.005\n")
    print(table(rows, ratios, cells))


if __name__ == "__main__":
    main()
