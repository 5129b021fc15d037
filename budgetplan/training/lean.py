"""``LeanAutograd``: run a model's forward with the memory-lean functions.

A ``TorchFunctionMode`` that, while autograd records a graph, sends the ops that matter
to ``budgetplan.training.functions``: convolutions and linear layers (recognised by their
weight, so functional calls count too, and the packed projection of
``nn.MultiheadAttention``, whose body runs under the mode), frozen BatchNorm in eval mode,
ReLU-family activations, dropout and global average pooling. Every other op runs as stock
PyTorch; a Linear that reads attention's output keeps that output, which the attention
keeps anyway, instead of a copy of its selection (docs/cost-model.md). A planned
conv or linear that the lean path cannot run (string padding, say) falls back to stock
autograd with one warning naming it. Ops that record no graph (before the earliest
trained layer nothing requires a gradient) are not touched.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _ntuple
from torch.overrides import TorchFunctionMode

from budgetplan.costs.layers import plannable_layers
from budgetplan.costs.trace import decomposed
from budgetplan.training.functions import (
    LeanBatchNorm,
    LeanClamp,
    LeanConv,
    LeanDropout,
    LeanGlobalAvgPool,
    LeanLinear,
)

_EMPTY = torch.empty(0, dtype=torch.long)


def _bind(
    args: tuple[Any, ...], kwargs: dict[str, Any], names: tuple[str, ...], defaults: tuple[Any, ...]
) -> list[Any]:
    values = list(args) + [None] * (len(names) - len(args))
    offset = len(names) - len(defaults)
    for i, name in enumerate(names):
        if i >= len(args):
            values[i] = kwargs.get(name, defaults[i - offset] if i >= offset else None)
    return values


def _needs_graph(*tensors: Tensor | None) -> bool:
    return any(t is not None and t.requires_grad for t in tensors)


class LeanAutograd(TorchFunctionMode):
    """Memory-lean forward for ``model``; ``selection`` maps a layer's module name to the
    LongTensor of input channels its weight trains now (read at every call, so a new
    selection takes effect at the next forward).

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> for p in net.parameters():
    ...     _ = p.requires_grad_(False)
    >>> _ = net[2].weight.requires_grad_(True)
    >>> with LeanAutograd(net, {"2": torch.tensor([0, 3])}):
    ...     net(torch.randn(5, 6)).sum().backward()
    >>> net[2].weight.grad[:, [1, 2]].abs().sum().item()
    0.0
    """

    def __init__(self, model: nn.Module, selection: dict[str, Tensor]) -> None:
        super().__init__()
        self.selection = selection
        self._layer_of = {id(layer.weight): name for name, layer in plannable_layers(model).items()}
        # storage of each attention output still alive -> the output (held weakly)
        self._attention_out: dict[int, weakref.ref[Tensor]] = {}
        self._param_name = {id(p): name for name, p in model.named_parameters()}
        self._warned: set[str] = set()

    def fallback(self, what: str, reason: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            warnings.warn(f"budgetplan: {what} runs with stock autograd ({reason})", stacklevel=4)

    def _planned(self, weight: Tensor, what: str) -> str | None:
        """The planned layer that owns ``weight``, or None (stock autograd, said once)."""
        name = self._layer_of.get(id(weight))
        if name is None:
            self.fallback(self._param_name.get(id(weight), what), "it is not a planned layer")
        return name

    def _indices(self, name: str, weight: Tensor) -> Tensor | None:
        if not weight.requires_grad:
            return _EMPTY.to(weight.device)
        idx = self.selection.get(name)
        if idx is None:
            self.fallback(name, "its weight is trainable but it has no channel selection")
        return idx

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        handler = _HANDLERS.get(func)
        if handler is not None and torch.is_grad_enabled():
            out = handler(self, args, kwargs)
            if out is not NotImplemented:
                return out
        return func(*args, **kwargs)

    def conv(self, ndim: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x, weight, bias, stride, padding, dilation, groups = _bind(
            args, kwargs, ("input", "weight", "bias", "stride", "padding", "dilation", "groups"), (None, 1, 0, 1, 1)
        )
        if not _needs_graph(x, weight, bias):
            return NotImplemented
        name = self._planned(weight, "a convolution")
        if name is None:
            return NotImplemented
        if isinstance(padding, str):
            self.fallback(name, f"padding='{padding}'")
            return NotImplemented
        idx = self._indices(name, weight)
        if idx is None:
            return NotImplemented
        tup = _ntuple(ndim)
        spec = (ndim, tup(stride), tup(padding), tup(dilation), int(groups))
        return LeanConv.apply(x, weight, bias, idx, spec)

    def linear(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x, weight, bias = _bind(args, kwargs, ("input", "weight", "bias"), (None,))
        if not _needs_graph(x, weight, bias):
            return NotImplemented
        name = self._planned(weight, "a linear op")
        idx = None if name is None else self._indices(name, weight)
        return NotImplemented if idx is None else LeanLinear.apply(x, weight, bias, idx, self._is_attention_out(x))

    def attention(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        out = F.scaled_dot_product_attention(*args, **kwargs)
        # noted even when no gradient reaches it: a Linear reading it then keeps it whole,
        # as the cost model counts (the attention would keep it had the path reached it)
        if isinstance(out, Tensor):
            key = out.untyped_storage().data_ptr()
            self._attention_out = {k: r for k, r in self._attention_out.items() if r() is not None}
            self._attention_out[key] = weakref.ref(out)
        return out

    def _is_attention_out(self, x: Tensor) -> bool:
        ref = self._attention_out.get(x.untyped_storage().data_ptr())
        out = ref() if ref is not None else None
        return out is not None and out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()

    def multi_head_attention(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with self:  # its projections and attention run under the mode
            return decomposed(F.multi_head_attention_forward)(*args, **kwargs)

    def batch_norm(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x, mean, var, weight, bias, training, _, eps = _bind(
            args,
            kwargs,
            ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"),
            (None, None, False, 0.1, 1e-5),
        )
        if training or mean is None or var is None or (weight is not None and weight.requires_grad):
            return NotImplemented
        if not _needs_graph(x, bias):
            return NotImplemented
        return LeanBatchNorm.apply(x, bias, mean, var, weight, float(eps))

    def clamp(self, low: float, high: float, slope: float, x: Tensor, inplace: bool) -> Any:
        if not isinstance(x, Tensor) or not x.requires_grad:
            return NotImplemented
        return LeanClamp.apply(x, float(low), float(high), float(slope), bool(inplace))

    def dropout(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x, p, training, inplace = _bind(args, kwargs, ("input", "p", "training", "inplace"), (0.5, True, False))
        if not training or inplace or not 0 < p < 1 or not isinstance(x, Tensor) or not x.requires_grad:
            return NotImplemented
        return LeanDropout.apply(x, float(p))

    def global_pool(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x, size = _bind(args, kwargs, ("input", "output_size"), ())
        if not isinstance(x, Tensor) or not x.requires_grad:
            return NotImplemented
        if size not in (1, (1, 1), [1, 1]):
            return NotImplemented
        return LeanGlobalAvgPool.apply(x)


def _relu(mode: LeanAutograd, args: tuple[Any, ...], kwargs: dict[str, Any], inplace: bool = False) -> Any:
    x, flag = _bind(args, kwargs, ("input", "inplace"), (inplace,))
    return mode.clamp(0.0, float("inf"), 0.0, x, bool(flag) or inplace)


def _hardtanh(mode: LeanAutograd, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x, low, high, inplace = _bind(args, kwargs, ("input", "min_val", "max_val", "inplace"), (-1.0, 1.0, False))
    return mode.clamp(low, high, 0.0, x, inplace)


def _relu6(mode: LeanAutograd, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x, inplace = _bind(args, kwargs, ("input", "inplace"), (False,))
    return mode.clamp(0.0, 6.0, 0.0, x, inplace)


def _leaky_relu(mode: LeanAutograd, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x, slope, inplace = _bind(args, kwargs, ("input", "negative_slope", "inplace"), (0.01, False))
    return mode.clamp(0.0, float("inf"), slope, x, inplace)


_Handler = Callable[[LeanAutograd, tuple[Any, ...], dict[str, Any]], Any]
_HANDLERS: dict[Any, _Handler] = {
    F.conv1d: lambda m, a, k: m.conv(1, a, k),
    F.conv2d: lambda m, a, k: m.conv(2, a, k),
    F.conv3d: lambda m, a, k: m.conv(3, a, k),
    F.linear: LeanAutograd.linear,
    F.batch_norm: LeanAutograd.batch_norm,
    F.relu: _relu,
    torch.relu: _relu,
    torch.relu_: lambda m, a, k: _relu(m, a, k, inplace=True),
    Tensor.relu: _relu,
    Tensor.relu_: lambda m, a, k: _relu(m, a, k, inplace=True),
    F.relu6: _relu6,
    F.hardtanh: _hardtanh,
    F.leaky_relu: _leaky_relu,
    F.adaptive_avg_pool2d: LeanAutograd.global_pool,
    F.dropout: LeanAutograd.dropout,
    F.scaled_dot_product_attention: LeanAutograd.attention,
    F.multi_head_attention_forward: LeanAutograd.multi_head_attention,
}
