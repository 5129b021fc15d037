"""How successive halving ranks the trial's candidates against a trial of all of them in full.

Run: python benchmarks/trial_curves.py --like benchmarks/results/benchmark-trial-256.jsonl
     [--tasks digits --budgets 256KB --seeds 0 --variant "budgetplan (trial all)"]
     --out benchmarks/results/trial-curves.jsonl [--report --fits benchmarks/results/benchmark.jsonl]
     [--fit "every plan 48" --fits-out benchmarks/results/trial-choices.jsonl]
     [--kept-from benchmarks/results/trial-curves.jsonl] [--report --against benchmarks/results/trial-curves.jsonl]

For each fit of ``--variant`` stored in ``--like`` (an ``accuracy.py`` results file: its
protocol and the rate chosen for the fit), the callback sets up as in that fit, but where
its trial would run successive halving (``budgetplan.training.trials.halving``) every
candidate trains the whole ``PLAN_STEPS`` steps, the lowest held-out loss so far read every
``CHECK_EVERY`` steps; nothing is fitted after. Each fit's curves are appended to ``--out``.

``--report`` replays halving schedules on the stored curves: which plan each would choose,
how often that is the plan of lowest loss after ``PLAN_STEPS`` steps (the trial of all in full),
and the steps each trains. The plans' own fits are not run: the accuracy of what a
schedule chose is known where ``--like`` or ``--fits`` holds a fit whose trial chose the
same plan at the same rate and seed. ``--fit SCHEDULE`` runs the fits that are missing:
each fit whose curves are stored, with the plan ``SCHEDULE`` chooses on them put in place of
the trial (the rest of the fit as it was), appended to ``--fits-out``. ``--kept-from``
takes the curves of the plans whose channels are kept from an earlier recording of the
same fit, and trains only the plans whose channels are redrawn; ``--report --against``
sets the curves against an earlier recording of the same fits (``compare``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
import accuracy  # noqa: E402
from accuracy import CELL, PROTOCOL, candidate_name, field, json_lines, read_rows, trained_rate, trial_label  # noqa: E402
from before_after import spread  # noqa: E402

from budgetplan.training import plan_source  # noqa: E402
from budgetplan.training.trials import CHECK_EVERY, PLAN_STEPS, Progress, round_sizes, trial_losses  # noqa: E402

Schedule = list[tuple[int, int]]  # per round: the steps reached, the plans kept after it (the last keeps one)
AS_RUN = "halving as the trial runs it"
EVERY = "every candidate"  # --fit: the fits of every candidate, not of one schedule's choices
KEY = ("task", "network", "budget", "seed")  # one fit of a variant
OTHERS: dict[str, Schedule] = {
    "halving, 24 then 48": [(24, 3), (PLAN_STEPS, 1)],
    "halving, 32 then 48": [(32, 3), (PLAN_STEPS, 1)],
    "every plan 48": [(PLAN_STEPS, 1)],
}


def as_run(count: int) -> Schedule:
    """The schedule of ``halving`` among ``count`` plans (six: rounds of 16 steps keeping 3,
    2, then 1): its rounds, and the better half kept after each."""
    sizes = round_sizes(count)
    more = max(CHECK_EVERY, PLAN_STEPS // len(sizes))
    return [(more * done, (size + 1) // 2) for done, size in enumerate(sizes, 1)]


class Recorded(Exception):
    """Raised in place of the halving, with the curves it recorded."""

    def __init__(self, labels: list[str], curves: list[list[float]], seconds: float) -> None:
        super().__init__("curves recorded")
        self.labels, self.curves, self.seconds = labels, curves, seconds


def recorder(kept: dict[str, list[float]]) -> Any:
    """In place of ``halving``: every candidate's lowest held-out loss so far every
    ``CHECK_EVERY`` steps up to ``PLAN_STEPS``, raised as ``Recorded``; the curves in
    ``kept`` (by label) of candidates whose channels are not redrawn are taken as they are."""

    def record(module: Any, candidates: Sequence[Any], batches: list[Any], prefix: str = "", total_steps: Any = None,
               **options: Any) -> Any:  # fmt: skip
        start = time.perf_counter()
        trained = [c for c in candidates if c.draws > 1 or c.label not in kept]
        where = [Progress() for _ in trained]
        curves: dict[str, list[float]] = {c.label: [] for c in trained}
        for until in range(CHECK_EVERY, PLAN_STEPS + 1, CHECK_EVERY):
            losses = trial_losses(
                module, trained, batches, prefix, steps=PLAN_STEPS, until=until, progress=where, **options
            )
            for candidate, loss in zip(trained, losses, strict=True):
                curves[candidate.label].append(loss)
        found = [curves.get(c.label) or kept[c.label] for c in candidates]
        raise Recorded([c.label for c in candidates], found, time.perf_counter() - start)

    return record


def forced(label: str) -> Any:
    """In place of ``halving``: the candidate labelled ``label``, chosen without a trial
    (the fit after it is the one a trial that chose it would run: trials leave the module
    and the random state as they found them)."""

    def choose(module: Any, candidates: Sequence[Any], *args: Any, **options: Any) -> Any:
        found = [c for c in candidates if c.label == label]
        if not found:
            raise SystemExit(f"no candidate {label!r} among {[c.label for c in candidates]}")
        others = [(c.label, float("nan")) for c in candidates if c.label != label]
        return found[0], [[(label, float("nan")), *others]], 0

    return choose


def replay(curves: list[list[float]], schedule: Schedule) -> tuple[int, int]:
    """The candidate ``schedule`` chooses on ``curves`` (ties to the earlier) and the steps it trains."""
    alive, steps, reached = list(range(len(curves))), 0, 0
    for until, kept in schedule:
        if until % CHECK_EVERY or until > PLAN_STEPS:
            raise ValueError(f"a round ends at step {until}: the curves hold every {CHECK_EVERY} to {PLAN_STEPS}")
        steps += (until - reached) * len(alive)
        reached = until
        at = until // CHECK_EVERY - 1
        alive = sorted(alive, key=lambda i: (curves[i][at], i))[:kept]
    return alive[0], steps


def run_with(row: dict[str, Any], trial: Any) -> dict[str, Any]:
    """The fit of ``row``'s cell, protocol and rate, ``trial`` in place of ``halving``."""
    cell, protocol = ({k: field(row, k) for k in names} for names in (CELL, PROTOCOL))
    plan_source.halving = trial  # type: ignore[assignment]  # the callback's trial
    return accuracy.run(cell, protocol, 1.0, row["chosen_lr"])


