"""How the C library stores a profile's 8-bit values (docs/device.md, "Int8 storage").

Every weight is int8 with one scale per output unit (symmetric: ``max |w| / 127``), the
biases stay float32, and every activation is int8 with one scale per tensor, calibrated
once at export on the example batch (a ReLU's output keeps its input's scale; a tensor
only a ReLU6 reads is scaled to ``[-6, 6]``). The real value of a stored ``q`` is
``q * scale``. Forward sums are exact int32; each output is requantised in float32 by
``(float)acc * m + b * r`` (``m = s_w * (s_in / s_out)``, formed in float32 by the kernel
from the unit's scale, ``r = 1 / s_out``) and rounded half to even into ``[-127, 127]``.
Gradients passed backward are float32, or, where the profile counts 8-bit ones, int8 with
one scale per tensor chosen as each writer combines its part into it (``largest |value| /
127``; two passes).

``multipliers`` and friends are the one definition of those constants: the emitted C and
the PyTorch reference (``budgetplan.codegen.reference``) both take them from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from budgetplan.codegen.graph import Node

LEVELS = 127  # int8 stored symmetric: -127 .. 127
NUMERICS = ("float32", "int8")


@dataclass(frozen=True)
class Quantization:
    """The scales of one export: per node output (``activation``) and per weight unit."""

    activation: dict[int, float]  # node -> scale of its output (the logits: 1.0, they stay float32)
    weight: dict[int, list[float]]  # conv/linear node -> one scale per output unit
    codes: dict[int, list[int]]  # conv/linear node -> its int8 weight, flat
    gradients: bool = False  # int8 gradients (one scale per tensor, set as they are written), else float32


def numerics_for(weight_bits: int, activation_bits: int) -> str:
    """What a profile's bit widths store: ``int8`` where weights and activations are 8-bit, else float32."""
    return "int8" if (weight_bits, activation_bits) == (8, 8) else "float32"


def f32(value: float) -> float:
    """``value`` rounded to the nearest float32 (what the C constant holds)."""
    return float(np.float32(value))


def quantize_weight(weight: torch.Tensor) -> tuple[list[int], list[float]]:
    """A weight's int8 codes (flat) and its per-output-unit scales."""
    rows = weight.detach().double().reshape(weight.shape[0], -1)
    scales = [f32(s) for s in (rows.abs().amax(1) / LEVELS).clamp_min(1e-12).tolist()]
    codes = torch.round(rows / torch.tensor(scales, dtype=torch.float64)[:, None]).clamp(-LEVELS, LEVELS)
    return [int(c) for c in codes.flatten().tolist()], scales


def relu6_cap(scale: float) -> int:
    """ReLU6's upper bound as a code of a tensor of ``scale``."""
    return min(LEVELS, round(6.0 / scale))


Weights = dict[int, tuple[torch.Tensor, torch.Tensor | None]]  # conv/linear node -> weight, bias


def calibrate(nodes: list[Node], weights: Weights, example: torch.Tensor) -> dict[int, float]:
    """Each node output's scale from a float forward of ``example``."""
    readers: dict[int, list[Node]] = {node.index: [] for node in nodes}
    for node in nodes:
        for source in node.inputs:
            readers[source].append(node)
    values = float_forward(nodes, weights, example)
    scales: dict[int, float] = {}
    for node in nodes:
        if node.kind in ("relu", "relu6"):
            scales[node.index] = scales[node.inputs[0]]  # computed in place: the same codes
            continue
        top = float(values[node.index].abs().max())
        if readers[node.index] and all(r.kind == "relu6" for r in readers[node.index]):
            top = min(top, 6.0)  # codes above 6 would be clamped anyway
        scales[node.index] = f32(max(top, 1e-8) / LEVELS)
    scales[nodes[-1].index] = 1.0  # the logits stay float32
    return scales


def float_forward(nodes: list[Node], weights: Weights, x: torch.Tensor) -> dict[int, torch.Tensor]:
    """Every node's output in float arithmetic (the network as PyTorch runs it)."""
    out: dict[int, torch.Tensor] = {}
    for node in nodes:
        if node.kind == "input":
            out[node.index] = x
            continue
        a = out[node.inputs[0]]
        if node.kind == "conv":
            w, b = weights[node.index]
            out[node.index] = F.conv2d(a, w, b, node.stride, node.padding, 1, node.groups)
        elif node.kind == "linear":
            w, b = weights[node.index]
            out[node.index] = F.linear(a.flatten(1), w, b)
        elif node.kind == "relu":
            out[node.index] = a.clamp_min(0)
        elif node.kind == "relu6":
            out[node.index] = a.clamp(0, 6)
        elif node.kind == "add":
            out[node.index] = a + out[node.inputs[1]]
        elif node.kind == "avgpool":
            out[node.index] = a.mean((2, 3)).reshape(a.shape[0], *node.shape)
    return out


def layer_scale(q: Quantization, node: Node) -> float:
    """A conv or linear layer's ``s_in / s_out`` in float32 (a constant of its call)."""
    return f32(q.activation[node.inputs[0]] / q.activation[node.index])


def multipliers(q: Quantization, node: Node) -> list[float]:
    """A conv or linear layer's ``m`` per output unit: its weight scale times
    ``layer_scale``, one float32 product, as the C kernel forms it (no table in flash)."""
    s = layer_scale(q, node)
    return [f32(s * w) for w in q.weight[node.index]]  # a product of two float32s is exact in double


def add_multipliers(q: Quantization, node: Node) -> tuple[float, float]:
    """A residual add's ``(s_a / s_out, s_b / s_out)``."""
    a, b = node.inputs
    return f32(q.activation[a] / q.activation[node.index]), f32(q.activation[b] / q.activation[node.index])


def pool_multiplier(q: Quantization, nodes: list[Node], node: Node) -> float:
    """Global average pooling's ``s_in / (positions * s_out)``."""
    source = nodes[node.inputs[0]]
    positions = source.elements // source.shape[0]
    return f32(q.activation[source.index] / (positions * q.activation[node.index]))


def reciprocal(q: Quantization, index: int) -> float:
    """``1 / s`` of node ``index``'s output (1 for the float32 logits)."""
    return f32(1.0 / q.activation[index])
