"""``Problem``: everything a plan is made from, passed as one value."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

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

    @property
    def budget(self) -> int:
        """The memory budget in force: the option's, else the device's."""
        return self.options.budget_on(self.device)

    @property
    def latency(self) -> float | None:
        """The step latency limit in force (seconds), or ``None``."""
        return self.options.latency_on(self.device)

    def with_options(self, **changes: Any) -> Problem:
        """The same problem with some options changed (``budget=...``)."""
        return dataclasses.replace(self, options=dataclasses.replace(self.options, **changes))
