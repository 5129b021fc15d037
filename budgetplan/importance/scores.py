"""Layer importance: the weights of the planner's objective (docs/importance.md).

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

Scores are normalised to sum to 1 over weights and biases. An optional ``in_channels``
mapping (layer → input channels, written by ``budgetplan importance``) guards against
applying scores measured on another width of the same architecture.

A plan says which importance it used: a measured file, a table shipped in
``budgetplan/tables/`` (ImageNet MobileNetV2, measured by
``benchmarks/shipped_importance.py``; by name, ``"shipped"``), or the prior. Without a
file the prior is used: on the accuracy benchmark (docs/results.md, *Accuracy by strategy*) it
planned as well as the shipped table, measured on other data, or better.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from budgetplan.costs.table import CostTable
from budgetplan.errors import BudgetPlanError
from budgetplan.files import read_yaml
from budgetplan.names import find_prefix, with_prefix, without_prefix
from budgetplan.quoting import quote

PRIOR_SOURCE = "prior: share of trainable elements (no data)"
ENERGY_UNIT = "loss decrease per SGD step per unit learning rate"  # gradient energy (measure.py)
MEASURED = "measured"  # the callback's importance= that insists on measuring on the training data
TABLES_MEASURE = "energy"  # the measure of the shipped tables: the default plans with them where it measures so
TABLES = Path(__file__).resolve().parent.parent / "tables"  # measured importance shipped with the package
TOP_SHARE = 0.97  # TraDy keeps the layers that hold 97% of the cumulative importance


@dataclass(frozen=True)
class Importance:
    """Per-layer objective weights for weight and bias updates, and where they came from.

    ``unit``: what the scores measure, when they measure something (``ENERGY_UNIT``);
    normalised scores then keep the total as ``scale``, so that an objective ``x`` (a
    share of the total) reads as ``x * scale`` in ``unit``.

    Sparse Update's contribution analysis (Lin et al., NeurIPS 2022, §3.2) measures values
    of choices rather than of layers: ``curves`` maps a layer to the value of training a
    fraction of its input channels (``{0.25: v, 1.0: w}``), and ``bias_depths`` the number
    ``k`` of bias-capable layers counted from the end to the value of training their
    biases. Where they are given, the planner chooses among exactly those: a layer's weight
    trains only if it has a curve, at its measured fractions, and biases train as the last
    ``k`` of a measured depth (docs/importance.md).

    >>> scores = Importance("demo", {"a": 3.0}, {"a": 1.0}, unit=ENERGY_UNIT).normalised()
    >>> scores.weight, scores.bias, scores.scale
    ({'a': 0.75}, {'a': 0.25}, 4.0)
    """

    source: str
    weight: dict[str, float]
    bias: dict[str, float] = field(default_factory=dict)
    unit: str = ""
    scale: float | None = None
    curves: dict[str, dict[float, float]] = field(default_factory=dict)
    bias_depths: dict[int, float] = field(default_factory=dict)

    def normalised(self) -> Importance:
        total = sum(self.weight.values()) + sum(self.bias.values())
        if total <= 0:
            raise BudgetPlanError(f"importance ({self.source}) has no positive score")
        scale = (self.scale or 1.0) * total if self.unit else None
        return Importance(
            self.source,
            {k: v / total for k, v in self.weight.items()},
            {k: v / total for k, v in self.bias.items()},
            self.unit,
            scale,
            {name: {f: v / total for f, v in curve.items()} for name, curve in self.curves.items()},
            {k: v / total for k, v in self.bias_depths.items()},
        )


def prior_importance(costs: CostTable) -> Importance:
    """The no-data prior: each layer's share of the trainable elements."""
    weight = {layer.name: float(layer.weight_elements) for layer in costs.layers}
    bias = {layer.name: float(layer.bias_elements) for layer in costs.layers}
    return Importance(PRIOR_SOURCE, weight, bias).normalised()


