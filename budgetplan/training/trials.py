"""Short trial fine-tunes from the module as it is, valued on held-out batches.

Two uses: Sparse Update's contribution analysis tries one candidate choice at a time
(``budgetplan.training.contribution``), and the callback chooses between the plans of
two importance sources by training each for a few dozen steps
(``PlanSource.choose`` in ``budgetplan.training.plan_source``). A trial
trains the parameters it names, gradients masked to the chosen input channels, by SGD
(momentum 0.9) at the module's learning rate; every trial starts from the module's
parameters and puts them back. Successive halving among many plans goes on with each
plan's trial from where its last round stopped (``Progress``).

A trial of a whole plan is valued by the lowest held-out loss it reaches at a check every
``CHECK_EVERY`` steps: on a few hundred images a plan that learns fast starts to overfit
within the trial, and its final loss would rank it below a plan that learns slowly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from budgetplan.costs.layers import plannable_layers
from budgetplan.strategies.base import Training
from budgetplan.training.batches import batch_size_of
from budgetplan.training.channels import weight_mask
from budgetplan.training.clipping import clip_relative
from budgetplan.training.guard import SelectionGuard
from budgetplan.training.probe import probing, step_loss
from budgetplan.training.samplers import draw_seed, get_sampler

HELD_OUT = 3  # training batches the trials are valued on when no validation batches are given; the rest train
VALIDATION_SAMPLES = 256  # validation samples the trials are valued on, at most (whole batches: at least one)
PLAN_STEPS = 48  # optimizer steps of a plan's trial (about the fit's own on a few hundred images)
CHECK_EVERY = 8  # steps between held-out checks of a plan's trial

Trial = list[tuple[nn.Parameter, Tensor | None]]  # parameters and gradient masks


def module_lr(module: nn.Module, default: float = 0.01) -> float:
    """The module's learning rate where Lightning's tuner looks for it (an ``lr`` or
    ``learning_rate`` attribute or hyperparameter), else ``default``."""
    hparams = getattr(module, "hparams", {})
    for name in ("lr", "learning_rate"):
        for value in (getattr(module, name, None), hparams.get(name) if isinstance(hparams, Mapping) else None):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                return float(value)
    return default


def held_batches(validation: Any) -> list[Any]:
    """The first batches of the ``validation`` loader the trial values on, until they hold
    ``VALIDATION_SAMPLES`` samples (at least one batch): images the fit never trains on,
    where training batches held out may be near copies of the ones that train (crops of one
    photograph). The cap bounds what every check costs: valued on the benchmark's 1,000
    validation images, the checks took 210 of a trial's 246 s (docs/results.md)."""
    held: list[Any] = []
    if validation is None:
        return held
    samples = 0
    for batch in validation:
        held.append(batch)
        samples += batch_size_of(batch)
        if samples >= VALIDATION_SAMPLES:
            break
    return held


@dataclass
class Progress:
    """Where a trial stopped, to go on from there: the values and momentum of the
    parameters it trains, the steps it trained and the lowest held-out loss it reached."""

    values: list[Tensor] = field(default_factory=list)
    momentum: list[Tensor | None] = field(default_factory=list)
    done: int = 0
    lowest: float = float("inf")

    def resume(self, params: list[nn.Parameter], optimizer: torch.optim.Optimizer) -> None:
        """Put the trial's state back into ``params`` and ``optimizer`` (none: it starts)."""
        if not self.done:
            return
        with torch.no_grad():
            for p, value in zip(params, self.values, strict=True):
                p.copy_(value)
        for p, buffer in zip(params, self.momentum, strict=True):
            if buffer is not None:
                optimizer.state[p]["momentum_buffer"] = buffer

    def stop(self, params: list[nn.Parameter], optimizer: torch.optim.Optimizer, done: int, lowest: float) -> None:
        """Keep where the trial stopped: after ``done`` steps, the lowest loss ``lowest``."""
        self.values = [p.detach().clone() for p in params]
        self.momentum = [optimizer.state[p].get("momentum_buffer") for p in params]
        self.done, self.lowest = done, lowest


