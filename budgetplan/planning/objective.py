"""The planner's objective: what a layer's choice is worth (docs/planner.md, "Objective").

>>> round(utility(1 / 4, "coverage", epochs=10), 3), utility(1 / 4, Utility.LINEAR)
(0.944, 0.25)
"""

from __future__ import annotations

from budgetplan.costs.table import CostTable, LayerCost
from budgetplan.planning.importance import Importance
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


def layer_value(layer: LayerCost, choice: Choice, importance: Importance, options: PlannerOptions) -> float:
    """One layer's term of the objective: ``w[l]·u(c/C_in)`` plus ``w_b[l]`` for the bias."""
    value = importance.bias.get(layer.name, 0.0) if choice.bias else 0.0
    if choice.channels:
        fraction = choice.channels / layer.in_channels
        value += importance.weight.get(layer.name, 0.0) * utility(fraction, options.utility, options.epochs)
    return value


def objective(costs: CostTable, importance: Importance, options: PlannerOptions, choices: dict[str, Choice]) -> float:
    """The planner's objective for a set of choices."""
    return sum(layer_value(layer, choices.get(layer.name, Choice()), importance, options) for layer in costs.layers)
