"""The integer linear program that chooses what to train (docs/planner.md).

Symbols follow docs/planner.md, "Variables and constraints" and "Memory over time":

* ``x[l,c]`` (``x_{l}_{c}``): layer ``l`` updates ``c`` of its input channels;
* ``b[l]`` (``b_{l}``): layer ``l`` updates its bias;
* ``y[l]`` (``y_{l}``): the gradient reaches layer ``l``;
* ``a[l]`` (``a_{l}``, with ``max_layers`` only): layer ``l`` updates anything;
* ``z[o]`` (``z_{o}``, with ``executor: patch`` only): the layers before option ``o``'s split
  run patch by patch on its grid (``budgetplan.costs.patches``);
* ``t[k]`` (``t_{k}``, with importance measured by depth only): the biases of the last
  ``k`` layers train (Sparse Update's contribution analysis, ``Importance.bias_depths``);
* ``S[l]`` (``S_{l}``): bytes saved by layers ``0..l``, as saved tensors accumulate in forward;
* ``peak`` (goal ``PEAK`` only): the largest memory of the step, minimised.

Memory is constrained at every layer in forward and in backward (``budgetplan.planning.memory``
evaluates the same model directly). The program is small (a few hundred binaries for
MobileNetV2) and solves in well under a second.
"""

from __future__ import annotations

import math
import time

import pulp

from budgetplan.costs.pricing import layer_bytes
from budgetplan.device.profile import Executor
from budgetplan.planning.backends import FEASIBLE, OPTIMAL, run_solver
from budgetplan.planning.expressible import tiny_training_rows
from budgetplan.planning.goal import Goal
from budgetplan.planning.ilp_memory import MemoryRows
from budgetplan.planning.memory import Choice
from budgetplan.planning.objective import bias_order, channel_options, layer_value
from budgetplan.planning.options import Runtime
from budgetplan.planning.problem import Problem
from budgetplan.planning.trainable import Trainable

# The objective counts whole units of 1/10,000 of the total importance, so values
# that close are equal for every solver, and "optimal" is proven exactly (absolute gap
# below one unit). Among equal plans the tie-break picks one by a fixed rule (``Program``).
OPTIMALITY_GAP = 1e-4


