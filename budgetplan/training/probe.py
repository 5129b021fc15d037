"""Running a module's own ``training_step`` outside a fit, as the callback does at setup to
measure importance: norms and dropout in eval mode (frozen, as plans train them), ``log``
silenced, and everything put back afterwards."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from budgetplan.errors import BudgetPlanError


def step_loss(module: nn.Module, batch: Any, index: int) -> Tensor:
    """The loss ``module.training_step`` returns for ``batch``."""
    output = module.training_step(batch, index)  # type: ignore[operator]
    loss = output.get("loss") if isinstance(output, Mapping) else output
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        raise BudgetPlanError("training_step must return the loss (a scalar tensor, or a dict with 'loss')")
    return loss


@contextmanager
def probing(module: nn.Module, requires_grad: bool) -> Iterator[None]:
    """Every parameter's ``requires_grad`` set to ``requires_grad``, norms and dropout in
    eval mode, ``log`` silenced, warnings of running outside a fit ignored; on exit the
    module is as it was, its gradients cleared."""
    flags = {p: p.requires_grad for p in module.parameters()}
    modes = {m: m.training for m in module.modules()}
    silenced = [name for name in ("log", "log_dict") if hasattr(module, name)]
    module.eval()
    module.requires_grad_(requires_grad)
    for name in silenced:
        setattr(module, name, lambda *args, **kwargs: None)  # no loop to log to at setup
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # modules warn that they run outside a fit
            yield
    finally:
        for name in silenced:
            delattr(module, name)
        for param, flag in flags.items():
            param.grad = None
            param.requires_grad_(flag)
        for m, training in modes.items():
            m.training = training
