"""``Plan``: what to train per layer and what it is predicted to cost, with its file.

A plan is self-contained: it carries the device profile, the options the planner ran
with, and a fingerprint of the model (every plannable layer's name and weight shape), so
that training can check it is applied to the model it was made for. The data is
``budgetplan.plan.record``; the plan file is ``budgetplan.plan.io``, the check against a
model ``budgetplan.plan.match`` and the comparison of two plans ``budgetplan.plan.compare``;
the methods here call them.
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

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from budgetplan.plan import compare, io, match
from budgetplan.plan.match import list_problems
from budgetplan.plan.record import ACCOUNTINGS, SCHEMA_VERSION, LayerPlan, PlanRecord

if TYPE_CHECKING:
    from budgetplan.costs.table import CostTable

__all__ = ["ACCOUNTINGS", "SCHEMA_VERSION", "LayerPlan", "Plan", "list_problems"]


class Plan(PlanRecord):
    """A solved plan: its data (``PlanRecord``), its file (``save``, ``load``), its check
    against a model and its comparison with another plan."""

    def differences(self, other: Plan) -> list[tuple[str, str, str]]:
        """What differs between two plans, as (what, this plan, the other) rows."""
        return compare.differences(self, other)

    def check_matches(self, costs: CostTable) -> None:
        """Fail with ``PlanError`` naming every layer where ``costs``' model differs."""
        match.check_matches(self, costs)

    def mismatches(self, fingerprint: Iterable[tuple[str, tuple[int, ...]]]) -> list[str]:
        """Layers where a model (its layer names and weight shapes) differs from the plan."""
        return match.mismatches(self, fingerprint)

    def to_dict(self) -> dict[str, Any]:
        """The plan as plain data, in the plan file's layout (``budgetplan.plan.io``)."""
        return io.plan_to_dict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<memory>") -> Plan:
        """A plan from plain data, every field checked (``budgetplan.plan.io``)."""
        return io.plan_from_dict(data, source, cls)

    def save(self, path: str | Path) -> None:
        """Write the plan as YAML (JSON for a ``.json`` name), atomically: the file is either
        the old one or the new one."""
        io.save_plan(self, path)

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """Read a plan file, checking its schema version and every field."""
        return io.load_plan(path, cls)
