"""Layer importance: the weights of the planner's objective (DESIGN.md §5).

Without measurements budgetplan uses a documented prior: a layer's weight update is
worth its share of the model's trainable elements, and so is its bias. The objective
then reads as the expected fraction of the model's parameters trained at least once.
It favours the late pointwise convs and the classifier over depthwise convs, which is
where Lin et al. 2022 (Fig. 4) and Quélennec et al. 2026 (§4) found the accuracy gain of
sparse updates to lie; it knows nothing of the data. Measured importance (TraDy's
reweighted gradient norm) is read from a YAML file::

    source: reweighted gradient norm, 200 batches of my data   # optional
    layers:
      features.18.0: {weight: 0.21, bias: 0.004}
      classifier.1: 0.35            # a number alone is the weight score

Scores are normalised to sum to 1 over weights and biases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from budgetplan.costs import CostTable
from budgetplan.errors import BudgetPlanError
from budgetplan.files import read_yaml

PRIOR_SOURCE = "prior: share of trainable elements (no data)"


@dataclass(frozen=True)
class Importance:
    """Per-layer objective weights for weight and bias updates, and where they came from."""

    source: str
    weight: dict[str, float]
    bias: dict[str, float] = field(default_factory=dict)

    def normalised(self) -> Importance:
        total = sum(self.weight.values()) + sum(self.bias.values())
        if total <= 0:
            raise BudgetPlanError(f"importance ({self.source}) has no positive score")
        return Importance(
            self.source,
            {k: v / total for k, v in self.weight.items()},
            {k: v / total for k, v in self.bias.items()},
        )


def prior_importance(costs: CostTable) -> Importance:
    """The no-data prior: each layer's share of the trainable elements."""
    weight = {layer.name: float(layer.weight_elements) for layer in costs.layers}
    bias = {layer.name: float(layer.bias_elements) for layer in costs.layers}
    return Importance(PRIOR_SOURCE, weight, bias).normalised()


def _score(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise BudgetPlanError(f"{where}: expected a number >= 0, got {value!r}")
    return float(value)


def load_importance(path: str | Path, costs: CostTable) -> Importance:
    """Read an importance file and check that it names exactly the model's layers."""
    path = Path(path)
    data = read_yaml(path, "importance file")
    if not isinstance(data, dict) or not isinstance(data.get("layers"), dict):
        raise BudgetPlanError(f"{path}: field 'layers': expected a mapping of layer name to score")
    weight: dict[str, float] = {}
    bias: dict[str, float] = {}
    for name, value in data["layers"].items():
        where = f"{path}: field 'layers.{name}'"
        if isinstance(value, dict):
            unknown = set(value) - {"weight", "bias"}
            if unknown or "weight" not in value:
                raise BudgetPlanError(f"{where}: expected a number or {{weight: x, bias: y}}")
            weight[name] = _score(value["weight"], where + ".weight")
            bias[name] = _score(value.get("bias", 0.0), where + ".bias")
        else:
            weight[name] = _score(value, where)
    names = {layer.name for layer in costs.layers}
    if set(weight) != names:
        # measured on the bare network, applied to a module that holds it (e.g. "net.")
        for prefix in {n[: -len(f)] for n in names for f in list(weight)[:1] if n.endswith("." + f)}:
            if {prefix + f for f in weight} == names:
                weight = {prefix + k: v for k, v in weight.items()}
                bias = {prefix + k: v for k, v in bias.items()}
                break
    missing = [n for n in names if n not in weight]
    extra = [n for n in weight if n not in names]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing layers of the model: {', '.join(sorted(missing)[:5])}")
        if extra:
            parts.append(f"layers the model does not have: {', '.join(sorted(extra)[:5])}")
        raise BudgetPlanError(f"{path}: does not match model {costs.model}: " + "; ".join(parts))
    source = data.get("source", "measured")
    return Importance(f"file: {path} ({source})", weight, bias).normalised()
