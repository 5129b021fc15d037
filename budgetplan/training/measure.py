"""Measuring layer importance on data: gradient energy, or TraDy's reweighted gradient norm
(Sparse Update's contribution analysis, the third ``Measure``, is in ``contribution.py``).

Two measures of what training a layer's input channel ``c`` (or its bias) is worth, both
read from the gradients of dense backward passes (docs/importance.md):

* ``energy`` (the default): ``‖∂L/∂W_l[:, c]‖₂²``, and ``‖∂L/∂b_l‖₂²`` for the bias,
  averaged over the batches. To first order, one SGD step of learning rate ``η`` on a
  parameter group lowers the loss by ``η·‖g‖²``: the score is that expected decrease per
  unit learning rate, on one scale for weight channels and biases, and a plan's objective
  adds the decreases of what it trains.
* ``rgn``: TraDy's reweighted gradient norm (Quélennec et al. 2026, §3),
  ``RGN_c = ‖∂L/∂W_l[:, c]‖₂ / (C_W + C_A)`` with ``C_W`` the weight elements and ``C_A``
  the input elements (``H·W``) of one channel: gradient signal per element of memory;
  the bias scores ``‖∂L/∂b‖₂ / C_out``, summed over the steps.

A layer's weight importance is the sum over its channels. ``measure_importance``
fine-tunes a copy of the model (the model given is not changed); ``importance_on_batches``
reads the gradients of the module as it is, in eval mode, with nothing updated: what the
callback measures at setup.
"""

from __future__ import annotations

import copy
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
from budgetplan.costs.table import CostTable, LayerCost
from budgetplan.enums import EnumStr
from budgetplan.errors import BudgetPlanError
from budgetplan.files import data_text, write_atomic
from budgetplan.names import without_prefix
from budgetplan.planning.importance import ENERGY_UNIT, TOP_SHARE, Importance, ranking, top_layers
from budgetplan.training.batches import first_batch
from budgetplan.training.channels import channel_norms
from budgetplan.training.contribution import contributions_on_batches
from budgetplan.training.probe import probing, step_loss
from budgetplan.training.trials import HELD_OUT


class Measure(EnumStr):
    """What a measured importance scores."""

    ENERGY = "energy"
    RGN = "rgn"
    CONTRIBUTION = "contribution"

    def describe(self) -> str:
        if self is Measure.ENERGY:
            return "gradient energy: first-order loss decrease per SGD step per unit learning rate, ||dL/dW[:, c]||^2"
        if self is Measure.CONTRIBUTION:
            return (
                "contribution analysis (Sparse Update): held-out loss decrease of a short fine-tune of each "
                "layer's weight at 1/8, 1/4, 1/2 and all input channels, and of the biases of the last k layers"
            )
        return "reweighted gradient norm (TraDy): sum over input channels of ||dL/dW[:, c]|| / (C_W + C_A)"


def channel_scores(grad: Tensor, layer: LayerCost, measure: Measure) -> Tensor:
    """One score per input channel of ``layer`` from its weight gradient."""
    norms = channel_norms(grad, layer.in_channels, layer.groups).cpu()
    if measure is Measure.ENERGY:
        return norms.pow(2)
    return norms / (layer.weight_elements_per_channel + layer.activation_elements_per_channel)


def bias_score(grad: Tensor, layer: LayerCost, measure: Measure) -> float:
    """The score of ``layer``'s bias from its gradient."""
    if measure is Measure.ENERGY:
        return float(grad.detach().float().pow(2).sum())
    return float(grad.detach().float().norm()) / max(1, layer.bias_elements)


