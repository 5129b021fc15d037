"""The integer linear program that chooses what to train (DESIGN.md §4).

Symbols follow DESIGN.md: ``x[l,c]`` = layer ``l`` updates ``c`` of its input channels,
``b[l]`` = layer ``l`` updates its bias, ``y[l]`` = the gradient reaches layer ``l``.
Memory is constrained at every layer in forward and in backward, as saved tensors
accumulate and are released (``budgetplan.memory`` evaluates the same model directly).

The program is small (a few hundred binaries for MobileNetV2) and solves in well under a
second; HiGHS (``highspy``) is used when installed, CBC otherwise, always with a time limit.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulp

from budgetplan.costs import CostTable, LayerCost, layer_costs
from budgetplan.devices import DeviceProfile, load_device
from budgetplan.errors import BudgetPlanError, InfeasibleError
from budgetplan.importance import Importance, prior_importance, resolve_importance
from budgetplan.memory import Choice, LayerBytes, backward_macs, base_bytes, layer_bytes, predict
from budgetplan.native_output import native_output_to
from budgetplan.plan import LayerPlan, Plan
from budgetplan.units import format_bytes, parse_bytes, parse_seconds

DEFAULT_RATIOS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 3 / 4, 1.0)
UTILITIES = ("coverage", "linear")
SOLVERS = ("auto", "highs", "cbc")
# The objective counts whole units of one millionth of the total importance, so values
# that close are equal for every solver, and "optimal" is proven exactly (absolute gap
# below one unit). Among equal plans the tie-break picks one by a fixed rule (``_Program``).
OPTIMALITY_GAP = 1e-6


@dataclass(frozen=True)
class PlannerOptions:
    """What the planner may choose and the limits it must keep.

    ``budget`` and ``max_step_latency`` default to the device's. ``training_memory``
    caps the published accounting (updated weights and biases plus saved tensors, no
    working buffers) on top of the physical budget. ``require`` lists name patterns of
    layers trained in full (every channel and the bias); ``None`` means the classifier
    (the last layer) when it is allowed. ``include``/``exclude`` are name patterns (``fnmatch``).
    ``utility`` is ``coverage`` (``1-(1-r)^E``, the expected fraction of a layer's
    channels trained at least once in ``epochs`` epochs of resampling) or ``linear`` (``r``).
    ``bias_only`` keeps the weights of all but the required layers frozen (bias updates only).
    ``verbose`` lets the solver's own log through, on stderr.
    """

    budget: int | None = None
    training_memory: int | None = None
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    epochs: int = 10
    utility: str = "coverage"
    max_layers: int | None = None
    require: tuple[str, ...] | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    batch_size: int = 1
    max_step_latency: float | None = None
    time_limit: float = 10.0
    solver: str = "auto"
    bias_only: bool = False
    verbose: bool = False

    def budget_on(self, device: DeviceProfile) -> int:
        """The budget in force: this option, else the device's."""
        return self.budget if self.budget is not None else device.budget

    def latency_on(self, device: DeviceProfile) -> float | None:
        """The step latency limit in force: this option, else the device's (or none)."""
        return self.max_step_latency if self.max_step_latency is not None else device.max_step_latency

    def check(self) -> None:
        if not self.ratios or any(not 0 < r <= 1 for r in self.ratios):
            raise BudgetPlanError(f"ratios must lie in (0, 1], got {list(self.ratios)}")
        if self.epochs < 1:
            raise BudgetPlanError(f"epochs must be at least 1, got {self.epochs}")
        if self.utility not in UTILITIES:
            raise BudgetPlanError(f"utility must be one of {', '.join(UTILITIES)}, got {self.utility!r}")
        if self.batch_size < 1:
            raise BudgetPlanError(f"batch size must be at least 1, got {self.batch_size}")
        if self.max_layers is not None and self.max_layers < 1:
            raise BudgetPlanError(f"max_layers must be at least 1, got {self.max_layers}")
        if self.time_limit <= 0:
            raise BudgetPlanError(f"time limit must be positive, got {self.time_limit}")
        if self.solver not in SOLVERS:
            raise BudgetPlanError(f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        for name, value in (("budget", self.budget), ("training_memory", self.training_memory)):
            if value is not None and value <= 0:
                raise BudgetPlanError(f"{name} must be positive, got {value}")


@dataclass(frozen=True)
class Solution:
    """The planner's answer: a choice per layer and how it was found."""

    choices: dict[str, Choice]
    status: str  # "optimal" (proven) or "feasible" (time limit reached)
    objective: float
    solver: str
    solve_seconds: float
    required: tuple[str, ...] = field(default=())


def channel_options(layer: LayerCost, ratios: tuple[float, ...]) -> list[int]:
    """Distinct channel counts ``round(r·C_in)`` (at least 1) for the ratio grid."""
    return sorted({min(layer.in_channels, max(1, round(r * layer.in_channels))) for r in ratios})


def utility(fraction: float, kind: str = "coverage", epochs: int = 10) -> float:
    """Value of training ``fraction`` of a layer's input channels each epoch."""
    if kind == "linear":
        return fraction
    return 1.0 - (1.0 - fraction) ** epochs


def _allowed_and_required(costs: CostTable, options: PlannerOptions) -> tuple[set[str], tuple[str, ...]]:
    def matches(name: str, patterns: tuple[str, ...]) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in patterns)

    for kind, patterns in (("include", options.include), ("exclude", options.exclude)):
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(layer.name, pattern) for layer in costs.layers):
                raise BudgetPlanError(f"{kind} pattern '{pattern}' matches no layer of {costs.model}")
    allowed = {
        layer.name
        for layer in costs.layers
        if (not options.include or matches(layer.name, options.include)) and not matches(layer.name, options.exclude)
    }
    if not allowed:
        raise BudgetPlanError("include/exclude leave no layer to train")
    if options.require is None:
        last = costs.layers[-1].name
        return allowed, (last,) if last in allowed else ()
    required: list[str] = []
    for pattern in options.require:
        hits = [layer.name for layer in costs.layers if fnmatch.fnmatchcase(layer.name, pattern)]
        if not hits:
            raise BudgetPlanError(f"required layer pattern '{pattern}' matches no layer of {costs.model}")
        blocked = [h for h in hits if h not in allowed]
        if blocked:
            raise BudgetPlanError(f"layer {blocked[0]} is required but excluded by include/exclude")
        required += [h for h in hits if h not in required]
    if options.max_layers is not None and len(required) > options.max_layers:
        raise BudgetPlanError(f"{len(required)} layers are required but max_layers is {options.max_layers}")
    return allowed, tuple(required)


