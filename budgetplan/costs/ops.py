"""What each traced op keeps for backward and whether it may run in place.

Ops are named as ``budgetplan.costs.trace`` normalises them. A ReLU-family op or dropout
keeps a mask; an op whose gradient needs its output or input keeps a full activation;
a product of two activations keeps both; the rest keep nothing (``docs/cost-model.md``).
"""

from __future__ import annotations

from budgetplan.costs.trace import Op, Trace

LAYER_FUNCS = {"conv1d", "conv2d", "conv3d", "linear"}


VIEW_OPS = {
    "view", "reshape", "flatten", "unflatten", "transpose", "permute", "contiguous",
    "getitem", "squeeze", "unsqueeze", "chunk", "split", "narrow", "select", "expand",
    "t", "view_as", "reshape_as", "detach", "unbind", "movedim", "swapaxes", "as_strided",
}  # fmt: skip


MASK_OPS = {
    "relu", "relu6", "hardtanh", "leaky_relu", "threshold", "hardsigmoid", "clamp",
    "clip", "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
    "feature_alpha_dropout",
}  # fmt: skip


SAVES_OUTPUT_OPS = {"sigmoid", "tanh", "softmax", "log_softmax", "exp"}


SAVES_INPUT_OPS = {
    "hardswish", "silu", "gelu", "elu", "selu", "celu", "mish", "softplus", "log",
    "layer_norm", "group_norm", "instance_norm", "max_pool1d", "max_pool2d", "max_pool3d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d", "sqrt", "pow",
}  # fmt: skip


PRODUCT_OPS = {"mul", "div", "matmul", "bmm", "mm", "einsum", "baddbmm", "addmm"}


FREE_OPS = {
    "add", "sub", "neg", "cat", "concat", "stack", "batch_norm", "adaptive_avg_pool1d",
    "adaptive_avg_pool2d", "adaptive_avg_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "mean", "sum", "interpolate", "upsample", "pad", "clone", "to", "float", "zeros_like",
    "ones_like", "flip", "roll",
}  # fmt: skip


IN_PLACE_OPS = MASK_OPS | SAVES_OUTPUT_OPS | SAVES_INPUT_OPS | {"add", "sub", "mul", "div", "neg", "batch_norm"}


# any other op is assumed to keep nothing for backward, and the cost table names it
KNOWN_OPS = LAYER_FUNCS | VIEW_OPS | MASK_OPS | SAVES_OUTPUT_OPS | SAVES_INPUT_OPS | PRODUCT_OPS | FREE_OPS


def path_elements(op: Op, trace: Trace) -> tuple[int, int]:
    """(mask elements, activation elements) an op keeps for its backward."""
    if op.func in MASK_OPS:
        return sum(trace.elements(t) for t in op.outputs), 0
    if op.func in SAVES_OUTPUT_OPS:
        return 0, sum(trace.elements(t) for t in op.outputs)
    if op.func in SAVES_INPUT_OPS:
        return 0, trace.elements(op.inputs[0]) if op.inputs else 0
    if op.func in PRODUCT_OPS and not op.scalar_operand:
        return 0, sum(trace.elements(t) for t in op.inputs)
    return 0, 0
