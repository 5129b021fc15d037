"""Solving the program for a cost table: the choices per layer, checked and filled."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from budgetplan.costs.table import CostTable
from budgetplan.device.profile import DeviceProfile
from budgetplan.errors import BudgetPlanError
from budgetplan.planning.diagnose import _infeasible
from budgetplan.planning.ilp import _allowed_and_required, _Program
from budgetplan.planning.importance import Importance
from budgetplan.planning.memory import Choice, predict
from budgetplan.planning.objective import objective
from budgetplan.planning.options import PlannerOptions


@dataclass(frozen=True)
class Solution:
    """The planner's answer: a choice per layer and how it was found."""

    choices: dict[str, Choice]
    status: str  # "optimal" (proven) or "feasible" (time limit reached)
    objective: float
    solver: str
    solve_seconds: float
    required: tuple[str, ...] = field(default=())


def solve_choices(costs: CostTable, device: DeviceProfile, importance: Importance, options: PlannerOptions) -> Solution:
    """Solve the ILP; raise ``InfeasibleError`` saying what budget would work."""
    options.check()
    if not costs.layers:
        raise BudgetPlanError(f"{costs.model} has no layer the planner can train (no Conv or Linear ran)")
    start = time.perf_counter()
    allowed, required = _allowed_and_required(costs, options)
    program = _Program(costs, device, importance, options, allowed, required)
    status, solver = program.solve(options.solver, options.time_limit, options.verbose)
    if status in ("optimal", "feasible"):
        choices = _fill(costs, device, importance, options, program)
        value = objective(costs, importance, options, choices)
        return Solution(choices, status, value, solver, time.perf_counter() - start, required)
    if status == "no solution":
        raise BudgetPlanError(
            f"no plan found within the time limit of {options.time_limit:g} s ({solver}); raise --time-limit"
        )
    raise _infeasible(costs, device, importance, options, allowed, required)


def fits(costs: CostTable, device: DeviceProfile, options: PlannerOptions, choices: dict[str, Choice]) -> bool:
    """Whether ``choices`` keep every limit: budget, training-memory cap and step latency."""
    p = predict(costs, device, choices, options.batch_size)
    budget = options.budget_on(device)
    latency = options.latency_on(device)
    return (
        p.peak_bytes <= budget
        and (options.training_memory is None or p.training_memory_bytes <= options.training_memory)
        and (latency is None or p.step_seconds <= latency)
    )


def _fill(
    costs: CostTable, device: DeviceProfile, importance: Importance, options: PlannerOptions, program: _Program
) -> dict[str, Choice]:
    """Spend memory the solution left unused on the layers it updates.

    Options whose objective values differ by less than the optimality gap (with E=10,
    ``u(3/4)`` is within 1e-6 of ``u(1)``) may leave memory unused; raising a channel
    count or switching a bias on never lowers the objective, so do it wherever every
    limit still holds, most important layers first.
    """
    choices = program.choices()
    order = sorted(choices, key=lambda n: -(importance.weight.get(n, 0.0) + importance.bias.get(n, 0.0)))
    for name in order:
        layer = costs.layer(name)
        current = choices[name]
        candidates = [Choice(c, b) for c in reversed(program.options_of[name]) for b in (True, False)]
        for candidate in candidates:
            if candidate.bias and not layer.bias_elements:
                continue
            if candidate.channels < current.channels or (current.bias and not candidate.bias):
                continue
            if candidate == current:
                break
            trial = {**choices, name: candidate}
            if fits(costs, device, options, trial):
                choices = trial
                break
    return choices
