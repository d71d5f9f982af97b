"""Loading and verifying model packages, and opening their onnxruntime sessions.

Context: setup. Every failure is a :class:`~livegen.errors.PackageError` that
names the file and the field. Nothing outside the package folder is opened:
paths in the manifest and external tensor data are resolved and checked first.
The checks, in order, are listed in ``docs/model-package.md``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from livegen.errors import PackageError
from livegen.models.manifest import MANIFEST, GraphSpec, Manifest, TensorSpec, parse_manifest

log = logging.getLogger(__name__)

_ORT_TYPES = {"float32": "tensor(float)", "int64": "tensor(int64)"}
_NP_TYPES = {"float32": np.float32, "int64": np.int64}


@dataclass(frozen=True, slots=True)
class ModelPackage:
    """A verified package: its folder, manifest and one inference session per graph."""

    folder: Path
    manifest: Manifest
    sessions: Mapping[str, ort.InferenceSession]

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def seed_phrase(self) -> Path | None:
        return self.folder / self.manifest.seed_phrase if self.manifest.seed_phrase else None


def _inside(folder: Path, relative: str, what: str) -> Path:
    """Resolve ``relative`` in ``folder``, refusing anything that leaves it."""
    if not relative or Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise PackageError(f"{folder / MANIFEST}: {what} {relative!r} must be a plain path inside the package folder")
    candidate = folder / relative
    resolved = candidate.resolve()
    if not resolved.is_relative_to(folder.resolve()):
        raise PackageError(f"{candidate}: {what} points outside the package folder (symlink?)")
    return candidate


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _check_files(folder: Path, manifest: Manifest) -> None:
    for name, expected in manifest.files.items():
        path = _inside(folder, name, "file")
        if not path.is_file():
            raise PackageError(f"{path}: listed in [files] of {MANIFEST} but missing from the package")
        actual = sha256_of(path)
        if actual != expected:
            raise PackageError(
                f"{path}: checksum mismatch (the file changed after export): [files] says {expected}, "
                f"the file hashes to {actual}"
            )


def _check_external(folder: Path, path: Path, manifest: Manifest, tensor: onnx.TensorProto) -> None:
    """Refuse external data of ``tensor`` that leaves the package, is not checksummed in
    [files], or is smaller than the tensor's declared dimensions need; opens nothing."""
    info = {e.key: e.value for e in tensor.external_data}
    what = f"external data of tensor {tensor.name!r}"
    location = info.get("location", "")
    data = _inside(folder, location, what)
    if not any(Path(location) == Path(name) for name in manifest.files):
        raise PackageError(
            f"{path}: {what} is in {location!r}, which [files] of {MANIFEST} does not list; "
            "list it there with its sha256 so it is verified"
        )
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        offset, length = int(info.get("offset", "0")), int(info["length"]) if "length" in info else None
    except (KeyError, ValueError, TypeError) as err:
        raise PackageError(f"{path}: {what} has an unreadable type or offset/length ({err})") from err
    dims = list(tensor.dims)
    need = math.prod(dims) * itemsize
    size = data.stat().st_size
    if any(d < 0 for d in dims) or offset < 0 or offset + need > size or (length is not None and length != need):
        raise PackageError(
            f"{path}: {what} declares dimensions {dims} ({need} bytes from offset {offset}"
            f"{'' if length is None else f', length {length}'}), but {location!r} holds {size} bytes"
        )


def _check_onnx(folder: Path, path: Path, manifest: Manifest) -> onnx.ModelProto:
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf raises DecodeError and others
        raise PackageError(f"{path}: not a readable ONNX model ({err})") from err
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            _check_external(folder, path, manifest, tensor)
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as err:
        raise PackageError(f"{path}: onnx.checker rejects the graph: {str(err).splitlines()[0]}") from err
    return model


def _describe(spec: TensorSpec) -> str:
    return f"{spec.name} {spec.dtype}{list(spec.shape)}"


def _match_io(path: Path, field: str, declared: tuple[TensorSpec, ...], actual: list[ort.NodeArg]) -> None:
    by_name = {a.name: a for a in actual}
    if set(by_name) != {d.name for d in declared}:
        raise PackageError(
            f"{path}: field '{field}' of {MANIFEST} names {sorted(d.name for d in declared)}, "
            f"but the graph has {sorted(by_name)}"
        )
    for spec in declared:
        arg = by_name[spec.name]
        if arg.type != _ORT_TYPES[spec.dtype]:
            raise PackageError(f"{path}: tensor {spec.name!r} is {arg.type} in the graph, manifest says {spec.dtype}")
        if len(arg.shape) != len(spec.shape):
            raise PackageError(
                f"{path}: tensor {spec.name!r} has rank {len(arg.shape)} in the graph, manifest says {_describe(spec)}"
            )
        for want, have in zip(spec.shape, arg.shape, strict=True):
            if isinstance(want, int) and isinstance(have, int) and want != have:
                raise PackageError(
                    f"{path}: tensor {spec.name!r} has shape {arg.shape} in the graph, manifest says {_describe(spec)}"
                )


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # One thread: a step is microseconds of work and the second core belongs to the scheduler.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # All graph optimisations (onnxruntime's default, stated so it stays): measured in
    # benchmarks/engineering.py, none is 1.7-2.8 times slower per step, basic and
    # extended are within noise of all, and turning off the pool's spinning changes nothing.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
        raise PackageError(f"{path}: onnxruntime cannot load the graph ({err})") from err