def record_fit(row: dict[str, Any], kept: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """The curves of the trial in ``row``'s fit (its cell, protocol and rate), those of
    ``kept`` taken as they are (``recorder``)."""
    try:
        run_with(row, recorder(kept or {}))
    except Recorded as found:
        cell = {k: field(row, k) for k in CELL}
        return {
            **cell,
            "lr": row["chosen_lr"],
            "labels": found.labels,
            "curves": found.curves,
            "seconds": found.seconds,
        }
    raise SystemExit(f"{key_of(row)}: the fit ran no trial of several plans")


def fit_choice(row: dict[str, Any], label: str) -> dict[str, Any]:
    """The fit of ``row``'s cell, protocol and rate with the plan ``label`` in place of its trial."""
    return run_with(row, forced(label))


def key_of(row: dict[str, Any]) -> tuple[Any, ...]:
    """Which fit of a variant ``row`` (a fit, or its curves) is: its task, network, budget and seed."""
    return tuple(field(row, k) for k in KEY)


def every_fit(paths: list[Path]) -> list[dict[str, Any]]:
    """Every row of the results files ``paths``, the fits of one variant in several files
    too (``read_rows`` keeps a variant's rows from the first file that names it: there,
    one protocol per table; here, the fits are told apart by plan, rate and seed)."""
    return [{**r, "chosen_lr": trained_rate(r)} for path in paths for r in json_lines(path)]


def fit_accuracies(fits: list[dict[str, Any]]) -> dict[tuple[Any, ...], float]:
    """The mean accuracy of the fits whose trial chose each plan, by cell, seed, plan and rate."""
    found: dict[tuple[Any, ...], list[float]] = {}
    for r in fits:
        winner = trial_label(r.get("importance", ""))
        if winner is not None:
            found.setdefault((*key_of(r), winner, r["chosen_lr"]), []).append(100 * r["accuracy"])
    return {where: sum(values) / len(values) for where, values in found.items()}


def fit_key(curve: dict[str, Any], choice: int) -> tuple[Any, ...]:
    """Where ``fit_accuracies`` keeps the fit of candidate ``choice`` of ``curve``'s fit."""
    return (*key_of(curve), candidate_name(curve["labels"][choice]), curve["lr"])


def choice(curve: dict[str, Any], name: str) -> tuple[int, int]:
    """What the schedule named ``name`` chooses on ``curve``'s curves, and the steps it trains."""
    schedule = as_run(len(curve["curves"])) if name == AS_RUN else OTHERS[name]
    return replay(curve["curves"], schedule)


def report(
    curves: list[dict[str, Any]], fits: list[dict[str, Any]], baseline: dict[tuple[Any, ...], float] | None = None
) -> str:
    """Per schedule: its steps, how often it chose the plan of lowest loss at ``PLAN_STEPS``,
    and its choices' fit accuracy against those of halving as run, where both fits are
    stored; with ``baseline`` (accuracy by task, network, budget and seed), against it too,
    paired by seed with its 95% interval."""
    accuracy_of = fit_accuracies(fits)
    chosen = {  # per schedule, each fit's choice and steps
        name: [choice(r, name) for r in curves] for name in [AS_RUN, *OTHERS]
    }

    def known(r: dict[str, Any], choice: int) -> float | None:
        return accuracy_of.get(fit_key(r, choice))

    head = "| schedule | steps | chose the plan of lowest loss at 48 | − halving as run (fits of both stored) |"
    lines = [
        head + (" − the baseline (95% interval, pairs) |" if baseline else ""),
        "| --- " * (5 if baseline else 4) + "|",
    ]
    for name, found in chosen.items():
        agree = sum(c == full for (c, _), (full, _) in zip(found, chosen["every plan 48"], strict=True))
        runs = zip(curves, found, chosen[AS_RUN], strict=True)
        pairs = [(known(r, c), known(r, run)) for r, (c, _), (run, _) in runs]
        diffs = [a - b for a, b in pairs if a is not None and b is not None]
        versus = f"{sum(diffs) / len(diffs):+.2f} points over {len(diffs)}" if diffs else "–"
        steps = sum(n for _, n in found) / len(found)
        line = f"| {name} | {steps:.0f} | {agree} of {len(curves)} | {versus} |"
        if baseline:
            base = [(known(r, c), baseline.get(key_of(r))) for r, (c, _) in zip(curves, found, strict=True)]
            gaps = [a - b for a, b in base if a is not None and b is not None]
            line += f" {spread(gaps)} ({len(gaps)}) |"
        lines.append(line)
    return "\n".join(lines)


def compare(curves: list[dict[str, Any]], earlier: list[dict[str, Any]], fits: list[dict[str, Any]]) -> str:
    """Halving as run on ``curves`` against on ``earlier``, the same fits recorded before a
    change: each candidate's mean change of lowest loss at ``PLAN_STEPS``, how often the
    choice changed, and the fits of the new choices against the old, where both are stored."""
    accuracy_of = fit_accuracies(fits)
    pairs = [(r, e) for r in curves for e in earlier if (key_of(r), r["lr"]) == (key_of(e), e["lr"])]
    changes: dict[str, list[float]] = {}
    moved, diffs = 0, []
    for new, old in pairs:
        ends = dict(zip(old["labels"], (c[-1] for c in old["curves"]), strict=True))
        for label, curve in zip(new["labels"], new["curves"], strict=True):
            changes.setdefault(candidate_name(label), []).append(curve[-1] - ends[label])
        now, before = (choice(r, AS_RUN)[0] for r in (new, old))
        if new["labels"][now] != old["labels"][before]:
            moved += 1
            a, b = accuracy_of.get(fit_key(new, now)), accuracy_of.get(fit_key(old, before))
            if a is not None and b is not None:
                diffs.append(a - b)
    lines = ["| candidate | change of its loss at 48 (mean, fits) |", "| --- | --- |"]
    lines += [f"| {name} | {sum(d) / len(d):+.4f} ({len(d)}) |" for name, d in changes.items()]
    versus = f"{sum(diffs) / len(diffs):+.2f} points over the {len(diffs)} with both fits stored" if diffs else "–"
    lines.append(f"\nHalving as run chose another plan in {moved} of {len(pairs)} fits: {versus}")
    return "\n".join(lines)


def fit_missing(like: list[dict[str, Any]], curves: list[dict[str, Any]], fits: list[dict[str, Any]], name: str,
                out: Path) -> None:  # fmt: skip
    """Of each fit with curves in ``like``, the fit of what schedule ``name`` (or ``EVERY``
    candidate) chooses, where ``fits`` stores none, appended to ``out``."""
    accuracy_of = fit_accuracies(fits)
    for row in like:
        curve = next((c for c in curves if key_of(c) == key_of(row)), None)
        if curve is None:
            continue
        picks = range(len(curve["curves"])) if name == EVERY else [choice(curve, name)[0]]
        for pick in picks:
            if fit_key(curve, pick) in accuracy_of:
                continue
            found = fit_choice({**row, "chosen_lr": curve["lr"]}, curve["labels"][pick])
            with out.open("a") as stream:
                stream.write(json.dumps(found) + "\n")
            print(f"{fit_key(curve, pick)}: {100 * found['accuracy']:.1f} %", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--like", type=Path, required=True, help="accuracy.py results whose fits are set up again")
    parser.add_argument("--variant", default="budgetplan (trial all)", help="the variant of --like to follow")
    parser.add_argument("--tasks", help="comma-separated tasks (default: every task in --like)")
    parser.add_argument("--budgets", help="comma-separated budgets (default: every budget)")
    parser.add_argument("--seeds", help="comma-separated seeds (default: every seed)")
    parser.add_argument("--fits", default="", help="more results files whose fits of a trial's winner --report reads")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines the curves are appended to")
    parser.add_argument("--report", action="store_true", help="replay the schedules on --out, train nothing")
    parser.add_argument("--fit", choices=[AS_RUN, *OTHERS, EVERY], help="fit what this schedule chose, where missing")
    parser.add_argument("--baseline", type=Path, help="--report: fits each choice pairs with")
    parser.add_argument("--baseline-variant", default="budgetplan", help="the variant of --baseline")
    parser.add_argument("--against", type=Path, help="--report: curves of the same fits recorded before a change")
    parser.add_argument("--kept-from", type=Path, help="curves whose plans of kept channels are taken, not trained")
    parser.add_argument("--fits-out", type=Path, help="JSON lines --fit appends its fits to (then read by --fits)")
    args = parser.parse_args()
    if not args.like.exists():
        parser.error(f"{args.like}: no such results file")
    if args.fit and not args.fits_out:
        parser.error("--fit needs --fits-out, the file its fits are appended to")
    done = json_lines(args.out)
    stored = [args.like, *(Path(name) for name in args.fits.split(",") if name)]
    if args.report:
        rows = read_rows([args.baseline]) if args.baseline else []
        base = {key_of(r): 100 * r["accuracy"] for r in rows if r["variant"] == args.baseline_variant}
        fits = every_fit(stored)
        print(report(done, fits, base) if done else f"{args.out}: no curves recorded yet")
        if args.against and done:
            print("\n" + compare(done, json_lines(args.against), fits))
        return
    wanted = {"task": args.tasks, "budget": args.budgets, "seed": args.seeds}
    like = [r for r in read_rows([args.like]) if r["variant"] == args.variant and all(
        not v or str(r[k]) in v.split(",") for k, v in wanted.items())]  # fmt: skip
    if args.fit:
        fits_out = [args.fits_out] if args.fits_out not in stored else []
        fit_missing(like, done, every_fit(stored + fits_out), args.fit, args.fits_out)
        return
    earlier = {(key_of(e), e["lr"]): e for e in json_lines(args.kept_from)} if args.kept_from else {}
    recorded = {key_of(d) for d in done}
    for row in like:
        if key_of(row) in recorded:
            continue
        old = earlier.get((key_of(row), row["chosen_lr"]))
        found = record_fit(row, dict(zip(old["labels"], old["curves"], strict=True)) if old else None)
        with args.out.open("a") as stream:
            stream.write(json.dumps(found) + "\n")
        print(f"{key_of(row)}: {found['seconds']:.0f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
