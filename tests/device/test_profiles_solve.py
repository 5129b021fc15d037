"""Every shipped profile planned for the default model (what CI checks across devices)."""

import pytest

from budgetplan import InfeasibleError
from budgetplan.device.profile import shipped_devices
from budgetplan.planning.assemble import plan_from_costs
from budgetplan.planning.memory import base_bytes, layer_bytes

# these boards keep less than the default model's 224 KB working buffer plus a new head
TOO_SMALL = {"cortex-m4", "nrf52840", "rp2040"}


@pytest.mark.parametrize("device", shipped_devices(), ids=lambda d: d.name)
def test_profile_solves_or_says_what_would(device, default_costs_by_executor):
    costs = default_costs_by_executor[device.executor]
    head = costs.layers[-1]
    terms = layer_bytes(head, device, 1)
    # a lower bound on any plan, from the cost table alone: the largest forward buffer
    # while the new head's weights and bias are held
    floor = (
        base_bytes(costs, device)
        + max(layer_bytes(layer, device, 1).live_forward for layer in costs.layers)
        + terms.weight_per_channel * head.in_channels
        + terms.bias
    )
    if device.name in TOO_SMALL:
        assert floor > device.budget
        with pytest.raises(InfeasibleError) as err:
            plan_from_costs(costs, device)
        smallest = err.value.smallest_budget
        assert smallest is not None and smallest >= floor
        assert f"--budget {-(-smallest // 1024)}KB" in str(err.value)
        plan = plan_from_costs(costs, device, options=__import__("budgetplan").PlannerOptions(budget=smallest + 1))
        assert plan.predicted.peak_bytes <= smallest + 1
    else:
        assert floor <= device.budget
        plan = plan_from_costs(costs, device)
        assert plan.status == "optimal"
        assert plan.predicted.peak_bytes <= device.budget
        assert plan.layers[-1].channels == head.in_channels
        assert costs.model_bytes(device) <= device.flash
