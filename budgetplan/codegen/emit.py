"""The C text of a model's training step: ``bp_model.h`` and ``bp_model.c`` (docs/device.md).

Frozen parameters are ``const`` arrays (flash on a microcontroller); the weights and
biases a plan trains are initialised arrays (SRAM). Every activation, kept input
channel, ReLU mask and gradient is a fixed offset into one static arena, as
``budgetplan.codegen.schedule`` laid it out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from budgetplan.codegen.graph import Node
from budgetplan.codegen.schedule import Schedule, Trained, row_elements

PAINT = 0xA5  # the arena is filled with this byte to find the highest byte a step wrote


@dataclass(frozen=True)
class Parameters:
    """A conv or linear layer's weight and bias values (flat, float32) and its name."""

    name: str
    weight: Sequence[float]
    bias: Sequence[float] | None


@dataclass(frozen=True)
class StepCode:
    """Everything the step's C text is made from."""

    nodes: list[Node]
    schedule: Schedule
    parameters: dict[int, Parameters]
    trained: dict[int, Trained]
    selection: dict[int, list[int]]
    batch: int
    clip_ratio: float
    classifier: int  # the node whose weight is never clipped
    title: str


def header(code: StepCode) -> str:
    """``bp_model.h``: the sizes and the functions a program calls."""
    first, last = code.nodes[0], code.nodes[-1]
    return "\n".join(
        [
            f"/* {code.title} */",
            "#ifndef BP_MODEL_H",
            "#define BP_MODEL_H",
            "#include <stdint.h>",
            f"#define BP_BATCH {code.batch}",
            f"#define BP_INPUT_ELEMENTS {first.elements}  /* per sample */",
            f"#define BP_CLASSES {last.elements}",
            f"#define BP_ARENA_BYTES {code.schedule.arena_bytes}",
            f"#define BP_PARAMS {2 * len(code.parameters)}",
            f"#define BP_TRAINED_LAYERS {sum(1 for t in code.trained.values() if t.channels)}",
            "float *bp_input(void);  /* write BP_BATCH samples here before each step */",
            "const float *bp_logits(void);  /* valid after bp_forward */",
            "void bp_forward(void);",
            "float bp_train_step(const int *labels, float lr);  /* forward, loss, sparse backward, update */",
            "void bp_set_channels(int layer, const int *channels);  /* layer < BP_TRAINED_LAYERS */",
            "void bp_redraw(uint32_t seed);  /* every trained layer's channels drawn anew, uniformly */",
            "void bp_paint_arena(void);",
            "uint32_t bp_arena_high_water(void);  /* bytes of the arena written since bp_paint_arena */",
            "const char *bp_param_name(int i);",
            "const float *bp_param(int i);  /* NULL where the layer has no bias */",
            "int bp_param_size(int i);",
            "#endif",
            "",
        ]
    )


def source(code: StepCode) -> str:
    """``bp_model.c``: parameters, arena, forward, step."""
    parts = [f"/* {code.title} */", '#include "bp_model.h"', '#include "bp_runtime.h"', "#include <string.h>", ""]
    parts += [_parameter_arrays(code), _arena(code), _forward(code), _backward(code), _accessors(code)]
    return "\n".join(parts)


def _floats(values: Sequence[float]) -> str:
    return "{" + ",".join(f"{float(v).hex()}f" for v in values) + "}"  # exact: C99 hexadecimal floats


def _parameter_arrays(code: StepCode) -> str:
    lines = []
    for index, params in code.parameters.items():
        what = code.trained.get(index, Trained(0, False))
        weight_kind = "static float" if what.channels else "static const float"
        lines.append(f"/* {params.name} */")
        lines.append(f"{weight_kind} W{index}[{len(params.weight)}] = {_floats(params.weight)};")
        if params.bias is not None:
            bias_kind = "static float" if what.bias else "static const float"
            lines.append(f"{bias_kind} B{index}[{len(params.bias)}] = {_floats(params.bias)};")
    for index, channels in code.selection.items():
        lines.append(f"static int SEL{index}[{len(channels)}] = {{{', '.join(map(str, channels))}}};")
    return "\n".join(lines) + "\n"


