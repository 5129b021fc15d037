"""Building the model to plan for, from a name on the command line.

A name is a torchvision classification model (``mobilenet_v2``, ``resnet50``, ...) or
``package.module:factory`` for a user's own; the default is the configuration of the
256 KB on-device-training work: MobileNetV2 at width 0.35, 10 classes, 128×128 input.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import inspect
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from budgetplan.errors import ModelError
from budgetplan.host import available_memory
from budgetplan.units import format_bytes

DEFAULT_MODEL = "mobilenet_v2"
DEFAULT_WIDTH = 0.35  # for mobilenet_v2 when no width is given
DEFAULT_INPUT = (3, 128, 128)
DEFAULT_CLASSES = 10


def parse_input_size(text: str) -> tuple[int, ...]:
    """``128`` → (3, 128, 128); ``96x128`` → (3, 96, 128); ``1x28x28`` as given."""
    try:
        dims = tuple(int(part) for part in str(text).lower().replace("×", "x").split("x"))
    except ValueError:
        raise ModelError(f"input size {text!r}: expected 128, 96x128 or 3x128x128") from None
    if not dims or any(d <= 0 for d in dims) or len(dims) > 4:
        raise ModelError(f"input size {text!r}: expected 128, 96x128 or 3x128x128")
    if len(dims) == 1:
        return (3, dims[0], dims[0])
    if len(dims) == 2:
        return (3, *dims)
    return dims


def build_model(
    name: str = DEFAULT_MODEL, num_classes: int = DEFAULT_CLASSES, width_mult: float | None = None
) -> tuple[nn.Module, str]:
    """The model and a description of it, e.g. ``mobilenet_v2(width_mult=0.35, num_classes=10)``."""
    kwargs: dict[str, Any] = {"num_classes": num_classes}
    if name == DEFAULT_MODEL and width_mult is None:
        width_mult = DEFAULT_WIDTH
    if width_mult is not None:
        kwargs["width_mult"] = width_mult
    if ":" in name:
        return _from_factory(name, kwargs), _describe(name, kwargs)
    if name == DEFAULT_MODEL:  # the same network as torchvision's, without its 2 s import
        from budgetplan.zoo.mobilenet import mobilenet_v2

        _check_parameters(lambda: mobilenet_v2(**kwargs), name, kwargs)
        return mobilenet_v2(**kwargs), _describe(name, kwargs)
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ModelError(
            f"unknown model '{name}'.{hint} Give a torchvision classification model "
            "(budgetplan profile --list-models) or package.module:factory."
        )
    _check_parameters(lambda: torchvision.models.get_model(name, weights=None, **kwargs), name, kwargs)
    try:
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    except TypeError as err:
        if "width_mult" in kwargs and "width_mult" in str(err):
            raise ModelError(f"--width-mult does not apply to {name}; only mobilenet_v2 takes it") from None
        raise ModelError(f"cannot build {name}: {err}") from None
    except (ValueError, AssertionError) as err:
        raise ModelError(f"cannot build {name} with {kwargs}: {err}") from None
    return model, _describe(name, kwargs)


def _check_parameters(build: Callable[[], nn.Module], name: str, kwargs: dict[str, Any]) -> None:
    """Build the model on the meta device (no memory) and refuse it when its parameters
    alone would take more than half the memory this machine has free."""
    try:
        with torch.device("meta"):
            model = build()
    except Exception:  # the real build below reports it
        return
    size = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    free = available_memory()
    if size > free // 2:
        raise ModelError(
            f"{_describe(name, kwargs)} has {format_bytes(size)} of parameters, above half of the "
            f"{format_bytes(free)} this machine has available; give fewer --num-classes or a smaller --width-mult"
        )


def _describe(name: str, kwargs: dict[str, Any]) -> str:
    args = ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items(), key=lambda kv: kv[0] != "width_mult"))
    return f"{name}({args})"


def import_factory(spec: str, what: str) -> Any:
    """The object ``package.module:name`` names; a ``ModelError`` starting with ``what``
    (``model X``, ``--data X``) when it cannot be imported."""
    module_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except ImportError as err:
        raise ModelError(f"{what}: cannot import {module_name} ({err})") from None
    except AttributeError:
        raise ModelError(f"{what}: {module_name} has no attribute {attr!r}") from None


def _from_factory(spec: str, kwargs: dict[str, Any]) -> nn.Module:
    factory = import_factory(spec, f"model {spec}")
    try:
        params = inspect.signature(factory).parameters
        accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    except (TypeError, ValueError):  # builtins without a signature
        params, accepts_any = inspect.Signature().parameters, False
    if "width_mult" in kwargs and "width_mult" not in params and not accepts_any:
        raise ModelError(f"--width-mult given, but {spec} takes no width_mult argument")
    usable = {k: v for k, v in kwargs.items() if k in params or accepts_any}
    try:
        model = factory(**usable)
    except Exception as err:
        raise ModelError(f"model {spec}: the factory failed: {err}") from err
    if not isinstance(model, nn.Module):
        raise ModelError(f"model {spec}: the factory returned {type(model).__name__}, not a torch.nn.Module")
    return model


def model_for_plan(plan: Any, spec: str | None = None, weights: str | None = None) -> tuple[nn.Module, str]:
    """The model a plan was solved for, rebuilt from its description
    (``mobilenet_v2(width_mult=0.35, num_classes=10)``) or from ``spec``, with the state
    dict in ``weights`` loaded; and a phrase that says which weights it holds."""
    described = re.fullmatch(r"([\w.:]+)\((.*)\)", plan.model)
    name = spec or (described[1] if described else plan.model)
    kwargs: dict[str, Any] = {}
    for part in filter(None, (described[2].split(", ") if described else [])):
        key, _, value = part.partition("=")
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ModelError(f"cannot rebuild the plan's model {plan.model!r}: give --model") from None
    model, _ = build_model(name, int(kwargs.get("num_classes", DEFAULT_CLASSES)), kwargs.get("width_mult"))
    if weights is None:
        return model, "the model's initial weights (give --weights for trained ones)"
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    except (OSError, RuntimeError, ValueError, AttributeError, TypeError) as err:
        raise ModelError(f"--weights {weights}: not a state dict of {name} ({str(err)[:300]})") from None
    return model, f"the state dict in {weights}"