class Program(MemoryRows):
    """The ILP for one problem, built in steps: variables, path constraints, memory
    constraints (``MemoryRows``), the compute constraint, then the objective of ``goal``."""

    def __init__(self, problem: Problem, trainable: Trainable, goal: Goal = Goal.UTILITY) -> None:
        self.problem, self.trainable, self.goal = problem, trainable, goal
        sense = pulp.LpMaximize if goal is Goal.UTILITY else pulp.LpMinimize
        self.prob = pulp.LpProblem("budgetplan", sense)
        self.layers = problem.costs.layers
        self.terms = [layer_bytes(layer, problem.device, problem.options.batch_size) for layer in self.layers]
        self.channels_of = _channel_choices(problem, trainable)
        self.tiebreak: pulp.LpAffineExpression | None = None
        self._add_variables()
        self._add_path_constraints()
        self._add_layer_limit()
        self._add_memory_constraints()
        self._add_compute_constraint()
        self._set_objective()

    def _add_variables(self) -> None:
        prob, layers = self.prob, self.layers
        self.x = {
            (i, c): prob.add_variable(f"x_{i}_{c}", cat="Binary")
            for i, layer in enumerate(layers)
            for c in self.channels_of[layer.name]
        }
        self.b = {
            i: prob.add_variable(f"b_{i}", cat="Binary")
            for i, layer in enumerate(layers)
            if layer.name in self.trainable.allowed and layer.bias_elements > 0
        }
        self.y = [prob.add_variable(f"y_{i}", cat="Binary") for i in range(len(layers))]
        self.patch_options = self.problem.costs.patch_options if self.problem.costs.executor is Executor.PATCH else ()
        self.z = [prob.add_variable(f"z_{o}", cat="Binary") for o in range(len(self.patch_options))]
        # Σ_c x[l,c]: 1 when layer l updates some of its weight
        self.weight_on = [
            pulp.lpSum(self.x[i, c] for c in self.channels_of[layer.name]) for i, layer in enumerate(layers)
        ]

    def _add_path_constraints(self) -> None:
        prob, x_on, b, y = self.prob, self.weight_on, self.b, self.y
        for i in range(len(self.layers)):
            # Σ_c x[l,c] ≤ 1: at most one channel count per layer
            prob += x_on[i] <= 1, f"one_choice_{i}"
            # y[l] ≥ y[l-1], y[l] ≥ Σ_c x[l,c], y[l] ≥ b[l]: the gradient reaches every
            # layer after the earliest updated one
            if i > 0:
                prob += y[i] >= y[i - 1], f"path_monotone_{i}"
            prob += y[i] >= x_on[i], f"path_weight_{i}"
            if i in b:
                prob += y[i] >= b[i], f"path_bias_{i}"
        for name in self.trainable.required:
            # a required layer (a new classifier head) is trained in full, bias included
            i = next(k for k, layer in enumerate(self.layers) if layer.name == name)
            prob += x_on[i] == 1, f"required_{i}"
            if i in b:
                prob += b[i] == 1, f"required_bias_{i}"
        # Σ x + Σ b ≥ 1: a plan trains something
        prob += pulp.lpSum(x_on) + pulp.lpSum(b.values()) >= 1, "trains_something"
        self._add_bias_depths()
        if self.problem.options.expressible is Runtime.TINY_TRAINING:
            for row, name in tiny_training_rows(self.layers, self.x, self.b, self.weight_on):
                prob += row, name
        if self.z:
            # Σ z ≤ 1: one patch stage at most; y[s-1] + z[o] ≤ 1: it runs only frozen layers
            prob += pulp.lpSum(self.z) <= 1, "one_patch_stage"
            for o, option in enumerate(self.patch_options):
                prob += y[option.split - 1] + self.z[o] <= 1, f"patch_frozen_{o}"

    def _add_bias_depths(self) -> None:
        """Biases valued by depth (Sparse Update's schemes): one measured depth ``k`` at most,
        t[k] binary; the bias at position p from the end trains iff the chosen depth reaches
        it, b = Σ_{k ≥ p} t[k]; a bias that may not train rules out the depths past it."""
        depths = self.problem.importance.bias_depths
        self.t: dict[int, pulp.LpVariable] = {}
        if not depths:
            return
        prob = self.prob
        index = {layer.name: i for i, layer in enumerate(self.layers)}
        order = bias_order(self.problem.costs)
        self.t = {k: prob.add_variable(f"t_{k}", cat="Binary") for k in sorted(depths) if k <= len(order)}
        prob += pulp.lpSum(self.t.values()) <= 1, "one_bias_depth"
        for position, name in enumerate(order, start=1):
            reaching = pulp.lpSum(v for k, v in self.t.items() if k >= position)
            i = index[name]
            if i in self.b:
                prob += self.b[i] == reaching, f"bias_depth_{i}"
            else:
                prob += reaching == 0, f"bias_depth_blocked_{i}"

    def _add_layer_limit(self) -> None:
        limit = self.problem.options.max_layers
        if limit is None:
            return
        prob, b = self.prob, self.b
        a = [prob.add_variable(f"a_{i}", cat="Binary") for i in range(len(self.layers))]
        for i in range(len(self.layers)):
            # a[l] ≥ Σ_c x[l,c], a[l] ≥ b[l]: a[l] counts layer l as updated
            prob += a[i] >= self.weight_on[i], f"updated_weight_{i}"
            if i in b:
                prob += a[i] >= b[i], f"updated_bias_{i}"
        # Σ a ≤ max_layers
        prob += pulp.lpSum(a) <= limit, "max_layers"

    def _add_compute_constraint(self) -> None:
        costs, layers, y = self.problem.costs, self.layers, self.y
        # MACs of one step: forward, input gradients on the path, weight gradients of the selection
        self.step_macs = self.problem.options.batch_size * (
            costs.forward_macs
            + pulp.lpSum(layers[i].input_grad_macs * y[i - 1] for i in range(1, len(layers)))
            + pulp.lpSum(layers[i].weight_grad_macs_per_channel * c * v for (i, c), v in self.x.items())
            + pulp.lpSum(o.extra_macs * z for z, o in zip(self.z, self.patch_options, strict=True))
        )
        latency = self.problem.latency
        if self.goal is not Goal.COMPUTE and latency is not None:
            prob = self.prob
            prob += self.step_macs <= self.problem.device.macs_per_second * latency, "compute"

    def _set_objective(self) -> None:
        prob = self.prob
        if self.goal is Goal.PEAK:
            prob += self.peak
        elif self.goal is Goal.TRAINING_MEMORY:
            prob += self.training_memory
        elif self.goal is Goal.COMPUTE:
            prob += self.step_macs
        else:
            prob += self._utility_units()
            self.tiebreak = self._tiebreak()

    def _utility_units(self) -> pulp.LpAffineExpression:
        """The objective in whole units of ``OPTIMALITY_GAP``: Σ x[l,c]·w_l·u(c/C_in) + Σ b[l]·w_b[l]."""
        layers, importance, options = self.layers, self.problem.importance, self.problem.options

        def units(i: int, choice: Choice) -> int:
            return round(layer_value(layers[i], choice, importance, options) / OPTIMALITY_GAP)

        depths = importance.bias_depths
        return pulp.lpSum(
            [units(i, Choice(c)) * v for (i, c), v in self.x.items()]
            + [units(i, Choice(bias=True)) * v for i, v in self.b.items()]
            + [round(depths[k] / OPTIMALITY_GAP) * v for k, v in self.t.items()]
        )

    def _tiebreak(self) -> pulp.LpAffineExpression:
        """Among plans of equal utility, the one that trains the most of the latest layers:
        weight (l+1)^2 per sixteenth of a layer's channels and 16·(l+1)^2 per bias, so that a
        later layer outweighs any swap of two earlier ones."""
        layers = self.layers
        return pulp.lpSum(
            [(i + 1) ** 2 * math.ceil(16 * c / layers[i].in_channels) * v for (i, c), v in self.x.items()]
            + [(i + 1) ** 2 * 16 * v for i, v in self.b.items()]
        )

    def solve(self) -> tuple[str, str]:
        """Run the solver of the options; return (status, solver name). Status is ``optimal``,
        ``feasible``, ``infeasible`` or ``no solution`` (time limit, nothing found).
        Nothing the solver prints reaches stdout; its log goes to stderr when ``verbose``."""
        options = self.problem.options
        start = time.perf_counter()
        status, name = run_solver(self.prob, options.solver, options.time_limit, options.verbose)
        if status == OPTIMAL and self.tiebreak is not None:
            # second stage: keep the optimal utility, choose among equal plans by the tie-break
            first = {v.name: v.value() for v in self.prob.variables()}
            self.prob += self.prob.objective >= self.value() - 0.5, "utility_kept"
            self.prob.setObjective(self.tiebreak)
            # the tie-break may take what is left of the limit, but at most twice the first
            # solve (and at least a second): breaking a tie must not cost more than planning
            spent = time.perf_counter() - start
            left = max(1.0, min(options.time_limit - spent, 2 * spent))
            second, _ = run_solver(self.prob, options.solver, left, options.verbose, tie_break=True)
            if second not in (OPTIMAL, FEASIBLE):
                for v in self.prob.variables():  # out of time: the first stage's plan stands
                    v.varValue = first[v.name]
        return status, name

    def choices(self) -> dict[str, Choice]:
        """The solved choice of every layer that updates anything."""
        picked: dict[str, Choice] = {}
        for i, layer in enumerate(self.layers):
            channels = sum(c for c in self.channels_of[layer.name] if (self.x[i, c].value() or 0) > 0.5)
            bias = i in self.b and (self.b[i].value() or 0) > 0.5
            if channels or bias:
                picked[layer.name] = Choice(channels, bool(bias))
        return picked

    def value(self) -> float:
        """The value of the objective in force at the solution."""
        return float(pulp.value(self.prob.objective) or 0.0)


def _channel_choices(problem: Problem, trainable: Trainable) -> dict[str, list[int]]:
    """The channel counts ``c`` each layer may train: the ratio grid where weights may
    train, every channel for a required layer, none elsewhere."""
    options, curves = problem.options, problem.importance.curves
    weights = trainable.allowed if not options.bias_only else frozenset()
    if curves:  # measured choices (contribution analysis): those layers, at those fractions
        weights = weights & frozenset(curves)
    counts = {
        layer.name: channel_options(layer, tuple(curves.get(layer.name, options.ratios)))
        if layer.name in weights
        else []
        for layer in problem.costs.layers
    }
    for name in trainable.required:
        counts[name] = [problem.costs.layer(name).in_channels]
    return counts
