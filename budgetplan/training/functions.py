"""Memory-lean autograd functions (docs/training.md).

Each function keeps for backward only what its gradient needs, through
``ctx.save_for_backward`` (so ``SavedTensorMeter`` sees everything it keeps):

* ``LeanConv`` / ``LeanLinear``: the selected input channels when the weight is trained
  (the weight gradient is computed for those channels only), nothing for a frozen layer;
  a Linear reading attention's output refers to that output, which attention keeps;
* ``LeanBatchNorm``: nothing (a frozen BatchNorm in eval mode is a per-channel scale,
  read again from the module's statistics in backward);
* ``LeanClamp``: a bit-packed mask, 1 bit per element (ReLU, ReLU6, hardtanh, leaky ReLU);
* ``LeanDropout``: its keep-mask, bit-packed;
* ``LeanGlobalAvgPool``: nothing (the gradient is spread evenly).

The parameters, statistics and channel indices a backward reads are the model's own
tensors and the current selection, held by reference: state, not activations.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import grad as nn_grad

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_INPUT = {1: nn_grad.conv1d_input, 2: nn_grad.conv2d_input, 3: nn_grad.conv3d_input}
_CONV_WEIGHT = {1: nn_grad.conv1d_weight, 2: nn_grad.conv2d_weight, 3: nn_grad.conv3d_weight}


def conv_weight_grad(
    x_sel: Tensor, idx: Tensor, weight_shape: torch.Size, grad_out: Tensor, spec: tuple[Any, ...]
) -> Tensor:
    """The full-shape weight gradient with only the input channels ``idx`` computed.

    ``x_sel`` holds those channels of the input; ``spec`` is (ndim, stride, padding,
    dilation, groups). Entries of other channels are zero and cost no MACs.
    """
    ndim, stride, padding, dilation, groups = spec
    weight_fn = _CONV_WEIGHT[ndim]
    kernel = tuple(weight_shape[2:])
    c_out, per_group_in = weight_shape[0], weight_shape[1]
    grad = grad_out.new_zeros(weight_shape)
    if groups == 1:
        part = weight_fn(x_sel, (c_out, idx.numel(), *kernel), grad_out, stride, padding, dilation, 1)
        grad.index_copy_(1, idx, part)
    elif per_group_in == 1:  # depthwise, possibly with a channel multiplier m
        m = c_out // groups
        rows = (idx[:, None] * m + torch.arange(m, device=idx.device)).reshape(-1)
        part = weight_fn(
            x_sel, (rows.numel(), 1, *kernel), grad_out.index_select(1, rows), stride, padding, dilation, idx.numel()
        )
        grad.index_copy_(0, rows, part)
    else:  # grouped: each touched group on its own
        per_group_out = c_out // groups
        group_of = torch.div(idx, per_group_in, rounding_mode="floor")
        for group in torch.unique(group_of).tolist():
            where = (group_of == group).nonzero().squeeze(1)
            local = idx.index_select(0, where) - group * per_group_in
            rows = slice(group * per_group_out, (group + 1) * per_group_out)
            part = weight_fn(
                x_sel.index_select(1, where),
                (per_group_out, where.numel(), *kernel),
                grad_out[:, rows],
                stride,
                padding,
                dilation,
                1,
            )
            grad[rows].index_copy_(1, local, part)
    return grad


class LeanConv(torch.autograd.Function):
    """Convolution that saves only the selected input channels (none when frozen)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, idx: Tensor, spec: tuple[Any, ...]) -> Tensor:
        ndim, stride, padding, dilation, groups = spec
        out = _CONV[ndim](x, weight, bias, stride, padding, dilation, groups)
        ctx.spec, ctx.input_shape, ctx.weight, ctx.idx = spec, x.shape, weight, idx
        full = idx.numel() == x.shape[1]
        ctx.save_for_backward((x if full else x.index_select(1, idx)) if ctx.needs_input_grad[1] else None)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        (x_sel,) = ctx.saved_tensors
        ndim, stride, padding, dilation, groups = ctx.spec
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _CONV_INPUT[ndim](ctx.input_shape, ctx.weight, grad_out, stride, padding, dilation, groups)
        if ctx.needs_input_grad[1]:
            grad_w = conv_weight_grad(x_sel, ctx.idx, ctx.weight.shape, grad_out, ctx.spec)
        if ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(dim=[d for d in range(grad_out.dim()) if d != 1])
        return grad_x, grad_w, grad_b, None, None


