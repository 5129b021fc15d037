"""Where the callback's plan comes from: given, loaded from a file, or solved for the
LightningModule on an example input, one plan for every rank (docs/training.md)."""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.model_helpers import is_overridden
from lightning.pytorch.utilities.seed import isolate_rng
from torch.utils.data import DataLoader, Dataset, IterableDataset, RandomSampler

from budgetplan.costs.build import layer_costs
from budgetplan.costs.table import CostTable
from budgetplan.device.profile import load_device
from budgetplan.errors import BudgetPlanError, InfeasibleError, ModelError, PlanError, ProfileError
from budgetplan.importance.measure import Measure, get_measure
from budgetplan.importance.scores import MEASURED, TABLES_MEASURE, Importance, resolve_importance, shipped_importance
from budgetplan.plan.match import locate
from budgetplan.plan.model import Plan
from budgetplan.planning.assemble import plan_problem
from budgetplan.planning.options import Utility
from budgetplan.planning.problem import Problem
from budgetplan.quoting import quote
from budgetplan.strategies import STRATEGIES
from budgetplan.strategies.base import Strategy, Training
from budgetplan.training.batches import first_batch, first_tensor
from budgetplan.training.measure import importance_on_batches
from budgetplan.training.trials import HELD_OUT, Candidate, halving, held_batches
from budgetplan.units import SIZE_EXAMPLES, parse_bytes

_ERRORS: dict[str, type[BudgetPlanError]] = {
    e.__name__: e for e in (InfeasibleError, ModelError, PlanError, ProfileError)
}

EMPTY_LOADER = (
    "BudgetPlanCallback: the training loader yields no batch (an empty dataset, or fewer samples than "
    "one batch with drop_last=True), so there is nothing to plan with; give the fit at least one batch "
    "of training data, or pass example_input= (or give plan=)"
)


def check_given(device: str | None, budget: str | int | None, plan: Any) -> None:
    """Raise, when the callback is made, what would otherwise fail at fit: a device that
    is not known, a budget that is not a size, a plan path that cannot be read."""
    if device is not None:
        try:
            load_device(device)
        except ProfileError as err:
            raise ProfileError(f"BudgetPlanCallback: device: {err}") from None
    if budget is not None:
        try:
            size = parse_bytes(budget)
        except ValueError as err:
            raise BudgetPlanError(f"BudgetPlanCallback: budget: {err}") from None
        if size <= 0:
            raise BudgetPlanError(
                f"BudgetPlanCallback: budget: {quote(budget)} is not positive; expected {SIZE_EXAMPLES}"
            )
    if plan is None or isinstance(plan, Plan):
        return
    if not isinstance(plan, (str, os.PathLike)):
        raise PlanError(f"BudgetPlanCallback: plan: expected a Plan or a plan file's path, got {type(plan).__name__}")
    try:
        Path(plan).open("rb").close()  # the plan is read at setup: this only finds that it can be
    except OSError as err:
        raise PlanError(
            f"BudgetPlanCallback: plan: cannot read {quote(str(plan))} ({err.strerror}); give the path of a plan "
            "file (budgetplan solve --out, Plan.save) or a Plan"
        ) from None


def training_loader(trainer: pl.Trainer, pl_module: pl.LightningModule, keep_rng: bool = False) -> Any:
    """The training loader of this fit: the datamodule's, the module's, or the one given
    to ``Trainer.fit``. ``keep_rng``: what making a loader that Lightning makes again draws
    from the random states is undone."""
    datamodule = getattr(trainer, "datamodule", None)  # set by fit(datamodule=...)
    with isolate_rng() if keep_rng else nullcontext():
        if datamodule is not None:
            return datamodule.train_dataloader()
        if is_overridden("train_dataloader", pl_module):
            return pl_module.train_dataloader()
    # Lightning's own set-up of the loaders given to fit(), reused by the fit: it draws as in any fit
    trainer.fit_loop.setup_data()
    return trainer.train_dataloader


def validation_loader(trainer: pl.Trainer, pl_module: pl.LightningModule) -> Any:
    """The fit's (first) validation loader, as ``training_loader`` finds the training one;
    None when the fit validates nothing (none given, no ``validation_step``, or
    ``limit_val_batches=0``)."""
    if trainer.limit_val_batches == 0 or not is_overridden("validation_step", pl_module):
        return None
    datamodule = getattr(trainer, "datamodule", None)
    with isolate_rng():
        if datamodule is not None:
            loaders = datamodule.val_dataloader() if is_overridden("val_dataloader", datamodule) else None
        elif is_overridden("val_dataloader", pl_module):
            loaders = pl_module.val_dataloader()
        else:  # Lightning's own set-up of the loaders given to fit(), reused by the fit
            loop = trainer.fit_loop.epoch_loop.val_loop
            if not loop._data_source.is_defined():  # no val_dataloaders= given
                return None
            loop.setup_data()
            loaders = trainer.val_dataloaders
    if isinstance(loaders, (list, tuple)):
        return loaders[0] if loaders else None
    if isinstance(loaders, dict):
        return next(iter(loaders.values()), None)
    return loaders


