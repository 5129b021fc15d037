"""The accuracy benchmark's data splits and its choice of learning rate."""

import importlib.util
import json
import sys
from types import SimpleNamespace

import pytest

from budgetplan.files import PLOT_FORMATS, output_file

from .helpers.cli import REPO


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


accuracy = _script("accuracy")
digits = sys.modules["digits"]  # the examples' module, which the benchmark imports


@pytest.mark.slow
def test_the_rate_is_chosen_on_a_split_of_the_training_images_only():
    data = digits.DigitsData(16, 8, 0, "mnist", 32, 0.8, 100, tune=True)
    data.setup("fit")
    full = digits.DigitsData(16, 8, 0, "mnist", 32, 0.8, 100)
    full.setup("fit")
    fit, held_out = data.train_set, data.val_set
    assert len(fit) == 240 and len(held_out) == 80
    assert fit.dataset is held_out.dataset and not set(fit.indices) & set(held_out.indices)
    trained = {image.numpy().tobytes() for image in full.train_set.images}
    validating = {image.numpy().tobytes() for image in full.val_set.images}
    chosen_on = {fit.dataset.images[i].numpy().tobytes() for i in fit.indices + held_out.indices}
    assert chosen_on == trained and not chosen_on & validating
    labels = fit.dataset.labels
    assert labels[held_out.indices].bincount().tolist() == [8] * 10


def _tried(lr: float, accuracy: float, loss: float, **changes: object) -> dict[str, object]:
    cell = {"task": "mnist", "network": "mobilenet_v2", "variant": "bias", "budget": "64KB", "seed": 0}
    return {**cell, **PROTOCOL, "chosen_lr": lr, "accuracy": accuracy, "loss": loss, **changes}


PROTOCOL = {
    "epochs": 6,
    "train_per_class": 32,
    "lr": "0.002/0.005/0.0125",
    "norms": "folded",
    "val_fraction": 0.8,
    "val_per_class": 100,
    "recipes": "own",
}


def test_the_rate_of_best_held_out_accuracy_then_loss_is_chosen_per_budget():
    cell = {"task": "mnist", "network": "mobilenet_v2", "variant": "bias", "budget": "64KB", "seed": 3}
    tried = [_tried(0.002, 0.5, 1.0), _tried(0.005, 0.6, 1.2)]
    assert accuracy.chosen_rate(cell, PROTOCOL, tried) is None  # 0.0125 not tried yet
    tried.append(_tried(0.0125, 0.6, 1.1))
    assert accuracy.chosen_rate(cell, PROTOCOL, tried) == 0.0125  # a tie in accuracy: the lower loss
    # runs of another strategy, network, budget or protocol do not count
    others = [
        _tried(0.002, 0.9, 0.1, variant="trady"),
        _tried(0.002, 0.9, 0.1, network="efficientnet-lite0"),
        _tried(0.002, 0.9, 0.1, budget="1MB"),
        _tried(0.002, 0.9, 0.1, epochs=12),
    ]
    assert accuracy.chosen_rate(cell, PROTOCOL, tried + others) == 0.0125
    assert accuracy.chosen_rate({**cell, "budget": "1MB"}, PROTOCOL, tried + others) is None
    assert accuracy.chosen_rate(cell, {**PROTOCOL, "lr": 0.005}, []) == 0.005  # one rate: nothing to choose


def test_with_more_tuning_seeds_the_rate_of_best_mean_accuracy_over_their_splits_is_chosen():
    cell = {"task": "mnist", "network": "mobilenet_v2", "variant": "bias", "budget": "64KB", "seed": 4}
    first = [_tried(0.002, 0.25, 2.3), _tried(0.005, 0.2375, 2.4), _tried(0.0125, 0.225, 2.5)]  # nothing learned
    assert accuracy.chosen_rate(cell, PROTOCOL, first) == 0.002  # by one image of 80
    assert accuracy.chosen_rate(cell, PROTOCOL, first, seeds=(0, 1)) is None  # seed 1's split not run yet
    second = [_tried(0.002, 0.3, 2.0, seed=1), _tried(0.005, 0.5, 1.5, seed=1), _tried(0.0125, 0.4, 1.7, seed=1)]
    assert accuracy.chosen_rate(cell, PROTOCOL, first + second, seeds=(0, 1)) == 0.005  # mean 0.369 against 0.275
    assert accuracy.chosen_rate(cell, PROTOCOL, first + second) == 0.002  # seed 0's split alone, as before


