"""The planner's objective: what a layer's choice is worth (docs/planner.md, "Objective").

>>> round(utility(1 / 4, "coverage", epochs=10), 3), utility(1 / 4, Utility.LINEAR)
(0.944, 0.25)

Sparse Update's contribution analysis values choices, not layers (``Importance.curves``,
``Importance.bias_depths``): a layer's weight is worth its measured curve at the trained
fraction, and the biases the value measured for the depth they reach.
"""

from __future__ import annotations

import itertools

from budgetplan.costs.table import CostTable, LayerCost
from budgetplan.importance.scores import Importance
from budgetplan.planning.memory import Choice
from budgetplan.planning.options import PlannerOptions, Utility


def channel_options(layer: LayerCost, ratios: tuple[float, ...]) -> list[int]:
    """Distinct channel counts ``round(r·C_in)`` (at least 1) for the ratio grid."""
    return sorted({min(layer.in_channels, max(1, round(r * layer.in_channels))) for r in ratios})


def utility(fraction: float, kind: Utility | str = Utility.COVERAGE, epochs: int = 10) -> float:
    """Value of training ``fraction`` of a layer's input channels each epoch."""
    if Utility.from_str(kind) is Utility.LINEAR:
        return fraction
    return 1.0 - (1.0 - fraction) ** epochs


def curve_value(curve: dict[float, float], fraction: float) -> float:
    """A measured curve (fraction of channels → value) at ``fraction``: linear between the
    measured points and from (0, 0), the last value beyond them.

    >>> curve_value({0.25: 1.0, 1.0: 4.0}, 0.5), curve_value({0.25: 1.0}, 0.125)
    (2.0, 0.5)
    """
    points = [(0.0, 0.0), *sorted(curve.items())]
    for (f0, v0), (f1, v1) in itertools.pairwise(points):
        if fraction <= f1 + 1e-9:
            return v0 + (v1 - v0) * max(0.0, fraction - f0) / (f1 - f0)
    return points[-1][1]


def bias_order(costs: CostTable) -> list[str]:
    """The layers a bias depth ``k`` counts, from the end: every layer with a bias but
    the classifier (the last layer), which every scheme trains."""
    return [layer.name for layer in reversed(costs.layers[:-1]) if layer.bias_elements > 0]


def layer_value(layer: LayerCost, choice: Choice, importance: Importance, options: PlannerOptions) -> float:
    """One layer's term of the objective: ``w[l]·u(c/C_in)`` (or the layer's measured
    curve) plus ``w_b[l]`` for the bias (biases valued by depth count in ``objective``)."""
    value = importance.bias.get(layer.name, 0.0) if choice.bias and not importance.bias_depths else 0.0
    if choice.channels:
        fraction = choice.channels / layer.in_channels
        if layer.name in importance.curves:
            value += curve_value(importance.curves[layer.name], fraction)
        elif not importance.curves:
            value += importance.weight.get(layer.name, 0.0) * utility(fraction, options.utility, options.epochs)
    return value


def depth_value(costs: CostTable, importance: Importance, choices: dict[str, Choice]) -> float:
    """The value of the biases trained from the end without a gap: that of the largest
    measured depth they reach."""
    depth = 0
    for name in bias_order(costs):
        if not choices.get(name, Choice()).bias:
            break
        depth += 1
    reached = [k for k in importance.bias_depths if k <= depth]
    return importance.bias_depths[max(reached)] if reached else 0.0


def objective(costs: CostTable, importance: Importance, options: PlannerOptions, choices: dict[str, Choice]) -> float:
    """The planner's objective for a set of choices."""
    value = sum(layer_value(layer, choices.get(layer.name, Choice()), importance, options) for layer in costs.layers)
    return value + (depth_value(costs, importance, choices) if importance.bias_depths else 0.0)
