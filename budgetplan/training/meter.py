"""``SavedTensorMeter``: what autograd keeps for backward during a forward pass."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import torch
from torch import nn


class SavedTensorMeter:
    """Count the tensors autograd saves for backward while the context is open.

    Parameters and buffers of ``model`` (and any ``nn.Parameter``) are not counted: they
    exist anyway. A storage saved several times, or by several ops, is counted once, at
    its full size. ``elements`` counts stored elements whatever their type (a bool mask
    element is one element, one byte). The counts start from zero each time the context
    opens, so one meter can measure step after step.

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> x = torch.randn(3, 4)
    >>> with SavedTensorMeter(net) as meter:
    ...     loss = net(x).sum()
    >>> meter.tensors > 0 and meter.elements >= 3 * 8
    True
    """

    def __init__(self, model: nn.Module | None = None) -> None:
        self._exclude: set[int] = set()
        if model is not None:
            tensors = list(model.parameters()) + list(model.buffers())
            self._exclude = {t.untyped_storage().data_ptr() for t in tensors}
        self._seen: set[int] = set()
        self.bytes = 0
        self.elements = 0
        self.tensors = 0
        self._hooks: Any = None

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        if isinstance(tensor, nn.Parameter):
            return tensor
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in self._exclude or key in self._seen:
            return tensor
        self._seen.add(key)
        self.tensors += 1
        self.bytes += storage.nbytes()
        self.elements += storage.nbytes() // tensor.element_size()
        return tensor

    def __enter__(self) -> SavedTensorMeter:
        self._seen.clear()
        self.bytes = self.elements = self.tensors = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)
        self._hooks.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self._hooks.__exit__(kind, value, tb)
        self._hooks = None
