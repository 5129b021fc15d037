"""The ``budgetplan`` command: solve, import-scheme, devices, validate, profile, sweep, show,
compare, export, check.

User mistakes (unknown device, bad profile, infeasible budget, ...) print one line on
stderr and exit with status 2; torch is imported only by the commands that need it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import yaml

from budgetplan.arguments import build_parser, planner_arguments
from budgetplan.device.profile import load_device, shipped_devices
from budgetplan.errors import BudgetPlanError, InfeasibleError
from budgetplan.files import DATA_FORMATS, PLOT_FORMATS, OutputFile, output_file
from budgetplan.quoting import one_line

if TYPE_CHECKING:
    from budgetplan.plan.model import Plan

MAX_MESSAGE = 2000  # characters of an error line; values in it are quoted short already
# what each command's --out holds, and the extensions that name its format (None: any name)
_OUT_FILES = {"solve": "plan file", "import-scheme": "plan file", "importance": "importance file", "export": "export"}


def _emit(data: Any, fmt: str, text: str) -> None:
    if fmt == "json":
        print(json.dumps(data, indent=2))
    elif fmt == "yaml":
        print(yaml.safe_dump(data, sort_keys=False), end="")
    else:
        print(text)


def _device(args: argparse.Namespace) -> Any:
    """The profile of ``--device`` (cortex-m7 by default), with ``--executor`` in place of
    its own executor when given."""
    import dataclasses

    from budgetplan.device.profile import Executor

    device = load_device(args.device or "cortex-m7")
    if getattr(args, "executor", None):
        device = dataclasses.replace(device, executor=Executor.from_str(args.executor))
    return device


def _smaller_input(args: argparse.Namespace, problem: Any, err: InfeasibleError) -> InfeasibleError:
    """``err`` with the smallest budget at a smaller input (``with_smaller_input``)."""
    from budgetplan.planning.diagnose import smallest_budget, with_smaller_input
    from budgetplan.planning.problem import Problem
    from budgetplan.zoo.models import parse_input_size

    def smallest_at(shape: tuple[int, ...]) -> float | None:
        smaller = argparse.Namespace(**{**vars(args), "input_size": "x".join(map(str, shape))})
        costs = _traced(smaller, problem.device, warn=False)
        return smallest_budget(Problem.from_costs(costs, problem.device, args.importance, **planner_arguments(args)))

    return with_smaller_input(err, parse_input_size(args.input_size), smallest_at)


def _traced(args: argparse.Namespace, device: Any, warn: bool = True) -> Any:
    import torch

    from budgetplan.costs.build import layer_costs
    from budgetplan.costs.example import check_input_fits, other_paths
    from budgetplan.zoo.models import build_model, parse_input_size

    if args.num_classes < 1:
        raise BudgetPlanError(f"--num-classes must be at least 1, got {args.num_classes}")
    shape = parse_input_size(args.input_size)
    model, name = build_model(args.model, args.num_classes, args.width_mult)
    check_input_fits(model, shape)
    example = torch.zeros(1, *shape)
    costs = layer_costs(model, example, device, model_name=name)
    paths = other_paths(model, example) if warn else None
    if paths is not None:  # the plan names the layers of the zero input's path
        print(f"budgetplan: warning: {name}'s forward takes another path on another input: {_paths(paths)}; "
              "the plan is for the path of a zero input, and training on another path is refused "
              "(BudgetPlanCallback solves on a training batch)", file=sys.stderr)  # fmt: skip
    return costs


def _paths(paths: tuple[list[str], list[str]]) -> str:
    more, fewer = paths
    return "; ".join(
        f"{what} {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}"
        for what, names in (("runs", more), ("skips", fewer))
        if names
    )


def _cmd_solve(args: argparse.Namespace) -> None:
    from budgetplan.planning.assemble import plan_problem
    from budgetplan.planning.problem import Problem

    device = _device(args)
    problem = Problem.from_costs(_traced(args, device), device, args.importance, **planner_arguments(args))
    try:
        plan = plan_problem(problem)
    except InfeasibleError as err:
        raise _smaller_input(args, problem, err) from None
    if plan.exceeds_device:
        free = device.sram - device.reserved
        print(f"budgetplan: warning: --budget is above {device.name}'s free SRAM ({free} bytes)", file=sys.stderr)
    _write_plan(plan, args)


def _write_plan(plan: Any, args: argparse.Namespace) -> None:
    """Save the plan if asked (atomically), then print it in the format asked for."""
    from budgetplan.report.text import render_plan

    if args.out:
        plan.save(args.outputs["out"].given)
    text = render_plan(plan, args.all_layers)
    if args.out:
        text += f"\nplan written to {args.out}"
    _emit(plan.to_dict(), args.format, text)


def _cmd_import_scheme(args: argparse.Namespace) -> None:
    from budgetplan.interop.scheme import load_scheme
    from budgetplan.interop.tiny_training import plan_from_scheme
    from budgetplan.units import format_bytes

    device = _device(args)
    scheme = load_scheme(args.scheme)  # a bad file fails before the model is traced
    costs = _traced(args, device)
    plan = plan_from_scheme(scheme, costs, device, args.batch_size, args.budget, args.accounting)
    if plan.predicted.peak_bytes > plan.budget_bytes:
        print(
            f"budgetplan: warning: the scheme's peak memory {format_bytes(plan.predicted.peak_bytes)} is above "
            f"the budget of {format_bytes(plan.budget_bytes)} on {device.name}",
            file=sys.stderr,
        )
    _write_plan(plan, args)


def _cmd_devices(args: argparse.Namespace) -> None:
    from budgetplan.report.text import render_devices

    if args.show:
        profile = load_device(args.show)
        _emit(profile.to_dict(), "json" if args.format == "json" else "yaml", "")
        return
    devices = shipped_devices()
    data = [{**d.to_dict(), "sram_bytes": d.sram, "flash_bytes": d.flash, "budget_bytes": d.budget} for d in devices]
    _emit(data, args.format, render_devices(devices))


def _cmd_profile(args: argparse.Namespace) -> None:
    if args.list_models:
        import torchvision

        print("\n".join(torchvision.models.list_models(module=torchvision.models)))
        return
    from budgetplan.report.text import render_costs

    device = _device(args) if args.device or args.executor else None
    costs = _traced(args, device)
    _emit([layer.to_dict() for layer in costs.layers], args.format, render_costs(costs))


def _cmd_show(args: argparse.Namespace) -> None:
    from budgetplan.plan.model import Plan
    from budgetplan.report.text import render_plan

    plan = Plan.load(args.plan)
    text = render_plan(plan, args.all_layers)
    if args.plot:
        from budgetplan.report.plots import plot_plan

        args.outputs["plot"].write(plot_plan(plan, args.outputs["plot"].format))
        text += f"\nplot written to {args.plot}"
    _emit(plan.to_dict(), args.format, text)


def _cmd_validate(args: argparse.Namespace) -> None:
    from budgetplan.device.profile import load_profile_file
    from budgetplan.units import format_bytes

    profile = load_profile_file(args.profile)
    text = (
        f"{args.profile}: valid profile '{profile.name}': {format_bytes(profile.sram)} SRAM, "
        f"{format_bytes(profile.flash)} flash, budget {format_bytes(profile.budget)}"
    )
    _emit({"valid": True, "profile": profile.to_dict()}, args.format, text)


def _cmd_sweep(args: argparse.Namespace) -> None:
    import dataclasses

    from budgetplan.planning.problem import Problem
    from budgetplan.planning.sweep import parse_budgets, sweep
    from budgetplan.report.text import render_sweep

    budgets = parse_budgets(args.budgets)
    device = _device(args)
    costs = _traced(args, device)
    options = {"batch_size": args.batch_size, "time_limit": args.time_limit, "verbose": args.verbose}
    options["expressible"] = args.expressible
    problem = Problem.from_costs(costs, device, args.importance, **options)

    def progress(i: int, n: int, budget: int) -> None:
        if not args.quiet:
            print(f"budgetplan: solving {i + 1}/{n} at {budget} bytes", file=sys.stderr, flush=True)

    rows = sweep(problem, budgets, progress)
    text = render_sweep(rows, f"{costs.model} on {device.name}")
    if args.plot:
        from budgetplan.report.plots import plot_sweep

        plot = args.outputs["plot"]
        plot.write(plot_sweep(rows, f"{costs.model} on {device.name}", plot.format))
        text += f"\nplot written to {args.plot}"
    data = {"device": device.name, "model": costs.model, "rows": [dataclasses.asdict(r) for r in rows]}
    _emit(data, args.format, text)


def _cmd_importance(args: argparse.Namespace) -> None:
    import torch

    from budgetplan.importance import get_measure
    from budgetplan.report.text import table
    from budgetplan.training.contribution import STEPS
    from budgetplan.training.measure import measure_importance
    from budgetplan.zoo.datasets import dataset_from_argument
    from budgetplan.zoo.models import build_model, parse_input_size

    shape = parse_input_size(args.input_size)
    if args.pretrained:
        if args.model != "mobilenet_v2" or args.width_mult not in (None, 1.0):
            raise BudgetPlanError("--pretrained: the offline ImageNet weights are for mobilenet_v2 at width 1.0")
        from budgetplan.zoo.pretrained import imagenet_mobilenet_v2

        model, name = imagenet_mobilenet_v2(args.num_classes), "mobilenet_v2 (ImageNet)"
    else:
        model, name = build_model(args.model, args.num_classes, args.width_mult)
    dataset = dataset_from_argument(args.data, shape)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True)
    steps = args.steps or (STEPS if get_measure(args.measure).values_choices else 100)
    measured = measure_importance(model, loader, steps, torch.zeros(1, *shape), args.lr, f"{args.data}", args.measure)
    measured.save(args.outputs["out"].given)
    rows = [[n, f"{100 * s:.2f}%", f"{100 * c:.1f}%"] for n, s, c in measured.ranking()[:15]]
    text = "\n".join(
        [
            f"{name}: {args.measure}, {measured.steps} steps on {args.data}; the {len(measured.top_layers())} "
            f"most important layers hold 97% (of {len(measured.ranking())})",
            "",
            table(["layer", "share", "cumulative"], rows, [False, True, True]),
            f"importance written to {args.out}",
        ]
    )
    print(text)


def _cmd_compare(args: argparse.Namespace) -> None:
    from budgetplan.plan.model import Plan
    from budgetplan.report.text import table

    first, second = Plan.load(args.first), Plan.load(args.second)
    rows = first.differences(second)
    data = [{"what": what, "first": a, "second": b} for what, a, b in rows]
    text = table(["", args.first, args.second], rows) if rows else "the two plans are the same"
    _emit(data, args.format, text)


def _cmd_export(args: argparse.Namespace) -> None:
    from budgetplan.plan.model import Plan
    from budgetplan.report.export import export_text

    plan = Plan.load(args.plan)
    if args.format == "c":
        _export_library(args, plan)
        return
    text = export_text(plan, args.format, args.plan)
    if args.out:
        args.outputs["out"].write(text)
    else:
        print(text, end="")


def _export_library(args: argparse.Namespace, plan: Plan) -> None:
    from budgetplan.codegen.library import export_c
    from budgetplan.units import format_bytes
    from budgetplan.zoo.models import model_for_plan

    if not args.out:
        raise BudgetPlanError("--format c writes a directory of C files: name it with --out DIR")
    model, weights = model_for_plan(plan, args.model, args.weights)
    library = export_c(model, plan, args.out, _calibration(args.calibration), numerics=args.numerics)
    predicted = plan.predicted.peak_bytes - plan.predicted.resident_bytes
    numerics = "int8" if library.code.quant else "float32"
    print(
        f"C library written to {args.out}: {', '.join(path.name for path in library.files)}\n"
        f"{numerics}; arena {format_bytes(library.arena_bytes)} (the plan predicts {format_bytes(predicted)} besides "
        f"the trained parameters); {len(library.selection)} layers train channels; weights: {weights}"
    )
    if library.arena_bytes > 1.01 * predicted:
        print(f"budgetplan: warning: {_library_gap(plan, numerics)}: on the board it needs more than the plan",
              file=sys.stderr)  # fmt: skip


def _calibration(path: str | None) -> Any:
    """The samples ``--calibration`` names, or None."""
    if path is None:
        return None
    import torch

    try:
        samples = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file: say which and what it must hold
        raise BudgetPlanError(f"--calibration: cannot read {path!r} ({err}); save a tensor with torch.save") from None
    if not isinstance(samples, torch.Tensor) or samples.dim() < 2 or not samples.is_floating_point():
        raise BudgetPlanError(f"--calibration: {path!r} holds no float tensor of samples (N x C x H x W)")
    return samples


def _library_gap(plan: Plan, numerics: str) -> str:
    """Why the library's arena is larger than the plan's prediction."""
    bits, device = plan.device.bits, plan.device
    stored = 8 if numerics == "int8" else 32
    reasons = ["the library runs layer by layer" + (" (no patch stage)" if plan.predicted.patch_grid else "")]
    if device.executor.value != "layer":
        reasons[0] += f", {device.name} counts the {device.executor.value} executor"
    if stored != bits.activation:
        reasons.append(f"stores {stored}-bit activations where {device.name} counts {bits.activation}-bit")
    if bits.backward != 32:
        reasons.append(f"passes float32 gradients where {device.name} counts {bits.backward}-bit")
    return "; ".join(reasons)


def _cmd_check(args: argparse.Namespace) -> int:
    from budgetplan.gate.command import run_check

    return run_check(args, lambda device: _traced(args, device, warn=False))


def _outputs(args: argparse.Namespace) -> dict[str, OutputFile]:
    """The files this command will write, checked: ``out`` and ``plot``."""
    outputs = {}
    if getattr(args, "plot", None) is not None:
        outputs["plot"] = output_file(args.plot, "plot", PLOT_FORMATS)
    if getattr(args, "junit", None) is not None:
        outputs["junit"] = output_file(args.junit, "JUnit report", {".xml": "junit"})
    if getattr(args, "out", None) is not None:
        what = _OUT_FILES[args.command]
        if what != "export" or args.format != "c":  # a C library's --out is a directory
            outputs["out"] = output_file(args.out, what, DATA_FORMATS if what != "export" else None)
    return outputs


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {
        "solve": _cmd_solve,
        "import-scheme": _cmd_import_scheme,
        "devices": _cmd_devices,
        "validate": _cmd_validate,
        "profile": _cmd_profile,
        "sweep": _cmd_sweep,
        "show": _cmd_show,
        "importance": _cmd_importance,
        "compare": _cmd_compare,
        "export": _cmd_export,
        "check": _cmd_check,
    }
    try:
        args.outputs = _outputs(args)  # a file that cannot be written fails before the work
        code = commands[args.command](args)
    except BudgetPlanError as err:
        message = one_line(str(err))
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE] + f" ... ({len(message)} characters)"
        print(f"budgetplan: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
