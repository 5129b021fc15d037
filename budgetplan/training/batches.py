"""The first batch of a loader, its first tensor, and how many samples it holds."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from budgetplan.errors import BudgetPlanError

_NO_BATCH = object()


def first_batch(loader: Any, empty: str) -> Any:
    """The first batch ``loader`` yields; ``BudgetPlanError(empty)`` when it yields none (an
    empty dataset, or one smaller than a batch with ``drop_last``), not a bare ``StopIteration``."""
    batch = next(iter(loader), _NO_BATCH)
    if batch is _NO_BATCH:
        raise BudgetPlanError(empty)
    return batch


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