def example_input(trainer: pl.Trainer, pl_module: pl.LightningModule, given: Any = None, keep_rng: bool = False) -> Any:
    """What to trace the model with: ``given``, the module's ``example_input_array``, or one
    sample of the first training batch. ``keep_rng``: the random states are left as a fit
    that never fetched it finds them (a new iterator over a loader draws its seed)."""
    if given is not None:
        return given
    if pl_module.example_input_array is not None:
        return pl_module.example_input_array
    loader = training_loader(trainer, pl_module, keep_rng)
    with isolate_rng() if keep_rng else nullcontext():
        tensor = first_tensor(first_batch(loader, EMPTY_LOADER)) if loader is not None else None
    if tensor is None:
        raise BudgetPlanError(
            "BudgetPlanCallback: no example input to plan with; pass example_input=, set "
            "example_input_array on the LightningModule, or give plan="
        )
    return tensor[:1]


def measurement_batches(loader: Any, batches: int, seed: int) -> Iterable[Any]:
    """``batches`` training batches drawn by ``seed`` from the loader's dataset, the same on
    every rank and every run; the loader's own order and generator are left alone."""
    dataset = getattr(loader, "dataset", None)
    if isinstance(loader, DataLoader) and isinstance(dataset, Dataset) and not isinstance(dataset, IterableDataset):
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))  # type: ignore[arg-type]
        loader = DataLoader(dataset, batch_size=loader.batch_size, sampler=sampler, collate_fn=loader.collate_fn)
    return itertools.islice(iter(loader), batches)


def plan_on_every_rank(trainer: pl.Trainer, solve: Callable[[], Plan]) -> Plan:
    """Rank 0 solves; every rank trains with its plan, or raises its error (the other ranks
    would otherwise wait for a plan forever)."""
    data: dict[str, Any] | None = None
    failure: BudgetPlanError | None = None
    if trainer.is_global_zero:
        try:
            data = solve().to_dict()
        except BudgetPlanError as err:
            failure, data = err, {"error": str(err), "kind": type(err).__name__}
    data = trainer.strategy.broadcast(data, src=0)
    assert data is not None
    if "error" in data:
        raise failure or _ERRORS.get(data["kind"], BudgetPlanError)(data["error"])
    return Plan.from_dict(data, source="the solved plan")


TRIALS = ("importance", "all", "none")  # the default's trial: importances, also redrawn channels, or none
MAX_DRAWS = 4  # draws a redrawn candidate's trial spreads over, at most


