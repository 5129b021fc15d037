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

from dataclasses import dataclass
from typing import Any, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from budgetplan.errors import BudgetPlanError, InfeasibleError, ModelError, PlanError, ProfileError
from budgetplan.importance import Importance
from budgetplan.plan import LayerPlan, Plan, list_problems
from budgetplan.sampling import SAMPLERS, draw_channels, draw_seed
from budgetplan.sparse.channels import channel_norms, weight_mask
from budgetplan.sparse.exact import SelectionGuard
from budgetplan.sparse.lean import LeanAutograd
from budgetplan.sparse.meter import SavedTensorMeter

RESAMPLE = ("epoch", "step", "never")
_ERRORS: dict[str, type[BudgetPlanError]] = {
    e.__name__: e for e in (InfeasibleError, ModelError, PlanError, ProfileError)
}
_PLANNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class _Trained:
    """A layer whose weight trains some input channels."""

    plan: LayerPlan
    weight: nn.Parameter
    groups: int


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
        resample: ``"epoch"`` (TraDy), ``"step"`` or ``"never"`` (a static subset).
        sampler: ``"uniform"``, ``"gradient"`` or ``"magnitude"`` (``budgetplan.sampling``).
        example_input: a batch to trace the model with when solving.
        importance: importance YAML file for solving (default: the documented prior).
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
        resample: str = "epoch",
        sampler: str = "uniform",
        example_input: Any = None,
        importance: str | Importance | None = None,
        **solve_options: Any,
    ) -> None:
        if resample not in RESAMPLE:
            raise BudgetPlanError(f"resample must be one of {', '.join(RESAMPLE)}, got {resample!r}")
        if sampler not in SAMPLERS:
            raise BudgetPlanError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        self.device = device
        self.budget = budget
        self.seed = seed
        self.resample = resample
        self.sampler = sampler
        self.example_input = example_input
        self.importance = importance
        self.solve_options = solve_options
        self._plan_source = plan
        self.plan: Plan | None = plan if isinstance(plan, Plan) else None
        self.selection: dict[str, Tensor] = {}
        self._layers: dict[str, _Trained] = {}
        self._norms: list[nn.Module] = []
        self._guard = SelectionGuard()
        self._lean: LeanAutograd | None = None
        self._meter: SavedTensorMeter | None = None
        self._open = False  # the lean forward and the meter are active
        self._drawn_at: tuple[int, int] | None = None
        self._seen: dict[str, Tensor] = {}
        self._scores: dict[str, Tensor] = {}
        self._restored: dict[str, Any] | None = None
        self.saved_bytes_per_sample: float | None = None

    # --- setup: plan, check, freeze -------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        plan = self._resolve_plan(trainer, pl_module)
        prefix = _locate(plan, pl_module)
        modules = dict(pl_module.named_modules())
        params = dict(pl_module.named_parameters())
        for param in pl_module.parameters():
            param.requires_grad_(False)
        self._layers = {}
        for layer in plan.layers:
            if layer.channels:
                module = modules[prefix + layer.name]
                weight = cast(nn.Parameter, module.weight)
                weight.requires_grad_(True)
                self._layers[prefix + layer.name] = _Trained(layer, weight, int(getattr(module, "groups", 1)))
            if layer.bias and layer.bias_param:
                params[prefix + layer.bias_param].requires_grad_(True)
        self._norms = [m for m in pl_module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self._keep_norms_frozen()
        self.plan = plan
        self._lean = LeanAutograd(pl_module, self.selection)
        self._meter = SavedTensorMeter(pl_module)
        if self._restored is not None:
            self._apply_restored()

    def _resolve_plan(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Plan:
        if isinstance(self._plan_source, Plan):
            return self._plan_source
        if self._plan_source is not None:
            return Plan.load(self._plan_source)
        data: dict[str, Any] | None = None
        failure: BudgetPlanError | None = None
        if trainer.is_global_zero:
            from budgetplan.planner import solve

            options = dict(self.solve_options)
            if self.budget is not None:
                options["budget"] = self.budget
            try:
                plan = solve(
                    pl_module,
                    self._example(trainer, pl_module),
                    self.device or "cortex-m7",
                    importance=self.importance,
                    model_name=type(pl_module).__name__,
                    **options,
                )
                data = plan.to_dict()
            except BudgetPlanError as err:  # every rank must hear of it, or the others wait forever
                failure, data = err, {"error": str(err), "kind": type(err).__name__}
        # every rank trains with rank 0's plan
        data = trainer.strategy.broadcast(data, src=0)
        assert data is not None
        if "error" in data:
            raise failure or _ERRORS.get(data["kind"], BudgetPlanError)(data["error"])
        return Plan.from_dict(data, source="the solved plan")

    def _example(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Any:
        if self.example_input is not None:
            return self.example_input
        if pl_module.example_input_array is not None:
            return pl_module.example_input_array
        loader = trainer.fit_loop._data_source.dataloader()
        batch = next(iter(loader))
        tensor = _first_tensor(batch)
        if tensor is None:
            raise BudgetPlanError(
                "BudgetPlanCallback: no example input to plan with; pass example_input=, set "
                "example_input_array on the LightningModule, or give plan="
            )
        return tensor[:1]

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
        assert self._lean is not None and self._meter is not None
        self._meter.__enter__()
        self._lean.__enter__()
        self._open = True
        self._batch_size = _batch_size(batch)

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        self._close_forward()

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self.sampler != "gradient":
            return
        for name, trained in self._layers.items():
            grad = trained.weight.grad
            if grad is not None and name in self._scores:
                idx = self.selection[name].cpu()
                norms = channel_norms(grad, trained.plan.total_channels, trained.groups).cpu()
                self._scores[name][idx] += norms[idx]

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
        if self._open and self._lean is not None and self._meter is not None:
            self._lean.__exit__(None, None, None)
            self._meter.__exit__(None, None, None)
            self.saved_bytes_per_sample = self._meter.bytes / max(1, self._batch_size)
            self._open = False

    # --- channel draws -------------------------------------------------------------------

    def _draw(self, epoch: int, step: int) -> None:
        for position, (name, trained) in enumerate(self._layers.items()):
            weight, groups = trained.weight, trained.groups
            total, count = trained.plan.total_channels, trained.plan.channels
            if name not in self._seen:
                self._seen[name] = torch.zeros(total, dtype=torch.bool)
                self._scores[name] = torch.zeros(total)
            scores = None
            if self.sampler == "magnitude":
                if name in self.selection:
                    continue  # chosen once, kept
                scores = channel_norms(weight, total, groups).cpu()
            elif self.sampler == "gradient":
                scores = self._scores[name].clone()
                tried = scores > 0
                if tried.any():
                    scores[~tried] = scores[tried].max()  # channels not tried lately are favoured
                self._scores[name].zero_()
            idx = draw_channels(self.sampler, total, count, draw_seed(self.seed, epoch, step, position), scores)
            self._seen[name][idx] = True
            idx = idx.to(weight.device)
            self.selection[name] = idx
            if count < total:
                self._guard.set_mask(weight, weight_mask(weight.shape, idx, groups))
        self._drawn_at = (epoch, step)

    def trained_fraction(self) -> float:
        """Fraction of the planned layers' weights trained under the current selection."""
        if not self._layers:
            return 0.0
        total = sum(t.weight.numel() for t in self._layers.values())
        trained = sum(t.plan.channels * t.weight.numel() // t.plan.total_channels for t in self._layers.values())
        return trained / total

    def coverage(self) -> float:
        """Fraction of the planned layers' input channels trained at least once so far."""
        seen = sum(int(s.sum()) for s in self._seen.values())
        total = sum(s.numel() for s in self._seen.values())
        return seen / total if total else 0.0

    # --- checkpoints ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "resample": self.resample,
            "sampler": self.sampler,
            "drawn_at": self._drawn_at,
            "selection": {k: v.cpu().tolist() for k, v in self.selection.items()},
            "seen": {k: v.nonzero().squeeze(1).tolist() for k, v in self._seen.items()},
            "scores": {k: v.tolist() for k, v in self._scores.items()},
            "plan": self.plan.to_dict() if self.plan is not None else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seed = state_dict["seed"]
        self._restored = state_dict
        if self._layers:
            self._apply_restored()

    def _apply_restored(self) -> None:
        state = self._restored
        assert state is not None
        self._restored = None
        self._drawn_at = tuple(state["drawn_at"]) if state["drawn_at"] is not None else None  # type: ignore[assignment]
        for name, trained in self._layers.items():
            if name not in state["selection"]:
                continue
            weight = trained.weight
            idx = torch.tensor(state["selection"][name], dtype=torch.long, device=weight.device)
            self.selection[name] = idx
            self._seen[name] = torch.zeros(trained.plan.total_channels, dtype=torch.bool)
            self._seen[name][state["seen"][name]] = True
            self._scores[name] = torch.tensor(state["scores"][name])
            if trained.plan.channels < trained.plan.total_channels:
                self._guard.set_mask(weight, weight_mask(weight.shape, idx, trained.groups), reset=False)


def _locate(plan: Plan, pl_module: nn.Module) -> str:
    """The module-name prefix under which the plan's layers sit in ``pl_module``.

    A plan solved for ``mobilenet_v2`` applies to a LightningModule that holds it as
    ``self.net``; the prefix is then ``"net."``. Fails with the mismatched layers.
    """
    first = plan.layers[0].name
    names = [n for n, _ in pl_module.named_modules()]
    prefixes = [n[: -len(first)] for n in names if n == first or n.endswith("." + first)]
    best: list[str] | None = None
    for prefix in prefixes or [""]:
        found = [
            (n[len(prefix) :], tuple(m.weight.shape))
            for n, m in pl_module.named_modules()
            if n.startswith(prefix) and isinstance(m, _PLANNABLE)
        ]
        problems = plan.mismatches(found)
        if not problems:
            return prefix
        if best is None or len(problems) < len(best):
            best = problems
    assert best is not None
    raise PlanError(f"the plan for {plan.model} does not match {type(pl_module).__name__}: {list_problems(best)}")


def _first_tensor(batch: Any) -> Tensor | None:
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (list, tuple)):
        return next((t for t in map(_first_tensor, batch) if t is not None), None)
    if isinstance(batch, dict):
        return next((t for t in map(_first_tensor, batch.values()) if t is not None), None)
    return None


def _batch_size(batch: Any) -> int:
    tensor = _first_tensor(batch)
    return int(tensor.shape[0]) if tensor is not None and tensor.dim() > 0 else 1
