"""``Plan``: what to train per layer, what it is predicted to cost, and the plan file.

A plan file is YAML and self-contained: it embeds the device profile, the options the
planner ran with, and a fingerprint of the model (every plannable layer's name and
weight shape), so that training can check it is applied to the model it was made for.

>>> import tempfile, torch, torchvision
>>> from budgetplan import solve, Plan
>>> model = torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10)
>>> plan = solve(model, torch.zeros(1, 3, 128, 128), "cortex-m7")
>>> plan.status, plan.predicted.peak_bytes <= plan.budget_bytes
('optimal', True)
>>> path = tempfile.mkdtemp() + "/plan.yaml"
>>> plan.save(path)
>>> Plan.load(path).channels() == plan.channels()
True
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from budgetplan.device.profile import DeviceProfile
from budgetplan.errors import PlanError
from budgetplan.files import read_yaml, write_atomic
from budgetplan.planning.memory import Prediction

if TYPE_CHECKING:
    from budgetplan.costs.table import CostTable

SCHEMA_VERSION = 1  # the plan file layout this version writes and reads (budgetplan.plan.io)


@dataclass(frozen=True)
class LayerPlan:
    """One layer's decision and its predicted costs (bytes for the plan's batch size).

    ``update`` is ``weight`` when input channels are trained (``bias`` then says whether
    the bias is too), ``bias`` for a bias-only update, ``none`` for a frozen layer.
    ``macs`` is the backward MACs spent at the layer per step; the buffer sizes are the
    layer's working buffers (forward, and backward when the gradient reaches it).
    """

    name: str
    kind: str
    weight_shape: tuple[int, ...]
    update: str
    channels: int
    total_channels: int
    bias: bool
    bias_param: str | None
    activation_bytes: float
    weight_bytes: float
    bias_bytes: float
    path_bytes: float
    macs: int
    importance: float
    forward_buffer_bytes: float = 0.0
    backward_buffer_bytes: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["weight_shape"] = list(self.weight_shape)
        return data


@dataclass
class Plan:
    """A solved plan. ``save``/``load`` read and write the YAML plan file."""

    device: DeviceProfile
    model: str
    input_shape: tuple[int, ...]
    batch_size: int
    budget_bytes: int
    layers: list[LayerPlan]
    predicted: Prediction
    status: str
    solver: str
    objective: float
    solve_seconds: float
    importance_source: str
    training_memory_cap: int | None = None
    max_step_latency: float | None = None
    optimality_gap: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def accounting(self) -> str:
        """Which memory accounting the plan was held to, in words."""
        text = (
            "physical: peak memory over the step (working buffers, saved tensors, updated "
            "weights and biases"
            + (", frozen model" if self.device.frozen_weights == "sram" else "")
            + ") within the budget"
        )
        if self.training_memory_cap is not None:
            text += "; and training memory (updated weights + saved tensors, the published accounting) within the cap"
        return text

    @property
    def fingerprint(self) -> str:
        """A short hash of the layer names and weight shapes."""
        return _fingerprint_hash([(layer.name, layer.weight_shape) for layer in self.layers])

    @property
    def exceeds_device(self) -> bool:
        """Whether the budget is more than the device's free SRAM (``sram - reserved``)."""
        return self.budget_bytes > self.device.sram - self.device.reserved

    def check_batch(self, sample_shape: tuple[int, ...], batch_size: int) -> str | None:
        """The rule for training data that differs from what the plan was solved for.

        A sample larger than the plan's (more elements) is refused (``PlanError``): every
        activation the plan counts grows with it. A larger batch returns a warning: memory
        on the device grows with the batch. Smaller samples or batches need less memory
        than predicted and pass, as does an unconstrained plan (``None``).
        """
        if self.status == "unconstrained":
            return None
        if _elements(sample_shape) > _elements(self.input_shape):
            raise PlanError(
                f"the plan for {self.model} was solved for inputs of shape {_dims(self.input_shape)}, "
                f"but training gives {_dims(sample_shape)}, which needs more memory; solve it again for "
                "that shape (example_input=)"
            )
        if batch_size > self.batch_size:
            return (
                f"budgetplan: training batches hold {batch_size} samples, but the plan was solved for "
                f"{self.batch_size}: on the device its saved tensors take {batch_size / self.batch_size:.3g}x "
                f"the prediction; solve with batch_size={batch_size}"
            )
        return None

    def host_saved_bound(self) -> float:
        """Most bytes per sample that autograd on the host may save under this plan.

        The prediction counts activations at the device's ``activation_bits``; the host keeps
        float32 (masks are one bit on both), so at most ``32 / activation_bits`` times as much.
        A measurement above this bound means something the cost model does not see.
        """
        return self.predicted.saved_bytes / self.batch_size * 32 / self.device.bits.activation

    def channels(self) -> dict[str, int]:
        """Input channels trained per updated layer (weights)."""
        return {layer.name: layer.channels for layer in self.layers if layer.channels > 0}

    def updated(self) -> list[LayerPlan]:
        return [layer for layer in self.layers if layer.update != "none"]

    def trained_fraction(self) -> float:
        """Fraction of the model's plannable weights trained at any one time."""
        total = trained = 0.0
        for layer in self.layers:
            elements = 1
            for size in layer.weight_shape:
                elements *= size
            total += elements
            trained += elements * layer.channels / layer.total_channels
        return trained / total if total else 0.0

    def differences(self, other: Plan) -> list[tuple[str, str, str]]:
        """What differs between two plans, as (what, this plan, the other) rows."""
        rows: list[tuple[str, str, str]] = []
        for label, mine, theirs in (
            ("model", self.model, other.model),
            ("device", self.device.name, other.device.name),
            ("budget", self.budget_bytes, other.budget_bytes),
            ("training memory cap", self.training_memory_cap, other.training_memory_cap),
            ("batch size", self.batch_size, other.batch_size),
            ("predicted peak", round(self.predicted.peak_bytes), round(other.predicted.peak_bytes)),
            (
                "training memory",
                round(self.predicted.training_memory_bytes),
                round(other.predicted.training_memory_bytes),
            ),
            ("objective", f"{self.objective:.4f}", f"{other.objective:.4f}"),
            ("importance", self.importance_source, other.importance_source),
            ("status", self.status, other.status),
        ):
            if mine != theirs:
                rows.append((label, str(mine), str(theirs)))
        theirs_by_name = {layer.name: layer for layer in other.layers}
        for layer in self.layers:
            peer = theirs_by_name.pop(layer.name, None)
            if peer is None:
                rows.append((layer.name, _decision(layer), "(no such layer)"))
            elif (layer.channels, layer.bias) != (peer.channels, peer.bias):
                rows.append((layer.name, _decision(layer), _decision(peer)))
        rows += [(name, "(no such layer)", _decision(layer)) for name, layer in theirs_by_name.items()]
        return rows

    def check_matches(self, costs: CostTable) -> None:
        """Fail with ``PlanError`` naming every layer where ``costs``' model differs."""
        problems = self.mismatches(costs.fingerprint())
        if problems:
            raise PlanError(f"the plan for {self.model} does not match this model: {list_problems(problems)}")

    def mismatches(self, fingerprint: Iterable[tuple[str, tuple[int, ...]]]) -> list[str]:
        """Layers where a model (its layer names and weight shapes) differs from the plan."""
        mine = {layer.name: layer.weight_shape for layer in self.layers}
        theirs = dict(fingerprint)
        problems = []
        for name, shape in mine.items():
            if name not in theirs:
                problems.append(f"{name} (in the plan, not in the model)")
            elif tuple(theirs[name]) != tuple(shape):
                problems.append(f"{name} (plan weight {list(shape)}, model {list(theirs[name])})")
        problems += [f"{n} (in the model, not in the plan)" for n in theirs if n not in mine]
        return problems

    def to_dict(self) -> dict[str, Any]:
        """The plan as plain data, in the plan file's layout (``budgetplan.plan.io``)."""
        from budgetplan.plan.io import plan_to_dict

        return plan_to_dict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<memory>") -> Plan:
        """A plan from plain data, every field checked (``budgetplan.plan.io``)."""
        from budgetplan.plan.io import plan_from_dict

        return plan_from_dict(data, source)

    def save(self, path: str | Path) -> None:
        """Write the plan as YAML, atomically: the file is either the old one or the new one."""
        write_atomic(Path(path), yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """Read a plan file, checking its schema version."""
        return cls.from_dict(read_yaml(path, "plan file", PlanError), source=str(path))


def _elements(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def list_problems(problems: list[str], shown: int = 8) -> str:
    """The first ``shown`` problems, and how many more there are."""
    more = f"; and {len(problems) - shown} more" if len(problems) > shown else ""
    return "; ".join(problems[:shown]) + more


def _decision(layer: LayerPlan) -> str:
    if layer.update == "none":
        return "frozen"
    text = f"{layer.channels}/{layer.total_channels}" if layer.channels else "bias only"
    return text + (" +bias" if layer.channels and layer.bias else "")


def _fingerprint_hash(items: list[tuple[str, tuple[int, ...]]]) -> str:
    text = ";".join(f"{name}:{'x'.join(map(str, shape))}" for name, shape in items)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
