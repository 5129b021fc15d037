"""The lean backward and the callback on a small ViT and a small causal LM: gradients of
the selected input features equal stock autograd's, and nothing outside the selection moves."""

import dataclasses

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from budgetplan import BudgetPlanCallback, solve
from budgetplan.costs.layers import plannable_layers
from budgetplan.training.lean import LeanAutograd

from ..helpers.tiny_modules import trainer
from ..helpers.tiny_transformers import small_lm, small_vit

MODELS = {"vit": small_vit, "lm": small_lm}


def _selection(model: nn.Module, share: float = 0.5) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        name: torch.randperm(layer.in_channels, generator=generator)[: max(1, int(share * layer.in_channels))]
        .sort()
        .values
        for name, layer in plannable_layers(model).items()
    }


@pytest.mark.parametrize("kind", MODELS)
def test_lean_gradients_match_stock_on_the_selection(kind):
    model, x = MODELS[kind]()
    model.train()
    selection = _selection(model)
    layers = plannable_layers(model)
    model.requires_grad_(False)
    for layer in layers.values():
        layer.weight.requires_grad_(True)
    grads = []
    for lean in (False, True):
        model.zero_grad()
        with LeanAutograd(model, selection) if lean else torch.enable_grad():
            out = model(x)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        grads.append({name: layer.weight.grad.clone() for name, layer in layers.items()})
    for name, idx in selection.items():
        stock, lean = grads[0][name], grads[1][name]
        torch.testing.assert_close(lean[:, idx], stock[:, idx], rtol=1e-4, atol=1e-6)
        outside = torch.ones(stock.shape[1], dtype=torch.bool)
        outside[idx] = False
        assert not lean[:, outside].any()  # not computed: exactly zero


class Fit(pl.LightningModule):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.net, example = MODELS[kind]()
        self.example_input_array = example[:1]
        self.kind = kind

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        out = self(x)
        return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.01, weight_decay=0.1)


def _data(kind: str) -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(0)
    if kind == "vit":
        x, y = torch.randn(8, 3, 32, 32, generator=generator), torch.randint(0, 5, (8,), generator=generator)
    else:
        x = torch.randint(0, 50, (8, 12), generator=generator)
        y = torch.randint(0, 50, (8, 12), generator=generator)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)


def _half_plan(module: Fit):
    """A plan that trains half the input features of every layer, with its bias."""
    plan = solve(module.net, module.example_input_array, "raspberry-pi-4", model_name=module.kind, batch_size=4)
    layers = [
        dataclasses.replace(layer, channels=layer.total_channels // 2, update="weight", bias=bool(layer.bias_param))
        for layer in plan.layers
    ]
    return dataclasses.replace(plan, layers=layers)


class Probe(Callback):
    """After every step: entries outside the selection, and frozen parameters, unchanged."""

    def __init__(self, budget: BudgetPlanCallback) -> None:
        self.budget = budget
        self.problems: list[str] = []
        self.changed = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before = {n: p.detach().clone() for n, p in pl_module.named_parameters()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        weights = {layer.weight_param: name for name, layer in plannable_layers(pl_module).items()}
        for name, param in pl_module.named_parameters():
            layer = weights.get(name)
            if layer in self.budget.selection:
                outside = torch.ones(param.shape[1], dtype=torch.bool)
                outside[self.budget.selection[layer]] = False
                if not torch.equal(param[:, outside], self.before[name][:, outside]):
                    self.problems.append(f"{name}: entries outside the selection moved")
                self.changed += int(not torch.equal(param[:, ~outside], self.before[name][:, ~outside]))
            elif not param.requires_grad and not torch.equal(param, self.before[name]):
                self.problems.append(f"frozen {name} moved")


@pytest.mark.parametrize("kind", MODELS)
def test_callback_trains_exactly_the_plan(kind):
    pl.seed_everything(0)
    module = Fit(kind)
    budget = BudgetPlanCallback(plan=_half_plan(module), seed=1)
    probe = Probe(budget)
    trainer(2, [budget, probe]).fit(module, _data(kind))
    in_proj = [name for name in budget.selection if name.endswith(".in_proj")]
    assert len(in_proj) == 2  # the query/key/value projection of each block trains
    assert probe.problems == []
    assert probe.changed > 0
    assert budget.saved_bytes_per_sample is not None
