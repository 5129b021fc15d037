"""A small LightningModule and trainer settings shared by the callback tests."""

from __future__ import annotations

import dataclasses

import lightning.pytorch as pl
import torch
from torch import nn

from budgetplan import Plan, solve


class TinyNet(nn.Module):
    """Ordinary, depthwise and pointwise convs with BatchNorm, and a Linear head."""

    def __init__(self, dropout: float = 0.2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(inplace=True),
            nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6(inplace=True),
            nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(16, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.head(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


class TinyModule(pl.LightningModule):
    def __init__(
        self, optimizer: str = "sgd", example: bool = True, dropout: float = 0.2, trainable_only: bool = False
    ) -> None:
        super().__init__()
        self.net = TinyNet(dropout)
        self.optimizer = optimizer
        self.trainable_only = trainable_only  # the README's optimizer: only what requires a gradient
        self.example_input_array = torch.zeros(1, 3, 8, 8) if example else None
        self.steps = 0
        self.trainable_at_configure: set[str] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        self.steps += 1
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        self.trainable_at_configure = {n for n, p in self.named_parameters() if p.requires_grad}
        params = self.parameters()  # frozen ones get no gradient, so no optimizer moves them
        if self.trainable_only:
            params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=0.01, weight_decay=0.1)
        return torch.optim.AdamW(params, lr=0.01, weight_decay=0.1)


def data(n: int = 32, seed: int = 0) -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=generator)
    y = torch.randint(0, 4, (n,), generator=generator)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


def trainer(max_epochs: int, callbacks: list, **kwargs) -> pl.Trainer:
    options = dict(
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        deterministic=True,
    )
    options.update(kwargs)
    return pl.Trainer(**options)


def partial_plan(channels: dict[str, int]) -> Plan:
    """A plan for TinyModule that trains the given input-channel counts (and the head)."""
    module = TinyModule()
    plan = solve(module, torch.zeros(1, 3, 8, 8), "raspberry-pi-4", model_name="TinyModule")
    layers = []
    for layer in plan.layers:
        count = channels.get(layer.name, layer.total_channels if layer.name == "net.head.1" else 0)
        update = "weight" if count else "none"
        layers.append(dataclasses.replace(layer, channels=count, update=update, bias=layer.bias and bool(count)))
    return dataclasses.replace(plan, layers=layers)
