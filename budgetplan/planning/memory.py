"""What a set of per-layer decisions costs on a device, over the training step.

This is the memory model of docs/planner.md evaluated directly, step by step in time:
saved tensors accumulate during forward and are released during backward, so the peak is
the largest of, for each layer ``l`` in forward order,

* forward at ``l``:  ``base + resident + live_fwd(l) + Σ_{l' ≤ l} saved(l')``
* backward at ``l``: ``base + resident + y(l)·live_bwd(l) + Σ_{l' ≤ l} saved(l')``

``saved(l)`` is the selected input channels of ``l`` plus, when the gradient reaches
``l`` (``y(l)``), the masks and activations of the ops that follow it. The copy of the
selected channels is taken while the layer's input is still live, so the forward sum
includes layer ``l``'s own saved tensors. ``resident`` is the updated weights and biases
(with their gradients and optimizer state), held for the whole run; ``base`` is the
frozen model itself when the device keeps weights in RAM (``frozen_weights: sram``). The
byte terms come from ``budgetplan.costs.pricing``.

With a patch stage (``executor: patch``), the layers before its split hold no whole
buffer; the stage itself holds ``base + resident`` and its working set (one patch, its
outputs and the input).

The planner (``budgetplan.planning.ilp``) states the same model as linear constraints; this
module is the reference it is tested against.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from budgetplan.costs.pricing import base_bytes, layer_bytes
from budgetplan.plan.prediction import Prediction

if TYPE_CHECKING:
    from budgetplan.costs.table import CostTable, PatchOption
    from budgetplan.device.profile import DeviceProfile


@dataclass(frozen=True)
class Choice:
    """What one layer trains: ``channels`` input channels of its weight, and its bias."""

    channels: int = 0
    bias: bool = False

    @property
    def updates(self) -> bool:
        return self.channels > 0 or self.bias


def backward_macs(costs: CostTable, choices: Mapping[str, Choice], batch_size: int) -> list[int]:
    """Backward MACs spent at each layer: weight gradient of the selection, plus the
    input gradient when an earlier layer is on the path."""
    picked = [choices.get(layer.name, Choice()) for layer in costs.layers]
    first = next((i for i, c in enumerate(picked) if c.updates), len(picked))
    return [
        batch_size * (c.channels * layer.weight_grad_macs_per_channel + (layer.input_grad_macs if i > first else 0))
        for i, (layer, c) in enumerate(zip(costs.layers, picked, strict=True))
    ]


def predict(
    costs: CostTable,
    device: DeviceProfile,
    choices: Mapping[str, Choice],
    batch_size: int = 1,
    patch: PatchOption | None = None,
) -> Prediction:
    """Evaluate the memory over time and the compute of one step for ``choices``, with
    the layers before ``patch.split`` run in patches when ``patch`` is given."""
    terms = [layer_bytes(layer, device, batch_size) for layer in costs.layers]
    picked = [choices.get(layer.name, Choice()) for layer in costs.layers]
    first = next((i for i, c in enumerate(picked) if c.updates), len(picked))
    if patch is not None and patch.split > first:
        raise ValueError(f"a patch stage runs frozen layers only, but {costs.layers[first].name} is trained")
    resident = sum(
        t.weight_per_channel * c.channels + (t.bias if c.bias else 0) for t, c in zip(terms, picked, strict=True)
    )
    base = base_bytes(costs, device)
    peak, peak_at, saved = 0.0, "", 0.0
    split = patch.split if patch is not None else 0
    patch_bytes = patch.live_elements * batch_size * device.bits.activation / 8 if patch is not None else 0.0
    if patch is not None:
        peak, peak_at = base + resident + patch_bytes, f"patch stage ({patch.grid}x{patch.grid})"
    for i, (layer, t, c) in enumerate(zip(costs.layers, terms, picked, strict=True)):
        on_path = i >= first
        saved += t.saved_per_channel * c.channels + (t.path if on_path else 0)
        forward = t.live_forward if i >= split else 0
        for phase, buffer in (("forward", forward), ("backward", t.live_backward if on_path else 0)):
            total = base + resident + buffer + saved
            if total > peak:
                peak, peak_at = total, f"{phase} at {layer.name}"
    fwd = (costs.forward_macs + (patch.extra_macs if patch is not None else 0)) * batch_size
    bwd = sum(backward_macs(costs, choices, batch_size))
    return Prediction(
        peak_bytes=peak,
        peak_at=peak_at,
        base_bytes=base,
        resident_bytes=resident,
        saved_bytes=saved,
        training_memory_bytes=resident + saved,
        forward_macs=fwd,
        backward_macs=bwd,
        step_seconds=(fwd + bwd) / device.macs_per_second,
        patch_grid=patch.grid if patch is not None else 0,
        patch_until=costs.layers[split].name if patch is not None else "",
        patch_bytes=patch_bytes,
    )
