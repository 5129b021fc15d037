"""Whether a training forward runs the layers the plan's trace ran.

A forward whose path depends on the input's values (``self.a(x) if x.mean() > 0 else
self.b(x)``) is traced along one path, and a plan names the plannable layers of that path
only: a layer the trace never reached is no layer of the plan. The callback lets such
layers be (``locate(..., unplanned=True)``: they stay frozen, a layer that never runs
needs no plan); ``PathCheck`` fails
the fit at the first training forward that runs one, since the plan's layers and memory
are then not this forward's, with an error that names the layer and what would work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from budgetplan.costs.layers import plannable_layers
from budgetplan.errors import ModelError
from budgetplan.plan.model import Plan


class PathCheck:
    """Fails a training forward of ``module`` that runs a plannable layer under ``prefix``
    that the plan does not name (forward pre-hooks on those layers only: usually none)."""

    def __init__(self, module: nn.Module, prefix: str) -> None:
        self.module, self.prefix = module, prefix
        self._unplanned: dict[tuple[str, ...], dict[str, nn.Module]] = {}

    def unplanned(self, plan: Plan) -> dict[str, nn.Module]:
        """The plannable layers under the prefix that ``plan`` does not name, with the
        module that runs each (an attention's packed projection: the attention)."""
        names = tuple(self.prefix + layer.name for layer in plan.layers)
        if names not in self._unplanned:
            modules, planned = dict(self.module.named_modules()), set(names)
            self._unplanned[names] = {
                name: modules[layer.weight_param.rpartition(".")[0]]
                for name, layer in plannable_layers(self.module).items()
                if name.startswith(self.prefix) and name not in planned
            }
        return self._unplanned[names]

    @contextmanager
    def watching(self, plan: Plan) -> Iterator[None]:
        """While open, running a layer ``plan`` does not name raises ``ModelError``."""
        handles = [
            module.register_forward_pre_hook(self._refuse(name)) for name, module in self.unplanned(plan).items()
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _refuse(self, layer: str) -> Callable[[nn.Module, Any], None]:
        def hook(module: nn.Module, args: Any) -> None:
            raise ModelError(
                f"BudgetPlanCallback: {type(self.module).__name__}'s forward ran {layer} in training, a layer the "
                "plan does not hold (its trace never reached it, or could not cost it): the forward took another "
                "path than when it was traced, so the plan's layers and memory are not this forward's; solve the "
                "plan on an example input that takes the path training takes (example_input=, or the module's "
                "example_input_array), or make the forward's path independent of the input's values"
            )

        return hook
