"""From choices to a ``Plan``, and ``solve``: trace a model and plan it in one call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from budgetplan.costs.pricing import layer_bytes
from budgetplan.costs.table import CostTable, LayerCost
from budgetplan.device.profile import DeviceProfile
from budgetplan.importance.scores import Importance
from budgetplan.plan.model import LayerPlan, Plan
from budgetplan.planning.accounting import sparse_update_memory
from budgetplan.planning.ilp import OPTIMALITY_GAP
from budgetplan.planning.memory import Choice, backward_macs, predict
from budgetplan.planning.objective import objective
from budgetplan.planning.options import PlannerOptions
from budgetplan.planning.problem import Problem
from budgetplan.planning.solve import Solution, solve_problem


def plan_problem(problem: Problem) -> Plan:
    """Solve the ILP and assemble the ``Plan`` (the problem was checked when it was made)."""
    return plan_from_solution(problem, solve_problem(problem))


def plan_from_costs(
    costs: CostTable,
    device: DeviceProfile,
    importance: Importance | None = None,
    options: PlannerOptions | None = None,
) -> Plan:
    """Solve the ILP for a cost table and assemble the ``Plan`` (without ``importance``,
    the documented prior; without ``options``, the defaults)."""
    return plan_problem(Problem.from_costs(costs, device, importance or "prior", options))


def plan_from_choices(
    costs: CostTable,
    device: DeviceProfile,
    importance: Importance,
    options: PlannerOptions,
    solution: Solution,
) -> Plan:
    """The ``Plan`` of a set of choices (the ILP's, or a strategy's own), with its predicted memory."""
    return plan_from_solution(Problem.from_costs(costs, device, importance, options), solution)


def plan_from_solution(problem: Problem, solution: Solution) -> Plan:
    """The ``Plan`` of a solution to ``problem``, with its predicted memory and compute."""
    costs, device, options = problem.costs, problem.device, problem.options
    batch = options.batch_size
    macs = backward_macs(costs, solution.choices, batch)
    first = min((layer.index for layer in costs.layers if layer.name in solution.choices), default=len(costs.layers))
    layers = [
        _layer_plan(
            problem,
            layer,
            solution.choices.get(layer.name, Choice()),
            spent,
            on_path=layer.index >= first,
            patched=solution.patch is not None and layer.index < solution.patch.split,
        )
        for layer, spent in zip(costs.layers, macs, strict=True)
    ]
    return Plan(
        device=device,
        model=costs.model,
        input_shape=costs.input_shape,
        batch_size=batch,
        budget_bytes=problem.budget,
        layers=layers,
        predicted=predict(costs, device, solution.choices, batch, solution.patch),
        sparse_update_bytes=sparse_update_memory(costs, solution.choices, batch),
        training_accounting=options.accounting.value,
        status=solution.status,
        solver=solution.solver,
        objective=solution.objective,
        solve_seconds=solution.solve_seconds,
        importance_source=problem.importance.source,
        training_memory_cap=options.training_memory,
        max_step_latency=problem.latency,
        optimality_gap=OPTIMALITY_GAP,
        options={
            "ratios": list(options.ratios),
            "epochs": options.epochs,
            "utility": options.utility.value,  # plain text: plan files are YAML
            "max_layers": options.max_layers,
            "require": list(solution.required),
            "include": list(options.include),
            "exclude": list(options.exclude),
            "time_limit": options.time_limit,
            # the objective's unit, when the importance measured one (docs/importance.md)
            "importance_unit": problem.importance.unit or None,
            "importance_scale": problem.importance.scale,
        },
    )


def _layer_plan(
    problem: Problem, layer: LayerCost, choice: Choice, macs: int, on_path: bool, patched: bool = False
) -> LayerPlan:
    """One layer's line of the plan: what it trains and the bytes each part takes."""
    terms = layer_bytes(layer, problem.device, problem.options.batch_size)
    importance = problem.importance
    return LayerPlan(
        name=layer.name,
        kind=layer.kind,
        weight_shape=layer.weight_shape,
        update="weight" if choice.channels else "bias" if choice.bias else "none",
        channels=choice.channels,
        total_channels=layer.in_channels,
        bias=choice.bias,
        bias_param=layer.bias_param,
        activation_bytes=terms.saved_per_channel * choice.channels,
        weight_bytes=terms.weight_per_channel * choice.channels,
        bias_bytes=terms.bias if choice.bias else 0.0,
        path_bytes=terms.path if on_path else 0.0,
        macs=macs,
        importance=importance.weight.get(layer.name, 0.0) + importance.bias.get(layer.name, 0.0),
        forward_buffer_bytes=0.0 if patched else terms.live_forward,
        backward_buffer_bytes=terms.live_backward if on_path else 0.0,
    )


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

    Examples:
        >>> import torch, torchvision
        >>> model = torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10)
        >>> plan = solve(model, torch.zeros(1, 3, 128, 128), "cortex-m7", budget="300KB")
        >>> plan.budget_bytes, plan.status
        (307200, 'optimal')
        >>> [layer.channels for layer in plan.layers if layer.name == "classifier.1"]
        [1280]
    """
    return plan_problem(Problem.build(model, example_input, device, importance, model_name=model_name, **options))


def dense_plan(problem: Problem) -> Plan:
    """Every channel and bias of every layer: the reference the ``full`` strategy reports."""
    costs = problem.costs
    choices = {layer.name: Choice(layer.in_channels, layer.bias_elements > 0) for layer in costs.layers}
    value = objective(costs, problem.importance, problem.options, choices)
    return plan_from_solution(problem, Solution(choices, "unconstrained", value, "none", 0.0))
