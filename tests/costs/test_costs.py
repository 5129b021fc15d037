"""The cost model against numbers computed by hand (docs/cost-model.md)."""

import pytest
import torch
from torch import nn

from budgetplan import ModelError, layer_costs, load_device
from budgetplan.costs.pricing import model_bytes
from budgetplan.zoo.models import build_model


class SmallNet(nn.Module):
    """Ordinary, depthwise and grouped convs and a Linear head, on 3x8x8 input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)  # -> 8x8x8
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)  # -> 8x4x4
        self.grouped = nn.Conv2d(8, 16, 1, groups=2)  # -> 16x4x4, own bias
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = torch.relu(self.dw(x))
        x = self.grouped(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


@pytest.fixture(scope="module")
def small():
    return layer_costs(SmallNet(), torch.zeros(2, 3, 8, 8))  # batch 2: costs are per sample


def test_layers_in_forward_order(small):
    assert [(layer.name, layer.kind) for layer in small.layers] == [
        ("conv", "conv"), ("dw", "depthwise"), ("grouped", "grouped"), ("fc", "linear"),
    ]  # fmt: skip
    assert small.input_shape == (3, 8, 8)
    assert not small.uncosted and not small.unknown_ops


def test_ordinary_conv(small):
    conv = small.layer("conv")
    assert (conv.input_hw, conv.output_hw, conv.kernel_size, conv.groups) == ((8, 8), (8, 8), (3, 3), 1)
    assert conv.forward_macs == 8 * 3 * 9 * 64
    assert conv.weight_elements_per_channel == 8 * 9  # C_out * kh * kw
    assert conv.activation_elements_per_channel == 64  # H * W of the input
    assert conv.weight_grad_macs_per_channel == 8 * 9 * 64  # C_out * kh * kw * H' * W'
    assert (conv.bias_param, conv.bias_elements) == ("bn.bias", 8)  # folded BatchNorm
    assert conv.mask_elements == 8 * 64  # the ReLU after it
    assert conv.input_grad_macs == conv.forward_macs
    assert conv.forward_live_elements == 3 * 64 + 8 * 64  # input + output
    assert conv.backward_live_elements == 2 * 8 * 64  # BatchNorm / ReLU gradient pair


def test_depthwise_conv(small):
    dw = small.layer("dw")
    assert dw.forward_macs == 8 * 9 * 16
    assert dw.weight_elements_per_channel == 9  # kh * kw
    assert dw.activation_elements_per_channel == 64
    assert dw.weight_grad_macs_per_channel == 9 * 16
    assert (dw.bias_param, dw.bias_elements) == (None, 0)  # no bias, no BatchNorm after it
    assert dw.mask_elements == 8 * 16
    assert dw.forward_live_elements == 8 * 64 + 8 * 16


def test_grouped_conv(small):
    grouped = small.layer("grouped")
    assert grouped.forward_macs == 16 * 4 * 16  # C_out * C_in/g * k * H'W'
    assert grouped.weight_elements_per_channel == 16 // 2  # (C_out / g) * kh * kw
    assert grouped.activation_elements_per_channel == 16
    assert grouped.weight_grad_macs_per_channel == 8 * 16
    assert (grouped.bias_param, grouped.bias_elements) == ("grouped.bias", 16)
    assert grouped.mask_elements == 0 and grouped.path_activation_elements == 0
    assert grouped.forward_live_elements == 8 * 16 + 16 * 16


def test_linear_head(small):
    fc = small.layer("fc")
    assert (fc.in_channels, fc.out_channels, fc.forward_macs) == (16, 5, 80)
    assert (fc.weight_elements_per_channel, fc.activation_elements_per_channel) == (5, 1)
    assert fc.weight_grad_macs_per_channel == 5
    assert fc.bias_param == "fc.bias"


def test_model_bytes_fold_batchnorm(small):
    weights = 3 * 8 * 9 + 8 * 9 + 16 * 4 + 16 * 5
    biases = 8 + 16 + 5
    units = 8 + 8 + 16 + 5  # int8 weights keep a float32 scale per output unit
    assert model_bytes(small, load_device("cortex-m7")) == weights + 4 * biases + 4 * units
    assert model_bytes(small, load_device("raspberry-pi-4")) == 4 * (weights + biases)


def test_inplace_depthwise_executor_shrinks_the_buffer():
    table = layer_costs(SmallNet(), torch.zeros(1, 3, 8, 8), "esp32-s3")  # executor inplace-dw
    assert table.executor == "inplace-dw"
    assert table.layer("dw").forward_live_elements == 8 * 64  # max(in, out), not in + out


class SharedResidual(nn.Module):
    """A conv used twice, a residual add and a parameter outside any layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.scale = nn.Parameter(torch.ones(1))
        self.unused = nn.Linear(3, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        z = self.conv(y) + x  # x stays alive for the add
        z = z * self.scale
        return self.fc(z.mean(dim=(2, 3)))


def test_shared_layer_residual_and_uncosted():
    table = layer_costs(SharedResidual(), torch.zeros(1, 4, 4, 4))
    conv = table.layer("conv")
    assert conv.calls == 2
    assert conv.activation_elements_per_channel == 2 * 16  # both calls' inputs
    assert conv.forward_macs == 2 * 4 * 4 * 9 * 16
    # second call: the residual input x, its input y and its output are all alive
    assert conv.forward_live_elements == 3 * 64
    assert [layer.name for layer in table.layers] == ["conv", "fc"]
    reported = {u.name: u.reason for u in table.uncosted}
    assert "never runs" in reported["unused"]
    assert "scale" in reported
    assert table.other_param_elements == 1 + 3 * 3 + 3  # scale + unused Linear


def test_activations_that_need_their_input():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Hardswish(), nn.Conv2d(4, 4, 1), nn.Sigmoid())
    table = layer_costs(net, torch.zeros(1, 3, 2, 2))
    assert table.layer("0").path_activation_elements == 16 and table.layer("0").mask_elements == 0
    assert table.layer("2").path_activation_elements == 16


