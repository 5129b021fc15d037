"""Patch-based execution of a frozen prefix: which regions each tensor holds, and what it
costs (docs/cost-model.md, "Patch-based execution").

The leading ops of a network, up to a split, run on an ``n × n`` grid of spatial patches
of the split's output, one patch at a time, as in MCUNetV2 (Lin et al., NeurIPS 2021).
Each patch computes, for every tensor of the prefix, only the rows and columns its part of
the output depends on (the halo included); the split's outputs are filled patch by patch
and held whole. Peak memory is one patch's working set plus the split's outputs (and the
network input, which stays in memory); the price is the halo, computed more than once.

Everything here is pure: it reads a ``Trace``. ``budgetplan.training.patches`` runs a
model this way with torch, from the same regions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from budgetplan.costs.dataflow import Op, Trace, Window
from budgetplan.costs.liveness import live_elements
from budgetplan.costs.ops import LAYER_FUNCS
from budgetplan.costs.table import PatchOption

GRIDS = (2, 3, 4, 6, 8)  # patch grids the planner considers

# ops that compute each output position from the same position of their inputs (dropout
# is left out: patches sharing a halo would draw different masks for it)
POINTWISE_OPS = {
    "relu", "relu6", "hardtanh", "leaky_relu", "threshold", "hardsigmoid", "clamp", "clip",
    "sigmoid", "tanh", "exp", "hardswish", "silu", "gelu", "elu", "selu", "celu", "mish",
    "softplus", "log", "sqrt", "pow", "add", "sub", "mul", "div", "neg", "batch_norm",
    "clone", "contiguous", "detach", "to", "float",
}  # fmt: skip

Interval = tuple[int, int]  # [start, stop) along one spatial dimension


@dataclass(frozen=True)
class PatchRegions:
    """The rows (per patch row) and columns (per patch column) each tensor of a prefix
    holds: tensor ``t`` of patch ``(i, j)`` holds ``rows[i][t] × cols[j][t]``."""

    end: int  # the prefix is ops[:end]
    grid: int
    outputs: tuple[int, ...]  # tensors of the prefix read after it: filled patch by patch
    size: tuple[int, int]  # height and width of the outputs
    rows: tuple[dict[int, Interval], ...]
    cols: tuple[dict[int, Interval], ...]

    def region(self, tensor: int, i: int, j: int) -> tuple[Interval, Interval]:
        return self.rows[i][tensor], self.cols[j][tensor]

    def tile(self, i: int, j: int) -> tuple[Interval, Interval]:
        """The part of the outputs that patch ``(i, j)`` writes."""
        return tile(self.size[0], self.grid, i), tile(self.size[1], self.grid, j)


def tile(size: int, grid: int, index: int) -> Interval:
    """Patch ``index``'s part of ``size`` positions on a grid of ``grid``."""
    step = math.ceil(size / grid)
    return (min(size, index * step), min(size, (index + 1) * step))


def _spatial(shape: Sequence[int]) -> tuple[int, int] | None:
    return (shape[2], shape[3]) if len(shape) == 4 else None


def _is_local(op: Op, trace: Trace) -> bool:
    """Whether each output position of ``op`` depends on a bounded neighbourhood of the
    same position of its inputs, so that a patch can compute it."""
    shapes = [_spatial(trace.shapes[t]) for t in op.inputs + op.outputs]
    if any(s is None for s in shapes) or not op.inputs:
        return False
    if op.window is not None:  # a conv, pool or pad the trace could read
        return len(op.inputs) == 1 and len(op.outputs) == 1
    return op.func in POINTWISE_OPS and len(set(shapes)) == 1


def local_end(trace: Trace) -> int:
    """The number of leading ops that patches can run: up to the first op that is not
    local (a global pooling, a flatten, a Linear)."""
    for op in trace.ops:
        if not _is_local(op, trace):
            return op.index
    return len(trace.ops)