def _arena(code: StepCode) -> str:
    lines = [f"static uint8_t bp_arena[{max(8, code.schedule.arena_bytes)}] __attribute__((aligned(8)));"]
    for buffer in sorted(code.schedule.buffers.values(), key=lambda b: b.name):
        kind = "uint8_t" if buffer.name.startswith("m") else "float"
        lines.append(f"#define {buffer.name.upper()} (({kind} *)(bp_arena + {buffer.offset}))  /* {buffer.size} B */")
    lines.append("")
    for node in code.nodes:
        if node.kind == "conv":
            lines.append(f"static const bp_conv C{node.index} = {_conv_fields(code, node)};")
    return "\n".join(lines) + "\n"


def _conv_fields(code: StepCode, node: Node) -> str:
    c, h, w = code.nodes[node.inputs[0]].shape
    o, oh, ow = node.shape
    fields = (code.batch, c, h, w, o, oh, ow, *node.kernel, *node.stride, *node.padding, node.groups)
    return "{" + ", ".join(map(str, fields)) + "}"


def _x(code: StepCode, index: int) -> str:
    return code.schedule.output_of[index].upper()


def _forward(code: StepCode) -> str:
    lines = ["void bp_forward(void) {"]
    for node in code.nodes[1:]:
        lines += [f"    {line}" for line in _forward_node(code, node)]
    return "\n".join([*lines, "}", ""])


def _forward_node(code: StepCode, node: Node) -> list[str]:
    x, y, b, n = _x(code, node.inputs[0]), _x(code, node.index), code.batch, node.elements * code.batch
    params = code.parameters.get(node.index)
    bias = f"B{node.index}" if params is not None and params.bias is not None else "NULL"
    source = code.nodes[node.inputs[0]]
    keep = code.selection.get(node.index)
    if node.kind == "conv":
        lines = [f"bp_conv2d(&C{node.index}, {x}, W{node.index}, {bias}, {y});"]
        positions = source.elements // source.shape[0]
        gather = f"bp_gather_channels({x}, {b}, {source.shape[0]}, {positions}, SEL{node.index}, {len(keep or [])}, "
        return [*lines, f"{gather}S{node.index});"] if keep else lines
    if node.kind == "linear":
        lines = [f"bp_linear({b}, {source.elements}, {node.elements}, {x}, W{node.index}, {bias}, {y});"]
        gather = f"bp_gather_channels({x}, {b}, {source.elements}, 1, SEL{node.index}, {len(keep or [])}, "
        return [*lines, f"{gather}S{node.index});"] if keep else lines
    if node.kind in ("relu", "relu6"):
        cap = "6.0f" if node.kind == "relu6" else "0.0f"
        mask = f"M{node.index}"
        lines = [f"bp_relu({x}, {n}, {cap}, {y});"]
        return [*lines, f"bp_relu_mask({y}, {n}, {cap}, {mask});"] if mask.lower() in code.schedule.buffers else lines
    if node.kind == "add":
        return [f"bp_add({x}, {_x(code, node.inputs[1])}, {n}, {y});"]
    if node.kind == "avgpool":
        return [f"bp_avgpool({x}, {b}, {source.shape[0]}, {source.elements // source.shape[0]}, {y});"]
    raise ValueError(f"no forward for {node.kind}")


def _backward(code: StepCode) -> str:
    last = code.nodes[-1]
    lines = [
        "float bp_train_step(const int *labels, float lr) {",
        "    bp_forward();",
        f"    float loss = bp_cross_entropy({_x(code, last.index)}, labels, {code.batch}, {last.elements}, "
        f"G{last.index});",
    ]
    for index in code.schedule.backward:
        node = code.nodes[index]
        for source in code.schedule.zeroed_by.get(index, ()):
            lines.append(f"    memset(G{source}, 0, {code.schedule.buffers[f'g{source}'].size});")
        lines += [f"    {line}" for line in _backward_node(code, node)]
    return "\n".join([*lines, "    return loss;", "}", ""])


