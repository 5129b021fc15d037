"""Where ``BudgetPlanCallback``'s plan comes from: the ``PlanSource`` of its settings, and
the channel rule it takes from the trial's choice."""

from __future__ import annotations

from typing import Any

from budgetplan.plan.model import Plan
from budgetplan.strategies.base import Resample
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
    returning_state: str
    trial: str
    trial_steps: int | None
    resample: Resample
    plan: Plan | None
    _given_plan: Any
    _rule_given: bool
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
            keep_returning=self.returning_state == "keep",
        )

    def _adopt_trials_rule(self, chosen: Candidate | None) -> None:
        """With ``trial="all"``, train with the channel rule the trial's winner was tried
        with: its sampler, redrawn every epoch where its trial redrew."""
        if self.trial != "all" or self._given_plan is not None or self._rule_given or chosen is None:
            return
        if chosen.draws > 1 and self.resample is Resample.NEVER:
            self.resample, self._sampler = Resample.EPOCH, get_sampler(chosen.sampler)
            self._channels.sampler, self.sampler = self._sampler, self._sampler.name
