"""The plan file: ``Plan`` to YAML and back, every field validated on the way in.

A plan file may have been edited by hand. Loading checks every field it relies on: types,
channel counts within ``0..total_channels``, an ``update`` that agrees with the channels
and the bias, a bias parameter named wherever a bias trains, sizes and counts that are
finite and not negative. A problem raises one ``PlanError`` naming the file, the layer and
the field. The fingerprint (layer names and weight shapes) ties the file to its model.

``training_memory_bytes`` is written under the plan's ``training_memory_accounting``
(``budgetplan`` or ``sparse-update``), and ``training_memory_by_accounting`` holds both
figures; a file without them reads as budgetplan's accounting (docs/tiny-training.md).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, TypeVar

from budgetplan.device.profile import DeviceProfile
from budgetplan.errors import PlanError, ProfileError
from budgetplan.files import data_text, read_yaml, write_atomic
from budgetplan.plan.prediction import Prediction
from budgetplan.plan.record import ACCOUNTINGS, SCHEMA_VERSION, LayerPlan, PlanRecord
from budgetplan.quoting import quote

UPDATES = ("none", "bias", "weight")
KINDS = ("conv", "depthwise", "grouped", "linear")
_LAYER_NUMBERS = (
    "activation_bytes", "weight_bytes", "bias_bytes", "path_bytes", "importance",
    "forward_buffer_bytes", "backward_buffer_bytes",
)  # fmt: skip
_PREDICTED_COUNTS = ("forward_macs", "backward_macs")


P = TypeVar("P", bound=PlanRecord)


def save_plan(plan: PlanRecord, path: str | Path) -> None:
    """Write the plan as YAML (JSON for a ``.json`` name), atomically: the file is either the
    old one or the new one."""
    write_atomic(Path(path), data_text(plan_to_dict(plan), path))


def load_plan(path: str | Path, cls: type[P]) -> P:
    """Read a plan file, checking its schema version and every field, into a ``cls``."""
    return plan_from_dict(read_yaml(path, "plan file", PlanError), str(path), cls)


def plan_to_dict(plan: PlanRecord) -> dict[str, Any]:
    """The plan as plain data, in the plan file's layout."""
    return {
        "schema_version": plan.schema_version,
        "device": plan.device.name,
        "model": plan.model,
        "input_shape": list(plan.input_shape),
        "batch_size": plan.batch_size,
        "budget_bytes": plan.budget_bytes,
        "training_memory_cap": plan.training_memory_cap,
        "max_step_latency": plan.max_step_latency,
        "accounting": plan.accounting,
        "training_memory_accounting": plan.training_accounting,
        "training_memory_bytes": plan.training_memory_bytes,  # under that accounting; not read back
        "training_memory_by_accounting": plan.training_memory_by_accounting(),
        "predicted_bytes": plan.predicted.peak_bytes,
        "predicted": dataclasses.asdict(plan.predicted),
        "status": plan.status,
        "solver": plan.solver,
        "optimality_gap": plan.optimality_gap,
        "objective": plan.objective,
        "solve_seconds": plan.solve_seconds,
        "importance_source": plan.importance_source,
        "options": plan.options,
        "fingerprint": plan.fingerprint,
        "device_profile": plan.device.to_dict(),
        "layers": [layer.to_dict() for layer in plan.layers],
    }


