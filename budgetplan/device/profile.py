"""Device profiles: what a board offers for training, read from YAML and validated.

A profile names the device's writable memory (``sram``), its non-volatile storage
(``flash``), a throughput for training kernels, the bit widths the runtime trains with,
the SRAM the runtime keeps for itself (``reserved``) and the default training budget.
Shipped profiles live in ``device_profiles/``; ``load_device`` takes a name, an alias
or the path of a user's file.

>>> from budgetplan import load_device
>>> m7 = load_device("stm32f746")
>>> m7.name, m7.sram, m7.budget
('cortex-m7', 327680, 262144)
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from budgetplan.enums import EnumStr
from budgetplan.errors import ProfileError
from budgetplan.files import read_yaml
from budgetplan.quoting import quote
from budgetplan.units import SIZE_EXAMPLES, parse_bytes, parse_rate, parse_seconds


class Executor(EnumStr):
    """How the runtime runs a layer's ops, which sets the working buffers (docs/cost-model.md)."""

    LAYER = "layer"  # each op's inputs and output are live; elementwise ops write in place
    INPLACE_DW = "inplace-dw"  # a depthwise conv also writes over its input
    PATCH = "patch"  # inplace-dw, and the frozen leading layers may run patch by patch

    @property
    def inplace_depthwise(self) -> bool:
        return self is not Executor.LAYER


class FrozenWeights(EnumStr):
    """Where the frozen model lives: in ``flash`` (updated weights are copied to SRAM), or in
    ``sram``, where it counts against the budget (docs/planner.md)."""

    FLASH = "flash"
    SRAM = "sram"


_BIT_FIELDS = ("weight", "activation", "gradient", "bias", "optimizer", "mask")
_OPTIONAL_BITS = ("activation_gradient",)
_VALID_BITS = (0, 1, 2, 4, 8, 16, 32, 64)
_TOP_FIELDS = (
    "name", "aliases", "description", "sram", "flash", "clock", "compute", "bits",
    "reserved", "budget", "max_step_latency", "executor", "frozen_weights",
)  # fmt: skip
_REQUIRED = ("name", "description", "sram", "flash", "clock", "compute", "bits", "reserved", "budget")
_Choice = TypeVar("_Choice", bound=EnumStr)


@dataclass(frozen=True)
class BitWidths:
    """Bits per stored element. ``gradient`` 0: the update is fused into the gradient
    computation, so no weight gradient is kept; ``optimizer`` is the state per element;
    ``activation_gradient``: the gradients the backward passes between layers, where they
    are not stored as the activations are (the C library's int8 storage keeps them
    float32, docs/device.md)."""

    weight: int
    activation: int
    gradient: int
    bias: int
    optimizer: int
    mask: int
    activation_gradient: int | None = None

    @property
    def backward(self) -> int:
        """Bits of a gradient passed backward between layers."""
        return self.activation if self.activation_gradient is None else self.activation_gradient


@dataclass(frozen=True)
class DeviceProfile:
    """One device, with sizes in bytes, clock in Hz and throughput in MAC/s."""

    name: str
    aliases: tuple[str, ...]
    description: str
    sram: int
    flash: int
    clock_hz: float
    macs_per_second: float
    compute_assumption: str
    bits: BitWidths
    reserved: int
    budget: int
    max_step_latency: float | None = None
    executor: Executor = Executor.LAYER
    frozen_weights: FrozenWeights = FrozenWeights.FLASH
    source: str = "<memory>"

    def __post_init__(self) -> None:
        # a profile made in code may name its choices as text
        for field, kind in (("executor", Executor), ("frozen_weights", FrozenWeights)):
            try:
                object.__setattr__(self, field, kind.from_str(getattr(self, field)))
            except ValueError as err:
                raise ProfileError(f"{self.source}: field '{field}': {err}") from None

    def to_dict(self) -> dict[str, Any]:
        """The profile as plain data, in the YAML layout (sizes in bytes)."""
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "description": self.description,
            "sram": self.sram,
            "flash": self.flash,
            "clock": self.clock_hz,
            "compute": {
                "macs_per_second": self.macs_per_second,
                "assumption": self.compute_assumption,
            },
            "bits": {k: v for k, v in dataclasses.asdict(self.bits).items() if v is not None},
            "reserved": self.reserved,
            "budget": self.budget,
            "max_step_latency": self.max_step_latency,
            "executor": self.executor.value,
            "frozen_weights": self.frozen_weights.value,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "<memory>") -> DeviceProfile:
        """Validate plain data (as read from YAML) into a profile.

        Every problem is reported as ``ProfileError`` naming the source and the field.
        """
        return _Validator(source).profile(data)