def _score(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise BudgetPlanError(f"{where}: expected a number >= 0, got {quote(value)}")
    return float(value)


def load_importance(path: str | Path, costs: CostTable) -> Importance:
    """Read an importance file and check that it names exactly the model's layers."""
    path = Path(path)
    data = read_yaml(path, "importance file")
    read = _read(data, costs, str(path), f"file: {path}")
    if isinstance(read, str):
        raise BudgetPlanError(f"{path}: does not match model {costs.model}: {read}")
    return read


def shipped_importance(costs: CostTable, by_name: bool = False) -> Importance | None:
    """The measured table shipped for this model, when one matches it layer for layer
    (names and input channels; the classifier's class count may differ), else None.
    ``by_name``: a table whose layer names match but whose widths differ also serves,
    its scores taken as each layer's share (rankings transfer across widths and data
    sets, Quélennec et al. 2026, §4)."""
    for path, data in _shipped_tables():
        read = _read(data, costs, str(path), f"shipped table: {path.stem}", by_name)
        if isinstance(read, Importance):
            return read
    return None


@functools.cache
def _shipped_tables() -> tuple[tuple[Path, Any], ...]:
    # the package's own files, parsed once a process: each plan of a sweep or a check reads them
    return tuple((path, read_yaml(path, "shipped importance table")) for path in sorted(TABLES.glob("*.yaml")))


def resolve_importance(importance: str | Path | Importance | None, costs: CostTable) -> Importance:
    """The importance a plan uses: the one given (a file, an ``Importance``, ``"shipped"``
    for the table shipped for this model, ``"prior"``); without one, the shipped table
    whose layer names match the model's (``shipped_importance(by_name=True)``), else the
    no-data prior."""
    if isinstance(importance, Importance):
        return importance
    if importance is None:
        return shipped_importance(costs, by_name=True) or prior_importance(costs)
    if importance == "prior":
        return prior_importance(costs)
    if importance == "shipped":
        table = shipped_importance(costs)
        if table is None:
            shipped = ", ".join(path.stem for path, _ in _shipped_tables())
            raise BudgetPlanError(
                f"importance 'shipped': no table in {TABLES} matches model {costs.model} layer for layer "
                f"(names and input channels; shipped: {shipped}); measure one with budgetplan importance, "
                "or use 'prior'"
            )
        return table
    return load_importance(importance, costs)


def ranking(importance: Importance) -> list[tuple[str, float, float]]:
    """Layers by share of the total (weight and bias), most important first, with the
    cumulative share."""
    shares = {n: w + importance.bias.get(n, 0.0) for n, w in importance.weight.items()}
    cumulative = 0.0
    rows = []
    for name, share in sorted(shares.items(), key=lambda kv: -kv[1]):
        cumulative += share
        rows.append((name, share, cumulative))
    return rows


def top_layers(importance: Importance, share: float = TOP_SHARE) -> list[str]:
    """The fewest most important layers that hold ``share`` of the total (TraDy's top-K).

    >>> top_layers(Importance("demo", {"a": 0.6, "b": 0.38, "c": 0.02}))
    ['a', 'b']
    """
    chosen = []
    for name, _, cumulative in ranking(importance):
        chosen.append(name)
        if cumulative >= share - 1e-12:
            break
    return chosen


def _scores(data: Any, where: str) -> tuple[dict[str, float], dict[str, float], dict[str, dict[float, float]]]:
    if not isinstance(data, dict) or not isinstance(data.get("layers"), dict):
        raise BudgetPlanError(f"{where}: field 'layers': expected a mapping of layer name to score")
    weight: dict[str, float] = {}
    bias: dict[str, float] = {}
    curves: dict[str, dict[float, float]] = {}
    for name, value in data["layers"].items():
        at = f"{where}: field 'layers.{name}'"
        if isinstance(value, dict):
            unknown = set(value) - {"weight", "bias", "curve"}
            if unknown or "weight" not in value:
                raise BudgetPlanError(f"{at}: expected a number or {{weight: x, bias: y, curve: {{fraction: value}}}}")
            weight[name] = _score(value["weight"], at + ".weight")
            bias[name] = _score(value.get("bias", 0.0), at + ".bias")
            if "curve" in value:
                curves[name] = _curve(value["curve"], at + ".curve", float, lambda f: 0 < f <= 1, "fractions in (0, 1]")
        else:
            weight[name] = _score(value, at)
    return weight, bias, curves


def _curve(data: Any, where: str, key: type, valid: Any, what: str) -> dict[Any, float]:
    """A mapping of choices to values (``curve``, ``bias_depths``), checked."""
    if not isinstance(data, dict) or not data:
        raise BudgetPlanError(f"{where}: expected a mapping of {what} to values >= 0")
    out = {}
    for choice, value in data.items():
        if isinstance(choice, bool) or not isinstance(choice, (int, float)) or not valid(choice):
            raise BudgetPlanError(f"{where}: expected {what} as keys, got {quote(choice)}")
        out[key(choice)] = _score(value, f"{where}.{choice}")
    return out


def _read(data: Any, costs: CostTable, where: str, label: str, by_name: bool = False) -> Importance | str:
    """The scores in ``data`` (read from ``where``) as ``costs``' importance, named
    ``label``, or why they do not fit it (``by_name``: widths may differ)."""
    weight, bias, curves = _scores(data, where)
    depths = data.get("bias_depths")
    if depths is not None:
        depths = _curve(depths, f"{where}: field 'bias_depths'", int, lambda k: k == int(k) and k >= 1, "layer counts")
    names = {layer.name for layer in costs.layers}
    channels = data.get("in_channels") or {}
    prefix = find_prefix(weight, names)  # scores measured on the bare model fit it inside a LightningModule
    outer = find_prefix(names, weight) if prefix is None else None
    if outer:  # and scores measured inside a LightningModule (by the callback) fit the bare model
        weight, bias, channels = (
            without_prefix(weight, outer),
            without_prefix(bias, outer),
            without_prefix(channels, outer),
        )
        curves, prefix = without_prefix(curves, outer), ""
    if prefix is None:
        missing = sorted(n for n in names if n not in weight)
        extra = sorted(f for f in weight if f not in names)
        parts = []
        if missing:
            parts.append(f"missing layers of the model: {', '.join(missing[:5])}")
        if extra:
            parts.append(f"layers the model does not have: {', '.join(extra[:5])}")
        return "; ".join(parts) or "layer names differ"
    wrong = [n for n, c in channels.items() if costs.layer(prefix + n).in_channels != c]
    if wrong and by_name:
        label += ", by layer name: measured at other widths"
    elif wrong:
        return f"input channels differ at {', '.join(wrong[:5])} (measured on another width or architecture)"
    unit, scale = data.get("unit"), data.get("scale")
    if wrong:  # shares carry over to other widths, totals do not
        unit = scale = None
    if unit is not None and not isinstance(unit, str):
        raise BudgetPlanError(f"{where}: field 'unit': expected text, got {quote(unit)}")
    if scale is not None:
        scale = _score(scale, f"{where}: field 'scale'")
    return Importance(
        f"{label} ({data.get('source', 'measured')})",
        with_prefix(weight, prefix),
        with_prefix(bias, prefix),
        unit or "",
        scale if unit else None,
        with_prefix(curves, prefix),
        depths or {},
    ).normalised()
