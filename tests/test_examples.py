"""The examples run as shipped."""

import subprocess
import sys

import pytest
import yaml

from budgetplan import Plan

from .helpers.cli import REPO, run_script


@pytest.mark.slow
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


@pytest.mark.slow
def test_lightning_cli_recipe(tmp_path):
    out = _run(
        "examples/cli.py", "fit", "--config", "examples/config.yaml", "--trainer.default_root_dir", str(tmp_path),
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--data.image_size", "64", "--model.image_size", "64", "--data.batch_size", "8",  # a quick check
        "--trainer.callbacks.init_args.trial", "none",
    )  # fmt: skip
    assert "`Trainer.fit` stopped: `max_epochs=1` reached." in out
    assert (tmp_path / "config.yaml").exists()  # the run's config, with the callback in it
    assert "budgetplan.BudgetPlanCallback" in (tmp_path / "config.yaml").read_text()


@pytest.mark.slow
def test_finetune_digits_example(capsys):
    args = ("--epochs", "1", "--limit-batches", "2", "--image-size", "64", "--batch-size", "8", "--trial-steps", "16")
    code, out = run_script(capsys, "examples/finetune_digits.py", *args)
    assert code == 0, out[-3000:]
    assert "net.classifier.1" in out and "1280/1280" in out
    assert "cap 256.0 KB" in out
    assert "validation accuracy after 1 epochs" in out
    assert "for dense fine-tuning" in out


@pytest.mark.slow
def test_finetune_transformer_example(capsys):
    code, out = run_script(
        capsys, "examples/finetune_transformer.py", "--epochs", "1", "--pretrain-epochs", "1", "--limit-batches", "2"
    )
    assert code == 0, out[-3000:]
    assert "self_attention.in_proj" in out  # the query/key/value projections are plannable
    assert "cap 2.0 MB" in out
    assert "validation accuracy on 5-9 after 1 epochs" in out
    assert "measured with the plan" in out and "for dense fine-tuning" in out


def _image_folder(root, classes=("cat", "dog"), per_split=(4, 2)):
    """A tiny ImageFolder tree of random RGB PNGs: root/train/<class>/ and root/val/<class>/."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in zip(("train", "val"), per_split, strict=True):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")


@pytest.mark.slow
def test_compare_strategies_on_an_image_folder(tmp_path, capsys):
    _image_folder(tmp_path)
    code, out = run_script(
        capsys,
        "examples/compare_strategies.py", "--data", "imagefolder", "--root", str(tmp_path), "--epochs", "1",
        "--size", "32", "--batch-size", "4", "--strategies", "budgetplan,trady,classifier",
    )  # fmt: skip
    assert code == 0, out[-3000:]
    rows = [line for line in out.splitlines() if line.startswith("| ") and "%" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| budgetplan", "| trady", "| classifier"]
    for row in rows:
        accuracy = float(row.split(" | ")[1].split("%")[0].split(" ± ")[0])
        assert 0.0 <= accuracy <= 100.0


def test_compare_strategies_names_the_missing_layout(tmp_path, capsys):
    for data, expected in (("cifar10", "cifar-10-batches-py/"), ("imagefolder", "train/<class name>/")):
        code, out = run_script(capsys, "examples/compare_strategies.py", "--data", data, "--root", str(tmp_path))
        assert code == 2
        assert f"{data} not found under {tmp_path}: expected {tmp_path}/{expected}" in out


def _epoch_losses(output: str) -> list[float]:
    return [float(line.rsplit(" ", 1)[1]) for line in output.splitlines() if line.startswith("epoch ")]


@pytest.mark.slow
@pytest.mark.parametrize(("target", "device"), [("host", "cortex-m7"), ("qemu", "cortex-m4")])
def test_the_mcu_example_trains_the_default_network_from_its_three_commands(tmp_path, target, device):
    """examples/mcu/README.md: solve, export, build and run a board's default plan (int8, a
    patch stage) in its own SRAM (the cortex-m4 plan on QEMU's Cortex-M4); the loss goes down
    within two epochs of one sample of each class (2.305 to 2.266 on the host)."""
    import shutil

    from budgetplan.codegen.board import emulator_missing

    if target == "qemu" and emulator_missing():
        pytest.skip(str(emulator_missing()))
    if shutil.which("make") is None or shutil.which("gcc") is None:
        pytest.skip("no make or gcc")
    from .helpers.cli import run_cli

    plan, build = tmp_path / "plan.yaml", tmp_path / "build"
    assert run_cli("solve", "--device", device, "--out", str(plan)).returncode == 0
    assert run_cli("export", str(plan), "--format", "c", "--out", str(build)).returncode == 0
    core = ["CORE=m4"] if device == "cortex-m4" else []
    done = subprocess.run(
        ["make", "-s", "-C", str(REPO / "examples" / "mcu"), f"LIB={build}", target, "EPOCHS=2", "SAMPLES=2", *core],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    losses = _epoch_losses(done.stdout)
    assert len(losses) == 2 and losses[-1] < losses[0] - 0.02, done.stdout


@pytest.mark.parametrize("core", ["m7", "m4"])
def test_the_mcu_examples_qemu_target_builds_and_runs_as_the_emulated_board_tests_do(tmp_path, core):
    """The Makefile's compiler flags and QEMU board for each core are those of
    ``budgetplan.codegen.board``, with which the plans run on emulated boards in
    tests/codegen; the Cortex-M4 target also runs above."""
    import shutil

    from budgetplan.codegen.board import CORES

    if shutil.which("make") is None:
        pytest.skip("no make")
    for name in ("bp_model.c", "bp_runtime.c"):
        (tmp_path / name).touch()
    done = subprocess.run(
        ["make", "-n", "-s", "-C", str(REPO / "examples" / "mcu"), f"LIB={tmp_path}", "qemu", f"CORE={core}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    compile_line, run_line = done.stdout.replace("\\\n", " ").strip().splitlines()
    board = CORES[f"cortex-{core}"]
    assert compile_line.split()[0] == "arm-none-eabi-gcc"
    assert " ".join(board.flags) in compile_line and f"/{board.startup} " in compile_line
    assert run_line.startswith(f"qemu-system-arm -M {board.machine} ")


def test_the_ci_examples_run_budgetplan_check_with_a_junit_report():
    for name in ("github-actions.yml", "gitlab-ci.yml"):
        text = (REPO / "examples" / "ci" / name).read_text()
        yaml.safe_load(text)
        assert "budgetplan check --devices" in text and "--junit report.xml" in text
    assert "budgetplan check --devices all" in (REPO / ".ci" / "run").read_text()


@pytest.mark.slow
def test_the_ci_examples_pytest_file_runs_once_per_listed_profile():
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "-o", "budgetplan_devices=cortex-m7 cortex-m4"]
    done = subprocess.run(
        [sys.executable, *args, str(REPO / "examples" / "ci" / "test_fits.py")],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0 and "2 passed" in done.stdout, done.stdout[-2000:]
