"""Values from users' files, quoted in messages and in generated files' comments.

A value read from a file can be as long as the file; a message quotes a short prefix of
it (``quote``). A name written into a comment or an error line must stay on one line
(``one_line``): every character that ``str.splitlines`` breaks on is written as its escape.

>>> quote("x" * 100)
"'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…' (100 characters)"
>>> quote([1, 2])
'[1, 2]'
>>> one_line("a\\u2028b\\rc")
'a\\\\u2028b\\\\rc'
"""

from __future__ import annotations

import reprlib
from typing import Any

LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines breaks on
SHORT = 48  # characters of a value that a message quotes

_short = reprlib.Repr()
_short.maxstring = SHORT
_short.maxother = SHORT
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 4
_short.maxlevel = 2


def quote(value: Any) -> str:
    """``repr(value)`` cut to a short prefix; a long string says how long it was."""
    if isinstance(value, str) and len(value) > SHORT - 2:
        text = repr(value[: SHORT - 4])
        return f"{text[:-1]}…{text[-1]} ({len(value)} characters)"
    return _short.repr(value)


def one_line(text: str) -> str:
    """``text`` with every line break written as its escape (``\\x1e``, ``\\u2028``)."""
    for char in LINE_BREAKS:
        text = text.replace(char, repr(char)[1:-1])
    return text
