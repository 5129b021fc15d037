"""A check's results for people (a table), for CI systems (JUnit XML, one test case per
cell) and for GitHub Actions (an ``::error`` annotation per failing cell)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

from budgetplan.gate.cells import Cell
from budgetplan.report.text import table
from budgetplan.units import format_bytes


def cell_rows(cells: Sequence[Cell]) -> list[list[str]]:
    rows = []
    for cell in cells:
        plan = cell.plan
        peak = (
            f"{format_bytes(plan.predicted.peak_bytes)} ({plan.predicted.peak_bytes / cell.device.sram:.0%})"
            if plan
            else "-"
        )
        trained = f"{plan.trained_fraction():.1%}" if plan else "-"
        before = f"{cell.baseline.trained_fraction():.1%}" if cell.baseline is not None else ""
        status = "pass" if cell.passed else "FAIL"
        rows.append(
            [cell.device.name, format_bytes(cell.budget), status, peak, trained, before, "; ".join(cell.failures)]
        )
    return rows


def text_report(cells: Sequence[Cell], model: str) -> str:
    failed = sum(not cell.passed for cell in cells)
    head = ["device", "budget", "result", "peak (of SRAM)", "trained", "baseline", "why"]
    verdict = f"{failed} of {len(cells)} cells failed" if failed else f"all {len(cells)} cells passed"
    return f"{table(head, cell_rows(cells))}\n{model}: {verdict}"


def junit_xml(cells: Sequence[Cell], model: str, seconds: float) -> str:
    """One ``testsuite`` of one ``testcase`` per cell, a ``failure`` where it failed."""
    suite = ET.Element(
        "testsuite",
        name="budgetplan check",
        tests=str(len(cells)),
        failures=str(sum(not cell.passed for cell in cells)),
        errors="0",
        time=f"{seconds:.3f}",
    )
    for cell in cells:
        case = ET.SubElement(suite, "testcase", classname=f"budgetplan.check.{cell.device.name}", name=cell.name)
        if not cell.passed:
            failure = ET.SubElement(case, "failure", message="; ".join(cell.failures)[:1000], type="BudgetPlanCheck")
            failure.text = f"{model} on {cell.name}:\n" + "\n".join(cell.failures)
        if cell.plan is not None:
            out = ET.SubElement(case, "system-out")
            out.text = (
                f"peak {format_bytes(cell.plan.predicted.peak_bytes)}, trained {cell.plan.trained_fraction():.2%}, "
                f"{len(cell.plan.updated())} layers updated"
            )
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


def github_annotations(cells: Sequence[Cell]) -> str:
    """``::error`` workflow commands, one per failing cell (GitHub Actions shows them on the run)."""
    lines = []
    for cell in cells:
        if not cell.passed:
            message = "; ".join(cell.failures).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
            lines.append(f"::error title=budgetplan check {cell.name}::{message}")
    return "\n".join(lines)