class _Program:
    """The ILP for one cost table, device and option set.

    ``goal`` is ``importance`` (maximise the objective under every limit) or the name of
    one limit (``peak``, ``training_memory``, ``compute``) to minimise with the others kept;
    the latter answers "what is the smallest budget at which any plan is feasible".
    """

    def __init__(
        self,
        costs: CostTable,
        device: DeviceProfile,
        importance: Importance,
        options: PlannerOptions,
        allowed: set[str],
        required: tuple[str, ...],
        goal: str = "importance",
    ) -> None:
        self.costs = costs
        budget = options.budget_on(device)
        latency = options.latency_on(device)
        sense = pulp.LpMaximize if goal == "importance" else pulp.LpMinimize
        prob = pulp.LpProblem("budgetplan", sense)
        batch = options.batch_size
        layers = costs.layers
        terms = [layer_bytes(layer, device, batch) for layer in layers]
        weights = allowed if not options.bias_only else set()
        self.options_of = {
            layer.name: channel_options(layer, options.ratios) if layer.name in weights else [] for layer in layers
        }
        for name in required:
            self.options_of[name] = [self.costs.layer(name).in_channels]

        # x[l,c]: layer l updates c input channels; b[l]: bias update; y[l]: on the backward path
        self.x = {
            (i, c): prob.add_variable(f"x_{i}_{c}", cat="Binary")
            for i, layer in enumerate(layers)
            for c in self.options_of[layer.name]
        }
        self.b = {
            i: prob.add_variable(f"b_{i}", cat="Binary")
            for i, layer in enumerate(layers)
            if layer.name in allowed and layer.bias_elements > 0
        }
        y = [prob.add_variable(f"y_{i}", cat="Binary") for i in range(len(layers))]
        weight_on = [pulp.lpSum(self.x[i, c] for c in self.options_of[layer.name]) for i, layer in enumerate(layers)]

        for i in range(len(layers)):
            # at most one channel count per layer
            prob += weight_on[i] <= 1, f"one_choice_{i}"
            # the gradient reaches every layer after the earliest updated one
            if i > 0:
                prob += y[i] >= y[i - 1], f"path_monotone_{i}"
            prob += y[i] >= weight_on[i], f"path_weight_{i}"
            if i in self.b:
                prob += y[i] >= self.b[i], f"path_bias_{i}"
        for name in required:
            # a required layer (a new classifier head) is trained in full, bias included
            i = next(k for k, layer in enumerate(layers) if layer.name == name)
            prob += weight_on[i] == 1, f"required_{i}"
            if i in self.b:
                prob += self.b[i] == 1, f"required_bias_{i}"
        # a plan trains something
        prob += pulp.lpSum(weight_on) + pulp.lpSum(self.b.values()) >= 1, "trains_something"
        if options.max_layers is not None:
            a = [prob.add_variable(f"a_{i}", cat="Binary") for i in range(len(layers))]
            for i in range(len(layers)):
                prob += a[i] >= weight_on[i], f"updated_weight_{i}"
                if i in self.b:
                    prob += a[i] >= self.b[i], f"updated_bias_{i}"
            prob += pulp.lpSum(a) <= options.max_layers, "max_layers"

        # memory held for the whole step: updated weights, biases, their gradients and state
        resident = pulp.lpSum(
            [terms[i].weight_per_channel * c * v for (i, c), v in self.x.items()]
            + [terms[i].bias * v for i, v in self.b.items()]
        )
        saved = [
            pulp.lpSum([terms[i].saved_per_channel * c * self.x[i, c] for c in self.options_of[layer.name]])
            + terms[i].path * y[i]
            for i, layer in enumerate(layers)
        ]
        base = base_bytes(costs, device)
        peak = prob.add_variable("peak", lowBound=0) if goal == "peak" else None
        limit = peak if peak is not None else budget
        # S[i]: everything saved by layers 0..i (saved tensors only accumulate in forward)
        held = [prob.add_variable(f"S_{i}", lowBound=0) for i in range(len(layers))]
        for i in range(len(layers)):
            prob += held[i] == (held[i - 1] if i else 0) + saved[i], f"saved_so_far_{i}"
        forward, backward = _binding_points(terms)
        for i in forward:
            # forward at layer i: its working buffer plus everything saved so far
            prob += base + resident + terms[i].live_forward + held[i] <= limit, f"forward_{i}"
        for i in backward:
            # backward at layer i: its gradient buffer (when on the path) plus what is still saved
            prob += base + resident + terms[i].live_backward * y[i] + held[i] <= limit, f"backward_{i}"

        # published accounting: updated weights + saved tensors, no working buffers
        training_memory = resident + pulp.lpSum(saved)
        if goal != "training_memory" and options.training_memory is not None:
            prob += training_memory <= options.training_memory, "training_memory"

        # compute of one step: forward + input gradients on the path + weight gradients
        step_macs = batch * (
            costs.forward_macs
            + pulp.lpSum(layers[i].input_grad_macs * y[i - 1] for i in range(1, len(layers)))
            + pulp.lpSum(layers[i].weight_grad_macs_per_channel * c * v for (i, c), v in self.x.items())
        )
        if goal != "compute" and latency is not None:
            prob += step_macs <= device.macs_per_second * latency, "compute"

        self.tiebreak: pulp.LpAffineExpression | None = None
        if goal == "importance":
            # utility in whole units, then, among plans of equal utility, the one that trains
            # the most of the latest layers: weight (i+1)^2 per sixteenth of a layer's channels
            # and per bias, so that a later layer outweighs any swap of two earlier ones
            def units(i: int, choice: Choice) -> int:
                return round(_value(layers[i], choice, importance, options) / OPTIMALITY_GAP)

            prob += pulp.lpSum(
                [units(i, Choice(c)) * v for (i, c), v in self.x.items()]
                + [units(i, Choice(bias=True)) * v for i, v in self.b.items()]
            )
            self.tiebreak = pulp.lpSum(
                [(i + 1) ** 2 * math.ceil(16 * c / layers[i].in_channels) * v for (i, c), v in self.x.items()]
                + [(i + 1) ** 2 * 16 * v for i, v in self.b.items()]
            )
        elif goal == "peak":
            assert peak is not None
            prob += peak
        elif goal == "training_memory":
            prob += training_memory
        else:
            prob += step_macs
        self.prob = prob

    def solve(self, solver: str, time_limit: float, verbose: bool = False) -> tuple[str, str]:
        """Run the solver; return (status, solver name). Status is ``optimal``,
        ``feasible``, ``infeasible`` or ``no solution`` (time limit, nothing found).
        Nothing the solver prints reaches stdout; its log goes to stderr when ``verbose``."""
        start = time.perf_counter()
        status, name = self._run(solver, time_limit, verbose)
        if status == "optimal" and self.tiebreak is not None:
            # second stage: keep the optimal utility, choose among equal plans by the tie-break
            first = {v.name: v.value() for v in self.prob.variables()}
            self.prob += self.prob.objective >= self.value() - 0.5, "utility_kept"
            self.prob.setObjective(self.tiebreak)
            left = max(1.0, time_limit - (time.perf_counter() - start))
            if self._run(solver, left, verbose, warm_start=True)[0] not in ("optimal", "feasible"):
                for v in self.prob.variables():  # out of time: the first stage's plan stands
                    v.varValue = first[v.name]
        return status, name

    def _run(self, solver: str, time_limit: float, verbose: bool, warm_start: bool = False) -> tuple[str, str]:
        with native_output_to(echo=verbose):
            backend, name = _backend(solver, time_limit, verbose, warm_start)
            self.prob.solve(backend)
        if self.prob.sol_status == pulp.LpSolutionOptimal:
            return "optimal", name
        if self.prob.sol_status == pulp.LpSolutionIntegerFeasible:
            return "feasible", name
        if self.prob.status == pulp.LpStatusInfeasible:
            return "infeasible", name
        return "no solution", name

    def choices(self) -> dict[str, Choice]:
        picked: dict[str, Choice] = {}
        for i, layer in enumerate(self.costs.layers):
            channels = sum(c for c in self.options_of[layer.name] if (self.x[i, c].value() or 0) > 0.5)
            bias = i in self.b and (self.b[i].value() or 0) > 0.5
            if channels or bias:
                picked[layer.name] = Choice(channels, bool(bias))
        return picked

    def value(self) -> float:
        return float(pulp.value(self.prob.objective) or 0.0)