def test_linear_over_tokens():
    net = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    table = layer_costs(net, torch.zeros(2, 7, 6))
    first = table.layer("0")
    assert first.activation_elements_per_channel == 7  # one element per token
    assert first.forward_macs == 7 * 6 * 4
    assert first.mask_elements == 7 * 4


def test_model_that_rejects_the_input():
    with pytest.raises(ModelError, match="rejects an input of shape 1x5x8x8"):
        layer_costs(SmallNet(), torch.zeros(1, 5, 8, 8))


def test_trace_leaves_the_model_as_it_was():
    net = SmallNet().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    layer_costs(net, torch.randn(4, 3, 8, 8))
    assert net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # no BN drift
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())


@pytest.mark.parametrize(
    ("name", "n_layers"),
    [
        ("mobilenet_v2", 53),
        ("mobilenet_v3_small", 54),
        ("mobilenet_v3_large", 64),
        ("resnet18", 21),
        ("resnet50", 54),
        ("mnasnet0_5", 53),
        ("efficientnet_b0", 82),
        ("shufflenet_v2_x0_5", 57),
        ("squeezenet1_0", 26),
    ],
)
def test_torchvision_models_trace_completely(name, n_layers):
    import torchvision

    model, _ = build_model(name, 1000, 1.0 if name == "mobilenet_v2" else None)
    table = layer_costs(model, torch.zeros(1, 3, 224, 224))
    planned = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert {layer.name for layer in table.layers} == planned  # nothing silently dropped
    assert len(table.layers) == n_layers and not table.uncosted and not table.unknown_ops
    # torchvision's own operation count for the ImageNet model (GMACs at 224x224)
    reference = torchvision.models.get_model_weights(name).DEFAULT.meta["_ops"]
    assert table.forward_macs / 1e9 == pytest.approx(reference, rel=0.03)


def test_mobilenet_v2_width_035_working_buffer():
    """docs/planner.md: the largest layer input + output at 128x128 int8 is 240 KB, 224 KB
    when depthwise convs run in place."""
    model, _ = build_model("mobilenet_v2", 10, 0.35)
    example = torch.zeros(1, 3, 128, 128)
    layer_mode = layer_costs(model, example, "raspberry-pi-4")  # executor: layer
    in_place = layer_costs(model, example, "cortex-m7")  # executor: inplace-dw
    assert max(layer.forward_live_elements for layer in layer_mode.layers) == 240 * 1024
    assert max(layer.forward_live_elements for layer in in_place.layers) == 224 * 1024


def test_the_trace_and_the_table_share_one_layer_shape():
    from budgetplan.costs.dataflow import LayerShape
    from budgetplan.costs.trace import trace_model

    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    example = torch.zeros(1, 3, 8, 8)
    trace, table = trace_model(net, example), layer_costs(net, example)
    for layer in table.layers:
        assert isinstance(layer, LayerShape)
        assert layer.shape() == trace.plannable[layer.name].shape()
    geometry = {"in_channels": 8, "out_channels": 8, "kernel_size": (3, 3), "groups": 8, "weight_shape": (8, 1, 3, 3)}
    assert table.layer("1").shape() == LayerShape(name="1", **geometry)
