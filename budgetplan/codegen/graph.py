"""A model as the C library runs it: its operators in execution order (docs/device.md).

``torch.fx`` traces the model (BatchNorm folded into its convolutions first) into
``Node``\\s of the operators the generated code has kernels for; any other operator is
refused in one line that names it. Dropout, identities and flatten run as nothing.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from budgetplan.errors import ModelError
from budgetplan.quoting import quote

KINDS = ("input", "conv", "linear", "relu", "relu6", "add", "avgpool")
_PASS_THROUGH = (nn.Dropout, nn.Identity, nn.Flatten)  # flatten keeps the data where it is


@dataclass(frozen=True)
class Node:
    """One operator: ``shape`` is its output's per-sample shape; ``module`` names the conv
    or linear layer it runs (with its stride, padding, groups)."""

    index: int
    kind: str
    inputs: tuple[int, ...]
    shape: tuple[int, ...]
    module: str = ""
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    kernel: tuple[int, int] = (1, 1)

    @property
    def elements(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count


def model_graph(model: nn.Module, example: torch.Tensor) -> list[Node]:
    """The operators of ``model`` (in eval mode, BatchNorm already folded) on ``example``."""
    traced = fx.symbolic_trace(model)
    ShapeProp(traced).propagate(example)
    modules = dict(traced.named_modules())
    nodes: list[Node] = []
    where: dict[fx.Node, int] = {}
    for item in traced.graph.nodes:
        if item.op == "output":
            continue
        shape = tuple(item.meta["tensor_meta"].shape[1:]) if "tensor_meta" in item.meta else ()
        if item.op == "placeholder":
            where[item] = _append(nodes, "input", (), shape)
            continue
        inputs = tuple(where[arg] for arg in item.all_input_nodes if arg in where)
        if item.op == "call_module":
            module = modules[item.target]
            if isinstance(module, _PASS_THROUGH):
                where[item] = inputs[0]
                continue
            where[item] = _module_node(nodes, module, str(item.target), inputs, shape)
        else:
            kind = _function_kind(item)
            if kind == "alias":
                where[item] = inputs[0]
            else:
                where[item] = _append(nodes, kind, inputs, shape)
    return nodes


def _append(nodes: list[Node], kind: str, inputs: tuple[int, ...], shape: tuple[int, ...], **fields: object) -> int:
    nodes.append(Node(len(nodes), kind, inputs, tuple(int(s) for s in shape), **fields))  # type: ignore[arg-type]
    return len(nodes) - 1


def _module_node(nodes: list[Node], module: nn.Module, name: str, inputs: tuple[int, ...], shape: tuple) -> int:
    if isinstance(module, nn.Conv2d):
        if module.dilation != (1, 1) or module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise ModelError(f"{name}: the C export runs convolutions with zero padding and no dilation")
        return _append(
            nodes, "conv", inputs, shape, module=name, stride=tuple(module.stride), padding=tuple(module.padding),
            groups=module.groups, kernel=tuple(module.kernel_size),
        )  # fmt: skip
    if isinstance(module, nn.Linear):
        return _append(nodes, "linear", inputs, shape, module=name)
    if isinstance(module, nn.ReLU6) or (isinstance(module, nn.Hardtanh) and (module.min_val, module.max_val) == (0, 6)):
        return _append(nodes, "relu6", inputs, shape)
    if isinstance(module, nn.ReLU):
        return _append(nodes, "relu", inputs, shape)
    if isinstance(module, nn.AdaptiveAvgPool2d) and module.output_size in (1, (1, 1)):
        return _append(nodes, "avgpool", inputs, shape)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        raise ModelError(f"{name}: a BatchNorm the C export cannot fold into a convolution before it")
    raise ModelError(f"layer {quote(name)}: the C export has no kernel for {type(module).__name__}; {_RUNS}")


_RUNS = "it runs Conv2d, Linear, ReLU, ReLU6, residual add, global average pooling and flatten"


def _function_kind(item: fx.Node) -> str:
    target = item.target
    if target in (operator.add, torch.add) or (item.op == "call_method" and target in ("add", "__add__")):
        return "add"
    if target is torch.flatten or (item.op == "call_method" and target in ("flatten", "view", "reshape")):
        return "alias"
    if target is nn.functional.relu or (item.op == "call_method" and target == "relu"):
        return "relu"
    if target is nn.functional.relu6:
        return "relu6"
    if target is nn.functional.hardtanh and item.args[1:3] == (0.0, 6.0):
        return "relu6"
    if target is nn.functional.adaptive_avg_pool2d and item.args[1] in (1, (1, 1)):
        return "avgpool"
    if target is nn.functional.dropout:
        return "alias"
    if target is torch.mean and isinstance(item.args[1], (tuple, list)) and tuple(item.args[1]) in ((2, 3), (-2, -1)):
        return "avgpool"
    name = getattr(target, "__name__", str(target))
    raise ModelError(f"the C export has no kernel for {name} (at {item.name}); {_RUNS}")
