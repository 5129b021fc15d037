"""The C text of a model's training step: ``bp_model.h`` and ``bp_model.c`` (docs/device.md).

Frozen parameters are ``const`` arrays (flash on a microcontroller); the weights and
biases a plan trains are initialised arrays (SRAM). Every activation, kept input
channel, ReLU mask and gradient is a fixed offset into one static arena, as
``budgetplan.codegen.schedule`` laid it out.
"""

from __future__ import annotations

from budgetplan.codegen import emit_int8
from budgetplan.codegen.code import StepCode, floats, unit_updates
from budgetplan.codegen.graph import Node
from budgetplan.codegen.schedule import Trained, row_elements

PAINT = 0xA5  # the arena is filled with this byte to find the highest byte a step wrote


def header(code: StepCode) -> str:
    """``bp_model.h``: the sizes and the functions a program calls."""
    first, last = code.nodes[0], code.nodes[-1]
    return "\n".join(
        [
            f"/* {code.title} */",
            "#ifndef BP_MODEL_H",
            "#define BP_MODEL_H",
            "#include <stddef.h>",
            "#include <stdint.h>",
            f"#define BP_BATCH {code.batch}",
            f"#define BP_INPUT_ELEMENTS {first.elements}  /* per sample */",
            f"#define BP_CLASSES {last.elements}",
            f"#define BP_ARENA_BYTES {code.schedule.arena_bytes}",
            f"#define BP_PARAMS {2 * len(code.parameters)}",
            f"#define BP_TRAINED_LAYERS {sum(1 for t in code.trained.values() if t.channels)}",
            f"#define BP_INT8 {int(code.quant is not None)}  /* 1: weights and activations stored int8 */",
            *([] if code.quant else ["float *bp_input(void);  /* write BP_BATCH samples here before each step */"]),
            "void bp_load_input(size_t at, const float *x, size_t n);  /* n input values from element at on */",
            "const float *bp_logits(void);  /* valid after bp_forward */",
            "void bp_forward(void);",
            "float bp_train_step(const int *labels, float lr);  /* forward, loss, sparse backward, update */",
            "void bp_set_channels(int layer, const int *channels);  /* layer < BP_TRAINED_LAYERS */",
            "void bp_redraw(uint32_t seed);  /* every trained layer's channels drawn anew, uniformly */",
            "void bp_paint_arena(void);",
            "uint32_t bp_arena_high_water(void);  /* bytes of the arena written since bp_paint_arena */",
            "const char *bp_param_name(int i);",
            *([] if code.quant else ["const float *bp_param(int i);  /* NULL where the layer has no bias */"]),
            "float bp_param_at(int i, int j);  /* element j of parameter i, as a real value */",
            "int bp_param_size(int i);",
            "#endif",
            "",
        ]
    )


def source(code: StepCode) -> str:
    """``bp_model.c``: parameters, arena, forward, step."""
    parts = [f"/* {code.title} */", '#include "bp_model.h"', '#include "bp_runtime.h"', "#include <string.h>", ""]
    arrays = emit_int8.parameter_arrays(code) if code.quant else _parameter_arrays(code)
    accessors = emit_int8.accessors(code) if code.quant else _float_accessors(code)
    parts += [arrays, _selections(code), _arena(code), _forward(code), _backward(code), _accessors(code), accessors]
    return "\n".join(parts)


def _parameter_arrays(code: StepCode) -> str:
    lines = []
    for index, params in code.parameters.items():
        what = code.trained.get(index, Trained(0, False))
        weight_kind = "static float" if what.channels else "static const float"
        lines.append(f"/* {params.name} */")
        lines.append(f"{weight_kind} W{index}[{len(params.weight)}] = {floats(params.weight)};")
        if params.bias is not None:
            bias_kind = "static float" if what.bias else "static const float"
            lines.append(f"{bias_kind} B{index}[{len(params.bias)}] = {floats(params.bias)};")
    return "\n".join(lines) + "\n"


def _selections(code: StepCode) -> str:
    """Each trained layer's input channels, the kept ones to start with."""
    lines = [f"static int SEL{i}[{len(c)}] = {{{', '.join(map(str, c))}}};" for i, c in code.selection.items()]
    return "\n".join(lines) + "\n"


