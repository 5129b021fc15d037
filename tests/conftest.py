"""Shared helpers: small synthetic cost tables and devices for planner tests."""

from __future__ import annotations

import contextlib
import io
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from budgetplan.costs.table import CostTable, LayerCost
from budgetplan.device.profile import BitWidths, DeviceProfile

REPO = Path(__file__).resolve().parent.parent

if "PYTEST_XDIST_WORKER" in os.environ:
    # one core per worker, for this process and the ones it starts: two workers with a
    # thread per core each would make four threads fight over two cores
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"


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


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The command line through ``cli.main`` in this process, its streams captured.

    Startup and the console script are tested in fresh processes (``run_cli_process``)."""
    from budgetplan import cli

    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(args))
            except SystemExit as stop:  # argparse ends by exiting
                code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(["budgetplan", *args], code, out.getvalue(), err.getvalue())


def run_cli_process(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The command line as a user runs it, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "budgetplan.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def run_script(capsys: pytest.CaptureFixture[str], script: str, *args: str) -> tuple[int, str]:
    """A script of the repository in this process (``python examples/x.py ARGS``); its exit status and output."""
    import runpy

    argv, path, here = sys.argv, list(sys.path), os.getcwd()
    sys.argv, sys.path = [script, *args], [str((REPO / script).parent), *sys.path]
    os.chdir(REPO)
    try:
        runpy.run_path(str(REPO / script), run_name="__main__")
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    finally:
        sys.argv, sys.path = argv, path
        os.chdir(here)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(scope="session")
def default_costs_by_executor() -> dict[str, CostTable]:
    """The default model's cost table, traced once per executor model."""
    import torch

    from budgetplan.costs.build import layer_costs
    from budgetplan.zoo.models import build_model

    model, name = build_model()
    example = torch.zeros(1, 3, 128, 128)
    return {
        executor: layer_costs(model, example, make_device(executor=executor), model_name=name)
        for executor in ("layer", "inplace-dw", "patch")
    }


def pytest_configure(config: pytest.Config) -> None:
    if "PYTEST_XDIST_WORKER" in os.environ:
        import torch

        torch.set_num_threads(1)
