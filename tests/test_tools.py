"""Profiles users extend, sweeps, plan pictures, comparisons and exports."""

import json
import shutil
import subprocess

import pytest
import torch
import yaml

from budgetplan import ProfileError, load_device, solve
from budgetplan.costs.build import layer_costs
from budgetplan.planning.problem import Problem
from budgetplan.planning.sweep import parse_budgets, sweep
from budgetplan.report.export import c_header, plan_table
from budgetplan.report.plots import memory_timeline
from budgetplan.zoo.models import build_model

from .helpers.cli import run_cli


@pytest.fixture(scope="module")
def default_setup():
    model, name = build_model()
    device = load_device("cortex-m7")
    costs = layer_costs(model, torch.zeros(1, 3, 128, 128), device, model_name=name)
    return model, name, device, costs


@pytest.fixture(scope="module")
def plans(tmp_path_factory, default_setup):
    model, name, _, _ = default_setup
    folder = tmp_path_factory.mktemp("plans")
    paths = []
    for budget in ("256KB", "300KB"):
        path = folder / f"plan-{budget}.yaml"
        solve(model, torch.zeros(1, 3, 128, 128), "cortex-m7", model_name=name, budget=budget).save(path)
        paths.append(path)
    return paths


def test_extends_overrides_and_merges(tmp_path):
    (tmp_path / "board.yaml").write_text("extends: stm32f746\nbudget: 200KB\nbits: {mask: 8}\n")
    board = load_device(tmp_path / "board.yaml")
    m7 = load_device("cortex-m7")
    assert (board.name, board.aliases, board.budget) == ("board", (), 200 * 1024)
    assert board.bits.mask == 8 and board.bits.weight == m7.bits.weight and board.sram == m7.sram
    (tmp_path / "child.yaml").write_text("extends: board.yaml\nname: child\nreserved: 32KB\n")
    child = load_device(tmp_path / "child.yaml")
    assert (child.name, child.budget, child.reserved) == ("child", 200 * 1024, 32 * 1024)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("extends: cortex-m99\n", "field 'extends': unknown device 'cortex-m99'"),
        ("extends: loop.yaml\n", "in a loop"),
        ("extends: cortex-m7\nbudget: 1MB\n", "field 'budget'"),
        ("extends: [cortex-m7]\n", "field 'extends'"),
    ],
)
def test_bad_extends(tmp_path, text, words):
    path = tmp_path / "loop.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError, match=words) as err:
        load_device(path)
    assert str(path) in str(err.value)


def test_validate_and_show_from_the_command_line(tmp_path):
    good = tmp_path / "board.yaml"
    good.write_text("extends: cortex-m7\nbudget: 200KB\n")
    result = run_cli("validate", str(good))
    assert result.returncode == 0 and "valid profile 'board'" in result.stdout and "budget 200.0 KB" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: cortex-m7\nflash: -1MB\n")
    result = run_cli("validate", str(bad))
    assert result.returncode == 2 and str(bad) in result.stderr and "field 'flash'" in result.stderr
    shown = run_cli("devices", "--show", "pico")
    assert shown.returncode == 0
    assert yaml.safe_load(shown.stdout) == load_device("rp2040").to_dict()
    assert json.loads(run_cli("devices", "--show", "rp2040", "--format", "json").stdout)["name"] == "rp2040"


def test_parse_budgets():
    assert parse_budgets("64KB:1MB:5") == [64 * 1024, 128 * 1024, 256 * 1024, 512 * 1024, 1024 * 1024]
    assert parse_budgets("1KB, 3KB") == [1024, 3072]
    for bad in ("1MB:64KB:4", "64KB:1MB:1", "lots", "64KB:1MB"):
        with pytest.raises(Exception, match="--budgets"):
            parse_budgets(bad)