def prefix_outputs(trace: Trace, end: int) -> tuple[int, ...]:
    """Tensors made by ``ops[:end]`` (or given to the model) that later ops or the
    model's outputs read."""
    made = set(trace.input_ids)
    for op in trace.ops[:end]:
        made.update(op.outputs)
    read_later = {t for op in trace.ops[end:] for t in op.inputs} | set(trace.output_ids)
    return tuple(sorted(made & read_later))


def reach(window: Window, dim: int, out: Interval) -> Interval:
    """The input positions along ``dim`` that outputs ``out`` read, padding included
    (below 0 or past the end where the window reaches into it)."""
    k, s, p, d = window.kernel[dim], window.stride[dim], window.pad_before[dim], window.dilation[dim]
    return (out[0] * s - p, (out[1] - 1) * s - p + d * (k - 1) + 1)


def needed(window: Window | None, dim: int, out: Interval, size: int) -> Interval:
    """The input positions along ``dim`` that outputs ``out`` read, within ``[0, size)``."""
    if window is None:
        return out
    start, stop = reach(window, dim, out)
    return (max(0, start), min(size, stop))


def _intervals(trace: Trace, end: int, outputs: Iterable[int], grid: int, index: int, dim: int) -> dict[int, Interval]:
    """Positions along ``dim`` that each tensor of ``ops[:end]`` holds for patch row (or
    column) ``index``: its tile of the outputs, and back through the prefix what they read."""
    need: dict[int, Interval] = {}
    shapes = trace.shapes
    for t in outputs:
        need[t] = tile(shapes[t][2 + dim], grid, index)
    for op in reversed(trace.ops[:end]):
        held = [need[t] for t in op.outputs if t in need]
        if not held:  # an output nothing reads: computed whole
            out: Interval = (0, shapes[op.outputs[0]][2 + dim])
        elif len(held) == 1:
            out = held[0]
        else:
            out = (min(h[0] for h in held), max(h[1] for h in held))
        for t in op.inputs:
            read = needed(op.window, dim, out, shapes[t][2 + dim])
            before = need.get(t)
            need[t] = read if before is None else (min(before[0], read[0]), max(before[1], read[1]))
        for t in op.outputs:
            need.setdefault(t, out)
    return need


def patch_regions(trace: Trace, end: int, grid: int, limit: int | None = None) -> PatchRegions | None:
    """The regions of every tensor of ``ops[:end]`` on a ``grid × grid`` patch grid, or
    ``None`` when patches cannot run that prefix (an op that is not local, outputs of
    different sizes, a grid finer than the outputs). ``limit`` is ``local_end(trace)``
    when known."""
    if end <= 0 or end > (local_end(trace) if limit is None else limit):
        return None
    outputs = prefix_outputs(trace, end)
    sizes = {_spatial(trace.shapes[t]) for t in outputs}
    if len(sizes) != 1 or None in sizes:
        return None
    (height, width) = next(iter(sizes))  # type: ignore[misc]
    if grid < 1 or grid > min(height, width) or set(outputs) & set(trace.input_ids):
        return None
    rows = tuple(_intervals(trace, end, outputs, grid, i, 0) for i in range(grid))
    if _symmetric(trace, end):
        cols = rows  # the same along both dimensions
    else:
        cols = tuple(_intervals(trace, end, outputs, grid, j, 1) for j in range(grid))
    return PatchRegions(end, grid, outputs, (height, width), rows, cols)


def largest_regions(regions: PatchRegions) -> dict[int, tuple[int, int]]:
    """Per tensor of the prefix, the most rows and columns any patch holds: a patch's
    working set is bounded by its tensors at these sizes."""
    return {
        t: (max(r[t][1] - r[t][0] for r in regions.rows), max(c[t][1] - c[t][0] for c in regions.cols))
        for t in regions.rows[0]
    }