class _Validator:
    """Turns YAML data into a DeviceProfile, with errors that name file and field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field: str, problem: str) -> ProfileError:
        return ProfileError(f"{self.source}: field '{field}': {problem}")

    def profile(self, data: Any) -> DeviceProfile:
        if not isinstance(data, dict):
            raise ProfileError(
                f"{self.source}: expected a mapping of fields ({', '.join(_REQUIRED)}), got {type(data).__name__}"
            )
        unknown = sorted(set(data) - set(_TOP_FIELDS))
        if unknown:
            raise self.fail(unknown[0], f"unknown field; known fields: {', '.join(_TOP_FIELDS)}")
        missing = [f for f in _REQUIRED if f not in data]
        if missing:
            raise self.fail(missing[0], "missing; every profile needs " + ", ".join(_REQUIRED))
        compute = self.mapping(data, "compute", ("macs_per_second", "assumption"))
        bits = self.mapping(data, "bits", _BIT_FIELDS, _OPTIONAL_BITS)
        profile = DeviceProfile(
            name=self.text(data, "name"),
            aliases=self.aliases(data.get("aliases", [])),
            description=self.text(data, "description"),
            sram=self.size(data, "sram", positive=True),
            flash=self.size(data, "flash", positive=True),
            clock_hz=self.rate(data["clock"], "clock", "hz"),
            macs_per_second=self.rate(compute["macs_per_second"], "compute.macs_per_second", "mac/s"),
            compute_assumption=self.text(compute, "assumption", "compute.assumption"),
            bits=BitWidths(**{f: self.bits(bits[f], f) for f in (*_BIT_FIELDS, *_OPTIONAL_BITS) if f in bits}),
            reserved=self.size(data, "reserved"),
            budget=self.size(data, "budget", positive=True),
            max_step_latency=self.latency(data.get("max_step_latency")),
            executor=self.choice(data, "executor", Executor.LAYER),
            frozen_weights=self.choice(data, "frozen_weights", FrozenWeights.FLASH),
            source=self.source,
        )
        if profile.reserved >= profile.sram:
            raise self.fail("reserved", f"{profile.reserved} bytes is not below sram ({profile.sram})")
        if profile.budget > profile.sram - profile.reserved:
            raise self.fail(
                "budget",
                f"{profile.budget} bytes exceeds sram - reserved = {profile.sram - profile.reserved}",
            )
        return profile

    def mapping(self, data: dict, field: str, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
        value = data[field]
        if not isinstance(value, dict):
            raise self.fail(field, f"expected a mapping with {', '.join(keys)}")
        for key in keys:
            if key not in value:
                raise self.fail(f"{field}.{key}", "missing")
        extra = sorted(set(value) - set(keys) - set(optional))
        if extra:
            known = ", ".join(keys) + (f" (and optionally {', '.join(optional)})" if optional else "")
            raise self.fail(f"{field}.{extra[0]}", f"unknown; expected {known}")
        return value

    def text(self, data: dict, field: str, label: str | None = None) -> str:
        value = data[field]
        if not isinstance(value, str) or not value.strip():
            raise self.fail(label or field, f"expected non-empty text, got {quote(value)}")
        return value.strip()

    def aliases(self, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail("aliases", f"expected a list of names, got {quote(value)}")
        return tuple(value)

    def size(self, data: dict, field: str, positive: bool = False) -> int:
        try:
            value = parse_bytes(data[field])
        except ValueError as err:
            raise self.fail(field, str(err)) from None
        if positive and value == 0:
            raise self.fail(field, f"must be more than 0 bytes; expected {SIZE_EXAMPLES}")
        return value

    def rate(self, raw: Any, field: str, unit: str) -> float:
        try:
            value = parse_rate(raw, unit)
        except ValueError as err:
            raise self.fail(field, str(err)) from None
        if value <= 0:
            raise self.fail(field, "must be positive")
        return value

    def bits(self, raw: Any, field: str) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int) or raw not in _VALID_BITS:
            raise self.fail(f"bits.{field}", f"expected one of {_VALID_BITS}, got {quote(raw)}")
        if raw == 0 and field in ("weight", "activation", "bias", "mask", "activation_gradient"):
            raise self.fail(f"bits.{field}", "must be more than 0")
        return raw

    def latency(self, raw: Any) -> float | None:
        if raw is None:
            return None
        try:
            value = parse_seconds(raw)
        except ValueError as err:
            raise self.fail("max_step_latency", str(err)) from None
        if value <= 0:
            raise self.fail("max_step_latency", "must be positive, or null for no limit")
        return value

    def choice(self, data: dict, field: str, default: _Choice) -> _Choice:
        try:
            return type(default).from_str(data.get(field, default))
        except ValueError as err:
            raise self.fail(field, str(err)) from None


def profiles_dir() -> Path:
    """The folder of shipped profiles: inside the installed package, or the repository's."""
    package = Path(__file__).resolve().parent.parent
    packaged = package / "device_profiles"
    if packaged.is_dir():
        return packaged
    return package.parent / "device_profiles"


