"""``SelectionGuard``: an optimizer step changes nothing outside the trained channels.

Weight decay, momentum and Adam's moments would move weight entries whose gradient is
zero. The guard hooks ``optimizer.step``: before it, it keeps a copy of each partially
trained weight and of its per-element optimizer state; after it, every entry outside the
current selection gets its old value back, bit for bit. Any ``torch.optim`` optimizer
works unchanged.

When the selection changes, the optimizer state of channels that enter it is reset to
zero by default, so momentum or Adam moments from an earlier time these channels were
trained do not leak into their first update (Adam's step count is per tensor: these
channels start without bias correction, a smaller first step). With ``keep_returning`` a
channel that comes back starts from the state it left with, which the guard has kept
unchanged while it was out.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer


class SelectionGuard:
    """Keeps entries outside ``mask`` (True = trained now) of each guarded parameter
    unchanged by the optimizers it is attached to; ``keep_returning``: entries that come back
    into a selection keep the optimizer state they left with instead of starting at zero."""

    def __init__(self, keep_returning: bool = False) -> None:
        self.keep_returning = keep_returning
        self.masks: dict[nn.Parameter, Tensor] = {}
        self._copies: dict[nn.Parameter, tuple[Tensor, dict[str, Tensor]]] = {}
        self._handles: list[Any] = []
        self._optimizers: list[Optimizer] = []

    def attach(self, optimizers: list[Optimizer]) -> None:
        for optimizer in optimizers:
            self._optimizers.append(optimizer)
            self._handles.append(optimizer.register_step_pre_hook(self._before))
            self._handles.append(optimizer.register_step_post_hook(self._after))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._optimizers = [], []

    def set_mask(self, param: nn.Parameter, mask: Tensor, reset: bool = True) -> None:
        """Guard ``param`` with a new selection; the optimizer state of entries entering it
        is zeroed when ``reset`` (not when a checkpointed selection is put back) unless the
        guard keeps returning entries' state."""
        old = self.masks.get(param)
        entering = mask if old is None else mask & ~old
        for optimizer in self._optimizers if reset and not self.keep_returning else []:
            for value in _element_state(optimizer, param).values():
                value.masked_fill_(entering, 0)
        self.masks[param] = mask

    def _before(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        # with a closure (Lightning's automatic optimization) gradients do not exist yet
        for param in self.masks:
            states = {k: v.clone() for k, v in _element_state(optimizer, param).items()}
            self._copies[param] = (param.detach().clone(), states)

    @torch.no_grad()
    def _after(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        for param, (before, states) in self._copies.items():
            keep = self.masks[param]
            param.copy_(torch.where(keep, param, before))
            for key, value in _element_state(optimizer, param).items():
                old = states.get(key)
                value.copy_(torch.where(keep, value, old if old is not None else torch.zeros_like(value)))
        self._copies.clear()


def _element_state(optimizer: Optimizer, param: nn.Parameter) -> dict[str, Tensor]:
    """The optimizer state of ``param`` that has one entry per weight element."""
    state = optimizer.state.get(param, {})
    return {k: v for k, v in state.items() if isinstance(v, Tensor) and v.shape == param.shape}
