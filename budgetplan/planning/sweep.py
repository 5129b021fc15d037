"""Plans across a range of budgets: how much training each budget buys.

>>> parse_budgets("64KB:1MB:5")
[65536, 131072, 262144, 524288, 1048576]
>>> parse_budgets("256KB,200KB,256KB")
[204800, 262144]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from budgetplan.errors import BudgetPlanError, InfeasibleError
from budgetplan.planning.assemble import plan_problem
from budgetplan.planning.problem import Problem
from budgetplan.quoting import quote
from budgetplan.units import parse_bytes

MAX_SWEEP = 64  # budgets one sweep solves (each is a solve of up to --time-limit seconds)


def parse_budgets(text: str) -> list[int]:
    """``LOW:HIGH:N`` (N log-spaced budgets, both ends included) or ``A,B,C``: distinct
    budgets in increasing order, at most ``MAX_SWEEP``, counted before any is made."""
    example = "write 64KB:1MB:8 or 128KB,256KB,512KB"
    try:
        if ":" in text:
            low_text, high_text, count_text = text.split(":")
            low, high, count = parse_bytes(low_text), parse_bytes(high_text), int(count_text)
            if count < 2 or not 0 < low < high:
                raise ValueError("expected LOW < HIGH and at least 2 budgets")
            if count > MAX_SWEEP:
                raise ValueError(f"{count} budgets; a sweep solves at most {MAX_SWEEP}")
            ratio = (high / low) ** (1 / (count - 1))
            budgets = [round(low * ratio**i) for i in range(count)]
        else:
            parts = text.split(",")
            if len(parts) > MAX_SWEEP:
                raise ValueError(f"{len(parts)} budgets; a sweep solves at most {MAX_SWEEP}")
            budgets = [parse_bytes(part) for part in parts if part.strip()]
    except ValueError as err:
        raise BudgetPlanError(f"--budgets {quote(text)}: {err}; {example}") from None
    if not budgets or any(b <= 0 for b in budgets):
        raise BudgetPlanError(f"--budgets {quote(text)}: {example}")
    return sorted(set(budgets))  # a budget given twice (or rounded to the same byte) is solved once


@dataclass(frozen=True)
class SweepRow:
    """One budget's plan, or why there is none."""

    budget_bytes: int
    feasible: bool
    predicted_bytes: float | None = None
    objective: float | None = None
    updated_layers: int | None = None
    trained_fraction: float | None = None
    solve_seconds: float | None = None
    status: str | None = None
    note: str = ""


def sweep(
    problem: Problem, budgets: list[int], progress: Callable[[int, int, int], None] | None = None
) -> list[SweepRow]:
    """Solve ``problem`` at each budget, on its one trace; ``progress(i, n, budget)`` is
    called before each solve."""
    rows = []
    for i, budget in enumerate(budgets):
        if progress is not None:
            progress(i, len(budgets), budget)
        try:
            plan = plan_problem(problem.with_options(budget=budget))
        except InfeasibleError as err:
            rows.append(SweepRow(budget, False, note=str(err).split(": ", 1)[-1]))
            continue
        rows.append(
            SweepRow(
                budget_bytes=budget,
                feasible=True,
                predicted_bytes=plan.predicted.peak_bytes,
                objective=plan.objective,
                updated_layers=len(plan.updated()),
                trained_fraction=plan.trained_fraction(),
                solve_seconds=plan.solve_seconds,
                status=plan.status,
            )
        )
    return rows
