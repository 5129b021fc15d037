"""Where a plan's layers sit in a model: the module-name prefix they are found under."""

from __future__ import annotations

from torch import nn

from budgetplan.errors import PlanError
from budgetplan.plan.model import Plan, list_problems

_PLANNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def locate(plan: Plan, pl_module: nn.Module) -> str:
    """The module-name prefix under which the plan's layers sit in ``pl_module``.

    A plan solved for ``mobilenet_v2`` applies to a LightningModule that holds it as
    ``self.net``; the prefix is then ``"net."``. Fails with the mismatched layers.
    """
    first = plan.layers[0].name
    names = [n for n, _ in pl_module.named_modules()]
    prefixes = [n[: -len(first)] for n in names if n == first or n.endswith("." + first)]
    best: list[str] | None = None
    for prefix in prefixes or [""]:
        found = [
            (n[len(prefix) :], tuple(m.weight.shape))
            for n, m in pl_module.named_modules()
            if n.startswith(prefix) and isinstance(m, _PLANNABLE)
        ]
        problems = plan.mismatches(found)
        if not problems:
            return prefix
        if best is None or len(problems) < len(best):
            best = problems
    assert best is not None
    raise PlanError(f"the plan for {plan.model} does not match {type(pl_module).__name__}: {list_problems(best)}")