class _Reader:
    """Reads fields of plain data with errors that name the source, the layer and the field."""

    def __init__(self, source: str, where: str = "") -> None:
        self.source, self.where = source, where

    def fail(self, field: str, problem: str) -> PlanError:
        return PlanError(f"{self.source}: {self.where}field '{field}': {problem}")

    def get(self, data: dict[str, Any], field: str) -> Any:
        if field not in data:
            raise PlanError(f"{self.source}: {self.where}field {quote(field)} is missing")
        return data[field]

    def text(self, data: dict[str, Any], field: str) -> str:
        value = self.get(data, field)
        if not isinstance(value, str) or not value:
            raise self.fail(field, f"expected text, got {quote(value)}")
        return value

    def count(self, data: dict[str, Any], field: str, low: int = 0, high: float = math.inf) -> int:
        value = self.get(data, field)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            bound = f"from {low} to {high}" if high < math.inf else f"of at least {low}"
            raise self.fail(field, f"expected a whole number {bound}, got {quote(value)}")
        return value

    def number(self, data: dict[str, Any], field: str, optional: bool = False) -> float:
        value = data.get(field) if optional else self.get(data, field)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise self.fail(field, f"expected a finite number of at least 0, got {quote(value)}")
        return float(value)

    def flag(self, data: dict[str, Any], field: str) -> bool:
        value = self.get(data, field)
        if not isinstance(value, bool):
            raise self.fail(field, f"expected true or false, got {quote(value)}")
        return value

    def shape(self, data: dict[str, Any], field: str) -> tuple[int, ...]:
        value = self.get(data, field)
        if not isinstance(value, list) or not value or not all(_positive_int(v) for v in value):
            raise self.fail(field, f"expected a list of positive whole numbers, got {quote(value)}")
        return tuple(value)

    def optional_positive(self, data: dict[str, Any], field: str) -> Any:
        value = data.get(field)
        if value is not None and (self.number(data, field) <= 0):
            raise self.fail(field, f"expected a positive number or null, got {quote(value)}")
        return value


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _layer(raw: Any, index: int, source: str) -> LayerPlan:
    if not isinstance(raw, dict):
        raise PlanError(f"{source}: layers[{index}]: expected a mapping, got {quote(raw)}")
    name = raw.get("name")
    read = _Reader(source, f"layer {name if isinstance(name, str) else index}: ")
    total = read.count(raw, "total_channels", low=1)
    layer = LayerPlan(
        name=read.text(raw, "name"),
        kind=read.text(raw, "kind"),
        weight_shape=read.shape(raw, "weight_shape"),
        update=read.text(raw, "update"),
        channels=read.count(raw, "channels", high=total),
        total_channels=total,
        bias=read.flag(raw, "bias"),
        bias_param=raw.get("bias_param"),
        macs=read.count(raw, "macs"),
        **{f: read.number(raw, f, optional=f.endswith("buffer_bytes")) for f in _LAYER_NUMBERS},
    )
    if layer.update not in UPDATES:
        raise read.fail("update", f"update {quote(layer.update)} not in {', '.join(UPDATES)}")
    if layer.kind not in KINDS:
        raise read.fail("kind", f"{quote(layer.kind)} is not one of {', '.join(KINDS)}")
    expected = "weight" if layer.channels else "bias" if layer.bias else "none"
    if layer.update != expected:
        raise read.fail(
            "update", f"{quote(layer.update)} does not agree with channels and bias (expected {quote(expected)})"
        )
    if layer.bias_param is not None and (not isinstance(layer.bias_param, str) or not layer.bias_param):
        raise read.fail("bias_param", f"expected a parameter name or null, got {quote(layer.bias_param)}")
    if layer.bias and layer.bias_param is None:
        raise read.fail("bias", "the bias trains, but the layer names no bias parameter (bias_param)")
    return layer