def _arena(code: StepCode) -> str:
    lines = [f"static uint8_t bp_arena[{max(8, code.schedule.arena_bytes)}] __attribute__((aligned(8)));"]
    if code.int8_gradients:
        lines.append(f"static float bp_gs[{len(code.nodes)}];  /* each int8 gradient's scale */")
    for buffer in sorted(code.schedule.buffers.values(), key=lambda b: b.name):
        kind = _buffer_type(code, buffer.name)
        lines.append(f"#define {buffer.name.upper()} (({kind} *)(bp_arena + {buffer.offset}))  /* {buffer.size} B */")
    lines.append("")
    for node in code.nodes:
        if node.kind == "conv":
            lines.append(f"static const bp_conv C{node.index} = {_conv_fields(code, node)};")
    return "\n".join(lines) + "\n"


def _buffer_type(code: StepCode, name: str) -> str:
    if name.startswith("m"):
        return "uint8_t"
    logits = code.schedule.output_of[code.nodes[-1].index]
    stored = code.quant is not None and name[0] in "xst" and name != logits
    return "int8_t" if stored or (code.int8_gradients and name[0] == "g") else "float"


def _conv_fields(code: StepCode, node: Node) -> str:
    c, h, w = code.nodes[node.inputs[0]].shape
    o, oh, ow = node.shape
    fields = (code.batch, c, h, w, o, oh, ow, *node.kernel, *node.stride, *node.padding, node.groups)
    return "{" + ", ".join(map(str, fields)) + "}"


def _x(code: StepCode, index: int) -> str:
    return code.buffer(index)


def _forward(code: StepCode) -> str:
    lines = ["static void bp_load_trained(void);"]
    lines += emit_int8.patch_forward(code) if code.patch else ["void bp_forward(void) {", "    bp_load_trained();"]
    for node in code.nodes[code.patch.split if code.patch else 1 :]:
        lines += [f"    {line}" for line in _forward_node(code, node)]
    return "\n".join([*lines, "}", ""])


def _forward_node(code: StepCode, node: Node) -> list[str]:
    if code.quant is not None:
        return emit_int8.forward_node(code, node)
    x, y, b, n = _x(code, node.inputs[0]), _x(code, node.index), code.batch, node.elements * code.batch
    params = code.parameters.get(node.index)
    bias = f"B{node.index}" if params is not None and params.bias is not None else "NULL"
    source = code.nodes[node.inputs[0]]
    keep = code.selection.get(node.index)
    if node.kind == "conv":
        positions = source.elements // source.shape[0]
        gather = f"bp_gather_channels({x}, {b}, {source.shape[0]}, {positions}, SEL{node.index}, {len(keep or [])}, "
        if x == y:  # written over its input: what the backward keeps is gathered first
            conv = f"bp_dwconv_inplace(&C{node.index}, {x}, W{node.index}, {bias}, T{node.index});"
            return [f"{gather}S{node.index});", conv] if keep else [conv]
        lines = [f"bp_conv2d(&C{node.index}, {x}, W{node.index}, {bias}, {y});"]
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
    last, g8 = code.nodes[-1], code.int8_gradients
    loss = "bp_cross_entropy_g8" if g8 else "bp_cross_entropy"
    scale = f", &bp_gs[{last.index}]" if g8 else ""
    lines = [
        "float bp_train_step(const int *labels, float lr) {",
        "    bp_forward();",
        f"    float loss = {loss}({_x(code, last.index)}, labels, {code.batch}, {last.elements}, "
        f"G{last.index}{scale});",
    ]
    for index in code.schedule.backward:
        node = code.nodes[index]
        for source in code.schedule.zeroed_by.get(index, ()):
            lines.append(f"    memset(G{source}, 0, {code.schedule.buffers[f'g{source}'].size});")
            lines += [f"    bp_gs[{source}] = 0.0f;"] if g8 else []
        lines += [f"    {line}" for line in _backward_node(code, node)]
    return "\n".join([*lines, "    return loss;", "}", ""])


