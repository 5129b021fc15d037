"""What a plan predicts for one training step, and which accounting its training memory
follows: the figures a plan file carries, whoever computed them (docs/planner.md)."""

from __future__ import annotations

from dataclasses import dataclass

from budgetplan.enums import EnumStr


class Accounting(EnumStr):
    """What training memory counts (``training_memory`` caps it, plans report it):
    budgetplan's count or Sparse Update's (docs/tiny-training.md)."""

    BUDGETPLAN = "budgetplan"
    SPARSE_UPDATE = "sparse-update"


@dataclass(frozen=True)
class Prediction:
    """Predicted memory (bytes) and compute of one training step."""

    peak_bytes: float
    peak_at: str  # e.g. "backward at features.16.conv.0"
    base_bytes: float
    resident_bytes: float
    saved_bytes: float
    training_memory_bytes: float  # resident + saved: the published accounting
    forward_macs: int
    backward_macs: int
    step_seconds: float
    patch_grid: int = 0  # the leading layers run on a patch_grid × patch_grid grid (0: whole)
    patch_until: str = ""  # the first layer that runs whole after the patch stage
    patch_bytes: float = 0.0  # the patch stage's working set: one patch, its outputs, the input

    @property
    def step_macs(self) -> int:
        return self.forward_macs + self.backward_macs
