"""The ``livegen.toml`` manifest of a model package: schema and parsing.

Context: setup. Validation is written here by hand (a few dozen lines) rather
than through a JSON-schema library, so that every message can name the field and
say what would be accepted; the format itself is documented in
``docs/model-package.md``.
"""

from __future__ import annotations

import math
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livegen.errors import PackageError

MANIFEST = "livegen.toml"
SCHEMA_VERSION = 1
KINDS = ("step", "frame", "block")
DTYPES = ("float32", "int64")
_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
#: Largest fixed dimension, and largest number of elements a tensor's fixed dimensions
#: give: a manifest's shapes size the trial inference's zero tensors, and the bundled
#: models' largest tensor holds a few thousand.
MAX_DIM = 1 << 16
MAX_ELEMENTS = 1 << 24
#: Largest total of all graphs' inputs (dynamic dimensions at 1), bytes: the trial feeds them all.
MAX_INPUT_BYTES = 1 << 26
#: Largest manifest, bytes (the bundled ones hold a few kilobytes).
MAX_MANIFEST_BYTES = 1 << 20
_ITEMSIZE = {"float32": 4, "int64": 8}

Dim = int | str


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...]
    dtype: str


@dataclass(frozen=True, slots=True)
class GraphSpec:
    role: str
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    state: tuple[tuple[str, str], ...]  # (input name, output name)


@dataclass(frozen=True, slots=True)
class ParameterSpec:
    name: str
    default: float
    min: float
    max: float

    def clamp(self, value: float) -> float:
        return min(self.max, max(self.min, value))


#: A package's ``[gate] status``: what its last quality gate (docs/evaluation.md) said.
GATE_STATUSES = ("passed", "experimental")


@dataclass(frozen=True, slots=True)
class GateRecord:
    """The ``[gate]`` table: the status, and how many of the gate's checks passed at shipped settings."""

    status: str
    passed: int
    checks: int
    failed: tuple[str, ...] = ()

    @property
    def experimental(self) -> bool:
        return self.status == "experimental"


@dataclass(frozen=True, slots=True)
class Manifest:
    name: str
    family: str
    kind: str
    version: str
    description: str
    representation: Mapping[str, Any]
    graphs: Mapping[str, GraphSpec]
    parameters: Mapping[str, ParameterSpec]
    files: Mapping[str, str]
    training: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    seed_phrase: str | None = None
    gate: GateRecord | None = None


class _Reader:
    """Typed access to a TOML table that names the offending field on failure."""

    def __init__(self, path: Path, table: Mapping[str, Any], where: str = "") -> None:
        self.path, self.table, self.where = path, table, where

    def fail(self, key: str, expected: str, got: object = None) -> PackageError:
        field_name = f"{self.where}{key}"
        got_text = "" if got is None else f", got {got!r}"
        return PackageError(f"{self.path}: field '{field_name}': expected {expected}{got_text}")

    def get(self, key: str, kind: type | tuple[type, ...], expected: str, *, required: bool = True) -> Any:
        if key not in self.table:
            if required:
                raise self.fail(key, f"{expected} (the field is missing)")
            return None
        value = self.table[key]
        if not isinstance(value, kind) or isinstance(value, bool):  # TOML true is not a number
            raise self.fail(key, expected, value)
        return value

    def sub(self, key: str, *, required: bool = True) -> _Reader:
        value = self.get(key, dict, "a table", required=required)
        return _Reader(self.path, value or {}, f"{self.where}{key}.")


def _tensors(r: _Reader, key: str) -> tuple[TensorSpec, ...]:
    items = r.get(key, list, "a list of {name, shape, dtype} tables")
    specs = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise r.fail(f"{key}[{i}]", "a table {name, shape, dtype}", item)
        t = _Reader(r.path, item, f"{r.where}{key}[{i}].")
        name = t.get("name", str, "a tensor name")
        shape = t.get("shape", list, "a list of dimensions (integers or names)")
        if not all(isinstance(d, int | str) and not isinstance(d, bool) for d in shape):
            raise t.fail("shape", "integers for fixed dimensions and strings for dynamic ones", shape)
        fixed = [d for d in shape if isinstance(d, int)]
        if not all(1 <= d <= MAX_DIM for d in fixed):
            raise t.fail("shape", f"fixed dimensions from 1 to {MAX_DIM}", shape)
        if math.prod(fixed) > MAX_ELEMENTS:
            raise t.fail("shape", f"at most {MAX_ELEMENTS} elements in the fixed dimensions", shape)
        dtype = t.get("dtype", str, f"one of {', '.join(DTYPES)}")
        if dtype not in DTYPES:
            raise t.fail("dtype", f"one of {', '.join(DTYPES)}", dtype)
        specs.append(TensorSpec(name, tuple(shape), dtype))
    return tuple(specs)


def _graph(r: _Reader, role: str) -> GraphSpec:
    g = r.sub(role)
    file = g.get("file", str, "a file name inside the package, e.g. 'model.onnx'")
    inputs = _tensors(g, "inputs")
    outputs = _tensors(g, "outputs")
    state = []
    for i, pair in enumerate(g.get("state", list, "a list of {input, output} tables", required=False) or []):
        if not isinstance(pair, dict):
            raise g.fail(f"state[{i}]", "a table {input, output}", pair)
        p = _Reader(r.path, pair, f"{g.where}state[{i}].")
        state.append((p.get("input", str, "an input name"), p.get("output", str, "an output name")))
    in_names = {t.name for t in inputs}
    out_names = {t.name for t in outputs}
    for i, (src, dst) in enumerate(state):
        if src not in in_names:
            raise g.fail(f"state[{i}].input", f"one of the graph's inputs {sorted(in_names)}", src)
        if dst not in out_names:
            raise g.fail(f"state[{i}].output", f"one of the graph's outputs {sorted(out_names)}", dst)
    return GraphSpec(role, file, inputs, outputs, tuple(state))


