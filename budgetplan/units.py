"""Byte sizes, rates and durations as people write them, and back.

Sizes use binary multiples throughout: ``KB``, ``KiB`` and ``K`` all mean 1024 bytes,
``MB`` 1024², ``GB`` 1024³, as microcontroller datasheets do ("320 Kbytes of SRAM" is
327,680 bytes). Rates (``216MHz``, ``108M`` MAC/s) use decimal multiples, as clocks do.

>>> parse_bytes("320KB"), parse_bytes("0.5 MiB"), parse_bytes(4096)
(327680, 524288, 4096)
>>> format_bytes(262144)
'256.0 KB'
>>> parse_rate("216MHz")
216000000.0
"""

from __future__ import annotations

import math
import re

from budgetplan.quoting import quote

_BINARY = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024}
_BINARY |= {"m": 1024**2, "mb": 1024**2, "mib": 1024**2}
_BINARY |= {"g": 1024**3, "gb": 1024**3, "gib": 1024**3}
_DECIMAL = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_SECONDS = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "min": 60.0}
_NUMBER_UNIT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z/]*)\s*$")

SIZE_EXAMPLES = "a size such as 320KB, 0.5 MiB, 1MB or 262144 (KB means 1024 bytes)"
MAX_BYTES = 1024**4  # 1 TB: above any device's memory; larger sizes are typing mistakes


def _split(value: str | int | float, what: str) -> tuple[float, str]:
    if isinstance(value, bool):
        raise ValueError(f"expected {what}, got {quote(value)}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            raise ValueError(f"{quote(value)} is negative; expected {what}")
        match = _NUMBER_UNIT.match(text)
        if match is None:
            raise ValueError(f"cannot read {quote(value)}; expected {what}")
        number, unit = float(match.group(1)), match.group(2).lower()
    else:
        raise ValueError(f"expected {what}, got {type(value).__name__} {quote(value)}")
    if not math.isfinite(number):
        raise ValueError(f"{quote(value)} is not finite; expected {what}")
    if number < 0:
        raise ValueError(f"{quote(value)} is negative; expected {what}")
    return number, unit


def parse_bytes(value: str | int | float) -> int:
    """Read a byte size (``"256KB"``, ``"0.5 MiB"``, ``1048576``) as a whole number of bytes."""
    number, unit = _split(value, SIZE_EXAMPLES)
    if unit not in _BINARY:
        raise ValueError(f"unknown unit {quote(unit)} in {quote(value)}; expected {SIZE_EXAMPLES}")
    if number * _BINARY[unit] > MAX_BYTES:
        raise ValueError(f"{quote(value)} is above 1 TB; expected {SIZE_EXAMPLES}")
    return math.ceil(number * _BINARY[unit] - 1e-9)


def parse_rate(value: str | int | float, unit_suffix: str = "hz") -> float:
    """Read a decimal rate such as ``"216MHz"``, ``"108M"`` or ``1.5e9``."""
    what = "a rate such as 216MHz, 108M or 1.5e9"
    number, unit = _split(value, what)
    for suffix in (unit_suffix, "mac/s", "/s"):
        if unit.endswith(suffix):
            unit = unit[: -len(suffix)]
            break
    if unit not in _DECIMAL:
        raise ValueError(f"unknown unit in {quote(value)}; expected {what}")
    return number * _DECIMAL[unit]


def parse_seconds(value: str | int | float) -> float:
    """Read a duration such as ``"2s"``, ``"500ms"`` or ``0.25``."""
    what = "a duration such as 2s, 500ms or 0.25"
    number, unit = _split(value, what)
    if unit not in _SECONDS:
        raise ValueError(f"unknown unit in {quote(value)}; expected {what}")
    return number * _SECONDS[unit]


def format_bytes(n: float) -> str:
    """Format a byte count for people: ``812 B``, ``256.0 KB``, ``3.5 MB``, ``2.0 GB``."""
    if n < 1024:
        return f"{n:.0f} B"
    for unit, scale in (("KB", 1024), ("MB", 1024**2), ("GB", 1024**3)):
        if n < scale * 1024 or unit == "GB":
            return f"{n / scale:.1f} {unit}"
    raise AssertionError("unreachable")


def format_count(n: float) -> str:
    """Format a large count (MACs, elements) with a decimal suffix: ``1.2M``."""
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{suffix}"
    return f"{n:.0f}"
