"""Plans for on-device training runtimes: a C header, JSON for anything else, or a Sparse
Update ``backward_config`` (Lin et al. 2022; docs/tiny-training.md) for tiny-training.

>>> import torch, torchvision
>>> from budgetplan import solve
>>> plan = solve(torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10),
...              torch.zeros(1, 3, 128, 128), "cortex-m7")
>>> header = c_header(plan)
>>> "#define BUDGETPLAN_BUDGET_BYTES 262144u" in header
True
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from budgetplan.interop.scheme import scheme_to_dict
from budgetplan.interop.tiny_training import scheme_from_plan
from budgetplan.plan.model import Plan
from budgetplan.quoting import one_line

EXPORT_FORMATS = ("c-header", "json", "tiny-training")


def export_text(plan: Plan, fmt: str, source: str = "") -> str:
    """The plan in one of ``EXPORT_FORMATS``; ``source`` names the plan file in a header."""
    if fmt == "c-header":
        return c_header(plan)
    if fmt == "json":
        return json.dumps(plan_table(plan), indent=2) + "\n"
    if fmt == "tiny-training":
        return tiny_training_config(plan, source)
    raise ValueError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")


def plan_table(plan: Plan) -> dict[str, Any]:
    """The decisions a runtime needs: per layer in forward order, the channel count and
    bias flag, with the budget and the predicted peak."""
    return {
        "model": plan.model,
        "device": plan.device.name,
        "budget_bytes": plan.budget_bytes,
        "predicted_bytes": round(plan.predicted.peak_bytes),
        "batch_size": plan.batch_size,
        "fingerprint": plan.fingerprint,
        "layers": [
            {
                "index": index,
                "name": layer.name,
                "channels": layer.channels,
                "total_channels": layer.total_channels,
                "bias": layer.bias,
            }
            for index, layer in enumerate(plan.layers)
        ],
    }


def _comment(text: str) -> str:
    """``text`` inside a C comment: on one line, never closing it."""
    return re.sub(r"\*/", "* /", one_line(text))


def c_header(plan: Plan, guard: str = "BUDGETPLAN_PLAN_H") -> str:
    """A C99 header: budget macros and one ``budgetplan_layer_t`` per layer."""
    table = plan_table(plan)
    updated = sum(1 for layer in plan.layers if layer.update != "none")
    lines = [
        f"/* budgetplan plan for {_comment(plan.model)} on {_comment(plan.device.name)}.",
        f" * Budget {plan.budget_bytes} bytes, predicted peak {table['predicted_bytes']} bytes,",
        f" * batch {plan.batch_size}; solver {plan.solver} {plan.status}; fingerprint {plan.fingerprint}.",
        " * Layers are in forward order; channels = input channels whose weights are trained",
        " * (a fresh subset each epoch when resampling), 0 = weights frozen. */",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        "#include <stdint.h>",
        "",
        f"#define BUDGETPLAN_BUDGET_BYTES {plan.budget_bytes}u",
        f"#define BUDGETPLAN_PREDICTED_BYTES {table['predicted_bytes']}u",
        f"#define BUDGETPLAN_BATCH_SIZE {plan.batch_size}u",
        f"#define BUDGETPLAN_NUM_LAYERS {len(plan.layers)}u",
        f"#define BUDGETPLAN_NUM_UPDATED {updated}u",
        "",
        "typedef struct {",
        "    uint32_t layer_index;    /* position in forward order */",
        "    uint32_t channels;       /* input channels trained, 0 if the weights are frozen */",
        "    uint32_t total_channels; /* input channels of the layer */",
        "    uint8_t bias;            /* 1 if the bias is trained */",
        "} budgetplan_layer_t;",
        "",
        "static const budgetplan_layer_t budgetplan_layers[BUDGETPLAN_NUM_LAYERS] = {",
    ]
    for row in table["layers"]:
        lines.append(
            f"    {{{row['index']}u, {row['channels']}u, {row['total_channels']}u, {int(row['bias'])}u}},"
            f" /* {_comment(row['name'])} */"
        )
    lines += ["};", "", f"#endif /* {guard} */", ""]
    return "\n".join(lines)


def tiny_training_config(plan: Plan, source: str = "") -> str:
    """YAML with the plan's ``backward_config`` under a comment header naming the plan and
    model; a ``PlanError`` when no ``backward_config`` trains what the plan trains."""
    scheme = scheme_from_plan(plan)
    head = next((layer.name for layer in reversed(plan.layers) if layer.kind == "linear"), None)
    n_conv = sum(1 for layer in plan.layers if layer.kind != "linear")
    lines = [
        "# Sparse Update backward_config (Lin et al., NeurIPS 2022) of the budgetplan plan"
        + (f" {source}" if source else ""),
        f"# model {plan.model}, input {'x'.join(map(str, plan.input_shape))}, batch {plan.batch_size}, "
        f"on {plan.device.name}; fingerprint {plan.fingerprint}",
        f"# convolutions numbered 0 to {n_conv - 1} in forward order"
        + (f"; the classifier {head} trains in full" if head else ""),
    ]
    block = scheme_to_dict(scheme)
    # tiny-training's training script splits these two on "-" (partial_backward.py)
    for key in ("manual_weight_idx", "weight_update_ratio"):
        if isinstance(block.get(key), list):
            block[key] = "-".join(str(value) for value in block[key])
    body = yaml.safe_dump({"backward_config": block}, sort_keys=False, default_flow_style=False)
    # model names and paths come from the user: a line break would end the comment
    return "\n".join(one_line(line) for line in lines) + "\n" + body
