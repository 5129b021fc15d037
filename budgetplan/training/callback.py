"""``BudgetPlanCallback``: fine-tune within a device's memory budget during ``Trainer.fit``.

Hooks, in the order a fit meets them:

* ``setup``: take the plan (given, loaded, or solved for the LightningModule), check it
  against the model, freeze everything outside it — before ``configure_optimizers`` and
  before any DDP wrapper, so the optimizer sees only trainable parameters;
* ``on_fit_start``: guard the optimizers so that entries outside the selection never move;
* ``on_train_epoch_start`` / ``on_train_batch_start``: draw the channels to train
  (per epoch, per step, or once) and open the memory-lean forward;
* ``on_before_backward``: close it, record what autograd saved;
* ``on_before_optimizer_step``: note gradient norms for the ``gradient`` sampler;
* ``on_train_batch_end``: log the measured saved bytes;
* ``on_train_epoch_end``: log predicted memory, trained fraction and coverage.

What must survive a restart (the selection, what each channel has seen) is in
``state_dict``; draws depend only on ``(seed, epoch, step)``, so every rank and every
resumed run draws the same channels.
"""

from __future__ import annotations

from typing import Any, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from budgetplan.costs.build import layer_costs
from budgetplan.device.profile import load_device
from budgetplan.errors import BudgetPlanError
from budgetplan.plan.match import locate
from budgetplan.plan.model import Plan
from budgetplan.planning.assemble import dense_plan, plan_from_choices, plan_from_costs
from budgetplan.planning.diagnose import check_flash
from budgetplan.planning.importance import Importance, resolve_importance
from budgetplan.planning.objective import objective
from budgetplan.planning.options import planner_options
from budgetplan.planning.problem import Problem
from budgetplan.planning.solve import Solution
from budgetplan.strategies import get_strategy
from budgetplan.training.batches import batch_size_of, first_tensor
from budgetplan.training.channels import channel_norms
from budgetplan.training.fold import warn_of_norm_gain
from budgetplan.training.guard import SelectionGuard
from budgetplan.training.lean import LeanAutograd
from budgetplan.training.meter import SavedTensorMeter
from budgetplan.training.plan_source import example_input, plan_on_every_rank
from budgetplan.training.samplers import draw_seed, get_sampler
from budgetplan.training.selection import ChannelSelection, TrainedLayer

RESAMPLE = ("epoch", "step", "never")
LOSS_ALLOWANCE = 256  # bytes per sample the loss may save beside the model


