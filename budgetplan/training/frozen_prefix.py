"""Held-out checks that skip the part of the network a trial cannot change.

A trial trains a few layers, most often late ones. Every module that a forward pass
finishes before it reaches a trained parameter gives the same output at every held-out
check of the trial. ``FrozenPrefix`` records those outputs for each held-out batch at its
first check and hands them back at the later ones instead of running the modules, so a
later check computes only what follows. It keeps only the outputs the loss depends on
(found by autograd at the first check: most often the last one before the first trained
layer); the others are replaced by zeros that nothing reads. A replay of the first check
must give the very same loss, or nothing is kept for that trial. It relies on what the
trials already require (``budgetplan.training.probe``): in eval mode a module's output
depends on its input and its own parameters alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

CACHE_BYTES = 128 * 2**20  # outputs kept at most per plan tried; past it, checks run in full

Call = tuple[nn.Module, int]  # a module and which of its calls in one forward pass


@dataclass
class Kept:
    """What the checks of one held-out batch replay: each outermost frozen call's output
    (``Zeros`` where the loss does not depend on it) and the calls it made inside."""

    outputs: dict[Call, Any] = field(default_factory=dict)
    inner: dict[Call, list[nn.Module]] = field(default_factory=dict)


@dataclass(frozen=True)
class Zeros:
    """A stand-in for an output nothing after the frozen modules reads."""

    shape: torch.Size
    dtype: torch.dtype
    device: torch.device


class FrozenPrefix:
    """The frozen outputs of ``module``'s held-out checks while ``trained`` trains, kept per
    held-out batch index (at most ``limit`` bytes in all)."""

    def __init__(self, module: nn.Module, trained: Iterable[nn.Parameter], limit: int | None = None) -> None:
        self.module, self.limit = module, CACHE_BYTES if limit is None else limit
        ids = {id(p) for p in trained}
        self.owners = {m for m in module.modules() if any(id(p) in ids for p in m.parameters(recurse=False))}
        self.kept: dict[int, Kept] = {}  # by held-out batch index
        self.bytes = 0
        self.full = False  # over the limit, or a replay differed: nothing more is kept

    def loss(self, index: int, compute: Callable[[], Tensor]) -> Tensor:
        """``compute()``, the held-out loss of batch ``index``: at its first check recording
        the frozen modules' outputs, at later ones returning them instead of running them."""
        if index in self.kept:
            with self._replaying(self.kept[index]):
                return compute()
        if self.full or self.module in self.owners:  # a trained parameter of the root: nothing precedes it
            return compute()
        with torch.enable_grad(), self._recording() as (calls, inner):
            result = compute()
        kept = _live(result, calls, inner)
        result = result.detach()
        size = sum(t.numel() * t.element_size() for out in kept.outputs.values() for t in _tensors(out))
        if kept.outputs and self.bytes + size <= self.limit:
            with self._replaying(kept):
                same = torch.equal(compute(), result)  # else the module broke the assumption: run in full
            if same:
                self.kept[index], self.bytes = kept, self.bytes + size
                return result
        self.full = True
        return result

    @contextmanager
    def _recording(self) -> Iterator[tuple[dict[Call, Any], dict[Call, list[nn.Module]]]]:
        """The outermost calls that finish before a trained parameter's module starts, each
        output replaced by a copy that requires a gradient (the loss's dependence on it is
        then what autograd finds), and the modules each called inside."""
        counts: dict[nn.Module, int] = {}
        order: list[nn.Module] = []  # every call, in the order they start
        frames: list[tuple[Call, int, list[tuple[Call, Any, list[nn.Module]]]]] = []
        outer: list[tuple[Call, Any, list[nn.Module]]] = []
        reached = False

        def before(m: nn.Module, args: Any) -> None:
            nonlocal reached
            reached = reached or m in self.owners
            counts[m] = counts.get(m, -1) + 1
            frames.append(((m, counts[m]), len(order), []))
            order.append(m)

        def after(m: nn.Module, args: Any, output: Any) -> Any:
            call, start, children = frames.pop()
            siblings = frames[-1][2] if frames else outer
            if reached:  # this call reached a trained parameter: its frozen children stand alone
                siblings.extend(children)
                return None
            copied = _mapped(output, _leaf)
            siblings.append((call, copied, order[start + 1 :]))  # it stands for its children
            return _mapped(copied, _restored)  # the next modules may change it in place; the kept copy stays

        modules = [m for m in self.module.modules() if m is not self.module]
        handles = [m.register_forward_pre_hook(before) for m in modules]
        handles += [m.register_forward_hook(after) for m in modules]
        calls: dict[Call, Any] = {}
        inner: dict[Call, list[nn.Module]] = {}
        try:
            yield calls, inner
        finally:
            for handle in handles:
                handle.remove()
        calls.update({call: out for call, out, _ in outer})
        inner.update({call: inside for call, _, inside in outer})

    @contextmanager
    def _replaying(self, kept: Kept) -> Iterator[None]:
        """The kept calls replaced by their outputs (copies: a later in-place operation must
        not change what the next check gets), counting the calls they would have made."""
        counts: dict[nn.Module, int] = {}
        modules = {m for m, _ in kept.outputs}
        own = {m: m.__dict__["forward"] for m in modules if "forward" in m.__dict__}  # a forward set on the instance

        def replay(m: nn.Module, original: Callable[..., Any]) -> Callable[..., Any]:
            def forward(*args: Any, **kwargs: Any) -> Any:
                call = (m, counts.setdefault(m, -1) + 1)
                counts[m] = call[1]
                if call not in kept.outputs:  # a call that reached a trained parameter
                    return original(*args, **kwargs)
                for inside in kept.inner[call]:
                    counts[inside] = counts.get(inside, -1) + 1
                return _mapped(kept.outputs[call], _restored)

            return forward

        for m in modules:
            m.forward = replay(m, m.forward)  # type: ignore[method-assign]
        try:
            yield
        finally:
            for m in modules:
                del m.forward
                if m in own:
                    m.forward = own[m]  # type: ignore[method-assign]


