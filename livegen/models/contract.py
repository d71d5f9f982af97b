"""What an adapter needs of a package, declared: representation fields and graph tensor shapes.

Context: setup. An adapter class (a family's generator, see ``docs/model-package.md``,
"Writing a model family") sets ``contract`` to a :class:`Contract`; the registry checks
a package against it before the adapter is made (:func:`~livegen.models.registry.make_generator`),
and the adapter reads the checked values with :meth:`Contract.values`. A field or a
dimension that does not fit is a :class:`~livegen.errors.PackageError` that names it,
what was found and what would be accepted. Checks that depend on more than one field
in a way a declaration cannot say (a track list's length times its keys) stay in the
adapter. Written by hand: the fields are livegen's own manifest schema.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from livegen.errors import PackageError
from livegen.models.manifest import MANIFEST

if TYPE_CHECKING:
    from livegen.models.package import ModelPackage

#: A dimension of a declared shape that may be anything (a batch, a sequence).
ANY = "*"


@dataclass(frozen=True, slots=True)
class Whole:
    """An integer field from ``minimum`` to ``maximum`` and a multiple of ``multiple``; required
    unless it has a ``default``."""

    name: str
    minimum: int = 1
    maximum: int | None = None
    default: int | None = None
    multiple: int = 1
    meaning: str = ""  # what it is, for the message: " (a whole number of 4/4 bars)"

    def read(self, value: Any) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < self.minimum or value % self.multiple:
            return None
        return None if self.maximum is not None and value > self.maximum else value

    def expected(self) -> str:
        if self.maximum is None:
            bounds = f"an integer of at least {self.minimum}"
        else:
            bounds = f"an integer from {self.minimum} to {self.maximum}"
        multiple = f" and a multiple of {self.multiple}" if self.multiple > 1 else ""
        return bounds + multiple + self.meaning


@dataclass(frozen=True, slots=True)
class Number:
    """A number field from ``low`` (excluded with ``low_open``) to ``high``; required unless it has a
    ``default`` or is ``optional`` (None when left out)."""

    name: str
    low: float
    high: float
    default: float | None = None
    meaning: str = ""  # what it is, for the message: " (the share of frames drawn afresh)"
    low_open: bool = False
    optional: bool = False

    def read(self, value: Any) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not value <= self.high:
            return None
        return float(value) if (value > self.low if self.low_open else value >= self.low) else None

    def expected(self) -> str:
        if self.low_open:
            return f"a number above {self.low:g} and at most {self.high:g}{self.meaning}"
        return f"a number from {self.low:g} to {self.high:g}{self.meaning}"


@dataclass(frozen=True, slots=True)
class Numbers:
    """A list of ``count`` finite numbers (each above 0 with ``positive``); required unless it has a ``default``."""

    name: str
    count: int
    positive: bool = False
    default: tuple[float, ...] | None = None
    meaning: str = ""  # what the numbers are: ", one per feature (duration, frequency, velocity, step)"

    def read(self, value: Any) -> tuple[float, ...] | None:
        if not isinstance(value, list | tuple) or len(value) != self.count:
            return None
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value):
            return None
        return None if self.positive and not all(v > 0 for v in value) else tuple(float(v) for v in value)

    def expected(self) -> str:
        return f"a list of {self.count} {'numbers above 0' if self.positive else 'finite numbers'}{self.meaning}"


@dataclass(frozen=True, slots=True)
class Exactly:
    """A field that must hold ``value`` (a unit, an order of attributes); ``default``: it may be left out."""

    name: str
    value: Any
    default: Any = None
    meaning: str = ""

    def read(self, value: Any) -> Any:
        expected = list(self.value) if isinstance(self.value, tuple) else self.value
        return self.value if value == expected and type(value) is type(expected) else None

    def expected(self) -> str:
        shown = list(self.value) if isinstance(self.value, tuple) else self.value
        return f"{shown!r}{self.meaning}"


@dataclass(frozen=True, slots=True)
class Flag:
    """A true-or-false field; required unless it has a ``default``."""

    name: str
    default: bool | None = None
    meaning: str = ""

    def read(self, value: Any) -> bool | None:
        return value if isinstance(value, bool) else None

    def expected(self) -> str:
        return f"true or false{self.meaning}"


@dataclass(frozen=True, slots=True)
class Tensor:
    """A graph's tensor and its shape: integers, field names (the dimension equals the field's value)
    or :data:`ANY`."""

    graph: str
    name: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True, slots=True)
class Contract:
    """The representation fields an adapter reads and the tensor shapes they must agree with.

    ``key_range``: ``pitch_min + keys`` is at most 128 (a roll's keys are MIDI notes).
    """

    fields: tuple[Whole | Number | Numbers | Exactly | Flag, ...] = ()
    tensors: tuple[Tensor, ...] = ()
    key_range: bool = False

    def values(self, package: ModelPackage) -> dict[str, Any]:
        """The package's declared fields (defaults where absent), checked, with the tensor shapes."""
        path = package.folder / MANIFEST
        representation = package.manifest.representation
        values: dict[str, Any] = {}
        for field in self.fields:
            raw = representation.get(field.name, field.default)
            if raw is None and isinstance(field, Number) and field.optional:
                values[field.name] = None
                continue
            value = None if raw is None else field.read(list(raw) if isinstance(raw, tuple) else raw)
            if value is None:
                raise PackageError(
                    f"{path}: field 'representation.{field.name}': expected {field.expected()}, got {raw!r}"
                )
            values[field.name] = value
        if self.key_range and values["pitch_min"] + values["keys"] > 128:
            raise PackageError(f"{path}: field 'representation.keys': pitch_min + keys must be at most 128")
        for tensor in self.tensors:
            _check_shape(package, tensor, values)
        return values


def _check_shape(package: ModelPackage, tensor: Tensor, values: Mapping[str, Any]) -> None:
    path = package.folder / MANIFEST
    graph = package.manifest.graphs.get(tensor.graph)
    if graph is None:
        raise PackageError(f"{path}: a {package.manifest.family} package needs [graphs.{tensor.graph}]")
    spec = next((s for s in (*graph.inputs, *graph.outputs) if s.name == tensor.name), None)
    if spec is None:
        raise PackageError(f"{path}: [graphs.{tensor.graph}] needs a tensor named {tensor.name!r}")
    if len(spec.shape) != len(tensor.shape):
        wanted = ", ".join(map(str, tensor.shape))
        raise PackageError(
            f"{path}: [graphs.{tensor.graph}] tensor {tensor.name!r}: expected the shape [{wanted}], "
            f"the manifest says {list(spec.shape)}"
        )
    for dimension, (want, declared) in enumerate(zip(tensor.shape, spec.shape, strict=True)):
        if want == ANY:
            continue
        expected = values[want] if isinstance(want, str) else want
        if declared != expected:
            place = f"dimension {dimension} of graph {tensor.graph!r} tensor {tensor.name!r}"
            if isinstance(want, str):
                raise PackageError(
                    f"{path}: field 'representation.{want}': expected {declared!r} (the {place}), got {expected}"
                )
            raise PackageError(f"{path}: expected {expected} as the {place}, the manifest says {declared!r}")
