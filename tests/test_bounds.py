"""Hostile files and flags: refused in one line, quickly, in bounded memory, nothing lost.

Every command's outputs go through one writer (checked before the work, written
atomically, a full disk reported with the old file intact); every file it reads is read
with bounds (no aliases, a nesting limit, a size limit); sizes are checked before anything
is allocated.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

import pytest
import yaml

from budgetplan import cli
from budgetplan.errors import BudgetPlanError
from budgetplan.files import MAX_DEPTH, output_file, read_yaml, write_atomic
from budgetplan.planning.sweep import MAX_SWEEP, parse_budgets

from .helpers.cli import refused
from .helpers.disk import full_disk

REPO = Path(__file__).resolve().parent.parent
SCHEMES = REPO / "examples" / "tiny-training"
BOMB = (
    '&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
    "&b [*a,*a,*a,*a,*a,*a,*a,*a,*a]",
    "&c [*b,*b,*b,*b,*b,*b,*b,*b,*b]",
    "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c]",
    "&e [*d,*d,*d,*d,*d,*d,*d,*d,*d]",
    "&f [*e,*e,*e,*e,*e,*e,*e,*e,*e]",
    "&g [*f,*f,*f,*f,*f,*f,*f,*f,*f]",
    "&h [*g,*g,*g,*g,*g,*g,*g,*g,*g]",
    "&i [*h,*h,*h,*h,*h,*h,*h,*h,*h]",
)  # about 700 bytes that expand to 9^9 strings: 3 GB when quoted


def _bomb_in(field_line: str) -> str:
    """A YAML mapping whose ``field_line`` (``name: {}``) holds the last level of the bomb."""
    anchors = "\n".join(f"x{i}: {level}" for i, level in enumerate(BOMB[:-1]))
    return anchors + "\n" + field_line.format(BOMB[-1]) + "\n"


def _profile_with(**fields: object) -> str:
    data = yaml.safe_load((REPO / "device_profiles" / "cortex-m7.yaml").read_text())
    data.update({"aliases": [], **fields})
    return yaml.safe_dump(data, sort_keys=False)


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plan") / "plan.yaml"
    assert cli.main(["solve", "--budget", "300KB", "--out", str(path)]) == 0
    return path


# --- reading: aliases, nesting, numbers ---------------------------------------------------


@pytest.mark.parametrize(
    ("command", "text"),
    [
        ("validate", _bomb_in("name: {}")),
        ("import-scheme", _bomb_in("weight_select_criteria: {}") + "n_bias_update: 1\nmanual_weight_idx: 1\n"),
        ("import-scheme", _bomb_in("n_bias_update: {}") + "manual_weight_idx: 1\n"),
        ("show", _bomb_in("model: {}") + "schema_version: 1\n"),
    ],
)
def test_an_alias_bomb_is_refused_without_expanding_it(tmp_path, capsys, command, text):
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    err = refused(capsys, command, str(path), seconds=5)
    assert "hostile.yaml: not read at line 2" in err and "aliases are not read" in err
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KB: under 100 MB more


@pytest.mark.parametrize(("name", "text"), [("deep.json", "[" * 600 + "]" * 600), ("deep.yaml", "a: " + "{b: " * 600)])
@pytest.mark.parametrize("command", ["validate", "show", "import-scheme"])
def test_deep_nesting_is_refused_in_one_line(tmp_path, capsys, name, text, command):
    path = tmp_path / name
    path.write_text(text)
    assert f"nested deeper than {MAX_DEPTH} levels" in refused(capsys, command, str(path), seconds=5)


def test_a_huge_file_or_endless_stream_is_refused_after_a_bounded_read(tmp_path):
    big = tmp_path / "big.yaml"
    with big.open("wb") as handle:
        handle.truncate(65 * 1024**2)  # sparse: no disk used
    with pytest.raises(BudgetPlanError, match=r"big\.yaml: not a plan file: larger than 64 MB"):
        read_yaml(big, "plan file")
    with pytest.raises(BudgetPlanError, match="not an importance file: larger than"):
        read_yaml("/dev/zero", "importance file")


@pytest.mark.slow
def test_json_numbers_in_exponent_form_are_numbers(tmp_path, plan_file):
    data = yaml.safe_load(plan_file.read_text())
    data["layers"][-1]["importance"] = 5e-05
    data["solve_seconds"] = 1e-3
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))  # json writes 5e-05 and 0.001
    assert '"importance": 5e-05' in path.read_text()
    assert read_yaml(path, "plan file")["layers"][-1]["importance"] == 5e-05
    assert cli.main(["show", str(path)]) == 0


@pytest.mark.slow
def test_a_plan_named_json_is_written_as_json(tmp_path, capsys):
    path = tmp_path / "plan.json"
    assert cli.main(["solve", "--budget", "300KB", "--out", str(path)]) == 0
    assert json.loads(path.read_text())["budget_bytes"] == 300 * 1024
    capsys.readouterr()
    assert cli.main(["show", str(path), "--format", "json"]) == 0


def test_a_long_value_is_quoted_short(tmp_path, capsys):
    path = tmp_path / "board.yaml"
    bits = yaml.safe_load((REPO / "device_profiles" / "cortex-m7.yaml").read_text())["bits"]
    path.write_text(_profile_with(bits={**bits, "weight": "x" * 100_000}))
    err = refused(capsys, "validate", str(path))
    assert len(err) < 400 and "(100000 characters)" in err


# --- sizes checked before anything is allocated -----------------------------------------


def test_a_sweep_is_counted_before_its_budgets_are_made(capsys):
    err = refused(capsys, "sweep", "--budgets", "64KB:1MB:99999999999", seconds=5)
    assert f"a sweep solves at most {MAX_SWEEP}" in err
    assert f"at most {MAX_SWEEP}" in refused(capsys, "sweep", "--budgets", ",".join(["64KB"] * 100_000))


def test_a_budget_given_twice_is_solved_once_in_order():
    assert parse_budgets("256KB,128KB,256KB") == [128 * 1024, 256 * 1024]
    assert parse_budgets("64KB:65KB:64") == sorted(set(parse_budgets("64KB:65KB:64")))


@pytest.mark.parametrize("budget", ["1e30", "2048GB", "1e13"])
def test_a_budget_above_any_device_isrefused(capsys, budget):
    assert "above 1 TB" in refused(capsys, "solve", "--budget", budget)


def test_an_input_the_machine_cannot_trace_isrefused(capsys):
    err = refused(capsys, "solve", "--input-size", "100000", seconds=10)
    assert "input 3x100000x100000" in err and "give a smaller --input-size" in err


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--width-mult", "1000"], "of parameters, above half of the"),
        (["--num-classes", "1000000000"], "expected a whole number from 1 to 100,000"),
        (["--batch-size", "1000000000000"], "expected a whole number from 1 to 100,000"),
        (["--batch-size", "100000"], "batch size must be from 1 to 65536"),
    ],
)
def test_a_model_or_batch_the_machine_cannot_hold_isrefused(capsys, flags, words):
    assert words in refused(capsys, "solve", *flags, seconds=15)


def test_a_large_input_is_estimated_from_a_smaller_trace(capsys, monkeypatch):
    from budgetplan.costs import example

    monkeypatch.setattr(example, "available_memory", lambda: 2 * 1024**3)  # 2 GB: the input alone fits
    err = refused(capsys, "solve", "--input-size", "4000", seconds=30)
    assert "would hold about" in err and "of activations" in err


# --- writing: one writer, checked first, atomic, full disks ------------------------------


@pytest.mark.parametrize(
    ("name", "words"),
    [("plot", "is written as .png, .svg, .pdf"), ("plot.yaml", "name it plot.png"), ("plot.PNG.txt", ".png")],
)
def test_a_plot_without_a_picture_extension_is_refused_before_the_work(tmp_path, capsys, plan_file, name, words):
    target = tmp_path / name
    (tmp_path / "plot.png").write_text("old")
    os.chmod(tmp_path / "plot.png", 0o444)
    assert words in refused(capsys, "show", str(plan_file), "--plot", str(target))
    assert not target.exists() and (tmp_path / "plot.png").read_text() == "old"


@pytest.mark.parametrize("extension", [".png", ".svg", ".pdf"])
def test_a_plot_is_written_in_the_format_its_name_says(tmp_path, plan_file, extension):
    target = tmp_path / f"plan{extension}"
    assert cli.main(["show", str(plan_file), "--plot", str(target)]) == 0
    start = {".png": b"\x89PNG", ".svg": b"<?xml", ".pdf": b"%PDF"}[extension]
    assert target.read_bytes().startswith(start)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary file left


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["solve", "--budget", "200KB", "--out"], "plan.yaml"),
        (["sweep", "--budgets", "200KB,300KB", "--quiet", "--plot"], "sweep.png"),
    ],
)
def test_a_full_disk_is_one_line_and_the_old_file_survives(tmp_path, capsys, monkeypatch, args, name):
    target = tmp_path / name
    target.write_bytes(b"the old file")
    full_disk(monkeypatch, tmp_path, after=100)
    err = refused(capsys, *args, str(target))
    assert f"{name}: cannot write (No space left on device); the old file is kept" in err
    assert target.read_bytes() == b"the old file"
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_a_loop_of_links_is_refused_and_kept(tmp_path, capsys):
    (tmp_path / "a.yaml").symlink_to(tmp_path / "b.yaml")
    (tmp_path / "b.yaml").symlink_to(tmp_path / "a.yaml")
    assert "loop of symbolic links" in refused(capsys, "solve", "--out", str(tmp_path / "a.yaml"))
    assert (tmp_path / "a.yaml").is_symlink()


def test_the_writer_checks_the_extension_before_writing(tmp_path):
    with pytest.raises(BudgetPlanError, match=r"a plan file is written as \.yaml, \.yml, \.json"):
        output_file(tmp_path / "plan.txt", "plan file", {".yaml": "yaml", ".yml": "yaml", ".json": "json"})
    assert output_file(tmp_path / "x.SVG", "plot", {".svg": "svg"}).format == "svg"
    write_atomic(tmp_path / "x.svg", b"<svg/>")
    assert (tmp_path / "x.svg").read_bytes() == b"<svg/>"


# --- names that would break a generated file ------------------------------------------------


@pytest.mark.parametrize("breaker", ["\r", "\u2028", "\n", "\x85"])
def test_a_line_break_in_a_name_leaves_the_tiny_training_export_readable(tmp_path, capsys, breaker):
    scheme = tmp_path / "scheme.yaml"
    assert cli.main(["import-scheme", str(SCHEMES / "mbv2-w0.35-99kb.yaml"), "--out", str(scheme)]) == 0
    data = yaml.safe_load(scheme.read_text())
    data["model"] = f"mobilenet{breaker}evil: 1"
    scheme.write_text(yaml.safe_dump(data))
    capsys.readouterr()
    assert cli.main(["export", str(scheme), "--format", "tiny-training"]) == 0
    exported = capsys.readouterr().out
    assert list(yaml.safe_load(exported)) == ["backward_config"]
    assert all(line.startswith("#") for line in exported.split("backward_config:")[0].splitlines())
    assert cli.main(["export", str(scheme), "--format", "c-header"]) == 0
    header = capsys.readouterr().out
    assert next(line for line in header.splitlines() if "evil" in line).startswith("/* budgetplan plan for")


# --- the shipped schemes, as tiny-training reads them -----------------------------------


def _tiny_training_reading(block: dict) -> tuple[list[int], list[float]]:
    """What tiny-training's ``parsed_backward_config`` makes of the two list fields:
    ``str(value).split("-")``, read as ints and floats (core/utils/partial_backward.py)."""
    indices = [int(part) for part in str(block["manual_weight_idx"]).split("-")]
    ratio = block["weight_update_ratio"]
    ratios = [float(ratio)] * len(indices) if isinstance(ratio, (int, float)) else [float(p) for p in ratio.split("-")]
    return indices, ratios


@pytest.mark.parametrize("path", sorted(SCHEMES.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_schemes_are_in_the_form_tiny_training_parses(path):
    from budgetplan.interop.scheme import load_scheme

    block = yaml.safe_load(path.read_text())["backward_config"]
    indices, ratios = _tiny_training_reading(block)
    scheme = load_scheme(path)
    assert tuple(indices) == scheme.manual_weight_idx
    assert tuple(ratios) == tuple(float(r) for r in scheme.weight_update_ratio)  # type: ignore[union-attr]
    assert len(ratios) == len(indices)


# --- a forward whose path depends on its input ---------------------------------------------


def test_the_cli_says_when_the_forward_takes_another_path(tmp_path, capsys, monkeypatch):
    (tmp_path / "branchy.py").write_text(
        "import torch\n"
        "from torch import nn\n\n"
        "class Branchy(nn.Module):\n"
        "    def __init__(self, num_classes=10):\n"
        "        super().__init__()\n"
        "        self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3)\n"
        "        self.head = nn.Linear(4, num_classes)\n\n"
        "    def forward(self, x):\n"
        "        y = self.a(x) if x.abs().sum() > 0 else self.b(x)\n"
        "        return self.head(y.mean((2, 3)))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cli.main(["solve", "--model", "branchy:Branchy", "--input-size", "16", "--budget", "64KB"]) == 0
    err = capsys.readouterr().err
    assert "forward takes another path on another input: runs a; skips b;" in err
    sys.modules.pop("branchy", None)
