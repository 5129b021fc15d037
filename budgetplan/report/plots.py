"""Pictures of plans and sweeps (PNG, SVG or PDF, through matplotlib's Agg backend).

Each function returns the file's bytes; the command line writes them through
``budgetplan.files`` (checked before the work, written atomically).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from budgetplan.plan.model import Plan
    from budgetplan.planning.sweep import SweepRow

KB = 1024.0


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def memory_timeline(plan: Plan) -> dict[str, list[float]]:
    """Memory by kind at each point of the step: forward through the layers, then
    backward through those the gradient reaches (bytes)."""
    resident = sum(layer.weight_bytes + layer.bias_bytes for layer in plan.layers)
    base = plan.predicted.base_bytes
    first = next((i for i, layer in enumerate(plan.layers) if layer.update != "none"), len(plan.layers))
    saved_act, saved_masks = [], []
    act = masks = 0.0
    for layer in plan.layers:
        act += layer.activation_bytes
        masks += layer.path_bytes
        saved_act.append(act)
        saved_masks.append(masks)
    order = list(range(len(plan.layers))) + list(reversed(range(first, len(plan.layers))))
    forward = len(plan.layers)
    timeline: dict[str, list[float]] = {"frozen model": [], "updated weights": [], "saved activations": []}
    timeline |= {"masks": [], "working buffer": [], "point": []}
    for step, i in enumerate(order):
        layer = plan.layers[i]
        timeline["frozen model"].append(base)
        timeline["updated weights"].append(resident)
        timeline["saved activations"].append(saved_act[i])
        timeline["masks"].append(saved_masks[i])
        buffer = layer.forward_buffer_bytes if step < forward else layer.backward_buffer_bytes
        timeline["working buffer"].append(buffer)
        timeline["point"].append(float(step))
    return timeline


def _picture(fig: Any, fmt: str) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=120)
    _pyplot().close(fig)
    return buffer.getvalue()


def plot_plan(plan: Plan, fmt: str = "png") -> bytes:
    """Channels trained per layer, and memory by kind over the step against the budget."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 7.5), constrained_layout=True)
    names = [layer.name for layer in plan.layers]
    x = range(len(names))
    top.bar(x, [1.0] * len(names), color="#e5e5e5", label="frozen")
    fractions = [layer.channels / layer.total_channels for layer in plan.layers]
    top.bar(x, fractions, color="#2b6cb0", label="input channels trained")
    biased = [i for i, layer in enumerate(plan.layers) if layer.bias]
    top.scatter(biased, [1.03] * len(biased), marker="v", color="#c05621", s=14, label="bias trained")
    top.set_xticks(list(x), names, rotation=90, fontsize=6)
    top.set_ylim(0, 1.08)
    top.set_ylabel("fraction of channels")
    top.set_title(f"{plan.model} on {plan.device.name}: {len(plan.updated())} of {len(names)} layers updated")
    top.legend(loc="upper left", fontsize=8)

    timeline = memory_timeline(plan)
    kinds = ["frozen model", "updated weights", "saved activations", "masks", "working buffer"]
    kinds = [k for k in kinds if any(timeline[k])]
    bottom.stackplot(timeline["point"], *[[v / KB for v in timeline[k]] for k in kinds], labels=kinds, alpha=0.85)
    bottom.axhline(
        plan.budget_bytes / KB, color="black", linestyle="--", label=f"budget {plan.budget_bytes / KB:.0f} KB"
    )
    forward = len(plan.layers)
    bottom.axvline(forward - 0.5, color="grey", linewidth=0.8)
    bottom.text(forward / 2, plan.budget_bytes / KB * 1.02, "forward", ha="center", fontsize=8)
    bottom.text(forward + (len(timeline["point"]) - forward) / 2, plan.budget_bytes / KB * 1.02, "backward",
                ha="center", fontsize=8)  # fmt: skip
    bottom.set_xlabel("point of the training step (layers in forward order, then backward)")
    bottom.set_ylabel("memory (KB)")
    bottom.set_ylim(0, plan.budget_bytes / KB * 1.12)
    bottom.legend(loc="upper right", fontsize=8)
    return _picture(fig, fmt)


def plot_sweep(rows: list[SweepRow], title: str, fmt: str = "png") -> bytes:
    """Objective and trained weight fraction against the budget."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5), constrained_layout=True)
    feasible = [r for r in rows if r.feasible]
    budgets = [r.budget_bytes / KB for r in feasible]
    ax.plot(budgets, [r.objective for r in feasible], "o-", color="#2b6cb0", label="objective (share of importance)")
    ax.plot(budgets, [r.trained_fraction for r in feasible], "s--", color="#c05621", label="weights trained (fraction)")
    infeasible = [r.budget_bytes / KB for r in rows if not r.feasible]
    if infeasible:
        ax.axvspan(min(r.budget_bytes for r in rows) / KB, max(infeasible), color="#e5e5e5", label="no plan fits")
    if max(r.budget_bytes for r in rows) / min(r.budget_bytes for r in rows) >= 8:
        from matplotlib.ticker import ScalarFormatter

        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("budget (KB)")
    ax.set_ylabel("fraction (0 to 1)")
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _picture(fig, fmt)