def load_profile_file(path: str | Path) -> DeviceProfile:
    """Read and validate one profile file, resolving ``extends:``.

    A file with ``extends: cortex-m7`` (a shipped name or alias, or a path relative to the
    file) starts from that profile and overrides the fields it gives; ``bits`` and
    ``compute`` merge key by key. ``name`` defaults to the file name, ``aliases`` to none.
    """
    return DeviceProfile.from_dict(_resolved(Path(path), ()), source=str(path))


def _resolved(path: Path, chain: tuple[Path, ...]) -> Any:
    data = read_yaml(path, "device profile", ProfileError)
    if not isinstance(data, dict) or "extends" not in data:
        return data
    parent = data.pop("extends")
    if not isinstance(parent, str) or not parent:
        raise ProfileError(f"{path}: field 'extends': expected a device name or a profile path, got {quote(parent)}")
    if path.resolve() in chain:
        raise ProfileError(f"{path}: field 'extends': profiles extend each other in a loop")
    relative = path.parent / parent
    if Path(parent).suffix in (".yaml", ".yml") or relative.is_file():
        base = DeviceProfile.from_dict(_resolved(relative, (*chain, path.resolve())), source=str(relative))
    else:
        try:
            base = load_device(parent)
        except ProfileError as err:
            raise ProfileError(f"{path}: field 'extends': {err}") from None
    merged = base.to_dict()
    merged.update(name=path.stem, aliases=[])
    for key, value in data.items():
        if key in ("bits", "compute") and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def shipped_devices() -> list[DeviceProfile]:
    """Every profile that ships with budgetplan, sorted by name."""
    files = sorted(profiles_dir().glob("*.yaml"))
    return sorted((load_profile_file(f) for f in files), key=lambda p: p.name)


def load_device(device: str | Path | DeviceProfile) -> DeviceProfile:
    """A device profile from a shipped name or alias, or from a YAML file's path.

    >>> load_device("cortex-m7").flash
    1048576
    """
    if isinstance(device, DeviceProfile):
        return device
    text = str(device)
    if Path(text).suffix in (".yaml", ".yml") or Path(text).is_file():
        return load_profile_file(text)
    known = shipped_devices()
    for profile in known:
        if text.lower() == profile.name.lower() or text.lower() in (a.lower() for a in profile.aliases):
            return profile
    names = [p.name for p in known]
    close = difflib.get_close_matches(text, names + [a for p in known for a in p.aliases], n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ProfileError(
        f"unknown device '{text}'.{hint} Known devices: {', '.join(names)}; or give the path of a profile YAML file."
    )
