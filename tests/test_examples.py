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


def _run(*args, timeout=600):
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def test_lightning_cli_recipe(tmp_path):
    out = _run(
        "examples/cli.py", "fit", "--config", "examples/config.yaml", "--trainer.default_root_dir", str(tmp_path),
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    )  # fmt: skip
    assert "`Trainer.fit` stopped: `max_epochs=1` reached." in out
    assert (tmp_path / "config.yaml").exists()  # the run's config, with the callback in it
    assert "budgetplan.BudgetPlanCallback" in (tmp_path / "config.yaml").read_text()


def test_finetune_digits_example():
    out = _run("examples/finetune_digits.py", "--epochs", "1", "--limit-batches", "2")
    assert "net.classifier.1" in out and "1280/1280" in out
    assert "cap 256.0 KB" in out
    assert "validation accuracy after 1 epochs" in out
    assert "for dense fine-tuning" in out