def zero_feeds(graph: GraphSpec) -> dict[str, np.ndarray]:
    """Zero tensors for every input, dynamic dimensions set to 1."""
    return {
        t.name: np.zeros([d if isinstance(d, int) else 1 for d in t.shape], dtype=_NP_TYPES[t.dtype])
        for t in graph.inputs
    }


def _trial(path: Path, graph: GraphSpec, session: ort.InferenceSession) -> None:
    try:
        outputs = session.run([t.name for t in graph.outputs], zero_feeds(graph))
    except Exception as err:
        raise PackageError(f"{path}: the trial inference on zeros failed ({err})") from err
    for spec, value in zip(graph.outputs, outputs, strict=True):
        fixed = [d if isinstance(d, int) else 1 for d in spec.shape]
        if list(value.shape) != fixed:
            raise PackageError(f"{path}: output {spec.name!r} came out {list(value.shape)}, manifest says {fixed}")
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise PackageError(f"{path}: output {spec.name!r} is not finite on zero input")


def _open_zip(path: Path) -> Path:
    """Extract a zipped package into a private temporary folder, refusing unsafe members."""
    target = Path(tempfile.mkdtemp(prefix="livegen-pkg-"))
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            for info in members:
                is_symlink = (info.external_attr >> 16) & 0o170000 == 0o120000
                if Path(info.filename).is_absolute() or ".." in Path(info.filename).parts or is_symlink:
                    raise PackageError(f"{path}: member {info.filename!r} would land outside the package (refused)")
            archive.extractall(target)
    except zipfile.BadZipFile as err:
        raise PackageError(f"{path}: not a valid .zip model package ({err})") from err
    manifests = list(target.rglob(MANIFEST))
    if len(manifests) != 1:
        raise PackageError(f"{path}: a zipped package holds exactly one {MANIFEST}, found {len(manifests)}")
    return manifests[0].parent


def verify_in_child(path: str | Path, *, timeout: float = 120.0) -> None:
    """Run every check of :func:`load_package` on ``path`` in a child process.

    Context: a background thread during a performance (a model swap). onnx.checker
    holds the GIL while it parses, long enough to delay the scheduler's sends; in a
    child process it cannot. Raises :class:`PackageError` with the child's message.
    """
    code = "import sys\nfrom livegen.models.package import load_package\nload_package(sys.argv[1])"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise PackageError(f"{path}: could not be verified in a child process ({err})") from err
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        message = lines[-1].removeprefix("livegen.errors.PackageError: ")
        raise PackageError(message if str(path) in message else f"{path}: {message}")


def read_package(path: str | Path) -> ModelPackage:
    """The package at ``path`` with its manifest and file checksums verified, and no sessions opened.

    For a process that only needs to know the package (its name, parameters, seed), such as a
    jam whose model runs in an inference worker; the worker loads it with :func:`load_package`.
    """
    folder = _package_folder(Path(path))
    manifest = parse_manifest(_inside(folder, MANIFEST, "the manifest"))
    from livegen.models.registry import generator_class

    generator_class(manifest.family, where=folder / MANIFEST)
    _check_files(folder, manifest)
    return ModelPackage(folder=folder, manifest=manifest, sessions={})


def _package_folder(path: Path) -> Path:
    if path.is_file() and path.suffix == ".zip":
        return _open_zip(path)
    if path.is_dir():
        return path
    raise PackageError(f"{path}: no model package there; expected a folder holding {MANIFEST} or a .zip of one")


def load_package(path: str | Path, *, check_family: bool = True, check_graphs: bool = True) -> ModelPackage:
    """Verify the package at ``path`` (a folder or .zip) and open its sessions.

    ``check_graphs=False`` skips ``onnx.checker`` (whose protobuf parsing holds the GIL
    for milliseconds); only for a package :func:`verify_in_child` has just checked, as a
    model swap during a performance does. Checksums, tensor names and the trial
    inference always run.
    """
    folder = _package_folder(Path(path))
    manifest = parse_manifest(_inside(folder, MANIFEST, "the manifest"))
    if check_family:
        from livegen.models.registry import generator_class

        generator_class(manifest.family, where=folder / MANIFEST)
    _check_files(folder, manifest)
    sessions = {}
    for role, graph in manifest.graphs.items():
        graph_path = _inside(folder, graph.file, f"graphs.{role}.file")
        if check_graphs:
            _check_onnx(folder, graph_path, manifest)
        session = _session(graph_path)
        _match_io(graph_path, f"graphs.{role}.inputs", graph.inputs, session.get_inputs())
        _match_io(graph_path, f"graphs.{role}.outputs", graph.outputs, session.get_outputs())
        _trial(graph_path, graph, session)
        sessions[role] = session
    log.debug("verified package %s at %s", manifest.name, folder)
    return ModelPackage(folder=folder, manifest=manifest, sessions=sessions)
