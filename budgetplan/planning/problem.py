"""``Problem``: everything a plan is made from, passed as one value, and the one way to make
it: ``Problem.build`` from a model, ``Problem.from_costs`` from a traced cost table.

A problem is a model that fits the device's flash: making one checks it (``check_flash``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from budgetplan.costs.pricing import model_bytes
from budgetplan.costs.table import CostTable
from budgetplan.device.profile import DeviceProfile, load_device
from budgetplan.errors import InfeasibleError
from budgetplan.importance.scores import Importance, resolve_importance
from budgetplan.planning.options import PlannerOptions, planner_options
from budgetplan.units import format_bytes

Device = str | Path | DeviceProfile
ImportanceSpec = str | Path | Importance | None


def check_flash(costs: CostTable, device: DeviceProfile) -> None:
    """Raise ``InfeasibleError`` when the whole model does not fit the device's flash."""
    flash_needed = model_bytes(costs, device)
    if flash_needed > device.flash:
        raise InfeasibleError(
            f"{costs.model} needs {format_bytes(flash_needed)} of flash at {device.bits.weight}-bit weights, "
            f"but {device.name} has {format_bytes(device.flash)}: it does not fit by "
            f"{format_bytes(flash_needed - device.flash)}"
        )


@dataclass(frozen=True)
class Problem:
    """The traced costs of a model, the device, layer importance and the planner's options."""

    costs: CostTable
    device: DeviceProfile
    importance: Importance
    options: PlannerOptions

    def __post_init__(self) -> None:
        check_flash(self.costs, self.device)

    @classmethod
    def build(
        cls, model: Any, example: Any, device: Device = "cortex-m7", importance: ImportanceSpec = None, **options: Any
    ) -> Problem:
        """Trace ``model`` on ``example`` for ``device`` (a name, a path or a profile); then as
        ``from_costs``. ``model_name`` names the model in the plan; other keyword arguments
        are ``PlannerOptions`` fields (sizes such as ``"256KB"`` and durations are read)."""
        from budgetplan.costs.build import layer_costs  # tracing needs torch; planning alone does not

        profile = load_device(device)
        costs = layer_costs(model, example, profile, model_name=options.pop("model_name", None))
        return cls.from_costs(costs, profile, importance, **options)

    @classmethod
    def from_costs(
        cls,
        costs: CostTable,
        device: Device,
        importance: ImportanceSpec = None,
        options: PlannerOptions | None = None,
        **fields: Any,
    ) -> Problem:
        """The problem of a cost table: ``importance`` as ``resolve_importance`` reads it (by
        default the table shipped for the model, else the no-data prior); ``options`` with
        ``fields`` changed (values as the fields hold them), or, without ``options``, the
        fields as ``planner_options`` reads them (sizes such as ``"256KB"`` too)."""
        importance = resolve_importance(importance, costs)
        planner = planner_options(**fields) if options is None else dataclasses.replace(options, **fields)
        return cls(costs, load_device(device), importance, planner)

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
