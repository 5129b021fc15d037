"""``budgetplan check``: plans for a matrix of devices and budgets held to stated floors
and to the plans committed before them, for CI (docs/ci.md)."""
