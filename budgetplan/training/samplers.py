"""Which input channels a layer trains: channel samplers (docs/training.md).

Every draw is a pure function of ``(seed, epoch, step, layer)`` and of numbers that are
the same on every process (weights, all-reduced gradients), so each DDP rank draws the
same channels without talking to the others.

* ``uniform``: channels uniformly at random, a fresh subset each draw (TraDy,
  Quélennec et al. 2026);
* ``gradient``: probability proportional to the channel's weight-gradient norm seen
  since the last draw; channels not trained since then count as the largest norm seen,
  so they are favoured (MeDyate-style);
* ``magnitude``: the channels with the largest weight norm, chosen once and kept
  (the static sparse-update baseline of Lin et al. 2022);
* ``largest``: the channels with the largest score (the last measured gradient norm;
  a channel never measured scores infinity), ties broken at random (Dynamic Gradient
  Sparse Update, Li & Chang 2025).
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

SAMPLERS = ("uniform", "gradient", "magnitude", "largest")


def draw_seed(seed: int, epoch: int, step: int, layer: int) -> int:
    """A 63-bit seed that depends on nothing but its four arguments."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{step}:{layer}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def draw_channels(
    sampler: str,
    total: int,
    count: int,
    seed: int,
    scores: Tensor | None = None,
) -> Tensor:
    """``count`` sorted input-channel indices out of ``total``.

    ``scores`` (one per channel) weight the ``gradient`` sampler and rank the
    ``magnitude`` and ``largest`` ones; ``uniform`` ignores them.

    >>> draw_channels("uniform", 10, 3, seed=7).tolist() == draw_channels("uniform", 10, 3, seed=7).tolist()
    True
    >>> draw_channels("magnitude", 4, 2, seed=0, scores=torch.tensor([0.1, 3.0, 0.2, 5.0])).tolist()
    [1, 3]
    >>> draw_channels("largest", 4, 2, seed=0, scores=torch.tensor([0.1, float("inf"), 0.2, 5.0])).tolist()
    [1, 3]
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
    if count >= total:
        return torch.arange(total)
    generator = torch.Generator().manual_seed(seed)
    if sampler == "magnitude":
        assert scores is not None
        return torch.topk(scores.float(), count).indices.sort().values
    if sampler == "largest":
        assert scores is not None
        order = torch.randperm(total, generator=generator)  # random order breaks ties at random
        return order[torch.topk(scores.float()[order], count).indices].sort().values
    if sampler == "gradient" and scores is not None and float(scores.max()) > 0:
        weights = scores.float().clamp_min(1e-12)
        return torch.multinomial(weights, count, replacement=False, generator=generator).sort().values
    return torch.randperm(total, generator=generator)[:count].sort().values
