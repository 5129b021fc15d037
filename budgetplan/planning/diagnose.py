"""Why no plan fits: the smallest budget, or the other limit that stands in the way
(docs/planner.md, "When no plan fits").

>>> budget_argument(236.5 * 1024), budget_argument(20 * 1024**2 + 1)
('237KB', '21MB')
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from budgetplan.device.profile import Executor
from budgetplan.errors import BudgetPlanError, InfeasibleError
from budgetplan.planning.backends import FEASIBLE, OPTIMAL
from budgetplan.planning.goal import Goal
from budgetplan.planning.ilp import Program
from budgetplan.planning.problem import Problem
from budgetplan.planning.trainable import Trainable, trainable_layers
from budgetplan.units import format_bytes


def smallest(goal: Goal, problem: Problem, trainable: Trainable) -> float | None:
    """The least value of one limit (``goal``) at which a plan keeps the others, or ``None``."""
    program = Program(problem, trainable, goal)
    status, _ = program.solve()
    return program.value() if status in (OPTIMAL, FEASIBLE) else None


def smallest_budget(problem: Problem) -> float | None:
    """The least budget at which ``problem`` has a plan (its other limits kept), or ``None``."""
    return smallest(Goal.PEAK, problem, trainable_layers(problem))


def budget_argument(n_bytes: float) -> str:
    """A ``--budget`` value at least ``n_bytes``, rounded up to a whole KB (or MB)."""
    if n_bytes < 16 * 1024**2:
        return f"{max(1, math.ceil(n_bytes / 1024 - 1e-9))}KB"
    return f"{math.ceil(n_bytes / 1024**2 - 1e-9)}MB"


def infeasible_error(problem: Problem, trainable: Trainable) -> InfeasibleError:
    """The error for a problem with no plan: the smallest budget that has one, or else the
    other limit (training memory, step latency) that stands in the way."""
    costs, device = problem.costs, problem.device
    what = f"no plan for {costs.model} fits a budget of {format_bytes(problem.budget)} on {device.name}"
    if trainable.required:
        what += f" while updating {', '.join(trainable.required)}"
    peak = smallest(Goal.PEAK, problem, trainable)
    if peak is not None:
        text = (
            f"{what}: the smallest budget at which a plan is feasible is {format_bytes(peak)} "
            f"(--budget {budget_argument(peak)})"
        )
        if costs.executor is not Executor.PATCH and costs.patch_options:
            patched = dataclasses.replace(problem, costs=dataclasses.replace(costs, executor=Executor.PATCH))
            least = smallest(Goal.PEAK, patched, trainable)
            if least is not None and least < peak:
                text += (
                    f"; with the leading frozen layers run in patches (executor: patch in the profile, "
                    f"or --executor patch) it is {format_bytes(least)}"
                )
        return InfeasibleError(text, smallest_budget=math.ceil(peak))
    hints = _other_limits(problem, trainable)
    detail = "; ".join(hints) if hints else "no plan satisfies the other limits at any budget"
    return InfeasibleError(f"{what}: {detail}")


def _other_limits(problem: Problem, trainable: Trainable) -> list[str]:
    """What the training-memory cap and the latency limit need, where they are too tight,
    with the budget lifted to the whole SRAM."""
    hints = []
    unlimited = problem.with_options(budget=problem.device.sram * 1024)
    cap = problem.options.training_memory
    if cap is not None:
        least = smallest(Goal.TRAINING_MEMORY, unlimited, trainable)
        if least is not None and least > cap:
            hints.append(
                f"the smallest training memory is {format_bytes(least)} (--training-memory {budget_argument(least)})"
            )
    latency = problem.latency
    if latency is not None:
        macs = smallest(Goal.COMPUTE, unlimited, trainable)
        if macs is not None:
            seconds = macs / problem.device.macs_per_second
            if seconds > latency:
                hints.append(f"the shortest step takes {seconds:.3g} s, above the limit of {latency:g} s")
    return hints


def with_smaller_input(
    err: InfeasibleError, shape: tuple[int, ...], smallest_at: Callable[[tuple[int, ...]], float | None]
) -> InfeasibleError:
    """``err`` with the smallest feasible budget at a smaller input, when the budget is the
    obstacle: three quarters of each side, rounded down to a multiple of 32 (docs/planner.md).
    ``smallest_at(shape)`` traces the model at that input and finds it (``None``: none)."""
    channels, *sides = shape
    smaller = [max(32, (3 * side // 4) // 32 * 32) for side in sides]
    if err.smallest_budget is None or any(new >= old for new, old in zip(smaller, sides, strict=True)):
        return err  # no smaller input by the rule (a side of 32 or less)
    try:
        least = smallest_at((channels, *smaller))
    except BudgetPlanError:
        return err
    if least is None:
        return err
    size = "x".join(map(str, smaller if channels == 3 else [channels, *smaller]))  # 3 channels: the flag's default
    message = f"{err}; at input {size} (--input-size {size}) it is {format_bytes(least)}"
    return InfeasibleError(message, smallest_budget=err.smallest_budget)
