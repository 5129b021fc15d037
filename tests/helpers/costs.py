"""Synthetic devices and cost tables for planner tests."""

from __future__ import annotations

import random

from budgetplan.costs.table import CostTable, LayerCost
from budgetplan.device.profile import BitWidths, DeviceProfile


def make_device(**overrides: object) -> DeviceProfile:
    fields: dict[str, object] = dict(
        name="test-mcu",
        aliases=(),
        description="synthetic device for tests",
        sram=1 << 20,
        flash=1 << 22,
        clock_hz=1e8,
        macs_per_second=1e8,
        compute_assumption="synthetic",
        bits=BitWidths(weight=8, activation=8, gradient=0, bias=32, optimizer=0, mask=1),
        reserved=0,
        budget=1 << 19,
    )
    fields.update(overrides)
    return DeviceProfile(**fields)  # type: ignore[arg-type]


def random_layer(rng: random.Random, index: int) -> LayerCost:
    c_in = rng.choice([2, 3, 4, 6])
    c_out = rng.choice([2, 4, 8])
    w = rng.randint(1, 40)
    act = rng.randint(1, 60)
    bias = rng.choice([0, c_out])
    return LayerCost(
        name=f"layer{index}",
        kind="conv",
        index=index,
        in_channels=c_in,
        out_channels=c_out,
        kernel_size=(1, 1),
        groups=1,
        weight_shape=(c_out, c_in, 1, 1),
        input_hw=(1, 1),
        output_hw=(1, 1),
        calls=1,
        forward_macs=rng.randint(10, 500),
        weight_elements_per_channel=w,
        activation_elements_per_channel=act,
        weight_grad_macs_per_channel=rng.randint(1, 100),
        bias_elements=bias,
        bias_param=f"layer{index}.bias" if bias else None,
        mask_elements=rng.choice([0, rng.randint(1, 200)]),
        path_activation_elements=rng.choice([0, 0, rng.randint(1, 50)]),
        input_grad_macs=rng.randint(10, 500),
        forward_live_elements=rng.randint(10, 300),
        backward_live_elements=rng.randint(10, 300),
    )


def random_costs(rng: random.Random, n_layers: int) -> CostTable:
    layers = tuple(random_layer(rng, i) for i in range(n_layers))
    return CostTable(model="random", input_shape=(1, 1, 1), executor="layer", layers=layers)
