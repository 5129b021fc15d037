"""The patch stage as the C library runs it: the frozen leading operators computed one
spatial patch at a time (docs/cost-model.md, "Patch-based execution"; MCUNetV2, Lin et
al., NeurIPS 2021).

The regions are the cost model's (``budgetplan.costs.patches``), taken over the library's
own graph: each patch of the ``grid × grid`` grid computes, for every operator before the
split, the rows and columns its tile of the split's input needs, halo included. Every
operator there works in a buffer of its largest region; the network input and the
prefix's output are held whole, and the output is filled tile by tile.
"""

from __future__ import annotations

from dataclasses import dataclass

from budgetplan.codegen.graph import Node
from budgetplan.costs.dataflow import Window
from budgetplan.costs.patches import Interval, needed, tile
from budgetplan.errors import PlanError

Region = tuple[Interval, Interval]  # rows, columns of the whole tensor


@dataclass(frozen=True)
class PatchStage:
    """Nodes ``1 .. split-1`` run in ``grid²`` patches; ``output`` is the one read after them."""

    split: int
    grid: int
    output: int
    regions: tuple[dict[int, Region], ...]  # per patch (row-major): node -> the region it computes

    def largest(self, index: int) -> int:
        """The most positions (rows × columns) node ``index`` computes in any patch."""
        return max((r[0][1] - r[0][0]) * (r[1][1] - r[1][0]) for r in (p[index] for p in self.regions))


def patch_stage(nodes: list[Node], split: int, grid: int) -> PatchStage:
    """The patch stage of the operators before node ``split`` on a ``grid × grid`` grid."""
    prefix = nodes[1:split]
    unsupported = [n for n in prefix if n.kind not in ("conv", "relu", "relu6")]
    if unsupported:
        raise PlanError(f"the C library's patch stage runs convolutions and ReLUs, not {unsupported[0].kind}")
    outputs = {s for n in nodes[split:] for s in n.inputs if 0 < s < split}
    if len(outputs) != 1 or any(s == 0 for n in nodes[split:] for s in n.inputs):
        raise PlanError("the C library's patch stage needs one tensor read after it, and not the input")
    output = outputs.pop()
    height, width = nodes[output].shape[1:]
    regions = []
    for i in range(grid):
        rows = _intervals(nodes, prefix, output, tile(height, grid, i), 0)
        for j in range(grid):
            cols = _intervals(nodes, prefix, output, tile(width, grid, j), 1)
            regions.append({n.index: (rows[n.index], cols[n.index]) for n in [nodes[0], *prefix]})
    return PatchStage(split, grid, output, tuple(regions))


def _intervals(nodes: list[Node], prefix: list[Node], output: int, part: Interval, dim: int) -> dict[int, Interval]:
    """What each node computes along ``dim`` for the output's ``part``, back through the prefix."""
    need = {output: part}
    for node in reversed(prefix):
        out = need.setdefault(node.index, (0, node.shape[1 + dim]))  # an output nothing reads: whole
        source = node.inputs[0]
        window = Window(node.kernel, node.stride, node.padding) if node.kind == "conv" else None
        read = needed(window, dim, out, nodes[source].shape[1 + dim])
        before = need.get(source)
        need[source] = read if before is None else (min(before[0], read[0]), max(before[1], read[1]))
    return need
