"""``Strategy``: what trains and how its choices change; one registry of strategies by name.

Every budgeted strategy is held to the same limits (budget, training-memory cap, step
latency) with the same memory model (``budgetplan.planning.memory``); strategies differ in
which layers train and how the input channels inside them are chosen. A new strategy is
one subclass with a ``name``, registered with ``register_strategy``::

    @register_strategy
    class LastLayers(Strategy):
        name = "last-layers"
        source = "the last two layers, every channel"

        def planner_overrides(self, costs):
            return {"include": tuple(layer.name for layer in costs.layers[-2:]), "ratios": (1.0,)}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from budgetplan.errors import BudgetPlanError

if TYPE_CHECKING:
    from budgetplan.costs.table import CostTable, LayerCost
    from budgetplan.planning.memory import Choice
    from budgetplan.planning.problem import Problem


class Strategy:
    """How a strategy trains: ``sampler`` (a name in ``budgetplan.training.samplers``)
    redrawn per ``resample`` (``epoch``, ``step`` or ``never``).

    ``planned``: its layers and channel counts come from the ILP plan, shaped by
    ``planner_overrides``. Otherwise it draws its own choices across layers each time
    (``layers``, ``biases``, ``draw``). ``dense``: nothing is frozen and nothing is
    enforced (the reference run); its prediction is reported only.
    """

    name: ClassVar[str] = ""
    sampler: ClassVar[str] = "uniform"
    resample: ClassVar[str] = "epoch"
    planned: ClassVar[bool] = True
    dense: ClassVar[bool] = False
    source: ClassVar[str] = ""

    def planner_overrides(self, costs: CostTable) -> dict[str, Any]:
        """``PlannerOptions`` fields this strategy sets for ``costs``."""
        return {}

    def layers(self, problem: Problem) -> list[LayerCost]:
        """The layers whose weights may train, for a strategy that is not planned."""
        raise NotImplementedError(f"strategy {self.name!r} is planned: its layers come from the plan")

    def biases(self, problem: Problem) -> list[str | None]:
        """The bias parameters that train for the whole fit, for a strategy that is not planned."""
        raise NotImplementedError(f"strategy {self.name!r} is planned: its biases come from the plan")

    def draw(self, problem: Problem, seed: int) -> tuple[dict[str, Choice], dict[str, list[int]]]:
        """One draw's choices and input channels per layer, for a strategy that is not planned."""
        raise NotImplementedError(f"strategy {self.name!r} is planned: its channels come from the sampler")

    def required(self, problem: Problem) -> tuple[str, ...]:
        """The layers a drawn plan reports as required."""
        return ()


STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Make a strategy class available by its ``name`` (``BudgetPlanCallback(strategy=...)``)."""
    if not cls.name:
        raise BudgetPlanError(f"{cls.__name__} needs a name to be registered")
    STRATEGIES[cls.name] = cls
    return cls


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``, or a clear error listing the known ones."""
    if name not in STRATEGIES:
        raise BudgetPlanError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]()
