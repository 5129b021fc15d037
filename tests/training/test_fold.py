"""Folding frozen BatchNorm into convolutions, and the callback's warning when it is not."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torchvision
from torch import nn

from budgetplan import BudgetPlanCallback, fold_batchnorm, solve
from budgetplan.costs.build import layer_costs
from budgetplan.device.profile import load_device
from budgetplan.training.fold import find_folds

from ..helpers.tiny_modules import TinyModule, data, trainer


def _randomise_norms(model: nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator))
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.05)
            module.weight.data.copy_(torch.randn(n, generator=generator))
            module.bias.data.copy_(torch.randn(n, generator=generator))


@pytest.mark.parametrize("arch", ["mobilenet_v2", "resnet18"])
def test_folded_model_computes_the_same_without_norms(arch: str) -> None:
    model = torchvision.models.get_model(arch, weights=None, num_classes=10)
    _randomise_norms(model)
    model.eval()
    convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        fold_batchnorm(model)
        after = model(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)} == convs  # names kept
    assert torch.allclose(before, after, rtol=1e-4, atol=1e-4 * before.abs().max().item())


def test_a_norm_whose_conv_output_is_also_read_elsewhere_stays() -> None:
    class Branch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.norm = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.norm(y) + y  # folding would change the second term

    model = fold_batchnorm(Branch().eval())
    assert isinstance(model.norm, nn.BatchNorm2d)


def test_untraceable_models_fold_sequential_neighbours() -> None:
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x) if x.sum() > 0 else -self.body(x)  # fx cannot trace this

    model = DataDependent()
    _randomise_norms(model)
    model.eval()
    x = torch.rand(1, 3, 8, 8)
    before = model(x)
    fold_batchnorm(model)
    assert isinstance(model.body[1], nn.Identity)
    assert torch.allclose(before, model(x), atol=1e-5)


def test_the_planner_offers_the_folded_bias_as_before() -> None:
    device = load_device("cortex-m7")
    model = TinyModule().net.eval()
    example = torch.zeros(1, 3, 8, 8)
    before = {layer.name: layer.bias_elements for layer in layer_costs(model, example, device).layers}
    folded = layer_costs(fold_batchnorm(model), example, device)
    assert {layer.name: layer.bias_elements for layer in folded.layers} == before
    assert all(layer.bias_param == f"{layer.name}.bias" for layer in folded.layers)


def _fit_warnings(module: TinyModule) -> list[str]:
    callback = BudgetPlanCallback(device="cortex-m7", training_memory=64 * 1024, batch_size=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(1, [callback], limit_train_batches=1, limit_val_batches=0).fit(module, data())
    return [str(w.message) for w in caught if "frozen BatchNorm" in str(w.message)]


def test_callback_warns_of_frozen_norm_gain_and_not_once_folded() -> None:
    torch.manual_seed(0)
    module = TinyModule(dropout=0.0)
    module.net.features[4].running_var.fill_(1e-3 - 1e-5)  # with eps: steps x1000 after the depthwise conv
    (message,) = _fit_warnings(module)
    assert "features.3" in message and "1000x" in message and "fold_batchnorm" in message

    torch.manual_seed(0)
    module = TinyModule(dropout=0.0)
    module.net.features[4].running_var.fill_(1e-3 - 1e-5)
    fold_batchnorm(module.net.eval()).train()
    assert _fit_warnings(module) == []


class SamePadConv(nn.Conv2d):
    """TF "same" padding worked out from the input's shape, as EfficientNet-Lite ports do."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.size()[-2:]
        pad_h = max((math.ceil(height / self.stride[0]) - 1) * self.stride[0] + self.kernel_size[0] - height, 0)
        pad_w = max((math.ceil(width / self.stride[1]) - 1) * self.stride[1] + self.kernel_size[1] - width, 0)
        x = nn.functional.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return nn.functional.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class LiteBlock(nn.Module):
    """Norms called on a conv's output inside ``forward``, not as Sequential neighbours."""

    def __init__(self) -> None:
        super().__init__()
        self._expand_conv = SamePadConv(4, 8, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(8)
        self._depthwise_conv = SamePadConv(8, 8, 3, stride=2, groups=8, bias=False)
        self._bn1 = nn.BatchNorm2d(8)
        self._bn2 = nn.BatchNorm2d(8)  # after an add: nothing to fold into

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self._bn0(self._expand_conv(x)))
        y = self._bn1(self._depthwise_conv(x))
        return self._bn2(y + y.mean())


def test_norms_fold_by_dataflow_and_the_rest_are_named() -> None:
    model = LiteBlock()
    _randomise_norms(model)
    model.eval()
    x = torch.randn(2, 4, 9, 9)
    with pytest.warns(UserWarning, match=r"folded 0 of 3 BatchNorm layers; 3 stay: _bn0: .*example_input"):
        fold_batchnorm(copy.deepcopy(model))  # torch.fx cannot follow it, and says why
    before = model(x)
    with pytest.warns(UserWarning, match=r"folded 2 of 3 BatchNorm layers; 1 stay: _bn2: its input comes from add"):
        fold_batchnorm(model, x[:1])
    assert isinstance(model._bn0, nn.Identity) and isinstance(model._bn1, nn.Identity)
    assert isinstance(model._expand_conv, SamePadConv) and model._expand_conv.bias is not None
    assert torch.allclose(before, model(x), atol=1e-5)


def test_reasons_a_norm_stays() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.norm, self.other = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3), nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.norm(self.norm(y))  # a norm called twice; ``other`` never runs

    folds = find_folds(Shared().eval(), torch.zeros(1, 3, 4, 4))
    assert folds.pairs == () and folds.left == {"norm": "runs 2 times", "other": "never runs in the forward pass"}


@pytest.mark.slow
def test_folded_and_unfolded_models_get_the_same_plan() -> None:
    """On the device the norm's shift is the folded conv's bias: both paths see one problem."""
    model = torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10).eval()
    example = torch.zeros(1, 3, 128, 128)
    unfolded = solve(model, example, "cortex-m7")
    folded = solve(fold_batchnorm(copy.deepcopy(model), example), example, "cortex-m7")
    assert folded.channels() == unfolded.channels()
    assert [layer.bias for layer in folded.layers] == [layer.bias for layer in unfolded.layers]
    assert any(layer.bias for layer in unfolded.layers[:-1])  # biases are trained, not only the head's
    assert folded.predicted.peak_bytes == unfolded.predicted.peak_bytes
