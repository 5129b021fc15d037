"""Training memory under a named accounting: budgetplan's own, or Sparse Update's.

``budgetplan`` is the planner's training memory (``Prediction.training_memory_bytes``:
updated weights and biases at the device's bit widths plus every tensor saved for the
backward pass, docs/cost-model.md). ``sparse-update`` is what Sparse Update counts for its
memory figures (Lin et al., NeurIPS 2022; docs/tiny-training.md), reproduced here from a
cost table with fixed bit widths, whatever the device:

* the classifier (the last Linear layer): its weights and bias 0 bits (not counted), its
  input (``in_features`` elements) at 8 bits;
* every convolution on the gradient path (from the earliest updated layer on; in a
  Sparse Update scheme these are exactly the bias-updated ones): a 1-bit mask per output
  element (``C_out·H_out·W_out``), and its bias at 32 bits when the bias trains;
* every weight-updated convolution: the kept input channels of its input (``H·W`` each)
  and the kept weights (``C_out·k`` per kept channel; a depthwise conv ``k``) at 8 bits;
  a grouped conv that is not depthwise keeps its whole input and all its weights;
* optimizer state (momentum) 0 bits, and no working buffer.

Activations and masks scale with ``batch_size``; at batch 1 the figure is theirs.
Sparse Update reports kB as ``bits / 8 / 1024``; the functions here return bytes.

>>> import torch
>>> from torch import nn
>>> from budgetplan.costs.build import layer_costs
>>> from budgetplan.planning.memory import Choice
>>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
>>> costs = layer_costs(net, torch.zeros(1, 3, 4, 4))
>>> choices = {"0": Choice(2, True), "3": Choice(128, True)}
>>> sparse_update_memory(costs, choices)  # (128 mask + 8·32 bias + 2·16·8 input + 2·72·8 weights + 128·8) bits / 8
352.0
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from math import prod
from typing import TYPE_CHECKING

from budgetplan.planning.memory import Choice

if TYPE_CHECKING:
    from budgetplan.costs.table import CostTable, LayerCost

# Sparse Update's fixed bit widths (Lin et al. 2022)
ACTIVATION_BITS = 8
WEIGHT_BITS = 8
BIAS_BITS = 32
MOMENTUM_BITS = 0
MASK_BITS = 1
CLASSIFIER_BITS = 0  # the classifier's weights and bias are not counted


def classifier(costs: CostTable) -> LayerCost | None:
    """The classifier: the last Linear layer of the table, if there is one."""
    linear = [layer for layer in costs.layers if layer.kind == "linear"]
    return linear[-1] if linear else None


def _is_grouped(layer: LayerCost) -> bool:
    """A grouped conv that is not depthwise (``groups == C_in == C_out``): Sparse Update
    keeps all of its input and trains all of its weights."""
    return layer.groups > 1 and not (layer.groups == layer.in_channels == layer.out_channels)


def _output_positions(layer: LayerCost) -> int:
    """Output positions per sample, summed over the layer's calls (``H'·W'``; tokens for Linear)."""
    if layer.weight_elements_per_channel:
        return layer.weight_grad_macs_per_channel // layer.weight_elements_per_channel
    return prod(layer.output_hw) * layer.calls


@dataclass(frozen=True)
class SparseUpdateTerms:
    """Bits Sparse Update counts for one layer, per decision (all at ``batch_size``)."""

    path: int  # masks, when the gradient reaches the layer (not the classifier)
    bias: int  # the bias, when it trains
    per_channel: int  # per kept input channel: its input and its weights
    keeps_all: bool  # a grouped conv keeps every channel whenever its weight trains
    head: int  # the classifier's input, when it trains

    def weight(self, layer: LayerCost, channels: int) -> int:
        """Bits of the kept input channels and weights for ``channels`` trained ones."""
        if not channels:
            return 0
        return self.per_channel * (layer.in_channels if self.keeps_all else channels)


def sparse_update_terms(layer: LayerCost, is_classifier: bool, batch_size: int = 1) -> SparseUpdateTerms:
    """The per-decision bits of ``layer``: what ``sparse_update_bits`` adds up, and what the
    planner's program caps when ``accounting`` is ``sparse-update`` (docs/tiny-training.md)."""
    if is_classifier:
        head = batch_size * layer.in_channels * layer.activation_elements_per_channel * ACTIVATION_BITS
        head += (layer.weight_elements + layer.bias_elements) * CLASSIFIER_BITS
        return SparseUpdateTerms(0, 0, 0, False, head)
    return SparseUpdateTerms(
        path=batch_size * layer.out_channels * _output_positions(layer) * MASK_BITS,
        bias=layer.bias_elements * (BIAS_BITS + MOMENTUM_BITS),
        per_channel=batch_size * layer.activation_elements_per_channel * ACTIVATION_BITS
        + layer.weight_elements_per_channel * (WEIGHT_BITS + MOMENTUM_BITS),
        keeps_all=_is_grouped(layer),
        head=0,
    )


def sparse_update_bits(costs: CostTable, choices: Mapping[str, Choice], batch_size: int = 1) -> dict[str, int]:
    """Bits Sparse Update counts per layer (only layers that count something)."""
    head = classifier(costs)
    picked = [choices.get(layer.name, Choice()) for layer in costs.layers]
    first = next((i for i, c in enumerate(picked) if c.updates), len(picked))
    bits: dict[str, int] = {}
    for i, (layer, choice) in enumerate(zip(costs.layers, picked, strict=True)):
        is_head = head is not None and layer.name == head.name
        terms = sparse_update_terms(layer, is_head, batch_size)
        if is_head:
            if choice.updates:
                bits[layer.name] = terms.head
            continue
        if i < first:
            continue  # the gradient never reaches it
        bits[layer.name] = terms.path + (terms.bias if choice.bias else 0) + terms.weight(layer, choice.channels)
    return bits


def sparse_update_memory(costs: CostTable, choices: Mapping[str, Choice], batch_size: int = 1) -> float:
    """Bytes of training memory as Sparse Update counts it (see the module docstring)."""
    return sum(sparse_update_bits(costs, choices, batch_size).values()) / 8