def _symmetric(trace: Trace, end: int) -> bool:
    """Whether rows and columns of ``ops[:end]`` behave alike: every tensor square and
    every window the same along both dimensions."""
    for op in trace.ops[:end]:
        if any(trace.shapes[t][2] != trace.shapes[t][3] for t in op.inputs + op.outputs):
            return False
        w = op.window
        if w is not None and any(v[0] != v[1] for v in (w.kernel, w.stride, w.pad_before, w.dilation)):
            return False
    return True


def _patch_live(trace: Trace, regions: PatchRegions, inplace_ops: set[int]) -> int:
    """The largest working set of a patch: every tensor of the prefix at its largest
    region; the outputs and the input, held whole, are counted apart."""
    held_whole = set(regions.outputs) | set(trace.input_ids)
    shapes = dict(trace.shapes)
    for t, (height, width) in largest_regions(regions).items():
        batch, channels = trace.shapes[t][:2]
        shapes[t] = (batch, 1, 1, 1) if t in held_whole else (batch, channels, height, width)
    prefix = dataclasses.replace(trace, ops=trace.ops[: regions.end], shapes=shapes, output_ids=regions.outputs)
    return max(live_elements(prefix, inplace_ops), default=0)


def _extra_macs(trace: Trace, regions: PatchRegions, macs_per_position: dict[int, int]) -> int:
    """MACs computed more than once: positions of each conv's output over all patches,
    less the output's own positions."""
    extra = 0
    for op_index, per_position in macs_per_position.items():
        if op_index >= regions.end:
            continue
        t = trace.ops[op_index].outputs[0]
        rows = sum(r[t][1] - r[t][0] for r in regions.rows)
        cols = sum(c[t][1] - c[t][0] for c in regions.cols)
        height, width = trace.shapes[t][2:]
        extra += (rows * cols - height * width) * per_position
    return extra


def patch_options(
    trace: Trace,
    layer_starts: Sequence[int],
    layer_live: Sequence[int],
    inplace_ops: set[int],
    grids: Sequence[int] = GRIDS,
) -> tuple[PatchOption, ...]:
    """Every way to run a prefix of whole layers in patches that saves memory and is not
    dominated by another (one that allows as many trained layers, with no more memory
    or MACs).

    ``layer_starts[s]`` is the op index of layer ``s``'s first call and ``layer_live[s]``
    its working buffer when run whole; a split at layer ``s`` runs
    ``ops[:layer_starts[s]]`` in patches.
    """
    limit = local_end(trace)
    macs = {
        op.index: _macs_per_position(op, trace)
        for op in trace.ops[:limit]
        if op.func in LAYER_FUNCS and op.layer in trace.plannable
    }
    found: list[PatchOption] = []
    for split, end in enumerate(layer_starts):
        if split == 0 or end > limit:
            continue
        unpatched = max(layer_live[:split])
        whole = sum(trace.elements(t) for t in set(prefix_outputs(trace, end)) | set(trace.input_ids))
        if whole >= unpatched:  # what is held whole already needs as much as running whole
            continue
        for grid in grids:
            regions = patch_regions(trace, end, grid, limit)
            if regions is None:
                continue
            live = _patch_live(trace, regions, inplace_ops) + whole
            if live < unpatched:
                found.append(PatchOption(split, grid, live, _extra_macs(trace, regions, macs)))

    def key(o: PatchOption) -> tuple[int, int, int]:
        return (o.split, o.live_elements, o.extra_macs)

    def dominates(a: PatchOption, b: PatchOption) -> bool:
        return key(a) != key(b) and all(x <= y for x, y in zip(key(a), key(b), strict=True))

    # of options equal in all three, the coarsest grid stays
    kept = [o for o in found if not any(dominates(other, o) for other in found)]
    return tuple(o for n, o in enumerate(kept) if all(key(o) != key(p) for p in kept[:n]))


def _macs_per_position(op: Op, trace: Trace) -> int:
    info = trace.plannable[op.layer]
    return info.out_channels * (info.in_channels // info.groups) * math.prod(info.kernel_size)
