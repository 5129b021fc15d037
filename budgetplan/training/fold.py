"""Folding frozen BatchNorm into the convolution before it, as a deployed graph does.

With its statistics frozen, a BatchNorm after a convolution is a per-channel affine map
``y = g * conv(x) + b`` with ``g = gamma / sqrt(running_var + eps)``. Trained through it, an
SGD step on the convolution's weight moves output channel ``k`` by ``g_k**2`` times what the
same step moves it in the folded graph (the weight's gradient is scaled by ``g_k``, and so
is the weight's effect on the output). In ImageNet MobileNetV2 the channels after a
depthwise conv have a median ``g**2`` of 72 and up to 11,480
(``benchmarks/norm_gain.py``), so a learning rate that suits the classifier throws those
layers far off. Device graphs fold the norm into the weight and bias before training
(Lin et al., "On-Device Training Under 256KB Memory", NeurIPS 2022), so every layer takes
steps of its own scale; :func:`fold_batchnorm` does the same to a torch model.
"""

from __future__ import annotations

from itertools import pairwise
from typing import cast

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a convolution into it, in place.

    The convolution keeps its name and gets the norm's shift as its bias; the norm is
    replaced by ``nn.Identity``. In eval mode the model computes what it computed before.
    Pairs are found by ``torch.fx`` tracing, or, where tracing fails, as neighbours in an
    ``nn.Sequential``.

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU()).eval()
    >>> x = torch.randn(2, 3, 8, 8)
    >>> before = net(x)
    >>> folded = fold_batchnorm(net)
    >>> type(folded[1]).__name__, folded[0].bias is not None
    ('Identity', True)
    >>> torch.allclose(before, folded(x), atol=1e-5)
    True
    """
    for conv_name, norm_name in conv_norm_pairs(model):
        conv = cast(nn.modules.conv._ConvNd, model.get_submodule(conv_name))
        norm = cast(nn.modules.batchnorm._BatchNorm, model.get_submodule(norm_name))
        was_training = conv.training
        fused = fuse_conv_bn_eval(conv.eval(), norm.eval())
        model.set_submodule(conv_name, fused.train(was_training))
        model.set_submodule(norm_name, nn.Identity())
    return model


def step_gain(norm: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """``(gamma / sqrt(running_var + eps))**2`` per channel: how much this norm, frozen,
    scales the SGD steps of the conv before it."""
    assert norm.running_var is not None, "a norm without running statistics is never frozen"
    gamma = norm.weight.detach() if norm.weight is not None else torch.ones_like(norm.running_var)
    return gamma**2 / (norm.running_var + norm.eps)


def conv_norm_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(convolution, BatchNorm) names where the norm's only input is the convolution's output."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # data-dependent control flow: fall back to Sequential neighbours
        return _sequential_pairs(model)
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), _NORMS):
            continue
        source = node.args[0]
        if (
            isinstance(source, torch.fx.Node)
            and source.op == "call_module"
            and isinstance(modules.get(source.target), nn.modules.conv._ConvNd)
            and len(source.users) == 1
        ):
            pairs.append((str(source.target), str(node.target)))
    return pairs


def _sequential_pairs(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (a, first), (b, second) in pairwise(children):
                if isinstance(first, nn.modules.conv._ConvNd) and isinstance(second, _NORMS):
                    prefix = f"{name}." if name else ""
                    pairs.append((prefix + a, prefix + b))
    return pairs


NORM_GAIN_WARNING = 10.0  # (gamma / sigma)^2 beyond which steps are out of scale


def warn_of_norm_gain(modules: dict[str, nn.Module], norm_after: dict[str, str]) -> None:
    """Warn when a frozen BatchNorm multiplies a trained layer's steps far beyond its own
    scale (``step_gain``)."""
    gains = {}
    for layer, norm_name in norm_after.items():
        norm = modules.get(norm_name)
        if isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.running_var is not None:
            gains[layer] = float(step_gain(norm).max())
    if gains and max(gains.values()) > NORM_GAIN_WARNING:
        worst = max(gains, key=gains.__getitem__)
        rank_zero_warn(
            f"budgetplan: frozen BatchNorm multiplies the SGD steps of {len(gains)} trained layer(s) per output "
            f"channel, by up to {gains[worst]:.0f}x at {worst}; a learning rate that suits the other layers can "
            "throw these off. Fold the norms into the convolutions before fitting, as device graphs do: "
            "budgetplan.fold_batchnorm(model)."
        )
