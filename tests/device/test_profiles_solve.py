"""Every shipped profile planned for the default model (what CI checks across devices)."""

import pytest

from budgetplan import InfeasibleError, PlannerOptions
from budgetplan.costs.pricing import model_bytes
from budgetplan.device.profile import shipped_devices
from budgetplan.importance.scores import resolve_importance
from budgetplan.planning.assemble import plan_from_costs
from budgetplan.planning.memory import base_bytes, layer_bytes


def whole_floor(costs, device):
    """A lower bound on any plan run layer by layer, from the cost table alone: the
    largest forward buffer while the new head's weights and bias are held."""
    head = costs.layers[-1]
    terms = layer_bytes(head, device, 1)
    return (
        base_bytes(costs, device)
        + max(layer_bytes(layer, device, 1).live_forward for layer in costs.layers)
        + terms.weight_per_channel * head.in_channels
        + terms.bias
    )


@pytest.mark.slow
@pytest.mark.parametrize("device", shipped_devices(), ids=lambda d: d.name)
def test_every_profile_solves(device, default_costs_by_executor):
    costs = default_costs_by_executor[device.executor]
    plan = plan_from_costs(costs, device, resolve_importance(None, costs))  # as `budgetplan check` plans
    assert plan.status == "optimal"
    assert plan.predicted.peak_bytes <= device.budget
    assert plan.layers[-1].channels == costs.layers[-1].in_channels
    assert model_bytes(costs, device) <= device.flash
    if whole_floor(costs, device) > device.budget:
        # the small boards fit only because the leading layers run in patches
        assert device.executor == "patch"
        assert plan.predicted.patch_grid > 1
        first = min(layer.index for layer in costs.layers if plan.layers[layer.index].update != "none")
        assert costs.layer(plan.predicted.patch_until).index <= first


@pytest.mark.slow
@pytest.mark.parametrize("budget_kb", [96, 128])
def test_cortex_m7_below_its_budget(budget_kb, default_costs_by_executor):
    device = next(d for d in shipped_devices() if d.name == "cortex-m7")
    costs = default_costs_by_executor["patch"]
    plan = plan_from_costs(costs, device, options=PlannerOptions(budget=budget_kb * 1024))
    assert plan.predicted.peak_bytes <= budget_kb * 1024
    assert plan.predicted.patch_grid > 1
    # run whole, the same budget has no plan
    with pytest.raises(InfeasibleError):
        plan_from_costs(
            default_costs_by_executor["inplace-dw"], device, options=PlannerOptions(budget=budget_kb * 1024)
        )
