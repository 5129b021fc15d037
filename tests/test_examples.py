"""The examples run as shipped."""

import subprocess
import sys

import yaml

from budgetplan import Plan

from .conftest import REPO


def test_plan_custom_model(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "plan_custom_model.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    written = sorted(p.stem for p in tmp_path.glob("*.yaml"))
    assert "cortex-m4" in written and "cortex-m7" in written
    for path in tmp_path.glob("*.yaml"):
        plan = Plan.load(path)
        assert plan.model == "KeywordNet"
        assert plan.predicted.peak_bytes <= plan.budget_bytes
        assert yaml.safe_load(path.read_text())["device"] == path.stem
