"""The callback's training step, run on the same batches as an exported C library's."""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from budgetplan import BudgetPlanCallback
from budgetplan.plan.model import Plan


class Classifier(pl.LightningModule):
    """Cross-entropy and plain SGD (momentum 0, as the generated step trains)."""

    def __init__(self, net: nn.Module, example: torch.Tensor, lr: float) -> None:
        super().__init__()
        self.net, self.lr, self.example_input_array = net, lr, example

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=self.lr, momentum=0)


def parameters(net: nn.Module) -> np.ndarray:
    """Every conv and linear weight and bias, in the order the C library lists them."""
    values = []
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            values.append(module.weight.detach().flatten())
            if module.bias is not None:
                values.append(module.bias.detach().flatten())
    return torch.cat(values).numpy()


def callback_parameters(net: nn.Module, plan: Plan, inputs: torch.Tensor, labels: torch.Tensor, lr: float, tmp_path):
    """The parameters after ``BudgetPlanCallback`` trained a copy of ``net`` with ``plan``
    on ``inputs`` [steps, batch, ...] and ``labels`` [steps, batch], one batch a step."""
    path = tmp_path / "plan.yaml"
    plan.save(path)
    module = Classifier(copy.deepcopy(net), inputs[0, :1], lr)
    data = torch.utils.data.TensorDataset(inputs.flatten(0, 1), labels.flatten())
    loader = torch.utils.data.DataLoader(data, batch_size=inputs.shape[1], shuffle=False)
    trainer = pl.Trainer(
        max_steps=inputs.shape[0], callbacks=[BudgetPlanCallback(plan=str(path))], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, loader)
    return parameters(module.net)


def worst_relative(got: np.ndarray, net: nn.Module, want: np.ndarray) -> float:
    """The largest difference of ``got`` from ``want`` in each parameter tensor of ``net``,
    relative to that tensor's largest magnitude."""
    worst, start = 0.0, 0
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            for param in (module.weight, module.bias):
                if param is None:
                    continue
                end = start + param.numel()
                scale = max(float(np.abs(want[start:end]).max()), 1e-12)
                worst = max(worst, float(np.abs(got[start:end] - want[start:end]).max()) / scale)
                start = end
    return worst
