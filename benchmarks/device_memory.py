"""Predicted against measured memory: each shipped microcontroller profile's default plan,
exported as a C library (docs/device.md) and run.

Run: python benchmarks/device_memory.py [--devices a,b] [--steps 2]

For each profile that keeps its frozen model in flash: the default model
(MobileNetV2-0.35, 128x128, 10 classes, initial weights) and ``budgetplan solve``'s
default plan. "predicted" is the plan's peak less the trained weights and biases it counts
(those live in ``.data``), "layout" the arena the library lays out. The library runs
on the host, and on an emulated board where QEMU has one for the part's core (Cortex-M7:
mps2-an500, Cortex-M4: mps2-an386, Cortex-M33: mps2-an505; the RP2040's Cortex-M0+
code runs on mps2-an385's Cortex-M3, which executes Armv6-M code unchanged; the
ESP32-S3's Xtensa core has none): there the linker's RAM and flash regions are the
profile's, so "on the board" is the arena's high-water mark from inside the board when
it links, else which memory it overflows and by how much. The library stores what the
profile counts (int8 weights and activations where it counts 8-bit ones, calibrated on
the steps' inputs, else float32; 8-bit gradients where it counts them) and runs the
plan's patch stage and in-place operators.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from budgetplan import solve
from budgetplan.codegen.board import emulator_missing, run_on_board, run_on_host, write_batches
from budgetplan.codegen.library import export_c
from budgetplan.device.profile import FrozenWeights, shipped_devices
from budgetplan.errors import BudgetPlanError
from budgetplan.units import format_bytes
from budgetplan.zoo.models import build_model

# the core of each shipped microcontroller profile's part (their descriptions), where QEMU emulates it
CORES = {"cortex-m7": "cortex-m7", "stm32h743": "cortex-m7", "mps2-an500-f32": "cortex-m7",
         "mps2-an500-int8": "cortex-m7", "cortex-m4": "cortex-m4", "nrf52840": "cortex-m4",
         "cortex-m33": "cortex-m33", "rp2040": "cortex-m0plus"}  # fmt: skip


def measure(device: str, steps: int, emulate: bool) -> list[str]:
    torch.manual_seed(0)
    model, _ = build_model()
    plan = solve(model, torch.zeros(1, 3, 128, 128), device=device)
    predicted = plan.predicted.peak_bytes - plan.predicted.resident_bytes
    bits = plan.device.bits
    row = [device, f"{bits.weight}/{bits.activation}/{bits.backward}", plan.device.executor.value]
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        inputs = torch.randn(steps, 1, 3, 128, 128)
        library = export_c(model, plan, directory, inputs.flatten(0, 1))
        write_batches(directory, inputs.numpy(), np.zeros((steps, 1), "int32"), 0.01)
        host = run_on_host(directory)
        row += ["int8" if library.code.quant else "float32", format_bytes(plan.predicted.peak_bytes)]
        gap = f"{host.arena_high_water / predicted - 1:+.3%}"
        row += [format_bytes(predicted), format_bytes(library.arena_bytes), gap]
        core = CORES.get(device)
        if not emulate or core is None:
            return [*row, "not emulated", "", "", ""]
        try:
            board = run_on_board(directory, core, plan.device.sram, plan.device.flash)
        except BudgetPlanError as err:
            return [*row, str(err).split("board's ")[-1], "", "", ""]  # which memory, and by how much
        stack, data, bss = board.stack_high_water or 0, board.data_bytes or 0, board.bss_bytes or 0
        used = f"{format_bytes(stack)} / {format_bytes(data)} / {format_bytes(bss)}"
        sram = f"{(stack + data + bss) / plan.device.sram:.1%}"
        return [*row, format_bytes(board.arena_high_water), used, sram, f"{board.flash_bytes / plan.device.flash:.1%}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", help="comma-separated profile names (default: every microcontroller profile)")
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    names = args.devices.split(",") if args.devices else [
        p.name for p in shipped_devices() if p.frozen_weights is FrozenWeights.FLASH
    ]  # fmt: skip
    missing = emulator_missing()
    if missing:
        print(f"emulated boards skipped: {missing}")
    head = ["profile", "bits w/a/g", "executor", "stored", "plan peak", "predicted arena", "layout",
            "measured - predicted", "on the board", "stack / .data / .bss", "of SRAM", "of flash"]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for name in names:
        print("| " + " | ".join(measure(name, args.steps, missing is None)) + " |", flush=True)


if __name__ == "__main__":
    main()
