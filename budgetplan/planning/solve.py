"""Solving the program for a problem: the choices per layer, checked and filled."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from budgetplan.costs.table import CostTable, PatchOption
from budgetplan.device.profile import DeviceProfile, Executor
from budgetplan.errors import BudgetPlanError
from budgetplan.importance.scores import Importance
from budgetplan.plan.prediction import Accounting
from budgetplan.planning.accounting import sparse_update_memory
from budgetplan.planning.backends import FEASIBLE, NO_SOLUTION, OPTIMAL
from budgetplan.planning.diagnose import infeasible_error
from budgetplan.planning.ilp import Program
from budgetplan.planning.memory import Choice, predict
from budgetplan.planning.objective import objective
from budgetplan.planning.options import PlannerOptions
from budgetplan.planning.problem import Problem
from budgetplan.planning.trainable import trainable_layers


@dataclass(frozen=True)
class Solution:
    """The planner's answer: a choice per layer and how it was found."""

    choices: dict[str, Choice]
    status: str  # "optimal" (proven) or "feasible" (time limit reached)
    objective: float
    solver: str
    solve_seconds: float
    required: tuple[str, ...] = field(default=())
    patch: PatchOption | None = None  # the patch stage the leading frozen layers run in, if any


def solve_problem(problem: Problem) -> Solution:
    """Solve the ILP; raise ``InfeasibleError`` saying what budget would work."""
    options = problem.options
    options.check()
    if not problem.costs.layers:
        raise BudgetPlanError(f"{problem.costs.model} has no layer the planner can train (no Conv or Linear ran)")
    start = time.perf_counter()
    trainable = trainable_layers(problem)
    program = Program(problem, trainable)
    status, solver = program.solve()
    if status in (OPTIMAL, FEASIBLE):
        patch = patch_stage(problem.costs, problem.device, options, program.choices())
        choices = _fill(problem, program, patch)
        value = objective(problem.costs, problem.importance, options, choices)
        return Solution(choices, status, value, solver, time.perf_counter() - start, trainable.required, patch)
    if status == NO_SOLUTION:
        raise BudgetPlanError(
            f"no plan found within the time limit of {options.time_limit:g} s ({solver}); raise --time-limit"
        )
    raise infeasible_error(problem, trainable)


def solve_choices(costs: CostTable, device: DeviceProfile, importance: Importance, options: PlannerOptions) -> Solution:
    """``solve_problem`` for a cost table, device, importance and options."""
    return solve_problem(Problem.from_costs(costs, device, importance, options))


def fits(
    costs: CostTable,
    device: DeviceProfile,
    options: PlannerOptions,
    choices: dict[str, Choice],
    patch: PatchOption | None = None,
) -> bool:
    """Whether ``choices`` keep every limit: budget, training-memory cap and step latency."""
    p = predict(costs, device, choices, options.batch_size, patch)
    budget = options.budget_on(device)
    latency = options.latency_on(device)
    trained = p.training_memory_bytes
    if options.training_memory is not None and options.accounting is Accounting.SPARSE_UPDATE:
        trained = sparse_update_memory(costs, choices, options.batch_size)
    return (
        p.peak_bytes <= budget
        and (options.training_memory is None or trained <= options.training_memory)
        and (latency is None or p.step_seconds <= latency)
    )


def fits_with_stage(
    costs: CostTable, device: DeviceProfile, options: PlannerOptions, choices: dict[str, Choice]
) -> bool:
    """Whether ``choices`` keep every limit with some patch stage (or none)."""
    return any(fits(costs, device, options, choices, stage) for stage in _stages(costs, choices))


def _stages(costs: CostTable, choices: dict[str, Choice]) -> list[PatchOption | None]:
    """No patch stage, then each one that runs frozen layers only, in the order of the
    rule: fewest halo MACs, coarsest grid, earliest split (none unless ``executor: patch``)."""
    if costs.executor is not Executor.PATCH:
        return [None]
    first = min((costs.layer(name).index for name in choices), default=len(costs.layers))
    ranked = sorted((o for o in costs.patch_options if o.split <= first), key=lambda o: (o.extra_macs, o.grid, o.split))
    return [None, *ranked]


def patch_stage(
    costs: CostTable, device: DeviceProfile, options: PlannerOptions, choices: dict[str, Choice]
) -> PatchOption | None:
    """The patch stage for ``choices``, by one rule whatever a solver picked among equal
    plans (docs/planner.md, "Patch stage"): none when the plan fits without one (or the
    executor is not ``patch``), else the one with the fewest halo MACs, then the coarsest
    grid, then the earliest split, that keeps every limit; when none does, the one with
    the lowest peak."""
    stages = _stages(costs, choices)
    for stage in stages:
        if fits(costs, device, options, choices, stage):
            return stage
    return min(stages, key=lambda stage: predict(costs, device, choices, options.batch_size, stage).peak_bytes)


def _fill(problem: Problem, program: Program, patch: PatchOption | None) -> dict[str, Choice]:
    """Spend memory the solution left unused on the layers it updates.

    Options whose objective values differ by less than the optimality gap (with E=10,
    ``u(3/4)`` is within 1e-6 of ``u(1)``) may leave memory unused; raising a channel
    count or switching a bias on never lowers the objective, so do it wherever every
    limit still holds, most important layers first.
    """
    importance = problem.importance
    choices = program.choices()
    order = sorted(choices, key=lambda n: -(importance.weight.get(n, 0.0) + importance.bias.get(n, 0.0)))
    for name in order:
        layer = problem.costs.layer(name)
        current = choices[name]
        candidates = [Choice(c, b) for c in reversed(program.channels_of[name]) for b in (True, False)]
        for candidate in candidates:
            if candidate.bias and (not layer.bias_elements or importance.bias_depths):
                continue  # a bias depth is the solver's choice, not to be extended here
            if candidate.channels < current.channels or (current.bias and not candidate.bias):
                continue
            if candidate == current:
                break
            trial = {**choices, name: candidate}
            if fits(problem.costs, problem.device, problem.options, trial, patch):
                choices = trial
                break
    return choices
