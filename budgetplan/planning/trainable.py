"""Which layers a plan may train, and which it must train in full (docs/planner.md)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from budgetplan.costs.table import CostTable
from budgetplan.errors import BudgetPlanError
from budgetplan.planning.problem import Problem


@dataclass(frozen=True)
class Trainable:
    """``allowed``: layers that ``include``/``exclude`` leave to the planner; ``required``:
    layers trained in full, every channel and the bias (by default the classifier)."""

    allowed: frozenset[str]
    required: tuple[str, ...]


def trainable_layers(problem: Problem) -> Trainable:
    """The layers the options allow and require; ``BudgetPlanError`` for a pattern that
    matches no layer, or options that contradict each other."""
    costs, options = problem.costs, problem.options
    allowed = _allowed(costs, options.include, options.exclude)
    if options.require is None:
        last = costs.layers[-1].name
        return Trainable(allowed, (last,) if last in allowed else ())
    required: list[str] = []
    for pattern in options.require:
        hits = [layer.name for layer in costs.layers if fnmatch.fnmatchcase(layer.name, pattern)]
        if not hits:
            raise BudgetPlanError(f"required layer pattern '{pattern}' matches no layer of {costs.model}")
        blocked = [h for h in hits if h not in allowed]
        if blocked:
            raise BudgetPlanError(f"layer {blocked[0]} is required but excluded by include/exclude")
        required += [h for h in hits if h not in required]
    if options.max_layers is not None and len(required) > options.max_layers:
        raise BudgetPlanError(f"{len(required)} layers are required but max_layers is {options.max_layers}")
    return Trainable(allowed, tuple(required))


def _allowed(costs: CostTable, include: tuple[str, ...], exclude: tuple[str, ...]) -> frozenset[str]:
    def matches(name: str, patterns: tuple[str, ...]) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in patterns)

    for kind, patterns in (("include", include), ("exclude", exclude)):
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(layer.name, pattern) for layer in costs.layers):
                raise BudgetPlanError(f"{kind} pattern '{pattern}' matches no layer of {costs.model}")
    allowed = frozenset(
        layer.name
        for layer in costs.layers
        if (not include or matches(layer.name, include)) and not matches(layer.name, exclude)
    )
    if not allowed:
        raise BudgetPlanError("include/exclude leave no layer to train")
    return allowed
