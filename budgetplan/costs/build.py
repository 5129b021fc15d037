"""Per-layer memory and MAC costs of a model, in forward order (docs/cost-model.md).

``layer_costs`` runs the model once (``budgetplan.costs.trace``) and turns the recorded
dataflow into a ``CostTable``. Everything here after the trace is pure Python.

What is counted, per sample:

* per *selected input channel* of a plannable layer (Conv1d/2d/3d, Linear): the weight
  elements copied to SRAM (``C_out/g · k``), the input elements saved for its weight
  gradient (``H·W``, or tokens for Linear) and the weight-gradient MACs;
* for the backward path, per layer: the elements kept by the ops that follow it up to
  the next plannable layer — a 1-bit-able mask for ReLU-family ops and dropout
  (``mask_elements``), a full activation for ops whose gradient needs one
  (sigmoid, hardswish, SiLU, products of two activations, max-pool indices, norms other
  than a frozen BatchNorm; ``path_activation_elements``);
* working buffers: ``forward_live_elements`` is the largest number of activation
  elements alive at once while the layer's ops run, from exact tensor liveness (a
  residual input kept for a later add counts); ``backward_live_elements`` is the
  largest gradient pair (input + output) among those ops.

Executor model: each op's inputs and output are live; elementwise ops (BatchNorm,
activations, adds) write into their input when nothing reads it later, as fused
conv-BN-ReLU kernels do; with ``executor: inplace-dw`` a depthwise conv also writes over
its input. Frozen BatchNorm folds into the conv before it: its bias is offered as that
conv's bias (``bias_param``), as in Lin et al. 2022.

A module called several times (shared weights) is one layer: its activation and MAC
costs are summed over the calls and it sits in the order at its first call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from math import prod

import torch
from torch import nn

from budgetplan.costs.dataflow import Op, Trace
from budgetplan.costs.liveness import live_elements
from budgetplan.costs.ops import ATTENTION_OPS, IN_PLACE_OPS, KNOWN_OPS, LAYER_FUNCS, VIEW_OPS, kept_for_backward
from budgetplan.costs.patches import PatchOption, patch_options
from budgetplan.costs.table import CostTable, LayerCost, UncostedModule
from budgetplan.costs.trace import trace_model
from budgetplan.device.profile import DeviceProfile, Executor, load_device


def _is_layer_call(op: Op, trace: Trace) -> bool:
    return op.func in LAYER_FUNCS and op.layer in trace.plannable and bool(op.inputs)


@dataclass
class _Segment:
    """The ops from one layer's call up to the next layer's: what they keep and hold."""

    calls: list[Op] = field(default_factory=list)
    live: int = 0  # largest working buffer (activation elements alive at once)
    grad: int = 0  # largest gradient pair (input + output) of one op
    mask: int = 0
    path: int = 0
    reused: set[int] = field(default_factory=set)  # indices of calls whose input is kept anyway


def costs_from_trace(trace: Trace, model_name: str, executor: Executor | str = Executor.LAYER) -> CostTable:
    """Turn a recorded forward pass into a per-layer cost table (pure; no torch)."""
    executor = Executor.from_str(executor)
    segments, segment_of = _segments(trace)
    inplace = _in_place_ops(trace, segments, executor)
    live = live_elements(trace, inplace)
    unknown: set[str] = set()
    order = {name: i for i, name in enumerate(segments)}
    kept_in: dict[int, str] = {}  # storage -> the last segment whose ops keep it
    attention_out = {trace.storage_of(op.outputs[0]) for op in trace.ops if op.func in ATTENTION_OPS and op.outputs}
    for op, name in zip(trace.ops, segment_of, strict=True):
        if name is None:
            continue
        segment = segments[name]
        segment.live = max(segment.live, live[op.index])
        if op.func not in VIEW_OPS:
            segment.grad = max(segment.grad, sum(trace.elements(t) for t in op.inputs + op.outputs))
        if _is_layer_call(op, trace):
            # a layer reading attention's output keeps it whole, shared with the attention
            # (the lean backward does the same), so it is paid once, on this layer's path
            storage = trace.storage_of(op.inputs[0])
            if storage in attention_out and trace.plannable[op.layer].type == "Linear":
                segment.reused.add(op.index)
                kept_in[storage] = name
            continue
        kept = kept_for_backward(op, trace)
        segment.mask += kept.mask
        segment.path += kept.aux
        for t in kept.tensors:
            storage = trace.storage_of(t)
            # kept while any op that saves it is on the gradient path: the last one decides
            if storage not in kept_in or order[kept_in[storage]] < order[name]:
                kept_in[storage] = name
        if op.func not in KNOWN_OPS:
            unknown.add(op.func)
    for storage, name in kept_in.items():
        segments[name].path += max(1, trace.storage_elements.get(storage, 0) // trace.batch)
    layers = [_layer_cost(i, trace, segment) for i, segment in enumerate(segments.values())]
    uncosted, other = _uncovered(trace, layers)
    patches: tuple[PatchOption, ...] = ()
    if executor.inplace_depthwise:  # MCU runtimes: also what a patch stage would save
        starts = [segment.calls[0].index for segment in segments.values()]
        patches = patch_options(trace, starts, [layer.forward_live_elements for layer in layers], inplace)
    first = trace.shapes[trace.input_ids[0]] if trace.input_ids else ()
    return CostTable(
        model=model_name,
        input_shape=tuple(first[1:]),
        executor=executor,
        layers=tuple(layers),
        other_param_elements=other,
        uncosted=tuple(uncosted),
        unknown_ops=tuple(sorted(unknown)),
        patch_options=patches,
    )


def _segments(trace: Trace) -> tuple[dict[str, _Segment], list[str | None]]:
    """The layers in the order of their first call, and the layer each op runs with."""
    segments: dict[str, _Segment] = {}
    segment_of: list[str | None] = []
    current: str | None = None
    for op in trace.ops:
        if _is_layer_call(op, trace):
            current = op.layer
            segments.setdefault(current, _Segment()).calls.append(op)
        segment_of.append(current)
    if segments:  # ops before the first layer run with it
        first = next(iter(segments))
        segment_of = [s if s is not None else first for s in segment_of]
    return segments, segment_of


def _in_place_ops(trace: Trace, segments: dict[str, _Segment], executor: Executor) -> set[int]:
    """Ops that may write over a dying input: elementwise ones, and depthwise convs under
    ``executor: inplace-dw``."""
    ops = {op.index for op in trace.ops if op.func in IN_PLACE_OPS}
    if executor.inplace_depthwise:
        for name, segment in segments.items():
            info = trace.plannable[name]
            if info.type != "Linear" and info.groups == info.in_channels > 1:
                ops |= {op.index for op in segment.calls}
    return ops


def _layer_cost(index: int, trace: Trace, segment: _Segment) -> LayerCost:
    ops = segment.calls
    info = trace.plannable[ops[0].layer]
    in_shape = trace.shapes[ops[0].inputs[0]]
    out_shape = trace.shapes[ops[0].outputs[0]]
    in_hw: tuple[int, ...] = ()
    out_hw: tuple[int, ...] = ()
    if info.type == "Linear":
        kind = "linear"
        # positions per sample, wherever the batch dimension sits (attention runs (L, N, E))
        out_positions = [max(1, trace.elements(op.inputs[0]) // info.in_channels) for op in ops]
        in_positions = [0 if op.index in segment.reused else p for op, p in zip(ops, out_positions, strict=True)]
        k, per_ch_weight = 1, info.out_channels
    else:
        if info.groups == 1:
            kind = "conv"
        elif info.groups == info.in_channels:
            kind = "depthwise"
        else:
            kind = "grouped"
        in_hw, out_hw = tuple(in_shape[2:]), tuple(out_shape[2:])
        in_positions = [prod(trace.shapes[op.inputs[0]][2:]) for op in ops]
        out_positions = [prod(trace.shapes[op.outputs[0]][2:]) for op in ops]
        k = prod(info.kernel_size)
        per_ch_weight = info.out_channels // info.groups * k
    forward_macs = sum(info.out_channels * (info.in_channels // info.groups) * k * p for p in out_positions)
    bias_param = info.bias_param if info.has_bias else _folded_bias(trace, ops)
    return LayerCost(
        **vars(info.shape()),
        kind=kind,
        index=index,
        input_hw=in_hw,
        output_hw=out_hw,
        calls=len(ops),
        forward_macs=forward_macs,
        weight_elements_per_channel=per_ch_weight,
        activation_elements_per_channel=sum(in_positions),
        weight_grad_macs_per_channel=per_ch_weight * sum(out_positions),
        bias_elements=info.out_channels if bias_param else 0,
        bias_param=bias_param,
        mask_elements=segment.mask,
        path_activation_elements=segment.path,
        input_grad_macs=forward_macs,
        forward_live_elements=segment.live,
        backward_live_elements=segment.grad,
    )


def _folded_bias(trace: Trace, ops: list[Op]) -> str | None:
    """The bias of a BatchNorm that reads this layer's output directly, if any."""
    out = ops[0].outputs[0]
    for op in trace.ops[ops[0].index + 1 :]:
        if op.func == "batch_norm" and op.inputs and op.inputs[0] == out:
            return f"{op.module}.bias" if trace.norms.get(op.module) else None
        if out in op.inputs:
            return None
    return None


