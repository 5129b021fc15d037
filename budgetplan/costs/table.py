"""The cost table: per-layer memory and MAC costs of a model, in forward order.

What each field counts is described in ``docs/cost-model.md``; ``budgetplan.costs.build``
makes a table from a traced forward pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from budgetplan.costs.dataflow import LayerShape
from budgetplan.device.profile import Executor


@dataclass(frozen=True, kw_only=True)
class LayerCost(LayerShape):
    """Costs of one plannable layer (its geometry, ``LayerShape``, and what it costs);
    element and MAC counts are per sample."""

    kind: str  # "conv", "depthwise", "grouped" or "linear"
    index: int
    input_hw: tuple[int, ...]
    output_hw: tuple[int, ...]
    calls: int
    forward_macs: int
    weight_elements_per_channel: int
    activation_elements_per_channel: int
    weight_grad_macs_per_channel: int
    bias_elements: int
    bias_param: str | None
    mask_elements: int
    path_activation_elements: int
    input_grad_macs: int
    forward_live_elements: int
    backward_live_elements: int

    @property
    def weight_elements(self) -> int:
        """All weight elements of the layer."""
        return self.in_channels * self.weight_elements_per_channel

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["macs"] = self.forward_macs
        for key in ("kernel_size", "weight_shape", "input_hw", "output_hw"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerCost:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("kernel_size", "weight_shape", "input_hw", "output_hw"):
            fields[key] = tuple(fields[key])
        return cls(**fields)


@dataclass(frozen=True)
class PatchOption:
    """Running the ops before layer ``split`` (its index in the cost table) on a
    ``grid × grid`` patch grid. Elements and MACs are per sample."""

    split: int
    grid: int
    live_elements: int  # one patch's working set + the split's outputs + the input, at the worst patch
    extra_macs: int  # MACs of the halo, computed by more than one patch

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class UncostedModule:
    """A module left out of planning (stays frozen), and why."""

    name: str
    type: str
    reason: str


@dataclass(frozen=True)
class CostTable:
    """Per-layer costs of a model for one input size, in forward order."""

    model: str
    input_shape: tuple[int, ...]  # one sample, e.g. (3, 128, 128)
    executor: Executor
    layers: tuple[LayerCost, ...]
    other_param_elements: int = 0  # parameters outside the plannable layers and their biases
    uncosted: tuple[UncostedModule, ...] = ()
    unknown_ops: tuple[str, ...] = ()  # ops assumed to save nothing for backward
    # prefixes that can run in patches (MCU executors); planned with ``executor: patch``
    patch_options: tuple[PatchOption, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "executor", Executor.from_str(self.executor))

    @property
    def forward_macs(self) -> int:
        return sum(layer.forward_macs for layer in self.layers)

    def fingerprint(self) -> list[tuple[str, tuple[int, ...]]]:
        """Layer names and weight shapes: what a plan must match."""
        return [(layer.name, layer.weight_shape) for layer in self.layers]

    def layer(self, name: str) -> LayerCost:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)
