"""What a ``BudgetPlanCallback`` keeps in a checkpoint, and how a resumed fit takes it back:
the seed, the channel rule, the last draw, the selection and what each channel has seen,
and a drawn strategy's current plan. Draws depend only on ``(seed, epoch, step)``, so a
resumed run draws what an uninterrupted one would."""

from __future__ import annotations

from typing import Any

from budgetplan.plan.model import Plan
from budgetplan.strategies.base import Resample, Strategy
from budgetplan.training.selection import ChannelSelection
from budgetplan.training.state import FitState


class Resumable:
    """The checkpoint half of ``BudgetPlanCallback`` (Lightning's ``state_dict`` hooks)."""

    seed: int
    strategy: Strategy
    resample: Resample
    sampler: str
    plan: Plan | None
    _fit: FitState
    _channels: ChannelSelection

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "strategy": self.strategy.name,
            "resample": self.resample.value,
            "sampler": self.sampler,
            "drawn_at": self._fit.drawn_at,
            **self._channels.state_dict(),
            "plan": self.plan.to_dict() if self.plan is not None else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seed = state_dict["seed"]
        self._fit.restored = state_dict
        if self._channels.layers:
            self._restore()

    def _restore(self) -> None:
        state, self._fit.restored = self._fit.restored, None
        assert state is not None
        self._fit.drawn_at = (state["drawn_at"][0], state["drawn_at"][1]) if state["drawn_at"] is not None else None
        if self._fit.draws_plan and state["plan"] is not None:
            self.plan = Plan.from_dict(state["plan"], source="the checkpoint")  # this draw's plan
        self._channels.load_state_dict(state)
