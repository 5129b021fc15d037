"""DDP on two CPU processes: every rank trains the same channels and ends with the same weights."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.mark.slow
def test_two_ranks_train_the_same_selection_and_an_infeasible_budget_stops_both(tmp_path):
    """One launch of two processes fits twice: at 3 KB, then at 100 B, which no plan fits."""
    script = Path(__file__).resolve().parent.parent / "helpers" / "ddp_fit.py"
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "3KB", "100B"], capture_output=True, text=True, timeout=600
    )
    assert all((tmp_path / f"rank{r}.pt").exists() for r in (0, 1)), result.stderr[-3000:]  # the first fit
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["plan"] == ranks[1]["plan"]
    assert ranks[0]["selections"] == ranks[1]["selections"]
    assert len({str(s) for s in ranks[0]["selections"]}) > 1  # the channels did change
    assert ranks[0]["trainable"] == ranks[1]["trainable"]
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), name
    assert result.returncode != 0  # the second fit
    for rank in (0, 1):
        error = (tmp_path / f"rank{rank}.error").read_text()
        assert error.startswith("InfeasibleError: no plan for TinyModule fits a budget of 100 B")