def test_a_strategy_that_ignores_the_budget_is_tuned_once():
    classifier = [_tried(lr, 0.5 + lr, 1.0, variant="classifier", budget="256KB") for lr in (0.002, 0.005, 0.0125)]
    for budget in ("64KB", "1MB"):
        cell = {"task": "mnist", "network": "mobilenet_v2", "variant": "classifier", "budget": budget, "seed": 1}
        assert accuracy.chosen_rate(cell, PROTOCOL, classifier) == 0.0125


def test_a_variant_keeps_its_colour_in_every_panel(tmp_path):
    """A variant run on some panels only must not shift the colours of the others."""
    rows = [
        {**PROTOCOL, "task": task, "network": "mobilenet_v2", "variant": variant, "budget": "64KB", "seed": 0}
        | {"accuracy": 0.5, "training_memory": 65536.0}
        for task, variants in [
            ("digits", ["budgetplan", "budgetplan (contribution)", "trady"]),
            ("mnist", ["budgetplan", "trady"]),
        ]
        for variant in variants
    ]
    fig = accuracy.plot(rows, output_file(tmp_path / "plot.png", "plot", PLOT_FORMATS))
    colours = [[bar.lines[0].get_color() for bar in ax.containers] for ax in fig.axes if ax.get_visible()]
    assert len(set(colours[0])) == 3
    assert colours[1] == [colours[0][0], colours[0][2]]  # budgetplan and trady as in the first panel
    legend = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert legend == ["budgetplan", "budgetplan (contribution)", "trady"]
    assert (tmp_path / "plot.png").stat().st_size > 0


def test_the_default_is_set_against_the_best_recipe_of_each_cell():
    def row(budget: str, variant: str, seed: int, accuracy: float) -> dict[str, object]:
        cell = {"task": "mnist", "network": "mobilenet_v2", "variant": variant, "budget": budget, "seed": seed}
        return {**PROTOCOL, **cell, "accuracy": accuracy}

    scores = {  # budget -> variant -> accuracy at seeds 0 and 1
        "64KB": {"budgetplan": (0.80, 0.82), "bias": (0.84, 0.85), "trady": (0.78, 0.80), "classifier": (0.70, 0.71)},
        "1MB": {"budgetplan": (0.95, 0.93), "bias": (0.85, 0.86), "trady": (0.90, 0.92)},
    }
    rows = [
        row(budget, variant, seed, value)
        for budget, variants in scores.items()
        for variant, values in variants.items()
        for seed, value in enumerate(values)
    ]
    compared = accuracy.recipe_cells(rows, ["64KB", "1MB"])
    text = accuracy.against_recipes(rows, compared)
    lines = text.splitlines()
    assert "| 64KB | 81.00 | 84.50 | 70.50 |" in lines[2] and "-3.50 vs bias" in lines[2]
    assert "+3.00 vs trady" in lines[3]  # classifier (unbudgeted) pairs with every budget, but loses here
    assert "over 2 cells: -0.25 points on average" in text and "at or above it in 1 cells" in text
    assert [(c["budget"], c["best"], c["differences"]) for c in compared] == [
        ("64KB", "bias", pytest.approx([-4.0, -3.0])),
        ("1MB", "trady", pytest.approx([5.0, 1.0])),
    ]


def test_the_verdict_pools_the_cells_of_benchmarks_run_with_different_protocols(tmp_path, capsys, monkeypatch):
    verdict = _script("verdict")

    def cell(task: str, budget: str, diffs: list[float], subject: str = "budgetplan") -> str:
        gap = sum(diffs) / len(diffs)
        fields = {"task": task, "network": "mobilenet_v2", "budget": budget, "subject": subject, "best": "trady"}
        return json.dumps({**fields, "gap": gap, "differences": diffs}) + "\n"

    digits, photos = tmp_path / "digits.jsonl", tmp_path / "photos.jsonl"
    digits.write_text(cell("mnist", "64KB", [2.0, 4.0, 3.0]) + cell("mnist", "64KB", [9.0, 9.0], "other"))
    photos.write_text(cell("photo-regions", "64KB", [-3.0, -2.0, -4.0]) + cell("photo-regions", "1MB", [1.0, -1.0]))
    monkeypatch.setattr(sys, "argv", ["verdict.py", str(digits), str(photos)])
    verdict.main()
    out = capsys.readouterr().out
    assert "| mnist | mobilenet_v2 | 64KB | +3.00 vs trady [+0.52, +5.48], 3 seeds |" in out
    assert "**-3.00 vs trady [-5.48, -0.52], 3 seeds**" in out  # below zero, and named below
    assert "over 3 cells: +0.00 points on average" in out and "at or above it in 2 cells" in out
    assert "lies below zero: 1 (photo-regions mobilenet_v2 64KB)." in out
    monkeypatch.setattr(sys, "argv", ["verdict.py", str(digits), str(digits)])
    with pytest.raises(SystemExit, match=r"digits\.jsonl:1: mnist mobilenet_v2 64KB is also in an earlier file"):
        verdict.main()


