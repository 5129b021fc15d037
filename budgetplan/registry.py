"""``Registry``: classes by their ``name``, for strategies and channel samplers.

>>> class Shape:
...     name = ""
>>> shapes = Registry(lambda name, known: f"unknown shape {name!r}; choose one of {', '.join(known)}")
>>> @shapes.register
... class Square(Shape):
...     name = "square"
>>> type(shapes.create("square")).__name__, list(shapes)
('Square', ['square'])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from budgetplan.errors import BudgetPlanError

T = TypeVar("T")


class Registry(dict[str, type[T]], Generic[T]):
    """A mapping of names to classes; ``unknown(name, known)`` words the error for a name not in it."""

    def __init__(self, unknown: Callable[[str, list[str]], str]) -> None:
        super().__init__()
        self.unknown = unknown

    def register(self, cls: type[T]) -> type[T]:
        """Make ``cls`` available by its ``name`` attribute (use as a class decorator)."""
        name: Any = getattr(cls, "name", "")
        if not name:
            raise BudgetPlanError(f"{cls.__name__} needs a name to be registered")
        self[name] = cls
        return cls

    def create(self, name: str) -> T:
        """A new instance of the class called ``name``, or a clear error listing the known ones."""
        if name not in self:
            raise BudgetPlanError(self.unknown(name, list(self)))
        return self[name]()
