"""The C text where a profile stores 8-bit values: int8 weights with one scale per output
unit, int8 activations with one scale per tensor, float32 biases and gradients
(``budgetplan.codegen.quantize`` defines the arithmetic; docs/device.md, "Int8 storage")."""

from __future__ import annotations

from budgetplan.codegen.code import StepCode, floats, literal, unit_updates
from budgetplan.codegen.graph import Node
from budgetplan.codegen.quantize import (
    Quantization,
    add_multipliers,
    layer_scale,
    pool_multiplier,
    reciprocal,
    relu6_cap,
)


def _quant(code: StepCode) -> Quantization:
    assert code.quant is not None
    return code.quant


def _geometry(code: StepCode, index: int) -> tuple[int, int, int]:
    """A layer's input channels per group, units per group and taps."""
    node, source = code.nodes[index], code.nodes[code.nodes[index].inputs[0]]
    if node.kind == "linear":
        return source.elements, node.elements, 1
    return source.shape[0] // node.groups, node.shape[0] // node.groups, node.kernel[0] * node.kernel[1]


def parameter_arrays(code: StepCode) -> str:
    """Per layer: the int8 codes ``W`` (flash), the unit scales ``SW``, the float32 bias
    ``B`` (SRAM where it trains) and the weight ``WA`` the kernels read; where channels
    train, their codes ``WT`` and slots ``SLOT`` in SRAM, as much as the plan counts
    (``bp_w8`` in bp_runtime.h; a layer that trains every channel needs no slots)."""
    q = _quant(code)
    lines = []
    for index, params in code.parameters.items():
        what, node, codes = code.what(index), code.nodes[index], q.codes[index]
        in_g, out_g, taps = _geometry(code, index)
        lines.append(f"/* {params.name} */")
        lines.append(f"static const int8_t W{index}[{len(codes)}] = {{{','.join(map(str, codes))}}};")
        lines.append(f"static const float SW{index}[{node.shape[0]}] = {floats(q.weight[index])};")
        if params.bias is not None:
            bias_kind = "static float" if what.bias else "static const float"
            lines.append(f"{bias_kind} B{index}[{len(params.bias)}] = {floats(params.bias)};")
        trained = "NULL, NULL"
        if what.channels:  # loaded from flash before the first step (bp_load_trained)
            k = len(code.selection[index])
            whole = k == in_g * node.groups
            lines.append(f"static int8_t WT{index}[{len(codes) if whole else k * out_g * taps}];")
            if not whole:
                lines.append(f"static int16_t SLOT{index}[{in_g * node.groups}];")
            trained = f"WT{index}, {'NULL' if whole else f'SLOT{index}'}"
        lines.append(f"static const bp_w8 WA{index} = {{W{index}, {trained}, {in_g}, {out_g}, {taps}}};")
    return "\n".join(lines) + "\n"


