"""Sparse Update schemes in and out: a tiny-training ``backward_config`` as a plan, and back.

Sparse Update (Lin et al., "On-Device Training Under 256KB Memory", NeurIPS 2022)
describes what trains with a ``backward_config`` block (docs/tiny-training.md):

* ``n_bias_update`` (a count or ``all``): the biases of the last *n* convolutions train;
* ``manual_weight_idx`` (a list or ``"21-24-27"``): which convolutions also train their
  weights, numbered from 0 among all convolutions in forward order; when null,
  ``n_weight_update`` (a count or ``all`` = ``n_bias_update``) means the last ones;
* ``weight_update_ratio``: per weight-updated convolution the fraction ``r <= 1`` of its
  input channels that train (``int(C_in·r)`` of them) or a count (a whole number above
  1); one number for all, a list, ``"1-1-0.5"``, or null for all channels;
* ``weight_select_criteria``: ``magnitude+`` (the channels of largest weight norm),
  ``magnitude-`` (smallest) or ``random``, chosen once and kept;
* ``pw1_weight_only``: 1 keeps only the weight indices of 1x1 convs that widen
  (``C_out > C_in``, the first pointwise conv of a MobileNet block).

The classifier (the last Linear layer) always trains in full. Here the convolutions are
the cost table's layers that are not Linear, in table order, which is forward order.

>>> scheme = scheme_from_dict({"n_bias_update": 2, "manual_weight_idx": "1", "weight_update_ratio": 0.5}, "s.yaml")
>>> scheme.manual_weight_idx, scheme.weight_update_ratio
((1,), 0.5)
>>> scheme_to_dict(scheme)["manual_weight_idx"]
[1]
>>> export_ratio(12, 48), export_ratio(5, 48), export_ratio(1, 48)
(0.25, 0.11458333333333333, 0.03125)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from budgetplan.errors import PlanError
from budgetplan.files import read_yaml
from budgetplan.planning.accounting import classifier
from budgetplan.planning.memory import Choice
from budgetplan.quoting import quote

if TYPE_CHECKING:
    from budgetplan.costs.table import CostTable, LayerCost
    from budgetplan.device.profile import DeviceProfile
    from budgetplan.plan.model import LayerPlan, Plan
    from budgetplan.planning.importance import Importance

USED_KEYS = (
    "n_bias_update", "manual_weight_idx", "n_weight_update", "weight_update_ratio",
    "weight_select_criteria", "pw1_weight_only",
)  # fmt: skip
IGNORED_KEYS = ("enable_backward_config", "quantize_gradient", "freeze_fc", "train_scale", "n_conv_backward")
ACCEPTED_KEYS = USED_KEYS + IGNORED_KEYS
CRITERIA = ("magnitude+", "magnitude-", "random")
EXPORT_RATIOS = (1, 0.5, 0.25, 0.125, 0.0625)  # tried in this order when writing a channel count

# the channel sampler of budgetplan.training.samplers that makes each criterion's choice,
# drawn once and kept (resample never); magnitude- has none
SAMPLERS: dict[str, str | None] = {"magnitude+": "magnitude", "magnitude-": None, "random": "uniform"}

Ratio = float | int  # a fraction of the input channels (<= 1), or a count (a whole number above 1)


@dataclass(frozen=True)
class Scheme:
    """One ``backward_config``, as written (``all`` and null kept); ``source`` names it in errors."""

    n_bias_update: int | str
    manual_weight_idx: tuple[int, ...] | None
    n_weight_update: int | str | None = None
    weight_update_ratio: tuple[Ratio, ...] | Ratio | None = None
    weight_select_criteria: str = "magnitude+"
    pw1_weight_only: bool = False
    source: str = field(default="<memory>", compare=False)


@dataclass(frozen=True)
class Resolved:
    """A scheme applied to a model with ``n_conv`` convolutions: the first bias-updated
    convolution and the input channels kept per weight-updated one."""

    n_conv: int
    first_bias: int
    channels: dict[int, int]


# --- reading ----------------------------------------------------------------------------


def load_scheme(path: str | Path) -> Scheme:
    """A scheme from a YAML or JSON file (the keys at the top level or under ``backward_config``)."""
    return scheme_from_dict(read_yaml(path, "Sparse Update scheme", PlanError), str(path))


def scheme_from_dict(data: Any, source: str = "<memory>") -> Scheme:
    """Read a ``backward_config`` mapping (or a config holding one), checking every key."""
    if isinstance(data, dict) and "backward_config" in data:
        data = data["backward_config"]
    if not isinstance(data, dict):
        raise PlanError(f"{source}: not a Sparse Update scheme (expected a mapping of backward_config keys)")
    for key in data:
        if key not in ACCEPTED_KEYS:
            raise PlanError(
                f"{source}: unknown key {quote(key)} in backward_config; accepted keys: {', '.join(ACCEPTED_KEYS)}"
            )
    if "n_bias_update" not in data:
        raise PlanError(f"{source}: field 'n_bias_update' is missing; give a number of convolutions or 'all'")
    manual = _indices(data.get("manual_weight_idx"), source)
    if manual is None and "n_weight_update" not in data:
        raise PlanError(
            f"{source}: field 'n_weight_update' is missing; give it (a number or 'all') or manual_weight_idx"
        )
    criteria = data.get("weight_select_criteria", "magnitude+")
    if criteria not in CRITERIA:
        raise _fail(source, "weight_select_criteria", f"{quote(criteria)} is not one of {', '.join(CRITERIA)}")
    pw1 = data.get("pw1_weight_only", 0)
    if pw1 not in (0, 1):  # True and False compare equal to 1 and 0
        raise _fail(source, "pw1_weight_only", f"expected 0 or 1, got {quote(pw1)}")
    scheme = Scheme(
        n_bias_update=_count_or_all(data["n_bias_update"], "n_bias_update", source),
        manual_weight_idx=manual,
        n_weight_update=None
        if manual is not None
        else _count_or_all(data["n_weight_update"], "n_weight_update", source),
        weight_update_ratio=_ratios(data.get("weight_update_ratio"), source),
        weight_select_criteria=criteria,
        pw1_weight_only=bool(pw1),
        source=source,
    )
    if manual is not None and not scheme.pw1_weight_only:
        _check_counts(scheme, len(manual))  # what can be checked without the model
    return scheme


def _fail(source: str, key: str, problem: str) -> PlanError:
    return PlanError(f"{source}: field {quote(key)}: {problem}")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count_or_all(value: Any, key: str, source: str) -> int | str:
    if value == "all" or (_whole(value) and value >= 0):
        return value  # type: ignore[no-any-return]
    raise _fail(source, key, f"expected a whole number of at least 0 or 'all', got {quote(value)}")


def _indices(value: Any, source: str) -> tuple[int, ...] | None:
    """``manual_weight_idx``: null, a list of indices, one index, or ``"21-24-27"``."""
    key = "manual_weight_idx"
    if value is None:
        return None
    if isinstance(value, str):
        try:
            items: list[Any] = [int(part) for part in value.split("-")] if value.strip() else []
        except ValueError:
            raise _fail(source, key, f"{quote(value)} is not a list of indices such as '21-24-27'") from None
    elif _whole(value):
        items = [value]
    elif isinstance(value, list):
        items = value
    else:
        raise _fail(source, key, f"expected a list of indices, '21-24-27' or null, got {quote(value)}")
    for item in items:
        if not _whole(item) or item < 0:
            raise _fail(source, key, f"{quote(item)} is not a convolution index (a whole number from 0)")
    if any(b <= a for a, b in itertools.pairwise(items)):
        raise _fail(source, key, f"{items} must be in increasing order, each index once")
    return tuple(items)


def _ratio(value: Any, source: str) -> Ratio:
    key = "weight_update_ratio"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise _fail(source, key, f"{quote(value)} is not a fraction from 0 to 1 or a channel count")
    if value <= 1:
        return float(value)
    if float(value).is_integer():
        return int(value)
    raise _fail(source, key, f"{quote(value)}: a fraction is at most 1, a channel count is a whole number")


def _ratios(value: Any, source: str) -> tuple[Ratio, ...] | Ratio | None:
    """``weight_update_ratio``: null, one number, a list, or ``"1-1-0.5"``."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return tuple(_ratio(float(part), source) for part in value.split("-"))
        except ValueError:
            raise _fail(
                source, "weight_update_ratio", f"{quote(value)} is not a list of fractions such as '1-1-0.5'"
            ) from None
    if isinstance(value, list):
        return tuple(_ratio(item, source) for item in value)
    ratio = _ratio(value, source)
    if ratio > 1:
        raise _fail(
            source, "weight_update_ratio", f"one number for all layers is a fraction up to 1, got {quote(value)}"
        )
    return ratio