def test_a_variant_is_read_from_the_first_results_file_that_holds_it(tmp_path):
    import json

    def rows(path, variant, seeds):
        cell = {"task": "digits", "network": "mobilenet_v2", "budget": "64KB", "lr": 0.005, "accuracy": 0.5}
        path.write_text("".join(json.dumps({**cell, "variant": variant, "seed": s}) + "\n" for s in seeds))
        return path

    new = rows(tmp_path / "new.jsonl", "budgetplan (trial all)", [0])
    old = tmp_path / "old.jsonl"
    old.write_text(rows(tmp_path / "a", "budgetplan (trial all)", [0, 1, 2]).read_text()
                   + rows(tmp_path / "b", "bias", [0, 1]).read_text())  # fmt: skip
    read = accuracy.read_rows([new, old, tmp_path / "missing.jsonl"])
    assert sorted((r["variant"], r["seed"]) for r in read) == [("bias", 0), ("bias", 1), ("budgetplan (trial all)", 0)]


def test_the_trial_report_names_the_winner_without_its_details():
    source = "shipped table: x; {} chosen over measured by trials on 8 training batches (288 steps in 3 rounds"
    assert (
        accuracy.trial_label(source.format("TraDy's layers, channels redrawn every epoch"))
        == "TraDy's layers + redrawn"
    )
    assert accuracy.trial_label(source.format("measured: gradient energy, 8 batches")) == "measured"
    assert accuracy.trial_label(source.format("biases alone")) == "biases alone"
    assert accuracy.trial_label(source.format("TraDy's own draws")) == "TraDy's own draws"
    assert accuracy.trial_label("shipped table: x") is None  # no trial ran


def test_the_trial_report_sets_the_trials_cost_against_the_fits_and_counts_the_winners():
    source = "shipped table: x; {} chosen over y by trials on 8 training batches ({} steps in 3 rounds of 6 plans)"
    costs = {"steps": 48, "setup_seconds": 30.0, "seconds": 50.0}
    rows = [
        {"variant": "v", "budget": "64KB", "importance": source.format("biases alone", 176), **costs},
        {"variant": "v", "budget": "64KB", "importance": source.format("measured: energy", 176), **costs, "steps": 50},
        {"variant": "v", "budget": "64KB", "importance": source.format("biases alone", 176), **costs},
        {"variant": "v", "budget": "128KB", "importance": source.format("measured", 288), "seconds": 70.0},
        {"variant": "v", "budget": "1MB", "importance": "shipped table: x", **costs},  # no trial
    ]
    lines = accuracy.trial_report(rows, ["64KB", "128KB", "1MB"]).splitlines()
    assert lines[2] == "| v | 64KB | 3 | 176 | 49 | 30 | 20 | biases alone 2, measured 1 |"
    assert lines[3] == "| v | 128KB | 1 | 288 | – | – | – | measured 1 |"  # recorded before steps and set-up
    assert len(lines) == 4


