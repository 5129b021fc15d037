"""What the trial's held-out checks cost with and without skipping the frozen modules.

Run: python benchmarks/trial_cost.py --task digits-on-photos --network efficientnet-lite0 --budget 64KB

One fit of ``accuracy.py``'s ``budgetplan (trial all)`` variant, three times in this
process: with every check running the whole network (``frozen_prefix.CACHE_BYTES = 0``),
then as the callback runs it, the checks after the first skipping the modules before the
trained ones (``budgetplan.training.frozen_prefix``), then in full again (the first fit of
a process also pays for warming up). It prints each fit's set-up seconds (the callback's
measurement, plans and trials), the trial's verdict (the losses it compared) and the
accuracy: the verdicts and accuracies should be the same, the set-up shorter.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from accuracy import run  # noqa: E402

from budgetplan.training import frozen_prefix  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits-on-photos")
    parser.add_argument("--network", default="efficientnet-lite0")
    parser.add_argument("--budget", default="64KB")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--select-on-split", action="store_true", help="the photograph protocol (accuracy.py)")
    args = parser.parse_args()
    cell = {"task": args.task, "network": args.network, "variant": "budgetplan (trial all)", "budget": args.budget}
    protocol = {
        "epochs": 6, "train_per_class": 32, "lr": args.lr, "norms": "folded", "recipes": "own",
        "val_fraction": 0.2 if args.select_on_split else 0.8, "val_per_class": None if args.select_on_split else 100,
        "selection": "split" if args.select_on_split else "none",
    }  # fmt: skip
    limit = frozen_prefix.CACHE_BYTES
    rows = []
    whole, skipping = "every check runs the whole network", "later checks skip the frozen modules"
    for label, kept in ((whole, 0), (skipping, limit), (whole, 0)):
        frozen_prefix.CACHE_BYTES = kept
        try:
            row = run({**cell, "seed": args.seed}, protocol, 1.0, args.lr)
        finally:
            frozen_prefix.CACHE_BYTES = limit
        rows.append({**row, "label": label})
        verdict = row["importance"].split("; ")[-1]
        print(f"{label}: set-up {row['setup_seconds']:.1f} s, accuracy {100 * row['accuracy']:.2f}%\n  {verdict}")
    same = all(r["importance"] == rows[0]["importance"] and r["accuracy"] == rows[0]["accuracy"] for r in rows)
    full = statistics.mean(r["setup_seconds"] for r in rows if r["label"] == whole)
    ratio = full / rows[1]["setup_seconds"]
    print(f"same verdict and accuracy: {same}; the set-up {ratio:.2f} times as fast as the mean in full")


if __name__ == "__main__":
    main()
