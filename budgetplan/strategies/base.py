"""``Strategy``: what trains and how its choices change; one registry of strategies by name.

Every budgeted strategy is held to the same limits (budget, training-memory cap, step
latency) with the same memory model (``budgetplan.planning.memory``, docs/cost-model.md);
strategies differ in which layers train and how the input channels inside them are chosen
(docs/training.md). A new strategy is one subclass with a ``name``, registered with
``register_strategy``, in a module of its own (``budgetplan/strategies/``, imported with
the package) or anywhere the user imports it::

    @register_strategy
    class LastLayers(Strategy):
        name = "last-layers"
        source = "the last two layers, every channel"

        def planner_overrides(self, costs):
            return {"include": tuple(layer.name for layer in costs.layers[-2:]), "ratios": (1.0,)}

>>> Resample.from_str("step") is Resample.STEP, Resample.STEP == "step"
(True, True)
>>> Resample.EPOCH.due_at_epoch(drawn_at=(0, 0)), Resample.NEVER.due_at_epoch(drawn_at=(0, 0))
(True, False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from budgetplan.enums import EnumStr
from budgetplan.errors import BudgetPlanError
from budgetplan.importance.measure import DEFAULT_MEASURE
from budgetplan.registry import Registry

if TYPE_CHECKING:
    from budgetplan.costs.table import CostTable
    from budgetplan.plan.model import Plan
    from budgetplan.planning.problem import Problem


class Resample(EnumStr):
    """When the channels of the trained layers are drawn again."""

    EPOCH = "epoch"
    STEP = "step"
    NEVER = "never"

    @classmethod
    def from_str(cls, value: Any) -> Resample:
        """The member called ``value``, or the error the callback gives for a bad ``resample=``."""
        try:
            return super().from_str(value)
        except ValueError:
            raise BudgetPlanError(f"resample must be one of {', '.join(cls.choices())}, got {value!r}") from None

    def due_at_epoch(self, drawn_at: tuple[int, int] | None) -> bool:
        """Whether an epoch starts with a new draw: every epoch, or the first draw of a fit."""
        return self is Resample.EPOCH or drawn_at is None

    def due_at_step(self, drawn_at: tuple[int, int] | None, epoch: int, step: int) -> bool:
        """Whether a step starts with a new draw (once per optimizer step)."""
        return self is Resample.STEP and drawn_at != (epoch, step)


@dataclass(frozen=True)
class LayerToTrain:
    """A layer whose weight trains ``count`` of its ``total`` input channels (0: a count
    the strategy draws afresh each time); ``bias_param`` is the bias after it, if any."""

    name: str
    total: int
    count: int
    bias_param: str | None


@dataclass(frozen=True)
class Training:
    """What trains for the whole fit: layer weights and bias parameters, named as in the
    plan's model, and the plan reported (None: each draw brings its own plan)."""

    layers: tuple[LayerToTrain, ...]
    biases: tuple[str, ...]
    plan: Plan | None

    @classmethod
    def from_plan(cls, plan: Plan) -> Training:
        """The layers with planned channels, and the planned biases."""
        layers = tuple(
            LayerToTrain(layer.name, layer.total_channels, layer.channels, layer.bias_param)
            for layer in plan.layers
            if layer.channels
        )
        biases = tuple(layer.bias_param for layer in plan.layers if layer.bias and layer.bias_param)
        return cls(layers, biases, plan)


@dataclass(frozen=True)
class Draw:
    """A strategy's own draw: its plan and the input channels of each trained layer."""

    plan: Plan
    channels: dict[str, list[int]]


class Strategy:
    """How a strategy trains: ``sampler`` (a name in ``budgetplan.training.samplers``)
    redrawn per ``resample`` (``epoch``, ``step`` or ``never``); ``source`` cites it.

    ``measure``: the importance measure it ranks by when the callback measures one
    (``budgetplan.training.measure``). ``planned``: its layers and channel counts come from the ILP plan, shaped by
    ``planner_overrides``; the sampler picks the channels. Otherwise ``prepare`` reads the
    problem and ``draw`` makes its own choices across layers each time. ``dense``: nothing
    is frozen and nothing is enforced (the reference run); its prediction is reported only.
    """

    name: ClassVar[str] = ""
    sampler: ClassVar[str] = "uniform"
    resample: ClassVar[str] = Resample.EPOCH
    planned: ClassVar[bool] = True
    dense: ClassVar[bool] = False
    measure: ClassVar[str] = DEFAULT_MEASURE  # how the callback measures importance for it by default
    clip_ratio: ClassVar[float] = 0.0  # adaptive gradient clipping by default (training/clipping.py); 0: none
    returning_state: ClassVar[str] = "reset"  # the optimizer state of channels a redraw brings back (guard.py)
    # by default, try the plan of a shipped table against the plan of importance measured on
    # the training data, and train the better (training/plan_source.py, docs/importance.md)
    tries_importances: ClassVar[bool] = False
    source: ClassVar[str] = ""
    # what the strategies' table says of it (``strategy_table``): which layers train, which
    # of their input channels and when they change, and how its memory is held to the budget
    layers: ClassVar[str] = ""
    channels: ClassVar[str] = ""
    memory: ClassVar[str] = ""

    def planner_overrides(self, costs: CostTable) -> dict[str, Any]:
        """``PlannerOptions`` fields this strategy sets for ``costs``."""
        return {}

    def prepare(self, plan: Plan | None, problem: Problem | None) -> Training:
        """What trains for the whole fit: a planned strategy is given the plan, any other
        the problem (costs, device, importance, options)."""
        if plan is None:
            raise BudgetPlanError(f"strategy {self.name!r} trains what a plan says: it needs one")
        return Training.from_plan(plan)

    def draw(self, seed: int) -> Draw | None:
        """This draw's plan and channels, for a strategy that chooses them itself; None
        leaves the channels to the sampler and the plan unchanged."""
        return None


STRATEGIES: Registry[Strategy] = Registry(
    lambda name, known: f"unknown strategy {name!r}; choose one of {', '.join(known)}"
)
register_strategy = STRATEGIES.register  # class decorator: a strategy available by its name
get_strategy = STRATEGIES.create  # a new strategy by name, or a clear error listing the known ones


def strategy_table() -> str:
    """The registered strategies as a Markdown table: name, layers, channels, memory."""
    rows = ["| strategy | layers | channels | memory accounting |", "| --- | --- | --- | --- |"]
    for i, (name, cls) in enumerate(STRATEGIES.items()):
        label = f"`{name}`" + (" (default)" if i == 0 else "")
        rows.append(f"| {label} | {cls.layers} | {cls.channels} | {cls.memory} |")
    return "\n".join(rows)
