"""Training strategies by name."""

from budgetplan.strategies.builtin import STRATEGIES, Strategy, get_strategy

__all__ = ["STRATEGIES", "Strategy", "get_strategy"]
