"""``export_c``: a plan's training step as a self-contained C99 library (docs/device.md).

The directory written holds ``bp_model.h`` / ``bp_model.c`` (the network, its
parameters and the step) and ``bp_runtime.h`` / ``bp_runtime.c`` (the kernels), which
need nothing but libc and libm, and ``bp_board.ld``, a linker script with the profile's
SRAM and flash. The channels a layer trains start as the plan's kept
channels (the largest weight norm, as the callback's default sampler keeps them);
``bp_set_channels`` and ``bp_redraw`` change them.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from budgetplan.codegen.board import linker_script
from budgetplan.codegen.code import Parameters, StepCode
from budgetplan.codegen.emit import header, source
from budgetplan.codegen.graph import Node, model_graph
from budgetplan.codegen.patches import PatchStage, patch_stage
from budgetplan.codegen.quantize import NUMERICS, Quantization, calibrate, numerics_for, quantize_weight
from budgetplan.codegen.schedule import Schedule, Trained, step_schedule
from budgetplan.errors import ModelError, PlanError
from budgetplan.files import write_atomic
from budgetplan.plan.model import Plan
from budgetplan.quoting import quote
from budgetplan.strategies import STRATEGIES
from budgetplan.training.channels import channel_norms
from budgetplan.training.fold import fold_batchnorm

RUNTIME = Path(__file__).resolve().parent / "runtime"
FILES = ("bp_model.h", "bp_model.c", "bp_runtime.h", "bp_runtime.c", "bp_board.ld")
CALIBRATION = 8  # samples the int8 scales are calibrated on when no example is given


@dataclass(frozen=True)
class CLibrary:
    """What ``export_c`` wrote: the files, the arena's size and the layout behind it, and
    what it was made from (for ``budgetplan.codegen.reference``)."""

    files: tuple[Path, ...]
    arena_bytes: int
    schedule: Schedule
    selection: dict[str, list[int]]
    code: StepCode


def export_c(
    model: nn.Module,
    plan: Plan,
    out: str | Path,
    example_input: torch.Tensor | None = None,
    clip_ratio: float | None = None,
    numerics: str | None = None,
) -> CLibrary:
    """Write the C library of ``plan``'s training step for ``model`` (pretrained values as
    they are; BatchNorm folded into a copy) into the directory ``out``. ``clip_ratio``: the
    callback's (default: the default strategy's; 0 never clips). ``numerics``: ``int8``
    (weights and activations stored 8-bit, activation scales calibrated on
    ``example_input``, a batch like the data it will train on; without one, on
    ``CALIBRATION`` standard normal samples) or ``float32``; by default what the plan's
    profile counts."""
    ratio = STRATEGIES["budgetplan"].clip_ratio if clip_ratio is None else clip_ratio
    numerics = numerics or numerics_for(plan.device.bits.weight, plan.device.bits.activation)
    if numerics not in NUMERICS:
        raise PlanError(f"numerics must be one of {', '.join(NUMERICS)}, not {quote(numerics)}")
    example = example_input if example_input is not None else torch.zeros(1, *plan.input_shape)
    work = fold_batchnorm(copy.deepcopy(model).eval(), example[:1])
    nodes = model_graph(work, example[:1])
    modules = dict(work.named_modules())
    by_module = {node.module: node for node in nodes if node.module}
    trained, selection = _trained(plan, by_module, modules)
    int8_gradients = numerics == "int8" and plan.device.bits.backward == 8  # else float32, as the profile prices
    stored = 1 if numerics == "int8" else 4
    patch = _patch_stage(plan, nodes, by_module, trained) if numerics == "int8" else None
    inplace = plan.device.executor.inplace_depthwise
    schedule = step_schedule(nodes, trained, plan.batch_size, stored, 1 if int8_gradients else 4, patch, inplace)
    parameters = {node.index: _parameters(node, modules[node.module]) for node in nodes if node.module}
    classifier = max(by_module.values(), key=lambda node: node.index).index
    if numerics == "int8" and example_input is None:  # ImageNet-normalised images are about standard normal
        example = torch.randn(CALIBRATION, *plan.input_shape, generator=torch.Generator().manual_seed(0))
    quant = _quantization(nodes, modules, example, int8_gradients) if numerics == "int8" else None
    code = StepCode(
        nodes, schedule, parameters, trained, selection, plan.batch_size, ratio, classifier,
        f"budgetplan: training step of {plan.model} on {plan.device.name} ({plan.fingerprint}), {numerics}",
        quant, patch,
    )  # fmt: skip
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / "bp_model.h", header(code))
    write_atomic(directory / "bp_model.c", source(code))
    for name in ("bp_runtime.h", "bp_runtime.c"):
        shutil.copyfile(RUNTIME / name, directory / name)
    write_atomic(directory / "bp_board.ld", linker_script(plan.device.sram, plan.device.flash))
    names = {node.index: node.module for node in nodes}
    return CLibrary(
        tuple(directory / name for name in FILES),
        schedule.arena_bytes,
        schedule,
        {names[i]: channels for i, channels in selection.items()},
        code,
    )


def _patch_stage(
    plan: Plan, nodes: list[Node], by_module: dict[str, Node], trained: dict[int, Trained]
) -> PatchStage | None:
    """The plan's patch stage on the library's graph (int8 storage runs it), or None."""
    grid, until = plan.predicted.patch_grid, plan.predicted.patch_until
    if not grid or not until:
        return None
    if until not in by_module:
        raise PlanError(f"the plan's patch stage ends before {quote(until)}, a layer the model does not run")
    split = by_module[until].index
    if any(index < split for index in trained):
        raise PlanError(
            f"the plan trains a layer before its patch stage ends ({quote(until)}): those layers are frozen"
        )
    return patch_stage(nodes, split, grid)


def _quantization(
    nodes: list[Node], modules: dict[str, nn.Module], example: torch.Tensor, gradients: bool
) -> Quantization:
    """The int8 codes and scales of every weight, and the activation scales on ``example``."""
    if nodes[-1].kind != "linear":
        raise ModelError("int8 export: the network must end in a Linear layer (its logits stay float32)")
    weights = {}
    for node in nodes:
        if node.module:
            module = modules[node.module]
            bias = module.bias if isinstance(module.bias, torch.Tensor) else None
            weights[node.index] = (_tensor(module, "weight").detach(), None if bias is None else bias.detach())
    with torch.no_grad():
        activation = calibrate(nodes, weights, example.detach().float())
    quantized = {index: quantize_weight(weight) for index, (weight, _) in weights.items()}
    scales = {i: unit_scales for i, (_, unit_scales) in quantized.items()}
    return Quantization(activation, scales, {i: codes for i, (codes, _) in quantized.items()}, gradients)


def _trained(
    plan: Plan, by_module: dict[str, Node], modules: dict[str, nn.Module]
) -> tuple[dict[int, Trained], dict[int, list[int]]]:
    trained: dict[int, Trained] = {}
    selection: dict[int, list[int]] = {}
    for layer in plan.updated():
        node = by_module.get(layer.name)
        if node is None:
            raise PlanError(f"plan layer {quote(layer.name)} is not a conv or linear layer the model runs")
        channels = layer.channels if layer.update == "weight" else 0
        trained[node.index] = Trained(channels, layer.bias)
        if channels:
            norms = channel_norms(_tensor(modules[layer.name], "weight"), layer.total_channels, node.groups)
            selection[node.index] = sorted(torch.topk(norms, channels).indices.tolist())
    return trained, selection


def _parameters(node: Node, module: nn.Module) -> Parameters:
    bias = module.bias if isinstance(module.bias, torch.Tensor) else None
    for name, tensor in (("weight", _tensor(module, "weight")), ("bias", bias)):
        if tensor is not None and not bool(torch.isfinite(tensor).all()):
            raise ModelError(f"layer {quote(node.module)}: its {name} holds values that are not finite")
    return Parameters(node.module, _values(_tensor(module, "weight")), _values(bias) if bias is not None else None)


def _tensor(module: nn.Module, name: str) -> torch.Tensor:
    value = getattr(module, name)
    assert isinstance(value, torch.Tensor)
    return value


def _values(tensor: torch.Tensor) -> list[float]:
    return tensor.detach().float().flatten().tolist()