def test_each_results_file_brings_the_runs_that_chose_its_rates(tmp_path, monkeypatch, capsys):
    """A report over two files with a grid of rates: each file's rows at the rate that the
    runs beside it (FILE-lr.jsonl) chose, the first file's variant from it alone."""
    protocol = {"epochs": 6, "train_per_class": 32, "lr": "0.001/0.005", "norms": "folded", "val_fraction": 0.2,
                "val_per_class": None, "recipes": "own", "selection": "none"}  # fmt: skip

    def write(path, variant, accuracy_by_lr, tuned_accuracy_by_lr):
        cell = {"task": "digits", "network": "mobilenet_v2", "variant": variant, "budget": "64KB", **protocol}
        row = {"loss": 1.0, "training_memory": 1000, "saved_per_sample": 10, "trained_layers": 1, "importance": "x"}
        for where, by_lr in ((path, accuracy_by_lr), (path.with_name(f"{path.stem}-lr.jsonl"), tuned_accuracy_by_lr)):
            runs = ({**cell, **row, "seed": 0, "chosen_lr": lr, "accuracy": a} for lr, a in by_lr.items())
            where.write_text("".join(json.dumps(r) + "\n" for r in runs))

    new, old = tmp_path / "new.jsonl", tmp_path / "old.jsonl"
    write(new, "budgetplan (trial all)", {0.005: 0.70}, {0.001: 0.2, 0.005: 0.3})
    write(old, "trady", {0.001: 0.61, 0.005: 0.65}, {0.001: 0.4, 0.005: 0.1})  # chose 0.001
    argv = ["accuracy.py", "--tasks", "digits", "--budgets", "64KB", "--lr-grid", "0.001,0.005", "--seeds", "0",
            "--own-importance", "--results", f"{new},{old}", "--report"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    accuracy.main()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| digits | mobilenet_v2 |")]
    assert sorted((r.split(" | ")[2], r.split(" | ")[4]) for r in rows) == [
        ("budgetplan (trial all)", "70.00 ± 0.00%"),
        ("trady", "61.00 ± 0.00%"),
    ]


before_after = _script("before_after")


def test_before_and_after_pairs_a_variants_runs_by_cell_and_seed(tmp_path, capsys, monkeypatch):
    source = "measured: x; {} chosen over y by trials on 8 training batches (176 steps in 3 rounds of 6 plans; "
    source += "lowest loss on 1 validation batch {} vs 9)"

    def results(path, accuracies, winner):
        cell = {"task": "photo-regions", "network": "mobilenet_v2", "variant": "budgetplan (trial all)"}
        runs = [{**cell, "budget": budget, "seed": seed, "accuracy": value, "importance": source.format(winner, value)}
                for (budget, seed), value in accuracies.items()]  # fmt: skip
        runs.append({**cell, "variant": "bias", "budget": "64KB", "seed": 0, "accuracy": 0.9})  # another variant
        path.write_text("".join(json.dumps(r) + "\n" for r in runs))
        return str(path)

    before = results(tmp_path / "before.jsonl", {("64KB", 0): 0.50, ("64KB", 1): 0.60, ("1MB", 0): 0.7}, "biases alone")
    later = {("64KB", 0): 0.53, ("64KB", 1): 0.61, ("64KB", 2): 0.9}
    after = results(tmp_path / "after.jsonl", later, "TraDy's own draws")
    monkeypatch.setattr(sys, "argv", ["before_after.py", before, after])
    before_after.main()
    lines = capsys.readouterr().out.splitlines()
    # seed 2 and 1 MB were run on one side only: two pairs, +3 and +1 points
    assert lines[2] == (
        "| photo-regions | mobilenet_v2 | 64KB | 2 | 55.00 | 57.00 | +2.00 [-10.71, +14.71] "
        "| biases alone 2 | TraDy's own draws 2 |"
    )
    assert lines[4] == "Over 2 pairs: +2.00 [-10.71, +14.71] points; after ahead in 2, behind in 0."
    # the winner before reached the lower loss in both pairs (its loss is its accuracy here)
    assert lines[-1] == "| TraDy's own draws | 2 | +2.00 [-10.71, +14.71] | 2 |" and len(lines) == 9
    same = {"importance": source.format("biases alone", 0.1)}
    assert not before_after.passed_over(same, {"importance": source.format("biases alone", 0.2)})
    assert before_after.passed_over(same, {"importance": source.format("measured", 0.2)})
    assert not before_after.passed_over(same, {"importance": source.format("measured", 0.05)})
    # another variant of the after file: the recipe's one run pairs with seed 0 of 64 KB
    monkeypatch.setattr(sys, "argv", ["before_after.py", before, after, "--after-variant", "bias"])
    before_after.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("| photo-regions | mobilenet_v2 | 64KB | 1 | 50.00 | 90.00 | +40.00, 1 seed |")
    assert lines[-1].startswith("Over 1 pairs: +40.00, 1 seed points")  # no trial chose the recipe's plan


trial_curves = _script("trial_curves")


def test_trial_curves_replay_halving_schedules_on_the_recorded_curves(tmp_path, capsys, monkeypatch):
    # lowest loss so far at steps 8..48: plan 0 starts slowly and ends lowest, plan 1 starts fast
    slow, fast = [2.0, 1.9, 1.6, 1.2, 0.8, 0.5], [1.0, 0.9, 0.85, 0.8, 0.75, 0.7]
    curves = [slow, fast, [1.5, 1.4, 1.3, 1.2, 1.1, 1.0], [1.6] * 6, [1.7] * 6, [1.8] * 6]
    # rounds of 16: plans 1, 2, 3 go on (slow is fifth at 16), 1 and 2 at 32, 1 wins at 48
    assert trial_curves.as_run(6) == [(16, 3), (32, 2), (48, 1)] and trial_curves.as_run(4) == [(24, 2), (48, 1)]
    assert trial_curves.replay(curves, trial_curves.as_run(6)) == (1, 6 * 16 + 3 * 16 + 2 * 16)
    # a first round of 32: the slow plan is level third (1.2; ties go to the earlier) and wins at 48
    assert trial_curves.replay(curves, [(32, 3), (48, 1)]) == (0, 6 * 32 + 3 * 16)
    assert trial_curves.replay(curves, [(48, 1)]) == (0, 6 * 48)
    labels = ["shipped table", "measured: gradient energy", "c", "d", "e", "f"]
    cell = {"task": "digits", "network": "mobilenet_v2", "budget": "64KB", "seed": 0}
    out = tmp_path / "curves.jsonl"
    out.write_text(json.dumps({**cell, "lr": 0.005, "labels": labels, "curves": curves}) + "\n")
    source = "x; {} chosen over y by trials (176 steps in 3 rounds of 6 plans)"
    fits = [{**cell, "variant": "budgetplan (trial all)", "accuracy": 0.9, "importance": source.format("measured: z"),
             "chosen_lr": 0.005}]  # fmt: skip
    like = tmp_path / "fits.jsonl"
    like.write_text(json.dumps(fits[0]) + "\n")
    monkeypatch.setattr(sys, "argv", ["trial_curves.py", "--like", str(like), "--out", str(out), "--report"])
    trial_curves.main()
    lines = capsys.readouterr().out.splitlines()
    # only halving as run chose the plan whose fit is stored (measured: 90 %)
    assert lines[2] == "| halving as the trial runs it | 176 | 0 of 1 | +0.00 points over 1 |"
    assert lines[-1] == "| every plan 48 | 288 | 1 of 1 | – |"
    # another file's fits of the table's plan: the one at the curves' rate counts
    table = {**fits[0], "variant": "budgetplan", "importance": source.format("shipped table: t")}
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({**table, "accuracy": 0.8}) + "\n" + json.dumps({**table, "chosen_lr": 0.001}) + "\n")
    argv = ["trial_curves.py", "--like", str(like), "--fits", str(other), "--out", str(out), "--report"]
    monkeypatch.setattr(sys, "argv", argv)
    trial_curves.main()
    assert capsys.readouterr().out.splitlines()[-1] == "| every plan 48 | 288 | 1 of 1 | -10.00 points over 1 |"
    # fits of the same variant in a second file count too; each choice pairs with the baseline's fit of its seed
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({**fits[0], "seed": 1, "accuracy": 0.7}) + "\n")
    out.write_text(
        out.read_text() + json.dumps({**cell, "seed": 1, "lr": 0.005, "labels": labels, "curves": curves}) + "\n"
    )
    baseline = tmp_path / "baseline.jsonl"
    base = {**cell, "variant": "budgetplan", "accuracy": 0.85, "chosen_lr": 0.002}  # at its own rate
    baseline.write_text("".join(json.dumps({**base, "seed": s}) + "\n" for s in (0, 1)))
    argv = ["trial_curves.py", "--like", str(like), "--fits", f"{other},{more}", "--out", str(out), "--report"]
    monkeypatch.setattr(sys, "argv", [*argv, "--baseline", str(baseline)])
    trial_curves.main()
    lines = capsys.readouterr().out.splitlines()
    # halving as run chose measured in both fits: 90 and 70 % against 85 and 85
    assert lines[2].startswith("| halving as the trial runs it | 176 | 0 of 2 | +0.00 points over 2 | -5.00 [")
    assert lines[2].endswith("] (2) |") and lines[-1].endswith("| -10.00 points over 1 | -5.00, 1 seed (1) |")


