"""The command line and the repository's scripts, run in this process or in a fresh one."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from budgetplan.cli import main

REPO = Path(__file__).resolve().parent.parent.parent


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The command line through ``cli.main`` in this process, its streams captured.

    Startup and the console script are tested in fresh processes (``run_cli_process``)."""
    from budgetplan import cli

    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(args))
            except SystemExit as stop:  # argparse ends by exiting
                code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(["budgetplan", *args], code, out.getvalue(), err.getvalue())


def run_cli_process(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The command line as a user runs it, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "budgetplan.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def imported_by(args: list[str], prefix: str) -> list[str]:
    """The modules named ``prefix`` or ``prefix.*`` that the command ``args`` loads, run by
    ``cli.main`` in a fresh process; the command must succeed."""
    script = (
        "import json, sys\nfrom budgetplan import cli\n"
        f"assert cli.main({args!r}) == 0\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m == {prefix!r} or m.startswith({prefix + '.'!r}))))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])  # the list it printed last


def run_script(capsys: pytest.CaptureFixture[str], script: str, *args: str) -> tuple[int, str]:
    """A script of the repository in this process (``python examples/x.py ARGS``); its exit status and output."""
    import runpy

    argv, path, here = sys.argv, list(sys.path), os.getcwd()
    sys.argv, sys.path = [script, *args], [str((REPO / script).parent), *sys.path]
    os.chdir(REPO)
    try:
        runpy.run_path(str(REPO / script), run_name="__main__")
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    finally:
        sys.argv, sys.path = argv, path
        os.chdir(here)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def refused(capsys: pytest.CaptureFixture[str], *args: str, seconds: float = 30.0) -> str:
    """Run the command in this process; it exits 2 with one line on stderr within ``seconds``; the line."""
    start = time.monotonic()
    try:
        code = main(list(args))
    except SystemExit as stop:  # argparse's own refusals
        code = stop.code
    assert code == 2
    assert time.monotonic() - start < seconds
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("budgetplan: error:"), err
    return err
