"""Which utility predicts accuracy: rank correlation over random feasible plans.

Run: python benchmarks/utility_study.py [--tasks digits-on-photos,digits --plans 20 --cap 128KB
     --results benchmarks/results/utility-study.jsonl]

A utility is worth planning with when a plan it values more trains to a higher accuracy.
For each task, ``--plans`` random feasible plans are drawn: the ILP's optimum under a random
sparse importance (each layer's weight and bias scored with probability p, p itself drawn)
at one training-memory cap (``--cap``, on examples/stm32f746-disco-study.yaml), so that
the plans differ in what they train, not in how much memory: the planner's question.
Each plan is trained once as ``benchmarks/accuracy.py`` trains (ImageNet MobileNetV2,
BatchNorm folded, 32 images per class, SGD lr 0.005, momentum 0.9, batch 32), with the
channel rule given by ``--sampler``/``--resample``, and validated after the last epoch.

Every plan is then valued by each score, with the utility that matches the channel rule
(``linear`` for a static choice, ``coverage`` for one redrawn every epoch):

* ``energy table``: the shipped gradient-energy table (face crops; the default);
* ``rgn table``: TraDy's score on the same crops;
* ``prior``: each layer's share of the trainable elements;
* ``energy on the task``: gradient energy on 16 of the task's training batches, at the
  pretrained point (what the callback measures at setup for networks without a table);
* ``contribution``: Sparse Update's contribution analysis on the task (its own values of
  choices; the utility does not enter).

The table gives Spearman's rank correlation between each score's value and the accuracy,
per task, with a 95% interval from 2,000 bootstrap resamples of the plans. Each trained
plan is appended to ``--results`` (JSON lines: the plan's choices and its accuracy), so the
study resumes, and ``--report`` re-scores it without training.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from accuracy import SHIPPED, contribution_file  # noqa: E402
from digits import STUDY_PROFILE, DigitsData, pretrained_classifier, quiet_trainer  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from budgetplan import BudgetPlanCallback, load_device  # noqa: E402
from budgetplan.costs.build import layer_costs  # noqa: E402
from budgetplan.costs.table import CostTable  # noqa: E402
from budgetplan.importance.scores import Importance, resolve_importance  # noqa: E402
from budgetplan.plan.model import Plan  # noqa: E402
from budgetplan.planning.assemble import plan_from_costs  # noqa: E402
from budgetplan.planning.memory import Choice  # noqa: E402
from budgetplan.planning.objective import objective  # noqa: E402
from budgetplan.planning.options import planner_options  # noqa: E402


def random_plan(costs: CostTable, index: int, cap: str, utility: str, epochs: int) -> Plan:
    """The ILP's plan under a random sparse importance at ``cap``."""
    rng = random.Random(index)
    share = rng.uniform(0.1, 0.7)  # how many layers are worth anything

    def score() -> float:
        return rng.expovariate(1.0) if rng.random() < share else 0.0

    weight = {layer.name: score() for layer in costs.layers}
    bias = {layer.name: score() for layer in costs.layers}
    importance = Importance(f"random {index}", weight, bias).normalised()
    options = planner_options(training_memory=cap, utility=utility, epochs=epochs)
    return plan_from_costs(costs, load_device(STUDY_PROFILE), importance, options)


def train(task: str, plan: Plan, args: argparse.Namespace) -> float:
    """The validation accuracy of ``plan`` trained once."""
    module = pretrained_classifier(args.seed, args.lr, fold_norms=True)
    budget = BudgetPlanCallback(plan=plan, seed=args.seed, sampler=args.sampler, resample=args.resample)
    data = DigitsData(128, 32, args.seed, task, args.train_per_class)
    trainer = quiet_trainer(args.epochs, [budget], check_val_every_n_epoch=args.epochs, num_sanity_val_steps=0)
    trainer.fit(module, data)
    return float(trainer.callback_metrics["val_acc"])


