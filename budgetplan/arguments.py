"""The ``budgetplan`` command line's flags: their types (checked as they are read) and the parser.

>>> build_parser().parse_args(["solve", "--budget", "300KB"]).budget
307200
"""

from __future__ import annotations

import argparse
import math
from typing import Any, NoReturn

from budgetplan.device.profile import Executor
from budgetplan.importance import DEFAULT_MEASURE, MEASURES
from budgetplan.plan.model import ACCOUNTINGS
from budgetplan.planning.options import DEFAULT_RATIOS, Runtime, Solver, Utility
from budgetplan.quoting import quote
from budgetplan.report.export import EXPORT_FORMATS
from budgetplan.units import parse_bytes, parse_seconds

FORMATS = ("table", "yaml", "json")


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


MAX_COUNT = 100_000  # classes, samples, epochs, steps: a larger count is a typing mistake


def _count(text: str) -> int:
    expected = f"expected a whole number from 1 to {MAX_COUNT:,}"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{quote(text)}: {expected}") from None
    if not 1 <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"{quote(text)}: {expected}")
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


def _expressible_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--expressible",
        choices=Runtime.choices(),
        help="only plans this runtime's format can say (tiny-training: a backward_config; docs/tiny-training.md)",
    )


def _accounting_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cap: bool = False) -> None:
    parser.add_argument(
        "--accounting",
        choices=ACCOUNTINGS,
        default=ACCOUNTINGS[0],
        help="what the plan reports as training memory: budgetplan's count or Sparse Update's (Lin et al. 2022)"
        + (", and what --training-memory caps" if cap else "")
        + " (default budgetplan)",
    )


def _executor_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--executor",
        choices=Executor.choices(),
        help="how the runtime runs layers, instead of the profile's: layer, inplace-dw, or patch "
        "(inplace-dw, and the leading frozen layers patch by patch)",
    )


def _share(text: str) -> float:
    """``5%`` or ``0.05``: a share, from 0 to 10 (1000%)."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a share such as 5% or 0.05") from None
    if not (math.isfinite(value) and 0 <= value <= 10):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a share from 0% to 1000%")
    return value


def _format_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")


def build_parser() -> argparse.ArgumentParser:
    """The ``budgetplan`` command line: one subcommand a job."""
    parser = _Parser(
        prog="budgetplan",
        description="Plan sparse on-device fine-tuning that fits a device's memory budget.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_add_solve, _add_import_scheme, _add_devices, _add_sweep, _add_importance, _add_plan_files, _add_check):
        add(sub)
    return parser


def _add_solve(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``solve``: plan for a device."""
    solve = sub.add_parser("solve", help="choose the layers and channels to train on a device")
    solve.add_argument("--device", default="cortex-m7", help="device name, alias or profile YAML (default cortex-m7)")
    _executor_argument(solve)
    _model_arguments(solve)
    plan = solve.add_argument_group("planning")
    plan.add_argument("--budget", type=_size, help="memory budget, e.g. 256KB (default: the device's)")
    plan.add_argument("--training-memory", type=_size, help="also cap the published accounting, e.g. 100KB")
    _accounting_argument(plan, cap=True)
    _expressible_argument(plan)
    plan.add_argument("--batch-size", type=_count, default=1, help="samples per step (default 1)")
    plan.add_argument("--epochs", type=_count, default=10, help="epochs E of the coverage utility (default 10)")
    plan.add_argument(
        "--utility",
        choices=Utility.choices(),
        default=Utility.LINEAR.value,
        help="value of training a fraction r of a layer's channels: linear, r (channels kept for the whole fit, "
        "the callback's default), or coverage, 1-(1-r)^E (channels redrawn every epoch)",
    )
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
    solve.add_argument("--out", help="write the plan to this file, .yaml or .json (atomically)")
    solve.add_argument("--all-layers", action="store_true", help="list frozen layers too")
    _format_argument(solve)