def _live(loss: Tensor, calls: dict[Call, Any], inner: dict[Call, list[nn.Module]]) -> Kept:
    """The recorded outputs ``loss`` depends on; the others as ``Zeros``."""
    leaves = [t for out in calls.values() for t in _tensors(out) if t.requires_grad]
    if loss.grad_fn is None or not leaves:
        return Kept()
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    read = {id(t) for t, g in zip(leaves, grads, strict=True) if g is not None}

    def kept(leaf: Any) -> Any:
        if not isinstance(leaf, Tensor) or not leaf.requires_grad or id(leaf) in read:
            return leaf.detach() if isinstance(leaf, Tensor) else leaf
        return Zeros(leaf.shape, leaf.dtype, leaf.device)

    return Kept({call: _mapped(out, kept) for call, out in calls.items()}, inner)


def _mapped(tree: Any, fn: Callable[[Any], Any]) -> Any:
    """``tree`` (tuples, lists and dicts of leaves) with ``fn`` applied to each leaf."""
    if isinstance(tree, dict):
        return type(tree)((k, _mapped(v, fn)) for k, v in tree.items())
    if isinstance(tree, (tuple, list)):
        items = [_mapped(v, fn) for v in tree]
        return type(tree)(*items) if hasattr(tree, "_fields") else type(tree)(items)
    return fn(tree)


def _tensors(tree: Any) -> list[Tensor]:
    found: list[Tensor] = []
    _mapped(tree, lambda leaf: found.append(leaf) if isinstance(leaf, Tensor) else None)
    return found


def _leaf(leaf: Any) -> Any:
    """A copy (made before a later in-place change) that requires a gradient where it can."""
    if not isinstance(leaf, Tensor):
        return leaf
    copy = leaf.detach().clone()
    return copy.requires_grad_() if copy.is_floating_point() else copy


def _restored(leaf: Any) -> Any:
    if isinstance(leaf, Zeros):
        return torch.zeros(leaf.shape, dtype=leaf.dtype, device=leaf.device)
    return leaf.clone() if isinstance(leaf, Tensor) else leaf