class BudgetPlanCallback(Callback):
    """Train only what a budget plan allows, with a memory-lean backward.

    Args:
        device: profile name, alias or YAML path to solve a plan for (default
            ``cortex-m7`` when no ``plan`` is given).
        plan: a ``Plan`` or the path of a plan file; otherwise one is solved at setup for
            the LightningModule, on ``example_input``, the module's
            ``example_input_array``, or the first training batch, in that order.
        budget: memory budget for solving, e.g. ``"256KB"`` (default: the device's).
        seed: seed of the channel draws.
        strategy: ``"budgetplan"`` (default), ``"trady"``, ``"gradient"``,
            ``"dynamic-gradient"``, ``"sparse-update"``, ``"classifier"``, ``"bias"`` or
            ``"full"``; sources and memory accounting in ``budgetplan.strategies.builtin``.
        resample: ``"epoch"``, ``"step"`` or ``"never"`` (default: the strategy's).
        sampler: ``"uniform"``, ``"gradient"``, ``"magnitude"`` or ``"largest"``
            (``budgetplan.training.samplers``; default: the strategy's).
        example_input: a batch to trace the model with when solving.
        importance: importance YAML file for solving, ``"shipped"`` (the table shipped for
            the model) or ``"prior"`` (the default, the documented no-data prior).
        solve_options: further ``budgetplan.solve`` options (``batch_size``, ``epochs``, ...).

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
        **solve_options: Any,
    ) -> None:
        self.strategy = get_strategy(strategy)
        resample = resample or self.strategy.resample
        if resample not in RESAMPLE:
            raise BudgetPlanError(f"resample must be one of {', '.join(RESAMPLE)}, got {resample!r}")
        self._sampler = get_sampler(sampler or self.strategy.sampler)
        if plan is not None and not self.strategy.planned:
            raise BudgetPlanError(f"strategy {strategy!r} makes its own choices at fit time; leave out plan=")
        self.device = device
        self.budget = budget
        self.seed = seed
        self.resample = resample
        self.sampler = self._sampler.name
        self.example_input = example_input
        self.importance = importance
        self.solve_options = solve_options
        self._plan_source = plan
        self.plan: Plan | None = plan if isinstance(plan, Plan) else None
        self._guard = SelectionGuard()
        self._channels = ChannelSelection(self._guard)
        self._norms: list[nn.Module] = []
        self._lean: LeanAutograd | None = None
        self._meter: SavedTensorMeter | None = None
        self._open = False  # the lean forward and the meter are active
        self._drawn_at: tuple[int, int] | None = None
        self._restored: dict[str, Any] | None = None
        self._drawing: Problem | None = None  # what TraDy draws from each epoch
        self._warned_of_batch = self._warned_of_saved = False
        planner_options(**solve_options)  # an unknown option fails here, not at fit time
        self.saved_bytes_per_sample: float | None = None

    # --- setup: plan, check, freeze -------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._meter = SavedTensorMeter(pl_module)
        if self.strategy.dense:
            self.plan = dense_plan(self._problem(trainer, pl_module))
            return  # stock training: nothing frozen, BatchNorm statistics train too
        if not self.strategy.planned:
            # every rank computes the same: tracing and the draws are deterministic
            self._drawing = problem = self._problem(trainer, pl_module)
            plan, prefix = None, ""
            # name -> (input channels, planned count, the bias parameter after it)
            trained = {layer.name: (layer.in_channels, 0, layer.bias_param) for layer in self.strategy.layers(problem)}
            biases = self.strategy.biases(problem)
        else:
            plan = self._resolve_plan(trainer, pl_module)
            prefix = locate(plan, pl_module)
            trained = {
                layer.name: (layer.total_channels, layer.channels, layer.bias_param)
                for layer in plan.layers
                if layer.channels
            }
            biases = [layer.bias_param for layer in plan.layers if layer.bias]
        modules = dict(pl_module.named_modules())
        params = dict(pl_module.named_parameters())
        for param in pl_module.parameters():
            param.requires_grad_(False)
        self._channels.layers.clear()
        for name, (total, count, _) in trained.items():
            module = modules[prefix + name]
            weight = cast(nn.Parameter, module.weight)
            weight.requires_grad_(True)
            self._channels.add(prefix + name, TrainedLayer(weight, total, int(getattr(module, "groups", 1)), count))
        for bias in biases:
            if bias:
                params[prefix + bias].requires_grad_(True)
        self._norms = [m for m in pl_module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self._keep_norms_frozen()
        warn_of_norm_gain(modules, {prefix + n: prefix + b[: -len(".bias")] for n, (_, _, b) in trained.items() if b})
        self.plan = plan
        self._lean = LeanAutograd(pl_module, self.selection)
        if self._restored is not None:
            self._apply_restored()

    def _problem(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Problem:
        device = load_device(self.device or "cortex-m7")
        costs = layer_costs(
            pl_module,
            example_input(trainer, pl_module, self.example_input),
            device,
            model_name=type(pl_module).__name__,
        )
        check_flash(costs, device)
        options = {**self.solve_options, **self.strategy.planner_overrides(costs)}
        if self.budget is not None:
            options["budget"] = self.budget
        return Problem(costs, device, resolve_importance(self.importance, costs), planner_options(**options))

    def _resolve_plan(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Plan:
        if isinstance(self._plan_source, Plan):
            return self._plan_source
        if self._plan_source is not None:
            return Plan.load(self._plan_source)

        def solve() -> Plan:
            problem = self._problem(trainer, pl_module)
            return plan_from_costs(problem.costs, problem.device, problem.importance, problem.options)

        return plan_on_every_rank(trainer, solve)

    def _keep_norms_frozen(self) -> None:
        # the planner never trains BatchNorm statistics: they stay in eval mode all fit long
        for norm in self._norms:
            norm.eval()

    # --- fit ---------------------------------------------------------------------------

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._guard.attach(list(trainer.optimizers))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._keep_norms_frozen()
        if self.resample == "epoch" or self._drawn_at is None:
            self._draw(trainer.current_epoch, 0)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._keep_norms_frozen()
        if self.resample == "step" and self._drawn_at != (trainer.current_epoch, trainer.global_step):
            self._draw(trainer.current_epoch, trainer.global_step)
        assert self._meter is not None
        self._meter.__enter__()
        if self._lean is not None:
            self._lean.__enter__()
        self._open = True
        self._batch_size = batch_size_of(batch)
        self._check_batch(batch)

    def _check_batch(self, batch: Any) -> None:
        tensor = first_tensor(batch)
        if self.plan is None or tensor is None or tensor.dim() == 0:
            return
        warning = self.plan.check_batch(tuple(tensor.shape[1:]), int(tensor.shape[0]))
        if warning is not None and not self._warned_of_batch:
            self._warned_of_batch = True
            rank_zero_warn(warning)

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        self._close_forward()

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if not self._sampler.observes:
            return  # no gradient norms to compute
        for name, trained in self._channels.layers.items():
            grad = trained.weight.grad
            if grad is not None and name in self._sampler.scores and name in self.selection:
                norms = channel_norms(grad, trained.total, trained.groups).cpu()
                self._sampler.observe(name, self.selection[name].cpu(), norms)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._close_forward()
        if self.saved_bytes_per_sample is not None:
            pl_module.log(
                "budgetplan/saved_bytes_per_sample",
                self.saved_bytes_per_sample,
                on_step=True,
                on_epoch=False,
                prog_bar=True,
                batch_size=self._batch_size,
            )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self.plan is not None
        metrics = {
            "budgetplan/predicted_bytes": float(self.plan.predicted.peak_bytes),
            "budgetplan/budget_bytes": float(self.plan.budget_bytes),
            "budgetplan/trained_fraction": self.trained_fraction(),
            "budgetplan/coverage": self.coverage(),
        }
        pl_module.log_dict(metrics, on_step=False, on_epoch=True)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._close_forward()
        self._guard.detach()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._close_forward()
        self._guard.detach()

    def _close_forward(self) -> None:
        if self._open and self._meter is not None:
            if self._lean is not None:
                self._lean.__exit__(None, None, None)
            self._meter.__exit__(None, None, None)
            self.saved_bytes_per_sample = self._meter.bytes / max(1, self._batch_size)
            self._open = False
            self._check_saved(self.saved_bytes_per_sample)

    def _check_saved(self, measured: float) -> None:
        # the loss's own saved tensors (a few per class) sit on top of the model's
        if self.plan is None or self.strategy.dense or self._warned_of_saved:
            return
        bound = self.plan.host_saved_bound()
        if measured > 1.05 * bound + LOSS_ALLOWANCE:
            self._warned_of_saved = True
            rank_zero_warn(
                f"budgetplan: autograd saved {measured:.0f} bytes per sample, above the {bound:.0f} the plan allows "
                "on this host (float32): an op the cost model does not know, or a layer that could not run lean, "
                "keeps more than planned; the device would exceed its budget"
            )

    # --- channel draws -------------------------------------------------------------------

    def _draw(self, epoch: int, step: int) -> None:
        drawn = self._strategy_draw(epoch, step) if self._drawing is not None else {}
        for position, (name, trained) in enumerate(self._channels.layers.items()):
            total = trained.total
            if self._channels.start(name):
                self._sampler.track(name, total)
            if self._drawing is not None:
                idx = torch.tensor(drawn.get(name, []), dtype=torch.long)
            else:
                if self._sampler.keeps and name in self.selection:
                    continue  # chosen once, kept
                seed = draw_seed(self.seed, epoch, step, position)
                idx = self._sampler.draw(name, trained.weight, total, trained.groups, trained.count, seed)
            self._channels.select(name, idx)
        self._drawn_at = (epoch, step)

    def _strategy_draw(self, epoch: int, step: int) -> dict[str, list[int]]:
        problem = self._drawing
        assert problem is not None
        costs, device, importance, options = problem.costs, problem.device, problem.importance, problem.options
        choices, drawn = self.strategy.draw(problem, draw_seed(self.seed, epoch, step, -1))
        required = self.strategy.required(problem)
        solution = Solution(
            choices, "drawn", objective(costs, importance, options, choices), self.strategy.name, 0.0, required
        )
        self.plan = plan_from_choices(costs, device, importance, options, solution)
        return drawn

    @property
    def selection(self) -> dict[str, Tensor]:
        """Layer name -> the input channels it trains now (the lean backward reads this dict)."""
        return self._channels.current

    def trained_fraction(self) -> float:
        """Fraction of the trained layers' weights trained under the current selection."""
        return 1.0 if self.strategy.dense else self._channels.trained_fraction()

    def coverage(self) -> float:
        """Fraction of the trained layers' input channels trained at least once so far."""
        return 1.0 if self.strategy.dense else self._channels.coverage()

    # --- checkpoints ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "strategy": self.strategy.name,
            "resample": self.resample,
            "sampler": self.sampler,
            "drawn_at": self._drawn_at,
            **self._channels.state_dict(),
            "scores": self._sampler.state_dict(),
            "plan": self.plan.to_dict() if self.plan is not None else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seed = state_dict["seed"]
        self._restored = state_dict
        if self._channels.layers:
            self._apply_restored()

    def _apply_restored(self) -> None:
        state = self._restored
        assert state is not None
        self._restored = None
        self._drawn_at = tuple(state["drawn_at"]) if state["drawn_at"] is not None else None  # type: ignore[assignment]
        if self._drawing is not None and state["plan"] is not None:
            self.plan = Plan.from_dict(state["plan"], source="the checkpoint")  # this epoch's draw
        for name in self._channels.load_state_dict(state):
            self._sampler.scores[name] = torch.tensor(state["scores"][name])
