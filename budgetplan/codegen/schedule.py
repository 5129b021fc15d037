"""What one training step keeps, when, and where in one static arena (docs/device.md).

A step runs the forward operators in order (times ``0 .. n-1``), the loss (``n``) and the
backward of node ``i`` at time ``2n - i``. Every buffer lives from the step that writes it
to the last that reads it:

* a node's output, until its last reader (a ReLU and a residual add compute in place
  where they are an input's only reader, as the cost model counts elementwise ops);
* the input channels a trained layer keeps for its weight gradient, and the 1-bit mask a
  ReLU keeps for its backward, from the forward to the layer's backward;
* the gradient of a node's output, from its first consumer's backward to its own;
* a trained layer's weight-gradient rows, for its backward only (the update is applied
  there, so no gradient outlives its layer).

Buffers are placed greedily, largest first, at the lowest offset free over their lifetime
(as TFLite Micro's greedy planner does); the arena is the highest end.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from budgetplan.codegen.graph import Node
from budgetplan.codegen.patches import PatchStage

ALIGN = 8  # bytes; every buffer starts on a double-word
FLOAT = 4  # bytes of a gradient, a weight-gradient row and the logits, whatever activations are stored as


@dataclass(frozen=True)
class Trained:
    """What a step trains at one conv or linear layer: ``channels`` input channels of its
    weight (0: none), and its bias or not."""

    channels: int
    bias: bool


@dataclass
class Buffer:
    """One region of the arena: ``name`` as the generated code calls it."""

    name: str
    size: int
    start: int
    end: int
    offset: int = -1


@dataclass(frozen=True)
class Schedule:
    """The buffers of a step and the nodes whose backward runs."""

    buffers: dict[str, Buffer]
    backward: tuple[int, ...]  # nodes whose output gradient is computed, last first
    output_of: dict[int, str]  # node -> buffer holding its output
    arena_bytes: int
    zeroed_by: dict[int, tuple[int, ...]]  # node -> the gradients its backward writes first (zeroed there)


def step_schedule(
    nodes: list[Node],
    trained: dict[int, Trained],
    batch: int,
    activation_bytes: int = 4,
    gradient_bytes: int = FLOAT,
    patch: PatchStage | None = None,
    inplace_depthwise: bool = False,
) -> Schedule:
    """The buffers of a training step of ``nodes`` that trains ``trained`` (node → what);
    activations and the channels kept for the backward take ``activation_bytes`` each,
    gradients passed backward ``gradient_bytes``. With a ``patch`` stage, the operators
    before its split hold their largest region, and the input and the stage's output live
    through every patch. ``inplace_depthwise``: a depthwise convolution whose input nothing
    else reads writes over it, through a one-plane buffer (``t``)."""
    n = len(nodes)
    readers: dict[int, list[int]] = {node.index: [] for node in nodes}
    for node in nodes:
        for source in node.inputs:
            readers[source].append(node.index)
    depends = _depends_on_training(nodes, trained)
    backward = tuple(i for i in reversed(range(n)) if depends[i])
    buffers: dict[str, Buffer] = {}
    output_of: dict[int, str] = {}

    def add(name: str, elements: float, start: int, end: int) -> None:
        buffers[name] = Buffer(name, _aligned(int(elements)), start, end)

    for node in nodes:
        last = max(readers[node.index], default=n)  # the logits are read by the loss
        first = node.inputs[0] if node.inputs else -1
        relu = node.kind in ("relu", "relu6")
        over = _written_over(nodes, node, readers, inplace_depthwise and (patch is None or node.index >= patch.split))
        if over is not None:
            output_of[node.index] = output_of[over]  # in place
            buffers[output_of[over]].end = max(buffers[output_of[over]].end, last)
            if node.kind == "conv":  # a depthwise convolution's one-plane buffer
                add(f"t{node.index}", node.shape[1] * node.shape[2] * activation_bytes, node.index, node.index)
        else:
            output_of[node.index] = f"x{node.index}"
            size = FLOAT if node.index == n - 1 else activation_bytes  # the logits stay float32
            add(output_of[node.index], node.elements * batch * size, node.index, last)
        if relu and depends[first]:
            add(f"m{node.index}", (node.elements * batch + 7) // 8, node.index, 2 * n - node.index)
        what = trained.get(node.index)
        if what and what.channels:
            per_channel = nodes[first].elements // nodes[first].shape[0]
            kept = what.channels * per_channel * batch * activation_bytes
            add(f"s{node.index}", kept, node.index, 2 * n - node.index)
    for i in backward:
        node = nodes[i]
        born = n if not readers[i] else 2 * n - max(readers[i])
        add(f"g{i}", node.elements * batch * gradient_bytes, born, 2 * n - i)
        what = trained.get(i)
        if what and what.channels:
            add(f"r{i}", row_elements(nodes, node) * FLOAT, 2 * n - i, 2 * n - i)
    if patch is not None:
        _patch_buffers(nodes, patch, buffers, output_of, batch * activation_bytes)
    return Schedule(buffers, backward, output_of, place(list(buffers.values())), _zeroed_by(backward, readers))


def _zeroed_by(backward: tuple[int, ...], readers: dict[int, list[int]]) -> dict[int, tuple[int, ...]]:
    """Node -> the gradients its backward writes first: a gradient is born at its last
    reader's backward, the first to run."""
    zeroed_by: dict[int, tuple[int, ...]] = {}
    for i in backward:
        if readers[i]:
            zeroed_by[max(readers[i])] = (*zeroed_by.get(max(readers[i]), ()), i)
    return zeroed_by


