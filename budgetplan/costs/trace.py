"""Run a model once and record its dataflow as plain data.

Every torch function called during one forward pass is recorded with the tensors it
reads and writes and the innermost module that called it. Recording at the
``__torch_function__`` level (rather than with ``torch.fx``) works for any model that
runs, including ones with data-dependent Python control flow or ``x.size()`` unpacking.
The result holds no torch objects, so the cost model that reads it is pure Python.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from budgetplan.errors import ModelError

PLANNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
_SKIP_NAMES = {"__get__", "__set__", "size", "dim", "numel", "stride", "is_contiguous", "data_ptr"}


@dataclass(frozen=True)
class Window:
    """The sliding window of a 2-d conv, pool or pad, per spatial dimension (height, width):
    output position ``o`` reads inputs ``o·stride - pad_before + dilation·j`` for ``j < kernel``
    (``docs/cost-model.md``, "Patch-based execution")."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad_before: tuple[int, int]
    dilation: tuple[int, int] = (1, 1)
    fill: float = 0.0  # what the padding holds: 0, or -inf for max pooling


@dataclass(frozen=True)
class Op:
    """One recorded call: ``func`` normalised (``relu_`` and ``__iadd__`` become
    ``relu`` and ``add``), tensor ids read (activations only) and written."""

    index: int
    func: str
    module: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    inplace: bool = False
    scalar_operand: bool = False
    window: Window | None = None  # 2-d convs, pools and pads; ``None`` for other ops


@dataclass(frozen=True)
class ModuleInfo:
    """A plannable module (conv or Linear) as declared."""

    name: str
    type: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    groups: int
    weight_shape: tuple[int, ...]
    has_bias: bool


@dataclass
class Trace:
    """What one forward pass did, per sample (element counts divided by the batch)."""

    ops: list[Op]
    shapes: dict[int, tuple[int, ...]]  # tensor id -> shape, batch dimension included
    batch: int
    input_ids: tuple[int, ...]
    output_ids: tuple[int, ...]
    plannable: dict[str, ModuleInfo]
    norms: dict[str, bool]  # norm module name -> has a learnable bias
    parameters: dict[str, tuple[str, str, int]]  # param name -> (module, module type, numel)
    called_modules: set[str] = field(default_factory=set)

    def elements(self, tensor_id: int) -> int:
        """Elements of a tensor per sample."""
        numel = 1
        for dim in self.shapes[tensor_id]:
            numel *= dim
        return max(1, numel // self.batch)


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


class _Recorder(TorchFunctionMode):
    def __init__(self, static_ids: set[int], module_stack: list[str]) -> None:
        super().__init__()
        self.static_ids = static_ids
        self.module_stack = module_stack
        self.ops: list[Op] = []
        self.shapes: dict[int, tuple[int, ...]] = {}
        self.keep: list[torch.Tensor] = []  # keeps ids unique for the whole pass

    def note(self, tensor: torch.Tensor) -> int:
        key = id(tensor)
        if key not in self.shapes:
            self.keep.append(tensor)
        self.shapes[key] = tuple(tensor.shape)
        return key

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = recorded(func, out)
        if name is None:
            return out
        outs = _tensors(out)
        ins = [t for t in _tensors((args, kwargs)) if id(t) not in self.static_ids]
        in_ids = tuple(self.note(t) for t in ins)
        out_ids = tuple(self.note(t) for t in outs)
        scalar = any(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
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
            )
        )
        return out


def _module_info(name: str, module: nn.Module) -> ModuleInfo:
    if isinstance(module, nn.Linear):
        return ModuleInfo(
            name, "Linear", module.in_features, module.out_features, (), 1,
            tuple(module.weight.shape), module.bias is not None,
        )  # fmt: skip
    assert isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
    return ModuleInfo(
        name, type(module).__name__, module.in_channels, module.out_channels,
        tuple(module.kernel_size), module.groups, tuple(module.weight.shape),
        module.bias is not None,
    )  # fmt: skip


@contextlib.contextmanager
def _module_stack(model: nn.Module, stack: list[str], called: set[str]) -> Iterator[None]:
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
    (training flag restored, hooks removed).
    """
    inputs = (example_input,) if isinstance(example_input, torch.Tensor) else tuple(example_input)
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise ModelError("example_input must be a tensor or a sequence of tensors")
    batch = int(inputs[0].shape[0]) if inputs[0].dim() > 0 else 1
    static_ids = {id(p) for p in model.parameters()} | {id(b) for b in model.buffers()}
    stack: list[str] = []
    called: set[str] = set()
    recorder = _Recorder(static_ids, stack)
    was_training = model.training
    model.eval()
    try:
        with _module_stack(model, stack, called), torch.no_grad(), recorder:
            input_ids = tuple(recorder.note(t) for t in inputs)
            output = model(*inputs)
        output_ids = tuple(recorder.note(t) for t in _tensors(output))
    except Exception as err:  # the user's model rejected the input
        shapes = ", ".join("x".join(map(str, t.shape)) for t in inputs)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"{type(model).__name__} rejects an input of shape {shapes}: {first}") from err
    finally:
        model.train(was_training)
    return Trace(
        ops=recorder.ops,
        shapes=recorder.shapes,
        batch=batch,
        input_ids=input_ids,
        output_ids=output_ids,
        plannable={n: _module_info(n, m) for n, m in model.named_modules() if isinstance(m, PLANNABLE_TYPES)},
        norms={n: getattr(m, "bias", None) is not None for n, m in model.named_modules() if isinstance(m, NORM_TYPES)},
        parameters=_parameter_owners(model),
        called_modules=called,
    )
