"""Training strategies by name: one class per module of this package, each registering
itself (``register_strategy``) in one registry (``STRATEGIES``), the default first.

A new strategy is one new module here: it is imported, and so registered, with the
package. ``strategy_table()`` writes the table of them all (docs/callback.md's is checked
against it).
"""

import importlib
import pkgutil

from budgetplan.strategies.base import (
    STRATEGIES,
    Draw,
    LayerToTrain,
    Resample,
    Strategy,
    Training,
    get_strategy,
    register_strategy,
    strategy_table,
)

DEFAULT = "default"  # the module of the default strategy, registered first
for _module in [DEFAULT, *sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in (DEFAULT, "base"))]:
    importlib.import_module(f"{__name__}.{_module}")
del _module

__all__ = [
    "STRATEGIES",
    "Draw",
    "LayerToTrain",
    "Resample",
    "Strategy",
    "Training",
    "get_strategy",
    "register_strategy",
    "strategy_table",
]