def _check_counts(scheme: Scheme, n_weight: int) -> None:
    """Sparse Update's own assertions on the counts: one ratio per weight-updated
    convolution, and at least as many bias-updated convolutions."""
    ratios = scheme.weight_update_ratio
    if isinstance(ratios, tuple) and len(ratios) != n_weight:
        raise _fail(
            scheme.source,
            "weight_update_ratio",
            f"{len(ratios)} values for {n_weight} weight-updated convolutions; give one per index "
            "of manual_weight_idx, or one number for all",
        )
    if _whole(scheme.n_bias_update) and scheme.n_bias_update < n_weight:  # type: ignore[operator]
        raise _fail(
            scheme.source,
            "n_bias_update",
            f"{scheme.n_bias_update} is fewer than the {n_weight} weight-updated convolutions; "
            f"every weight-updated convolution also updates its bias: give at least {n_weight}",
        )


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
        raise _fail(
            source, "n_bias_update", f"{n_bias}, but {costs.model} has {n_conv} convolutions; give at most that"
        )
    if scheme.manual_weight_idx is not None:
        indices = list(scheme.manual_weight_idx)
        for index in indices:
            if index >= n_conv:
                raise _fail(
                    source,
                    "manual_weight_idx",
                    f"index {index} is beyond the {n_conv} convolutions of {costs.model} (0 to {n_conv - 1} in "
                    "forward order); is the scheme for this model?",
                )
    else:
        count = n_bias if scheme.n_weight_update == "all" else int(scheme.n_weight_update or 0)
        if count > n_conv:
            raise _fail(source, "n_weight_update", f"{count}, but {costs.model} has {n_conv} convolutions")
        indices = list(range(n_conv - count, n_conv))
    if scheme.pw1_weight_only:
        indices = [i for i in indices if _is_pw1(convs[i])]
    _check_counts(scheme, len(indices))
    first_bias = n_conv - n_bias
    for index in indices:
        if index < first_bias:
            raise _fail(
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
        raise _fail(
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
            raise _fail(
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
    from budgetplan.planning.assemble import plan_from_choices
    from budgetplan.planning.diagnose import check_flash
    from budgetplan.planning.importance import prior_importance
    from budgetplan.planning.objective import objective
    from budgetplan.planning.options import Utility, planner_options
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


def _number(value: Ratio) -> Ratio:
    return int(value) if float(value).is_integer() else value


def scheme_to_dict(scheme: Scheme) -> dict[str, Any]:
    """The ``backward_config`` mapping of a scheme, in the order Sparse Update writes it."""
    data: dict[str, Any] = {"enable_backward_config": 1, "n_bias_update": scheme.n_bias_update}
    if scheme.manual_weight_idx is None:
        data["n_weight_update"] = scheme.n_weight_update
    data["manual_weight_idx"] = list(scheme.manual_weight_idx) if scheme.manual_weight_idx is not None else None
    ratios = scheme.weight_update_ratio
    data["weight_update_ratio"] = (
        [_number(r) for r in ratios] if isinstance(ratios, tuple) else None if ratios is None else _number(ratios)
    )
    data["weight_select_criteria"] = scheme.weight_select_criteria
    data["pw1_weight_only"] = int(scheme.pw1_weight_only)
    return data


def normalised(scheme: Scheme, costs: CostTable) -> dict[int, int]:
    """Input channels kept per weight-updated convolution index, leaving out zero counts
    (a weight that keeps no channel trains only its bias): what two schemes must share to
    train the same."""
    return {index: count for index, count in resolve(scheme, costs).channels.items() if count}
