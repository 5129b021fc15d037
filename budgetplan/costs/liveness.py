"""Activation elements alive at each op of a traced forward pass (the working buffer)."""

from __future__ import annotations

from budgetplan.costs.dataflow import Trace
from budgetplan.costs.ops import VIEW_OPS


def live_elements(trace: Trace, inplace_ops: set[int]) -> list[int]:
    """Activation elements alive at each op, from storage-level liveness.

    View ops alias their input; ops in ``inplace_ops`` may write over an input that
    nothing reads later; everything else allocates. The model's outputs live to the end.
    """
    n = len(trace.ops)
    last_use: dict[int, int] = {}
    for op in trace.ops:
        for t in op.inputs:
            last_use[t] = op.index
    for t in trace.output_ids:
        last_use[t] = n
    storage_of: dict[int, int] = {}
    size: list[int] = []
    birth: list[int] = []
    death: list[int] = []

    def join(t: int, s: int) -> None:
        storage_of[t] = s
        size[s] = max(size[s], trace.elements(t))
        death[s] = max(death[s], last_use.get(t, birth[s]))

    def allocate(t: int, born: int) -> None:
        size.append(0)
        birth.append(born)
        death.append(born)
        join(t, len(size) - 1)

    for t in trace.input_ids:
        allocate(t, 0)
    for op in trace.ops:
        for t in op.inputs:
            if t not in storage_of:
                allocate(t, op.index)
        for out in op.outputs:
            if out in storage_of:  # in-place op: same tensor object
                join(out, storage_of[out])
                continue
            if op.func in VIEW_OPS and op.inputs:
                join(out, storage_of[op.inputs[0]])
                continue
            dying = [storage_of[t] for t in op.inputs if death[storage_of[t]] <= op.index]
            if op.index in inplace_ops and dying:
                # written over a dying input: the op needs the larger of the two, and
                # from the next op on only the output's own size is held
                size[dying[0]] = max(size[dying[0]], trace.elements(out))
                allocate(out, op.index + 1)
            else:
                allocate(out, op.index)
    delta = [0] * (n + 2)
    for s in range(len(size)):
        delta[birth[s]] += size[s]
        delta[min(death[s], n) + 1] -= size[s]
    live, running = [], 0
    for i in range(n):
        running += delta[i]
        live.append(running)
    return live