def _binding_points(terms: list[LayerBytes]) -> tuple[list[int], list[int]]:
    """Layers whose forward or backward memory constraint is not implied by a later one.

    Saved tensors only accumulate along the order, so the constraint at layer ``i`` with
    buffer ``m`` is implied by any constraint at ``j >= i`` whose buffer is at least ``m``
    (a backward buffer counts only when the gradient reaches the layer, and ``y`` is
    monotone, so a later backward buffer also implies it). Dropping implied rows leaves
    the feasible set unchanged and the program much smaller.
    """
    forward: list[int] = []
    backward: list[int] = []
    later_forward = later_any = -1.0
    for i in reversed(range(len(terms))):
        fwd, bwd = terms[i].live_forward, terms[i].live_backward
        if bwd > max(later_any, fwd):
            backward.append(i)
        if fwd > later_forward:
            forward.append(i)
        later_forward = max(later_forward, fwd)
        later_any = max(later_any, fwd, bwd)
    return sorted(forward), sorted(backward)


def _backend(solver: str, time_limit: float, verbose: bool, warm_start: bool = False) -> tuple[pulp.LpSolver, str]:
    if solver in ("auto", "highs"):
        highs = pulp.HiGHS(msg=verbose, timeLimit=time_limit, gapRel=0, gapAbs=0.5)
        if highs.available():
            return highs, "HiGHS"
        if solver == "highs":
            raise BudgetPlanError("the HiGHS solver is not available: pip install highspy")
    with warnings.catch_warnings():  # the CBC bundled with PuLP 3 announces its move in PuLP 4
        warnings.simplefilter("ignore", DeprecationWarning)
        return pulp.PULP_CBC_CMD(msg=verbose, timeLimit=time_limit, gapRel=0, gapAbs=0.5, warmStart=warm_start), "CBC"


