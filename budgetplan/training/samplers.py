"""Which input channels a layer trains: channel samplers, one class each, by name (docs/training.md).

Every draw is a pure function of ``(seed, epoch, step, layer)`` and of numbers that are
the same on every process (weights, all-reduced gradients), so each DDP rank draws the
same channels without talking to the others. A sampler owns its per-channel scores: it
``observe``s the gradient norms of the channels that trained, and ``draw``s the next ones.

A new sampler is one subclass with a ``name``, registered with ``register_sampler``::

    @register_sampler
    class Last(ChannelSampler):
        name = "last"

        def choose(self, scores, total, count, generator):
            return torch.arange(total - count, total)

>>> sampler = SAMPLERS["largest"]()
>>> sampler.track("conv", 4)
>>> sampler.observe("conv", torch.tensor([0, 2, 3]), torch.tensor([0.1, 9.0, 0.2, 5.0]))
>>> sampler.draw("conv", torch.ones(4, 4), 4, 1, 2, seed=0).tolist()  # channel 1 never measured
[1, 3]
"""

from __future__ import annotations

import hashlib
from typing import ClassVar

import torch
from torch import Tensor

from budgetplan.registry import Registry
from budgetplan.training.channels import channel_norms


def draw_seed(seed: int, epoch: int, step: int, layer: int) -> int:
    """A 63-bit seed that depends on nothing but its four arguments."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{step}:{layer}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class ChannelSampler:
    """Chooses ``count`` of a layer's ``total`` input channels at each draw.

    ``initial`` is a channel's score before anything is measured; ``observes`` says
    whether the sampler reads gradient norms (only then are they computed); ``keeps``
    says that the first choice is kept for the whole fit.
    """

    name: ClassVar[str] = ""
    initial: ClassVar[float] = 0.0
    observes: ClassVar[bool] = False
    keeps: ClassVar[bool] = False

    def __init__(self) -> None:
        self.scores: dict[str, Tensor] = {}

    def track(self, name: str, total: int) -> None:
        """Start scoring layer ``name`` (once)."""
        if name not in self.scores:
            self.scores[name] = torch.full((total,), self.initial)

    def observe(self, name: str, idx: Tensor, norms: Tensor) -> None:
        """Gradient norms of every input channel after a step; ``idx`` are the ones that trained."""

    def draw(self, name: str, weight: Tensor, total: int, groups: int, count: int, seed: int) -> Tensor:
        """``count`` sorted input-channel indices out of ``total`` for layer ``name``."""
        scores = self.scores_for(name, weight, total, groups)
        if count >= total:
            return torch.arange(total)
        return self.choose(scores, total, count, torch.Generator().manual_seed(seed)).sort().values

    def scores_for(self, name: str, weight: Tensor, total: int, groups: int) -> Tensor:
        """The scores a draw ranks or weights channels by (a copy)."""
        return self.scores[name].clone()

    def choose(self, scores: Tensor, total: int, count: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict[str, list[float]]:
        return {name: scores.tolist() for name, scores in self.scores.items()}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        self.scores = {name: torch.tensor(values) for name, values in state.items()}


SAMPLERS: Registry[ChannelSampler] = Registry(
    lambda name, known: f"sampler must be one of {', '.join(known)}, got {name!r}"
)
register_sampler = SAMPLERS.register  # class decorator: a sampler available by its name
get_sampler = SAMPLERS.create  # a new sampler by name, or a clear error listing the known ones


@register_sampler
class Uniform(ChannelSampler):
    """Channels uniformly at random, a fresh subset each draw (TraDy, Quélennec et al. 2026)."""

    name = "uniform"

    def choose(self, scores: Tensor, total: int, count: int, generator: torch.Generator) -> Tensor:
        return torch.randperm(total, generator=generator)[:count]


@register_sampler
class GradientWeighted(ChannelSampler):
    """Probability proportional to the weight-gradient norm summed since the last draw;
    channels not trained since then count as the largest norm seen, so they are favoured
    (MeDyate-style importance sampling)."""

    name = "gradient"
    observes = True

    def observe(self, name: str, idx: Tensor, norms: Tensor) -> None:
        self.scores[name][idx] += norms[idx]

    def scores_for(self, name: str, weight: Tensor, total: int, groups: int) -> Tensor:
        scores = self.scores[name].clone()
        tried = scores > 0
        if tried.any():
            scores[~tried] = scores[tried].max()
        self.scores[name].zero_()  # summed afresh until the next draw
        return scores

    def choose(self, scores: Tensor, total: int, count: int, generator: torch.Generator) -> Tensor:
        if float(scores.max()) > 0:
            return torch.multinomial(scores.float().clamp_min(1e-12), count, replacement=False, generator=generator)
        return torch.randperm(total, generator=generator)[:count]


@register_sampler
class LargestWeight(ChannelSampler):
    """The channels with the largest weight norm, chosen once and kept (the static
    selection of Sparse Update, Lin et al. 2022)."""

    name = "magnitude"
    keeps = True

    def scores_for(self, name: str, weight: Tensor, total: int, groups: int) -> Tensor:
        return channel_norms(weight, total, groups).cpu()

    def choose(self, scores: Tensor, total: int, count: int, generator: torch.Generator) -> Tensor:
        return torch.topk(scores.float(), count).indices


@register_sampler
class LargestGradient(ChannelSampler):
    """The channels with the largest last measured gradient norm; a channel never measured
    scores infinity, ties are broken at random (Dynamic Gradient Sparse Update, Li & Chang 2025)."""

    name = "largest"
    initial = float("inf")
    observes = True

    def observe(self, name: str, idx: Tensor, norms: Tensor) -> None:
        self.scores[name][idx] = norms[idx]

    def choose(self, scores: Tensor, total: int, count: int, generator: torch.Generator) -> Tensor:
        order = torch.randperm(total, generator=generator)  # a random order breaks ties at random
        return order[torch.topk(scores.float()[order], count).indices]
