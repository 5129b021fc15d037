"""Reading and writing files: clear errors, and nothing replaced that should not be."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from budgetplan import cli
from budgetplan.errors import BudgetPlanError
from budgetplan.files import read_yaml, write_atomic

from .helpers.cli import refused


@pytest.mark.parametrize("command", ["validate", "show", "compare"])
def test_a_file_that_is_not_text_is_named(tmp_path, capsys, command):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\x00\xff\xfe")
    args = [command, str(path)] + ([str(path)] if command == "compare" else [])
    assert "bin.yaml: not a" in refused(capsys, *args)


def test_malformed_yaml_names_the_line_and_column(tmp_path, capsys):
    path = tmp_path / "board.yaml"
    path.write_text("name: [a\nb: }\n")
    assert "board.yaml: not valid YAML at line 2, column 2:" in refused(capsys, "validate", str(path))


def test_importance_file_that_is_not_text(tmp_path):
    path = tmp_path / "importance.yaml"
    path.write_bytes(b"\xff" * 8)
    with pytest.raises(BudgetPlanError, match="not UTF-8"):
        read_yaml(path, "importance file")


@pytest.mark.parametrize(
    ("out", "words"),
    [
        ("{tmp}", "is a directory"),
        ("{tmp}/missing/plan.yaml", "does not exist"),
        ("", "output path is empty"),
        ("/dev/null", "not a regular file"),
    ],
)
def test_outputs_that_cannot_be_written_fail_before_solving(tmp_path, capsys, out, words):
    assert words in refused(capsys, "solve", "--budget", "10KB", "--out", out.format(tmp=tmp_path))
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.slow
def test_a_plot_into_a_missing_folder_fails_cleanly(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    assert cli.main(["solve", "--out", str(plan)]) == 0
    capsys.readouterr()
    assert "does not exist" in refused(capsys, "show", str(plan), "--plot", str(tmp_path / "no" / "x.png"))


def test_a_read_only_file_is_not_replaced(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text("old\n")
    path.chmod(0o444)
    with pytest.raises(BudgetPlanError, match="read-only"):
        write_atomic(path, "new\n")
    assert path.read_text() == "old\n"


def test_a_link_is_followed_and_kept(tmp_path):
    target = tmp_path / "real.yaml"
    target.write_text("old\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(target)
    write_atomic(link, "new\n")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new\n"


def test_modes_keep_the_old_file_or_follow_the_umask(tmp_path):
    kept = tmp_path / "kept.yaml"
    kept.write_text("old\n")
    kept.chmod(0o640)
    write_atomic(kept, "new\n")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "fresh.yaml", "new\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "fresh.yaml").stat().st_mode) == 0o640
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["fresh.yaml", "kept.yaml"]  # no temporary left