def solve_choices(costs: CostTable, device: DeviceProfile, importance: Importance, options: PlannerOptions) -> Solution:
    """Solve the ILP; raise ``InfeasibleError`` saying what budget would work."""
    options.check()
    if not costs.layers:
        raise BudgetPlanError(f"{costs.model} has no layer the planner can train (no Conv or Linear ran)")
    start = time.perf_counter()
    allowed, required = _allowed_and_required(costs, options)
    program = _Program(costs, device, importance, options, allowed, required)
    status, solver = program.solve(options.solver, options.time_limit, options.verbose)
    if status in ("optimal", "feasible"):
        choices = _fill(costs, device, importance, options, program)
        value = objective(costs, importance, options, choices)
        return Solution(choices, status, value, solver, time.perf_counter() - start, required)
    if status == "no solution":
        raise BudgetPlanError(
            f"no plan found within the time limit of {options.time_limit:g} s ({solver}); raise --time-limit"
        )
    raise _infeasible(costs, device, importance, options, allowed, required)


def _value(layer: LayerCost, choice: Choice, importance: Importance, options: PlannerOptions) -> float:
    """One layer's term of the objective: ``w[l]·u(c/C_in)`` plus ``w_b[l]`` for the bias."""
    value = importance.bias.get(layer.name, 0.0) if choice.bias else 0.0
    if choice.channels:
        fraction = choice.channels / layer.in_channels
        value += importance.weight.get(layer.name, 0.0) * utility(fraction, options.utility, options.epochs)
    return value