def _written_over(nodes: list[Node], node: Node, readers: dict[int, list[int]], depthwise: bool) -> int | None:
    """The input whose buffer ``node`` writes over, or None: a ReLU's or a residual add's
    (as the cost model counts elementwise ops), and with ``depthwise`` a depthwise
    convolution's, where the node is that input's only reader and it is not the network's."""
    if node.kind not in ("relu", "relu6", "add") and not (depthwise and _depthwise(nodes, node)):
        return None
    candidates = node.inputs if node.kind == "add" else node.inputs[:1]
    return next((s for s in candidates if readers[s] == [node.index] and nodes[s].kind != "input"), None)


def _depthwise(nodes: list[Node], node: Node) -> bool:
    """A depthwise convolution whose output is no larger than its input."""
    if node.kind != "conv" or node.groups <= 1:
        return False
    source = nodes[node.inputs[0]]
    return node.groups == node.shape[0] == source.shape[0] and node.elements <= source.elements


def _patch_buffers(
    nodes: list[Node], patch: PatchStage, buffers: dict[str, Buffer], output_of: dict[int, str], bytes_per: int
) -> None:
    whole = {output_of[0], output_of[patch.output]}
    for node in nodes[1 : patch.split]:
        name = output_of[node.index]
        if name not in whole and name == f"x{node.index}":
            buffers[name].size = _aligned(patch.largest(node.index) * node.shape[0] * bytes_per)
    for name in whole:  # written or read by every patch
        buffers[name].start, buffers[name].end = 0, max(buffers[name].end, patch.split - 1)


def _depends_on_training(nodes: list[Node], trained: dict[int, Trained]) -> list[bool]:
    depends = [False] * len(nodes)
    for node in nodes:
        depends[node.index] = node.index in trained or any(depends[i] for i in node.inputs)
    return depends


def row_elements(nodes: list[Node], node: Node) -> int:
    """The elements of one output unit's weight row (a scratch row for the fused update)."""
    source = nodes[node.inputs[0]]
    if node.kind == "linear":
        return source.elements
    return source.shape[0] // node.groups * node.kernel[0] * node.kernel[1]


def _aligned(size: int) -> int:
    return (size + ALIGN - 1) // ALIGN * ALIGN


ORDERS = (  # the orders greedy placement tries; the smallest arena wins
    lambda b: (-b.size, b.start, b.name),  # largest first, as TensorFlow Lite Micro places
    lambda b: (b.start, -b.size, b.name),  # in the order the step writes them
    lambda b: (-(b.end - b.start), -b.size, b.name),  # longest-lived first
)


def place(buffers: list[Buffer]) -> int:
    """Give each buffer an offset free over its lifetime, in each of ``ORDERS``, at the
    lowest free offset and in the tightest gap, and keep the smallest layout; the arena's
    size in bytes.

    >>> a, b, c = Buffer("a", 16, 0, 1), Buffer("b", 8, 1, 2), Buffer("c", 16, 2, 3)
    >>> place([a, b, c]), (a.offset, b.offset, c.offset)
    (24, (0, 16, 0))
    """
    best: tuple[int, list[int]] | None = None
    for order, best_fit in itertools.product(ORDERS, (False, True)):
        size = _place(buffers, order, best_fit)
        if best is None or size < best[0]:
            best = (size, [b.offset for b in buffers])
    assert best is not None
    for buffer, offset in zip(buffers, best[1], strict=True):
        buffer.offset = offset
    return best[0]


def _place(buffers: list[Buffer], order: Callable[[Buffer], Any], best_fit: bool = False) -> int:
    """Place in ``order`` at the lowest free offset, or with ``best_fit`` in the tightest
    gap that holds the buffer (the top when none does)."""
    placed: list[Buffer] = []
    for buffer in sorted(buffers, key=order):
        busy = sorted((b.offset, b.offset + b.size) for b in placed if b.start <= buffer.end and buffer.start <= b.end)
        gaps, offset = [], 0
        for low, high in busy:
            if low - offset >= buffer.size:
                gaps.append((low - offset, offset))
            offset = max(offset, high)
        if not gaps:
            buffer.offset = offset
        else:
            buffer.offset = min(gaps)[1] if best_fit else gaps[0][1]
        placed.append(buffer)
    return max((b.offset + b.size for b in buffers), default=0)