@dataclass
class PlanSource:
    """What the callback plans with: a device (default ``cortex-m7``), a budget, an example
    input, importance and planner options, or a plan given outright (a ``Plan`` or a path)."""

    device: str | None = None
    budget: str | int | None = None
    example_input: Any = None
    importance: str | Importance | None = None
    solve_options: dict[str, Any] = field(default_factory=dict)
    plan: str | Plan | None = None
    importance_batches: int = 16
    importance_measure: Measure = dataclasses.field(default_factory=lambda: get_measure(TABLES_MEASURE))
    seed: int = 0
    sampler: str = "magnitude"  # how the fit draws channels, and so the trials of rival plans
    clip_ratio: float = 0.0  # the fit's clipping, and so the trials'
    keep_returning: bool = True  # the fit's guard: channels a redraw brings back keep their momentum, in trials too
    loader: Any = None  # the training loader, when importance is measured on it
    validation: Any = None  # the validation loader, when the trial values on it
    chosen: Candidate | None = None  # the trial's winner, once it has run
    trial: str = "importance"  # what the default's trial tries (TRIALS)
    trial_steps: int | None = None  # the trial's steps in all (None: halving's default, 48 for each finalist)
    epochs: int = 1  # the fit's epochs: a redrawn candidate's trial spreads over as many draws (at most 4)

    def training(self, strategy: Strategy, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Training:
        """What ``strategy`` trains in ``pl_module`` for this fit."""
        if self.plan is None and not strategy.dense and self.importance in (None, MEASURED):
            self.loader = training_loader(trainer, pl_module)  # on every rank: it may wait for the others
            if self.trial != "none":
                self.validation = validation_loader(trainer, pl_module)
        if strategy.planned:
            return strategy.prepare(self.resolve(strategy, trainer, pl_module), None)
        # every rank computes the same: tracing, the measurement batches and the draws are deterministic
        example = example_input(trainer, pl_module, self.example_input)
        return strategy.prepare(None, self.problem(strategy, pl_module, example))

    def problem(self, strategy: Strategy, pl_module: pl.LightningModule, example: Any) -> Problem:
        """The costs of ``pl_module`` traced on ``example``, with the strategy's planner options."""
        device = load_device(self.device or "cortex-m7")
        costs = layer_costs(pl_module, example, device, model_name=type(pl_module).__name__)
        options = {**self.solve_options, **strategy.planner_overrides(costs)}
        if self.budget is not None:
            options["budget"] = self.budget
        if strategy.dense:  # the reference run's prediction weighs nothing
            importance = resolve_importance(None if self.importance == MEASURED else self.importance, costs)
        else:
            importance = self.importance_for(pl_module, costs)
        return Problem.from_costs(costs, device, importance, **options)

    def importance_for(self, pl_module: pl.LightningModule, costs: CostTable) -> Importance:
        """The importance given; else the shipped gradient-energy table whose layer names
        match the model (it trained best in the importance study of docs/results.md) when the
        measure is energy; else measured on the training data (``importance_batches``
        batches), falling back to the no-data default with a warning. ``"measured"``
        insists on the measurement."""
        insist = self.importance == MEASURED
        if self.importance is None and self.importance_measure.name == TABLES_MEASURE:
            table = shipped_importance(costs, by_name=True)
            if table is not None:
                return table
        if not (insist or (self.importance is None and self.importance_batches > 0)):
            return resolve_importance(self.importance, costs)
        try:
            if self.loader is None:
                raise BudgetPlanError("no training data to measure importance on")
            measured = importance_on_batches(
                pl_module, self.batches(), costs, "the training data", self.importance_measure
            )
        except Exception as err:  # the fallback is the documented default; "measured" insists
            if insist:
                raise BudgetPlanError(f"BudgetPlanCallback: importance='measured': {err}") from err
            fallback = resolve_importance(None, costs)
            rank_zero_warn(f"budgetplan: importance not measured ({err}); planning with {fallback.source}")
            return fallback
        rank_zero_info(f"budgetplan: importance {measured.source}")
        return measured

    def resolve(self, strategy: Strategy, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Plan:
        """The given plan, the plan file, or rank 0's solution."""
        if isinstance(self.plan, Plan):
            return self.plan
        if self.plan is not None:
            return Plan.load(self.plan)
        # on every rank: fetching the first batch may wait for the other ranks
        example = example_input(trainer, pl_module, self.example_input)

        def solve() -> Plan:
            problem = self.problem(strategy, pl_module, example)
            plan = plan_problem(problem)
            if not self.tries(strategy, problem.costs):
                return plan
            with isolate_rng():  # the fit shuffles and draws dropout as with the table alone
                batches = self.batches()  # drawn once: measured on, then tried on
                rival = self.rival_importance(problem, pl_module, batches) if self.has_rival(problem.costs) else None
                problems = [problem] if rival is None else [problem, rival]
                candidates = self.candidates(strategy, plan, problems)
                if self.trial == "all":
                    candidates += self.recipe_candidates(strategy, problems[0], pl_module, batches)
                return self.choose(pl_module, candidates, batches)

        return plan_on_every_rank(trainer, solve)

    def candidates(self, strategy: Strategy, plan: Plan, problems: list[Problem]) -> list[Candidate]:
        """The plans the trial tries: each importance's plan with its channels kept and, with
        ``trial="all"``, also planned for and trained with channels redrawn every epoch, and
        the plan of biases alone (with the classifier)."""
        found: list[Candidate] = []
        for problem in problems:
            kept = plan if problem is problems[0] else plan_problem(problem)
            name = kept.importance_source.split(" (")[0]  # without its measurement's details
            found.append(Candidate(name, kept, strategy.prepare(kept, None), self.sampler))
            if self.trial == "all":
                coverage = dataclasses.replace(problem.options, utility=Utility.COVERAGE)
                redrawn = plan_problem(dataclasses.replace(problem, options=coverage))
                draws = min(self.epochs, MAX_DRAWS)
                label = f"{name}, channels redrawn every epoch"
                found.append(Candidate(label, redrawn, strategy.prepare(redrawn, None), "uniform", draws))
        return [c for i, c in enumerate(found) if not any(_same(c, d) for d in found[:i])]

    def recipe_candidates(
        self, strategy: Strategy, problem: Problem, pl_module: pl.LightningModule, batches: list[Any]
    ) -> list[Candidate]:
        """The recipes' plans at the same memory, for ``trial="all"``: biases alone (TinyTL;
        it wins at the smallest budgets), and TraDy's layers (its own score measured on
        ``batches``, its first draw's channel counts), redrawn uniformly every epoch."""
        biases = dataclasses.replace(problem.options, bias_only=True)
        alone = plan_problem(dataclasses.replace(problem, options=biases))
        found = [Candidate("biases alone", alone, strategy.prepare(alone, None), self.sampler)]
        try:
            score = importance_on_batches(pl_module, batches, problem.costs, "the training data", "rgn")
            trady = STRATEGIES["trady"]()  # its own: a draw keeps the problem it drew from
            trady.prepare(None, dataclasses.replace(problem, importance=score))
            draw = trady.draw(self.seed)
        except BudgetPlanError as err:  # no TraDy plan at this memory: the others are tried
            rank_zero_info(f"budgetplan: TraDy's plan is not tried ({err})")
            return found
        assert draw is not None, "trady draws its own plan"
        drawn = draw.plan
        label = "TraDy's layers, channels redrawn every epoch"
        found.append(Candidate(label, drawn, strategy.prepare(drawn, None), "uniform", min(self.epochs, MAX_DRAWS)))
        return found

    def batches(self) -> list[Any]:
        """The training batches importance is measured on, and rival plans tried on."""
        return list(measurement_batches(self.loader, max(1, self.importance_batches), self.seed))

    def tries(self, strategy: Strategy, costs: CostTable) -> bool:
        """Whether a trial chooses the default strategy's plan: against a rival to the shipped
        table's, or, with ``trial="all"``, wherever importance is measured on the fit's data."""
        if not strategy.tries_importances or self.trial == "none":
            return False
        measures = self.importance == MEASURED or (self.importance is None and self.importance_batches > 0)
        return self.has_rival(costs) or (self.trial == "all" and measures and self.loader is not None)

    def has_rival(self, costs: CostTable) -> bool:
        """Whether the default importance planned with a shipped table and there is training
        data to measure a rival on (the table was measured on other images; docs/importance.md)."""
        default = (
            self.importance is None and self.importance_measure.name == TABLES_MEASURE and self.importance_batches > 0
        )
        return default and self.loader is not None and shipped_importance(costs, by_name=True) is not None

    def rival_importance(self, problem: Problem, pl_module: pl.LightningModule, batches: list[Any]) -> Problem | None:
        """The problem valued by gradient energy measured on ``batches`` instead of the
        table; None when the measurement fails (the table then plans alone)."""
        try:
            measured = importance_on_batches(pl_module, batches, problem.costs, "the training data")
        except Exception as err:  # the table's plan is the documented default
            rank_zero_warn(f"budgetplan: importance not measured ({err}); planning with {problem.importance.source}")
            return None
        return dataclasses.replace(problem, importance=measured)

    def choose(self, pl_module: pl.LightningModule, candidates: list[Candidate], batches: list[Any]) -> Plan:
        """Of the candidates, the plan whose short trial fine-tunes on ``batches`` reach the
        lowest loss on the validation batches (or, without them, on training batches held
        out), by successive halving (``budgetplan.training.trials``); the plan says which
        won, against what, and what the trials cost."""
        first = candidates[0].plan
        if len(candidates) == 1:
            return first
        held = held_batches(self.validation)
        if not held and len(batches) <= HELD_OUT:
            rank_zero_info(f"budgetplan: {len(batches)} training batches are too few to try plans on")
            return first
        prefix = locate(first, pl_module)
        options = dict(seed=self.seed, clip_ratio=self.clip_ratio, held=held, keep_returning=self.keep_returning)
        chosen, rounds, steps = halving(pl_module, candidates, batches, prefix, self.trial_steps, **options)
        last = rounds[-1]
        others = ", ".join(label for label, _ in last[1:])
        trained = len(batches) if held else len(batches) - HELD_OUT
        valued = f"{len(held)} validation" if held else f"{HELD_OUT} held-out training"
        valued += " batch" if len(held) == 1 else " batches"
        how = (
            f"{chosen.label} chosen over {others} by trials on {trained} training batches ({steps} steps in "
            f"{len(rounds)} round{'s' if len(rounds) > 1 else ''} of {len(candidates)} plans; lowest loss on "
            f"{valued} {last[0][1]:.4g} vs {last[1][1]:.4g})"
        )
        rank_zero_info(f"budgetplan: importance {chosen.label}; {how}")
        self.chosen = chosen
        return dataclasses.replace(chosen.plan, importance_source=f"{chosen.plan.importance_source}; {how}")


def _same(a: Candidate, b: Candidate) -> bool:
    """Two candidates that would train alike: the same plan, drawn the same way."""
    return a.sampler == b.sampler and a.draws == b.draws and not a.plan.differences(b.plan)
