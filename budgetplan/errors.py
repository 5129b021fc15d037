"""Errors a user can act on. The command line prints them without a traceback, exit 2."""

from __future__ import annotations


class BudgetPlanError(Exception):
    """A mistake in what the user asked for (a file, a field, a model, a budget)."""


class ProfileError(BudgetPlanError):
    """A device profile that cannot be found or does not validate."""


class ModelError(BudgetPlanError):
    """A model that cannot be built or traced with the given input."""


class InfeasibleError(BudgetPlanError):
    """No plan satisfies the limits; ``smallest_budget`` says what would, when known."""

    def __init__(self, message: str, smallest_budget: int | None = None) -> None:
        super().__init__(message)
        self.smallest_budget = smallest_budget


class PlanError(BudgetPlanError):
    """A plan file that cannot be read, or a plan that does not match the model."""
