"""Running a model with its leading frozen layers computed patch by patch, on the host.

The reference for ``executor: patch`` (docs/cost-model.md, "Patch-based execution"):
``PatchedForward`` computes the ops before a split one spatial patch at a time, each
patch holding only the regions ``budgetplan.costs.patches`` assigns to it, and then runs
the rest of the model on the assembled split outputs. The result equals the ordinary
forward; the plan that is trained is the plan that deploys.

How: the model is run ``grid²`` times up to the split, once per patch, under a torch
function mode that slices every input to the region the op needs and pads explicitly
where the region meets the image border (so an interior patch reads its halo, not zeros);
each patch writes its tile of the split outputs. A last run skips the prefix and hands the
assembled outputs to the rest of the model. The ops are matched to the model's trace one
by one; a model that runs differently from its trace is refused.

>>> import torch, torchvision
>>> model = torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10).eval()
>>> x = torch.randn(1, 3, 96, 96)
>>> patched = PatchedForward(model, x, split="features.3.conv.0.0", grid=3)
>>> bool((patched(x) - model(x)).abs().max() < 1e-5)
True
>>> patched.largest_elements < patched.largest_whole_elements
True
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from budgetplan.costs.dataflow import Op, Trace, Window
from budgetplan.costs.patches import Interval, PatchRegions, largest_regions, needed, patch_regions, reach
from budgetplan.costs.trace import _SKIP_NAMES, _normalise, _tensors, trace_model
from budgetplan.errors import ModelError


class _PrefixDone(Exception):
    """Raised at the split: the rest of a patch pass is not run."""


class _Held:
    """A tensor of the prefix and the rows and columns of the whole tensor it holds."""

    def __init__(self, tensor: torch.Tensor, rows: Interval, cols: Interval) -> None:
        self.tensor, self.rows, self.cols = tensor, rows, cols

    def crop(self, rows: Interval, cols: Interval) -> torch.Tensor:
        if not (
            self.rows[0] <= rows[0] and rows[1] <= self.rows[1] and self.cols[0] <= cols[0] and cols[1] <= self.cols[1]
        ):
            raise ModelError(f"a patch needs rows {rows} and columns {cols} but holds {self.rows} and {self.cols}")
        if (rows, cols) == (self.rows, self.cols):
            return self.tensor
        r0, c0 = rows[0] - self.rows[0], cols[0] - self.cols[0]
        return self.tensor[:, :, r0 : r0 + rows[1] - rows[0], c0 : c0 + cols[1] - cols[0]]


def _border_padding(window: Window, out: tuple[Interval, Interval], size: Sequence[int]) -> list[int]:
    """(left, right, top, bottom) padding a window needs where ``out`` reaches past the
    input's border: what the op's own padding supplied there."""
    pads = []
    for dim in (1, 0):  # F.pad lists the last dimension first
        start, stop = reach(window, dim, out[dim])
        pads += [max(0, -start), max(0, stop - size[dim])]
    return pads


class _PatchPass(TorchFunctionMode):
    """One patch ``(i, j)``: each op of the prefix computes its region only."""

    def __init__(self, runner: PatchedForward, i: int, j: int) -> None:
        super().__init__()
        self.runner, self.i, self.j = runner, i, j
        trace = runner.trace
        # the model's inputs, whole: the first ops read their regions from them
        self.held: dict[int, _Held] = {
            t: _Held(x, (0, x.shape[2]), (0, x.shape[3])) for t, x in zip(trace.input_ids, runner.inputs, strict=True)
        }
        self.index = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if self.index >= self.runner.regions.end:
            raise _PrefixDone
        op = self.runner.op_at(self.index, func)
        if op is None:
            out = func(*args, **kwargs)
            if _tensors(out) and getattr(func, "__name__", "") not in _SKIP_NAMES:
                expected = self.runner.trace.ops[self.index].func
                raise ModelError(f"the model ran {func.__name__} where its trace has {expected} (op {self.index})")
            return out
        self.index += 1
        regions = self.runner.regions
        out_id = op.outputs[0]
        rows, cols = regions.region(out_id, self.i, self.j)
        args, kwargs = self._cropped(op.func, op.window, op.inputs, (rows, cols), args, kwargs)
        out = func(*args, **kwargs)
        if not isinstance(out, torch.Tensor) or tuple(out.shape[2:]) != (rows[1] - rows[0], cols[1] - cols[0]):
            raise ModelError(f"op {op.index} ({op.func}) of a patch does not have the size of its region")
        self.held[out_id] = _Held(out, rows, cols)
        self.runner.note(out)
        if out_id in regions.outputs:
            self.runner.write(out_id, out, rows, cols, self.i, self.j)
        return out

    def _cropped(
        self,
        func: str,
        window: Window | None,
        input_ids: tuple[int, ...],
        out: tuple[Interval, Interval],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call's arguments with each input cropped to what ``out`` reads, and for a
        window, the padding made explicit at the border only."""
        tensors = iter(input_ids)
        new_args = list(args)
        for n, arg in enumerate(args):
            if isinstance(arg, torch.Tensor) and id(arg) not in self.runner.static_ids:
                t = next(tensors)
                size = self.runner.trace.shapes[t][2:]
                if window is None:
                    new_args[n] = self.held[t].crop(*out)
                    continue
                need = tuple(needed(window, dim, out[dim], size[dim]) for dim in (0, 1))
                cropped = self.held[t].crop(*need)
                pads = _border_padding(window, out, size)
                if func == "pad":
                    new_args[n] = cropped
                    new_args[1] = tuple(pads)
                    return tuple(new_args[:2]), {"mode": "constant", "value": window.fill}
                if any(pads):
                    cropped = F.pad(cropped, pads, value=window.fill)
                new_args[n] = cropped
                position = 4 if func == "conv2d" else 3  # where the padding argument sits
                if len(new_args) > position:
                    new_args[position] = 0
                elif "padding" in kwargs:
                    kwargs = {**kwargs, "padding": 0}
        return tuple(new_args), kwargs


