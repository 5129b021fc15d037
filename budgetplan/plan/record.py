"""A plan's data: what to train per layer and what it is predicted to cost.

``PlanRecord`` holds the fields and what follows from them alone; ``budgetplan.plan.model``
makes it a ``Plan`` with its file (``budgetplan.plan.io``), its check against a model
(``budgetplan.plan.match``) and its comparison with another (``budgetplan.plan.compare``),
which read this module and nothing above it.

>>> fingerprint_hash([("fc", (10, 64))]) == fingerprint_hash([("fc", (10, 64))])
True
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from budgetplan.device.profile import DeviceProfile
from budgetplan.errors import PlanError
from budgetplan.plan.prediction import Accounting, Prediction
from budgetplan.quoting import quote

SCHEMA_VERSION = 1  # the plan file layout this version writes and reads (budgetplan.plan.io)
ACCOUNTINGS = tuple(Accounting.choices())  # what ``training_memory_bytes`` may be counted in


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


def fingerprint_hash(layers: Iterable[tuple[str, tuple[int, ...]]]) -> str:
    """A short hash of layer names and weight shapes, the ``fingerprint`` of a plan file."""
    text = ";".join(f"{name}:{'x'.join(map(str, shape))}" for name, shape in layers)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class PlanRecord:
    """A solved plan's data (``budgetplan.plan.model.Plan`` adds its file and checks).

    ``training_accounting`` names the accounting ``training_memory_bytes`` reports:
    ``budgetplan`` (the prediction's, docs/cost-model.md) or ``sparse-update`` (what
    Sparse Update counts, Lin et al. 2022; docs/tiny-training.md), as the planner's
    ``accounting`` option said. ``sparse_update_bytes`` holds Sparse Update's figure;
    ``None`` in plan files written before plans carried it.
    """

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
    training_accounting: str = "budgetplan"
    sparse_update_bytes: float | None = None

    def __post_init__(self) -> None:
        if self.training_accounting not in ACCOUNTINGS:
            raise PlanError(
                f"accounting must be one of {', '.join(ACCOUNTINGS)}, got {quote(self.training_accounting)}"
            )
        if self.training_accounting == "sparse-update" and self.sparse_update_bytes is None:
            raise PlanError("the plan reports the sparse-update accounting but holds no figure for it")

    @property
    def training_memory_bytes(self) -> float:
        """Training memory under the plan's accounting (``training_accounting``)."""
        figure = self.training_memory_by_accounting()[self.training_accounting]
        assert figure is not None, "checked when the plan is made"
        return figure

    def training_memory_by_accounting(self) -> dict[str, float | None]:
        """Training memory under each accounting; ``None`` where the plan holds no figure."""
        return {"budgetplan": self.predicted.training_memory_bytes, "sparse-update": self.sparse_update_bytes}

    @property
    def accounting(self) -> str:
        """Which memory accounting the plan was held to, in words."""
        text = (
            "physical: peak memory over the step (working buffers, saved tensors, updated "
            "weights and biases"
            + (", frozen model" if self.device.frozen_weights == "sram" else "")
            + ")"
            + (
                " against the budget (an imported scheme, not held to it)"
                if self.status == "imported"
                else " within the budget"
            )
        )
        theirs = self.training_accounting == "sparse-update"
        if self.training_memory_cap is not None:
            what = (
                ", as Sparse Update counts it (Lin et al. 2022),"
                if theirs
                else " (updated weights + saved tensors, the published accounting)"
            )
            text += f"; and training memory{what} within the cap"
        elif theirs:
            text += "; training memory reported as Sparse Update counts it (Lin et al. 2022)"
        return text

    @property
    def fingerprint(self) -> str:
        """A short hash of the layer names and weight shapes."""
        return fingerprint_hash([(layer.name, layer.weight_shape) for layer in self.layers])

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

    def objective_in_unit(self) -> str | None:
        """The objective in the importance's unit (e.g. the first-order loss decrease per
        SGD step per unit learning rate), or None when the importance has no unit."""
        unit, scale = self.options.get("importance_unit"), self.options.get("importance_scale")
        if not unit or not isinstance(scale, (int, float)):
            return None
        return f"{self.objective * scale:.4g} {unit}"

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
        """The layers that train a weight or a bias."""
        return [layer for layer in self.layers if layer.update != "none"]

    def trained_fraction(self) -> float:
        """Fraction of the model's plannable weights trained at any one time."""
        total = trained = 0.0
        for layer in self.layers:
            elements = _elements(layer.weight_shape)
            total += elements
            trained += elements * layer.channels / layer.total_channels
        return trained / total if total else 0.0


def _elements(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))
