"""Whether a plan fits a model: layer names and weight shapes, and where the layers sit.

A plan is made for one model. Its fingerprint (every plannable layer's name and weight
shape) is compared with the model's before training, and a mismatch names the layers
that differ rather than failing later inside autograd.

>>> compare_layers({"fc": (10, 64)}, [("fc", (5, 64)), ("aux", (3, 3))])
['fc (plan weight [10, 64], model [5, 64])', 'aux (in the model, not in the plan)']
>>> list_problems(["a", "b", "c"], shown=2)
'a; b; and 1 more'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from budgetplan.errors import PlanError
from budgetplan.names import candidate_prefixes, without_prefix

if TYPE_CHECKING:
    from torch import nn

    from budgetplan.costs.table import CostTable
    from budgetplan.plan.record import PlanRecord

Fingerprint = Iterable[tuple[str, tuple[int, ...]]]


def compare_layers(planned: Mapping[str, tuple[int, ...]], model: Fingerprint) -> list[str]:
    """Layers where a model (its layer names and weight shapes) differs from the planned ones."""
    theirs = dict(model)
    problems = []
    for name, shape in planned.items():
        if name not in theirs:
            problems.append(f"{name} (in the plan, not in the model)")
        elif tuple(theirs[name]) != tuple(shape):
            problems.append(f"{name} (plan weight {list(shape)}, model {list(theirs[name])})")
    problems += [f"{n} (in the model, not in the plan)" for n in theirs if n not in planned]
    return problems


def mismatches(plan: PlanRecord, model: Fingerprint) -> list[str]:
    """Layers where a model differs from ``plan`` (see ``compare_layers``)."""
    return compare_layers({layer.name: layer.weight_shape for layer in plan.layers}, model)


def check_matches(plan: PlanRecord, costs: CostTable) -> None:
    """Fail with ``PlanError`` naming every layer where ``costs``' model differs from ``plan``."""
    problems = mismatches(plan, costs.fingerprint())
    if problems:
        raise PlanError(f"the plan for {plan.model} does not match this model: {list_problems(problems)}")


def list_problems(problems: list[str], shown: int = 8) -> str:
    """The first ``shown`` problems, and how many more there are."""
    more = f"; and {len(problems) - shown} more" if len(problems) > shown else ""
    return "; ".join(problems[:shown]) + more


def locate(plan: PlanRecord, pl_module: nn.Module, unplanned: bool = False) -> str:
    """The module-name prefix under which the plan's layers sit in ``pl_module``.

    A plan solved for ``mobilenet_v2`` applies to a LightningModule that holds it as
    ``self.net``; the prefix is then ``"net."``. Plannable layers outside the prefix are
    not the plan's concern; with ``unplanned``, neither are layers under it that the plan
    does not hold (its trace never ran them). Fails with the layers that differ under the
    closest prefix.
    """
    # torch is needed only here: the rest of plan/ reads and compares plans without it
    from budgetplan.costs.layers import plannable_layers

    shapes = {n: tuple(layer.weight.shape) for n, layer in plannable_layers(pl_module).items()}
    planned = {layer.name for layer in plan.layers}
    best: list[str] | None = None
    for prefix in candidate_prefixes(plan.layers[0].name, shapes) or [""]:
        under = without_prefix({n: s for n, s in shapes.items() if n.startswith(prefix)}, prefix)
        if unplanned:
            under = {n: s for n, s in under.items() if n in planned}
        problems = mismatches(plan, under.items())
        if not problems:
            return prefix
        if best is None or len(problems) < len(best):
            best = problems
    assert best is not None
    raise PlanError(f"the plan for {plan.model} does not match {type(pl_module).__name__}: {list_problems(best)}")
