"""``EnumStr``: a named choice that is also its own text (as torchmetrics' ``EnumStr``).

A member equals, hashes and prints as its value, so options read from YAML, JSON or the
command line compare with members directly, and ``json.dumps`` writes the value. YAML
writers do not know enums: data written to files holds ``member.value``.

>>> class Colour(EnumStr):
...     RED = "red"
...     DARK_BLUE = "dark-blue"
>>> Colour.from_str("dark-blue") is Colour.DARK_BLUE, Colour.RED == "red", f"{Colour.RED}"
(True, True, 'red')
>>> Colour.choices()
('red', 'dark-blue')
>>> Colour.from_str("green")
Traceback (most recent call last):
...
ValueError: 'green' is not one of red, dark-blue
"""

from __future__ import annotations

from enum import Enum
from typing import Any, TypeVar

_E = TypeVar("_E", bound="EnumStr")


class EnumStr(str, Enum):
    """A ``str`` enumeration read from text with ``from_str``."""

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def choices(cls) -> tuple[str, ...]:
        """The values, in the order the members are declared."""
        return tuple(str(member.value) for member in cls)

    @classmethod
    def from_str(cls: type[_E], value: Any) -> _E:
        """The member whose value is ``value`` (a member passes through unchanged)."""
        for member in cls:
            if value == member.value:
                return member
        raise ValueError(f"{value!r} is not one of {', '.join(cls.choices())}")
