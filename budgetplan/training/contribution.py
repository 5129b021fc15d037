"""Sparse Update's contribution analysis (Lin et al., NeurIPS 2022, §3.2), measured on data.

Each candidate choice is tried on its own in a short fine-tune from the module as it is,
and valued by how much it lowers the loss on held-out batches, over a baseline that
trains the classifier alone (every scheme trains it):

* ``Δ_b[k]``: the biases of the last ``k`` layers (``bias_order``) with the classifier;
* ``Δ_W[l, r]``: the weight of layer ``l`` with the classifier, a fraction ``r`` of its
  input channels: those of largest weight norm, fixed, as Sparse Update trains them.

The paper measures accuracy after a trial fine-tune; a few steps move accuracy on a few
held-out batches by whole images, so the held-out loss decrease is measured instead. A
choice that raised the loss is worth 0, and more channels or a deeper bias depth is worth
at least what fewer were (the search would not choose fewer for more memory). The
classifier's own score is the baseline's decrease from the untrained loss.

The result is an ``Importance`` whose ``curves`` and ``bias_depths`` the planner chooses
among (docs/importance.md): Sparse Update's scheme search, solved exactly by the ILP
instead of by evolution. Nothing of the module changes: every trial starts from its
parameters and puts them back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from budgetplan.costs.layers import plannable_layers
from budgetplan.costs.table import CostTable, LayerCost
from budgetplan.errors import BudgetPlanError
from budgetplan.importance.scores import Importance
from budgetplan.planning.objective import bias_order
from budgetplan.planning.options import SPARSE_UPDATE_RATIOS
from budgetplan.training.channels import channel_norms, weight_mask
from budgetplan.training.probe import probing
from budgetplan.training.trials import HELD_OUT, Trial, Trials, module_lr

DEPTHS = (4, 8, 16, 24, 32)  # bias depths tried; the published schemes train 16 to 34
CANDIDATES = 12  # the last layers (before the classifier) whose weights are analysed
STEPS = 4  # optimizer steps of one trial
UNIT = "held-out loss decrease after a trial fine-tune"


def _monotone(values: dict[Any, float]) -> dict[Any, float]:
    """Gains clipped at 0 and made non-decreasing in the choice (a running maximum)."""
    best, out = 0.0, {}
    for key in sorted(values):
        best = max(best, values[key])
        out[key] = best
    return out


def _depth_shares(depth_value: dict[int, float], order: list[str]) -> dict[str, float]:
    """Per-layer shares of the bias depth curve, for rankings: each step of depth split
    evenly over the layers it adds."""
    shares: dict[str, float] = {}
    previous_k, previous = 0, 0.0
    for k, value in depth_value.items():
        for name in order[previous_k:k]:
            shares[name] = (value - previous) / (k - previous_k)
        previous_k, previous = k, value
    return shares


def _weight_curves(
    trials: Trials,
    baseline: Trial,
    base: float,
    layers: Sequence[LayerCost],
    weights: Mapping[str, nn.Parameter],
    ratios: tuple[float, ...],
) -> dict[str, dict[float, float]]:
    """The held-out gain of training each layer's top-norm channels at each ratio, beside the baseline."""
    curves: dict[str, dict[float, float]] = {}
    for layer in layers:
        weight = weights[layer.name]
        norms = channel_norms(weight, layer.in_channels, layer.groups)
        gains = {}
        for ratio in ratios:
            count = min(layer.in_channels, max(1, round(ratio * layer.in_channels)))
            mask = weight_mask(weight.shape, norms.topk(count).indices, layer.groups).to(weight.dtype)
            gains[ratio] = base - trials.run([*baseline, (weight, mask)])
        curves[layer.name] = _monotone(gains)
    return curves


def contributions_on_batches(
    module: nn.Module,
    batches: Iterable[Any],
    costs: CostTable,
    data_name: str,
    prefix: str = "",
    *,
    candidates: int = CANDIDATES,
    ratios: tuple[float, ...] = SPARSE_UPDATE_RATIOS,
    depths: tuple[int, ...] = DEPTHS,
    held_out: int = HELD_OUT,
    steps: int = STEPS,
    lr: float | None = None,
) -> Importance:
    """Sparse Update's contribution analysis of ``costs``' layers, from ``module.training_step``
    on ``batches`` (the last ``held_out`` value the trials, the others train them for
    ``steps`` steps at ``lr``, by default the module's own): ``1 + len(depths) +
    candidates·len(ratios)`` trials, the module left as it was.

    ``prefix`` puts ``costs``' layer names under the module's (``model.`` for a wrapped one).
    """
    batches = list(batches)
    if len(batches) <= held_out:
        raise BudgetPlanError(
            f"contribution analysis needs more than {held_out} batches of {data_name} "
            f"({held_out} are held out), got {len(batches)}"
        )
    layers, params = plannable_layers(module), dict(module.named_parameters())
    head, order = costs.layers[-1], bias_order(costs)

    def bias(name: str) -> list[tuple[nn.Parameter, Tensor | None]]:
        found = params.get(prefix + param) if (param := costs.layer(name).bias_param) else None
        return [(found, None)] if found is not None else []

    baseline: Trial = [(layers[prefix + head.name].weight, None), *bias(head.name)]
    trials = Trials(module, batches[:-held_out], batches[-held_out:], steps, lr or module_lr(module))
    with probing(module, requires_grad=False):
        untrained = trials.held_out_loss()
        base = trials.run(baseline)
        bias_gain = {
            k: base - trials.run([*baseline, *(b for name in order[:k] for b in bias(name))])
            for k in sorted({min(k, len(order)) for k in depths if k >= 1})
            if order
        }
        tried = costs.layers[:-1][-candidates:] if candidates else []
        weights = {layer.name: layers[prefix + layer.name].weight for layer in tried}
        curves = _weight_curves(trials, baseline, base, tried, weights, ratios)
    depth_value = _monotone(bias_gain)
    shares = _depth_shares(depth_value, order)
    source = (
        f"measured: contribution analysis (Sparse Update), {len(curves)} layers x {len(ratios)} ratios and "
        f"{len(depth_value)} bias depths, {steps}-step trials on {len(batches) - held_out} batches of {data_name}, "
        f"valued on {held_out} held-out batches (baseline held-out loss {base:.4g})"
    )
    weight_scores = {layer.name: max(curves.get(layer.name, {0: 0.0}).values()) for layer in costs.layers}
    weight_scores[head.name] = max(0.0, untrained - base)  # the classifier's own, which every scheme trains
    importance = Importance(source, weight_scores, shares, UNIT, None, curves, depth_value)
    if sum(weight_scores.values()) + sum(shares.values()) <= 0:
        raise BudgetPlanError(f"contribution analysis on {data_name}: no trial lowered the held-out loss")
    return importance.normalised()