class Trials:
    """Short fine-tunes of ``module`` on ``train``, each valued on ``held``."""

    def __init__(
        self, module: nn.Module, train: list[Any], held: list[Any], steps: int, lr: float, keep_returning: bool = True
    ) -> None:
        self.module, self.train, self.held, self.steps, self.lr = module, train, held, steps, lr
        self.keep_returning = keep_returning

    def held_out_loss(self) -> float:
        with torch.no_grad():
            return sum(float(step_loss(self.module, b, i)) for i, b in enumerate(self.held)) / len(self.held)

    def run(
        self,
        trial: Trial,
        clip_ratio: float = 0.0,
        check_every: int | None = None,
        redraw: Callable[[int], Trial] | None = None,
        draws: int = 1,
        progress: Progress | None = None,
        until: int | None = None,
    ) -> float:
        """The held-out loss after ``steps`` SGD steps (momentum 0.9) on the trial's
        parameters, gradients masked and, with ``clip_ratio``, clipped as the callback clips
        them (masked weights only: the classifier and biases are not); with
        ``check_every``, the lowest held-out loss of the checks every that many steps and
        at the end; with ``redraw``, the masks of draw ``k`` (``redraw(k)``) from the
        ``k``-th of ``draws`` equal parts of the steps on, held as the fit's guard holds
        them (momentum moves no channel a draw left out; ``keep_returning``). With
        ``progress`` the trial goes on from where it stopped (its values, momentum, steps
        and lowest loss) to step ``until`` and leaves its state there, as one run of
        ``until`` steps would. The parameters are put back."""
        params = [p for p, _ in trial]
        every = max(1, self.steps // max(1, draws))
        at = progress or Progress()
        until = self.steps if until is None else until
        start = [p.detach().clone() for p in params]
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.SGD(params, lr=self.lr, momentum=0.9)
        at.resume(params, optimizer)
        guard = SelectionGuard(self.keep_returning)  # holds nothing until a redrawn trial gives it masks
        guard.attach([optimizer])
        lowest, drawn = at.lowest, min(max(at.done - 1, 0) // every, draws - 1)  # the draw its last step trained
        if redraw is not None:
            trial = hold(guard, redraw(drawn) if drawn else trial, reset=False)
        try:
            for step in range(at.done, until):
                if redraw is not None and (k := min(step // every, draws - 1)) != drawn:
                    # the same parameters, the masks of the draw this step is in
                    trial, drawn = hold(guard, redraw(k), reset=True), k
                optimizer.zero_grad(set_to_none=True)
                step_loss(self.module, self.train[step % len(self.train)], step).backward()
                for p, mask in trial:
                    if mask is not None and p.grad is not None:
                        p.grad.mul_(mask)
                if clip_ratio:
                    clip_relative([p for p, mask in trial if mask is not None], clip_ratio)
                optimizer.step()
                if check_every and (step + 1) % check_every == 0 and step + 1 < until:
                    lowest = min(lowest, self.held_out_loss())
            lowest = min(lowest, self.held_out_loss())
            at.stop(params, optimizer, until, lowest)
            return lowest
        finally:
            guard.detach()
            with torch.no_grad():
                for p, value in zip(params, start, strict=True):
                    p.copy_(value)
                    p.grad = None
                    p.requires_grad_(False)


def hold(guard: SelectionGuard, trial: Trial, reset: bool) -> Trial:
    """``trial``, its masked parameters guarded by ``guard`` with its masks (``reset``: the
    optimizer state of channels entering them zeroed, as a redraw does)."""
    for p, mask in trial:
        if mask is not None:
            guard.set_mask(p, mask.bool(), reset)
    return trial


def plan_trial(module: nn.Module, training: Training, prefix: str, sampler: str, seed: int, epoch: int = 0) -> Trial:
    """What ``training`` trains in ``module`` (under ``prefix``): each layer's weight masked
    to the input channels ``sampler`` draws at ``epoch`` (as the callback draws them), and
    the biases. A layer training every channel, like the classifier, is not masked (nor
    clipped)."""
    layers = plannable_layers(module)
    params = dict(module.named_parameters())
    draws = get_sampler(sampler)
    trial: Trial = []
    for position, layer in enumerate(training.layers):
        found = layers[prefix + layer.name]
        if layer.count >= layer.total:
            trial.append((found.weight, None))
            continue
        name, layer_seed = prefix + layer.name, draw_seed(seed, epoch, 0, position)
        draws.track(name, layer.total)
        idx = draws.draw(name, found.weight, layer.total, found.groups, layer.count, layer_seed)
        trial.append((found.weight, weight_mask(found.weight.shape, idx, found.groups).to(found.weight.dtype)))
    trial.extend((params[prefix + bias], None) for bias in training.biases)
    return trial


@dataclass(frozen=True)
class Candidate:
    """A plan a trial tries: what it trains, the sampler that draws its channels, and how
    many draws its trial spreads over its steps (more than one for channels redrawn every
    epoch; ``label`` names it in the plan's importance source)."""

    label: str
    plan: Any
    training: Training
    sampler: str = "magnitude"
    draws: int = 1


def trial_losses(
    module: nn.Module,
    candidates: Sequence[Candidate],
    batches: list[Any],
    prefix: str = "",
    *,
    seed: int = 0,
    clip_ratio: float = 0.0,
    steps: int = PLAN_STEPS,
    check_every: int = CHECK_EVERY,
    held_out: int = HELD_OUT,
    held: list[Any] | None = None,
    lr: float | None = None,
    until: int | None = None,
    progress: Sequence[Progress] | None = None,
    keep_returning: bool = True,
) -> list[float]:
    """The lowest held-out loss each of ``candidates`` reaches in a trial of ``steps`` steps
    on ``batches`` at ``lr`` (by default the module's own), valued on ``held`` (validation
    batches: every batch of ``batches`` trains) or, without them, on the last ``held_out``
    of ``batches`` (the others train); with ``progress`` (one per candidate), each goes on
    from where it stopped to step ``until``; ``keep_returning`` as the fit's guard. The module
    is left as it was."""
    train, held = (batches, held) if held else (batches[:-held_out], batches[-held_out:])
    trials = Trials(module, train, held, steps, lr or module_lr(module), keep_returning)
    where = list(progress) if progress is not None else [Progress() for _ in candidates]

    def loss(candidate: Candidate, at: Progress) -> float:
        def draw(epoch: int) -> Trial:
            return plan_trial(module, candidate.training, prefix, candidate.sampler, seed, epoch)

        redraw = draw if candidate.draws > 1 else None
        return trials.run(draw(0), clip_ratio, check_every, redraw, candidate.draws, at, until)

    with probing(module, requires_grad=False):
        return [loss(candidate, at) for candidate, at in zip(candidates, where, strict=True)]


def round_sizes(count: int) -> list[int]:
    """The plans in each round of successive halving among ``count``: the better half,
    rounded up, goes on until one is left (6 → 6, 3, 2)."""
    sizes = []
    while count > 1:
        sizes.append(count)
        count = (count + 1) // 2
    return sizes


def halving(
    module: nn.Module,
    candidates: Sequence[Candidate],
    batches: list[Any],
    prefix: str = "",
    total_steps: int | None = None,
    **options: Any,
) -> tuple[Candidate, list[list[tuple[str, float]]], int]:
    """Successive halving (Jamieson & Talwalkar, AISTATS 2016): each round every plan still
    in it trains the same number of steps more, going on from where its trial stopped, and
    the better half goes on, until one is left. The last two have trained ``PLAN_STEPS``
    each (two candidates: one round of ``PLAN_STEPS`` each, as a trial of two), or, with
    ``total_steps``, what those steps shared by every round's plans give, at least
    ``CHECK_EVERY`` a round. The winner, each round's labels and losses (best first), and
    the steps trained in all."""
    alive = list(candidates)
    sizes = round_sizes(len(alive))
    rounds: list[list[tuple[str, float]]] = []
    if not sizes:
        return alive[0], rounds, 0
    more = PLAN_STEPS // len(sizes) if total_steps is None else total_steps // sum(sizes)
    more = max(CHECK_EVERY, more)
    where = [Progress() for _ in alive]
    for done in range(1, len(sizes) + 1):
        length, until = more * len(sizes), more * done
        losses = trial_losses(module, alive, batches, prefix, steps=length, until=until, progress=where, **options)
        ranked = sorted(zip(losses, range(len(alive)), strict=True))
        rounds.append([(alive[i].label, loss) for loss, i in ranked])
        kept = [i for _, i in ranked[: (len(alive) + 1) // 2]]
        alive, where = [alive[i] for i in kept], [where[i] for i in kept]
    return alive[0], rounds, more * sum(sizes)
