"""The selection guard: nothing outside the trained channels moves, and what the optimizer
state of channels coming back into the selection starts from."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from budgetplan import BudgetPlanCallback, BudgetPlanError
from budgetplan.training.guard import SelectionGuard


def _step(weight: nn.Parameter, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad()
    (weight * torch.arange(1.0, weight.numel() + 1).view_as(weight)).sum().backward()
    optimizer.step()


def _guarded(keep: bool) -> tuple[nn.Parameter, torch.optim.SGD, SelectionGuard]:
    weight = nn.Parameter(torch.ones(2, 4))
    optimizer = torch.optim.SGD([weight], lr=0.1, momentum=0.9, weight_decay=0.01)
    guard = SelectionGuard(keep_returning=keep)
    guard.attach([optimizer])
    return weight, optimizer, guard


def _channels(*kept: int) -> torch.Tensor:
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[:, list(kept)] = True
    return mask


def test_entries_outside_the_selection_and_their_momentum_do_not_move():
    weight, optimizer, guard = _guarded(False)
    guard.set_mask(weight, _channels(0, 1, 2, 3))
    _step(weight, optimizer)
    guard.set_mask(weight, _channels(0))
    before, momentum = weight.detach().clone(), optimizer.state[weight]["momentum_buffer"].clone()
    for _ in range(3):  # momentum and weight decay would move every entry
        _step(weight, optimizer)
    out = ~_channels(0)
    assert torch.equal(weight.detach()[out], before[out])
    assert torch.equal(optimizer.state[weight]["momentum_buffer"][out], momentum[out])
    assert not torch.equal(weight.detach()[~out], before[~out])


@pytest.mark.parametrize("keep", [False, True])
def test_a_channel_that_comes_back_starts_from_zero_state_or_from_the_state_it_left_with(keep):
    weight, optimizer, guard = _guarded(keep)
    guard.set_mask(weight, _channels(0, 1))
    _step(weight, optimizer)
    left_with = optimizer.state[weight]["momentum_buffer"][:, 1].clone()
    assert left_with.abs().min() > 0
    guard.set_mask(weight, _channels(0))  # channel 1 leaves
    _step(weight, optimizer)
    guard.set_mask(weight, _channels(0, 1))  # and comes back
    state = optimizer.state[weight]["momentum_buffer"][:, 1]
    assert torch.equal(state, left_with if keep else torch.zeros(2))


def test_the_callback_names_a_bad_returning_state():
    with pytest.raises(BudgetPlanError, match="returning_state must be reset or keep, not 'carry'"):
        BudgetPlanCallback(returning_state="carry")
    assert BudgetPlanCallback(returning_state="keep")._guard.keep_returning is True
    # by default the strategy's: the default keeps what it measured better, the recipes reset
    assert BudgetPlanCallback(resample="epoch")._guard.keep_returning is True
    assert BudgetPlanCallback(strategy="trady")._guard.keep_returning is False
    assert BudgetPlanCallback(returning_state="reset")._guard.keep_returning is False
