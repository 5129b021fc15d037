"""The memory-lean backward: same gradients as stock autograd, far less saved."""

import pytest
import torch
from torch import nn

from budgetplan import SavedTensorMeter, solve
from budgetplan.costs.build import layer_costs
from budgetplan.training.channels import channel_norms, weight_mask
from budgetplan.training.functions import pack_bits, unpack_bits
from budgetplan.training.lean import LeanAutograd
from budgetplan.zoo.models import build_model


def _stock_and_lean(module, x, idx, name="m"):
    """Weight and input gradients of ``module`` under stock autograd and the lean mode."""
    holder = nn.Module()
    holder.add_module(name, module)
    grads = []
    for lean in (False, True):
        module.zero_grad()
        xi = x.clone().requires_grad_(True)
        if lean:
            with LeanAutograd(holder, {name: idx}):
                out = module(xi)
        else:
            out = module(xi)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        grads.append((module.weight.grad.clone(), xi.grad.clone(), None if module.bias is None else module.bias.grad))
    return grads


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(6, 4, 3, padding=1),
        nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6),  # depthwise
        nn.Conv2d(6, 12, 3, padding=2, dilation=2, groups=6),  # depthwise, multiplier 2
        nn.Conv2d(6, 4, 1, groups=2, bias=False),  # grouped
        nn.Conv1d(6, 4, 3, stride=2),
        nn.Conv3d(6, 4, 3, padding=1, groups=2),
    ],
    ids=["conv", "depthwise", "depthwise-x2", "grouped", "conv1d", "conv3d-grouped"],
)
def test_conv_gradients_match_stock_on_the_selection(conv):
    torch.manual_seed(0)
    spatial = {nn.Conv1d: (9,), nn.Conv2d: (9, 9), nn.Conv3d: (5, 5, 5)}[type(conv)]
    x = torch.randn(2, 6, *spatial)
    idx = torch.tensor([1, 4, 5])
    (w_stock, x_stock, b_stock), (w_lean, x_lean, b_lean) = _stock_and_lean(conv, x, idx)
    mask = weight_mask(conv.weight.shape, idx, conv.groups)
    torch.testing.assert_close(w_lean[mask], w_stock[mask])
    assert not w_lean[~mask].any()  # outside the selection: exactly zero, not computed
    torch.testing.assert_close(x_lean, x_stock)
    if conv.bias is not None:
        torch.testing.assert_close(b_lean, b_stock)


def test_linear_over_tokens_matches_stock():
    torch.manual_seed(0)
    linear = nn.Linear(8, 5)
    idx = torch.tensor([0, 2, 7])
    (w_stock, x_stock, b_stock), (w_lean, x_lean, b_lean) = _stock_and_lean(linear, torch.randn(3, 4, 8), idx)
    torch.testing.assert_close(w_lean[:, idx], w_stock[:, idx])
    assert not w_lean[:, [1, 3, 4, 5, 6]].any()
    torch.testing.assert_close(x_lean, x_stock)
    torch.testing.assert_close(b_lean, b_stock)


@pytest.mark.parametrize(
    "activation",
    [nn.ReLU(), nn.ReLU(inplace=True), nn.ReLU6(), nn.Hardtanh(-0.5, 0.5), nn.LeakyReLU(0.1)],
    ids=["relu", "relu-inplace", "relu6", "hardtanh", "leaky"],
)
def test_activations_keep_one_bit_per_element(activation):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 1)
    norm = nn.BatchNorm2d(8).eval().requires_grad_(False)  # frozen, as the planner leaves it
    net = nn.Sequential(conv, activation, norm, nn.AdaptiveAvgPool2d(1))
    x = torch.randn(2, 3, 6, 6) * 4
    stock = nn.Sequential(conv, type(activation)(**_args(activation)), net[2], net[3])
    out_stock = stock(x)
    out_stock.sum().backward()
    expected = conv.weight.grad.clone()
    conv.zero_grad()
    with SavedTensorMeter(net) as meter, LeanAutograd(net, {"0": torch.arange(3)}):
        out = net(x)
    out.sum().backward()
    torch.testing.assert_close(out, out_stock)
    torch.testing.assert_close(conv.weight.grad, expected)
    # saved: the conv input (2*3*36 floats) and the activation's mask, 2*8*36 bits
    assert meter.bytes == 2 * 3 * 36 * 4 + 2 * 8 * 36 // 8


def _args(activation):
    if isinstance(activation, nn.ReLU6):
        return {}
    if isinstance(activation, nn.Hardtanh):
        return {"min_val": activation.min_val, "max_val": activation.max_val}
    if isinstance(activation, nn.LeakyReLU):
        return {"negative_slope": activation.negative_slope}
    return {}


def test_dropout_keeps_a_packed_mask():
    torch.manual_seed(0)
    x = (torch.rand(4, 64) + 0.5).requires_grad_(True)  # no zeros, so y != 0 marks kept units
    net = nn.Dropout(0.25)
    with SavedTensorMeter() as meter, LeanAutograd(net, {}):
        y = net(x)
    y.sum().backward()
    kept = y != 0
    assert 0.6 < kept.float().mean() < 0.9
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    torch.testing.assert_close(x.grad, kept.float() / 0.75)
    assert meter.bytes == 4 * 64 // 8


