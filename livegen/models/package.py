"""Loading and verifying model packages, and opening their onnxruntime sessions.

Context: setup. Every failure is a :class:`~livegen.errors.PackageError` that
names the file and the field. Nothing outside the package folder is opened:
paths in the manifest and external tensor data are resolved and checked first.
The checks, in order, are listed in ``docs/model-package.md``; :mod:`livegen.models.trial`
runs them, and the adapter's play of the seed phrase, in a bounded child process.

A zipped package is extracted, within :data:`MAX_PACKAGE_BYTES`, into a temporary
folder named after the process (``livegen-pkg-PID-*``). The folder goes with the
:class:`ModelPackage` (when it is dropped, as a swapped-out model is, and at exit);
one left by a process that was killed is removed by the next extraction or
:func:`remove_orphaned_extractions`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import shutil
import stat
import tempfile
import weakref
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from livegen.errors import InferenceSkipped, PackageError
from livegen.models.budget import BudgetedSession, use_memory_budget
from livegen.models.manifest import MANIFEST, GraphSpec, Manifest, TensorSpec, parse_manifest

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

_ORT_TYPES = {"float32": "tensor(float)", "int64": "tensor(int64)"}
_NP_TYPES = {"float32": np.float32, "int64": np.int64}
#: The most a package's files (listed in [files], or the members of its .zip) may hold, bytes.
MAX_PACKAGE_BYTES = 1 << 30
#: The most members a zipped package may have.
MAX_ZIP_MEMBERS = 1000
_EXTRACTED = "livegen-pkg-"


@dataclass(frozen=True, slots=True, weakref_slot=True)
class ModelPackage:
    """A verified package: its folder, manifest and one inference session per graph."""

    folder: Path
    manifest: Manifest
    sessions: Mapping[str, BudgetedSession] = field(default_factory=dict)

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
    paths = {name: _inside(folder, name, "file") for name in manifest.files}
    total = 0
    for path in paths.values():
        try:
            info = path.stat()
        except FileNotFoundError:
            raise PackageError(f"{path}: listed in [files] of {MANIFEST} but missing from the package") from None
        if not stat.S_ISREG(info.st_mode):
            raise PackageError(f"{path}: listed in [files] of {MANIFEST} but not a regular file (a FIFO or device?)")
        total += info.st_size
    if total > MAX_PACKAGE_BYTES:
        raise PackageError(
            f"{folder}: the files listed in [files] of {MANIFEST} hold {total} bytes; "
            f"a package holds at most {MAX_PACKAGE_BYTES >> 20} MiB"
        )
    for name, path in paths.items():
        expected, actual = manifest.files[name], sha256_of(path)
        if actual != expected:
            raise PackageError(
                f"{path}: checksum mismatch (the file changed after export): [files] says {expected}, "
                f"the file hashes to {actual}"
            )


def _check_external(folder: Path, graph_file: str, manifest: Manifest, tensor: onnx.TensorProto) -> None:
    """Refuse external data of ``tensor`` that leaves the package, is not checksummed in
    [files], or is smaller than the tensor's declared dimensions need; opens nothing.

    Its location is relative to the graph's own folder, as onnx and onnxruntime read it.
    """
    path = folder / graph_file
    info = {e.key: e.value for e in tensor.external_data}
    what = f"external data of tensor {tensor.name!r}"
    location = info.get("location", "")
    _inside(folder, location, what)  # a plain relative path
    relative = (Path(graph_file).parent / location).as_posix()
    data = _inside(folder, relative, what)
    if not any(Path(relative) == Path(name) for name in manifest.files):
        raise PackageError(
            f"{path}: {what} is in {relative!r}, which [files] of {MANIFEST} does not list; "
            "list it there with its sha256 so it is verified"
        )
    import onnx.helper

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
            f"{'' if length is None else f', length {length}'}), but {relative!r} holds {size} bytes"
        )


def _check_onnx(folder: Path, graph_file: str, manifest: Manifest) -> onnx.ModelProto:
    """``onnx`` is imported here, not with the module: a jam's packages are checked in a child
    (:mod:`livegen.models.trial`), and importing it would add about 0.4 s to the jam's start."""
    import onnx
    import onnx.checker
    import onnx.external_data_helper

    path = folder / graph_file
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf raises DecodeError and others
        raise PackageError(f"{path}: not a readable ONNX model ({err})") from err
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            _check_external(folder, graph_file, manifest, tensor)
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


def _session(path: Path) -> BudgetedSession:
    options = ort.SessionOptions()
    # One thread: a step is microseconds of work and the second core belongs to the scheduler.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # All graph optimisations (onnxruntime's default, stated so it stays): measured in
    # benchmarks/engineering.py, none is 1.7-2.8 times slower per step, basic and
    # extended are within noise of all, and turning off the pool's spinning changes nothing.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    use_memory_budget(options)
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
        raise PackageError(f"{path}: onnxruntime cannot load the graph ({err})") from err
    return BudgetedSession(session, str(path))


def zero_feeds(graph: GraphSpec) -> dict[str, np.ndarray]:
    """Zero tensors for every input, dynamic dimensions set to 1."""
    return {
        t.name: np.zeros([d if isinstance(d, int) else 1 for d in t.shape], dtype=_NP_TYPES[t.dtype])
        for t in graph.inputs
    }


def _trial(path: Path, graph: GraphSpec, session: BudgetedSession) -> None:
    try:
        outputs = session.run([t.name for t in graph.outputs], zero_feeds(graph))
    except InferenceSkipped as err:
        raise PackageError(f"{path}: the trial inference on zeros failed: {err}") from err
    for spec, value in zip(graph.outputs, outputs, strict=True):
        fixed = [d if isinstance(d, int) else 1 for d in spec.shape]
        if list(value.shape) != fixed:
            raise PackageError(f"{path}: output {spec.name!r} came out {list(value.shape)}, manifest says {fixed}")


