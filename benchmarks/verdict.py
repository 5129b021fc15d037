"""The default against the best recipe of each cell, over benchmarks run with different protocols.

Run: python benchmarks/accuracy.py ... --report --cells-out digits.jsonl   (once per protocol)
     python benchmarks/verdict.py digits.jsonl photos.jsonl [--subject budgetplan]

Each file holds the cells one ``accuracy.py --report`` compared (``--cells-out``): a task,
network and budget, the recipe with the best mean accuracy there (chosen after the fact)
and the subject's paired differences to it by seed. This prints every cell with its 95%
interval, the mean over all cells with its interval (Student's t over the cells), as
``accuracy.py`` states it for one benchmark, and the cells whose interval lies below zero.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from accuracy import cell_interval, over_cells, versus_best  # noqa: E402


def read_cells(paths: list[str], subject: str) -> list[dict[str, Any]]:
    """The subject's cells in ``paths``; a cell (task, network, budget) named twice is an error."""
    cells: dict[tuple[str, str, str], dict[str, Any]] = {}
    for path in paths:
        for number, line in enumerate(Path(path).read_text().splitlines(), 1):
            cell = json.loads(line)
            if cell["subject"] != subject:
                continue
            where = (cell["task"], cell["network"], cell["budget"])
            if where in cells:
                raise SystemExit(f"{path}:{number}: {' '.join(where)} is also in an earlier file")
            cells[where] = cell
    return list(cells.values())


def report(cells: list[dict[str, Any]]) -> str:
    subject = cells[0]["subject"]
    lines = [f"| task | network | budget | {subject} − best recipe (95% interval) |", "| --- | --- | --- | --- |"]
    below = [cell for cell in cells if (paired := cell_interval(cell)) is not None and paired[2] < 0]
    for cell in cells:
        shown = f"**{versus_best(cell)}**" if cell in below else versus_best(cell)
        lines.append(f"| {cell['task']} | {cell['network']} | {cell['budget']} | {shown} |")
    named = ", ".join(f"{c['task']} {c['network']} {c['budget']}" for c in below)
    return "\n".join([
        *lines, "", over_cells(cells),
        f"Cells whose interval lies below zero: {len(below)}" + (f" ({named})." if below else "."),
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cells", nargs="+", help="files written by accuracy.py --report --cells-out")
    parser.add_argument("--subject", default="budgetplan", help="the variant set against the recipes")
    args = parser.parse_args()
    cells = read_cells(args.cells, args.subject)
    if not cells:
        parser.error(f"no cell of {args.subject} in {', '.join(args.cells)}")
    print(report(cells))


if __name__ == "__main__":
    main()
