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
# fixes columns, and the RINS / RENS sub-MIPs and the feasibility jump, cost more than they
# find there. The tie-break, started from the optimum, runs a light presolve as well: that
# takes the default cortex-m7 plan from 0.34 s to 0.25 s, both stages (python
# benchmarks/solve_time.py, median of 3), with the same plans. Light presolve in the first
# stage is as fast there but makes the no-data prior's programs two to three times slower.
HIGHS_OPTIONS = {
    "mip_allow_restart": False,
    "mip_heuristic_run_rins": False,
    "mip_heuristic_run_rens": False,
    "mip_heuristic_run_feasibility_jump": False,
}
TIE_BREAK_OPTIONS = {"presolve_mode": 2}


def run_solver(
    prob: pulp.LpProblem, solver: Solver, time_limit: float, verbose: bool, tie_break: bool = False
) -> tuple[str, str]:
    """Solve ``prob`` in place; return (status, solver name). ``tie_break``: the second stage,
    started from the variables' current values (the first stage's optimum) and run with
    ``TIE_BREAK_OPTIONS``. The solver's log goes to stderr when ``verbose``, else nowhere."""
    with native_output_to(echo=verbose):
        backend, name = _backend(solver, time_limit, verbose, tie_break)
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


def _backend(solver: Solver, time_limit: float, verbose: bool, tie_break: bool) -> tuple[pulp.LpSolver, str]:
    # an absolute gap of 0.5 on an objective in whole units proves optimality exactly
    if solver in (Solver.AUTO, Solver.HIGHS):
        options = {**HIGHS_OPTIONS, **(TIE_BREAK_OPTIONS if tie_break else {})}
        highs = _HiGHS(tie_break, msg=verbose, timeLimit=time_limit, gapRel=0, gapAbs=0.5, **options)
        if highs.available():
            return highs, "HiGHS"
        if solver is Solver.HIGHS:
            raise BudgetPlanError("the HiGHS solver is not available: pip install highspy")
    with warnings.catch_warnings():  # the CBC bundled with PuLP 3 announces its move in PuLP 4
        warnings.simplefilter("ignore", DeprecationWarning)
        return pulp.PULP_CBC_CMD(msg=verbose, timeLimit=time_limit, gapRel=0, gapAbs=0.5, warmStart=tie_break), "CBC"