def _pid_of(extraction: Path) -> int | None:
    pid = extraction.name.removeprefix(_EXTRACTED).partition("-")[0]
    return int(pid) if pid.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphaned_extractions(base: Path | None = None) -> int:
    """Remove the extracted packages of processes that are gone (killed before they could);
    returns how many. ``base``: where they were extracted (the temporary folder)."""
    removed = 0
    for extraction in Path(base or tempfile.gettempdir()).glob(f"{_EXTRACTED}*"):
        pid = _pid_of(extraction)
        if pid is not None and pid != os.getpid() and not _alive(pid):
            shutil.rmtree(extraction, ignore_errors=True)
            removed += 1
    return removed


def _open_zip(path: Path, into: Path | None) -> tuple[Path, Path]:
    """Extract a zipped package into a private temporary folder, refusing unsafe members and
    more than :data:`MAX_PACKAGE_BYTES` or :data:`MAX_ZIP_MEMBERS`: (the package folder in it,
    the temporary folder, which the caller owns)."""
    remove_orphaned_extractions(into)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > MAX_ZIP_MEMBERS:
                raise PackageError(f"{path}: {len(members)} members; a zipped package holds at most {MAX_ZIP_MEMBERS}")
            total = sum(info.file_size for info in members)
            if total > MAX_PACKAGE_BYTES:
                raise PackageError(
                    f"{path}: its members would extract to {total} bytes; a package holds at most "
                    f"{MAX_PACKAGE_BYTES >> 20} MiB (refused before extracting)"
                )
            for info in members:
                is_symlink = (info.external_attr >> 16) & 0o170000 == 0o120000
                if Path(info.filename).is_absolute() or ".." in Path(info.filename).parts or is_symlink:
                    raise PackageError(f"{path}: member {info.filename!r} would land outside the package (refused)")
            target = Path(tempfile.mkdtemp(prefix=f"{_EXTRACTED}{os.getpid()}-", dir=into))
            try:
                archive.extractall(target)  # each member is cut at the size its header declares
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                raise
    except zipfile.BadZipFile as err:
        raise PackageError(f"{path}: not a valid .zip model package ({err})") from err
    manifests = list(target.rglob(MANIFEST))
    if len(manifests) != 1:
        shutil.rmtree(target, ignore_errors=True)
        raise PackageError(f"{path}: a zipped package holds exactly one {MANIFEST}, found {len(manifests)}")
    return manifests[0].parent, target


@contextlib.contextmanager
def _opened(path: Path, into: Path | None = None) -> Iterator[tuple[Path, Path | None]]:
    """(the package folder, the extraction to remove with the package or None); a failure inside
    removes the extraction at once."""
    extraction: Path | None
    if path.is_file() and path.suffix == ".zip":
        folder, extraction = _open_zip(path, into)
    elif path.is_dir():
        folder, extraction = path, None
    else:
        raise PackageError(f"{path}: no model package there; expected a folder holding {MANIFEST} or a .zip of one")
    try:
        yield folder, extraction
    except BaseException:
        if extraction is not None:
            shutil.rmtree(extraction, ignore_errors=True)
        raise


def _owning(package: ModelPackage, extraction: Path | None) -> ModelPackage:
    if extraction is not None:
        weakref.finalize(package, shutil.rmtree, extraction, ignore_errors=True)
    return package


def read_package(path: str | Path) -> ModelPackage:
    """The package at ``path`` with its manifest and file checksums verified, and no sessions opened.

    For a process that only needs to know the package (its name, parameters, seed), such as a
    jam whose model runs in an inference worker; the worker loads it with :func:`load_package`.
    """
    with _opened(Path(path)) as (folder, extraction):
        manifest = parse_manifest(_inside(folder, MANIFEST, "the manifest"))
        from livegen.models.registry import generator_class

        generator_class(manifest.family, where=folder / MANIFEST)
        _check_files(folder, manifest)
        return _owning(ModelPackage(folder=folder, manifest=manifest), extraction)


def load_package(
    path: str | Path, *, check_family: bool = True, check_graphs: bool = True, extract_into: Path | None = None
) -> ModelPackage:
    """Verify the package at ``path`` (a folder or .zip) and open its sessions.

    ``check_graphs=False`` skips ``onnx.checker`` (whose protobuf parsing holds the GIL
    for milliseconds); only for a package :func:`~livegen.models.trial.verify_in_child`
    checks, as a jam and a model swap do. Checksums, tensor names and the trial
    inference on zeros always run. ``extract_into``: where a .zip is extracted (default
    the temporary folder).
    """
    with _opened(Path(path), extract_into) as (folder, extraction):
        manifest = parse_manifest(_inside(folder, MANIFEST, "the manifest"))
        if check_family:
            from livegen.models.registry import generator_class

            generator_class(manifest.family, where=folder / MANIFEST)
        _check_files(folder, manifest)
        sessions = {}
        for role, graph in manifest.graphs.items():
            graph_path = _inside(folder, graph.file, f"graphs.{role}.file")
            if check_graphs:
                _check_onnx(folder, graph.file, manifest)
            session = _session(graph_path)
            _match_io(graph_path, f"graphs.{role}.inputs", graph.inputs, session.get_inputs())
            _match_io(graph_path, f"graphs.{role}.outputs", graph.outputs, session.get_outputs())
            _trial(graph_path, graph, session)
            sessions[role] = session
        log.debug("verified package %s at %s", manifest.name, folder)
        return _owning(ModelPackage(folder=folder, manifest=manifest, sessions=sessions), extraction)
