"""Measuring layer importance on data with a registered ``Measure`` (``budgetplan.importance``).

A measure that scores gradients (``energy``, the default; TraDy's ``rgn``) reads the
gradients of dense backward passes: at each step, the norms of each weight gradient's
input-channel slices and of each bias gradient, scored by the measure and summed (a mean
per step where the measure says so). A layer's weight importance is the sum over its
channels. A measure that values choices (``contribution``) runs Sparse Update's trials
(``contribution.py``).

``measure_importance`` fine-tunes a copy of the model (the model given is not changed);
``importance_on_batches`` reads the gradients of the module as it is, in eval mode, with
nothing updated: what the callback measures at setup.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from budgetplan.costs.build import layer_costs
from budgetplan.costs.layers import plannable_layers
from budgetplan.costs.table import CostTable
from budgetplan.errors import BudgetPlanError
from budgetplan.files import data_text, write_atomic
from budgetplan.importance.measure import Measure, get_measure
from budgetplan.importance.scores import TOP_SHARE, Importance, ranking, top_layers
from budgetplan.names import without_prefix
from budgetplan.training.batches import first_batch
from budgetplan.training.channels import channel_norms
from budgetplan.training.contribution import contributions_on_batches
from budgetplan.training.probe import probing, step_loss
from budgetplan.training.trials import HELD_OUT


class ImportanceMeter(Callback):
    """Accumulates per-channel and bias scores at each optimizer step (gradients are
    all-reduced by then, so every DDP rank measures the same)."""

    def __init__(self, costs: CostTable, prefix: str = "", measure: str | Measure = "energy") -> None:
        self.costs = costs
        self.prefix = prefix
        self.measure = get_measure(measure)
        self.channels: dict[str, Tensor] = {layer.name: torch.zeros(layer.in_channels) for layer in costs.layers}
        self.bias: dict[str, float] = dict.fromkeys(self.channels, 0.0)
        self.steps = 0

    def observe(self, module: nn.Module) -> None:
        """Add the scores of the gradients ``module`` holds now."""
        layers = plannable_layers(module)
        params = dict(module.named_parameters())
        for layer in self.costs.layers:
            weight = layers[self.prefix + layer.name].weight
            if weight.grad is not None:
                norms = channel_norms(weight.grad, layer.in_channels, layer.groups).cpu()
                self.channels[layer.name] += self.measure.channel_scores(norms, layer)
            # the layer's own bias, or the shift of the frozen norm after it (the folded bias)
            bias = params.get(self.prefix + layer.bias_param) if layer.bias_param else None
            if bias is not None and bias.grad is not None:
                self.bias[layer.name] += self.measure.bias_score(float(bias.grad.detach().float().norm()), layer)
        self.steps += 1

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        self.observe(pl_module)

    def importance(self, source: str) -> Importance:
        # energy is a mean per step (the expected decrease of one step); TraDy sums
        per_step = self._per_step()
        weight = {name: float(scores.sum()) * per_step for name, scores in self.channels.items()}
        bias = {name: score * per_step for name, score in self.bias.items()}
        unit = self.measure.unit
        return Importance(source, weight, bias, unit).normalised()

    def total(self) -> float:
        """The summed score of every weight channel and bias (energy: per step)."""
        return (sum(float(c.sum()) for c in self.channels.values()) + sum(self.bias.values())) * self._per_step()

    def _per_step(self) -> float:
        return 1.0 / max(1, self.steps) if self.measure.per_step else 1.0

    def source(self, what: str) -> str:
        """The importance source of what the meter measured on ``what``."""
        return self.measure.source(what, self.total())


@dataclass
class MeasuredImportance:
    """Importance measured on data, with what it was measured on."""

    importance: Importance
    channels: dict[str, list[float]]
    steps: int
    data: str
    measure: Measure = dataclasses.field(default_factory=lambda: get_measure("energy"))

    def ranking(self) -> list[tuple[str, float, float]]:
        """Layers by share of the total, most important first, with cumulative share."""
        return ranking(self.importance)

    def top_layers(self, share: float = TOP_SHARE) -> list[str]:
        """The fewest most important layers that hold ``share`` of the total."""
        return top_layers(self.importance, share)

    def to_dict(self, channels: bool = True) -> dict[str, Any]:
        """The importance YAML; ``channels`` adds every input channel's score."""
        data: dict[str, Any] = {
            "source": self.importance.source,
            "measure": self.measure.description,
            "data": self.data,
            "steps": self.steps,
            **({"unit": self.importance.unit, "scale": self.importance.scale} if self.importance.unit else {}),
            "layers": {
                name: {
                    "weight": self.importance.weight[name],
                    "bias": self.importance.bias.get(name, 0.0),
                    **({"curve": self.importance.curves[name]} if name in self.importance.curves else {}),
                }
                for name in self.importance.weight
            },
            **({"bias_depths": self.importance.bias_depths} if self.importance.bias_depths else {}),
            "ranking": [{"layer": n, "share": s, "cumulative": c} for n, s, c in self.ranking()],
            f"top_layers_{round(TOP_SHARE * 100)}": self.top_layers(),
            "in_channels": {name: len(scores) for name, scores in self.channels.items()},
        }
        if channels:
            data["channels"] = self.channels
        return data

    def save(self, path: str | Path, channels: bool = True) -> None:
        """Write the importance file atomically: YAML, or JSON for a ``.json`` name."""
        write_atomic(Path(path), data_text(self.to_dict(channels), path))