def _add_import_scheme(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``import-scheme``: a Sparse Update backward_config as a plan."""
    scheme = sub.add_parser(
        "import-scheme", help="make a plan from a tiny-training backward_config (Sparse Update, Lin et al. 2022)"
    )
    scheme.add_argument("scheme", help="YAML or JSON file: backward_config keys, at the top or under backward_config:")
    scheme.add_argument("--device", default="cortex-m7", help="device name, alias or profile YAML (default cortex-m7)")
    _executor_argument(scheme)
    _model_arguments(scheme)
    scheme.add_argument("--budget", type=_size, help="memory budget to report against (default: the device's)")
    scheme.add_argument("--batch-size", type=_count, default=1, help="samples per step (default 1)")
    _accounting_argument(scheme)
    scheme.add_argument("--out", help="write the plan to this file, .yaml or .json (atomically)")
    scheme.add_argument("--all-layers", action="store_true", help="list frozen layers too")
    _format_argument(scheme)


def _add_devices(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``devices``, ``validate`` and ``profile``: what a device and a model are."""
    devices = sub.add_parser("devices", help="list the device profiles")
    devices.add_argument("--show", metavar="DEVICE", help="print one profile in full (name, alias or path)")
    _format_argument(devices)

    validate = sub.add_parser("validate", help="check a device profile file")
    validate.add_argument("profile", help="profile YAML file (may use extends:)")
    _format_argument(validate)

    profile = sub.add_parser("profile", help="print a model's per-layer cost table")
    profile.add_argument("--device", help="device whose executor model sets the working buffers")
    _executor_argument(profile)
    profile.add_argument("--list-models", action="store_true", help="list the torchvision model names")
    _model_arguments(profile)
    _format_argument(profile)


def _add_sweep(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``sweep``: plans across budgets."""
    sweep = sub.add_parser("sweep", help="solve at a range of budgets; table and plot")
    sweep.add_argument("--device", default="cortex-m7", help="device name, alias or profile YAML (default cortex-m7)")
    _executor_argument(sweep)
    sweep.add_argument("--budgets", required=True, help="LOW:HIGH:N (log-spaced) or a list, e.g. 64KB:1MB:8")
    _model_arguments(sweep)
    sweep.add_argument("--batch-size", type=_count, default=1, help="samples per step (default 1)")
    _expressible_argument(sweep)
    sweep.add_argument(
        "--importance",
        help="importance YAML file, 'shipped' (the table shipped for the model) or 'prior' (the default)",
    )
    sweep.add_argument("--time-limit", type=_positive, default=10.0, help="solver time limit per budget (default 10)")
    sweep.add_argument("--plot", help="draw objective and trained fraction against budget (.png, .svg or .pdf)")
    sweep.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    sweep.add_argument("--verbose", action="store_true", help="show the solver's log (on stderr)")
    _format_argument(sweep)


def _add_importance(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``importance``: measure layer importance on data."""
    importance = sub.add_parser("importance", help="measure layer importance by fine-tuning on data")
    _model_arguments(importance)
    importance.add_argument("--pretrained", action="store_true", help="ImageNet weights (mobilenet_v2, width 1.0)")
    importance.add_argument(
        "--data",
        default="digits",
        help="'digits' (offline), an ImageFolder directory, or package.module:factory returning a dataset",
    )
    importance.add_argument(
        "--steps",
        type=_count,
        help="optimizer steps of dense fine-tuning (energy, rgn; default 100), or of each trial "
        "(contribution; default 4)",
    )
    importance.add_argument("--batch-size", type=_count, default=32)
    importance.add_argument("--lr", type=_positive, default=0.005)
    importance.add_argument(
        "--measure",
        choices=list(MEASURES),
        default=DEFAULT_MEASURE,
        help="; ".join(f"{name}: {cls.description}" for name, cls in MEASURES.items()),
    )
    importance.add_argument("--out", required=True, help="importance file to write, .yaml or .json")


def _add_plan_files(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``show``, ``compare`` and ``export``: read plan files."""
    compare = sub.add_parser("compare", help="what differs between two plans")
    compare.add_argument("first", help="plan YAML file")
    compare.add_argument("second", help="plan YAML file")
    _format_argument(compare)

    export = sub.add_parser("export", help="write a plan for an on-device training runtime")
    export.add_argument("plan", help="plan YAML file")
    export.add_argument(
        "--format",
        choices=(*EXPORT_FORMATS, "c"),
        default="c-header",
        help="C99 header of per-layer flags, JSON, a Sparse Update backward_config in YAML (default c-header), "
        "or c: a C99 library of the plan's training step (--out names its directory; docs/device.md)",
    )
    export.add_argument("--out", help="file to write (default: standard output); for --format c, a directory")
    export.add_argument(
        "--model",
        help="for --format c: torchvision name or package.module:factory (default: the model the plan names)",
    )
    export.add_argument(
        "--weights", help="for --format c: a state dict saved with torch.save (default: the model's initial weights)"
    )
    export.add_argument(
        "--numerics",
        choices=("int8", "float32"),
        help="for --format c: how weights and activations are stored (default: int8 where the profile counts 8-bit "
        "weights and activations, else float32)",
    )
    export.add_argument(
        "--calibration",
        help="for --format c in int8: a tensor of input samples (N x C x H x W, saved with torch.save) the activation "
        "scales are calibrated on (default: 8 standard normal samples)",
    )

    show = sub.add_parser("show", help="print a saved plan")
    show.add_argument("plan", help="plan YAML file")
    show.add_argument("--all-layers", action="store_true", help="list frozen layers too")
    show.add_argument("--plot", help="draw channels per layer, memory by kind against the budget (.png, .svg or .pdf)")
    _format_argument(show)


def planner_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The ``PlannerOptions`` fields that ``solve``'s flags set."""
    require = () if args.no_require else (tuple(args.require) if args.require else None)
    return {
        "budget": args.budget,
        "training_memory": args.training_memory,
        "ratios": args.ratios or DEFAULT_RATIOS,
        "epochs": args.epochs,
        "utility": args.utility,
        "max_layers": args.max_layers,
        "require": require,
        "include": tuple(args.include),
        "exclude": tuple(args.exclude),
        "batch_size": args.batch_size,
        "max_step_latency": args.max_step_latency,
        "time_limit": args.time_limit,
        "solver": args.solver,
        "verbose": args.verbose,
        "accounting": args.accounting,
        "expressible": args.expressible,
    }


def _add_check(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``check``: the CI gate (docs/ci.md)."""
    check = sub.add_parser("check", help="plan devices x budgets and fail (exit 1) what breaks a floor or a baseline")
    check.add_argument("--devices", default="all", help="comma-separated names or profile files, or all (default)")
    check.add_argument(
        "--budget", action="append", type=_size, help="a budget to check, repeatable (default: each profile's own)"
    )
    _model_arguments(check)
    check.add_argument("--batch-size", type=_count, default=1, help="samples per step (default 1)")
    check.add_argument("--importance", help="importance YAML file, 'shipped' or 'prior' (as for solve)")
    limits = check.add_argument_group("limits")
    limits.add_argument("--min-trained", type=_share, help="fail a cell training less of the weights, e.g. 5%%")
    limits.add_argument("--max-peak", type=_share, help="fail a cell whose peak is over this share of SRAM, e.g. 90%%")
    limits.add_argument("--baseline", help="directory of committed plans to hold each cell to")
    limits.add_argument(
        "--peak-growth", type=_share, default=0.01, help="how much a peak may grow over its baseline (default 1%%)"
    )
    limits.add_argument(
        "--trained-drop", type=_share, default=0.0, help="how far the trained share may fall (default 0%%)"
    )
    check.add_argument("--save", help="write each cell's plan into this directory (a baseline to commit)")
    check.add_argument("--junit", help="write JUnit XML here, one test case per device and budget")
    _format_argument(check)