def _backward_node(code: StepCode, node: Node) -> list[str]:
    i, b, n = node.index, code.batch, node.elements * code.batch
    grads = [s for s in node.inputs if s in code.schedule.backward]
    source = code.nodes[node.inputs[0]] if node.inputs else None
    if node.kind in ("relu", "relu6"):
        return [f"bp_relu_grad(G{i}, M{i}, {n}, G{s});" for s in grads]
    if node.kind == "add":
        return [f"bp_accumulate(G{i}, {n}, G{s});" for s in node.inputs if s in grads]
    if node.kind == "avgpool" and source is not None:
        positions = source.elements // source.shape[0]
        return [f"bp_avgpool_grad(G{i}, {b}, {source.shape[0]}, {positions}, G{s});" for s in grads]
    if node.kind in ("conv", "linear") and source is not None:
        return _layer_backward(code, node, source, grads)
    return []


def _layer_backward(code: StepCode, node: Node, source: Node, grads: list[int]) -> list[str]:
    i, b = node.index, code.batch
    conv = node.kind == "conv"
    lines = [
        f"bp_conv2d_grad_input(&C{i}, G{i}, W{i}, G{s});"
        if conv
        else f"bp_linear_grad_input({b}, {source.elements}, {node.elements}, G{i}, W{i}, G{s});"
        for s in grads
    ]
    what = code.trained.get(i, Trained(0, False))
    positions = node.elements // node.shape[0]
    if what.bias:
        lines.append(f"bp_update_bias(G{i}, {b}, {node.shape[0]}, {positions}, lr, B{i});")
    if what.channels:
        k, ratio = len(code.selection[i]), 0.0 if i == code.classifier else code.clip_ratio
        row = row_elements(code.nodes, node)
        grad_row = (
            f"bp_conv2d_grad_row(&C{i}, G{i}, S{i}, SEL{i}, {k}, o, R{i});"
            if conv
            else f"bp_linear_grad_row({b}, {source.elements}, {node.elements}, G{i}, S{i}, SEL{i}, {k}, o, R{i});"
        )
        lines += [
            f"for (int o = 0; o < {node.shape[0]}; o++) {{",
            f"    {grad_row}",
            f"    bp_update_row(W{i} + (size_t)o * {row}, R{i}, {row}, lr, {ratio!r}f);",
            "}",
        ]
    return lines


def _accessors(code: StepCode) -> str:
    layers = [i for i, t in code.trained.items() if t.channels]
    names, pointers, sizes = [], [], []
    for index, params in code.parameters.items():
        names += [f'"{params.name}.weight"', f'"{params.name}.bias"']
        pointers += [f"W{index}", f"B{index}" if params.bias is not None else "NULL"]
        sizes += [str(len(params.weight)), str(len(params.bias) if params.bias is not None else 0)]
    totals = [str(code.nodes[code.nodes[i].inputs[0]].shape[0]) for i in layers]
    counts = [str(len(code.selection[i])) for i in layers]
    return "\n".join(
        [
            f"static const char *const NAMES[] = {{{', '.join(names)}}};",
            f"static const float *const PARAMS[] = {{{', '.join(pointers)}}};",
            f"static const int SIZES[] = {{{', '.join(sizes)}}};",
            f"static int *const SELECTIONS[] = {{{', '.join(f'SEL{i}' for i in layers) or 'NULL'}}};",
            f"static const int KEPT[] = {{{', '.join(counts) or '0'}}};",
            f"static const int TOTAL[] = {{{', '.join(totals) or '0'}}};",
            "float *bp_input(void) { return X0; }",
            f"const float *bp_logits(void) {{ return {_x(code, code.nodes[-1].index)}; }}",
            "const char *bp_param_name(int i) { return NAMES[i]; }",
            "const float *bp_param(int i) { return PARAMS[i]; }",
            "int bp_param_size(int i) { return SIZES[i]; }",
            "void bp_set_channels(int layer, const int *channels) {",
            "    memcpy(SELECTIONS[layer], channels, sizeof(int) * (size_t)KEPT[layer]);",
            "}",
            "void bp_redraw(uint32_t seed) {",
            "    uint32_t state = seed;",
            f"    for (int l = 0; l < {len(layers)}; l++) bp_draw(&state, TOTAL[l], KEPT[l], SELECTIONS[l]);",
            "}",
            f"void bp_paint_arena(void) {{ memset(bp_arena, {PAINT:#x}, sizeof bp_arena); }}",
            "uint32_t bp_arena_high_water(void) {",
            "    uint32_t top = sizeof bp_arena;",
            f"    while (top > 0 && bp_arena[top - 1] == {PAINT:#x}) top--;",
            "    return top;",
            "}",
            "",
        ]
    )