def forward_node(code: StepCode, node: Node) -> list[str]:
    """One operator on int8 codes (the logits come out float32)."""
    q = _quant(code)
    x, y, b, n = code.buffer(node.inputs[0]), code.buffer(node.index), code.batch, node.elements * code.batch
    source = code.nodes[node.inputs[0]]
    params = code.parameters.get(node.index)
    bias = f"B{node.index}" if params is not None and params.bias is not None else "NULL"
    keep = code.selection.get(node.index)
    if node.kind in ("conv", "linear"):
        r = literal(reciprocal(q, node.index))
        scales = f"SW{node.index}, {literal(layer_scale(q, node))}"
        last = node.index == code.nodes[-1].index
        if node.kind == "conv":
            if last:
                raise ValueError("the int8 library ends in a linear layer: its logits stay float32")
            positions = source.elements // source.shape[0]
            if x == y:  # written over its input: what the backward keeps is gathered first
                conv = f"bp_dwconv_inplace_q8(&C{node.index}, {x}, &WA{node.index}, {scales}, {bias}, {r}, "
                gather = f"bp_gather_q8({x}, {b}, {source.shape[0]}, {positions}, SEL{node.index}, {len(keep or [])}, "
                return [*([f"{gather}S{node.index});"] if keep else []), f"{conv}T{node.index});"]
            lines = [f"bp_conv2d_q8(&C{node.index}, {x}, &WA{node.index}, {scales}, {bias}, {r}, {y});"]
        else:
            out = f"NULL, {y}" if last else f"{y}, NULL"
            lines = [
                f"bp_linear_q8({b}, {source.elements}, {node.elements}, {x}, &WA{node.index}, {scales}, {bias}, "
                f"{r}, {out});"
            ]
            positions = 1
        channels = source.shape[0] if node.kind == "conv" else source.elements
        if keep:
            selected = f"SEL{node.index}, {len(keep)}, S{node.index}"
            lines.append(f"bp_gather_q8({x}, {b}, {channels}, {positions}, {selected});")
        return lines
    if node.kind in ("relu", "relu6"):
        cap = relu6_cap(q.activation[node.index]) if node.kind == "relu6" else 0
        lines = [f"bp_relu_q8({x}, {n}, {cap}, {y});"]
        if f"m{node.index}" in code.schedule.buffers:
            lines.append(f"bp_relu_mask_q8({y}, {n}, {cap}, M{node.index});")
        return lines
    if node.kind == "add":
        ma, mb = (literal(m) for m in add_multipliers(q, node))
        return [f"bp_add_q8({x}, {ma}, {code.buffer(node.inputs[1])}, {mb}, {n}, {y});"]
    if node.kind == "avgpool":
        m = literal(pool_multiplier(q, code.nodes, node))
        return [f"bp_avgpool_q8({x}, {b}, {source.shape[0]}, {source.elements // source.shape[0]}, {m}, {y});"]
    raise ValueError(f"no forward for {node.kind}")


def layer_backward(code: StepCode, node: Node, source: Node, grads: list[int]) -> list[str]:
    """A conv or linear layer's backward: gradients (float32, or int8 with ``g8``) through
    the int8 weights, the bias and the selected channels' rows updated, the weight rows
    requantised."""
    q, g8 = _quant(code), code.int8_gradients
    i, b = node.index, code.batch
    conv = node.kind == "conv"
    gy = f"G{i}, bp_gs[{i}]" if g8 else f"G{i}"
    kind = "g8" if g8 else "q8"
    lines = [
        (
            f"bp_conv2d_grad_input_{kind}(&C{i}, {gy}, &WA{i}, SW{i}, G{s}"
            if conv
            else f"bp_linear_grad_input_{kind}({b}, {source.elements}, {node.elements}, {gy}, &WA{i}, SW{i}, G{s}"
        )
        + (f", &bp_gs[{s}]);" if g8 else ");")
        for s in grads
    ]
    what = code.what(i)
    positions = node.elements // node.shape[0]
    if what.bias:
        lines.append(f"bp_update_bias{'_g8' if g8 else ''}({gy}, {b}, {node.shape[0]}, {positions}, lr, B{i});")
    if what.channels:
        k, sx = len(code.selection[i]), literal(q.activation[source.index])
        grad_row = (
            f"bp_conv2d_grad_row_{kind}(&C{i}, {gy}, S{i}, {sx}, SEL{i}, {k}, o, R{i});"
            if conv
            else f"bp_linear_grad_row_{kind}({b}, {source.elements}, {node.elements}, {gy}, S{i}, {sx}, SEL{i}, {k}, "
            f"o, R{i});"
        )
        lines += unit_updates(code, node, grad_row, f"bp_update_row_q8(&WA{i}, o, SW{i}[o], R{i}, lr, {{ratio}});")
    return lines


