"""``Problem``: everything a plan is made from, passed as one value."""

from __future__ import annotations

from dataclasses import dataclass

from budgetplan.costs.table import CostTable
from budgetplan.device.profile import DeviceProfile
from budgetplan.planning.importance import Importance
from budgetplan.planning.options import PlannerOptions


@dataclass(frozen=True)
class Problem:
    """The traced costs of a model, the device, layer importance and the planner's options."""

    costs: CostTable
    device: DeviceProfile
    importance: Importance
    options: PlannerOptions
