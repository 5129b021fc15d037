"""The exported C training step against the callback's: same weights after the same steps,
built with the host's gcc and, where Debian's Arm toolchain and QEMU are installed, on an
emulated Cortex-M7 with the profile's SRAM as its RAM."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from budgetplan import load_device, solve
from budgetplan.codegen.board import emulator_missing, run_on_board, run_on_host, write_batches
from budgetplan.codegen.library import export_c
from budgetplan.codegen.reference import Int8Step
from budgetplan.errors import BudgetPlanError, ModelError
from budgetplan.training.fold import fold_batchnorm
from budgetplan.zoo.models import build_model

from ..helpers.c_export import callback_parameters, parameters, worst_relative

STEPS, LR = 5, 0.05
needs_emulator = pytest.mark.skipif(emulator_missing() is not None, reason=str(emulator_missing()))


class Plain(nn.Module):
    """A residual-free network: a strided conv, a depthwise and a pointwise conv, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
            nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
            nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


def _folded(net: nn.Module, example: torch.Tensor) -> nn.Module:
    torch.manual_seed(1)
    for module in net.modules():  # norms that fold into something other than the identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return fold_batchnorm(net.eval(), example)


def _batches(shape: tuple[int, ...], batch: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    inputs = torch.randn(STEPS, batch, *shape, generator=generator)
    return inputs, torch.randint(0, classes, (STEPS, batch), generator=generator)


def _exported(net, plan, tmp_path, inputs, labels, numerics="float32"):
    """The float32 library is checked against the callback; ``int8`` calibrates on the first batch."""
    library = export_c(net, plan, tmp_path / "c", inputs[0] if numerics == "int8" else inputs[0, :1], numerics=numerics)
    write_batches(tmp_path / "c", inputs.numpy(), labels.numpy(), LR)
    return library


def test_the_plain_network_trains_in_c_as_the_callback_trains_it(tmp_path):
    torch.manual_seed(0)
    net = _folded(Plain(), torch.zeros(1, 3, 16, 16))
    inputs, labels = _batches((3, 16, 16), 2, 5)
    plan = solve(net, inputs[0, :1], device="cortex-m7", training_memory=4000, batch_size=2)
    partial = [layer for layer in plan.updated() if layer.update == "weight" and layer.channels < layer.total_channels]
    assert partial, "a plan that trains every channel would not test the selection"
    library = _exported(net, plan, tmp_path, inputs, labels)
    assert "bp_dwconv_inplace(" in (tmp_path / "c" / "bp_model.c").read_text()  # cortex-m7: in place
    run = run_on_host(tmp_path / "c")
    want = callback_parameters(net, plan, inputs, labels, LR, tmp_path)
    assert np.abs(want - parameters(net)).max() > 1e-3  # the steps moved the weights
    assert worst_relative(run.parameters, net, want) < 1e-5
    assert len(run.losses) == STEPS and run.arena_high_water == library.arena_bytes


@pytest.mark.slow
def test_mobilenet_v2_trains_in_c_as_the_callback_trains_it_and_its_arena_is_the_prediction(tmp_path):
    net, _ = build_model("mobilenet_v2", 10, 0.35)
    net = _folded(net, torch.zeros(1, 3, 128, 128))
    inputs, labels = _batches((3, 128, 128), 1, 10)
    plan = solve(net, inputs[0, :1], device="mps2-an500-f32")
    library = _exported(net, plan, tmp_path, inputs, labels)
    run = run_on_host(tmp_path / "c")
    want = callback_parameters(net, plan, inputs, labels, LR, tmp_path)
    assert worst_relative(run.parameters, net, want) < 1e-5
    outside = plan.predicted.resident_bytes  # the trained weights and biases, in .data
    assert abs(run.arena_high_water - (plan.predicted.peak_bytes - outside)) <= 0.01 * plan.predicted.peak_bytes
    assert run.arena_high_water == library.arena_bytes


@pytest.mark.slow
@needs_emulator
def test_on_an_emulated_cortex_m7_the_step_is_the_hosts_and_fits_the_sram(tmp_path):
    net, _ = build_model("mobilenet_v2", 10, 0.35)
    net = _folded(net, torch.zeros(1, 3, 128, 128))
    inputs, labels = _batches((3, 128, 128), 1, 10)
    plan = solve(net, inputs[0, :1], device="mps2-an500-f32")
    _exported(net, plan, tmp_path, inputs[:2], labels[:2])  # two steps: the second uses the first's update
    host = run_on_host(tmp_path / "c")
    board = run_on_board(tmp_path / "c", "cortex-m7", plan.device.sram, plan.device.flash)
    assert board.losses == pytest.approx(host.losses, rel=1e-5)
    assert np.abs(board.parameters - host.parameters).max() <= 1e-6
    assert board.arena_high_water == host.arena_high_water
    assert board.stack_high_water is not None and 0 < board.stack_high_water < 8 * 1024
    assert board.data_bytes is not None and board.data_bytes >= plan.predicted.resident_bytes
    assert board.bss_bytes is not None and board.bss_bytes + board.data_bytes <= plan.device.sram


def _agrees_with_reference(directory, library, inputs, labels):
    """The int8 step against its PyTorch reference (docs/device.md, "Int8 storage"); the
    last run. The forward is exact, so with the same weights the losses differ by the
    float32 rounding of the loss alone; the weights are codes, equal unless an update fell
    within float32 rounding of a half, and then one code apart; the biases are float32 sums
    in another order. Int8 gradients can differ by a code in the same way: that holds for
    one step, and after it the weights may part, the later losses and biases with them (5
    steps: within 1e-3 and 1e-2 of their largest magnitude; 1.4e-4 and 1.2e-3 seen)."""
    for count in (1, len(inputs)) if library.code.int8_gradients else (len(inputs),):
        write_batches(directory, inputs[:count].numpy(), labels[:count].numpy(), LR)
        run = run_on_host(directory)
        reference = Int8Step(library.code)
        start = reference.parameters().numpy().copy()
        losses = reference.train(inputs[:count], labels[:count], LR)
        want = reference.parameters().numpy()
        exact = count == 1 or not library.code.int8_gradients
        assert run.losses[0] == pytest.approx(losses[0], rel=1e-6, abs=1e-6)  # the runner prints 6 decimals
        assert run.losses == pytest.approx(losses, rel=1e-6 if exact else 1e-3, abs=1e-6)
        assert np.abs(want - start).max() > 0  # the steps moved codes
        _parameters_agree(run.parameters, want, library.code, exact)
    return run


def _parameters_agree(got_all, want_all, code, exact: bool) -> None:
    offset = 0
    for index, params in code.parameters.items():
        size, units = len(params.weight), len(code.quant.weight[index])
        got, ref = got_all[offset : offset + size], want_all[offset : offset + size]
        if exact:  # at most one code apart
            assert np.all(np.abs(got - ref) <= np.repeat(code.quant.weight[index], size // units) * (1 + 1e-6))
        assert np.mean(got != ref) <= 0.01, params.name
        offset += size
        if params.bias is not None:
            got, ref = got_all[offset : offset + len(params.bias)], want_all[offset : offset + len(params.bias)]
            assert np.abs(got - ref).max() <= (1e-5 if exact else 1e-2) * max(1.0, np.abs(ref).max()), params.name
            offset += len(params.bias)
    assert offset == len(got_all)


def test_the_int8_library_computes_what_its_pytorch_reference_computes(tmp_path):
    net = _folded(Plain(), torch.zeros(1, 3, 16, 16))
    inputs, labels = _batches((3, 16, 16), 2, 5)
    plan = solve(net, inputs[0, :1], device="cortex-m7", training_memory=4000, batch_size=2)
    library = export_c(net, plan, tmp_path / "c", inputs[0])  # the profile's 8-bit storage by default
    text = (tmp_path / "c" / "bp_model.c").read_text()
    assert library.code.int8_gradients and "int8_t W" in text
    assert "bp_dwconv_inplace_q8(" in text  # cortex-m7 writes a depthwise convolution over its input
    run = _agrees_with_reference(tmp_path / "c", library, inputs, labels)
    assert run.arena_high_water == library.arena_bytes


@pytest.mark.slow
@pytest.mark.parametrize("gradient_bits", [32, 8])
def test_mobilenet_v2_in_int8_matches_its_reference_and_its_arena_is_the_prediction(tmp_path, gradient_bits):
    """On the int8 board as shipped (float32 gradients) and with 8-bit gradients priced; at
    64x64, where every layer keeps the geometry it has at 128x128 but for its size."""
    net, _ = build_model("mobilenet_v2", 10, 0.35)
    net = _folded(net, torch.zeros(1, 3, 64, 64))
    inputs, labels = _batches((3, 64, 64), 1, 10)
    board = load_device("mps2-an500-int8")
    device = dataclasses.replace(board, bits=dataclasses.replace(board.bits, activation_gradient=gradient_bits))
    plan = solve(net, inputs[0, :1], device=device)
    library = _exported(net, plan, tmp_path, inputs, labels, numerics="int8")
    run = _agrees_with_reference(tmp_path / "c", library, inputs, labels)
    outside = plan.predicted.resident_bytes
    assert abs(run.arena_high_water - (plan.predicted.peak_bytes - outside)) <= 0.01 * plan.predicted.peak_bytes
    if emulator_missing() is None:  # the board computes what the host computes, bit for bit
        board = run_on_board(tmp_path / "c", "cortex-m7", plan.device.sram, plan.device.flash)
        assert board.losses == run.losses and np.array_equal(board.parameters, run.parameters)
        assert board.arena_high_water == run.arena_high_water


@pytest.mark.slow
def test_the_shipped_cortex_m7_plan_runs_its_patch_stage_within_the_predicted_arena(tmp_path):
    """The default plan of the reference board (int8, 8-bit gradients, a 3x3 patch stage):
    the patched forward computes what the whole one computes (the reference runs whole),
    and the arena is the plan's prediction; on the emulated board it links into 320 KB."""
    torch.manual_seed(0)
    net, _ = build_model()
    inputs, labels = _batches((3, 128, 128), 1, 10)
    plan = solve(net, inputs[0, :1], device="cortex-m7")
    assert plan.predicted.patch_grid == 3
    library = export_c(net, plan, tmp_path / "c", inputs[0])
    stage = library.code.patch
    assert stage is not None and stage.grid == 3 and "bp_conv2d_patch_q8" in (tmp_path / "c" / "bp_model.c").read_text()
    run = _agrees_with_reference(tmp_path / "c", library, inputs[:2], labels[:2])
    predicted = plan.predicted.peak_bytes - plan.predicted.resident_bytes
    assert abs(run.arena_high_water - predicted) <= 0.01 * plan.predicted.peak_bytes
    if emulator_missing() is None:
        board = run_on_board(tmp_path / "c", "cortex-m7", plan.device.sram, plan.device.flash)
        assert board.losses == run.losses and np.array_equal(board.parameters, run.parameters)
        assert board.data_bytes + board.bss_bytes + board.stack_high_water <= plan.device.sram


@needs_emulator
def test_a_plan_that_does_not_fit_the_sram_does_not_link(tmp_path):
    net = _folded(Plain(), torch.zeros(1, 3, 16, 16))
    inputs, labels = _batches((3, 16, 16), 2, 5)
    plan = solve(net, inputs[0, :1], device="cortex-m7", training_memory=4000, batch_size=2)
    library = _exported(net, plan, tmp_path, inputs, labels)
    with pytest.raises(BudgetPlanError, match=r"does not fit the board's SRAM: \d+ bytes over"):
        run_on_board(tmp_path / "c", "cortex-m7", library.arena_bytes // 2, 1 << 20)


def test_an_operator_without_a_kernel_is_refused_by_name(tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    plan = solve(net, torch.zeros(1, 3, 8, 8), device="cortex-m7", training_memory=4000)
    with pytest.raises(ModelError, match=r"^layer '1': the C export has no kernel for GELU; it runs Conv2d, Linear"):
        export_c(copy.deepcopy(net), plan, tmp_path / "c", torch.zeros(1, 3, 8, 8))


def test_parameters_that_are_not_finite_are_refused(tmp_path):
    net = _folded(Plain(), torch.zeros(1, 3, 16, 16))
    plan = solve(net, torch.zeros(1, 3, 16, 16), device="cortex-m7", training_memory=4000)
    with torch.no_grad():
        net.head.weight[0, 0] = float("nan")
    with pytest.raises(ModelError, match=r"^layer 'head': its weight holds values that are not finite"):
        export_c(net, plan, tmp_path / "c", torch.zeros(1, 3, 16, 16))


@pytest.mark.slow
def test_the_cli_stores_what_it_is_told_and_names_a_bad_calibration_file(tmp_path, capsys):
    from budgetplan import cli

    plan = tmp_path / "plan.yaml"
    assert cli.main(["solve", "--device", "cortex-m7", "--input-size", "32", "--out", str(plan)]) == 0
    samples = tmp_path / "samples.pt"
    torch.save(torch.randn(4, 3, 32, 32), samples)
    capsys.readouterr()
    assert (
        cli.main(["export", str(plan), "--format", "c", "--out", str(tmp_path / "i8"), "--calibration", str(samples)])
        == 0
    )
    assert "\nint8; arena" in capsys.readouterr().out
    assert "#define BP_INT8 1" in (tmp_path / "i8" / "bp_model.h").read_text()
    assert (
        cli.main(["export", str(plan), "--format", "c", "--out", str(tmp_path / "f32"), "--numerics", "float32"]) == 0
    )
    assert "\nfloat32; arena" in capsys.readouterr().out
    assert "#define BP_INT8 0" in (tmp_path / "f32" / "bp_model.h").read_text()
    torch.save({"not": "samples"}, tmp_path / "bad.pt")
    code = cli.main(
        ["export", str(plan), "--format", "c", "--out", str(tmp_path / "x"), "--calibration", str(tmp_path / "bad.pt")]
    )
    assert code == 2 and f"--calibration: '{tmp_path / 'bad.pt'}' holds no float tensor" in capsys.readouterr().err


DRIVER = """
#include <stdio.h>
#include "bp_model.h"
int main(void) {
    static const int kept[] = {%s};
    float row[64];
    for (int i = 0; i < 64; i++) row[i] = (float)((i %% 7) - 3) / 3.0f;
    for (size_t at = 0; at < (size_t)BP_BATCH * BP_INPUT_ELEMENTS; at += 64) bp_load_input(at, row, 64);
    int labels[BP_BATCH] = {1};
    for (int step = 0; step < 3; step++) bp_train_step(labels, 0.5f);
    for (int j = 0; j < bp_param_size(%d); j++) printf("%%.9g\\n", (double)bp_param_at(%d, j));
    bp_set_channels(0, kept);
    for (int j = 0; j < bp_param_size(%d); j++) printf("%%.9g\\n", (double)bp_param_at(%d, j));
    return 0;
}
"""


def test_the_int8_library_keeps_only_the_trained_channels_in_sram_and_reloads_them_from_flash(tmp_path):
    """The trained weights in SRAM are the selected channels' codes, as much as the plan
    counts; choosing channels again starts them from the flash codes (their updates are
    dropped: nothing else holds them)."""
    import shutil
    import subprocess

    if shutil.which("gcc") is None:
        pytest.skip("no gcc")
    net = _folded(Plain(), torch.zeros(1, 3, 16, 16))
    inputs, _ = _batches((3, 16, 16), 2, 5)
    plan = solve(net, inputs[0, :1], device="cortex-m7", training_memory=4000, batch_size=2)
    library = export_c(net, plan, tmp_path / "c", inputs[0])
    code = library.code
    first = next(i for i, t in code.trained.items() if t.channels)  # bp_set_channels' layer 0
    text = (tmp_path / "c" / "bp_model.c").read_text()
    in_g = code.nodes[code.nodes[first].inputs[0]].shape[0] // code.nodes[first].groups
    taps = code.nodes[first].kernel[0] * code.nodes[first].kernel[1]
    slice_bytes = len(code.selection[first]) * code.nodes[first].shape[0] // code.nodes[first].groups * taps
    assert f"static int8_t WT{first}[{slice_bytes}]" in text and in_g >= len(code.selection[first])
    assert f"static const int8_t W{first}[" in text  # every code stays in flash
    index = 2 * list(code.parameters).index(first)  # bp_param_at's index of its weight
    (tmp_path / "c" / "main.c").write_text(
        DRIVER % (", ".join(map(str, code.selection[first])), index, index, index, index)
    )
    build = ["gcc", "-std=c99", "-O1", "-Wall", "-I.", "main.c", "bp_model.c", "bp_runtime.c", "-lm", "-o", "main"]
    subprocess.run(build, cwd=tmp_path / "c", check=True, capture_output=True)
    out = subprocess.run(["./main"], cwd=tmp_path / "c", check=True, capture_output=True, text=True).stdout
    values = np.array([float(v) for v in out.split()])
    trained, reloaded = values[: len(values) // 2], values[len(values) // 2 :]
    scales = np.repeat(code.quant.weight[first], len(code.quant.codes[first]) // len(code.quant.weight[first]))
    exported = np.array(code.quant.codes[first]) * scales
    assert not np.allclose(trained, exported)  # the steps moved the trained channels' codes
    np.testing.assert_allclose(reloaded, exported, rtol=1e-6)  # and choosing them again starts from flash


@needs_emulator
@pytest.mark.parametrize(("device", "core"), [("cortex-m4", "cortex-m4"), ("cortex-m33", "cortex-m33"),
                                              ("rp2040", "cortex-m0plus")])  # fmt: skip
def test_each_emulated_core_runs_the_int8_step_the_host_runs(tmp_path, device, core):
    net = _folded(Plain(), torch.zeros(1, 3, 16, 16))
    inputs, labels = _batches((3, 16, 16), 2, 5)
    plan = solve(net, inputs[0, :1], device=device, training_memory=4000, batch_size=2)
    library = _exported(net, plan, tmp_path, inputs, labels, numerics="int8")
    host = run_on_host(tmp_path / "c")
    board = run_on_board(tmp_path / "c", core, plan.device.sram, plan.device.flash)
    assert board.losses == pytest.approx(host.losses, rel=1e-5)
    assert np.mean(board.parameters != host.parameters) <= 0.01  # a code apart where expf rounds otherwise
    assert board.arena_high_water == host.arena_high_water == library.arena_bytes
    assert board.flash_bytes is not None and 0 < board.flash_bytes <= plan.device.flash
    assert board.stack_high_water is not None and 0 < board.stack_high_water < 8 * 1024
