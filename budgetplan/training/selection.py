"""``ChannelSelection``: which input channels of which layers train now, and which have so far.

It owns the trained layers (weight, input channels, groups, planned count), the current
selection (layer name -> sorted channel indices; the lean backward reads the same dict),
the channels each layer has trained at least once, the sampler that picks the next ones
with its scores, and the masks that keep every entry outside the selection unchanged by
the optimizer (``SelectionGuard``, docs/training.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from budgetplan.training.channels import channel_norms, weight_mask
from budgetplan.training.guard import SelectionGuard
from budgetplan.training.samplers import ChannelSampler, draw_seed


@dataclass(frozen=True)
class TrainedLayer:
    """A layer whose weight trains ``count`` (the plan's; drawn strategies vary) of its
    ``total`` input channels."""

    weight: nn.Parameter
    total: int
    groups: int
    count: int


class ChannelSelection:
    """The trained layers and their current and past channel choices.

    >>> from budgetplan.training.samplers import get_sampler
    >>> conv = nn.Conv2d(4, 2, 1)
    >>> channels = ChannelSelection(SelectionGuard(), get_sampler("uniform"))
    >>> channels.use({"conv": TrainedLayer(conv.weight, total=4, groups=1, count=2)})
    >>> channels.redraw(seed=0, epoch=0, step=0)
    >>> len(channels.current["conv"]), channels.trained_fraction(), channels.coverage()
    (2, 0.5, 0.5)
    """

    def __init__(self, guard: SelectionGuard, sampler: ChannelSampler) -> None:
        self.guard = guard
        self.sampler = sampler
        self.layers: dict[str, TrainedLayer] = {}
        self.current: dict[str, Tensor] = {}
        self.seen: dict[str, Tensor] = {}
        self.restored_frozen: set[str] = set()  # restored without channels, frozen by ``settle``

    def use(self, layers: dict[str, TrainedLayer]) -> None:
        """Train these layers from now on (the current selection is kept: the lean backward reads it)."""
        self.layers = dict(layers)

    def redraw(self, seed: int, epoch: int, step: int, channels: dict[str, list[int]] | None = None) -> None:
        """Draw every layer's channels: ``channels`` when a strategy chose them, else by the sampler."""
        for position, (name, layer) in enumerate(self.layers.items()):
            if name not in self.seen:
                self.seen[name] = torch.zeros(layer.total, dtype=torch.bool)
                self.sampler.track(name, layer.total)
            if channels is not None:
                idx = torch.tensor(channels.get(name, []), dtype=torch.long)
            elif self.sampler.keeps and name in self.current:
                continue  # chosen once, kept
            else:
                layer_seed = draw_seed(seed, epoch, step, position)
                idx = self.sampler.draw(name, layer.weight, layer.total, layer.groups, layer.count, layer_seed)
            self.select(name, idx)

    def select(self, name: str, idx: Tensor) -> None:
        """Train input channels ``idx`` of layer ``name`` from the next forward on."""
        layer = self.layers[name]
        weight = layer.weight
        self.seen[name][idx] = True
        self.restored_frozen.discard(name)
        # a layer left without channels (a drawn strategy's choice) is frozen: no graph reaches it
        weight.requires_grad_(idx.numel() > 0)
        if idx.numel() == 0:
            self.current.pop(name, None)
        else:
            self.current[name] = idx.to(weight.device)
        if idx.numel() < layer.total:
            self.guard.set_mask(weight, weight_mask(weight.shape, idx.to(weight.device), layer.groups))

    def settle(self) -> None:
        """Freeze the layers restored without channels, once the optimizers are built: the
        optimizer resumed holds what it held at the start of the run that saved the
        checkpoint, every trained layer (a drawn strategy leaves some without channels for a
        while), or its saved state would not load."""
        for name in self.restored_frozen:
            self.layers[name].weight.requires_grad_(False)
        self.restored_frozen.clear()

    def observe_gradients(self) -> None:
        """Hand the sampler the gradient norms of the selected channels (after backward)."""
        if not self.sampler.observes:
            return  # no norms to compute
        for name, layer in self.layers.items():
            grad = layer.weight.grad
            if grad is not None and name in self.sampler.scores and name in self.current:
                norms = channel_norms(grad, layer.total, layer.groups).cpu()
                self.sampler.observe(name, self.current[name].cpu(), norms)

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
            "scores": self.sampler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the selection, what was seen and the sampler's scores of the layers trained now."""
        restored = [name for name in self.layers if name in state["seen"]]
        for name in restored:
            layer = self.layers[name]
            weight = layer.weight
            idx = torch.tensor(state["selection"].get(name, []), dtype=torch.long, device=weight.device)
            if idx.numel():
                self.current[name] = idx
            else:
                self.restored_frozen.add(name)
            self.seen[name] = torch.zeros(layer.total, dtype=torch.bool)
            self.seen[name][state["seen"][name]] = True
            if idx.numel() < layer.total:
                # the optimizer state of these channels is in the checkpoint: keep it
                self.guard.set_mask(weight, weight_mask(weight.shape, idx, layer.groups), reset=False)
        self.sampler.load_state_dict({name: state["scores"][name] for name in restored})
