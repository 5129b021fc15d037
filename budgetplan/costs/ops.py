"""What each traced op keeps for backward and whether it may run in place.

Ops are named as ``budgetplan.costs.trace`` normalises them. A ReLU-family op or dropout
keeps a mask; an op whose gradient needs its output or input keeps a full activation;
a product of two activations keeps both; attention keeps what its kernel says (recorded
in the trace); layer norm and attention also keep small statistics; the rest keep
nothing (``docs/cost-model.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

from budgetplan.costs.dataflow import Op, Trace

LAYER_FUNCS = {"conv1d", "conv2d", "conv3d", "linear"}


VIEW_OPS = {
    "view", "reshape", "flatten", "unflatten", "transpose", "permute", "contiguous",
    "getitem", "squeeze", "unsqueeze", "chunk", "split", "narrow", "select", "expand",
    "t", "view_as", "reshape_as", "detach", "unbind", "movedim", "swapaxes", "as_strided",
    "identity",
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
MATMUL_OPS = {"matmul", "bmm", "einsum", "baddbmm"}


ATTENTION_OPS = {"scaled_dot_product_attention"}  # the trace records what each call keeps


FREE_OPS = {
    "add", "sub", "neg", "cat", "concat", "stack", "batch_norm", "adaptive_avg_pool1d",
    "adaptive_avg_pool2d", "adaptive_avg_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "mean", "sum", "interpolate", "upsample", "pad", "clone", "to", "float", "zeros_like",
    "ones_like", "flip", "roll",
    # the gradient stops at an embedding: its weight stays frozen and its input is tokens
    "embedding",
    # constants (positions, causal masks): no gradient reaches them
    "arange", "full", "triu", "tril", "zeros", "ones", "empty", "eye",
}  # fmt: skip


IN_PLACE_OPS = MASK_OPS | SAVES_OUTPUT_OPS | SAVES_INPUT_OPS | {"add", "sub", "mul", "div", "neg", "batch_norm"}


# any other op is assumed to keep nothing for backward, and the cost table names it
KNOWN_OPS = (
    LAYER_FUNCS | VIEW_OPS | MASK_OPS | SAVES_OUTPUT_OPS | SAVES_INPUT_OPS | PRODUCT_OPS | ATTENTION_OPS | FREE_OPS
)


@dataclass(frozen=True)
class Kept:
    """What one op keeps for its backward: mask elements, the recorded tensors it saves
    (counted by their storage, so a tensor two ops save is counted once) and elements no
    recorded tensor holds (norm statistics, attention's log-sum-exp)."""

    mask: int = 0
    tensors: tuple[int, ...] = ()
    aux: int = 0


def kept_for_backward(op: Op, trace: Trace) -> Kept:
    """What ``op`` keeps for its backward (a conv or linear call: see the cost table)."""
    if op.func in MASK_OPS:
        return Kept(mask=sum(trace.elements(t) for t in op.outputs))
    if op.saved is not None:
        return Kept(tensors=op.saved, aux=op.aux_saved)
    if op.func in SAVES_OUTPUT_OPS:
        return Kept(tensors=op.outputs, aux=op.aux_saved)
    if op.func in SAVES_INPUT_OPS:
        return Kept(tensors=op.inputs[:1], aux=op.aux_saved)
    if op.func in MATMUL_OPS and not op.scalar_operand:
        # a batched product flattens its operands: a view of part of a larger storage (one
        # head's keys in a packed projection) cannot be, so it keeps a compact copy of it
        whole = tuple(t for t in op.inputs if trace.elements(t) == trace.stored_elements(t))
        copies = sum(trace.elements(t) for t in op.inputs if t not in whole)
        return Kept(tensors=whole, aux=op.aux_saved + copies)
    if op.func in PRODUCT_OPS and not op.scalar_operand:
        return Kept(tensors=op.inputs, aux=op.aux_saved)
    return Kept(aux=op.aux_saved)