def plan_from_dict(data: Any, source: str, cls: type[P]) -> P:
    """A ``cls`` (a ``Plan``) from plain data, every field checked (see the module docstring)."""
    if not isinstance(data, dict):
        raise PlanError(f"{source}: not a plan file (expected a mapping)")
    if "schema_version" not in data and {"sram", "flash", "budget"} <= set(data):
        raise PlanError(
            f"{source}: is a device profile, not a plan file; make a plan with "
            f"budgetplan solve --device {source} --out plan.yaml"
        )
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise PlanError(
            f"{source}: field 'schema_version': {quote(version)}, but this budgetplan reads version "
            f"{SCHEMA_VERSION}; solve the plan again with this version"
        )
    read = _Reader(source)
    try:
        device = DeviceProfile.from_dict(read.get(data, "device_profile"), source=f"{source} (device_profile)")
    except ProfileError as err:
        raise PlanError(str(err)) from None
    layers = read.get(data, "layers")
    if not isinstance(layers, list) or not layers:
        raise read.fail("layers", "expected a list of layers")
    plan = cls(
        device=device,
        model=read.text(data, "model"),
        input_shape=read.shape(data, "input_shape"),
        batch_size=read.count(data, "batch_size", low=1),
        budget_bytes=read.count(data, "budget_bytes", low=1),
        layers=[_layer(raw, i, source) for i, raw in enumerate(layers)],
        predicted=_prediction(read.get(data, "predicted"), source),
        status=read.text(data, "status"),
        solver=read.text(data, "solver"),
        objective=read.number(data, "objective"),
        solve_seconds=read.number(data, "solve_seconds"),
        importance_source=read.text(data, "importance_source"),
        training_memory_cap=read.optional_positive(data, "training_memory_cap"),
        max_step_latency=read.optional_positive(data, "max_step_latency"),
        optimality_gap=read.number({"optimality_gap": data.get("optimality_gap", 0.0)}, "optimality_gap"),
        options=_options(data.get("options"), read),
        **_accounting(data, read),
    )
    if data.get("fingerprint") not in (None, plan.fingerprint):
        raise PlanError(f"{source}: field 'fingerprint' does not match its layers; the file was edited")
    return plan


def _accounting(data: dict[str, Any], read: _Reader) -> dict[str, Any]:
    """The accounting the plan reports and its Sparse Update figure; files without them
    report budgetplan's and hold no Sparse Update figure."""
    name = data.get("training_memory_accounting", "budgetplan")
    if name not in ACCOUNTINGS:
        raise read.fail("training_memory_accounting", f"{quote(name)} is not one of {', '.join(ACCOUNTINGS)}")
    figures = data.get("training_memory_by_accounting", {})
    if not isinstance(figures, dict):
        raise read.fail("training_memory_by_accounting", f"expected a mapping, got {quote(figures)}")
    figure = None
    if figures.get("sparse-update") is not None:
        figure = _Reader(read.source, "training_memory_by_accounting: ").number(figures, "sparse-update")
    if name == "sparse-update" and figure is None:
        raise read.fail(
            "training_memory_accounting",
            "sparse-update, but training_memory_by_accounting holds no sparse-update figure; "
            "solve the plan again with --accounting sparse-update",
        )
    return {"training_accounting": name, "sparse_update_bytes": figure}


def _type_name(spec: dataclasses.Field[Any]) -> str:
    return spec.type if isinstance(spec.type, str) else getattr(spec.type, "__name__", str(spec.type))


def _prediction(raw: Any, source: str) -> Prediction:
    """The prediction, each field read by its type; a field with a default may be absent."""
    read = _Reader(source, "predicted: ")
    if not isinstance(raw, dict):
        raise PlanError(f"{source}: field 'predicted': expected a mapping, got {quote(raw)}")
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(Prediction):
        name, kind = spec.name, _type_name(spec)
        if name not in raw and (spec.default is not dataclasses.MISSING or name == "peak_at"):
            values[name] = "" if name == "peak_at" else spec.default
        elif kind == "str":
            if not isinstance(raw.get(name), str):
                raise read.fail(name, f"expected text, got {quote(raw.get(name))}")
            values[name] = raw[name]
        elif name in _PREDICTED_COUNTS or kind == "int":
            values[name] = read.count(raw, name)
        else:
            values[name] = read.number(raw, name)
    return Prediction(**values)


def _options(raw: Any, read: _Reader) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise read.fail("options", f"expected a mapping, got {quote(raw)}")
    return dict(raw)
