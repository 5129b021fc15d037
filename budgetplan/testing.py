"""``assert_fits``: a model's training plan held to a device in a user's own tests, with an
assertion message that says what to change (docs/ci.md).

With the pytest plugin (``budgetplan.pytest_plugin``, loaded when budgetplan is
installed), a test that takes the ``budgetplan_device`` argument runs once per profile::

    def test_my_model_fits(budgetplan_device):
        assert_fits(MyModel(), budgetplan_device, torch.zeros(1, 3, 96, 96), min_trained=0.05)

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
>>> plan = assert_fits(net, "cortex-m7", torch.zeros(1, 3, 8, 8), max_peak=0.9)
>>> plan.device.name
'cortex-m7'
"""

from __future__ import annotations

from typing import Any

from budgetplan.device.profile import DeviceProfile, load_device
from budgetplan.errors import InfeasibleError
from budgetplan.plan.model import Plan
from budgetplan.planning.assemble import plan_problem
from budgetplan.planning.diagnose import budget_argument
from budgetplan.planning.problem import Problem
from budgetplan.units import format_bytes


def assert_fits(
    model: Any,
    device: str | DeviceProfile,
    example_input: Any,
    *,
    min_trained: float | None = None,
    max_peak: float | None = None,
    importance: Any = None,
    **options: Any,
) -> Plan:
    """The plan of ``model`` on ``device`` for ``example_input``; an ``AssertionError`` that
    says what to change when no plan fits, when it trains less than ``min_trained`` of the
    model's plannable weights, or when its peak is above ``max_peak`` of the device's SRAM
    (shares in [0, 1]). Other keyword arguments are planner options (``budget="256KB"``,
    ``batch_size=8``, ...)."""
    profile = load_device(device)
    problem = Problem.build(model, example_input, profile, importance, **options)
    where = f"{problem.costs.model} on {profile.name} at {format_bytes(problem.budget)}"
    try:
        plan = plan_problem(problem)
    except InfeasibleError as err:
        hint = f"give budget={budget_argument(err.smallest_budget)!r}" if err.smallest_budget else "a smaller input"
        raise AssertionError(f"no training plan fits: {err}; {hint}, or a smaller model or input") from None
    trained, peak = plan.trained_fraction(), plan.predicted.peak_bytes
    if min_trained is not None and trained < min_trained:
        raise AssertionError(
            f"{where} trains {trained:.1%} of its weights, under {min_trained:.1%}: a larger budget, a smaller "
            f"input or batch, or fewer required layers trains more"
        )
    if max_peak is not None and peak > max_peak * profile.sram:
        raise AssertionError(
            f"{where} peaks at {format_bytes(peak)}, {peak / profile.sram:.1%} of {profile.name}'s SRAM, over "
            f"{max_peak:.1%}: give budget='{max(1, int(max_peak * profile.sram) // 1024)}KB' or less"
        )
    return plan
