"""``BudgetPlanCallback``: fine-tune within a device's memory budget during ``Trainer.fit``.

Hooks, in the order a fit meets them:

* ``setup``: take the plan (given, loaded, or solved for the LightningModule), check it
  against the model, freeze everything outside it — before ``configure_optimizers`` and
  before any DDP wrapper, so the optimizer sees only trainable parameters;
* ``on_fit_start``: guard the optimizers so that entries outside the selection never move;
* ``on_train_epoch_start`` / ``on_train_batch_start``: draw the channels to train
  (per epoch, per step, or once) and open the memory-lean forward;
* ``on_before_backward``: close it, record what autograd saved;
* ``on_before_optimizer_step``: hand gradient norms to the samplers that read them, then
  clip the trained weights' gradients where ``clip_ratio`` says so;
* ``on_train_batch_end``: log the measured saved bytes;
* ``on_train_epoch_end``: log predicted memory, trained fraction and coverage.

What must survive a restart (the selection, what each channel has seen) is in
``state_dict``; draws depend only on ``(seed, epoch, step)``, so every rank and every
resumed run draws the same channels.

>>> import torch, lightning.pytorch as pl
>>> from torch import nn
>>> class Tiny(pl.LightningModule):
...     def __init__(self):
...         super().__init__()
...         self.net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
...         self.example_input_array = torch.zeros(1, 3, 8, 8)
...     def forward(self, x):
...         return self.net(x)
...     def training_step(self, batch, _):
...         x, y = batch
...         return nn.functional.cross_entropy(self(x), y)
...     def configure_optimizers(self):
...         return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1)
>>> data = torch.utils.data.TensorDataset(torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,)))
>>> callback = BudgetPlanCallback(device="cortex-m7", budget="6KB", batch_size=4)
>>> trainer = pl.Trainer(max_epochs=1, callbacks=[callback], logger=False, enable_progress_bar=False,
...                      enable_checkpointing=False, enable_model_summary=False)
>>> trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=4))
>>> callback.plan.status, sorted(callback.selection)
('optimal', ['net.0', 'net.3'])
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.seed import isolate_rng
from torch import Tensor

from budgetplan.costs.layers import plannable_layers
from budgetplan.errors import BudgetPlanError
from budgetplan.importance.measure import get_measure
from budgetplan.importance.scores import Importance
from budgetplan.plan.match import locate
from budgetplan.plan.model import Plan
from budgetplan.planning.options import planner_options
from budgetplan.quoting import quote
from budgetplan.strategies import get_strategy
from budgetplan.strategies.base import Resample
from budgetplan.training.batches import batch_size_of
from budgetplan.training.checks import batch_warning
from budgetplan.training.clipping import clip_relative
from budgetplan.training.freezing import batch_norms, keep_in_eval, train_only
from budgetplan.training.guard import SelectionGuard
from budgetplan.training.lean import LeanAutograd
from budgetplan.training.meter import SavedTensorMeter
from budgetplan.training.patches import PatchedForward
from budgetplan.training.paths import PathCheck
from budgetplan.training.plan_source import MAX_DRAWS, TRIALS, check_given, example_input
from budgetplan.training.report import FitReport
from budgetplan.training.resume import Resumable
from budgetplan.training.samplers import draw_seed, get_sampler
from budgetplan.training.selection import ChannelSelection
from budgetplan.training.sourcing import Sourcing
from budgetplan.training.state import FitState


class BudgetPlanCallback(Resumable, FitReport, Sourcing, Callback):
    """Train only what a budget plan allows, with a memory-lean backward.

    Args:
        device: profile name, alias or YAML path to solve a plan for (default
            ``cortex-m7`` when no ``plan`` is given).
        plan: a ``Plan`` or the path of a plan file; otherwise one is solved at setup for
            the LightningModule, on ``example_input``, the module's
            ``example_input_array``, or the first training batch, in that order.
        budget: memory budget for solving, e.g. ``"256KB"`` (default: the device's).
        seed: seed of the channel draws.
        strategy: a registered strategy's name: ``"budgetplan"`` (default), ``"trady"``,
            ``"sparse-update"``, ``"bias"``, ... (``budgetplan.strategies.strategy_table()``).
        resample: ``"epoch"``, ``"step"`` or ``"never"`` (default: the strategy's).
        sampler: ``"uniform"``, ``"gradient"``, ``"magnitude"`` or ``"largest"``
            (``budgetplan.training.samplers``; default: the strategy's).
        example_input: a batch to trace the model with when solving.
        importance: importance YAML file for solving, an ``Importance``, ``"shipped"`` (the
            table shipped for the model), ``"prior"`` (the no-data prior) or ``"measured"``
            (on ``importance_batches`` training batches drawn by ``seed``). By default: where
            a table ships for the network, its plan or the plan of importance measured on the
            training data, whichever a short trial fine-tune prefers
            (``budgetplan.training.trials``); else measured, falling back to the prior with a
            warning (docs/importance.md).
        importance_batches: batches measured at setup (0: never measure by default).
        importance_measure: ``"energy"``, ``"rgn"`` (TraDy's reweighted gradient norm) or
            ``"contribution"`` (Sparse Update's contribution analysis,
            ``budgetplan.training.contribution``); default: the strategy's (``trady`` ranks
            by its own score, ``sparse-update`` by its analysis).
        patches: run the plan's patch stage on the host, as the device does
            (``budgetplan.training.patches``; the result is the same, the forward slower).
        clip_ratio: clip each trained weight's gradient, per output unit, to this multiple
            of the unit's weight norm (adaptive gradient clipping,
            ``budgetplan.training.clipping``); the classifier is never clipped. ``0``: never
            clip; ``None`` (default): the strategy's (0.5 for ``budgetplan``, else never).
        trial: what the default strategy's trial tries where a table ships for the network:
            ``"importance"`` (default) the plans of the table and of measured importance,
            channels kept; ``"all"`` each also planned for and trained with its channels
            redrawn every epoch (uniformly), biases alone and TraDy's layers, by successive
            halving, and where no table ships the same for measured importance alone;
            the winner's rule then trains the fit (unless ``resample`` or
            ``sampler`` is given); ``"none"`` the table's plan alone. A trial values on the
            fit's validation batches where it has them (docs/importance.md).
        trial_steps: optimizer steps the trial trains in all, shared by the plans of every
            round of successive halving, each plan going on where its last round stopped
            (default: the last two train 48 steps each, so 96 for two plans and 176 for the
            six of ``"all"``); the plan's importance source states what it cost.
        returning_state: the optimizer state (momentum, Adam's moments) of channels that
            a redraw brings back into the selection: ``"reset"`` to zero, or ``"keep"`` as
            it was when they left (``budgetplan.training.guard``); ``None`` (default): the
            strategy's (``"keep"`` for ``budgetplan``, ``"reset"`` for the recipes).
        solve_options: further ``budgetplan.solve`` options (``batch_size``, ``epochs``, ...);
            ``utility`` defaults to the one that values the channel rule: ``linear`` when
            the channels are kept (``resample="never"``), else ``coverage``.
    """

    def __init__(
        self,
        device: str | None = None,
        plan: str | Plan | None = None,
        budget: str | int | None = None,
        seed: int = 0,
        resample: str | None = None,
        sampler: str | None = None,
        example_input: Any = None,
        importance: str | Importance | None = None,
        strategy: str = "budgetplan",
        patches: bool = False,
        importance_batches: int = 16,
        importance_measure: str | None = None,
        clip_ratio: float | None = None,
        trial: str = "importance",
        trial_steps: int | None = None,
        returning_state: str | None = None,
        **solve_options: Any,
    ) -> None:
        self.__init_strategy(strategy, resample, sampler, plan)
        check_given(device, budget, plan)  # here, not at fit time
        self.__init_plan_source(device, budget, example_input, importance, solve_options)
        self.seed = seed
        self.importance_batches = importance_batches
        self.importance_measure = get_measure(importance_measure or self.strategy.measure)
        self.clip_ratio = self.strategy.clip_ratio if clip_ratio is None else clip_ratio
        if not self.clip_ratio >= 0:
            raise BudgetPlanError(f"clip_ratio must be a number >= 0 (0 never clips) or None, not {clip_ratio!r}")
        self._given_plan = plan
        returning_state = self.strategy.returning_state if returning_state is None else returning_state
        _check_options(trial, trial_steps, returning_state)
        self.trial, self.trial_steps, self.returning_state = trial, trial_steps, returning_state
        self.plan: Plan | None = plan if isinstance(plan, Plan) else None
        self._guard = SelectionGuard(keep_returning=returning_state == "keep")
        self._channels = ChannelSelection(self._guard, self._sampler)
        self._fit = FitState()
        self.saved_bytes_per_sample: float | None = None
        self.patches = patches
        self.patched: PatchedForward | None = None  # the patch stage in use, with ``patches``
        self._patch_stage = ExitStack()

    def __init_strategy(self, strategy: str, resample: str | None, sampler: str | None, plan: Any) -> None:
        self.strategy = get_strategy(strategy)
        self.resample = Resample.from_str(resample or self.strategy.resample)
        self._rule_given = resample is not None or sampler is not None
        self._sampler = get_sampler(sampler or self.strategy.sampler)
        self.sampler = self._sampler.name
        if plan is not None and not self.strategy.planned:
            raise BudgetPlanError(f"strategy {strategy!r} makes its own choices at fit time; leave out plan=")

    def __init_plan_source(
        self, device: str | None, budget: str | int | None, example: Any, importance: Any, options: dict[str, Any]
    ) -> None:
        self.device = device
        self.budget = budget
        self.example_input = example
        self.importance = importance
        # the objective values the channel rule that trains the plan: kept channels are worth
        # their fraction, channels redrawn each epoch what they reach (docs/planner.md)
        self.solve_options = {"utility": "linear" if self.resample is Resample.NEVER else "coverage", **options}
        planner_options(**self.solve_options)  # an unknown option fails here, not at fit time

    # --- setup: plan, check, freeze -------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._fit.meter = SavedTensorMeter(pl_module)
        source = self._source()
        source.epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else MAX_DRAWS
        training = source.training(self.strategy, trainer, pl_module)
        self.plan, self._fit.draws_plan = training.plan, training.plan is None
        self._adopt_trials_rule(source.chosen)
        if self.strategy.dense:
            return  # stock training: nothing frozen, BatchNorm statistics train too
        prefix = locate(training.plan, pl_module, unplanned=True) if training.plan is not None else ""
        self._channels.use(train_only(pl_module, training, prefix))
        self._fit.path = PathCheck(pl_module, prefix)
        self._fit.classifier = next(reversed(plannable_layers(pl_module)), "")
        self._fit.norms = batch_norms(pl_module)
        self._fit.lean = LeanAutograd(pl_module, self.selection)
        if self.patches and self.plan is not None and self.plan.predicted.patch_grid:
            split, grid = prefix + self.plan.predicted.patch_until, self.plan.predicted.patch_grid
            # set up without a draw from the random states: dropout and shuffling as without patches
            example = example_input(trainer, pl_module, self.example_input, keep_rng=True)
            with isolate_rng():
                runner = PatchedForward(pl_module, example, split, grid)
            self.patched = self._patch_stage.enter_context(runner.install())
        if self._fit.restored is not None:
            self._restore()

    # --- fit ---------------------------------------------------------------------------

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._guard.attach(list(trainer.optimizers))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        keep_in_eval(self._fit.norms)
        self._channels.settle()  # the optimizers exist now
        if self.resample.due_at_epoch(self._fit.drawn_at):
            self._draw(trainer.current_epoch, 0)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        keep_in_eval(self._fit.norms)
        if self.resample.due_at_step(self._fit.drawn_at, trainer.current_epoch, trainer.global_step):
            self._draw(trainer.current_epoch, trainer.global_step)
        self._fit.open_forward(batch_size_of(batch), self.plan)
        self._fit.warn_once("batch", batch_warning(self.plan, batch))

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        self._close_forward()

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self._channels.observe_gradients()  # the sampler's signal is the gradient as computed
        if self.clip_ratio:
            layers = self._channels.layers.items()
            clip_relative([layer.weight for name, layer in layers if name != self._fit.classifier], self.clip_ratio)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.teardown(trainer, pl_module, "fit")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._close_forward()
        self._guard.detach()
        self._patch_stage.close()

    # --- channel draws -------------------------------------------------------------------

    def _draw(self, epoch: int, step: int) -> None:
        drawn = self.strategy.draw(draw_seed(self.seed, epoch, step, -1))
        if drawn is not None:
            self.plan = drawn.plan
        self._channels.redraw(self.seed, epoch, step, drawn.channels if drawn is not None else None)
        self._fit.drawn_at = (epoch, step)

    @property
    def selection(self) -> dict[str, Tensor]:
        """Layer name -> the input channels it trains now (the lean backward reads this dict)."""
        return self._channels.current


def _check_options(trial: str, trial_steps: int | None, returning_state: str) -> None:
    if trial not in TRIALS:
        raise BudgetPlanError(f"trial must be one of {', '.join(TRIALS)}, not {quote(str(trial))}")
    if trial_steps is not None and not (isinstance(trial_steps, int) and trial_steps > 0):
        raise BudgetPlanError(f"trial_steps must be a whole number of steps > 0 or None, not {trial_steps!r}")
    if returning_state not in ("reset", "keep"):
        raise BudgetPlanError(f"returning_state must be reset or keep, not {quote(str(returning_state))}")
