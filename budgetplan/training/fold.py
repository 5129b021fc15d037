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

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import cast

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from budgetplan.costs.dataflow import Op
from budgetplan.costs.trace import trace_model

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class NormFolds:
    """Which BatchNorms fold into the convolution before them (``pairs``: convolution,
    norm), and why each other one stays (``left``: norm name → reason)."""

    pairs: tuple[tuple[str, str], ...]
    left: dict[str, str]


def fold_batchnorm(model: nn.Module, example_input: torch.Tensor | Sequence[torch.Tensor] | None = None) -> nn.Module:
    """Fold every BatchNorm whose input is a convolution's output, read by nothing else,
    into that convolution, in place.

    The convolution keeps its name and gets the norm's shift as its bias; the norm is
    replaced by ``nn.Identity``. In eval mode the model computes what it computed before.
    With ``example_input`` the pairs come from the model's recorded dataflow (any model
    that runs, whatever its Python does); without, from ``torch.fx`` tracing, or where
    that fails, from neighbours in an ``nn.Sequential``. A warning says how many norms
    were folded and why each other one was not (``find_folds`` returns the same).

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
    folds = find_folds(model, example_input)
    for conv_name, norm_name in folds.pairs:
        conv = cast(nn.modules.conv._ConvNd, model.get_submodule(conv_name))
        norm = cast(nn.modules.batchnorm._BatchNorm, model.get_submodule(norm_name))
        was_training = conv.training
        fused = fuse_conv_bn_eval(conv.eval(), norm.eval())
        model.set_submodule(conv_name, fused.train(was_training))
        model.set_submodule(norm_name, nn.Identity())
    if folds.left:
        shown = "; ".join(f"{name}: {why}" for name, why in list(folds.left.items())[:4])
        more = f"; and {len(folds.left) - 4} more" if len(folds.left) > 4 else ""
        _warn_on_rank_zero(
            f"budgetplan: folded {len(folds.pairs)} of {len(folds.pairs) + len(folds.left)} BatchNorm layers; "
            f"{len(folds.left)} stay: {shown}{more}"
        )
    return model


def find_folds(model: nn.Module, example_input: torch.Tensor | Sequence[torch.Tensor] | None = None) -> NormFolds:
    """The BatchNorms ``fold_batchnorm`` folds, and why it leaves the others."""
    norms = [name for name, module in model.named_modules() if isinstance(module, _NORMS)]
    if example_input is not None:
        return _traced_folds(model, example_input, norms)
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as err:  # data-dependent control flow: fall back to Sequential neighbours
        pairs = _sequential_pairs(model)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        why = (
            f"not right after a convolution in an nn.Sequential, and torch.fx cannot trace "
            f"{type(model).__name__} ({first}); pass example_input to follow the dataflow"
        )
        return _with_reasons(pairs, norms, why)
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
    why = (
        "as torch.fx sees the model, its input is not a convolution module's output read by nothing else; "
        "pass example_input to follow the dataflow"
    )
    return _with_reasons(pairs, norms, why)


def _with_reasons(pairs: list[tuple[str, str]], norms: list[str], why: str) -> NormFolds:
    folded = {norm for _, norm in pairs}
    return NormFolds(tuple(pairs), {name: why for name in norms if name not in folded})


def _traced_folds(
    model: nn.Module, example_input: torch.Tensor | Sequence[torch.Tensor], norms: list[str]
) -> NormFolds:
    """Pairs from the recorded dataflow (``budgetplan.costs.trace``): the norm's input is
    made by a convolution that runs once, and nothing else reads it."""
    trace = trace_model(model, example_input)
    producer: dict[int, Op] = {}
    readers: Counter[int] = Counter(trace.output_ids)
    for op in trace.ops:
        readers.update(op.inputs)
        for t in op.outputs:
            producer[t] = op
    runs = Counter(op.module for op in trace.ops if op.func in ("conv1d", "conv2d", "conv3d", "batch_norm"))
    pairs: list[tuple[str, str]] = []
    left: dict[str, str] = {}
    for name in norms:
        calls = [op for op in trace.ops if op.func == "batch_norm" and op.module == name]
        if not calls:
            left[name] = "never runs in the forward pass"
            continue
        if len(calls) > 1:
            left[name] = f"runs {len(calls)} times"
            continue
        source = calls[0].inputs[0]
        made_by = producer.get(source)
        if (
            made_by is None
            or made_by.func not in ("conv1d", "conv2d", "conv3d")
            or made_by.module not in trace.plannable
        ):
            what = f"{made_by.func} in {made_by.module or 'the model'}" if made_by else "the model's input"
            left[name] = f"its input comes from {what}, not a convolution"
        elif readers[source] > 1:
            left[name] = f"the output of {made_by.module} is also read elsewhere"
        elif runs[made_by.module] > 1:
            left[name] = f"{made_by.module} runs {runs[made_by.module]} times"
        else:
            pairs.append((made_by.module, name))
    return NormFolds(tuple(pairs), left)


def conv_norm_pairs(model: nn.Module, example_input: torch.Tensor | None = None) -> list[tuple[str, str]]:
    """(convolution, BatchNorm) names of the norms ``fold_batchnorm`` folds."""
    return list(find_folds(model, example_input).pairs)


def step_gain(norm: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """``(gamma / sqrt(running_var + eps))**2`` per channel: how much this norm, frozen,
    scales the SGD steps of the conv before it."""
    assert norm.running_var is not None, "a norm without running statistics is never frozen"
    gamma = norm.weight.detach() if norm.weight is not None else torch.ones_like(norm.running_var)
    return gamma**2 / (norm.running_var + norm.eps)


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
        _warn_on_rank_zero(
            f"budgetplan: frozen BatchNorm multiplies the SGD steps of {len(gains)} trained layer(s) per output "
            f"channel, by up to {gains[worst]:.0f}x at {worst}; a learning rate that suits the other layers can "
            "throw these off. Fold the norms into the convolutions before fitting, as device graphs do: "
            "budgetplan.fold_batchnorm(model)."
        )


def _warn_on_rank_zero(message: str) -> None:
    # lightning is imported here, not above: exporting a plan to C folds without training
    # and need not pay for importing it
    from lightning.pytorch.utilities import rank_zero_warn

    rank_zero_warn(message)
