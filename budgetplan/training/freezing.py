"""Which parameters of a LightningModule train: a strategy's layers and biases, nothing else.

BatchNorm stays frozen in eval mode for the whole fit, as the planner assumes
(docs/cost-model.md); a frozen norm right after a trained layer scales that layer's
steps, which ``budgetplan.training.fold.warn_of_norm_gain`` reports (docs/training.md).
"""

from __future__ import annotations

from torch import nn

from budgetplan.costs.layers import plannable_layers
from budgetplan.strategies.base import Training
from budgetplan.training.fold import warn_of_norm_gain
from budgetplan.training.selection import TrainedLayer


def train_only(module: nn.Module, training: Training, prefix: str) -> dict[str, TrainedLayer]:
    """Freeze every parameter of ``module`` but the weights and biases ``training`` names
    (under ``prefix``, where the plan's model sits in ``module``); the trained layers."""
    modules = dict(module.named_modules())
    plannable = plannable_layers(module)
    params = dict(module.named_parameters())
    for param in module.parameters():
        param.requires_grad_(False)
    layers = {}
    for layer in training.layers:
        found = plannable[prefix + layer.name]
        found.weight.requires_grad_(True)
        layers[prefix + layer.name] = TrainedLayer(found.weight, layer.total, found.groups, layer.count)
    for bias in training.biases:
        params[prefix + bias].requires_grad_(True)
    norm_after = {
        prefix + layer.name: prefix + layer.bias_param.removesuffix(".bias")
        for layer in training.layers
        if layer.bias_param
    }
    warn_of_norm_gain(modules, norm_after)
    return layers


def batch_norms(module: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers of ``module``, set to eval mode (``keep_in_eval``)."""
    norms: list[nn.Module] = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    keep_in_eval(norms)
    return norms


def keep_in_eval(norms: list[nn.Module]) -> None:
    # Lightning puts the module in train mode at every epoch: the statistics must not move
    for norm in norms:
        norm.eval()
