"""One variant's runs before and after a change of the code, paired by cell and seed.

Run: python benchmarks/before_after.py BEFORE.jsonl AFTER.jsonl [--variant "budgetplan (trial all)"]
[--after-variant V]

Both files hold ``accuracy.py`` runs (``--results``) of the variant, made with the same
protocol; a change that alters what the variant trains is measured by running the same
command into a new file (``--after-variant``: the runs of another variant in AFTER, to pair
two variants of one protocol). Prints, for each task, network and budget run in both, the
mean accuracy before and after, the mean paired difference (after − before) with its 95%
interval over seeds, and, where a trial chose the plan, how often each candidate won
before and after; then the difference over all pairs, and over the pairs grouped by what
the trial after chose.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from accuracy import field, interval, read_rows, trial_label, trial_winners  # noqa: E402

Cell = tuple[str, str, str]  # task, network, budget


def by_cell(rows: list[dict[str, Any]], variant: str) -> dict[Cell, dict[int, dict[str, Any]]]:
    """The variant's runs by (task, network, budget), then by seed."""
    cells: dict[Cell, dict[int, dict[str, Any]]] = {}
    for r in rows:
        if r["variant"] == variant:
            cells.setdefault((r["task"], field(r, "network"), r["budget"]), {})[r["seed"]] = r
    return cells


def spread(diffs: list[float]) -> str:
    """Mean difference with its 95% interval (one pair: the difference alone)."""
    if len(diffs) < 2:
        return f"{diffs[0]:+.2f}, 1 seed" if diffs else ""
    mean, _, half = interval(diffs)
    return f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}]"


def winner_loss(importance: str) -> float | None:
    """The lowest held-out loss of the trial's winner, as the importance source gives it."""
    found = re.search(r"lowest loss on [^;]*? ([-+.\de]+) vs ", importance)
    return float(found[1]) if found else None


def passed_over(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether the trial after chose another plan than the trial before, whose winner had
    reached a lower held-out loss than the winner after: a plan that would have won the last
    comparison after had it got there (successive halving dropped it in an earlier round)."""
    was, now = (r.get("importance", "") for r in (old, new))
    before, after = winner_loss(was), winner_loss(now)
    if before is None or after is None or trial_label(was) == trial_label(now):
        return False
    return before < after


def by_winner(pairs: list[tuple[float, dict[str, Any], dict[str, Any]]]) -> list[str]:
    """The paired differences grouped by what the trial after chose, most often first (none
    where no trial named a winner), with the pairs whose winner before it passed over."""
    groups: dict[str, list[tuple[float, bool]]] = {}
    for diff, old, new in pairs:
        winner = trial_label(new.get("importance", ""))
        if winner is not None:
            groups.setdefault(winner, []).append((diff, passed_over(old, new)))
    if not groups:
        return []
    lines = [
        "| chosen after | pairs | after − before (95% interval) | before's winner passed over (lower loss) |",
        "| --- | --- | --- | --- |",
    ]
    for winner, found in sorted(groups.items(), key=lambda item: -len(item[1])):
        lines.append(f"| {winner} | {len(found)} | {spread([d for d, _ in found])} | {sum(p for _, p in found)} |")
    return ["", *lines]


def report(before: list[dict[str, Any]], after: list[dict[str, Any]], variant: str, later: str | None = None) -> str:
    old, new = by_cell(before, variant), by_cell(after, later or variant)
    lines = [
        "| task | network | budget | seeds | before | after | after − before (95% interval) | won before | won after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    pairs: list[tuple[float, dict[str, Any], dict[str, Any]]] = []
    for cell in (c for c in old if c in new):
        seeds = sorted(set(old[cell]) & set(new[cell]))
        if not seeds:
            continue
        a = [100 * old[cell][s]["accuracy"] for s in seeds]
        b = [100 * new[cell][s]["accuracy"] for s in seeds]
        diffs = [y - x for x, y in zip(a, b, strict=True)]
        pairs += [(d, old[cell][s], new[cell][s]) for d, s in zip(diffs, seeds, strict=True)]
        was, now = (trial_winners([runs[cell][s] for s in seeds]) for runs in (old, new))
        lines.append(
            f"| {' | '.join(cell)} | {len(seeds)} | {sum(a) / len(a):.2f} | {sum(b) / len(b):.2f} "
            f"| {spread(diffs)} | {was} | {now} |"
        )
    if not pairs:
        return f"no run of {variant} (before) and {later or variant} (after) for the same cell and seed"
    pooled = [d for d, _, _ in pairs]
    ahead, behind = sum(d > 0 for d in pooled), sum(d < 0 for d in pooled)
    summary = f"Over {len(pooled)} pairs: {spread(pooled)} points; after ahead in {ahead}, behind in {behind}."
    return "\n".join([*lines, "", summary, *by_winner(pairs)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="accuracy.py results before the change")
    parser.add_argument("after", type=Path, help="the same command's results after it")
    parser.add_argument("--variant", default="budgetplan (trial all)", help="the variant compared")
    parser.add_argument("--after-variant", help="the variant of AFTER's runs, if another (default: --variant)")
    args = parser.parse_args()
    for path in (args.before, args.after):
        if not path.exists():
            parser.error(f"{path}: no such results file")
    print(report(read_rows([args.before]), read_rows([args.after]), args.variant, args.after_variant))


if __name__ == "__main__":
    main()
