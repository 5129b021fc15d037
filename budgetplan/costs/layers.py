"""Which weights of a model are plannable layers, and under which names.

A plannable layer is a weight read by a convolution or a linear op, selected by input
channel (docs/cost-model.md). Conv1d/2d/3d and Linear modules are layers under their
module names. ``nn.MultiheadAttention`` keeps its query/key/value projection as a bare
parameter, ``in_proj_weight`` (``[3E, E]``), applied with ``F.linear`` inside
``F.multi_head_attention_forward``: it is one layer, ``<attention>.in_proj``, whose input
channels are the ``E`` embedding features (its ``out_proj`` is an ordinary Linear).

Everything that turns a layer name into its parameters goes through ``plannable_layers``,
so the trace, the lean backward and the freezing agree on names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from torch import nn

PLANNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
IN_PROJ = "in_proj"  # the layer name of an attention's packed projection, under the attention


@dataclass(frozen=True)
class PlannableLayer:
    """One plannable weight: ``Linear`` for a packed attention projection."""

    name: str
    type: str
    weight: nn.Parameter
    bias: nn.Parameter | None
    weight_param: str  # parameter names in the model
    bias_param: str | None
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    groups: int


def _module_layer(name: str, module: nn.Module) -> PlannableLayer:
    prefix = f"{name}." if name else ""
    bias = module.bias if isinstance(module.bias, nn.Parameter) else None
    kernel: tuple[int, ...]
    if isinstance(module, nn.Linear):
        in_channels, out_channels, kernel, groups = module.in_features, module.out_features, (), 1
    else:
        assert isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
        in_channels, out_channels = module.in_channels, module.out_channels
        kernel, groups = tuple(module.kernel_size), module.groups
    return PlannableLayer(
        name, type(module).__name__ if not isinstance(module, nn.Linear) else "Linear",
        cast(nn.Parameter, module.weight), bias, f"{prefix}weight", f"{prefix}bias" if bias is not None else None,
        in_channels, out_channels, kernel, groups,
    )  # fmt: skip


def _in_projection(name: str, attention: nn.MultiheadAttention) -> PlannableLayer | None:
    weight = attention.in_proj_weight
    if weight is None:  # separate q/k/v weights (kdim or vdim differ): not planned
        return None
    prefix = f"{name}." if name else ""
    bias = attention.in_proj_bias
    return PlannableLayer(
        f"{prefix}{IN_PROJ}", "Linear", weight, bias, f"{prefix}in_proj_weight",
        f"{prefix}in_proj_bias" if bias is not None else None,
        int(weight.shape[1]), int(weight.shape[0]), (), 1,
    )  # fmt: skip


def plannable_layers(model: nn.Module) -> dict[str, PlannableLayer]:
    """Every plannable layer of ``model`` by name, in module order.

    >>> block = nn.MultiheadAttention(8, 2)
    >>> {name: tuple(layer.weight.shape) for name, layer in plannable_layers(block).items()}
    {'in_proj': (24, 8), 'out_proj': (8, 8)}
    """
    layers: dict[str, PlannableLayer] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            projection = _in_projection(name, module)
            if projection is not None:
                layers[projection.name] = projection
        elif isinstance(module, PLANNABLE_TYPES):
            layers[name] = _module_layer(name, module)
    return layers