def _read_bounded(path: Path) -> str:
    """The manifest's text: a regular file of at most :data:`MAX_MANIFEST_BYTES` (a FIFO is
    refused without waiting for a writer, a device without reading it)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PackageError(f"{path}: the manifest is not a regular file (a FIFO, device or folder); refused")
        chunks, size = [], 0
        while size <= MAX_MANIFEST_BYTES:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > MAX_MANIFEST_BYTES:
        raise PackageError(f"{path}: the manifest holds more than {MAX_MANIFEST_BYTES >> 10} KiB; refused")
    return b"".join(chunks).decode("utf-8")


def _check_input_bytes(r: _Reader, graphs: Mapping[str, GraphSpec]) -> None:
    total = sum(
        math.prod(d if isinstance(d, int) else 1 for d in t.shape) * _ITEMSIZE[t.dtype]
        for graph in graphs.values()
        for t in graph.inputs
    )
    if total > MAX_INPUT_BYTES:
        raise r.fail(
            "graphs",
            f"inputs of at most {MAX_INPUT_BYTES >> 20} MiB in all (dynamic dimensions counted as 1); "
            f"these hold {total} bytes",
        )


def parse_manifest(path: Path) -> Manifest:
    """Parse and validate ``path`` (a ``livegen.toml``); raises :class:`PackageError`."""
    try:
        table = tomllib.loads(_read_bounded(path))
    except FileNotFoundError as err:
        raise PackageError(f"{path}: the manifest is missing; a model package folder holds {MANIFEST}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise PackageError(f"{path}: cannot read the manifest ({err})") from err
    except tomllib.TOMLDecodeError as err:
        raise PackageError(f"{path}: not valid TOML ({err})") from err
    except RecursionError as err:  # tomllib recurses once per level of nesting
        raise PackageError(f"{path}: not valid TOML (tables or arrays nested too deeply)") from err
    r = _Reader(path, table)
    schema = r.get("schema", int, f"the integer {SCHEMA_VERSION}")
    if schema != SCHEMA_VERSION:
        raise r.fail("schema", f"{SCHEMA_VERSION} (this livegen reads schema {SCHEMA_VERSION})", schema)
    name = r.get("name", str, "a name of lowercase letters, digits and dashes")
    if not _NAME.fullmatch(name):
        raise r.fail("name", "lowercase letters, digits and dashes", name)
    kind = r.get("kind", str, f"one of {', '.join(KINDS)}")
    if kind not in KINDS:
        raise r.fail("kind", f"one of {', '.join(KINDS)}", kind)
    graphs_r = r.sub("graphs")
    if not graphs_r.table:
        raise r.fail("graphs", "at least one [graphs.NAME] table")
    graphs = {role: _graph(graphs_r, role) for role in graphs_r.table}
    _check_input_bytes(r, graphs)
    params_r = r.sub("parameters", required=False)
    parameters = {}
    for pname in params_r.table:
        p = params_r.sub(pname)
        number = (int, float)
        lo = float(p.get("min", number, "a number"))
        hi = float(p.get("max", number, "a number"))
        default = float(p.get("default", number, "a number"))
        if not lo <= default <= hi:
            raise p.fail("default", f"a number between min {lo} and max {hi}", default)
        parameters[pname] = ParameterSpec(pname, default, lo, hi)
    files_r = r.sub("files")
    files = {}
    for fname in files_r.table:
        digest = files_r.get(fname, str, "'sha256:' followed by 64 hex digits")
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise files_r.fail(fname, "'sha256:' followed by 64 lowercase hex digits", digest)
        files[fname] = digest
    metrics_r = r.sub("metrics", required=False)
    metrics = {k: float(metrics_r.get(k, (int, float), "a number")) for k in metrics_r.table}
    seed_phrase = r.get("seed_phrase", str, "a MIDI file name inside the package", required=False)
    for role, graph in graphs.items():
        if graph.file not in files:
            raise graphs_r.fail(f"{role}.file", f"a file listed in [files] ({sorted(files)})", graph.file)
    if seed_phrase is not None and seed_phrase not in files:
        raise r.fail("seed_phrase", f"a file listed in [files] ({sorted(files)})", seed_phrase)
    return Manifest(
        name=name,
        family=r.get("family", str, "a family id such as 'midirnn'"),
        kind=kind,
        version=r.get("version", str, "a version string such as '1.0.0'"),
        description=r.get("description", str, "a one-line description", required=False) or "",
        representation=r.sub("representation").table,
        graphs=graphs,
        parameters=parameters,
        files=files,
        training=r.sub("training", required=False).table,
        metrics=metrics,
        seed_phrase=seed_phrase,
        gate=_gate_record(r),
    )


def _gate_record(r: _Reader) -> GateRecord | None:
    if "gate" not in r.table:
        return None
    g = r.sub("gate")
    status = g.get("status", str, " or ".join(GATE_STATUSES))
    if status not in GATE_STATUSES:
        raise g.fail("status", " or ".join(GATE_STATUSES), status)
    passed = g.get("passed", int, "the number of checks that passed")
    checks = g.get("checks", int, "the number of checks")
    if not 0 <= passed <= checks:
        raise g.fail("passed", f"0 to checks ({checks})", passed)
    failed = g.get("failed", list, "a list of the failed checks' names", required=False) or []
    if not all(isinstance(x, str) for x in failed):
        raise g.fail("failed", "a list of strings", failed)
    return GateRecord(status, passed, checks, tuple(failed))
