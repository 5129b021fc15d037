"""A Sparse Update scheme: a tiny-training ``backward_config``, read and checked, and written.

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
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from budgetplan.errors import PlanError
from budgetplan.files import read_yaml
from budgetplan.quoting import quote

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
        raise field_error(source, "weight_select_criteria", f"{quote(criteria)} is not one of {', '.join(CRITERIA)}")
    pw1 = data.get("pw1_weight_only", 0)
    if pw1 not in (0, 1):  # True and False compare equal to 1 and 0
        raise field_error(source, "pw1_weight_only", f"expected 0 or 1, got {quote(pw1)}")
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
        check_counts(scheme, len(manual))  # what can be checked without the model
    return scheme


def field_error(source: str, key: str, problem: str) -> PlanError:
    return PlanError(f"{source}: field {quote(key)}: {problem}")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count_or_all(value: Any, key: str, source: str) -> int | str:
    if value == "all" or (_whole(value) and value >= 0):
        return value  # type: ignore[no-any-return]
    raise field_error(source, key, f"expected a whole number of at least 0 or 'all', got {quote(value)}")


def _indices(value: Any, source: str) -> tuple[int, ...] | None:
    """``manual_weight_idx``: null, a list of indices, one index, or ``"21-24-27"``."""
    key = "manual_weight_idx"
    if value is None:
        return None
    if isinstance(value, str):
        try:
            items: list[Any] = [int(part) for part in value.split("-")] if value.strip() else []
        except ValueError:
            raise field_error(source, key, f"{quote(value)} is not a list of indices such as '21-24-27'") from None
    elif _whole(value):
        items = [value]
    elif isinstance(value, list):
        items = value
    else:
        raise field_error(source, key, f"expected a list of indices, '21-24-27' or null, got {quote(value)}")
    for item in items:
        if not _whole(item) or item < 0:
            raise field_error(source, key, f"{quote(item)} is not a convolution index (a whole number from 0)")
    if any(b <= a for a, b in itertools.pairwise(items)):
        raise field_error(source, key, f"{quote(items)} must be in increasing order, each index once")
    return tuple(items)


def _ratio(value: Any, source: str) -> Ratio:
    key = "weight_update_ratio"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise field_error(source, key, f"{quote(value)} is not a fraction from 0 to 1 or a channel count")
    if value <= 1:
        return float(value)
    if float(value).is_integer():
        return int(value)
    raise field_error(source, key, f"{quote(value)}: a fraction is at most 1, a channel count is a whole number")


def _ratios(value: Any, source: str) -> tuple[Ratio, ...] | Ratio | None:
    """``weight_update_ratio``: null, one number, a list, or ``"1-1-0.5"``."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return tuple(_ratio(float(part), source) for part in value.split("-"))
        except ValueError:
            raise field_error(
                source, "weight_update_ratio", f"{quote(value)} is not a list of fractions such as '1-1-0.5'"
            ) from None
    if isinstance(value, list):
        return tuple(_ratio(item, source) for item in value)
    ratio = _ratio(value, source)
    if ratio > 1:
        raise field_error(
            source, "weight_update_ratio", f"one number for all layers is a fraction up to 1, got {quote(value)}"
        )
    return ratio


def check_counts(scheme: Scheme, n_weight: int) -> None:
    """Sparse Update's own assertions on the counts: one ratio per weight-updated
    convolution, and at least as many bias-updated convolutions."""
    ratios = scheme.weight_update_ratio
    if isinstance(ratios, tuple) and len(ratios) != n_weight:
        raise field_error(
            scheme.source,
            "weight_update_ratio",
            f"{len(ratios)} values for {n_weight} weight-updated convolutions; give one per index "
            "of manual_weight_idx, or one number for all",
        )
    if _whole(scheme.n_bias_update) and scheme.n_bias_update < n_weight:  # type: ignore[operator]
        raise field_error(
            scheme.source,
            "n_bias_update",
            f"{scheme.n_bias_update} is fewer than the {n_weight} weight-updated convolutions; "
            f"every weight-updated convolution also updates its bias: give at least {n_weight}",
        )


# --- writing ------------------------------------------------------------------------------


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
