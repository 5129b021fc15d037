"""A disk that fills up, for the tests of what a failed write leaves behind."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest


def full_disk(monkeypatch: pytest.MonkeyPatch, folder: Path, after: int = 0) -> None:
    """Writes to files in ``folder`` fail with ENOSPC once ``after`` bytes are written, as
    on a full disk; every other write goes through."""
    written = {"bytes": 0}
    real = os.write

    def write(fd: int, data: bytes) -> int:
        try:
            inside = Path(os.readlink(f"/proc/self/fd/{fd}")).parent == folder
        except OSError:
            inside = False
        if inside:
            if written["bytes"] + len(data) > after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written["bytes"] += len(data)
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