class _Rest(TorchFunctionMode):
    """The last pass: the prefix is not computed; its outputs are the assembled ones."""

    def __init__(self, runner: PatchedForward) -> None:
        super().__init__()
        self.runner = runner
        self.index = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        runner = self.runner
        op = runner.op_at(self.index, func) if self.index < runner.regions.end else None
        if op is None:
            return func(*args, **kwargs)
        self.index += 1
        out_id = op.outputs[0]
        if out_id in runner.assembled:
            return runner.assembled[out_id]
        # never read: a stand-in of the right shape that holds no memory
        shape = (runner.inputs[0].shape[0], *runner.trace.shapes[out_id][1:])
        return runner.inputs[0].new_zeros(()).expand(shape)


class PatchedForward:
    """``model`` with the ops before layer ``split`` computed on a ``grid × grid`` patch
    grid. Call it like the model; ``install`` makes the model itself run this way.

    The prefix runs without gradients: it holds frozen layers only, as a plan's patch
    stage does. ``largest_elements`` is the largest tensor (elements per sample) any
    patch made in the last call; ``largest_whole_elements`` the largest the prefix makes
    when run whole.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, split: str, grid: int) -> None:
        self.model = model
        self.trace: Trace = trace_model(model, example_input)
        end = next((op.index for op in self.trace.ops if op.module == split and op.func in ("conv2d", "linear")), None)
        if end is None:
            raise ModelError(f"no layer named {split!r} runs in the model")
        regions = patch_regions(self.trace, end, grid)
        if regions is None:
            raise ModelError(f"the ops before {split} cannot run in {grid}x{grid} patches")
        self.regions: PatchRegions = regions
        self.static_ids = {id(p) for p in model.parameters()} | {id(b) for b in model.buffers()}
        self.largest_elements = 0
        self.largest_whole_elements = max(self.trace.elements(t) for op in self.trace.ops[:end] for t in op.outputs)
        # the largest tensor a patch makes, as the cost model counts it
        self.claimed_elements = max(
            self.trace.shapes[t][1] * h * w
            for t, (h, w) in largest_regions(regions).items()
            if t not in self.trace.input_ids
        )
        self.inputs: tuple[torch.Tensor, ...] = ()
        self.assembled: dict[int, torch.Tensor] = {}
        self._busy = False

    def op_at(self, index: int, func: Any) -> Op | None:
        """The trace's op ``index`` when ``func`` is that call, else ``None`` (a call the
        trace leaves out, such as ``size``)."""
        name = getattr(func, "__name__", "")
        op = self.trace.ops[index]
        return op if name not in _SKIP_NAMES and _normalise(name) == op.func else None

    def note(self, tensor: torch.Tensor) -> None:
        self.largest_elements = max(self.largest_elements, tensor.numel() // max(1, tensor.shape[0]))

    def write(self, out_id: int, out: torch.Tensor, rows: Interval, cols: Interval, i: int, j: int) -> None:
        """Copy patch ``(i, j)``'s tile of a prefix output into the whole one."""
        (t0, t1), (u0, u1) = self.regions.tile(i, j)
        if out_id not in self.assembled:
            shape = (out.shape[0], out.shape[1], *self.regions.size)
            self.assembled[out_id] = out.new_empty(shape)
        tile = out[:, :, t0 - rows[0] : t1 - rows[0], u0 - cols[0] : u1 - cols[0]]
        self.assembled[out_id][:, :, t0:t1, u0:u1] = tile

    def _prefix(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        modules = dict(self.model.named_modules())
        for name in {op.module for op in self.trace.ops[: self.regions.end]}:
            module = modules.get(name)
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
                # batch statistics need the whole image, and would move once per patch
                raise ModelError(f"{name}: a BatchNorm in training mode cannot run in patches; keep it in eval mode")
        self.inputs = tuple(a for a in args if isinstance(a, torch.Tensor))
        self.assembled = {}
        self.largest_elements = 0
        with torch.no_grad():
            for i in range(self.regions.grid):
                for j in range(self.regions.grid):
                    try:
                        with _PatchPass(self, i, j):
                            self.model(*args, **kwargs)
                    except _PrefixDone:
                        continue
                    raise ModelError("the model finished before its patch stage ended")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.install():
            return self.model(*args, **kwargs)

    @contextlib.contextmanager
    def install(self) -> Iterator[PatchedForward]:
        """While open, calling the model runs it patch by patch (hooks removed on exit)."""
        modes: list[_Rest] = []

        def before(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if self._busy:
                return
            self._busy = True
            try:
                self._prefix(args, kwargs)
            finally:
                self._busy = False
            mode = _Rest(self)
            mode.__enter__()
            modes.append(mode)

        def after(module: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
            if modes and not self._busy:
                modes.pop().__exit__(None, None, None)

        handles = [
            self.model.register_forward_pre_hook(before, with_kwargs=True),
            self.model.register_forward_hook(after, with_kwargs=True, always_call=True),
        ]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()
            while modes:
                modes.pop().__exit__(None, None, None)
