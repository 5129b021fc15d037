"""Plans a runtime can run: the rows that keep the ILP to what a tiny-training
``backward_config`` can say (docs/tiny-training.md, "Plans tiny-training can run").

A ``backward_config`` (Lin et al., NeurIPS 2022; ``mit-han-lab/tiny-training``) trains the
biases of the last ``n`` convolutions, all of them; a convolution's weight only with its
bias; the classifier in full; no other Linear layer. Channel counts are free: any count
is written as a ratio that tiny-training's parser turns back into it
(``budgetplan.interop.tiny_training.export_ratio``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pulp

if TYPE_CHECKING:
    from budgetplan.costs.table import LayerCost


def tiny_training_rows(
    layers: Sequence[LayerCost],
    x: dict[tuple[int, int], pulp.LpVariable],
    b: dict[int, pulp.LpVariable],
    weight_on: Sequence[pulp.LpAffineExpression],
) -> list[tuple[pulp.LpConstraint, str]]:
    """The constraints, named, over the ILP's ``x[l,c]``, ``b[l]`` and ``Σ_c x[l,c]``."""
    linear = [i for i, layer in enumerate(layers) if layer.kind == "linear"]
    convs = [i for i, layer in enumerate(layers) if layer.kind != "linear"]
    rows: list[tuple[pulp.LpConstraint, str]] = []
    for i in linear[:-1]:  # only the classifier trains among the Linear layers
        rows.append((weight_on[i] + b.get(i, 0) == 0, f"tt_linear_{i}"))
    if linear:
        head = linear[-1]
        full = x.get((head, layers[head].in_channels))
        # the classifier in full when it trains: every channel, and its bias where it has one
        rows.append((weight_on[head] - (full if full is not None else 0) == 0, f"tt_head_full_{head}"))
        if head in b:
            rows.append((b[head] - weight_on[head] == 0, f"tt_head_bias_{head}"))
    for position, i in enumerate(convs):
        bias = b.get(i)
        # a weight trains only with its bias: Σ_c x[l,c] ≤ b[l]
        rows.append((weight_on[i] <= (bias if bias is not None else 0), f"tt_weight_bias_{i}"))
        following = convs[position + 1] if position + 1 < len(convs) else None
        if bias is not None and following is not None:
            # the biases train as one block at the end: b[l] ≤ b[next conv]
            rows.append((bias <= b.get(following, 0), f"tt_bias_suffix_{i}"))
    return rows
