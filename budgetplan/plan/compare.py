"""What differs between two plans, as rows for ``budgetplan compare``.

The plan-wide settings and predictions come first, then every layer whose decision
differs, then layers only one of the plans has. Sizes are compared in whole bytes and
the objective to four decimals; the solve time is not compared.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from budgetplan.plan.record import LayerPlan, PlanRecord

Row = tuple[str, str, str]


def differences(plan: PlanRecord, other: PlanRecord) -> list[Row]:
    """What differs between two plans, as (what, this plan, the other) rows."""
    rows = [(label, str(mine), str(theirs)) for label, mine, theirs in _settings(plan, other) if mine != theirs]
    theirs_by_name = {layer.name: layer for layer in other.layers}
    for layer in plan.layers:
        peer = theirs_by_name.pop(layer.name, None)
        if peer is None:
            rows.append((layer.name, decision(layer), "(no such layer)"))
        elif (layer.channels, layer.bias) != (peer.channels, peer.bias):
            rows.append((layer.name, decision(layer), decision(peer)))
    rows += [(name, "(no such layer)", decision(layer)) for name, layer in theirs_by_name.items()]
    return rows


def decision(layer: LayerPlan) -> str:
    """A layer's decision in a few characters: ``frozen``, ``bias only``, ``4/16 +bias``."""
    if layer.update == "none":
        return "frozen"
    text = f"{layer.channels}/{layer.total_channels}" if layer.channels else "bias only"
    return text + (" +bias" if layer.channels and layer.bias else "")


def _settings(plan: PlanRecord, other: PlanRecord) -> list[tuple[str, object, object]]:
    return [
        ("model", plan.model, other.model),
        ("device", plan.device.name, other.device.name),
        ("budget", plan.budget_bytes, other.budget_bytes),
        ("training memory cap", plan.training_memory_cap, other.training_memory_cap),
        ("batch size", plan.batch_size, other.batch_size),
        ("predicted peak", round(plan.predicted.peak_bytes), round(other.predicted.peak_bytes)),
        (
            "training memory",
            round(plan.predicted.training_memory_bytes),
            round(other.predicted.training_memory_bytes),
        ),
        ("objective", f"{plan.objective:.4f}", f"{other.objective:.4f}"),
        ("importance", plan.importance_source, other.importance_source),
        ("status", plan.status, other.status),
    ]
