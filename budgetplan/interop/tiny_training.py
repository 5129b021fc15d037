"""Sparse Update schemes and plans: a tiny-training ``backward_config`` applied to a model as
a plan, and a plan written back as one (Lin et al., NeurIPS 2022; docs/tiny-training.md).

The scheme itself, its keys and how they are read, is ``budgetplan.interop.scheme``. The
classifier (the last Linear layer) always trains in full. Here the convolutions are the
cost table's layers that are not Linear, in table order, which is forward order.

>>> export_ratio(12, 48), export_ratio(5, 48), export_ratio(1, 48)
(0.25, 0.11458333333333333, 0.03125)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from budgetplan.errors import PlanError
from budgetplan.interop.scheme import (
    CRITERIA,
    EXPORT_RATIOS,
    SAMPLERS,
    Ratio,
    Scheme,
    check_counts,
    field_error,
    scheme_to_dict,
)
from budgetplan.planning.accounting import classifier
from budgetplan.planning.memory import Choice

if TYPE_CHECKING:
    from budgetplan.costs.table import CostTable, LayerCost
    from budgetplan.device.profile import DeviceProfile
    from budgetplan.importance.scores import Importance
    from budgetplan.plan.model import LayerPlan, Plan


@dataclass(frozen=True)
class Resolved:
    """A scheme applied to a model with ``n_conv`` convolutions: the first bias-updated
    convolution and the input channels kept per weight-updated one."""

    n_conv: int
    first_bias: int
    channels: dict[int, int]


# --- applying a scheme to a model -------------------------------------------------------


def convolutions(costs: CostTable) -> list[LayerCost]:
    """The layers a scheme numbers: every one that is not Linear, in forward order."""
    return [layer for layer in costs.layers if layer.kind != "linear"]


def _is_pw1(layer: LayerCost) -> bool:
    return layer.out_channels > layer.in_channels and all(k == 1 for k in layer.kernel_size)


def resolve(scheme: Scheme, costs: CostTable) -> Resolved:
    """Apply ``scheme`` to the model of ``costs``: which biases and weight channels train."""
    convs = convolutions(costs)
    n_conv, source = len(convs), scheme.source
    n_bias = n_conv if scheme.n_bias_update == "all" else int(scheme.n_bias_update)
    if n_bias > n_conv:
        raise field_error(
            source, "n_bias_update", f"{n_bias}, but {costs.model} has {n_conv} convolutions; give at most that"
        )
    if scheme.manual_weight_idx is not None:
        indices = list(scheme.manual_weight_idx)
        for index in indices:
            if index >= n_conv:
                raise field_error(
                    source,
                    "manual_weight_idx",
                    f"index {index} is beyond the {n_conv} convolutions of {costs.model} (0 to {n_conv - 1} in "
                    "forward order); is the scheme for this model?",
                )
    else:
        count = n_bias if scheme.n_weight_update == "all" else int(scheme.n_weight_update or 0)
        if count > n_conv:
            raise field_error(source, "n_weight_update", f"{count}, but {costs.model} has {n_conv} convolutions")
        indices = list(range(n_conv - count, n_conv))
    if scheme.pw1_weight_only:
        indices = [i for i in indices if _is_pw1(convs[i])]
    check_counts(scheme, len(indices))
    first_bias = n_conv - n_bias
    for index in indices:
        if index < first_bias:
            raise field_error(
                source,
                "manual_weight_idx",
                f"convolution {index} ({convs[index].name}) is not among the last {n_bias} whose biases train "
                f"({first_bias} to {n_conv - 1}); a weight trains only with its bias: raise n_bias_update to "
                f"{n_conv - index} or leave out index {index}",
            )
    ratios = scheme.weight_update_ratio
    per_layer = ratios if isinstance(ratios, tuple) else (ratios,) * len(indices)
    channels = {
        index: _kept(convs[index], index, ratio, source) for index, ratio in zip(indices, per_layer, strict=True)
    }
    return Resolved(n_conv, first_bias, channels)


def _kept(layer: LayerCost, index: int, ratio: Ratio | None, source: str) -> int:
    """Input channels kept for a ratio: all (null), ``int(C_in·r)`` (a fraction) or the count."""
    if ratio is None:
        return layer.in_channels
    if ratio <= 1:
        return int(layer.in_channels * ratio)
    if ratio > layer.in_channels:
        raise field_error(
            source,
            "weight_update_ratio",
            f"{ratio} channels for convolution {index} ({layer.name}), which has {layer.in_channels}",
        )
    return int(ratio)


def choices_from_scheme(scheme: Scheme, costs: CostTable) -> dict[str, Choice]:
    """What each layer of ``costs`` trains under ``scheme`` (only the layers that train).

    The last ``n_bias_update`` convolutions train their bias, the weight-updated ones
    also their kept input channels, and the classifier (the last Linear layer) trains
    every channel and its bias.
    """
    resolved = resolve(scheme, costs)
    choices: dict[str, Choice] = {}
    for index, layer in enumerate(convolutions(costs)):
        if index < resolved.first_bias:
            continue
        if not layer.bias_elements:
            raise field_error(
                scheme.source,
                "n_bias_update",
                f"convolution {index} ({layer.name}) has no bias to train (neither its own nor a BatchNorm "
                f"right after it); give at most {resolved.n_conv - index - 1}",
            )
        choices[layer.name] = Choice(resolved.channels.get(index, 0), True)
    head = classifier(costs)
    if head is not None:
        choices[head.name] = Choice(head.in_channels, head.bias_elements > 0)
    return choices


def plan_from_scheme(
    scheme: Scheme,
    costs: CostTable,
    device: DeviceProfile,
    batch_size: int = 1,
    budget: int | None = None,
    accounting: str = "budgetplan",
    importance: Importance | None = None,
) -> Plan:
    """The ``Plan`` of a scheme, priced like a solved one; its options record the scheme
    and the static channel choice (``sampler``, ``resample: never``) for training."""
    # the planner's modules (and the solver they import) load only when a plan is made
    from budgetplan.importance.scores import prior_importance
    from budgetplan.planning.assemble import plan_from_choices
    from budgetplan.planning.objective import objective
    from budgetplan.planning.options import Utility, planner_options
    from budgetplan.planning.problem import check_flash
    from budgetplan.planning.solve import Solution, patch_stage

    check_flash(costs, device)
    choices = choices_from_scheme(scheme, costs)
    # a static selection: a fraction r of the channels is worth r (the linear utility)
    options = planner_options(
        budget=budget, batch_size=batch_size, utility=Utility.LINEAR, require=(), accounting=accounting
    )
    importance = importance or prior_importance(costs)
    head = classifier(costs)
    solution = Solution(
        choices,
        status="imported",
        objective=objective(costs, importance, options, choices),
        solver="tiny-training",
        solve_seconds=0.0,
        required=(head.name,) if head is not None else (),
        patch=patch_stage(costs, device, options, choices),
    )
    plan = plan_from_choices(costs, device, importance, options, solution)
    criteria = scheme.weight_select_criteria
    plan.options.update(
        scheme={"source": scheme.source, "backward_config": scheme_to_dict(scheme)},
        weight_select_criteria=criteria,
        strategy="sparse-update" if criteria == "magnitude+" else None,
        sampler=SAMPLERS[criteria],
        resample="never",
    )
    return plan


# --- writing ------------------------------------------------------------------------------


def export_ratio(count: int, total: int) -> Ratio:
    """How a count of ``total`` input channels is written so that Sparse Update keeps exactly
    ``count``: a ratio of ``EXPORT_RATIOS`` when ``int(total·r)`` gives it, else
    ``(count + 0.5) / total``. Never the count itself: tiny-training's training script reads
    the ratios from a string as floats, where a count above 1 is refused."""
    for ratio in EXPORT_RATIOS:
        if int(total * ratio) == count:
            return ratio
    ratio = (count + 0.5) / total
    assert int(total * ratio) == count, (count, total)
    return ratio


def scheme_from_plan(plan: Plan) -> Scheme:
    """The scheme that trains what ``plan`` trains, or a ``PlanError`` saying why none does.

    Exact or refused: the convolutions' biases must train as one block at the end (no gap,
    every convolution there with a bias to train), every weight-trained convolution must
    train its bias too, no Linear layer but the classifier may train, and the classifier
    must train every channel and its bias, as a ``backward_config`` always does.
    """
    convs = [layer for layer in plan.layers if layer.kind != "linear"]
    linear = [layer for layer in plan.layers if layer.kind == "linear"]
    where = f"plan for {plan.model}"
    for layer in linear[:-1]:
        if layer.update != "none":
            raise PlanError(
                f"{where}: Linear layer {layer.name} trains, but a backward_config trains only convolutions and "
                f"the classifier; solve with --exclude {layer.name}"
            )
    if linear:
        _check_classifier(linear[-1], where)
    n_bias = 0
    while n_bias < len(convs) and convs[len(convs) - 1 - n_bias].bias:
        n_bias += 1
    first = len(convs) - n_bias
    for index, layer in enumerate(convs[:first]):
        if layer.bias:
            gap = convs[first - 1]
            why = " (it has no bias to train)" if gap.bias_param is None else ""
            raise PlanError(
                f"{where}: convolution {index} ({layer.name}) trains its bias but convolution {first - 1} "
                f"({gap.name}) after it does not{why}; a backward_config trains the biases of the last n "
                "convolutions, all of them: train every bias from there on, or none before the last block"
            )
        if layer.channels:
            raise PlanError(
                f"{where}: convolution {index} ({layer.name}) trains {layer.channels} input channels but not its "
                "bias; in a backward_config a weight trains only with its bias"
            )
    indices = tuple(i for i in range(first, len(convs)) if convs[i].channels)
    ratios = tuple(export_ratio(convs[i].channels, convs[i].total_channels) for i in indices)
    criteria = plan.options.get("weight_select_criteria", "magnitude+")
    return Scheme(
        n_bias_update=n_bias,
        manual_weight_idx=indices or None,
        n_weight_update=None if indices else 0,
        weight_update_ratio=ratios or None,
        weight_select_criteria=criteria if criteria in CRITERIA else "magnitude+",
        source=where,
    )


def _check_classifier(head: LayerPlan, where: str) -> None:
    if head.channels == head.total_channels and (head.bias or head.bias_param is None):
        return
    trains = f"{head.channels} of {head.total_channels} input channels" + ("" if head.bias else " without its bias")
    raise PlanError(
        f"{where}: the classifier {head.name} trains {trains}; a backward_config always trains it in full: "
        "solve with the classifier required (the default)"
    )


def normalised(scheme: Scheme, costs: CostTable) -> dict[int, int]:
    """Input channels kept per weight-updated convolution index, leaving out zero counts
    (a weight that keeps no channel trains only its bias): what two schemes must share to
    train the same."""
    return {index: count for index, count in resolve(scheme, costs).channels.items() if count}