class LeanLinear(torch.autograd.Function):
    """Linear layer that saves only the selected input features (none when frozen).

    ``shared``: the input is kept for backward anyway (attention's output, which the
    attention saves), so it is saved whole, at no cost, instead of copying a selection.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, idx: Tensor, shared: bool = False) -> Tensor:
        out = F.linear(x, weight, bias)
        ctx.weight, ctx.idx = weight, idx
        whole = shared or idx.numel() == x.shape[-1]
        ctx.select = whole and idx.numel() != x.shape[-1]
        ctx.save_for_backward((x if whole else x.index_select(-1, idx)) if ctx.needs_input_grad[1] else None)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        (x_sel,) = ctx.saved_tensors
        weight, idx = ctx.weight, ctx.idx
        if ctx.select and x_sel is not None:
            x_sel = x_sel.index_select(-1, idx)
        grad_x = grad_w = grad_b = None
        flat = grad_out.reshape(-1, grad_out.shape[-1])
        if ctx.needs_input_grad[0]:
            grad_x = grad_out.matmul(weight)
        if ctx.needs_input_grad[1]:
            grad_w = weight.new_zeros(weight.shape)
            grad_w.index_copy_(1, idx, flat.t().matmul(x_sel.reshape(-1, idx.numel())))
        if ctx.needs_input_grad[2]:
            grad_b = flat.sum(0)
        return grad_x, grad_w, grad_b, None, None


class LeanBatchNorm(torch.autograd.Function):
    """Frozen BatchNorm in eval mode: ``x · scale + shift`` per channel; saves nothing."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, bias: Tensor | None, mean: Tensor, var: Tensor, weight: Tensor | None, eps: float
    ) -> Tensor:
        ctx.stats = (var, weight, eps)
        ctx.channel_shape = (1, -1) + (1,) * (x.dim() - 2)
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        var, weight, eps = ctx.stats
        grad_x = grad_b = None
        if ctx.needs_input_grad[0]:
            scale = torch.rsqrt(var + eps)
            if weight is not None:
                scale = scale * weight
            grad_x = grad_out * scale.reshape(ctx.channel_shape)
        if ctx.needs_input_grad[1]:
            grad_b = grad_out.sum(dim=[d for d in range(grad_out.dim()) if d != 1])
        return grad_x, grad_b, None, None, None, None


_BITS = 2 ** torch.arange(8, dtype=torch.uint8)


def pack_bits(mask: Tensor) -> Tensor:
    """A bool tensor as uint8, 8 elements a byte."""
    flat = mask.reshape(-1)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.reshape(-1, 8).to(torch.uint8) * _BITS.to(flat.device)).sum(1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, shape: torch.Size) -> Tensor:
    """The bool tensor of ``shape`` that ``pack_bits`` packed."""
    bits = (packed[:, None] & _BITS.to(packed.device)) != 0
    numel = 1
    for size in shape:
        numel *= size
    return bits.reshape(-1)[:numel].reshape(shape)


class LeanClamp(torch.autograd.Function):
    """ReLU-family activation that saves a 1-bit mask of where the gradient passes.

    ``slope`` is the gradient below ``low`` (0 for ReLU, the negative slope for leaky ReLU).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, low: float, high: float, slope: float, inplace: bool) -> Tensor:
        mask = (x > low) & (x < high) if high != float("inf") else x > low
        ctx.slope, ctx.shape = slope, x.shape
        ctx.save_for_backward(pack_bits(mask))
        if slope:
            out = torch.where(mask, x, x * slope)
        else:
            out = x.clamp(low, high)
        if inplace:
            x.copy_(out)
            ctx.mark_dirty(x)
            return x
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        (packed,) = ctx.saved_tensors
        mask = unpack_bits(packed, ctx.shape)
        if ctx.slope:
            return torch.where(mask, grad_out, grad_out * ctx.slope), None, None, None, None
        return grad_out * mask, None, None, None, None


class LeanDropout(torch.autograd.Function):
    """Dropout in training mode that saves its keep-mask bit-packed."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, p: float) -> Tensor:
        keep = torch.rand_like(x) >= p
        ctx.scale, ctx.shape = 1.0 / (1.0 - p), x.shape
        ctx.save_for_backward(pack_bits(keep))
        return x * keep * ctx.scale

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        (packed,) = ctx.saved_tensors
        return grad_out * unpack_bits(packed, ctx.shape) * ctx.scale, None


class LeanGlobalAvgPool(torch.autograd.Function):
    """Average over all spatial positions (output size 1); saves nothing."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.input_shape = x.shape
        return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor]:
        positions = 1
        for size in ctx.input_shape[2:]:
            positions *= size
        return (grad_out.expand(ctx.input_shape) / positions,)
