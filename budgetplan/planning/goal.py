"""What the planner's program optimises (``budgetplan.planning.ilp``)."""

from __future__ import annotations

from enum import Enum


class Goal(Enum):
    """What the program optimises: the objective under every limit (``UTILITY``), or one
    limit, minimised with the others kept: the answer to "what is the smallest budget
    (training memory, step compute) at which any plan is feasible"."""

    UTILITY = "utility"
    PEAK = "peak"
    TRAINING_MEMORY = "training_memory"
    COMPUTE = "compute"