def objective(costs: CostTable, importance: Importance, options: PlannerOptions, choices: dict[str, Choice]) -> float:
    """The planner's objective for a set of choices."""
    return sum(_value(layer, choices.get(layer.name, Choice()), importance, options) for layer in costs.layers)


def fits(costs: CostTable, device: DeviceProfile, options: PlannerOptions, choices: dict[str, Choice]) -> bool:
    """Whether ``choices`` keep every limit: budget, training-memory cap and step latency."""
    p = predict(costs, device, choices, options.batch_size)
    budget = options.budget_on(device)
    latency = options.latency_on(device)
    return (
        p.peak_bytes <= budget
        and (options.training_memory is None or p.training_memory_bytes <= options.training_memory)
        and (latency is None or p.step_seconds <= latency)
    )


def _fill(
    costs: CostTable, device: DeviceProfile, importance: Importance, options: PlannerOptions, program: _Program
) -> dict[str, Choice]:
    """Spend memory the solution left unused on the layers it updates.

    Options whose objective values differ by less than the optimality gap (with E=10,
    ``u(3/4)`` is within 1e-6 of ``u(1)``) may leave memory unused; raising a channel
    count or switching a bias on never lowers the objective, so do it wherever every
    limit still holds, most important layers first.
    """
    choices = program.choices()
    order = sorted(choices, key=lambda n: -(importance.weight.get(n, 0.0) + importance.bias.get(n, 0.0)))
    for name in order:
        layer = costs.layer(name)
        current = choices[name]
        candidates = [Choice(c, b) for c in reversed(program.options_of[name]) for b in (True, False)]
        for candidate in candidates:
            if candidate.bias and not layer.bias_elements:
                continue
            if candidate.channels < current.channels or (current.bias and not candidate.bias):
                continue
            if candidate == current:
                break
            trial = {**choices, name: candidate}
            if fits(costs, device, options, trial):
                choices = trial
                break
    return choices


