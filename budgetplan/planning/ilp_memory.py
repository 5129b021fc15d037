"""The memory rows of the planner's program (docs/planner.md, "Memory over time"): the
bytes held at every layer in forward and in backward, and training memory under either
accounting. ``budgetplan.planning.memory`` evaluates the same model directly.
"""

from __future__ import annotations

import pulp

from budgetplan.costs.pricing import LayerBytes, base_bytes
from budgetplan.costs.table import LayerCost, PatchOption
from budgetplan.plan.prediction import Accounting
from budgetplan.planning.accounting import classifier, sparse_update_terms
from budgetplan.planning.goal import Goal
from budgetplan.planning.problem import Problem


class MemoryRows:
    """The memory constraints of ``Program``, over its variables (a part of it, not used alone)."""

    prob: pulp.LpProblem
    problem: Problem
    goal: Goal
    layers: tuple[LayerCost, ...]
    terms: list[LayerBytes]
    channels_of: dict[str, list[int]]
    x: dict[tuple[int, int], pulp.LpVariable]
    b: dict[int, pulp.LpVariable]
    y: list[pulp.LpVariable]
    z: list[pulp.LpVariable]
    patch_options: tuple[PatchOption, ...]
    weight_on: list[pulp.LpAffineExpression]

    def _add_memory_constraints(self) -> None:
        prob, terms, x, y = self.prob, self.terms, self.x, self.y
        # resident: updated weights and biases with their gradients and state, held all step
        self.resident = pulp.lpSum(
            [terms[i].weight_per_channel * c * v for (i, c), v in x.items()]
            + [terms[i].bias * v for i, v in self.b.items()]
        )
        # saved(l): the selected input channels, plus masks and activations when on the path
        saved = [
            pulp.lpSum([terms[i].saved_per_channel * c * x[i, c] for c in self.channels_of[layer.name]])
            + terms[i].path * y[i]
            for i, layer in enumerate(self.layers)
        ]
        base = base_bytes(self.problem.costs, self.problem.device)
        self.peak = prob.add_variable("peak", lowBound=0) if self.goal is Goal.PEAK else None
        limit = self.peak if self.peak is not None else self.problem.budget
        held = [prob.add_variable(f"S_{i}", lowBound=0) for i in range(len(self.layers))]
        for i in range(len(self.layers)):
            # S[l] = S[l-1] + saved(l): saved tensors only accumulate in forward
            prob += held[i] == (held[i - 1] if i else 0) + saved[i], f"saved_so_far_{i}"
        forward, backward = _binding_points(terms)
        act = self.problem.options.batch_size * self.problem.device.bits.activation / 8
        for i in forward:
            # forward at l: its working buffer plus everything saved so far; a layer run in
            # patches holds no whole buffer (Σ z[o] over the stages that run it)
            patched = pulp.lpSum(z for z, o in zip(self.z, self.patch_options, strict=True) if o.split > i)
            prob += (
                base + self.resident + terms[i].live_forward * (1 - patched) + held[i] <= limit,
                f"forward_{i}",
            )
        if self.z:
            # the patch stage: one patch's working set, its outputs and the input, with
            # nothing saved yet (its layers are frozen)
            stage = pulp.lpSum(o.live_elements * act * z for z, o in zip(self.z, self.patch_options, strict=True))
            prob += base + self.resident + stage <= limit, "patch_stage"
        for i in backward:
            # backward at l: its gradient buffer (when on the path) plus what is still saved
            prob += base + self.resident + terms[i].live_backward * y[i] + held[i] <= limit, f"backward_{i}"
        # training memory, the published accounting: resident + Σ saved, no working buffers
        # (budgetplan's count), or as Sparse Update counts it
        if self.problem.options.accounting is Accounting.SPARSE_UPDATE:
            self.training_memory = self._sparse_update_memory()
        else:
            self.training_memory = self.resident + pulp.lpSum(saved)
        cap = self.problem.options.training_memory
        if self.goal is not Goal.TRAINING_MEMORY and cap is not None:
            prob += self.training_memory <= cap, "training_memory"

    def _sparse_update_memory(self) -> pulp.LpAffineExpression:
        """Bytes of training memory as Sparse Update counts it (``budgetplan.planning.accounting``):
        masks on the path, biases, kept channels, and the classifier's input when it trains."""
        prob, batch = self.prob, self.problem.options.batch_size
        head = classifier(self.problem.costs)
        bits = []
        for i, layer in enumerate(self.layers):
            is_head = head is not None and layer.name == head.name
            terms = sparse_update_terms(layer, is_head, batch)
            if is_head:
                trains = prob.add_variable(f"u_{i}", cat="Binary")  # u ≥ Σ_c x, u ≥ b: the classifier trains
                prob += trains >= self.weight_on[i], f"classifier_trains_{i}"
                if i in self.b:
                    prob += trains >= self.b[i], f"classifier_bias_{i}"
                bits.append(terms.head * trains)
                continue
            bits.append(terms.path * self.y[i])
            if i in self.b:
                bits.append(terms.bias * self.b[i])
            bits += [terms.weight(layer, c) * self.x[i, c] for c in self.channels_of[layer.name]]
        return pulp.lpSum(bits) / 8


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
