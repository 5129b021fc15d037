"""Where an input channel's entries sit in a layer's weight.

Conv weights are ``[C_out, C_in/g, *kernel]``, Linear weights ``[C_out, C_in]``. Input
channel ``c`` of a grouped conv lives in group ``c // (C_in/g)``, at column
``c % (C_in/g)`` of that group's rows; in a depthwise conv it owns whole rows.
"""

from __future__ import annotations

import torch
from torch import Tensor


def channel_norms(tensor: Tensor, in_channels: int, groups: int) -> Tensor:
    """L2 norm of the weight (or gradient) entries of each input channel.

    >>> channel_norms(torch.ones(4, 3, 3, 3), 3, 1)  # ordinary conv, 3 input channels
    tensor([6., 6., 6.])
    >>> channel_norms(torch.ones(8, 1, 3, 3), 4, 4)  # depthwise, channel multiplier 2
    tensor([4.2426, 4.2426, 4.2426, 4.2426])
    """
    squares = tensor.detach().float().pow(2)
    if squares.dim() > 2:
        squares = squares.sum(dim=tuple(range(2, squares.dim())))  # [C_out, C_in/g]
    per_group_out, per_group_in = squares.shape[0] // groups, squares.shape[1]
    by_group = squares.reshape(groups, per_group_out, per_group_in).sum(1)  # [g, C_in/g]
    return by_group.reshape(in_channels).sqrt()


def weight_mask(weight_shape: torch.Size | tuple[int, ...], idx: Tensor, groups: int) -> Tensor:
    """Bool tensor of ``weight_shape``: True on the entries of input channels ``idx``.

    >>> weight_mask((2, 3), torch.tensor([1]), 1).tolist()
    [[False, True, False], [False, True, False]]
    """
    c_out, per_group_in = weight_shape[0], weight_shape[1]
    per_group_out = c_out // groups
    idx = idx.to(torch.long)
    rows = (idx // per_group_in)[:, None] * per_group_out + torch.arange(per_group_out, device=idx.device)
    cols = (idx % per_group_in)[:, None].expand_as(rows)
    mask = torch.zeros(c_out, per_group_in, dtype=torch.bool, device=idx.device)
    mask[rows.reshape(-1), cols.reshape(-1)] = True
    return mask.reshape(c_out, per_group_in, *([1] * (len(weight_shape) - 2))).expand(*weight_shape)