class _Classifier(pl.LightningModule):
    """A plain classifier and loader, fine-tuned densely with SGD."""

    def __init__(self, model: nn.Module, lr: float) -> None:
        super().__init__()
        self.model, self.lr = model, lr

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def measure_importance(
    model: nn.Module,
    data: Any = None,
    steps: int = 100,
    example_input: Tensor | None = None,
    lr: float = 0.005,
    data_name: str = "user data",
    measure: str | Measure = "energy",
) -> MeasuredImportance:
    """Fine-tune a copy of ``model`` densely for ``steps`` optimizer steps and measure
    each layer's importance along the way (``measure``: ``"energy"`` or ``"rgn"``); or,
    for ``"contribution"``, run Sparse Update's contribution analysis on the copy with
    trials of ``steps`` steps (``budgetplan.training.contribution``).

    ``model`` is a LightningModule (its own ``training_step`` and optimizer; ``data`` a
    DataLoader or DataModule, or None for its own dataloaders) or a plain classifier with
    ``data`` a DataLoader of ``(x, y)`` batches (cross-entropy, SGD with momentum).
    """
    kind = get_measure(measure)
    work = copy.deepcopy(model)
    for param in work.parameters():
        param.requires_grad_(True)
    module = work if isinstance(work, pl.LightningModule) else _Classifier(work, lr)
    if example_input is None:
        example_input = getattr(module, "example_input_array", None)
    if example_input is None:
        if data is None or not hasattr(data, "__iter__"):
            raise ValueError("measure_importance needs example_input= when data is not a DataLoader")
        empty = "measure_importance: the data loader yields no batch; give it at least one batch of data"
        example_input = first_batch(data, empty)[0][:1]
    costs = layer_costs(module, example_input)
    prefix = "model." if isinstance(module, _Classifier) else ""  # names as in the user's model
    if kind.values_choices:
        return _contribution(module, data, costs, steps, data_name, prefix)
    meter = ImportanceMeter(costs, measure=kind)
    trainer = pl.Trainer(
        max_steps=steps,
        callbacks=[meter],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, data)
    importance = _unprefixed(meter.importance(meter.source(f"{meter.steps} steps on {data_name}")), prefix)
    channels = {n: v.tolist() for n, v in without_prefix(meter.channels, prefix).items()}
    return MeasuredImportance(importance, channels, meter.steps, data_name, kind)


def _unprefixed(importance: Importance, prefix: str) -> Importance:
    def bare(values: dict[str, Any]) -> dict[str, Any]:
        return without_prefix(values, prefix)

    return Importance(
        importance.source,
        bare(importance.weight),
        bare(importance.bias),
        importance.unit,
        importance.scale,
        bare(importance.curves),
        importance.bias_depths,
    )


def _contribution(
    module: pl.LightningModule, data: Any, costs: CostTable, steps: int, data_name: str, prefix: str
) -> MeasuredImportance:
    if data is None:
        data = module.train_dataloader()
    elif isinstance(data, pl.LightningDataModule):
        data.setup("fit")
        data = data.train_dataloader()
    batches = list(itertools.islice(iter(data), steps + HELD_OUT))
    importance = contributions_on_batches(module, batches, costs, data_name, steps=steps)
    return MeasuredImportance(_unprefixed(importance, prefix), {}, steps, data_name, get_measure("contribution"))


def importance_on_batches(
    module: pl.LightningModule,
    batches: Iterable[Any],
    costs: CostTable,
    data_name: str,
    measure: str | Measure = "energy",
    prefix: str = "",
) -> Importance:
    """The importance of ``costs``' layers from ``module.training_step``'s gradients on
    ``batches``, with nothing updated (norms frozen, as the plan trains them); for
    ``"contribution"``, Sparse Update's trials on them (``contributions_on_batches``)."""
    kind = get_measure(measure)
    if kind.values_choices:
        return contributions_on_batches(module, batches, costs, data_name, prefix)
    meter = ImportanceMeter(costs, prefix, kind)
    with probing(module, requires_grad=True):
        for index, batch in enumerate(batches):
            module.zero_grad(set_to_none=True)
            step_loss(module, batch, index).backward()
            meter.observe(module)
    if meter.steps == 0:
        raise BudgetPlanError(f"no batch to measure importance on ({data_name})")
    return meter.importance(meter.source(f"{meter.steps} batches of {data_name}"))
