"""Running a PuLP program on HiGHS or CBC, with a time limit and the solvers' output kept
off stdout (docs/planner.md, "Solving")."""

from __future__ import annotations

import warnings
from typing import Any

import pulp

from budgetplan.errors import BudgetPlanError
from budgetplan.planning.options import Solver
from budgetplan.planning.solver_output import native_output_to

# what a run ends with: a proven optimum, a plan at the time limit, proof that none exists,
# or nothing at the time limit
OPTIMAL, FEASIBLE, INFEASIBLE, NO_SOLUTION = "optimal", "feasible", "infeasible", "no solution"

# The planner's programs close at HiGHS's root node; restarting the root after presolve
# fixes columns, and the RINS / RENS sub-MIPs, cost more than they find there. Light presolve
# and no feasibility jump leave the same plans and take a third off the small programs: the
# default cortex-m7 plan, both stages, in 0.24 s instead of 0.34 s (python
# benchmarks/solve_time.py, median of 3). The ResNet-50 prior's program at 160MB takes
# 5.8 s instead of 3.1 s with them.
HIGHS_OPTIONS = {
    "mip_allow_restart": False,
    "mip_heuristic_run_rins": False,
    "mip_heuristic_run_rens": False,
    "presolve_mode": 2,
    "mip_heuristic_run_feasibility_jump": False,
}


def run_solver(
    prob: pulp.LpProblem, solver: Solver, time_limit: float, verbose: bool, warm_start: bool = False
) -> tuple[str, str]:
    """Solve ``prob`` in place; return (status, solver name). ``warm_start`` starts from the
    variables' current values. The solver's log goes to stderr when ``verbose``, else nowhere."""
    with native_output_to(echo=verbose):
        backend, name = _backend(solver, time_limit, verbose, warm_start)
        prob.solve(backend)
    if prob.sol_status == pulp.LpSolutionOptimal:
        return OPTIMAL, name
    if prob.sol_status == pulp.LpSolutionIntegerFeasible:
        return FEASIBLE, name
    if prob.status == pulp.LpStatusInfeasible:
        return INFEASIBLE, name
    return NO_SOLUTION, name


class _HiGHS(pulp.HiGHS):  # type: ignore[misc,valid-type]
    """HiGHS through highspy, started from the variables' current values when ``warm_start``
    (PuLP passes a start to CBC but not to highspy): the tie-break solve then begins at the
    first solve's optimum instead of searching for any feasible plan."""

    def __init__(self, warm_start: bool, **options: Any) -> None:
        super().__init__(**options)
        self.warm_start = warm_start

    def callSolver(self, lp: pulp.LpProblem) -> None:  # PuLP names it
        if self.warm_start:
            import highspy

            start = highspy.HighsSolution()
            start.col_value = [float(v.varValue or 0.0) for v in sorted(lp.variables(), key=lambda v: v.index)]
            start.value_valid = True
            lp.solverModel.setSolution(start)
        super().callSolver(lp)


def _backend(solver: Solver, time_limit: float, verbose: bool, warm_start: bool) -> tuple[pulp.LpSolver, str]:
    # an absolute gap of 0.5 on an objective in whole units proves optimality exactly
    if solver in (Solver.AUTO, Solver.HIGHS):
        highs = _HiGHS(warm_start, msg=verbose, timeLimit=time_limit, gapRel=0, gapAbs=0.5, **HIGHS_OPTIONS)
        if highs.available():
            return highs, "HiGHS"
        if solver is Solver.HIGHS:
            raise BudgetPlanError("the HiGHS solver is not available: pip install highspy")
    with warnings.catch_warnings():  # the CBC bundled with PuLP 3 announces its move in PuLP 4
        warnings.simplefilter("ignore", DeprecationWarning)
        return pulp.PULP_CBC_CMD(msg=verbose, timeLimit=time_limit, gapRel=0, gapAbs=0.5, warmStart=warm_start), "CBC"