@pytest.mark.slow
def test_sweep_rows(default_setup):
    _, _, device, costs = default_setup
    rows = sweep(Problem.from_costs(costs, device, "prior"), parse_budgets("64KB:512KB:4"))
    assert [r.budget_bytes for r in rows] == [64 * 1024, 128 * 1024, 256 * 1024, 512 * 1024]
    assert [r.feasible for r in rows] == [False, True, True, True]  # the smallest feasible is 76.5 KB
    assert "smallest budget" in rows[0].note
    feasible = [r for r in rows if r.feasible]
    assert feasible[0].objective <= feasible[1].objective <= feasible[2].objective
    assert all(r.predicted_bytes <= r.budget_bytes for r in feasible)
    assert all(0 < r.trained_fraction <= 1 for r in feasible)


@pytest.mark.slow
def test_sweep_command(tmp_path):
    png = tmp_path / "sweep.png"
    result = run_cli("sweep", "--budgets", "64KB,400KB", "--plot", str(png), "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [r["feasible"] for r in data["rows"]] == [False, True]
    assert "solving 2/2" in result.stderr  # progress
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.mark.slow
def test_memory_timeline_peaks_at_the_prediction(plans):
    from budgetplan import Plan

    for path in plans:
        plan = Plan.load(path)
        timeline = memory_timeline(plan)
        kinds = [k for k in timeline if k != "point"]
        totals = [sum(timeline[k][i] for k in kinds) for i in range(len(timeline["point"]))]
        assert max(totals) == pytest.approx(plan.predicted.peak_bytes)


@pytest.mark.slow
def test_show_plot(tmp_path, plans):
    png = tmp_path / "plan.png"
    result = run_cli("show", str(plans[0]), "--plot", str(png))
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare(plans):
    result = run_cli("compare", str(plans[0]), str(plans[1]), "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = {r["what"]: (r["first"], r["second"]) for r in json.loads(result.stdout)}
    assert rows["budget"] == ("262144", "307200")
    assert any(what.startswith("features.") for what in rows)
    same = run_cli("compare", str(plans[0]), str(plans[0]))
    assert same.stdout.strip() == "the two plans are the same"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_c_header_compiles_and_holds_the_plan(tmp_path, plans):
    from budgetplan import Plan

    plan = Plan.load(plans[1])
    header = tmp_path / "plan.h"
    result = run_cli("export", str(plans[1]), "--format", "c-header", "--out", str(header))
    assert result.returncode == 0, result.stderr
    assert header.read_text() == c_header(plan)
    subprocess.run(["cc", "-std=c99", "-Wall", "-Werror", "-fsyntax-only", "-x", "c", str(header)], check=True)
    program = tmp_path / "main.c"
    program.write_text(
        '#include <stdio.h>\n#include "plan.h"\nint main(void) {\n'
        "  unsigned long channels = 0, bias = 0;\n"
        "  for (unsigned i = 0; i < BUDGETPLAN_NUM_LAYERS; i++) {\n"
        "    channels += budgetplan_layers[i].channels; bias += budgetplan_layers[i].bias; }\n"
        '  printf("%u %u %lu %lu\\n", BUDGETPLAN_BUDGET_BYTES, BUDGETPLAN_NUM_UPDATED, channels, bias);\n'
        "  return 0;\n}\n"
    )
    subprocess.run(["cc", "-std=c99", "-o", str(tmp_path / "main"), str(program)], check=True, cwd=tmp_path)
    out = subprocess.run([str(tmp_path / "main")], capture_output=True, text=True, check=True).stdout.split()
    assert [int(v) for v in out] == [
        plan.budget_bytes,
        len(plan.updated()),
        sum(layer.channels for layer in plan.layers),
        sum(layer.bias for layer in plan.layers),
    ]


def test_json_export(plans):
    from budgetplan import Plan

    result = run_cli("export", str(plans[0]), "--format", "json")
    assert result.returncode == 0
    assert json.loads(result.stdout) == plan_table(Plan.load(plans[0]))
