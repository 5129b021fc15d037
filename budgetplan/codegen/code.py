"""What a training step's C text is made from: the graph, the layout, the parameters, what
trains, and how values are stored (float32, or int8 with ``budgetplan.codegen.quantize``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from budgetplan.codegen.graph import Node
from budgetplan.codegen.patches import PatchStage
from budgetplan.codegen.quantize import Quantization
from budgetplan.codegen.schedule import Schedule, Trained


@dataclass(frozen=True)
class Parameters:
    """A conv or linear layer's weight and bias values (flat, float32) and its name."""

    name: str
    weight: Sequence[float]
    bias: Sequence[float] | None


@dataclass(frozen=True)
class StepCode:
    """Everything the step's C text is made from."""

    nodes: list[Node]
    schedule: Schedule
    parameters: dict[int, Parameters]
    trained: dict[int, Trained]
    selection: dict[int, list[int]]
    batch: int
    clip_ratio: float
    classifier: int  # the node whose weight is never clipped
    title: str
    quant: Quantization | None = None  # None: float32 everywhere
    patch: PatchStage | None = None  # the leading operators run patch by patch

    def buffer(self, index: int) -> str:
        """The C name of the buffer holding node ``index``'s output."""
        return self.schedule.output_of[index].upper()

    @property
    def int8_gradients(self) -> bool:
        return self.quant is not None and self.quant.gradients

    def what(self, index: int) -> Trained:
        return self.trained.get(index, Trained(0, False))


def unit_updates(code: StepCode, node: Node, grad_row: str, update: str) -> list[str]:
    """The loop over a trained layer's output units: each unit's weight-gradient row
    (``grad_row``, into ``R``), then its update (``update``, given the unit's clip ratio:
    the classifier is never clipped)."""
    ratio = 0.0 if node.index == code.classifier else code.clip_ratio
    return [
        f"for (int o = 0; o < {node.shape[0]}; o++) {{",
        f"    {grad_row}",
        f"    {update.format(ratio=f'{ratio!r}f')}",
        "}",
    ]


def floats(values: Sequence[float]) -> str:
    """A C initialiser of float32 values, exact (C99 hexadecimal floats)."""
    return "{" + ",".join(f"{float(v).hex()}f" for v in values) + "}"


def literal(value: float) -> str:
    return f"{float(value).hex()}f"
