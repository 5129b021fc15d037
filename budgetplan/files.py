"""Reading and writing budgetplan's files (profiles, plans, importance, exports, plots).

Reading is bounded, whatever the file: at most ``MAX_READ_BYTES``, nesting at most
``MAX_DEPTH`` levels, and no YAML aliases (``*name``), so that a small file cannot expand
into a large value. A file that is missing, too large, not UTF-8, not valid YAML or
outside those bounds raises one ``BudgetPlanError`` line naming the file (and, for YAML,
the line and column). Numbers in JSON's exponent form (``5e-05``) read as numbers.

Writing goes through ``output_file`` before the work (the path can be written, the
extension names a format the file can have) and ``write_atomic`` after it (temporary file,
fsync, rename): the file is always either the old one or the new one, also on a full disk.
It never replaces what is not a regular file: a symbolic link is followed and its target
replaced (a loop of links is refused); a directory, device node or pipe is refused, as is
a file the user cannot write. An existing file keeps its permission bits; a new one gets
the umask's.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from budgetplan.errors import BudgetPlanError

MAX_READ_BYTES = 64 * 1024**2  # far above the largest plan or table (a few MB for 1,000 layers)
MAX_DEPTH = 32  # levels of nesting; budgetplan's own files use at most 5

PLOT_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
DATA_FORMATS = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}


class _OutOfBounds(yaml.MarkedYAMLError):
    """Valid YAML that budgetplan does not read (an alias, too deep a nesting)."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases, with a depth limit, reading JSON's numbers."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        mark: Any = event.start_mark
        if isinstance(event, yaml.AliasEvent):
            raise _OutOfBounds(None, None, f"alias *{event.anchor}: aliases are not read; write the value out", mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _OutOfBounds(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# YAML 1.1 wants a dot in a float; JSON writes 5e-05 and 1e+30 (YAML 1.2's core schema reads them)
_BoundedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def read_yaml(path: str | Path, what: str, error: type[BudgetPlanError] = BudgetPlanError) -> Any:
    """Parse a YAML (or JSON) file within the bounds above; anything else raises ``error`` naming it."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_READ_BYTES + 1)  # a pipe or /dev/zero ends here too
    except OSError as err:
        raise error(f"{path}: cannot read {what} ({err.strerror})") from None
    if len(data) > MAX_READ_BYTES:
        raise error(f"{path}: not {_article(what)} {what}: larger than {MAX_READ_BYTES // 1024**2} MB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{path}: not {_article(what)} {what}: byte {err.start} is not UTF-8 text") from None
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader
    except _OutOfBounds as err:
        raise error(f"{path}: not read{_where(err)}: {_problem(err)}") from None
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML{_where(err)}: {_problem(err)}") from None


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _where(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _problem(err: yaml.YAMLError) -> str:
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    return f"{problem} ({context})" if context else str(problem)


@dataclass(frozen=True)
class OutputFile:
    """A file to be written, checked (``output_file``): the path as given and its format
    (from the extension, where the kind of file has several)."""

    given: str
    format: str | None = None

    def write(self, content: str | bytes) -> None:
        """Replace the file atomically (``write_atomic``)."""
        write_atomic(self.given, content)


def data_text(data: Any, path: str | Path) -> str:
    """``data`` as the text of a file named ``path``: JSON for ``.json``, else YAML."""
    if DATA_FORMATS.get(Path(path).suffix.lower()) == "json":
        return json.dumps(data, indent=2) + "\n"
    return yaml.safe_dump(data, sort_keys=False)


def output_file(path: str | Path, what: str = "file", formats: Mapping[str, str] | None = None) -> OutputFile:
    """Check, before any work, that ``path`` can be written and, where ``formats`` maps
    extensions to formats, that its extension names one; the error names what would work."""
    writable_target(path)
    fmt = None
    if formats is not None:
        extension = Path(path).suffix.lower()
        if extension not in formats:
            choices = ", ".join(formats)
            raise BudgetPlanError(
                f"{path}: {_article(what)} {what} is written as {choices} (by its extension); "
                f"name it {Path(path).stem or 'file'}{next(iter(formats))}"
            )
        fmt = formats[extension]
    return OutputFile(str(path), fmt)


def writable_target(path: str | Path) -> Path:
    """The regular file that writing ``path`` replaces (a link's target), or a clear error.

    Checked before any work is done, so a long computation does not end in a failed write.
    """
    given = Path(path)
    if not str(path):
        raise BudgetPlanError("the output path is empty; give a file name")
    try:
        target = Path(os.path.realpath(given, strict=True))
    except FileNotFoundError:  # a new file, or a link to one
        target = Path(os.path.realpath(given))
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise BudgetPlanError(f"{given}: is a loop of symbolic links; not replaced") from None
        raise BudgetPlanError(f"{given}: cannot write ({err.strerror})") from None
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
        try:
            _write_all(fd, text.encode() if isinstance(text, str) else text)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if not isinstance(err, OSError):
            raise
        # a full disk (ENOSPC), a quota, an I/O error: the old file stays
        kept = "the old file is kept" if target.exists() else "nothing was written"
        raise BudgetPlanError(f"{path}: cannot write ({err.strerror or err}); {kept}") from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]  # a write may take less than it is given


def _umask_mode() -> int:
    umask = os.umask(0)  # reading the umask means setting it; put it back at once
    os.umask(umask)
    return 0o666 & ~umask