def test_trial_curves_fit_what_a_schedule_chose_where_no_fit_is_stored(tmp_path, monkeypatch):
    candidates = [SimpleNamespace(label=label) for label in ("shipped table: t", "measured: m", "biases alone")]
    chosen, rounds, steps = trial_curves.forced("measured: m")(None, candidates, [])
    # the plan named, ranked first against the others, untried
    assert (
        chosen is candidates[1]
        and steps == 0
        and [label for label, _ in rounds[-1]] == ["measured: m", "shipped table: t", "biases alone"]
    )
    with pytest.raises(SystemExit, match="no candidate 'TraDy'"):
        trial_curves.forced("TraDy")(None, candidates, [])
    cell = {"task": "digits", "network": "mobilenet_v2", "budget": "64KB", "seed": 0}
    # every plan 48 chooses plan 2 (lowest at 48); halving as run (rounds of 24 among 3) keeps 0 and 1, then 0
    curve = {**cell, "lr": 0.005, "labels": [c.label for c in candidates],
             "curves": [[1.0] * 6, [1.1] * 6, [2.0, 2.0, 2.0, 2.0, 2.0, 0.5]]}  # fmt: skip
    like = [{**cell, "variant": "budgetplan (trial all)", "chosen_lr": 0.002, "accuracy": 0.5}]
    source = "x; {} chosen over y by trials (176 steps in 3 rounds of 6 plans)"
    stored = [{**like[0], "chosen_lr": 0.005, "importance": source.format("shipped table: t")}]
    fitted: list[tuple[float, str]] = []

    def fit(row, label):
        fitted.append((row["chosen_lr"], label))
        return {"accuracy": 0.7}

    monkeypatch.setattr(trial_curves, "fit_choice", fit)
    out = tmp_path / "fits.jsonl"
    trial_curves.fit_missing(like, [curve], stored, trial_curves.AS_RUN, out)
    assert fitted == []  # halving's choice, the table, is stored at the curves' rate
    trial_curves.fit_missing(like, [curve], stored, "every plan 48", out)
    assert fitted == [(0.005, "biases alone")]  # at the curves' rate, not the row's
    trial_curves.fit_missing(like, [curve], stored, trial_curves.EVERY, out)
    assert fitted[1:] == [(0.005, "measured: m"), (0.005, "biases alone")]
    assert len(out.read_text().splitlines()) == 3


