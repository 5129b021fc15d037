"""``budgetplan check``: the CI gate over devices and budgets, its floors, its baseline,
and its reports for people, JUnit and GitHub."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import pytest

from budgetplan.plan.model import Plan

from .helpers.cli import run_cli

SMALL = ("--input-size", "64")  # a quarter of the default's pixels: the same layers, traced faster


@pytest.mark.slow
def test_every_shipped_device_passes_and_the_junit_report_has_one_case_each(tmp_path):
    from budgetplan.device.profile import shipped_devices

    report = tmp_path / "report.xml"
    result = run_cli("check", "--devices", "all", "--junit", str(report))
    assert result.returncode == 0, result.stdout + result.stderr
    suite = ET.parse(report).getroot()
    cases = suite.findall("testcase")
    names = sorted(device.name for device in shipped_devices())
    assert suite.tag == "testsuite" and suite.get("tests") == str(len(names)) and suite.get("failures") == "0"
    assert sorted(case.get("name").split(" @ ")[0] for case in cases) == names
    assert not any(case.find("failure") is not None for case in cases)
    assert f"all {len(names)} cells passed" in result.stdout


def test_floors_fail_the_cells_that_break_them_and_say_why(tmp_path):
    report = tmp_path / "report.xml"
    args = ["check", "--devices", "cortex-m4,cortex-m7", *SMALL, "--min-trained", "50%", "--junit", str(report)]
    result = run_cli(*args)
    assert result.returncode == 1
    failed = {
        case.get("name"): case.find("failure").get("message")
        for case in ET.parse(report).getroot().findall("testcase")
        if case.find("failure") is not None
    }
    assert failed and all("under the floor of 50.0%" in why for why in failed.values())
    assert "FAIL" in result.stdout and "cells failed" in result.stdout
    peak = run_cli("check", "--devices", "cortex-m7", *SMALL, "--max-peak", "10%")
    assert peak.returncode == 1 and "of the SRAM, over 10.0%" in peak.stdout


def test_a_baseline_that_trained_more_fails_the_cell_by_the_drop(tmp_path):
    base = tmp_path / "plans"
    saved = run_cli("check", "--devices", "cortex-m7", *SMALL, "--save", str(base))
    assert saved.returncode == 0, saved.stderr
    (path,) = base.glob("*.yaml")
    same = run_cli("check", "--devices", "cortex-m7", *SMALL, "--baseline", str(base))
    assert same.returncode == 0, same.stdout  # the plan it was made from holds
    plan = Plan.load(path)
    fuller = [
        dataclasses.replace(layer, channels=layer.total_channels, update="weight") for layer in plan.layers
    ]  # fmt: skip
    dataclasses.replace(plan, layers=fuller).save(path)
    result = run_cli("check", "--devices", "cortex-m7", *SMALL, "--baseline", str(base), "--format", "json")
    assert result.returncode == 1
    assert "cortex-m7" in result.stdout and "trained share fell by" in result.stdout
    assert "from 100.00% in the baseline" in result.stdout


def test_an_infeasible_cell_fails_and_github_gets_an_annotation(monkeypatch):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    result = run_cli("check", "--devices", "cortex-m7", *SMALL, "--budget", "2KB", "--budget", "256KB")
    assert result.returncode == 1
    lines = [line for line in result.stdout.splitlines() if line.startswith("::error")]
    assert len(lines) == 1 and lines[0].startswith("::error title=budgetplan check cortex-m7 @ 2.0 KB::infeasible")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--devices", "no-such-board"], "no-such-board"),
        (["--min-trained", "lots"], "expected a share such as 5% or 0.05"),
        (["--baseline", "/nonexistent/plans"], "not a directory of plan files"),
        (["--junit", "report.txt"], "is written as .xml"),
    ],
)
def test_bad_input_exits_2_and_names_it(args, says, tmp_path):
    result = run_cli("check", *SMALL, *args, cwd=tmp_path)
    assert result.returncode == 2 and says in result.stderr


# --- the pytest plugin and assert_fits ----------------------------------------------------

USER_TEST = """
import torch
from my_model import TinyClassifier

from budgetplan.testing import assert_fits


def test_it_fits(budgetplan_device):
    assert_fits(TinyClassifier(), budgetplan_device, torch.zeros(1, 3, 32, 32), min_trained=0.01)
"""


@pytest.mark.slow
def test_the_plugin_runs_a_users_test_once_per_profile_listed_in_their_pyproject(tmp_path):
    import subprocess
    import sys

    (tmp_path / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nbudgetplan_devices = ["cortex-m7", "cortex-m4", "rp2040"]\n'
    )
    (tmp_path / "my_model.py").write_text(
        "from torch import nn\n\n"
        "class TinyClassifier(nn.Sequential):\n"
        "    def __init__(self):\n"
        "        super().__init__(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
        "                         nn.Linear(8, 5))\n"
    )
    (tmp_path / "test_fits.py").write_text(USER_TEST)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-p", "no:xdist", "test_fits.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    for name in ("cortex-m7", "cortex-m4", "rp2040"):
        assert f"test_fits.py::test_it_fits[{name}] PASSED" in done.stdout
    assert "3 passed" in done.stdout


def test_assert_fits_says_what_to_change():
    import torch
    from torch import nn

    from budgetplan.testing import assert_fits

    net = nn.Sequential(
        nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, 10),
    )  # fmt: skip
    example = torch.zeros(1, 3, 32, 32)
    with pytest.raises(AssertionError, match=r"no training plan fits: .*; give budget='53KB'"):
        assert_fits(net, "cortex-m7", example, budget="8KB")
    with pytest.raises(AssertionError, match=r"trains 14.2% of its weights, under 50.0%: a larger budget"):
        assert_fits(net, "cortex-m7", example, budget="64KB", min_trained=0.5)
    with pytest.raises(AssertionError, match=r"of cortex-m7's SRAM, over 1.0%: give budget='3KB' or less"):
        assert_fits(net, "cortex-m7", example, max_peak=0.01)
