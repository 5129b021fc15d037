"""What a fit is checked against at every step: the plan's sample shape and batch size, and
the bytes autograd may save per sample on the host (docs/training.md)."""

from __future__ import annotations

from typing import Any

from budgetplan.plan.model import Plan
from budgetplan.training.batches import first_tensor

LOSS_ALLOWANCE = 256  # bytes per sample the loss may save beside the model


def batch_warning(plan: Plan | None, batch: Any) -> str | None:
    """Why ``batch`` does not suit ``plan``, or None when it does (or cannot be told)."""
    tensor = first_tensor(batch)
    if plan is None or tensor is None or tensor.dim() == 0:
        return None
    return plan.check_batch(tuple(tensor.shape[1:]), int(tensor.shape[0]))


def saved_warning(plan: Plan, measured: float) -> str | None:
    """Why ``measured`` saved bytes per sample break ``plan``, or None when they do not.

    >>> from budgetplan.costs.build import layer_costs
    >>> from budgetplan.planning.assemble import plan_from_costs
    >>> from budgetplan.device.profile import load_device
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
    >>> plan = plan_from_costs(layer_costs(net, torch.zeros(1, 3, 8, 8)), load_device("raspberry-pi-4"))
    >>> saved_warning(plan, 0.0) is None, saved_warning(plan, 1e9).startswith("budgetplan: autograd saved")
    (True, True)
    """
    # the loss's own saved tensors (a few per class) sit on top of the model's
    bound = plan.host_saved_bound()
    if measured <= 1.05 * bound + LOSS_ALLOWANCE:
        return None
    return (
        f"budgetplan: autograd saved {measured:.0f} bytes per sample, above the {bound:.0f} the plan allows "
        "on this host (float32): an op the cost model does not know, or a layer that could not run lean, "
        "keeps more than planned; the device would exceed its budget"
    )
