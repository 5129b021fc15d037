"""Layer names under a prefix: the model as planned, and the module that holds it.

A plan, a cost table and a table of importance scores name a model's layers as the model
names them (``features.0.0``). A LightningModule that holds the model as ``self.net`` names
the same layer ``net.features.0.0``. These functions find that prefix and move names
across it; they read names only, so they serve plans, scores and measurements alike.

>>> candidate_prefixes("fc", ["net.body.0", "net.fc", "aux.fc"])
['aux.', 'net.']
>>> find_prefix(["body.0", "fc"], ["net.body.0", "net.fc"])
'net.'
>>> find_prefix(["body.0", "fc"], ["net.body.0", "net.fc", "aux.fc"]) is None
True
>>> with_prefix({"fc": 0.5}, "net."), without_prefix({"net.fc": 0.5, "head": 0.1}, "net.")
({'net.fc': 0.5}, {'fc': 0.5, 'head': 0.1})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

Value = TypeVar("Value")


def candidate_prefixes(name: str, names: Iterable[str]) -> list[str]:
    """Every prefix ``p`` (``""``, ``"net."``, ...) for which ``p + name`` is one of ``names``.

    A prefix ends at a dot, so ``"fc"`` is not found inside ``"net.my_fc"``. Sorted,
    so the answer does not depend on the order in which ``names`` come.
    """
    return sorted({n[: len(n) - len(name)] for n in names if n == name or n.endswith("." + name)})


def find_prefix(wanted: Iterable[str], found: Iterable[str]) -> str | None:
    """The prefix ``p`` for which ``found`` is exactly ``{p + w for w in wanted}``, else None."""
    wanted, found = list(wanted), set(found)
    for prefix in candidate_prefixes(wanted[0], found) if wanted else [""]:
        if {prefix + name for name in wanted} == found:
            return prefix
    return None


def with_prefix(values: Mapping[str, Value], prefix: str) -> dict[str, Value]:
    """``values`` with every name put under ``prefix``."""
    return {prefix + name: value for name, value in values.items()}


def without_prefix(values: Mapping[str, Value], prefix: str) -> dict[str, Value]:
    """``values`` with ``prefix`` taken off every name that starts with it."""
    return {name.removeprefix(prefix): value for name, value in values.items()}
