"""The ``budgetplan`` command: solve, devices, validate, profile, sweep, show, compare, export.

User mistakes (unknown device, bad profile, infeasible budget, ...) print one line on
stderr and exit with status 2; torch is imported only by the commands that need it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import yaml

from budgetplan.device.profile import load_device, shipped_devices
from budgetplan.errors import BudgetPlanError
from budgetplan.files import writable_target
from budgetplan.planning.options import Solver, Utility
from budgetplan.units import parse_bytes, parse_seconds

FORMATS = ("table", "yaml", "json")
MAX_SWEEP = 64  # budgets one sweep solves (each is a solve of up to --time-limit seconds)


def _size(text: str) -> int:
    try:
        return parse_bytes(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _seconds(text: str) -> float:
    try:
        return parse_seconds(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of at least 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of at least 1")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive, finite number")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"budgetplan: error: {message} (see {self.prog} --help)\n")


def _ratios(text: str) -> tuple[float, ...]:
    try:
        values = []
        for part in text.split(","):
            num, _, den = part.strip().partition("/")
            values.append(float(num) / float(den) if den else float(num))
        return tuple(values)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r}: expected fractions such as 1/16,1/4,1/2,1") from None


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default="mobilenet_v2", help="torchvision model name or package.module:factory")
    group.add_argument("--input-size", default="128", help="128, 96x128 or 3x128x128 (default 128)")
    group.add_argument("--num-classes", type=_count, default=10, help="classes of the new head (default 10)")
    group.add_argument("--width-mult", type=_positive, help="width of mobilenet_v2 (default 0.35 for it)")


def _format_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="budgetplan",
        description="Plan sparse on-device fine-tuning that fits a device's memory budget.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    solve = sub.add_parser("solve", help="choose the layers and channels to train on a device")
    solve.add_argument("--device", default="cortex-m7", help="device name, alias or profile YAML (default cortex-m7)")
    _model_arguments(solve)
    plan = solve.add_argument_group("planning")
    plan.add_argument("--budget", type=_size, help="memory budget, e.g. 256KB (default: the device's)")
    plan.add_argument("--training-memory", type=_size, help="also cap the published accounting, e.g. 100KB")
    plan.add_argument("--batch-size", type=_count, default=1, help="samples per step (default 1)")
    plan.add_argument("--epochs", type=_count, default=10, help="epochs E of the coverage utility (default 10)")
    plan.add_argument("--utility", choices=Utility.choices(), default=Utility.COVERAGE.value)
    plan.add_argument("--ratios", type=_ratios, help="channel ratio grid (default 1/16,1/8,1/4,1/2,3/4,1)")
    plan.add_argument("--max-layers", type=_count, help="update at most this many layers")
    plan.add_argument("--require", action="append", help="layer pattern trained in full (default: the classifier)")
    plan.add_argument("--no-require", action="store_true", help="do not force the classifier to train")
    plan.add_argument("--include", action="append", default=[], help="only layers matching this pattern")
    plan.add_argument("--exclude", action="append", default=[], help="never layers matching this pattern")
    plan.add_argument("--max-step-latency", type=_seconds, help="compute limit per step, e.g. 2s")
    plan.add_argument(
        "--importance",
        help="importance YAML file, 'shipped' (the table shipped for the model) or 'prior' (the default)",
    )
    plan.add_argument("--time-limit", type=_positive, default=10.0, help="solver time limit in seconds (default 10)")
    plan.add_argument("--solver", choices=Solver.choices(), default=Solver.AUTO.value)
    plan.add_argument("--verbose", action="store_true", help="show the solver's log (on stderr)")
    solve.add_argument("--out", help="write the plan to this YAML file (atomically)")
    solve.add_argument("--all-layers", action="store_true", help="list frozen layers too")
    _format_argument(solve)

    devices = sub.add_parser("devices", help="list the device profiles")
    devices.add_argument("--show", metavar="DEVICE", help="print one profile in full (name, alias or path)")
    _format_argument(devices)

    validate = sub.add_parser("validate", help="check a device profile file")
    validate.add_argument("profile", help="profile YAML file (may use extends:)")
    _format_argument(validate)

    sweep = sub.add_parser("sweep", help="solve at a range of budgets; table and plot")
    sweep.add_argument("--device", default="cortex-m7", help="device name, alias or profile YAML (default cortex-m7)")
    sweep.add_argument("--budgets", required=True, help="LOW:HIGH:N (log-spaced) or a list, e.g. 64KB:1MB:8")
    _model_arguments(sweep)
    sweep.add_argument("--batch-size", type=_count, default=1, help="samples per step (default 1)")
    sweep.add_argument(
        "--importance",
        help="importance YAML file, 'shipped' (the table shipped for the model) or 'prior' (the default)",
    )
    sweep.add_argument("--time-limit", type=_positive, default=10.0, help="solver time limit per budget (default 10)")
    sweep.add_argument("--plot", help="write a PNG of objective and trained fraction against budget")
    sweep.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    sweep.add_argument("--verbose", action="store_true", help="show the solver's log (on stderr)")
    _format_argument(sweep)

    importance = sub.add_parser("importance", help="measure layer importance by fine-tuning on data")
    _model_arguments(importance)
    importance.add_argument("--pretrained", action="store_true", help="ImageNet weights (mobilenet_v2, width 1.0)")
    importance.add_argument("--data", default="digits", help="'digits' (offline) or an ImageFolder directory")
    importance.add_argument("--steps", type=_count, default=100, help="optimizer steps of dense fine-tuning")
    importance.add_argument("--batch-size", type=_count, default=32)
    importance.add_argument("--lr", type=_positive, default=0.005)
    importance.add_argument("--out", required=True, help="importance YAML to write")

    compare = sub.add_parser("compare", help="what differs between two plans")
    compare.add_argument("first", help="plan YAML file")
    compare.add_argument("second", help="plan YAML file")
    _format_argument(compare)

    export = sub.add_parser("export", help="write a plan for an on-device training runtime")
    export.add_argument("plan", help="plan YAML file")
    export.add_argument("--format", choices=("c-header", "json"), default="c-header")
    export.add_argument("--out", help="file to write (default: standard output)")

    profile = sub.add_parser("profile", help="print a model's per-layer cost table")
    profile.add_argument("--device", help="device whose executor model sets the working buffers")
    profile.add_argument("--list-models", action="store_true", help="list the torchvision model names")
    _model_arguments(profile)
    _format_argument(profile)

    show = sub.add_parser("show", help="print a saved plan")
    show.add_argument("plan", help="plan YAML file")
    show.add_argument("--all-layers", action="store_true", help="list frozen layers too")
    show.add_argument("--plot", help="write a PNG: channels per layer, memory by kind against the budget")
    _format_argument(show)
    return parser


def _emit(data: Any, fmt: str, text: str) -> None:
    if fmt == "json":
        print(json.dumps(data, indent=2))
    elif fmt == "yaml":
        print(yaml.safe_dump(data, sort_keys=False), end="")
    else:
        print(text)


def _traced(args: argparse.Namespace, device: Any) -> Any:
    import torch

    from budgetplan.costs.build import layer_costs
    from budgetplan.zoo.models import build_model, parse_input_size

    if args.num_classes < 1:
        raise BudgetPlanError(f"--num-classes must be at least 1, got {args.num_classes}")
    shape = parse_input_size(args.input_size)
    model, name = build_model(args.model, args.num_classes, args.width_mult)
    return layer_costs(model, torch.zeros(1, *shape), device, model_name=name)


def _cmd_solve(args: argparse.Namespace) -> None:
    from budgetplan.plan.model import Plan
    from budgetplan.planning.assemble import plan_from_costs
    from budgetplan.planning.importance import resolve_importance
    from budgetplan.planning.options import DEFAULT_RATIOS, PlannerOptions

    device = load_device(args.device)
    costs = _traced(args, device)
    importance = resolve_importance(args.importance, costs)
    require = () if args.no_require else (tuple(args.require) if args.require else None)
    options = PlannerOptions(
        budget=args.budget,
        training_memory=args.training_memory,
        ratios=args.ratios or DEFAULT_RATIOS,
        epochs=args.epochs,
        utility=args.utility,
        max_layers=args.max_layers,
        require=require,
        include=tuple(args.include),
        exclude=tuple(args.exclude),
        batch_size=args.batch_size,
        max_step_latency=args.max_step_latency,
        time_limit=args.time_limit,
        solver=args.solver,
        verbose=args.verbose,
    )
    plan: Plan = plan_from_costs(costs, device, importance, options)
    if plan.exceeds_device:
        free = device.sram - device.reserved
        print(f"budgetplan: warning: --budget is above {device.name}'s free SRAM ({free} bytes)", file=sys.stderr)
    if args.out:
        plan.save(args.out)
    from budgetplan.report.text import render_plan

    text = render_plan(plan, args.all_layers)
    if args.out:
        text += f"\nplan written to {args.out}"
    _emit(plan.to_dict(), args.format, text)


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

    device = load_device(args.device) if args.device else None
    costs = _traced(args, device)
    _emit([layer.to_dict() for layer in costs.layers], args.format, render_costs(costs))


def _cmd_show(args: argparse.Namespace) -> None:
    from budgetplan.plan.model import Plan
    from budgetplan.report.text import render_plan

    plan = Plan.load(args.plan)
    text = render_plan(plan, args.all_layers)
    if args.plot:
        from budgetplan.report.plots import plot_plan

        plot_plan(plan, args.plot)
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

    from budgetplan.planning.importance import resolve_importance
    from budgetplan.planning.options import PlannerOptions
    from budgetplan.planning.sweep import parse_budgets, sweep
    from budgetplan.report.text import render_sweep

    budgets = parse_budgets(args.budgets)
    if len(budgets) > MAX_SWEEP:
        raise BudgetPlanError(f"--budgets {args.budgets!r}: {len(budgets)} budgets; a sweep solves at most {MAX_SWEEP}")
    device = load_device(args.device)
    costs = _traced(args, device)
    importance = resolve_importance(args.importance, costs)
    options = PlannerOptions(batch_size=args.batch_size, time_limit=args.time_limit, verbose=args.verbose)

    def progress(i: int, n: int, budget: int) -> None:
        if not args.quiet:
            print(f"budgetplan: solving {i + 1}/{n} at {budget} bytes", file=sys.stderr, flush=True)

    rows = sweep(costs, device, budgets, importance, options, progress)
    text = render_sweep(rows, f"{costs.model} on {device.name}")
    if args.plot:
        from budgetplan.report.plots import plot_sweep

        plot_sweep(rows, args.plot, f"{costs.model} on {device.name}")
        text += f"\nplot written to {args.plot}"
    data = {"device": device.name, "model": costs.model, "rows": [dataclasses.asdict(r) for r in rows]}
    _emit(data, args.format, text)


def _cmd_importance(args: argparse.Namespace) -> None:
    import torch

    from budgetplan.report.text import table
    from budgetplan.training.measure import measure_importance
    from budgetplan.zoo.models import build_model, parse_input_size

    shape = parse_input_size(args.input_size)
    if args.pretrained:
        if args.model != "mobilenet_v2" or args.width_mult not in (None, 1.0):
            raise BudgetPlanError("--pretrained: the offline ImageNet weights are for mobilenet_v2 at width 1.0")
        from budgetplan.zoo.pretrained import imagenet_mobilenet_v2

        model, name = imagenet_mobilenet_v2(args.num_classes), "mobilenet_v2 (ImageNet)"
    else:
        model, name = build_model(args.model, args.num_classes, args.width_mult)
    loader = torch.utils.data.DataLoader(_dataset(args.data, shape), batch_size=args.batch_size, shuffle=True)
    measured = measure_importance(model, loader, args.steps, torch.zeros(1, *shape), args.lr, f"{args.data}")
    measured.save(args.out)
    rows = [[n, f"{100 * s:.2f}%", f"{100 * c:.1f}%"] for n, s, c in measured.ranking()[:15]]
    text = "\n".join(
        [
            f"{name}: {measured.steps} steps on {args.data}; the {len(measured.top_layers())} most important "
            f"layers hold 97% (of {len(measured.ranking())})",
            "",
            table(["layer", "share", "cumulative"], rows, [False, True, True]),
            f"importance written to {args.out}",
        ]
    )
    print(text)


def _dataset(data: str, shape: tuple[int, ...]) -> Any:
    if data == "digits":
        from budgetplan.zoo.datasets import DigitsRGB

        return DigitsRGB("train", shape[-1])
    from pathlib import Path

    import torchvision
    from torchvision import transforms

    if not Path(data).is_dir():
        raise BudgetPlanError(f"--data {data!r}: give 'digits' or a directory of class folders (ImageFolder)")
    prepare = transforms.Compose([transforms.Resize(shape[-2:]), transforms.ToTensor()])
    return torchvision.datasets.ImageFolder(data, transform=prepare)


def _cmd_compare(args: argparse.Namespace) -> None:
    from budgetplan.plan.model import Plan
    from budgetplan.report.text import table

    first, second = Plan.load(args.first), Plan.load(args.second)
    rows = first.differences(second)
    data = [{"what": what, "first": a, "second": b} for what, a, b in rows]
    text = table(["", args.first, args.second], rows) if rows else "the two plans are the same"
    _emit(data, args.format, text)


def _cmd_export(args: argparse.Namespace) -> None:
    from pathlib import Path

    from budgetplan.files import write_atomic
    from budgetplan.plan.model import Plan
    from budgetplan.report.export import c_header, plan_table

    plan = Plan.load(args.plan)
    text = c_header(plan) if args.format == "c-header" else json.dumps(plan_table(plan), indent=2) + "\n"
    if args.out:
        write_atomic(Path(args.out), text)
    else:
        print(text, end="")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {
        "solve": _cmd_solve,
        "devices": _cmd_devices,
        "validate": _cmd_validate,
        "profile": _cmd_profile,
        "sweep": _cmd_sweep,
        "show": _cmd_show,
        "importance": _cmd_importance,
        "compare": _cmd_compare,
        "export": _cmd_export,
    }
    try:
        for output in ("out", "plot"):  # a file that cannot be written fails before the work
            if getattr(args, output, None) is not None:
                writable_target(getattr(args, output))
        commands[args.command](args)
    except BudgetPlanError as err:
        print(f"budgetplan: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
