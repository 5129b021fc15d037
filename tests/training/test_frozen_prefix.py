"""Held-out checks that skip the modules before the trained ones: the same losses as the
whole network's, without running those modules again."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from budgetplan.strategies.base import Training
from budgetplan.training import frozen_prefix
from budgetplan.training.frozen_prefix import FrozenPrefix
from budgetplan.training.trials import Candidate, Progress, trial_losses

from ..helpers.tiny_modules import TinyModule
from .test_trials import HALF_POINTWISE, HEAD, learnable_batches


class CountedConv(nn.Conv2d):
    """A conv that counts the times its forward runs."""

    runs = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CountedConv.runs += 1
        return super().forward(x)


class ShiftedConv(nn.Module):
    """A conv whose forward first shifts its input in place."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.add_(1.0))


class Stem(nn.Module):
    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.conv, self.norm, self.act = CountedConv(3, 8, 3, padding=1), nn.BatchNorm2d(8), act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(nn.functional.relu(self.norm(self.conv(x)), inplace=True))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.act = nn.Tanh()  # called in the stem, before the trained conv and after it
        self.stem = Stem(self.act)
        self.middle = CountedConv(8, 8, 3, padding=1)
        self.block = ShiftedConv()
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.middle(self.act(self.stem(x)))  # the block shifts what the middle conv gave in place
        return self.head(self.act(self.block(x)).mean((2, 3)))


def batches(n: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(4, 3, 6, 6, generator=generator), torch.tensor([0, 1, 2, 3])) for _ in range(n)]


def checks(net: Net, trained: list[nn.Parameter], frozen: FrozenPrefix | None, count: int = 3) -> list[list[float]]:
    """The held-out losses of ``count`` checks, the trained parameters moved before each."""
    net.eval()
    generator = torch.Generator().manual_seed(2)
    found = []
    with torch.no_grad():
        for _ in range(count):
            for p in trained:
                p.add_(0.1 * torch.randn(p.shape, generator=generator))
            losses = []
            for i, (x, y) in enumerate(batches()):

                def loss(x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
                    return nn.functional.cross_entropy(net(x), y)

                losses.append(float(loss() if frozen is None else frozen.loss(i, loss)))
            found.append(losses)
    return found


def test_checks_after_the_first_skip_what_precedes_the_trained_layer_and_give_the_same_losses():
    reference, net = Net(), Net()
    whole = checks(reference, [reference.block.conv.weight, reference.block.conv.bias], None)
    frozen = FrozenPrefix(net, [net.block.conv.weight, net.block.conv.bias])
    CountedConv.runs = 0
    assert checks(net, [net.block.conv.weight, net.block.conv.bias], frozen) == whole  # exactly
    assert CountedConv.runs == 2 * len(batches())  # the stem's conv and the middle conv, at the first check only
    kept = frozen.kept[0].outputs  # the outermost calls; the Tanh's second call, after the block, runs
    assert set(kept) == {(net.stem, 0), (net.act, 1), (net.middle, 0)}
    assert [call for call, out in kept.items() if isinstance(out, torch.Tensor)] == [(net.middle, 0)]  # read after


def test_nothing_is_kept_where_the_first_layer_trains():
    reference, net = Net(), Net()
    whole = checks(reference, [reference.stem.conv.weight], None)
    frozen = FrozenPrefix(net, [net.stem.conv.weight])
    assert checks(net, [net.stem.conv.weight], frozen) == whole
    assert not frozen.kept


def test_past_its_limit_the_prefix_keeps_no_more_batches():
    reference, net = Net(), Net()
    whole = checks(reference, [reference.head.weight], None)
    one_batch = 4 * 8 * 6 * 6 * 4  # the block's output of 4 images (float32), the only one the head reads
    frozen = FrozenPrefix(net, [net.head.weight], limit=one_batch)
    assert checks(net, [net.head.weight], frozen) == whole
    assert list(frozen.kept) == [0] and frozen.full


@pytest.mark.parametrize("draws", [1, 3])
def test_a_trial_values_its_plans_as_it_did_without_the_prefix(monkeypatch, draws):
    data = learnable_batches(40)
    training = Training((HALF_POINTWISE, *HEAD.layers), HEAD.biases, None)
    tried = [Candidate("half", None, training, "uniform", draws), Candidate("head", None, HEAD)]
    options = {"lr": 0.05, "steps": 24, "check_every": 4}
    kept = [Progress(), Progress()]
    torch.manual_seed(0)
    losses = trial_losses(TinyModule(dropout=0.0), tried, data, progress=kept, **options)
    assert all(p.frozen is not None and p.frozen.kept for p in kept)
    monkeypatch.setattr(frozen_prefix, "CACHE_BYTES", 0)  # every check runs the whole network
    torch.manual_seed(0)
    assert trial_losses(TinyModule(dropout=0.0), tried, data, **options) == losses


class SignGated(Net):
    """The stem's output read after the trained conv, through its sign only: no gradient."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.stem(x)
        out = self.act(self.block(self.middle(stem)))
        return self.head((out * (stem > 0.5).float().mean((1, 2, 3), keepdim=True)).mean((2, 3)))


def test_a_check_that_a_replay_would_change_runs_the_whole_network():
    reference, net = SignGated(), SignGated()
    whole = checks(reference, [reference.head.weight], None)
    frozen = FrozenPrefix(net, [net.head.weight])
    assert checks(net, [net.head.weight], frozen) == whole
    assert frozen.full and not frozen.kept