def _minimum(
    goal: str,
    costs: CostTable,
    device: DeviceProfile,
    importance: Importance,
    options: PlannerOptions,
    allowed: set[str],
    required: tuple[str, ...],
) -> float | None:
    program = _Program(costs, device, importance, options, allowed, required, goal=goal)
    status, _ = program.solve(options.solver, options.time_limit, options.verbose)
    return program.value() if status in ("optimal", "feasible") else None


def budget_argument(n_bytes: float) -> str:
    """A ``--budget`` value at least ``n_bytes``, rounded up to a whole KB (or MB)."""
    if n_bytes < 16 * 1024**2:
        return f"{max(1, math.ceil(n_bytes / 1024 - 1e-9))}KB"
    return f"{math.ceil(n_bytes / 1024**2 - 1e-9)}MB"


def _infeasible(
    costs: CostTable,
    device: DeviceProfile,
    importance: Importance,
    options: PlannerOptions,
    allowed: set[str],
    required: tuple[str, ...],
) -> InfeasibleError:
    budget = options.budget_on(device)
    args = (costs, device, importance, options, allowed, required)
    what = f"no plan for {costs.model} fits a budget of {format_bytes(budget)} on {device.name}"
    if required:
        what += f" while updating {', '.join(required)}"
    smallest = _minimum("peak", *args)
    if smallest is not None:
        arg = budget_argument(smallest)
        return InfeasibleError(
            f"{what}: the smallest budget at which a plan is feasible is {format_bytes(smallest)} (--budget {arg})",
            smallest_budget=math.ceil(smallest),
        )
    # the budget is not the only obstacle: find which other limit is
    hints = []
    unlimited = dataclasses.replace(options, budget=device.sram * 1024)
    if options.training_memory is not None:
        tm = _minimum("training_memory", costs, device, importance, unlimited, allowed, required)
        if tm is not None and tm > options.training_memory:
            hints.append(
                f"the smallest training memory is {format_bytes(tm)} (--training-memory {budget_argument(tm)})"
            )
    latency = options.latency_on(device)
    if latency is not None:
        macs = _minimum("compute", costs, device, importance, unlimited, allowed, required)
        if macs is not None:
            seconds = macs / device.macs_per_second
            if seconds > latency:
                hints.append(f"the shortest step takes {seconds:.3g} s, above the limit of {latency:g} s")
    detail = "; ".join(hints) if hints else "no plan satisfies the other limits at any budget"
    return InfeasibleError(f"{what}: {detail}")


def plan_from_costs(
    costs: CostTable,
    device: DeviceProfile,
    importance: Importance | None = None,
    options: PlannerOptions | None = None,
) -> Plan:
    """Solve the ILP for a cost table and assemble the ``Plan``."""
    options = options or PlannerOptions()
    importance = importance or prior_importance(costs)
    check_flash(costs, device)
    solution = solve_choices(costs, device, importance, options)
    return plan_from_choices(costs, device, importance, options, solution)


def check_flash(costs: CostTable, device: DeviceProfile) -> None:
    """Raise ``InfeasibleError`` when the whole model does not fit the device's flash."""
    flash_needed = costs.model_bytes(device)
    if flash_needed > device.flash:
        raise InfeasibleError(
            f"{costs.model} needs {format_bytes(flash_needed)} of flash at {device.bits.weight}-bit weights, "
            f"but {device.name} has {format_bytes(device.flash)}: it does not fit by "
            f"{format_bytes(flash_needed - device.flash)}"
        )