def test_pack_bits_round_trip():
    mask = torch.rand(3, 5, 7) > 0.4
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (mask.numel() + 7) // 8
    assert torch.equal(unpack_bits(packed, mask.shape), mask)


def test_channel_geometry():
    weight = torch.arange(2 * 3 * 2, dtype=torch.float).reshape(4, 3, 1, 1).repeat(1, 1, 1, 1)
    grouped = torch.randn(8, 2, 3, 3)  # 4 groups, 8 input channels
    mask = weight_mask(grouped.shape, torch.tensor([3]), 4)  # channel 3: group 1, column 1
    assert mask[2:4, 1].all() and mask.sum() == 2 * 9
    norms = channel_norms(grouped, 8, 4)
    assert norms[3] == pytest.approx(grouped[2:4, 1].norm().item(), rel=1e-5)
    assert channel_norms(weight, 3, 1).shape == (3,)


def test_meter_counts_storages_once_and_skips_parameters():
    class SavesTwice(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(x, x[:, :2], w)
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2, None

    w = nn.Parameter(torch.ones(100))
    x = torch.randn(4, 10, requires_grad=True)
    with SavedTensorMeter() as meter:
        SavesTwice.apply(x, w)
    assert (meter.tensors, meter.elements, meter.bytes) == (1, 40, 160)


def test_unplanned_conv_falls_back_with_one_warning():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding="same"), nn.ReLU())
    with pytest.warns(UserWarning, match=r"0 runs with stock autograd \(padding='same'\)") as record:
        with LeanAutograd(net, {"0": torch.tensor([0])}):
            for _ in range(3):
                net(torch.randn(1, 3, 5, 5))
    assert sum("stock autograd" in str(w.message) for w in record) == 1


@pytest.fixture(scope="module")
def planned_default():
    model, name = build_model()
    plan = solve(model, torch.zeros(1, 3, 128, 128), "cortex-m7", model_name=name)
    return model, plan


def _freeze_to(model, plan):
    for p in model.parameters():
        p.requires_grad_(False)
    modules, params = dict(model.named_modules()), dict(model.named_parameters())
    selection = {}
    generator = torch.Generator().manual_seed(0)
    for layer in plan.layers:
        if layer.channels:
            modules[layer.name].weight.requires_grad_(True)
            perm = torch.randperm(layer.total_channels, generator=generator)
            selection[layer.name] = perm[: layer.channels].sort().values
        if layer.bias and layer.bias_param:
            params[layer.bias_param].requires_grad_(True)
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    return selection


@pytest.mark.slow
def test_default_plan_saves_what_it_predicts(planned_default):
    """docs/training.md on the default model and the cortex-m7 plan: measured saved elements
    per sample within the prediction (masks counted as elements), at most 5% of dense."""
    model, plan = planned_default
    batch = 4
    x = torch.randn(batch, 3, 128, 128)
    for p in model.parameters():
        p.requires_grad_(True)
    model.train()
    with SavedTensorMeter(model) as dense:
        model(x)
    selection = _freeze_to(model, plan)
    with SavedTensorMeter(model) as lean, LeanAutograd(model, selection):
        model(x).sum().backward()
    costs = layer_costs(model, x[:1], plan.device)
    first = min(layer.index for layer in costs.layers if plan.layers[layer.index].update != "none")
    predicted = sum(
        p.channels * c.activation_elements_per_channel for p, c in zip(plan.layers, costs.layers, strict=True)
    )
    predicted += sum(c.mask_elements + c.path_activation_elements for c in costs.layers if c.index >= first)
    per_sample = lean.elements / batch
    assert per_sample <= predicted
    assert per_sample <= 0.05 * dense.elements / batch
    assert lean.bytes <= 0.05 * dense.bytes


def test_default_plan_gradients_match_stock_autograd(planned_default):
    model, plan = planned_default
    selection = _freeze_to(model, plan)
    model.classifier[0].eval()  # dropout draws its masks differently in the two runs
    torch.manual_seed(1)
    x = torch.randn(2, 3, 128, 128)
    grads = []
    for lean in (False, True):
        model.zero_grad()
        if lean:
            with LeanAutograd(model, selection):
                out = model(x)
        else:
            out = model(x)
        (out * torch.arange(out.numel()).reshape(out.shape)).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    modules = dict(model.named_modules())
    for name, idx in selection.items():
        weight = modules[name].weight
        mask = weight_mask(weight.shape, idx, getattr(modules[name], "groups", 1))
        stock, lean = grads[0][f"{name}.weight"], grads[1][f"{name}.weight"]
        error = (lean[mask] - stock[mask]).norm() / stock[mask].norm()
        assert error < 1e-4, (name, float(error))
        assert not lean[~mask].any()
    torch.testing.assert_close(grads[1]["classifier.1.bias"], grads[0]["classifier.1.bias"])
