"""Where ``BudgetPlanCallback``'s plan comes from: the ``PlanSource`` of its settings, and
the channel rule it takes from the trial's choice."""

from __future__ import annotations

from typing import Any

from budgetplan.plan.model import Plan
from budgetplan.strategies.base import Resample, Strategy, Training
from budgetplan.training.guard import SelectionGuard
from budgetplan.training.plan_source import PlanSource
from budgetplan.training.samplers import ChannelSampler, get_sampler
from budgetplan.training.selection import ChannelSelection
from budgetplan.training.trials import Candidate


class Sourcing:
    """The plan-source half of ``BudgetPlanCallback``."""

    device: str | None
    budget: Any
    example_input: Any
    importance: Any
    solve_options: dict[str, Any]
    importance_batches: int
    importance_measure: Any
    seed: int
    sampler: str
    clip_ratio: float
    trial: str
    trial_steps: int | None
    resample: Resample
    plan: Plan | None
    _given_plan: Any
    _rule_given: bool
    returning_state: str
    _given: set[str]  # the options given outright, which the trial's winner does not replace
    _guard: SelectionGuard
    strategy: Strategy
    _sampler: ChannelSampler
    _channels: ChannelSelection

    def _source(self) -> PlanSource:
        return PlanSource(
            self.device,
            self.budget,
            self.example_input,
            self.importance,
            self.solve_options,
            self._given_plan,
            self.importance_batches,
            self.importance_measure,
            self.seed,
            self.sampler,
            self.clip_ratio,
            trial=self.trial,
            trial_steps=self.trial_steps,
        )

    def _adopt_trials_rule(self, chosen: Candidate | None, training: Training) -> Training:
        """With ``trial="all"``, what trains and by which rule, as the trial's winner was
        tried: its sampler, redrawn every epoch where its trial redrew; a winner with a rule
        of its own (TraDy) is that strategy, with its draws, clipping and optimizer state of
        returning channels (where ``clip_ratio`` or ``returning_state`` were not given)."""
        if self.trial != "all" or self._given_plan is not None or self._rule_given or chosen is None:
            return training
        if chosen.own is not None:
            self.strategy, self.resample = chosen.own, Resample.from_str(chosen.own.resample)
            if "clip_ratio" not in self._given:
                self.clip_ratio = chosen.own.clip_ratio
            if "returning_state" not in self._given:
                self.returning_state = chosen.own.returning_state
                self._guard.keep_returning = self.returning_state == "keep"
            self._use_sampler(chosen.sampler)
            return chosen.training
        if chosen.draws > 1 and self.resample is Resample.NEVER:
            self.resample = Resample.EPOCH
            self._use_sampler(chosen.sampler)
        return training

    def _use_sampler(self, name: str) -> None:
        self._sampler = get_sampler(name)
        self._channels.sampler, self.sampler = self._sampler, self._sampler.name
