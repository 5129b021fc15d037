"""Build an exported C library with the runner ``bp_run.c`` and run it: on this machine
(``gcc``), or on an emulated Cortex-M (``arm-none-eabi-gcc`` and ``qemu-system-arm``),
with the profile's SRAM as the linker's RAM region (docs/device.md).

On a board the program reports, from inside: the arena's high-water mark (the arena is
painted first), the stack's (painted below the stack pointer at start), and the linker
gives ``.data`` and ``.bss``. A plan whose memory does not fit the SRAM does not link.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from budgetplan.errors import BudgetPlanError

RUNNER = Path(__file__).resolve().parent / "runtime" / "bp_run.c"
STARTUPS = Path("/usr/share/doc/gcc-arm-none-eabi/examples/startup")  # Debian's gcc-arm-none-eabi
PACKAGES = "gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm"
STACK_BYTES = 8 * 1024
HEAP_BYTES = 8 * 1024  # newlib's stdio buffers for the semihosted files


@dataclass(frozen=True)
class Core:
    """A Cortex-M core: its compiler flags, its startup file, the QEMU board that emulates
    it and where that board's code and RAM are."""

    name: str
    flags: tuple[str, ...]
    startup: str
    machine: str
    flash_at: int = 0x00000000
    ram_at: int = 0x20000000


