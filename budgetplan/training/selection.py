"""``ChannelSelection``: which input channels of which layers train now, and which have so far.

It owns the trained layers (weight, input channels, groups, planned count), the current
selection (layer name -> sorted channel indices; the lean backward reads the same dict),
the channels each layer has trained at least once, and the masks that keep every entry
outside the selection unchanged by the optimizer (``SelectionGuard``, docs/training.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from budgetplan.training.channels import weight_mask
from budgetplan.training.guard import SelectionGuard


@dataclass(frozen=True)
class TrainedLayer:
    """A layer whose weight trains ``count`` (the plan's; drawn strategies vary) of its
    ``total`` input channels."""

    weight: nn.Parameter
    total: int
    groups: int
    count: int


class ChannelSelection:
    """The trained layers and their current and past channel choices."""

    def __init__(self, guard: SelectionGuard) -> None:
        self.guard = guard
        self.layers: dict[str, TrainedLayer] = {}
        self.current: dict[str, Tensor] = {}
        self.seen: dict[str, Tensor] = {}

    def add(self, name: str, layer: TrainedLayer) -> None:
        self.layers[name] = layer

    def start(self, name: str) -> bool:
        """Begin recording layer ``name``; False when it was already begun."""
        if name in self.seen:
            return False
        self.seen[name] = torch.zeros(self.layers[name].total, dtype=torch.bool)
        return True

    def select(self, name: str, idx: Tensor) -> None:
        """Train input channels ``idx`` of layer ``name`` from the next forward on."""
        layer = self.layers[name]
        weight = layer.weight
        self.seen[name][idx] = True
        # a layer left without channels (a drawn strategy's choice) is frozen: no graph reaches it
        weight.requires_grad_(idx.numel() > 0)
        if idx.numel() == 0:
            self.current.pop(name, None)
        else:
            self.current[name] = idx.to(weight.device)
        if idx.numel() < layer.total:
            self.guard.set_mask(weight, weight_mask(weight.shape, idx.to(weight.device), layer.groups))

    def trained_fraction(self) -> float:
        """Fraction of the trained layers' weights trained under the current selection."""
        if not self.layers:
            return 0.0
        total = sum(t.weight.numel() for t in self.layers.values())
        trained = sum(len(self.current.get(n, ())) * t.weight.numel() // t.total for n, t in self.layers.items())
        return trained / total

    def coverage(self) -> float:
        """Fraction of the trained layers' input channels trained at least once so far."""
        seen = sum(int(s.sum()) for s in self.seen.values())
        total = sum(s.numel() for s in self.seen.values())
        return seen / total if total else 0.0

    def state_dict(self) -> dict[str, Any]:
        return {
            "selection": {k: v.cpu().tolist() for k, v in self.current.items()},
            "seen": {k: v.nonzero().squeeze(1).tolist() for k, v in self.seen.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> list[str]:
        """Restore the selection and what was seen; the names of the layers restored."""
        restored = []
        for name, layer in self.layers.items():
            if name not in state["seen"]:
                continue
            weight = layer.weight
            idx = torch.tensor(state["selection"].get(name, []), dtype=torch.long, device=weight.device)
            weight.requires_grad_(idx.numel() > 0)
            if idx.numel():
                self.current[name] = idx
            self.seen[name] = torch.zeros(layer.total, dtype=torch.bool)
            self.seen[name][state["seen"][name]] = True
            if idx.numel() < layer.total:
                # the optimizer state of these channels is in the checkpoint: keep it
                self.guard.set_mask(weight, weight_mask(weight.shape, idx, layer.groups), reset=False)
            restored.append(name)
        return restored
