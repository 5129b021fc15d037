"""Measuring layer importance by fine-tuning: TraDy's reweighted gradient norm.

For input channel ``c`` of layer ``l`` (docs/importance.md; Quélennec et al. 2026, §3):

    RGN_c = ‖∂L/∂W_l[:, c]‖₂ / (C_W + C_A)

with ``C_W`` the weight elements and ``C_A`` the input elements (``H·W``) of one channel:
the gradient signal per element of memory the channel costs. A layer's weight importance
is the sum over its channels, accumulated over every optimizer step of a short dense
fine-tuning; its bias importance is ``‖∂L/∂b‖₂ / C_out`` likewise. The model given is
not changed: a copy is fine-tuned.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from budgetplan.costs.build import layer_costs
from budgetplan.costs.table import CostTable
from budgetplan.files import write_atomic
from budgetplan.plan.names import without_prefix
from budgetplan.planning.importance import TOP_SHARE, Importance, ranking, top_layers
from budgetplan.training.channels import channel_norms


class ImportanceMeter(Callback):
    """Accumulates reweighted gradient norms per input channel at each optimizer step
    (gradients are all-reduced by then, so every DDP rank measures the same)."""

    def __init__(self, costs: CostTable, prefix: str = "") -> None:
        self.costs = costs
        self.prefix = prefix
        self.channels: dict[str, Tensor] = {layer.name: torch.zeros(layer.in_channels) for layer in costs.layers}
        self.bias: dict[str, float] = dict.fromkeys(self.channels, 0.0)
        self.steps = 0

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        modules = dict(pl_module.named_modules())
        params = dict(pl_module.named_parameters())
        for layer in self.costs.layers:
            module = modules[self.prefix + layer.name]
            grad = module.weight.grad
            if grad is not None:
                norms = channel_norms(grad, layer.in_channels, layer.groups).cpu()
                per_channel = layer.weight_elements_per_channel + layer.activation_elements_per_channel
                self.channels[layer.name] += norms / per_channel
            bias = params.get(self.prefix + layer.bias_param) if layer.bias_param else None
            if bias is not None and bias.grad is not None:
                self.bias[layer.name] += float(bias.grad.norm()) / max(1, layer.bias_elements)
        self.steps += 1

    def importance(self, source: str) -> Importance:
        weight = {name: float(scores.sum()) for name, scores in self.channels.items()}
        return Importance(source, weight, dict(self.bias)).normalised()


@dataclass
class MeasuredImportance:
    """Importance measured on data, with what it was measured on."""

    importance: Importance
    channels: dict[str, list[float]]
    steps: int
    data: str

    def ranking(self) -> list[tuple[str, float, float]]:
        """Layers by share of the total, most important first, with cumulative share."""
        return ranking(self.importance)

    def top_layers(self, share: float = TOP_SHARE) -> list[str]:
        """The fewest most important layers that hold ``share`` of the total."""
        return top_layers(self.importance, share)

    def to_dict(self, channels: bool = True) -> dict[str, Any]:
        """The importance YAML; ``channels`` adds every input channel's score."""
        data = {
            "source": self.importance.source,
            "measure": "reweighted gradient norm (TraDy): sum over input channels of ||dL/dW[:, c]|| / (C_W + C_A)",
            "data": self.data,
            "steps": self.steps,
            "layers": {
                name: {"weight": self.importance.weight[name], "bias": self.importance.bias.get(name, 0.0)}
                for name in self.importance.weight
            },
            "ranking": [{"layer": n, "share": s, "cumulative": c} for n, s, c in self.ranking()],
            f"top_layers_{round(TOP_SHARE * 100)}": self.top_layers(),
            "in_channels": {name: len(scores) for name, scores in self.channels.items()},
        }
        if channels:
            data["channels"] = self.channels
        return data

    def save(self, path: str | Path, channels: bool = True) -> None:
        import yaml

        write_atomic(Path(path), yaml.safe_dump(self.to_dict(channels), sort_keys=False))


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
) -> MeasuredImportance:
    """Fine-tune a copy of ``model`` densely for ``steps`` optimizer steps and measure
    each layer's reweighted gradient norm.

    ``model`` is a LightningModule (its own ``training_step`` and optimizer; ``data`` a
    DataLoader or DataModule, or None for its own dataloaders) or a plain classifier with
    ``data`` a DataLoader of ``(x, y)`` batches (cross-entropy, SGD with momentum).
    """
    work = copy.deepcopy(model)
    for param in work.parameters():
        param.requires_grad_(True)
    module = work if isinstance(work, pl.LightningModule) else _Classifier(work, lr)
    if example_input is None:
        example_input = getattr(module, "example_input_array", None)
    if example_input is None:
        if data is None or not hasattr(data, "__iter__"):
            raise ValueError("measure_importance needs example_input= when data is not a DataLoader")
        example_input = next(iter(data))[0][:1]
    costs = layer_costs(module, example_input)
    meter = ImportanceMeter(costs)
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
    source = f"measured: reweighted gradient norm, {meter.steps} steps on {data_name}"
    importance = meter.importance(source)
    prefix = "model." if isinstance(module, _Classifier) else ""  # names as in the user's model
    importance = Importance(
        importance.source,
        without_prefix(importance.weight, prefix),
        without_prefix(importance.bias, prefix),
    )
    channels = {n: v.tolist() for n, v in without_prefix(meter.channels, prefix).items()}
    return MeasuredImportance(importance, channels, meter.steps, data_name)