def test_trial_curves_train_only_the_plans_whose_curves_are_not_kept(monkeypatch):
    kept_curve = [1.0] * 6
    candidates = [SimpleNamespace(label="table", draws=1), SimpleNamespace(label="table, redrawn", draws=4),
                  SimpleNamespace(label="biases alone", draws=1)]  # fmt: skip
    trained = []

    def losses(module, tried, *args, until, **options):
        trained.append([c.label for c in tried])
        return [until / 100] * len(tried)

    monkeypatch.setattr(trial_curves, "trial_losses", losses)
    # the table's kept curve is taken; a redrawn plan trains though a curve of its label is kept
    kept = {"table": kept_curve, "table, redrawn": [9.0] * 6}
    with pytest.raises(trial_curves.Recorded) as found:
        trial_curves.recorder(kept)(None, candidates, [])
    assert trained[0] == ["table, redrawn", "biases alone"] and len(trained) == 6
    assert found.value.labels == ["table", "table, redrawn", "biases alone"]
    assert found.value.curves[0] == kept_curve and found.value.curves[1] == [0.08, 0.16, 0.24, 0.32, 0.4, 0.48]


def test_trial_curves_compare_the_choices_before_and_after_a_change():
    cell = {"task": "digits", "network": "mobilenet_v2", "budget": "64KB", "seed": 0, "lr": 0.005}
    labels = ["shipped table: t", "measured: m, channels redrawn every epoch"]
    old = {**cell, "labels": labels, "curves": [[1.0] * 6, [0.9] * 6]}  # the redrawn plan won
    new = {**cell, "labels": labels, "curves": [[1.0] * 6, [1.2] * 6]}  # held, it loses
    source = "x; {} chosen over y by trials (48 steps in 1 round of 2 plans)"
    fits = [{**cell, "variant": "v", "chosen_lr": 0.005, "accuracy": accuracy, "importance": source.format(label)}
            for label, accuracy in zip(labels, (0.8, 0.75), strict=True)]  # fmt: skip
    text = trial_curves.compare([new], [old, {**old, "seed": 1}], fits)
    assert "| measured + redrawn | +0.3000 (1) |" in text and "| shipped table | +0.0000 (1) |" in text
    assert text.endswith("another plan in 1 of 1 fits: +5.00 points over the 1 with both fits stored")
    assert trial_curves.compare([old], [old], fits).endswith("another plan in 0 of 1 fits: –")