def _backward_node(code: StepCode, node: Node) -> list[str]:
    """One node's backward; with int8 gradients each gradient it writes is combined with
    the codes and the scale (``bp_gs``) already there."""
    i, b, n = node.index, code.batch, node.elements * code.batch
    grads = [s for s in node.inputs if s in code.schedule.backward]
    source = code.nodes[node.inputs[0]] if node.inputs else None
    g8 = "_g8" if code.int8_gradients else ""
    gy = f"G{i}, bp_gs[{i}]" if g8 else f"G{i}"

    def gx(s: int) -> str:
        return f"G{s}, &bp_gs[{s}]" if g8 else f"G{s}"

    if node.kind in ("relu", "relu6"):
        return [f"bp_relu_grad{g8}({gy}, M{i}, {n}, {gx(s)});" for s in grads]
    if node.kind == "add":
        return [f"bp_accumulate{g8}({gy}, {n}, {gx(s)});" for s in node.inputs if s in grads]
    if node.kind == "avgpool" and source is not None:
        positions = source.elements // source.shape[0]
        return [f"bp_avgpool_grad{g8}({gy}, {b}, {source.shape[0]}, {positions}, {gx(s)});" for s in grads]
    if node.kind in ("conv", "linear") and source is not None:
        if code.quant is not None:
            return emit_int8.layer_backward(code, node, source, grads)
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
        k, row = len(code.selection[i]), row_elements(code.nodes, node)
        grad_row = (
            f"bp_conv2d_grad_row(&C{i}, G{i}, S{i}, SEL{i}, {k}, o, R{i});"
            if conv
            else f"bp_linear_grad_row({b}, {source.elements}, {node.elements}, G{i}, S{i}, SEL{i}, {k}, o, R{i});"
        )
        lines += unit_updates(
            code, node, grad_row, f"bp_update_row(W{i} + (size_t)o * {row}, R{i}, {row}, lr, {{ratio}});"
        )
    return lines


def _accessors(code: StepCode) -> str:
    layers = [i for i, t in code.trained.items() if t.channels]
    names, sizes = [], []
    for params in code.parameters.values():
        names += [f'"{params.name}.weight"', f'"{params.name}.bias"']
        sizes += [str(len(params.weight)), str(len(params.bias) if params.bias is not None else 0)]
    totals = [str(code.nodes[code.nodes[i].inputs[0]].shape[0]) for i in layers]
    counts = [str(len(code.selection[i])) for i in layers]
    return "\n".join(
        [
            f"static const char *const NAMES[] = {{{', '.join(names)}}};",
            f"static const int SIZES[] = {{{', '.join(sizes)}}};",
            f"static int *const SELECTIONS[] = {{{', '.join(f'SEL{i}' for i in layers) or 'NULL'}}};",
            f"static const int KEPT[] = {{{', '.join(counts) or '0'}}};",
            f"static const int TOTAL[] = {{{', '.join(totals) or '0'}}};",
            f"const float *bp_logits(void) {{ return {_x(code, code.nodes[-1].index)}; }}",
            "const char *bp_param_name(int i) { return NAMES[i]; }",
            "int bp_param_size(int i) { return SIZES[i]; }",
            "static void bp_selected(int layer);  /* what a new selection changes besides it */",
            "void bp_set_channels(int layer, const int *channels) {",
            "    memcpy(SELECTIONS[layer], channels, sizeof(int) * (size_t)KEPT[layer]);",
            "    bp_selected(layer);",
            "}",
            "void bp_redraw(uint32_t seed) {",
            "    uint32_t state = seed;",
            f"    for (int l = 0; l < {len(layers)}; l++) {{",
            "        bp_draw(&state, TOTAL[l], KEPT[l], SELECTIONS[l]);",
            "        bp_selected(l);",
            "    }",
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


def _float_accessors(code: StepCode) -> str:
    pointers = []
    for index, params in code.parameters.items():
        pointers += [f"W{index}", f"B{index}" if params.bias is not None else "NULL"]
    return "\n".join(
        [
            f"static const float *const PARAMS[] = {{{', '.join(pointers)}}};",
            "float *bp_input(void) { return X0; }",
            "void bp_load_input(size_t at, const float *x, size_t n) { memcpy(X0 + at, x, sizeof(float) * n); }",
            "const float *bp_param(int i) { return PARAMS[i]; }",
            "float bp_param_at(int i, int j) { return PARAMS[i][j]; }",
            "static void bp_selected(int layer) { (void)layer; }  /* whole weights in SRAM: nothing to load */",
            "static void bp_load_trained(void) {}",
            "",
        ]
    )
