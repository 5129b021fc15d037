"""Run a model once and record its dataflow as plain data.

Every torch function called during one forward pass is recorded with the tensors it
reads and writes and the innermost module that called it. Recording at the
``__torch_function__`` level (rather than with ``torch.fx``) works for any model that
runs, including ones with data-dependent Python control flow or ``x.size()`` unpacking.
The result holds no torch objects, so the cost model that reads it is pure Python.
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Iterator, Sequence
from math import prod
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from budgetplan.costs.dataflow import ModuleInfo, Op, Trace, Window
from budgetplan.costs.layers import PlannableLayer, plannable_layers
from budgetplan.errors import ModelError

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
_SKIP_NAMES = {"__get__", "__set__", "size", "dim", "numel", "stride", "is_contiguous", "data_ptr"}
# Python functions that torch dispatches as one call: recorded through their inner ops,
# so that the projections inside attention are seen as the linear calls they are
COMPOSITE = {"multi_head_attention_forward"}
_DROPOUTS = {"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout"}


def _normalise(name: str) -> str:
    name = name.strip("_")
    if name in ("iadd", "radd"):
        return "add"
    if name in ("imul", "rmul"):
        return "mul"
    if name in ("isub", "rsub"):
        return "sub"
    if name in ("itruediv", "truediv", "rtruediv"):
        return "div"
    return name


def _pair(value: Any, default: int) -> tuple[int, int] | None:
    if value is None:
        return (default, default)
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    return None


def _argument(args: tuple[Any, ...], kwargs: dict[str, Any], position: int, name: str, default: Any) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[position] if len(args) > position else default


def op_window(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Window | None:
    """The window of a 2-d ``conv2d``, ``max_pool2d``, ``avg_pool2d`` or constant ``pad``
    call, from its arguments; ``None`` for other calls and for forms patches cannot
    follow (ceil mode, padding left out of an average)."""
    if not args or not isinstance(args[0], torch.Tensor) or args[0].dim() != 4:
        return None
    if name == "conv2d":
        kernel = tuple(args[1].shape[2:]) if len(args) > 1 and isinstance(args[1], torch.Tensor) else None
        stride = _pair(_argument(args, kwargs, 3, "stride", 1), 1)
        dilation = _pair(_argument(args, kwargs, 5, "dilation", 1), 1)
        padding: Any = _argument(args, kwargs, 4, "padding", 0)
        if kernel is None or stride is None or dilation is None:
            return None
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True))
        before = _pair(padding, 0)
        return Window((kernel[0], kernel[1]), stride, before, dilation) if before else None
    if name in ("max_pool2d", "avg_pool2d"):
        kernel_ = _pair(_argument(args, kwargs, 1, "kernel_size", None), 1)
        stride = _pair(_argument(args, kwargs, 2, "stride", None) or kernel_, 1)
        before = _pair(_argument(args, kwargs, 3, "padding", 0), 0)
        if name == "max_pool2d":
            dilation = _pair(_argument(args, kwargs, 4, "dilation", 1), 1)
            ceil, fill = _argument(args, kwargs, 5, "ceil_mode", False), float("-inf")
        else:
            dilation, fill = (1, 1), 0.0
            ceil = _argument(args, kwargs, 4, "ceil_mode", False)
            if before != (0, 0) and not _argument(args, kwargs, 5, "count_include_pad", True):
                return None
        if ceil or kernel_ is None or stride is None or before is None or dilation is None:
            return None
        return Window(kernel_, stride, before, dilation, fill)
    if name == "pad":
        pad = _argument(args, kwargs, 1, "pad", None)
        mode = _argument(args, kwargs, 2, "mode", "constant")
        value = _argument(args, kwargs, 3, "value", None)
        if mode != "constant" or not isinstance(pad, (tuple, list)) or len(pad) != 4 or min(pad) < 0:
            return None
        # (left, right, top, bottom): rows first in a window
        return Window((1, 1), (1, 1), (int(pad[2]), int(pad[0])), (1, 1), float(value or 0.0))
    return None


def recorded(func: Any, out: Any) -> str | None:
    """The normalised name under which a call is recorded, or ``None`` when the trace
    leaves it out (no tensor output, or a query such as ``size``)."""
    name = getattr(func, "__name__", "")
    if not _tensors(out) or name in _SKIP_NAMES:
        return None
    return _normalise(name)


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _tensors(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in _tensors(item)]
    return []


@functools.cache
def decomposed(func: Any) -> Any:
    """``func`` (a Python function torch dispatches to a ``TorchFunctionMode`` as one call)
    made to run its body instead, so that the mode sees the calls inside it.

    A mode that calls ``func`` again would be handed it again; this copy skips only
    ``func``'s own dispatch check, every call inside still reaches the mode.
    """
    scope = {**func.__globals__, "has_torch_function": lambda *args: False}
    body = types.FunctionType(func.__code__, scope, func.__name__, func.__defaults__, func.__closure__)
    body.__kwdefaults__ = func.__kwdefaults__
    return body


def _probability(args: tuple[Any, ...], kwargs: dict[str, Any]) -> float | None:
    p = _argument(args, kwargs, 1, "p", 0.5)
    return float(p) if isinstance(p, (int, float)) else None


def _norm_statistics(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """Mean and inverse deviation a ``layer_norm`` keeps: two per normalised row."""
    x, shape = args[0], _argument(args, kwargs, 1, "normalized_shape", ())
    if not isinstance(x, torch.Tensor) or not isinstance(shape, (tuple, list, torch.Size)):
        return 0
    return 2 * x.numel() // max(1, prod(int(d) for d in shape))


def _attention_saved(
    args: tuple[Any, ...], kwargs: dict[str, Any], out: torch.Tensor, note: Any
) -> tuple[tuple[int, ...], int]:
    """What ``scaled_dot_product_attention``'s backward keeps (Vaswani et al. 2017 attention):
    the fused kernels (flash, memory-efficient; Dao et al. 2022) keep query, key, value,
    output and one log-sum-exp per query row and head; the math kernel keeps the scaled
    query, key, value and the attention probabilities (and a dropout mask)."""
    q, k, v = (_argument(args, kwargs, i, n, None) for i, n in enumerate(("query", "key", "value")))
    mask = _argument(args, kwargs, 3, "attn_mask", None)
    p = float(_argument(args, kwargs, 4, "dropout_p", 0.0))
    causal = bool(_argument(args, kwargs, 5, "is_causal", False))
    if not all(isinstance(t, torch.Tensor) for t in (q, k, v)):
        return (), 0
    rows = q.numel() // q.shape[-1]  # query rows times heads
    try:
        backend = int(torch._fused_sdp_choice(q, k, v, mask, p, causal))
    except (RuntimeError, TypeError):
        backend = 0
    if backend != 0:  # a fused kernel
        return (note(q), note(k), note(v), note(out)), rows
    probabilities = rows * k.shape[-2]
    return (note(k), note(v)), q.numel() + probabilities * (2 if p > 0 else 1)


class _Recorder(TorchFunctionMode):
    def __init__(self, static_ids: set[int], module_stack: list[str], weights: dict[int, str]) -> None:
        super().__init__()
        self.static_ids = static_ids
        self.module_stack = module_stack
        self.weights = weights  # id of a plannable weight -> its layer's name
        self.ops: list[Op] = []
        self.shapes: dict[int, tuple[int, ...]] = {}
        self.storage: dict[int, int] = {}
        self.storage_elements: dict[int, int] = {}
        self.keep: list[torch.Tensor] = []  # keeps ids (and storages) unique for the whole pass

    def note(self, tensor: torch.Tensor) -> int:
        key = id(tensor)
        if key not in self.shapes:
            self.keep.append(tensor)
        self.shapes[key] = tuple(tensor.shape)
        storage = tensor.untyped_storage()
        where = storage.data_ptr() or -key  # an empty storage shares nothing
        self.storage[key] = where
        self.storage_elements[where] = max(
            self.storage_elements.get(where, 0), storage.nbytes() // max(1, tensor.element_size())
        )
        return key

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in COMPOSITE:
            with self:  # record what it calls instead
                return decomposed(func)(*args, **kwargs)
        out = func(*args, **kwargs)
        name = recorded(func, out)
        if name is None:
            return out
        if name in _DROPOUTS and _probability(args, kwargs) == 0:
            name = "identity"  # dropping nothing, it returns its input and keeps nothing
        outs = _tensors(out)
        ins = [t for t in _tensors((args, kwargs)) if id(t) not in self.static_ids]
        in_ids = tuple(self.note(t) for t in ins)
        out_ids = tuple(self.note(t) for t in outs)
        scalar = any(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
        weight = args[1] if len(args) > 1 else kwargs.get("weight")
        saved, aux = None, 0
        if name == "scaled_dot_product_attention" and isinstance(out, torch.Tensor):
            saved, aux = _attention_saved(args, kwargs, out, self.note)
        elif name == "layer_norm":
            aux = _norm_statistics(args, kwargs)
        self.ops.append(
            Op(
                index=len(self.ops),
                func=name,
                module=self.module_stack[-1] if self.module_stack else "",
                inputs=in_ids,
                outputs=out_ids,
                inplace=bool(set(in_ids) & set(out_ids)),
                scalar_operand=scalar or len(ins) == 1,
                window=op_window(name, args, kwargs),
                layer=self.weights.get(id(weight), "") if isinstance(weight, torch.Tensor) else "",
                saved=saved,
                aux_saved=aux,
            )
        )
        return out


def _module_info(layer: PlannableLayer) -> ModuleInfo:
    return ModuleInfo(
        name=layer.name,
        in_channels=layer.in_channels,
        out_channels=layer.out_channels,
        kernel_size=layer.kernel_size,
        groups=layer.groups,
        weight_shape=tuple(layer.weight.shape),
        type=layer.type,
        has_bias=layer.bias is not None,
        weight_param=layer.weight_param,
        bias_param=layer.bias_param,
    )


@contextlib.contextmanager
def module_stack(model: nn.Module, stack: list[str], called: set[str]) -> Iterator[None]:
    """Keep ``stack`` the names of the modules running now (innermost last), and ``called``
    every module that ran, through forward hooks removed on the way out."""
    handles = []
    for name, module in model.named_modules():
        if name == "":
            continue

        def push(mod: nn.Module, args: Any, _name: str = name) -> None:
            stack.append(_name)
            called.add(_name)

        def pop(mod: nn.Module, args: Any, out: Any, _name: str = name) -> None:
            if stack and stack[-1] == _name:
                stack.pop()

        handles.append(module.register_forward_pre_hook(push))
        handles.append(module.register_forward_hook(pop))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _parameter_owners(model: nn.Module) -> dict[str, tuple[str, str, int]]:
    """Parameter name -> (module name, module type, elements)."""
    owners = {}
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            owners[full] = (mod_name, type(module).__name__, p.numel())
    return owners


def trace_model(model: nn.Module, example_input: torch.Tensor | Sequence[torch.Tensor]) -> Trace:
    """Run ``model`` once on ``example_input`` (a batch) and record its dataflow.

    The model is run in eval mode without gradients and handed back as it came
    (training flag restored, hooks removed). Attention's eval-mode fast path (one fused
    op for a whole encoder layer) is turned off meanwhile: training runs the ops it fuses.
    """
    inputs = (example_input,) if isinstance(example_input, torch.Tensor) else tuple(example_input)
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise ModelError("example_input must be a tensor or a sequence of tensors")
    batch = int(inputs[0].shape[0]) if inputs[0].dim() > 0 else 1
    static_ids = {id(p) for p in model.parameters()} | {id(b) for b in model.buffers()}
    stack: list[str] = []
    called: set[str] = set()
    layers = plannable_layers(model)
    recorder = _Recorder(static_ids, stack, {id(layer.weight): name for name, layer in layers.items()})
    was_training = model.training
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    model.eval()
    try:
        with module_stack(model, stack, called), torch.no_grad(), recorder:
            input_ids = tuple(recorder.note(t) for t in inputs)
            output = model(*inputs)
        output_ids = tuple(recorder.note(t) for t in _tensors(output))
    except Exception as err:  # the user's model rejected the input
        shapes = ", ".join("x".join(map(str, t.shape)) for t in inputs)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"{type(model).__name__} rejects an input of shape {shapes}: {first}") from err
    finally:
        model.train(was_training)
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return Trace(
        ops=recorder.ops,
        shapes=recorder.shapes,
        batch=batch,
        input_ids=input_ids,
        output_ids=output_ids,
        plannable={name: _module_info(layer) for name, layer in layers.items()},
        norms={n: getattr(m, "bias", None) is not None for n, m in model.named_modules() if isinstance(m, NORM_TYPES)},
        parameters=_parameter_owners(model),
        called_modules=called,
        storage=recorder.storage,
        storage_elements=recorder.storage_elements,
    )
