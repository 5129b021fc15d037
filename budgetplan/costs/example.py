"""Checks on the input a model is traced with, made before the trace that plans it.

* ``check_input_fits``: an input size the machine can trace. A forward pass at a large
  input holds activations far larger than the input; past a few million input elements
  the model is first traced at a smaller input of the same shape, its activation bytes
  scaled by the ratio of elements (convolutions and their activations grow with the
  input's area), and the size is refused when that is above half the memory available.
* ``other_paths``: the layers a forward pass runs with another input. A plan names the
  layers its trace ran; a forward whose path depends on the input's values (``if
  x.mean() > 0``) would train other layers than those.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from budgetplan.costs.trace import module_stack, trace_model
from budgetplan.errors import ModelError
from budgetplan.host import available_memory
from budgetplan.units import format_bytes

PROBE_ELEMENTS = 2**20  # inputs up to 4x this are traced without a probe
_FLOAT_BYTES = 4


def check_input_fits(model: nn.Module, shape: Sequence[int], batch: int = 1, memory: int | None = None) -> None:
    """Raise a ``ModelError`` when tracing ``model`` on a zero input of ``shape`` (one sample,
    without the batch) would take more than half of ``memory`` (default: what is available)."""
    elements = batch * math.prod(shape)
    limit = (available_memory() if memory is None else memory) // 2
    size = "x".join(map(str, shape))
    if elements * _FLOAT_BYTES > limit:
        raise ModelError(
            f"input {size}: the input alone takes {format_bytes(elements * _FLOAT_BYTES)}, above half of the "
            f"{format_bytes(2 * limit)} this machine has available; give a smaller --input-size"
        )
    if elements <= 4 * PROBE_ELEMENTS or len(shape) < 2:
        return
    channels, *sides = shape  # the spatial sides (or tokens) shrink, the channels stay
    scale = (PROBE_ELEMENTS / elements) ** (1 / len(sides))
    probe = (channels, *(max(8, int(side * scale)) for side in sides))
    try:
        trace = trace_model(model, torch.zeros(batch, *probe))
    except ModelError:
        return  # the model takes no smaller input: only the input itself was checked
    held = sum(trace.storage_elements.values()) * _FLOAT_BYTES
    estimate = held * elements / (batch * math.prod(probe))
    if estimate > limit:
        raise ModelError(
            f"input {size}: tracing {type(model).__name__} on it would hold about {format_bytes(estimate)} of "
            f"activations, above half of the {format_bytes(2 * limit)} this machine has available; "
            "give a smaller --input-size"
        )


def other_paths(model: nn.Module, example: torch.Tensor, seed: int = 0) -> tuple[list[str], list[str]] | None:
    """Modules with weights that a forward pass on a random input of ``example``'s shape
    runs and one on ``example`` does not, and the other way round; ``None`` where both
    run the same (or the model rejects the random input).

    The random input comes from a generator of its own: the global random state is left
    as it was. Inputs that are not floating point (token ids) are not varied.
    """
    if not example.is_floating_point():
        return None
    generator = torch.Generator().manual_seed(seed)
    other = torch.randn(example.shape, generator=generator, dtype=example.dtype).to(example.device)
    first, second = _weighted_modules_run(model, example), _weighted_modules_run(model, other)
    if first is None or second is None or first == second:
        return None
    return sorted(second - first), sorted(first - second)


def _weighted_modules_run(model: nn.Module, example: torch.Tensor) -> set[str] | None:
    """The modules with weights of their own that one eval-mode forward pass calls (as the
    trace records calls, ``module_stack``); ``None`` when the model rejects ``example``."""
    called: set[str] = set()
    was_training = model.training
    model.eval()
    try:
        with module_stack(model, [], called), torch.no_grad():
            model(example)
    except Exception:
        return None
    finally:
        model.train(was_training)
    owners = {name for name, module in model.named_modules() if next(module.parameters(False), None) is not None}
    return called & owners