def plan_from_choices(
    costs: CostTable,
    device: DeviceProfile,
    importance: Importance,
    options: PlannerOptions,
    solution: Solution,
) -> Plan:
    """The ``Plan`` of a set of choices (the ILP's, or a strategy's own), with its predicted memory."""
    batch = options.batch_size
    macs = backward_macs(costs, solution.choices, batch)
    first = min((layer.index for layer in costs.layers if layer.name in solution.choices), default=len(costs.layers))
    layers = []
    for layer, spent in zip(costs.layers, macs, strict=True):
        choice = solution.choices.get(layer.name, Choice())
        terms = layer_bytes(layer, device, batch)
        update = "weight" if choice.channels else "bias" if choice.bias else "none"
        layers.append(
            LayerPlan(
                name=layer.name,
                kind=layer.kind,
                weight_shape=layer.weight_shape,
                update=update,
                channels=choice.channels,
                total_channels=layer.in_channels,
                bias=choice.bias,
                bias_param=layer.bias_param,
                activation_bytes=terms.saved_per_channel * choice.channels,
                weight_bytes=terms.weight_per_channel * choice.channels,
                bias_bytes=terms.bias if choice.bias else 0.0,
                path_bytes=terms.path if layer.index >= first else 0.0,
                macs=spent,
                importance=importance.weight.get(layer.name, 0.0) + importance.bias.get(layer.name, 0.0),
                forward_buffer_bytes=terms.live_forward,
                backward_buffer_bytes=terms.live_backward if layer.index >= first else 0.0,
            )
        )
    return Plan(
        device=device,
        model=costs.model,
        input_shape=costs.input_shape,
        batch_size=batch,
        budget_bytes=options.budget_on(device),
        layers=layers,
        predicted=predict(costs, device, solution.choices, batch),
        status=solution.status,
        solver=solution.solver,
        objective=solution.objective,
        solve_seconds=solution.solve_seconds,
        importance_source=importance.source,
        training_memory_cap=options.training_memory,
        max_step_latency=options.latency_on(device),
        optimality_gap=OPTIMALITY_GAP,
        options={
            "ratios": list(options.ratios),
            "epochs": options.epochs,
            "utility": options.utility,
            "max_layers": options.max_layers,
            "require": list(solution.required),
            "include": list(options.include),
            "exclude": list(options.exclude),
            "time_limit": options.time_limit,
        },
    )


def planner_options(**options: Any) -> PlannerOptions:
    """``PlannerOptions`` from keyword arguments; sizes (``"256KB"``), durations (``"2s"``)
    and lists are accepted where the fields are numbers and tuples."""
    for key in ("budget", "training_memory"):
        if isinstance(options.get(key), str):
            options[key] = _parse(parse_bytes, options[key], key)
    if isinstance(options.get("max_step_latency"), str):
        options["max_step_latency"] = _parse(parse_seconds, options["max_step_latency"], "max_step_latency")
    for key in ("ratios", "require", "include", "exclude"):
        if isinstance(options.get(key), Sequence) and not isinstance(options[key], str):
            options[key] = tuple(options[key])
    unknown = set(options) - set(PlannerOptions.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown planner option(s): {', '.join(sorted(unknown))}")
    return PlannerOptions(**options)


def solve(
    model: Any,
    example_input: Any,
    device: str | Path | DeviceProfile = "cortex-m7",
    importance: str | Path | Importance | None = None,
    model_name: str | None = None,
    **options: Any,
) -> Plan:
    """Plan which layers and how many input channels to train on ``device``.

    ``model`` is a ``torch.nn.Module`` and ``example_input`` one batch for it (batch 1 is
    enough: costs are per sample and scaled by ``batch_size``). ``importance`` is an
    importance YAML file, ``"shipped"`` (the table shipped for the model: ImageNet
    MobileNetV2) or ``"prior"``; without one, the documented prior. The plan says which it
    used. Other keyword arguments are ``PlannerOptions`` fields; ``budget`` and
    ``training_memory`` also take sizes such as ``"256KB"``, ``max_step_latency`` durations
    such as ``"2s"``.

    >>> import torch, torchvision
    >>> model = torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10)
    >>> plan = solve(model, torch.zeros(1, 3, 128, 128), "cortex-m7", budget="300KB")
    >>> plan.budget_bytes, plan.status
    (307200, 'optimal')
    >>> [layer.channels for layer in plan.layers if layer.name == "classifier.1"]
    [1280]
    """
    profile = load_device(device)
    planner = planner_options(**options)
    costs = layer_costs(model, example_input, profile, model_name=model_name)
    return plan_from_costs(costs, profile, resolve_importance(importance, costs), planner)


def _parse(reader: Any, value: str, key: str) -> Any:
    try:
        return reader(value)
    except ValueError as err:
        raise BudgetPlanError(f"{key}: {err}") from None
