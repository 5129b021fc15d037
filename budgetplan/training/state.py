"""``FitState``: what ``BudgetPlanCallback`` carries from one hook to the next during a fit."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from budgetplan.plan.model import Plan
from budgetplan.training.lean import LeanAutograd
from budgetplan.training.meter import SavedTensorMeter
from budgetplan.training.paths import PathCheck


@dataclass
class FitState:
    """The lean forward, the meter and the path check of the step in flight, the last draw,
    a checkpoint waiting for the trained layers, and the warnings already given.

    >>> import torch
    >>> net = torch.nn.Linear(4, 2)
    >>> state = FitState(meter=SavedTensorMeter(net))
    >>> state.open_forward(batch_size=3)
    >>> loss = net(torch.randn(3, 4)).relu().sum()
    >>> state.close_forward() > 0, state.close_forward()  # closed once
    (True, None)
    """

    meter: SavedTensorMeter | None = None
    lean: LeanAutograd | None = None
    norms: list[nn.Module] = field(default_factory=list)
    draws_plan: bool = False  # each draw brings its own plan (a strategy drawing across layers)
    drawn_at: tuple[int, int] | None = None
    restored: dict[str, Any] | None = None
    warned: set[str] = field(default_factory=set)
    batch_size: int = 1
    classifier: str = ""  # the module's last plannable layer: never clipped
    forward: ExitStack | None = None
    path: PathCheck | None = None  # fails a forward that runs a layer the plan's trace never ran

    def open_forward(self, batch_size: int, plan: Plan | None = None) -> None:
        """Start metering what autograd saves, the lean forward when layers are trained
        sparsely, and the check that the forward runs no layer outside ``plan``."""
        assert self.meter is not None, "setup comes first"
        self.close_forward()
        self.forward = ExitStack()
        self.forward.enter_context(self.meter)
        if self.lean is not None:
            self.forward.enter_context(self.lean)
        if self.path is not None and plan is not None:
            self.forward.enter_context(self.path.watching(plan))
        self.batch_size = batch_size

    def close_forward(self) -> float | None:
        """Close what ``open_forward`` opened; the bytes autograd saved per sample, None when nothing was open."""
        if self.forward is None or self.meter is None:
            return None
        forward, self.forward = self.forward, None
        forward.close()
        return self.meter.bytes / max(1, self.batch_size)

    def warn_once(self, key: str, warning: str | None) -> None:
        """Give ``warning`` (on rank 0) unless one under ``key`` was given already."""
        if warning is not None and key not in self.warned:
            self.warned.add(key)
            rank_zero_warn(warning)