def _uncovered(trace: Trace, layers: list[LayerCost]) -> tuple[list[UncostedModule], int]:
    """Modules left out of planning, and parameter elements outside the layers."""
    costed = {layer.name for layer in layers}
    uncosted = [
        UncostedModule(name, info.type, "never runs a conv or linear op in the forward pass")
        for name, info in trace.plannable.items()
        if name not in costed
    ]
    covered = {trace.plannable[layer.name].weight_param for layer in layers}
    covered |= {layer.bias_param for layer in layers if layer.bias_param}
    folded_norms = {p.rsplit(".", 1)[0] for p in covered if p.rsplit(".", 1)[0] in trace.norms}
    other = 0
    reported = {u.name for u in uncosted}
    for param, (module, mtype, numel) in trace.parameters.items():
        if param in covered or module in folded_norms:
            continue
        other += numel
        if module in trace.norms or module in reported or module in costed:
            continue
        reported.add(module)
        uncosted.append(
            UncostedModule(module or param, mtype, "holds parameters the cost model does not plan; kept frozen")
        )
    return uncosted, other


def layer_costs(
    model: nn.Module,
    example_input: torch.Tensor | Sequence[torch.Tensor],
    device: str | DeviceProfile | None = None,
    model_name: str | None = None,
) -> CostTable:
    """Trace ``model`` on ``example_input`` into a per-layer ``CostTable``.

    ``device`` (a name, a path or a profile) sets the executor model of the working
    buffers; without one, each op's input and output are live (``layer``).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
        ...                     nn.Linear(8 * 4 * 4, 10))
        >>> table = layer_costs(net, torch.zeros(1, 3, 4, 4))
        >>> [(layer.name, layer.kind, layer.forward_macs) for layer in table.layers]
        [('0', 'conv', 3456), ('3', 'linear', 1280)]
        >>> table.layers[0].activation_elements_per_channel, table.layers[0].mask_elements
        (16, 128)
    """
    executor = load_device(device).executor if device is not None else Executor.LAYER
    trace = trace_model(model, example_input)
    return costs_from_trace(trace, model_name or type(model).__name__, executor)
