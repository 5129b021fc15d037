"""The integer linear program that chooses what to train (docs/planner.md).

Symbols follow docs/planner.md: ``x[l,c]`` = layer ``l`` updates ``c`` of its input channels,
``b[l]`` = layer ``l`` updates its bias, ``y[l]`` = the gradient reaches layer ``l``.
Memory is constrained at every layer in forward and in backward, as saved tensors
accumulate and are released (``budgetplan.planning.memory`` evaluates the same model directly).

The program is small (a few hundred binaries for MobileNetV2) and solves in well under a
second; HiGHS (``highspy``) is used when installed, CBC otherwise, always with a time limit.
"""

from __future__ import annotations

import fnmatch
import math
import time
import warnings
from typing import Any

import pulp

from budgetplan.costs.table import CostTable
from budgetplan.device.profile import DeviceProfile
from budgetplan.errors import BudgetPlanError
from budgetplan.planning.importance import Importance
from budgetplan.planning.memory import Choice, LayerBytes, base_bytes, layer_bytes
from budgetplan.planning.objective import _value, channel_options
from budgetplan.planning.options import PlannerOptions
from budgetplan.planning.solver_output import native_output_to

# The objective counts whole units of 1/10,000 of the total importance, so values
# that close are equal for every solver, and "optimal" is proven exactly (absolute gap
# below one unit). Among equal plans the tie-break picks one by a fixed rule (``_Program``).
OPTIMALITY_GAP = 1e-4


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
            # the tie-break may take what is left of the limit, but at most twice the first
            # solve (and at least a second): breaking a tie must not cost more than planning
            spent = time.perf_counter() - start
            left = max(1.0, min(time_limit - spent, 2 * spent))
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


class _HiGHS(pulp.HiGHS):  # type: ignore[misc,valid-type]
    """HiGHS through highspy, started from the variables' current values when ``warm_start``
    (PuLP passes a start to CBC but not to highspy): the tie-break solve then begins at the
    first solve's optimum instead of searching for any feasible plan."""

    def __init__(self, warm_start: bool, **options: Any) -> None:
        super().__init__(**options)
        self.warm_start = warm_start

    def callSolver(self, lp: pulp.LpProblem) -> None:  # PuLP names it
        if self.warm_start:
            import highspy

            start = highspy.HighsSolution()
            start.col_value = [float(v.varValue or 0.0) for v in sorted(lp.variables(), key=lambda v: v.index)]
            start.value_valid = True
            lp.solverModel.setSolution(start)
        super().callSolver(lp)


def _backend(solver: str, time_limit: float, verbose: bool, warm_start: bool = False) -> tuple[pulp.LpSolver, str]:
    if solver in ("auto", "highs"):
        highs = _HiGHS(warm_start, msg=verbose, timeLimit=time_limit, gapRel=0, gapAbs=0.5)
        if highs.available():
            return highs, "HiGHS"
        if solver == "highs":
            raise BudgetPlanError("the HiGHS solver is not available: pip install highspy")
    with warnings.catch_warnings():  # the CBC bundled with PuLP 3 announces its move in PuLP 4
        warnings.simplefilter("ignore", DeprecationWarning)
        return pulp.PULP_CBC_CMD(msg=verbose, timeLimit=time_limit, gapRel=0, gapAbs=0.5, warmStart=warm_start), "CBC"
