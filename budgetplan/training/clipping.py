"""Unit-wise adaptive gradient clipping: no output unit's step outgrows its weights.

One learning rate serves layers whose gradient-to-weight norm ratio differs by orders of
magnitude (layer by layer in a folded ImageNet MobileNetV2, about 2.6 for the stem,
0.4–0.9 for the expansion 1x1 convs, 10^-3–10^-2 for the depthwise convs;
docs/training.md). A rate that suits most layers throws the high-ratio ones off.
Adaptive gradient clipping (Brock et al., "High-Performance Large-Scale Image Recognition
Without Normalization", ICML 2021, §4.1) rescales the gradient of each output unit ``i``
whose ratio exceeds ``λ``::

    G_i  <-  λ · max(‖W_i‖, ε) / ‖G_i‖ · G_i      where ‖G_i‖ / max(‖W_i‖, ε) > λ

so a plain SGD step moves a unit by at most ``lr · λ`` of its norm, whatever the layer;
units below the threshold keep their gradient. The paper leaves the classifier unclipped
(it starts from scratch, its weights are small), and so does the callback.

>>> import torch
>>> w = torch.nn.Parameter(torch.ones(2, 4))
>>> w.grad = torch.tensor([[10.0, 0, 0, 0], [0.01, 0, 0, 0]])
>>> clip_relative([w], ratio=0.5)
>>> w.grad  # unit 0: ‖G‖ = 10 > 0.5 · ‖W‖ = 1, cut to 1; unit 1 under the limit
tensor([[1.0000, 0.0000, 0.0000, 0.0000],
        [0.0100, 0.0000, 0.0000, 0.0000]])
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

EPS = 1e-3  # the paper's floor on a unit's weight norm (zero-initialised units can still move)


@torch.no_grad()
def clip_relative(weights: Iterable[nn.Parameter], ratio: float, eps: float = EPS) -> None:
    """Clip each weight's gradient, per output unit (dimension 0), to ``ratio`` times the
    unit's weight norm (at least ``eps``), in place."""
    for weight in weights:
        grad = weight.grad
        if grad is None or weight.ndim < 2:
            continue
        dims = tuple(range(1, weight.ndim))
        limit = ratio * torch.linalg.vector_norm(weight, dim=dims, keepdim=True).clamp_min(eps)
        norm = torch.linalg.vector_norm(grad, dim=dims, keepdim=True)
        grad.mul_(torch.where(norm > limit, limit / norm.clamp_min(1e-12), torch.ones_like(norm)))
