"""Keep what native solver code prints off the program's own streams.

HiGHS (``highspy`` 1.16 and later) prints a banner on file descriptor 1 the first time a
``Highs`` object is made, before any option can switch it off, so Python-level redirection
(``contextlib.redirect_stdout``) does not see it. ``native_output_to`` points descriptors 1
and 2 at a temporary file for the duration of a solve; what was written is echoed on
stderr only when asked (``--verbose``).

>>> import os, sys
>>> with native_output_to(echo=False):
...     _ = os.write(1, b"a solver banner\\n")
>>> print("only this reaches stdout")
only this reaches stdout
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
from collections.abc import Iterator


def _flush_c_streams() -> None:
    # C stdio buffers output written to a pipe or file; flush it while the descriptors
    # still point at the temporary file, or it would come out later on the real stdout
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def native_output_to(echo: bool = False) -> Iterator[None]:
    """Capture file descriptors 1 and 2 during the block; write the capture to stderr if ``echo``."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = (os.dup(1), os.dup(2))
    except OSError:  # no descriptors to guard (an embedding host without them)
        yield
        return
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            _flush_c_streams()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        if echo:
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            sys.stderr.flush()
