"""The int8 library's training step in PyTorch: the arithmetic of
``budgetplan.codegen.quantize`` step for step, to check the C code against
(docs/device.md, "Int8 storage").

The forward is exact: int32 sums are computed in float64 (every sum of int8 products
here is far below 2**53) and requantised with the same float32 operations in the same
order, so its codes and logits equal the C library's bit for bit. The backward is the
same mathematics in float32 with PyTorch's summation order: its float32 gradients differ
from the C library's by float32 rounding only, and a weight update can differ by one code
where ``w - lr * g / s`` falls within that rounding of a half. Int8 gradients are
requantised at each write as the C library requantises them; a code there can differ by
one where a value falls within float32 rounding of a half, and that difference travels
down the backward (docs/device.md, "Int8 storage").

>>> import torch
>>> from budgetplan.codegen.reference import requantize
>>> requantize(torch.tensor([[3.0, 5.0]]), torch.tensor([0.5, 0.5]), None, 1.0)  # 1.5 and 2.5: half to even
tensor([[2., 2.]])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.grad import conv2d_input, conv2d_weight

from budgetplan.codegen.code import StepCode
from budgetplan.codegen.graph import Node
from budgetplan.codegen.quantize import LEVELS, add_multipliers, multipliers, pool_multiplier, reciprocal, relu6_cap
from budgetplan.codegen.schedule import Trained


def q8(value: Tensor) -> Tensor:
    """Round half to even into ``[-127, 127]`` (codes as float32)."""
    return torch.round(value).clamp(-LEVELS, LEVELS)


def requantize(acc: Tensor, m: Tensor, bias: Tensor | None, r: float) -> Tensor:
    """``q8((float)acc * m + b * r)`` in float32, ``m`` and ``b`` per channel (dim 1)."""
    shape = (1, -1) + (1,) * (acc.dim() - 2)
    value = acc.float() * m.reshape(shape)
    if bias is not None:
        value = value + (bias * torch.tensor(r, dtype=torch.float32)).reshape(shape)
    return q8(value)


class Int8Step:
    """The int8 training step of ``code``: codes, scales and float32 biases it updates."""

    def __init__(self, code: StepCode) -> None:
        assert code.quant is not None, "the reference is of an int8 export"
        self.code, self.q = code, code.quant
        self.codes = {i: torch.tensor(c, dtype=torch.float32).reshape(self._shape(i)) for i, c in self.q.codes.items()}
        self.scales = {i: torch.tensor(s, dtype=torch.float32) for i, s in self.q.weight.items()}
        self.biases = {
            i: torch.tensor(p.bias, dtype=torch.float32) for i, p in code.parameters.items() if p.bias is not None
        }

    def _shape(self, index: int) -> tuple[int, ...]:
        node, source = self.code.nodes[index], self.code.nodes[self.code.nodes[index].inputs[0]]
        if node.kind == "linear":
            return (node.elements, source.elements)
        return (node.shape[0], source.shape[0] // node.groups, *node.kernel)

    def _unit_scales(self, index: int) -> Tensor:
        return self.scales[index].reshape(-1, *([1] * (self.codes[index].dim() - 1)))

    def _real(self, index: int) -> Tensor:
        """A layer's real weight: its codes times its unit scales (float32)."""
        return self.codes[index] * self._unit_scales(index)

    def forward(self, x: Tensor) -> tuple[dict[int, Tensor], Tensor]:
        """Every node's codes (the input quantised from ``x``) and the float32 logits."""
        nodes, codes = self.code.nodes, {}
        codes[0] = q8(x.float() * torch.tensor(reciprocal(self.q, 0), dtype=torch.float32))
        for node in nodes[1:]:
            codes[node.index] = self._node(node, codes)
        return codes, codes[nodes[-1].index]

    def _node(self, node: Node, codes: dict[int, Tensor]) -> Tensor:
        a = codes[node.inputs[0]]
        if node.kind in ("conv", "linear"):
            w, m = self.codes[node.index].double(), torch.tensor(multipliers(self.q, node))
            if node.kind == "conv":
                acc = F.conv2d(a.double(), w, None, node.stride, node.padding, 1, node.groups)
            else:
                acc = F.linear(a.double().flatten(1), w)
            if node.index == self.code.nodes[-1].index:  # the logits: float32, not requantised
                value = acc.float() * m
                bias = self.biases.get(node.index)
                return value + bias * torch.tensor(1.0) if bias is not None else value
            return requantize(acc, m, self.biases.get(node.index), reciprocal(self.q, node.index))
        if node.kind == "relu":
            return a.clamp_min(0)
        if node.kind == "relu6":
            return a.clamp(0, relu6_cap(self.q.activation[node.index]))
        if node.kind == "add":
            ma, mb = add_multipliers(self.q, node)
            return q8(a * torch.tensor(ma) + codes[node.inputs[1]] * torch.tensor(mb))
        if node.kind == "avgpool":
            acc = a.double().sum((2, 3)).reshape(a.shape[0], *node.shape)
            return q8(acc.float() * torch.tensor(pool_multiplier(self.q, self.code.nodes, node)))
        raise ValueError(f"no reference for {node.kind}")

    def step(self, x: Tensor, labels: Tensor, lr: float) -> float:
        """One training step as the C library takes it; the loss (float32)."""
        codes, logits = self.forward(x)
        logits = logits.detach().requires_grad_(True)
        loss = F.cross_entropy(logits, labels)
        (grad,) = torch.autograd.grad(loss, logits)
        self._backward(codes, grad, torch.tensor(lr, dtype=torch.float32))
        return float(loss.detach())

    def _backward(self, codes: dict[int, Tensor], grad_logits: Tensor, lr: Tensor) -> None:
        nodes, code, g8 = self.code.nodes, self.code, self.q.gradients
        grads: dict[int, Tensor] = {nodes[-1].index: combine(None, grad_logits) if g8 else grad_logits}
        updates = []
        for index in code.schedule.backward:
            node, g = nodes[index], grads.pop(index, None)
            if g is None:
                continue
            for source, part in self._input_grads(node, g, codes).items():
                if source not in code.schedule.backward:
                    continue
                if g8:
                    grads[source] = combine(grads.get(source), part)
                else:
                    grads[source] = grads[source] + part if source in grads else part
            if node.kind in ("conv", "linear"):
                updates.append((node, g, codes[node.inputs[0]]))
        for node, g, a in updates:  # C updates each layer after its input gradient: the same old weights
            self._update(node, g, a, lr)

    def _input_grads(self, node: Node, g: Tensor, codes: dict[int, Tensor]) -> dict[int, Tensor]:
        source = node.inputs[0] if node.inputs else -1
        if node.kind in ("relu", "relu6"):
            cap = relu6_cap(self.q.activation[node.index]) if node.kind == "relu6" else LEVELS + 1
            y = codes[node.index]
            return {source: g * ((y > 0) & (y < cap)).float()}
        if node.kind == "add":
            return {i: g for i in node.inputs}
        if node.kind == "avgpool":
            shape = codes[source].shape
            positions = shape[2] * shape[3]
            return {source: (g.reshape(shape[0], shape[1], 1, 1) / positions).expand(shape)}
        if node.kind in ("conv", "linear"):
            w = self._real(node.index)
            shape = codes[source].shape
            if node.kind == "linear":
                return {source: (g @ w).reshape(shape)}
            return {source: conv2d_input(shape, w, g, node.stride, node.padding, 1, node.groups)}
        return {}

    def _update(self, node: Node, g: Tensor, a: Tensor, lr: Tensor) -> None:
        what = self.code.trained.get(node.index, Trained(0, False))
        if what.bias:
            self.biases[node.index] = self.biases[node.index] - lr * g.sum((0, 2, 3) if g.dim() == 4 else 0)
        if not what.channels:
            return
        sx = self.q.activation[node.inputs[0]]
        real_input = a * torch.tensor(sx)
        weight = self.codes[node.index]
        if node.kind == "linear":
            row = g.t() @ real_input.flatten(1)
        else:
            row = conv2d_weight(real_input, weight.shape, g, node.stride, node.padding, 1, node.groups)
        row = row * _selected(weight.shape, node, self.code.selection[node.index])
        ratio = 0.0 if node.index == self.code.classifier else self.code.clip_ratio
        scale = self._unit_scales(node.index)
        if ratio > 0:
            flat, real = row.flatten(1), (weight * scale).flatten(1)
            limit = ratio * real.norm(dim=1).clamp_min(1e-3)
            norm = flat.norm(dim=1)
            factor = torch.where(norm > limit, limit / norm.clamp_min(1e-12), torch.ones_like(norm))
            row = (flat * factor[:, None]).reshape(row.shape)
        self.codes[node.index] = q8(weight - (lr * row) / scale)

    def train(self, inputs: Tensor, labels: Tensor, lr: float) -> list[float]:
        """``step`` over ``inputs[s]``, ``labels[s]``; the losses."""
        return [self.step(x, y, lr) for x, y in zip(inputs, labels, strict=True)]

    def parameters(self) -> Tensor:
        """Every parameter's real value, flat, in the C library's ``bp_param_at`` order."""
        parts = []
        for index, params in self.code.parameters.items():
            parts.append(self._real(index).flatten())
            if params.bias is not None:
                parts.append(self.biases[index])
        return torch.cat(parts)


def combine(old: Tensor | None, part: Tensor) -> Tensor:
    """An int8 gradient after a writer adds ``part`` to ``old`` (real values): requantised
    with the new largest magnitude, as ``bp_runtime.c``'s ``combine``; its real values."""
    value = part if old is None else old + part
    top = float(value.abs().max())
    scale = torch.tensor(top, dtype=torch.float32) / torch.tensor(127.0) if top > 0 else torch.tensor(1.0)
    return q8(value / scale) * scale


def _selected(shape: torch.Size, node: Node, channels: list[int]) -> Tensor:
    """1 where a weight's input channel is selected (in its group), else 0."""
    mask = torch.zeros(shape)
    per_group = shape[1]
    out_per_group = shape[0] // node.groups
    for channel in channels:
        group, local = divmod(channel, per_group)
        mask[group * out_per_group : (group + 1) * out_per_group, local] = 1.0
    return mask
