"""Patch-based execution in the cost model: windows, regions, what a patch holds."""

import pytest
import torch
from torch import nn

from budgetplan.costs.build import layer_costs
from budgetplan.costs.patches import largest_regions, local_end, patch_regions
from budgetplan.costs.trace import trace_model

from ..helpers.costs import make_device


class Stem(nn.Module):
    """3x3 conv, 3x3 stride-2 conv, max pool, then a global pool and a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.b(torch.relu(self.a(x)))))
        return self.head(x.mean((2, 3)))


def test_windows_are_recorded_from_the_call():
    trace = trace_model(Stem(), torch.zeros(1, 2, 16, 16))
    windows = {op.func: op.window for op in trace.ops if op.window is not None}
    assert windows["max_pool2d"].kernel == (3, 3) and windows["max_pool2d"].fill == float("-inf")
    convs = [op.window for op in trace.ops if op.func == "conv2d"]
    assert [(w.stride, w.pad_before) for w in convs] == [((1, 1), (1, 1)), ((2, 2), (1, 1))]
    # the global mean ends what patches can run
    assert trace.ops[local_end(trace)].func == "mean"


def test_regions_by_hand():
    """Output 4x4 after the pool, grid 2: tile rows [0, 2) of the pool output read rows
    [0, 3) of b's output, rows [0, 5) of a's output, rows [0, 6) of the input."""
    trace = trace_model(Stem(), torch.zeros(1, 2, 16, 16))
    end = local_end(trace)
    regions = patch_regions(trace, end, 2)
    assert regions is not None and regions.size == (4, 4)
    ops = trace.ops
    a_out, b_out = ops[0].outputs[0], next(op.outputs[0] for op in ops if op.module == "b")
    pool_out = next(op.outputs[0] for op in ops if op.func == "max_pool2d")
    first, last = regions.rows
    assert first[pool_out] == (0, 2) and last[pool_out] == (2, 4)
    assert first[b_out] == (0, 4) and last[b_out] == (3, 8)  # pool: rows 2o-1 .. 2o+1
    assert first[a_out] == (0, 8) and last[a_out] == (5, 16)  # conv b: rows 2o-1 .. 2o+1
    assert first[trace.input_ids[0]] == (0, 9) and last[trace.input_ids[0]] == (4, 16)
    assert largest_regions(regions)[a_out] == (11, 11)
    # a grid finer than the output, and a prefix past the global pool, are refused
    assert patch_regions(trace, end, 5) is None
    assert patch_regions(trace, end + 1, 2) is None


def test_patch_options_save_memory_for_the_default_model(default_costs_by_executor):
    whole = default_costs_by_executor["inplace-dw"]
    patched = default_costs_by_executor["patch"]
    # MCU executors list the options (to say what a patch stage would save); only
    # ``executor: patch`` plans with them; ``layer`` (Linux boards) has none
    assert patched.patch_options and whole.patch_options == patched.patch_options
    assert default_costs_by_executor["layer"].patch_options == ()
    for option in patched.patch_options:
        # less than running the same layers whole, and halo MACs only with more than one patch
        assert option.live_elements < max(layer.forward_live_elements for layer in patched.layers[: option.split])
        assert option.extra_macs >= 0
    # the layer buffers are those of inplace-dw
    assert [layer.forward_live_elements for layer in patched.layers] == [
        layer.forward_live_elements for layer in whole.layers
    ]


def test_no_patch_options_without_a_spatial_prefix():
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 2))
    table = layer_costs(net, torch.zeros(1, 3, 2, 2), make_device(executor="patch"))
    assert table.patch_options == ()


@pytest.mark.parametrize("padding", ["same", 0, (1, 2)])
def test_conv_padding_forms(padding):
    conv = nn.Conv2d(1, 1, 3, padding=padding)
    trace = trace_model(conv, torch.zeros(1, 1, 8, 8))
    expected = {"same": (1, 1), 0: (0, 0), (1, 2): (1, 2)}[padding]
    assert trace.ops[0].window.pad_before == expected
