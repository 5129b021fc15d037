"""Reading and writing budgetplan's YAML files (profiles, plans, importance)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from budgetplan.errors import BudgetPlanError


def read_yaml(path: str | Path, what: str, error: type[BudgetPlanError] = BudgetPlanError) -> Any:
    """Parse a YAML file; a missing file or bad YAML raises ``error`` naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise error(f"{path}: cannot read {what} ({err.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML: {err}") from None


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step (temporary file, fsync, rename), so the
    file is always either the old one or the new one."""
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise BudgetPlanError(f"{path}: folder {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
