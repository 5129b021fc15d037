"""From element counts to bytes at a device's bit widths (docs/cost-model.md, "From elements
to bytes"): the one place that knows what an element of each kind weighs.

>>> from budgetplan.device.profile import load_device
>>> m7 = load_device("cortex-m7")
>>> (m7.bits.weight, m7.bits.gradient, m7.bits.optimizer), bytes_per_update(m7, m7.bits.weight)
((8, 0, 0), 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from budgetplan.device.profile import FrozenWeights

if TYPE_CHECKING:
    from budgetplan.costs.table import CostTable, LayerCost
    from budgetplan.device.profile import DeviceProfile


@dataclass(frozen=True)
class LayerBytes:
    """A layer's memory coefficients on one device, for one batch size, in bytes."""

    saved_per_channel: float  # selected input channel kept for the weight gradient
    weight_per_channel: float  # updated weight copy + gradient + optimizer state
    bias: float  # updated bias + gradient + optimizer state (0 if the layer has none)
    path: float  # masks and activations kept when the gradient reaches the layer
    live_forward: float
    live_backward: float


def bytes_per_update(device: DeviceProfile, stored_bits: int) -> float:
    """Bytes one updated element holds in SRAM: its gradient and optimizer state, and its
    own copy when the frozen model stays in flash (``stored_bits`` is its bit width)."""
    copy = stored_bits if device.frozen_weights is FrozenWeights.FLASH else 0
    return (copy + device.bits.gradient + device.bits.optimizer) / 8


def layer_bytes(layer: LayerCost, device: DeviceProfile, batch_size: int) -> LayerBytes:
    """Bytes per unit of decision for ``layer`` on ``device``."""
    bits = device.bits
    act = batch_size * bits.activation / 8
    return LayerBytes(
        saved_per_channel=layer.activation_elements_per_channel * act,
        weight_per_channel=layer.weight_elements_per_channel * bytes_per_update(device, bits.weight),
        bias=layer.bias_elements * bytes_per_update(device, bits.bias),
        path=batch_size * (layer.mask_elements * bits.mask + layer.path_activation_elements * bits.activation) / 8,
        live_forward=layer.forward_live_elements * act,
        live_backward=layer.backward_live_elements * batch_size * bits.backward / 8,
    )


SCALE_BITS = 32  # a float32 scale per output unit of a weight stored narrower than float32


def model_bytes(costs: CostTable, device: DeviceProfile) -> int:
    """Bytes of all parameters stored at the device's bit widths (BatchNorm folded), with
    each layer's per-unit scales where weights are quantised (docs/cost-model.md)."""
    weights = sum(layer.weight_elements for layer in costs.layers) + costs.other_param_elements
    biases = sum(layer.bias_elements for layer in costs.layers)
    scales = sum(layer.out_channels for layer in costs.layers) if device.bits.weight < 32 else 0
    return (weights * device.bits.weight + biases * device.bits.bias + scales * SCALE_BITS + 7) // 8


def base_bytes(costs: CostTable, device: DeviceProfile) -> int:
    """Memory the frozen model takes in the training budget (0 when it stays in flash)."""
    return model_bytes(costs, device) if device.frozen_weights is FrozenWeights.SRAM else 0