def scores(task: str, costs: CostTable, args: argparse.Namespace) -> dict[str, Importance]:
    """Each score's importance for ``task``."""
    from budgetplan.training.measure import importance_on_batches
    from budgetplan.training.plan_source import measurement_batches

    # the data and rate of the accuracy benchmark's studies, whose analysis files this shares
    protocol = {"train_per_class": args.train_per_class, "norms": "folded", "lr": args.lr}
    protocol |= {"val_fraction": 0.2, "val_per_class": None}
    module = pretrained_classifier(args.seed, args.lr, fold_norms=True)
    data = DigitsData(128, 32, args.seed, task, args.train_per_class)
    data.setup("fit")
    batches = measurement_batches(data.train_dataloader(), 16, args.seed)
    return {
        "energy table": resolve_importance(None, costs),
        "rgn table": resolve_importance(SHIPPED["importance"], costs),
        "prior": resolve_importance("prior", costs),
        "energy on the task": importance_on_batches(module, batches, costs, task),
        "contribution": resolve_importance(str(contribution_file(task, args.seed, protocol)), costs),
    }


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rank correlation (ties share their mean rank); 0 when either side is constant."""
    rho = float(spearmanr(xs, ys).statistic)
    return 0.0 if math.isnan(rho) else rho


def interval(xs: list[float], ys: list[float], draws: int = 2000) -> tuple[float, float]:
    rng = random.Random(0)
    values = []
    for _ in range(draws):
        pick = [rng.randrange(len(xs)) for _ in xs]
        values.append(spearman([xs[i] for i in pick], [ys[i] for i in pick]))
    values.sort()
    return values[int(0.025 * draws)], values[int(0.975 * draws) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="digits-on-photos,digits")
    parser.add_argument("--plans", type=int, default=20, help="random feasible plans per task")
    parser.add_argument("--cap", default="128KB", help="the training memory every plan is held to")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--train-per-class", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="seed of the model's new head, the data and the draws")
    parser.add_argument("--sampler", default="magnitude", help="the channel rule every plan trains with")
    parser.add_argument("--resample", default="never")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "utility-study.jsonl"))
    parser.add_argument("--report", action="store_true", help="score the results file, train nothing")
    args = parser.parse_args()
    utility = "linear" if args.resample == "never" else "coverage"
    results = Path(args.results)
    rows = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    protocol = {k: getattr(args, k) for k in ("cap", "epochs", "lr", "train_per_class", "seed", "sampler", "resample")}
    device = load_device(STUDY_PROFILE)
    print(
        f"| task | plans | {' | '.join(['energy table', 'rgn table', 'prior', 'energy on the task', 'contribution'])} |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for task in args.tasks.split(","):
        module = pretrained_classifier(args.seed, args.lr, fold_norms=True)
        costs = layer_costs(module, module.example_input_array, device)
        done = {r["plan"] for r in rows if r["task"] == task and all(r[k] == v for k, v in protocol.items())}
        for index in range(args.plans):
            if args.report or index in done:
                continue
            start = time.perf_counter()
            plan = random_plan(costs, index, args.cap, utility, args.epochs)
            row = {"task": task, "plan": index, **protocol, "accuracy": train(task, plan, args)}
            row["training_memory"] = plan.predicted.training_memory_bytes
            row["choices"] = {
                layer.name: [layer.channels, layer.bias] for layer in plan.layers if layer.channels or layer.bias
            }
            row["seconds"] = time.perf_counter() - start
            rows.append(row)
            with results.open("a") as out:
                out.write(json.dumps(row) + "\n")
            print(f"{task} plan {index}: {100 * row['accuracy']:.2f}%", file=sys.stderr, flush=True)
        trained = [r for r in rows if r["task"] == task and all(r[k] == v for k, v in protocol.items())]
        if len(trained) < 3:
            continue
        accuracy = [r["accuracy"] for r in trained]
        options = planner_options(utility=utility, epochs=args.epochs)
        cells = []
        for importance in scores(task, costs, args).values():
            values = [
                objective(costs, importance, options, {n: Choice(c, b) for n, (c, b) in r["choices"].items()})
                for r in trained
            ]
            low, high = interval(values, accuracy)
            cells.append(f"{spearman(values, accuracy):+.2f} [{low:+.2f}, {high:+.2f}]")
        print(f"| {task} | {len(trained)} | {' | '.join(cells)} |")
    print(
        f"\nSpearman's rank correlation between a score's value of a plan and its validation accuracy "
        f"[95% bootstrap interval]; {args.cap} training memory, {args.epochs} epochs, "
        f"channels {args.sampler}, resample {args.resample}, utility {utility}"
    )


if __name__ == "__main__":
    main()
