"""The ``full`` strategy: dense fine-tuning, the reference without a budget."""

from __future__ import annotations

from budgetplan.plan.model import Plan
from budgetplan.planning.assemble import dense_plan
from budgetplan.planning.problem import Problem
from budgetplan.strategies.base import Strategy, Training, register_strategy


@register_strategy
class Full(Strategy):
    """Dense fine-tuning of every parameter, BatchNorm statistics included; no budget, for
    reference. Its prediction (frozen-BN accounting, every channel) is reported, never enforced."""

    name = "full"
    layers = "all, BatchNorm statistics too"
    channels = "all"
    memory = "none enforced; the dense prediction is reported"
    resample = "never"
    planned = False
    dense = True
    source = "dense fine-tuning, no budget"

    def prepare(self, plan: Plan | None, problem: Problem | None) -> Training:
        assert problem is not None, "the dense plan is predicted from the problem"
        return Training((), (), dense_plan(problem))