class ImportanceMeter(Callback):
    """Accumulates per-channel and bias scores at each optimizer step (gradients are
    all-reduced by then, so every DDP rank measures the same)."""

    def __init__(self, costs: CostTable, prefix: str = "", measure: Measure = Measure.ENERGY) -> None:
        self.costs = costs
        self.prefix = prefix
        self.measure = Measure.from_str(measure)
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
                self.channels[layer.name] += channel_scores(weight.grad, layer, self.measure)
            # the layer's own bias, or the shift of the frozen norm after it (the folded bias)
            bias = params.get(self.prefix + layer.bias_param) if layer.bias_param else None
            if bias is not None and bias.grad is not None:
                self.bias[layer.name] += bias_score(bias.grad, layer, self.measure)
        self.steps += 1

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        self.observe(pl_module)

    def importance(self, source: str) -> Importance:
        # energy is a mean per step (the expected decrease of one step); TraDy sums
        per_step = 1.0 / max(1, self.steps) if self.measure is Measure.ENERGY else 1.0
        weight = {name: float(scores.sum()) * per_step for name, scores in self.channels.items()}
        bias = {name: score * per_step for name, score in self.bias.items()}
        unit = ENERGY_UNIT if self.measure is Measure.ENERGY else ""
        return Importance(source, weight, bias, unit).normalised()

    def total(self) -> float:
        """The summed score of every weight channel and bias (energy: per step)."""
        per_step = 1.0 / max(1, self.steps) if self.measure is Measure.ENERGY else 1.0
        return (sum(float(c.sum()) for c in self.channels.values()) + sum(self.bias.values())) * per_step


@dataclass
class MeasuredImportance:
    """Importance measured on data, with what it was measured on."""

    importance: Importance
    channels: dict[str, list[float]]
    steps: int
    data: str
    measure: Measure = Measure.ENERGY

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
            "measure": self.measure.describe(),
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
    measure: str = "energy",
) -> MeasuredImportance:
    """Fine-tune a copy of ``model`` densely for ``steps`` optimizer steps and measure
    each layer's importance along the way (``measure``: ``"energy"`` or ``"rgn"``); or,
    for ``"contribution"``, run Sparse Update's contribution analysis on the copy with
    trials of ``steps`` steps (``budgetplan.training.contribution``).

    ``model`` is a LightningModule (its own ``training_step`` and optimizer; ``data`` a
    DataLoader or DataModule, or None for its own dataloaders) or a plain classifier with
    ``data`` a DataLoader of ``(x, y)`` batches (cross-entropy, SGD with momentum).
    """
    kind = Measure.from_str(measure)
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
    if kind is Measure.CONTRIBUTION:
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
    importance = _unprefixed(meter.importance(_source(kind, meter, f"{meter.steps} steps on {data_name}")), prefix)
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
    return MeasuredImportance(_unprefixed(importance, prefix), {}, steps, data_name, Measure.CONTRIBUTION)


def _source(measure: Measure, meter: ImportanceMeter, what: str) -> str:
    if measure is Measure.ENERGY:
        total = meter.total()
        return f"measured: gradient energy, {what} (total {total:.4g} {ENERGY_UNIT})"
    return f"measured: reweighted gradient norm, {what}"


def importance_on_batches(
    module: pl.LightningModule,
    batches: Iterable[Any],
    costs: CostTable,
    data_name: str,
    measure: str = "energy",
    prefix: str = "",
) -> Importance:
    """The importance of ``costs``' layers from ``module.training_step``'s gradients on
    ``batches``, with nothing updated (norms frozen, as the plan trains them); for
    ``"contribution"``, Sparse Update's trials on them (``contributions_on_batches``)."""
    kind = Measure.from_str(measure)
    if kind is Measure.CONTRIBUTION:
        return contributions_on_batches(module, batches, costs, data_name, prefix)
    meter = ImportanceMeter(costs, prefix, kind)
    with probing(module, requires_grad=True):
        for index, batch in enumerate(batches):
            module.zero_grad(set_to_none=True)
            step_loss(module, batch, index).backward()
            meter.observe(module)
    if meter.steps == 0:
        raise BudgetPlanError(f"no batch to measure importance on ({data_name})")
    return meter.importance(_source(meter.measure, meter, f"{meter.steps} batches of {data_name}"))
