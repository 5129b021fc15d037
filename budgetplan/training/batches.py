"""The first tensor of a training batch, and how many samples it holds."""

from __future__ import annotations

from typing import Any

from torch import Tensor


def first_tensor(batch: Any) -> Tensor | None:
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (list, tuple)):
        return next((t for t in map(first_tensor, batch) if t is not None), None)
    if isinstance(batch, dict):
        return next((t for t in map(first_tensor, batch.values()) if t is not None), None)
    return None


def batch_size_of(batch: Any) -> int:
    tensor = first_tensor(batch)
    return int(tensor.shape[0]) if tensor is not None and tensor.dim() > 0 else 1