def accessors(code: StepCode) -> str:
    """Loading a float input into int8 codes, and reading a parameter's real values."""
    weights, scales, plain, rows = [], [], [], []
    for index, params in code.parameters.items():
        weights += [f"&WA{index}", "NULL"]
        scales += [f"SW{index}", "NULL"]
        plain += ["NULL", f"B{index}" if params.bias is not None else "NULL"]
        rows += [str(len(params.weight) // code.nodes[index].shape[0]), "1"]
    layers = [i for i, t in code.trained.items() if t.channels]
    r_in = literal(reciprocal(_quant(code), code.nodes[0].index))
    return "\n".join(
        [
            f"static const bp_w8 *const WEIGHTS[] = {{{', '.join(weights)}}};",
            f"static const float *const SCALES[] = {{{', '.join(scales)}}};",
            f"static const float *const PLAIN[] = {{{', '.join(plain)}}};",
            f"static const int ROWS[] = {{{', '.join(rows)}}};",
            f"static const bp_w8 *const TRAINED[] = {{{', '.join(f'&WA{i}' for i in layers) or 'NULL'}}};",
            "void bp_load_input(size_t at, const float *x, size_t n) {",
            f"    for (size_t i = 0; i < n; i++) X0[at + i] = bp_q8(x[i] * {r_in});",
            "}",
            "float bp_param_at(int i, int j) {",
            "    const bp_w8 *w = WEIGHTS[i];",
            "    bp_load_trained();",
            "    if (!w) return PLAIN[i][j];",
            "    int o = j / ROWS[i], rest = j % ROWS[i];",
            "    return (float)bp_w8_read(w, o, rest / w->taps)[rest % w->taps] * SCALES[i][o];",
            "}",
            "static void bp_selected(int layer) { /* the new channels' codes from flash */",
            "    bp_w8_select(TRAINED[layer], TOTAL[layer], SELECTIONS[layer], KEPT[layer]);",
            "}",
            "static void bp_load_trained(void) { /* once: the trained channels' codes into SRAM */",
            "    static int loaded;",
            f"    for (int l = 0; l < {len(layers)} && !loaded; l++) bp_selected(l);",
            "    loaded = 1;",
            "}",
            "",
        ]
    )


def patch_forward(code: StepCode) -> list[str]:
    """The operators before the patch stage's split, one patch at a time: ``PW[p]`` holds
    each one's region in patch ``p``; a buffer holds its writer's region, or the whole
    tensor (the input, the stage's output)."""
    stage, q = code.patch, _quant(code)
    assert stage is not None
    whole = {code.buffer(0), code.buffer(stage.output)}

    def window(index: int) -> str:
        name = code.buffer(index)
        if name in whole:
            height, width = code.nodes[index].shape[1:]
            return f"(bp_window){{0, 0, {height}, {width}}}"
        return f"pw[{int(name[1:])}]"  # the region of the node that writes the buffer

    regions = ",\n".join(
        "    {"
        + ", ".join(f"{{{r[0]}, {c[0]}, {r[1] - r[0]}, {c[1] - c[0]}}}" for r, c in (p[k] for k in range(stage.split)))
        + "}"
        for p in stage.regions
    )
    lines = [
        f"static const bp_window PW[{len(stage.regions)}][{stage.split}] = {{\n{regions}\n}};",
        "void bp_forward(void) {",
        "    bp_load_trained();",
        f"    for (int p = 0; p < {len(stage.regions)}; p++) {{",
        "        const bp_window *pw = PW[p];",
    ]
    for node in code.nodes[1 : stage.split]:
        i, source = node.index, node.inputs[0]
        x, y = code.buffer(source), code.buffer(i)
        if node.kind == "conv":
            bias = f"B{i}" if code.parameters[i].bias is not None else "NULL"
            r, s = literal(reciprocal(q, i)), literal(layer_scale(q, node))
            lines.append(
                f"        bp_conv2d_patch_q8(&C{i}, {x}, {window(source)}, W{i}, SW{i}, {s}, {bias}, {r}, {y}, "
                f"{window(i)}, pw[{i}]);"
            )
        else:
            cap = relu6_cap(q.activation[i]) if node.kind == "relu6" else 0
            if x != y:
                raise ValueError("the patch stage runs a ReLU in place")
            lines.append(f"        bp_relu_patch_q8({y}, {window(i)}, pw[{i}], {code.batch}, {node.shape[0]}, {cap});")
    return [*lines, "    }"]