CORES = {
    "cortex-m7": Core("cortex-m7", ("-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-d16", "-mfloat-abi=hard"),
                      "startup_ARMCM7.S", "mps2-an500"),
    "cortex-m4": Core("cortex-m4", ("-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"),
                      "startup_ARMCM4.S", "mps2-an386"),
    # the AN505 starts in the Secure state at 0x10000000 and the program stays there, its RAM
    # the Secure alias of SSRAM2 and 3; the Armv7-M startup file runs unchanged on Armv8-M
    "cortex-m33": Core("cortex-m33", ("-mcpu=cortex-m33", "-mthumb", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard"),
                       "startup_ARMCM7.S", "mps2-an505", flash_at=0x10000000, ram_at=0x38000000),
    # Armv6-M code, soft float; QEMU has no Cortex-M0+ board with this much RAM, and the
    # AN385's Cortex-M3 runs Armv6-M code unchanged (the memory measured is the code's)
    "cortex-m0plus": Core("cortex-m0plus", ("-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft"),
                          "startup_ARMCM0.S", "mps2-an385"),
}  # fmt: skip


@dataclass(frozen=True)
class Run:
    """What a run printed and wrote: the loss per step, the parameters after the steps
    (float32, in ``bp_param`` order) and, on a board, the memory it used."""

    losses: list[float]
    parameters: np.ndarray
    arena_high_water: int
    stack_high_water: int | None = None
    data_bytes: int | None = None
    bss_bytes: int | None = None
    flash_bytes: int | None = None  # code, constants and .data's initial values


def emulator_missing() -> str | None:
    """Why the emulated runs cannot happen here, or None."""
    missing = [tool for tool in ("arm-none-eabi-gcc", "qemu-system-arm") if shutil.which(tool) is None]
    if missing or not STARTUPS.is_dir():
        return f"no {' or '.join(missing) or STARTUPS}: install Debian's {PACKAGES}"
    return None


def write_batches(directory: Path, inputs: np.ndarray, labels: np.ndarray, lr: float) -> None:
    """``bp_batches.bin``: ``inputs`` [steps, batch, ...] and ``labels`` [steps, batch]."""
    with open(directory / "bp_batches.bin", "wb") as file:
        file.write(np.array([inputs.shape[0]], "<i4").tobytes() + np.array([lr], "<f4").tobytes())
        for step in range(inputs.shape[0]):
            file.write(np.ascontiguousarray(inputs[step], "<f4").tobytes())
            file.write(np.ascontiguousarray(labels[step], "<i4").tobytes())


def run_on_host(directory: Path, timeout: float = 600) -> Run:
    """Build with the host's ``gcc`` and run in ``directory``."""
    sources = ["bp_model.c", "bp_runtime.c", str(RUNNER)]
    _call(["gcc", "-std=c99", "-O2", "-Wall", "-I.", *sources, "-lm", "-o", "bp_run"], directory, timeout)
    output = _call(["./bp_run"], directory, timeout)
    return _parse(output, directory)


def run_on_board(directory: Path, core: str, sram: int, flash: int, timeout: float = 600) -> Run:
    """Build for ``core`` with RAM of ``sram`` bytes and flash of ``flash``, and run under QEMU."""
    if core not in CORES:
        raise BudgetPlanError(f"no emulated board for {core!r}; choose one of {', '.join(CORES)}")
    target = CORES[core]
    script = linker_script(sram, flash, target.flash_at, target.ram_at)
    (directory / "bp_board.ld").write_text(script)  # this run's memory, not the export's
    command = [
        "arm-none-eabi-gcc", *target.flags, "-std=c99", "-O2", "-I.", f"-D__STACK_SIZE={STACK_BYTES}",
        "-D__HEAP_SIZE=0", "-D__STARTUP_CLEAR_BSS", "-D__START=bp_board_start", "-DBP_BOARD",
        "-x", "assembler-with-cpp", str(STARTUPS / target.startup),
        "-x", "none", "bp_model.c", "bp_runtime.c", str(RUNNER), "--specs=nano.specs", "--specs=rdimon.specs",
        "-u", "_printf_float", "-T", "bp_board.ld", "-Wl,--gc-sections", "-lm", "-o", "bp_run.elf",
    ]  # fmt: skip
    _call(command, directory, timeout)
    machine = ["qemu-system-arm", "-M", target.machine, "-nographic", "-monitor", "none"]
    semihosting = ["-semihosting-config", "enable=on,target=native", "-kernel", "bp_run.elf"]
    output = _call([*machine, *semihosting], directory, timeout)
    sizes = _call(["arm-none-eabi-size", "-A", "bp_run.elf"], directory, timeout)
    section = {m[1]: int(m[2]) for m in re.finditer(r"^(\.\w+)\s+(\d+)", sizes, re.M)}
    stack = re.search(r"^stack (\d+)", output, re.M)
    return dataclasses.replace(
        _parse(output, directory),
        stack_high_water=int(stack[1]) if stack else None,
        data_bytes=section.get(".data", 0),
        bss_bytes=section.get(".bss", 0),
        flash_bytes=sum(section.get(name, 0) for name in (".text", ".ARM.exidx", ".data")),
    )


def linker_script(sram: int, flash: int, flash_at: int = 0x00000000, ram_at: int = 0x20000000) -> str:
    """RAM of ``sram`` bytes at ``ram_at`` and flash of ``flash`` at ``flash_at`` (the
    Cortex-M defaults): what does not fit does not link. The heap (newlib's stdio buffers)
    and then the startup file's stack (``__STACK_SIZE``) follow ``.bss``."""
    return f"""/* budgetplan: the profile's memory as the linker's regions */
MEMORY
{{
  FLASH (rx) : ORIGIN = {flash_at:#010x}, LENGTH = {flash}
  RAM (rwx) : ORIGIN = {ram_at:#010x}, LENGTH = {sram}
}}
ENTRY(Reset_Handler)
SECTIONS
{{
  .text : {{ KEEP(*(.isr_vector)) *(.text*) *(.rodata*) KEEP(*(.init)) KEEP(*(.fini)) . = ALIGN(4); }} > FLASH
  .ARM.exidx : {{ *(.ARM.exidx*) }} > FLASH
  . = ALIGN(4);
  __etext = .;
  .data : AT (__etext)
  {{
    __data_start__ = .;
    *(.data*)
    . = ALIGN(4);
    PROVIDE_HIDDEN(__preinit_array_start = .); KEEP(*(.preinit_array)) PROVIDE_HIDDEN(__preinit_array_end = .);
    PROVIDE_HIDDEN(__init_array_start = .); KEEP(*(SORT(.init_array.*))) KEEP(*(.init_array))
    PROVIDE_HIDDEN(__init_array_end = .);
    PROVIDE_HIDDEN(__fini_array_start = .); KEEP(*(.fini_array)) PROVIDE_HIDDEN(__fini_array_end = .);
    . = ALIGN(4);
    __data_end__ = .;
  }} > RAM
  .bss (NOLOAD) : {{ . = ALIGN(4); __bss_start__ = .; *(.bss*) *(COMMON) . = ALIGN(4); __bss_end__ = .; }} > RAM
  .heap (NOLOAD) :
  {{
    . = ALIGN(8);
    __end__ = .;
    PROVIDE(end = .);
    KEEP(*(.heap*))
    . = . + {HEAP_BYTES};
    __HeapLimit = .;
    . = ALIGN(8);
    KEEP(*(.stack*))
  }} > RAM
  PROVIDE(__stack = __StackTop);
}}
"""


def _call(command: list[str], directory: Path, timeout: float) -> str:
    try:
        done = subprocess.run(command, cwd=directory, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BudgetPlanError(f"{command[0]} did not finish in {timeout:.0f} s") from None
    if done.returncode != 0:
        overflow = re.search(r"region `(RAM|FLASH)' overflowed by (\d+) bytes", done.stderr)
        if overflow:
            memory = "SRAM" if overflow[1] == "RAM" else "flash"
            raise BudgetPlanError(f"the program does not fit the board's {memory}: {overflow[2]} bytes over")
        raise BudgetPlanError(f"{command[0]} failed ({done.returncode}): {(done.stderr or done.stdout)[-1500:]}")
    return done.stdout


def _parse(output: str, directory: Path) -> Run:
    losses = [float(m[1]) for m in re.finditer(r"^step \d+ loss (\S+)", output, re.M)]
    arena = re.search(r"^arena (\d+) of", output, re.M)
    parameters = np.fromfile(directory / "bp_params.bin", dtype="<f4")
    return Run(losses, parameters, int(arena[1]) if arena else -1)
