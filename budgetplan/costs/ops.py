"""What each traced op keeps for backward and whether it may run in place.

Ops are named as ``budgetplan.costs.trace`` normalises them. A ReLU-family op or dropout
keeps a mask; an op whose gradient needs its output or input keeps a full activation;
a product of two activations keeps both; the rest keep nothing (``docs/cost-model.md``).
"""

from __future__ import annotations

from budgetplan.costs.trace import Op, Trace

_LAYER_FUNCS = {"conv1d", "conv2d", "conv3d", "linear"}


_VIEW = {
    "view", "reshape", "flatten", "unflatten", "transpose", "permute", "contiguous",
    "getitem", "squeeze", "unsqueeze", "chunk", "split", "narrow", "select", "expand",
    "t", "view_as", "reshape_as", "detach", "unbind", "movedim", "swapaxes", "as_strided",
}  # fmt: skip


_MASK = {
    "relu", "relu6", "hardtanh", "leaky_relu", "threshold", "hardsigmoid", "clamp",
    "clip", "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
    "feature_alpha_dropout",
}  # fmt: skip


_SAVES_OUTPUT = {"sigmoid", "tanh", "softmax", "log_softmax", "exp"}


_SAVES_INPUT = {
    "hardswish", "silu", "gelu", "elu", "selu", "celu", "mish", "softplus", "log",
    "layer_norm", "group_norm", "instance_norm", "max_pool1d", "max_pool2d", "max_pool3d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d", "sqrt", "pow",
}  # fmt: skip


_PRODUCT = {"mul", "div", "matmul", "bmm", "mm", "einsum", "baddbmm", "addmm"}


_FREE = {
    "add", "sub", "neg", "cat", "concat", "stack", "batch_norm", "adaptive_avg_pool1d",
    "adaptive_avg_pool2d", "adaptive_avg_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "mean", "sum", "interpolate", "upsample", "pad", "clone", "to", "float", "zeros_like",
    "ones_like", "flip", "roll",
}  # fmt: skip


_IN_PLACE_ABLE = _MASK | _SAVES_OUTPUT | _SAVES_INPUT | {"add", "sub", "mul", "div", "neg", "batch_norm"}


def _path_elements(op: Op, trace: Trace) -> tuple[int, int]:
    """(mask elements, activation elements) an op keeps for its backward."""
    if op.func in _MASK:
        return sum(trace.elements(t) for t in op.outputs), 0
    if op.func in _SAVES_OUTPUT:
        return 0, sum(trace.elements(t) for t in op.outputs)
    if op.func in _SAVES_INPUT:
        return 0, trace.elements(op.inputs[0]) if op.inputs else 0
    if op.func in _PRODUCT and not op.scalar_operand:
        return 0, sum(trace.elements(t) for t in op.inputs)
    return 0, 0
