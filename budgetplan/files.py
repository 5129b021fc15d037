"""Reading and writing budgetplan's files (profiles, plans, importance, exports, plots).

Reading: a file that is missing, not UTF-8 or not valid YAML raises one ``BudgetPlanError``
line naming the file (and, for YAML, the line and column).

Writing is atomic (temporary file, fsync, rename): the file is always either the old one
or the new one. It never replaces what is not a regular file: a symbolic link is followed
and its target replaced; a directory, device node or pipe is refused, as is a file the
user cannot write. An existing file keeps its permission bits; a new one gets the umask's.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import yaml

from budgetplan.errors import BudgetPlanError


def read_yaml(path: str | Path, what: str, error: type[BudgetPlanError] = BudgetPlanError) -> Any:
    """Parse a YAML file; a missing, undecodable or malformed file raises ``error`` naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise error(f"{path}: cannot read {what} ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise error(f"{path}: not a {what}: byte {err.start} is not UTF-8 text") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML{_where(err)}: {_problem(err)}") from None


def _where(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _problem(err: yaml.YAMLError) -> str:
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    return f"{problem} ({context})" if context else str(problem)


def writable_target(path: str | Path) -> Path:
    """The regular file that writing ``path`` replaces (a link's target), or a clear error.

    Checked before any work is done, so a long computation does not end in a failed write.
    """
    given = Path(path)
    if not str(path):
        raise BudgetPlanError("the output path is empty; give a file name")
    target = Path(os.path.realpath(given))
    if target.exists():
        mode = target.stat().st_mode
        if stat.S_ISDIR(mode):
            raise BudgetPlanError(f"{given}: is a directory; give a file name inside it")
        if not stat.S_ISREG(mode):
            raise BudgetPlanError(f"{given}: is not a regular file (a device, pipe or socket); not replaced")
        if not os.access(target, os.W_OK) or not mode & 0o222:  # no write bit: read-only, even for root
            raise BudgetPlanError(f"{given}: is read-only; not replaced")
    directory = target.parent
    if not directory.is_dir():
        raise BudgetPlanError(f"{given}: folder {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise BudgetPlanError(f"{given}: cannot write in folder {directory} (permission denied)")
    return target


def write_atomic(path: str | Path, text: str | bytes) -> None:
    """Replace ``path`` with ``text`` in one step, so the file is always either the old
    one or the new one (see the module docstring for what is never replaced)."""
    target = writable_target(path)
    mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else _umask_mode()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as err:
        raise BudgetPlanError(f"{path}: cannot write ({err.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode() if isinstance(text, str) else text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask_mode() -> int:
    umask = os.umask(0)  # reading the umask means setting it; put it back at once
    os.umask(umask)
    return 0o666 & ~umask
