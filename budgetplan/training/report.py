"""What a ``BudgetPlanCallback`` measures and logs during the fit: the bytes autograd saved
per sample (checked against the plan), the predicted memory, the trained fraction and the
coverage of the channels."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from budgetplan.plan.model import Plan
from budgetplan.strategies.base import Strategy
from budgetplan.training.checks import saved_warning
from budgetplan.training.selection import ChannelSelection
from budgetplan.training.state import FitState


class FitReport:
    """The measuring half of ``BudgetPlanCallback`` (its logging hooks)."""

    strategy: Strategy
    plan: Plan | None
    saved_bytes_per_sample: float | None
    _fit: FitState
    _channels: ChannelSelection

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._close_forward()
        if self.saved_bytes_per_sample is not None:
            measured, size = self.saved_bytes_per_sample, self._fit.batch_size
            pl_module.log("budgetplan/saved_bytes_per_sample", measured, on_step=True, prog_bar=True, batch_size=size)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self.plan is not None
        metrics = {
            "budgetplan/predicted_bytes": float(self.plan.predicted.peak_bytes),
            "budgetplan/budget_bytes": float(self.plan.budget_bytes),
            "budgetplan/trained_fraction": self.trained_fraction(),
            "budgetplan/coverage": self.coverage(),
        }
        pl_module.log_dict(metrics, on_step=False, on_epoch=True)

    def _close_forward(self) -> None:
        measured = self._fit.close_forward()
        if measured is None:
            return
        self.saved_bytes_per_sample = measured
        if self.plan is not None and not self.strategy.dense and "saved" not in self._fit.warned:
            self._fit.warn_once("saved", saved_warning(self.plan, measured))

    # --- what the selection covers ------------------------------------------------------

    def trained_fraction(self) -> float:
        """Fraction of the trained layers' weights trained under the current selection."""
        return 1.0 if self.strategy.dense else self._channels.trained_fraction()

    def coverage(self) -> float:
        """Fraction of the trained layers' input channels trained at least once so far."""
        return 1.0 if self.strategy.dense else self._channels.coverage()
