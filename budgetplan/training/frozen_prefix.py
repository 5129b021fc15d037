"""Held-out checks that skip the part of the network a trial cannot change.

A trial trains a few layers, most often late ones. Every module that a forward pass
finishes before it reaches a trained parameter gives the same output at every held-out
check of the trial. ``FrozenPrefix`` keeps those outputs for each held-out batch at its
first check and hands back copies of them at the later ones, so a later check computes
only what follows. The losses are the same, computed by the same operations on the same
inputs. It relies on what the trials already require (``budgetplan.training.probe``):
in eval mode a module's output depends on its input and its own parameters alone (a module
that read another module's trained parameter would be kept stale).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

CACHE_BYTES = 128 * 2**20  # outputs kept at most per trial (per plan tried); past it, checks run in full


class FrozenPrefix:
    """The outputs of ``module``'s sub-modules that run before any of ``trained`` is
    reached, kept per held-out batch index (at most ``limit`` bytes in all)."""

    def __init__(self, module: nn.Module, trained: Iterable[nn.Parameter], limit: int | None = None) -> None:
        self.module, self.limit = module, CACHE_BYTES if limit is None else limit
        ids = {id(p) for p in trained}
        self.owners = {m for m in module.modules() if any(id(p) in ids for p in m.parameters(recurse=False))}
        self.kept: dict[int, dict[nn.Module, Any]] = {}  # batch index → module → its output
        self.bytes = 0
        self.full = False  # over the limit: nothing more is kept

    def loss(self, index: int, compute: Callable[[], Tensor]) -> Tensor:
        """``compute()``, the held-out loss of batch ``index``: on its first check recording
        the frozen modules' outputs, on later ones returning them instead of running them."""
        if index in self.kept:
            with self._replaying(self.kept[index]):
                return compute()
        if self.full or self.module in self.owners:  # a trained parameter of the root: nothing precedes it
            return compute()
        with self._recording() as outputs:
            result = compute()
        size = sum(t.numel() * t.element_size() for out in outputs.values() for t in _tensors(out, []))
        if self.bytes + size > self.limit:
            self.full = True
        else:
            self.kept[index], self.bytes = outputs, self.bytes + size
        return result

    @contextmanager
    def _recording(self) -> Iterator[dict[nn.Module, Any]]:
        """The outputs of the outermost calls that finish before a trained parameter's module
        starts, of modules called once (a module called again, as a shared activation can be,
        runs at every check: which of its calls a replay is at would be ambiguous)."""
        calls: dict[nn.Module, int] = {}
        stack: list[list[tuple[nn.Module, Any]]] = [[]]  # per open call, its children's frozen outputs
        reached = False

        def before(m: nn.Module, args: Any) -> None:
            nonlocal reached
            reached = reached or m in self.owners
            calls[m] = calls.get(m, 0) + 1
            stack.append([])

        def after(m: nn.Module, args: Any, output: Any) -> None:
            children = stack.pop()
            if reached:  # this call reached a trained parameter: its frozen children stand alone
                stack[-1].extend(children)
            else:  # the whole call is frozen: it stands for its children
                stack[-1].append((m, _mapped(output, _copied)))  # copied before a later in-place change

        handles = [m.register_forward_pre_hook(before) for m in self.module.modules() if m is not self.module]
        handles += [m.register_forward_hook(after) for m in self.module.modules() if m is not self.module]
        outputs: dict[nn.Module, Any] = {}
        try:
            yield outputs
        finally:
            for handle in handles:
                handle.remove()
        outputs.update({m: out for m, out in stack[0] if calls[m] == 1})

    @contextmanager
    def _replaying(self, outputs: dict[nn.Module, Any]) -> Iterator[None]:
        """The kept modules' forwards replaced by copies of their outputs (copies: a later
        in-place operation must not change what the next check gets)."""
        own = {m: m.__dict__["forward"] for m in outputs if "forward" in m.__dict__}  # a forward set on the instance

        def replay(m: nn.Module) -> Callable[..., Any]:
            return lambda *args, **kwargs: _mapped(outputs[m], _copied)

        for m in outputs:
            m.forward = replay(m)  # type: ignore[method-assign]
        try:
            yield
        finally:
            for m in outputs:
                del m.forward
                if m in own:
                    m.forward = own[m]  # type: ignore[method-assign]


def _mapped(tree: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """``tree`` (a tensor, or tuples, lists and dicts of them) with ``fn`` applied to its tensors."""
    if isinstance(tree, Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        return type(tree)((k, _mapped(v, fn)) for k, v in tree.items())
    if isinstance(tree, (tuple, list)):
        items = [_mapped(v, fn) for v in tree]
        return type(tree)(*items) if hasattr(tree, "_fields") else type(tree)(items)
    return tree


def _tensors(tree: Any, found: list[Tensor]) -> list[Tensor]:
    def keep(tensor: Tensor) -> Tensor:
        found.append(tensor)
        return tensor

    _mapped(tree, keep)
    return found


def _copied(tensor: Tensor) -> Tensor:
    return tensor.detach().clone()
