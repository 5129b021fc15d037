"""A recorded forward pass as plain data: the ops, the tensors they read and write, the
plannable modules (``budgetplan.costs.trace`` records it; the cost model reads it).

Nothing here holds a torch object, so everything that reads a ``Trace`` is pure Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


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
    layer: str = ""  # conv and linear calls: the plannable layer whose weight they read
    saved: tuple[int, ...] | None = None  # tensors its backward keeps, where the call says (attention)
    aux_saved: int = 0  # elements its backward keeps that no recorded tensor holds (statistics)


@dataclass(frozen=True, kw_only=True)  # by keyword: the records that extend it add fields
class LayerShape:
    """A plannable layer's geometry, as the trace records it and the cost table keeps it:
    its name, channels, kernel, groups and weight shape (``Linear``: kernel ``(1,)``)."""

    name: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    groups: int
    weight_shape: tuple[int, ...]

    def shape(self) -> LayerShape:
        """Only the geometry (a ``LayerCost`` or ``ModuleInfo`` is one, with more)."""
        return LayerShape(**{f.name: getattr(self, f.name) for f in fields(LayerShape)})


@dataclass(frozen=True, kw_only=True)
class ModuleInfo(LayerShape):
    """A plannable module (conv or Linear) as declared: its geometry, its type and its
    parameters' names."""

    type: str
    has_bias: bool
    weight_param: str = ""
    bias_param: str | None = None


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
    storage: dict[int, int] = field(default_factory=dict)  # tensor id -> its storage (views share one)
    storage_elements: dict[int, int] = field(default_factory=dict)  # storage -> elements, whole batch

    def elements(self, tensor_id: int) -> int:
        """Elements of a tensor per sample."""
        numel = 1
        for dim in self.shapes[tensor_id]:
            numel *= dim
        return max(1, numel // self.batch)

    def storage_of(self, tensor_id: int) -> int:
        """The storage a tensor lives in (the tensor itself when not recorded)."""
        return self.storage.get(tensor_id, -tensor_id - 1)

    def stored_elements(self, tensor_id: int) -> int:
        """Elements per sample of the whole storage a tensor lives in: what autograd keeps
        when it saves the tensor, even a view of part of it."""
        total = self.storage_elements.get(self.storage_of(tensor_id))
        return self.elements(tensor_id) if total is None else max(1, total // self.batch)
