"""Text tables for people: plans, cost tables and device lists."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from budgetplan.device.profile import FrozenWeights
from budgetplan.units import format_bytes, format_count

if TYPE_CHECKING:
    from budgetplan.costs.table import CostTable
    from budgetplan.device.profile import DeviceProfile
    from budgetplan.plan.model import Plan
    from budgetplan.planning.sweep import SweepRow


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] | None = None) -> str:
    """Align ``rows`` under ``headers``; ``right`` marks right-aligned columns."""
    right = right or [False] * len(headers)
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [str(c).rjust(w) if r else str(c).ljust(w) for c, w, r in zip(cells, widths, right, strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def render_plan(plan: Plan, all_layers: bool = False) -> str:
    """The plan as a person reads it: updated layers, then totals against the budget."""
    shown = plan.layers if all_layers else plan.updated()
    rows = [
        [
            layer.name,
            layer.kind,
            layer.update + ("+bias" if layer.update == "weight" and layer.bias else ""),
            f"{layer.channels}/{layer.total_channels}",
            format_bytes(layer.activation_bytes),
            format_bytes(layer.weight_bytes + layer.bias_bytes),
            format_bytes(layer.path_bytes),
            format_count(layer.macs),
        ]
        for layer in shown
    ]
    headers = ["layer", "kind", "update", "channels", "saved act", "weights", "masks", "bwd MACs"]
    out = [
        f"{plan.model}, input {'x'.join(map(str, plan.input_shape))}, batch {plan.batch_size}, on {plan.device.name}",
        "",
        table(headers, rows, [False, False, False, True, True, True, True, True]),
    ]
    frozen = len(plan.layers) - len(plan.updated())
    out.append(f"{len(plan.updated())} of {len(plan.layers)} layers updated, {frozen} frozen.")
    out.append("")
    out += _memory_lines(plan)
    p, dev = plan.predicted, plan.device
    latency = f", limit {plan.max_step_latency:g} s" if plan.max_step_latency else ""
    out.append(
        f"compute   {format_count(p.forward_macs)} forward + {format_count(p.backward_macs)} backward MACs "
        f"per step: {p.step_seconds:.3g} s at {format_count(dev.macs_per_second)} MAC/s{latency}"
    )
    if plan.status == "imported":
        out += _scheme_lines(plan)
    else:
        out.append(
            f"solver    {plan.solver} {plan.status} (gap {plan.optimality_gap:g}) in {plan.solve_seconds:.2f} s; "
            f"objective {plan.objective:.4f}" + (f" = {unit}" if (unit := plan.objective_in_unit()) else "")
        )
    out.append(f"importance {plan.importance_source}")
    out.append(f"accounting {plan.accounting}")
    return "\n".join(out)


def _memory_lines(plan: Plan) -> list[str]:
    """Peak and training memory against the budget, the patch stage, where the model lives."""
    p, dev = plan.predicted, plan.device
    share = 100 * p.peak_bytes / plan.budget_bytes
    out: list[str] = []
    out.append(
        f"memory    peak {format_bytes(p.peak_bytes)} of {format_bytes(plan.budget_bytes)} budget "
        f"({share:.1f}%; {p.peak_at})"
    )
    out.append(
        f"          training memory {format_bytes(p.training_memory_bytes)} (updated weights "
        f"{format_bytes(p.resident_bytes)} + saved tensors {format_bytes(p.saved_bytes)})"
        + (f", cap {format_bytes(plan.training_memory_cap)}" if plan.training_memory_cap else "")
    )
    out.append(_sparse_update_line(plan))
    if p.patch_grid:
        out.append(
            f"          patch stage: the layers before {p.patch_until} run in {p.patch_grid}x{p.patch_grid} patches, "
            f"{format_bytes(p.patch_bytes)} (one patch, its outputs, the input)"
        )
    if plan.exceeds_device:
        free = format_bytes(dev.sram - dev.reserved)
        out.append(f"          note: the budget exceeds {dev.name}'s free SRAM ({free}); this plan will not run on it")
    where = "in RAM" if dev.frozen_weights is FrozenWeights.SRAM else "in flash"
    out.append(
        f"          frozen model {where}; device: {format_bytes(dev.sram)} SRAM, {format_bytes(dev.flash)} flash"
    )
    return out


def _sparse_update_line(plan: Plan) -> str:
    """Training memory as Sparse Update counts it (docs/tiny-training.md), next to ours."""
    if plan.sparse_update_bytes is None:
        return "          Sparse Update accounting not in this plan file (solve it again to add it)"
    reported = ", the training memory this plan reports" if plan.training_accounting == "sparse-update" else ""
    return f"          Sparse Update accounting {format_bytes(plan.sparse_update_bytes)} (Lin et al. 2022){reported}"


def _scheme_lines(plan: Plan) -> list[str]:
    """Where an imported plan came from and how training keeps its channel choice."""
    scheme = plan.options.get("scheme")
    source = scheme.get("source", "?") if isinstance(scheme, dict) else "?"
    criteria, sampler = plan.options.get("weight_select_criteria"), plan.options.get("sampler")
    lines = [f"scheme    tiny-training backward_config from {source}; objective {plan.objective:.4f}"]
    if sampler:
        lines.append(f"          channels: {criteria}, chosen once (train with sampler={sampler!r}, resample='never')")
    elif criteria:
        lines.append(f"          channels: {criteria}, chosen once; no budgetplan sampler makes that choice")
    return lines


def render_costs(costs: CostTable) -> str:
    rows = [
        [
            layer.name,
            layer.kind,
            f"{layer.in_channels}->{layer.out_channels}",
            "x".join(map(str, layer.kernel_size)) or "-",
            str(layer.groups),
            "x".join(map(str, layer.input_hw)) or "-",
            format_count(layer.forward_macs),
            str(layer.weight_elements_per_channel),
            str(layer.activation_elements_per_channel),
            format_count(layer.mask_elements + layer.path_activation_elements),
            format_count(layer.forward_live_elements),
        ]
        for layer in costs.layers
    ]
    headers = ["layer", "kind", "channels", "kernel", "groups", "input", "MACs", "w/ch", "act/ch", "path", "live"]
    text = [
        f"{costs.model}, input {'x'.join(map(str, costs.input_shape))}, executor {costs.executor}; "
        "element counts per sample (w/ch, act/ch: per input channel)",
        "",
        table(headers, rows, [False, False, True, True, True, True, True, True, True, True, True]),
        f"{len(costs.layers)} layers, {format_count(costs.forward_macs)} forward MACs.",
    ]
    if costs.patch_options:
        options = ", ".join(
            f"before {costs.layers[o.split].name} {o.grid}x{o.grid}: {format_count(o.live_elements)} live, "
            f"+{format_count(o.extra_macs)} MACs"
            for o in costs.patch_options
        )
        text.append(f"patch stages ({'planned' if costs.executor == 'patch' else 'with --executor patch'}): {options}")
    for item in costs.uncosted:
        text.append(f"not planned: {item.name} ({item.type}): {item.reason}")
    if costs.unknown_ops:
        text.append(f"ops assumed to save nothing for backward: {', '.join(costs.unknown_ops)}")
    return "\n".join(text)


def render_sweep(rows: Sequence[SweepRow], title: str) -> str:
    body = [
        [
            format_bytes(r.budget_bytes),
            format_bytes(r.predicted_bytes) if r.predicted_bytes is not None else "-",
            f"{r.objective:.4f}" if r.objective is not None else "-",
            str(r.updated_layers) if r.updated_layers is not None else "-",
            f"{100 * r.trained_fraction:.1f}%" if r.trained_fraction is not None else "-",
            f"{r.solve_seconds:.2f} s" if r.solve_seconds is not None else "-",
            r.status or "infeasible",
        ]
        for r in rows
    ]
    headers = ["budget", "predicted", "objective", "layers", "weights trained", "solve", "status"]
    text = [title, "", table(headers, body, [True, True, True, True, True, True, False])]
    infeasible = [r for r in rows if not r.feasible]
    if infeasible:
        text.append(f"infeasible budgets: {infeasible[0].note}")
    return "\n".join(text)


def render_devices(devices: Sequence[DeviceProfile]) -> str:
    rows = [
        [
            d.name,
            ", ".join(d.aliases),
            format_bytes(d.sram),
            format_bytes(d.flash),
            format_bytes(d.budget),
            f"{d.clock_hz / 1e6:g} MHz",
            f"{format_count(d.macs_per_second)}",
            f"w{d.bits.weight}/a{d.bits.activation}/g{d.bits.gradient}",
        ]
        for d in devices
    ]
    headers = ["device", "aliases", "SRAM", "flash", "budget", "clock", "MAC/s", "bits"]
    return table(headers, rows, [False, False, True, True, True, True, True, False])
