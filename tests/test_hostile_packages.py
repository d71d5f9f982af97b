"""Crafted, hostile model packages (issue 8, item 5): each is refused by a PackageError
that names the problem, and nothing outside the package folder is opened.

"Opened" is watched twice: Python's ``open``/``os.open`` are recorded, and the file
outside is a FIFO, which onnx's or onnxruntime's C++ code could not open without a
writer (so the watcher thread sees any reader, from any language, at once).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import tomli_w
from onnx import TensorProto, helper

from livegen.errors import PackageError
from livegen.models.manifest import MAX_DIM
from livegen.models.package import load_package, sha256_of
from tests.pkgfactory import write_package

WEIGHTS = "weights.bin"
_OS_OPEN = os.open  # the watcher's own opens are not recorded


def _externalize(folder: Path, tensor_name: str, location: str, *, dims: list[int] | None = None) -> bytes:
    """Move initializer ``tensor_name`` of the package's graph to external data at ``location``
    (as written in the graph); returns the tensor's bytes. The manifest is not updated."""
    model = onnx.load(str(folder / "model.onnx"))
    tensor = next(t for t in model.graph.initializer if t.name == tensor_name)
    raw = onnx.numpy_helper.to_array(tensor).astype(np.float32).tobytes()
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    if dims is not None:
        del tensor.dims[:]
        tensor.dims.extend(dims)
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(folder / "model.onnx"))
    return raw


def _relist(folder: Path, *, extra: dict[str, str] | None = None, mutate: Callable[[dict], None] | None = None) -> None:
    """Recompute [files] of the package's manifest (the crafted package is checksummed correctly)."""
    import tomllib

    table = tomllib.loads((folder / "livegen.toml").read_text())
    table["files"] = {name: sha256_of(folder / name) for name in table["files"]} | (extra or {})
    if mutate is not None:
        mutate(table)
    (folder / "livegen.toml").write_text(tomli_w.dumps(table))


class _Watch:
    """Records every path Python opens, and whether anything opened the outside FIFO."""

    def __init__(self, fifo: Path) -> None:
        self.fifo = fifo
        self.paths: list[str] = []
        self.fifo_opened = False
        self._stop = threading.Event()

    def _watch_fifo(self) -> None:
        while not self._stop.is_set():
            try:  # succeeds only while a reader has the FIFO open
                fd = _OS_OPEN(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as err:
                assert err.errno == errno.ENXIO
                self._stop.wait(0.0005)
                continue
            self.fifo_opened = True
            os.close(fd)  # the reader sees end of file and goes on
            return

    @contextlib.contextmanager
    def running(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Watch]:
        real_open, real_os_open = builtins.open, os.open

        def recording_open(file, *args, **kwargs):  # type: ignore[no-untyped-def]
            if isinstance(file, str | bytes | os.PathLike):
                self.paths.append(os.fsdecode(file))
            return real_open(file, *args, **kwargs)

        def recording_os_open(path, *args, **kwargs):  # type: ignore[no-untyped-def]
            self.paths.append(os.fsdecode(path))
            return real_os_open(path, *args, **kwargs)

        thread = threading.Thread(target=self._watch_fifo, daemon=True)
        thread.start()
        with monkeypatch.context() as patch:
            patch.setattr(builtins, "open", recording_open)
            patch.setattr(os, "open", recording_os_open)
            try:
                yield self
            finally:
                self._stop.set()
        thread.join(1.0)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the package holding a FIFO named like the weights."""
    folder = tmp_path / "outside"
    folder.mkdir()
    os.mkfifo(folder / WEIGHTS)
    return folder


def _refused(package: Path, outside: Path, monkeypatch: pytest.MonkeyPatch, *patterns: str) -> str:
    with _Watch(outside / WEIGHTS).running(monkeypatch) as watch, pytest.raises(PackageError) as caught:
        load_package(package)
    message = str(caught.value)
    for pattern in patterns:
        assert pattern in message, message
    assert not watch.fifo_opened, "a file outside the package was opened"
    package_dir = str(package.resolve())
    strays = [p for p in watch.paths if not str(Path(p).resolve()).startswith(package_dir)]
    assert not [p for p in strays if str(outside) in p or str(outside.resolve()) in p], strays
    return message


def test_the_watch_sees_an_outside_open(outside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The FIFO watcher itself works: a reader of the outside file is seen."""
    watch = _Watch(outside / WEIGHTS)
    with watch.running(monkeypatch), open(outside / WEIGHTS, "rb") as fh:
        fh.read()
    assert watch.fifo_opened and str(outside / WEIGHTS) in watch.paths


def test_external_data_up_and_out_by_dotdot(tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = write_package(tmp_path / "pkg")
    _externalize(package, "Wp", f"../outside/{WEIGHTS}")
    _relist(package)
    _refused(package, outside, monkeypatch, "external data of tensor 'Wp'", "must be a plain path inside the package")


def test_external_data_at_an_absolute_path(tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = write_package(tmp_path / "pkg")
    _externalize(package, "Wp", str(outside / WEIGHTS))
    _relist(package)
    _refused(package, outside, monkeypatch, "external data of tensor 'Wp'", "must be a plain path inside the package")


def test_external_data_through_a_symlink_out(tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = write_package(tmp_path / "pkg")
    _externalize(package, "Wp", WEIGHTS)
    os.symlink(outside / WEIGHTS, package / WEIGHTS)
    _relist(package)
    _refused(package, outside, monkeypatch, f"{package / WEIGHTS}: external data of tensor 'Wp' points outside")


def test_listed_file_that_is_a_symlink_out(tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = write_package(tmp_path / "pkg")
    os.symlink(outside / WEIGHTS, package / WEIGHTS)
    _relist(package, extra={WEIGHTS: "sha256:" + "0" * 64})
    _refused(package, outside, monkeypatch, f"{package / WEIGHTS}: file points outside the package folder")


def test_manifest_that_is_a_symlink_out(tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = write_package(tmp_path / "pkg")
    (package / "livegen.toml").unlink()
    os.symlink(outside / WEIGHTS, package / "livegen.toml")
    _refused(package, outside, monkeypatch, "the manifest points outside the package folder")


def test_graph_file_out_by_dotdot(tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = write_package(tmp_path / "pkg")

    def mutate(table: dict) -> None:
        table["graphs"]["step"]["file"] = f"../outside/{WEIGHTS}"
        table["files"][f"../outside/{WEIGHTS}"] = "sha256:" + "0" * 64

    _relist(package, mutate=mutate)
    _refused(package, outside, monkeypatch, f"'../outside/{WEIGHTS}' must be a plain path inside the package")


def test_external_data_checksum_mismatch(tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = write_package(tmp_path / "pkg")
    raw = _externalize(package, "Wp", WEIGHTS)
    (package / WEIGHTS).write_bytes(raw)
    _relist(package, extra={WEIGHTS: sha256_of(package / WEIGHTS)})
    assert load_package(package).name == "test-rnn"  # externalized honestly, it loads
    (package / WEIGHTS).write_bytes(raw[:-4] + b"\0\0\0\0")
    _refused(package, outside, monkeypatch, f"{package / WEIGHTS}: checksum mismatch")


def test_graph_checksum_mismatch(tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = write_package(tmp_path / "pkg")
    data = bytearray((package / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (package / "model.onnx").write_bytes(bytes(data))
    _refused(package, outside, monkeypatch, f"{package / 'model.onnx'}: checksum mismatch")


def test_external_data_not_listed_in_files(tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = write_package(tmp_path / "pkg")
    (package / WEIGHTS).write_bytes(_externalize(package, "Wp", WEIGHTS))
    _relist(package)
    _refused(package, outside, monkeypatch, f"external data of tensor 'Wp' is in '{WEIGHTS}', which [files]")


def test_external_tensor_with_huge_declared_dimensions(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = write_package(tmp_path / "pkg")
    raw = _externalize(package, "Wp", WEIGHTS, dims=[1 << 20, 1 << 20])
    (package / WEIGHTS).write_bytes(raw)
    _relist(package, extra={WEIGHTS: sha256_of(package / WEIGHTS)})
    _refused(
        package,
        outside,
        monkeypatch,
        "external data of tensor 'Wp' declares dimensions [1048576, 1048576] (4398046511104 bytes",
        f"but '{WEIGHTS}' holds {len(raw)} bytes",
    )


@pytest.mark.parametrize("dim", [MAX_DIM + 1, 1 << 40, 0, -3])
def test_manifest_with_huge_or_empty_dimensions(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch, dim: int
) -> None:
    def mutate(table: dict) -> None:
        table["graphs"]["step"]["inputs"][0]["shape"] = [dim, 3]

    package = write_package(tmp_path / "pkg", mutate=mutate)
    _refused(package, outside, monkeypatch, "field 'graphs.step.inputs[0].shape': expected fixed dimensions from 1 to")


def test_manifest_with_too_many_elements(tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def mutate(table: dict) -> None:
        table["graphs"]["step"]["inputs"][0]["shape"] = [MAX_DIM, MAX_DIM, 3]

    package = write_package(tmp_path / "pkg", mutate=mutate)
    _refused(package, outside, monkeypatch, "field 'graphs.step.inputs[0].shape': expected at most")


def test_graph_with_a_huge_fixed_input(tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph input of 2**40 fixed elements, the manifest saying 'batch': no zeros of that size."""
    package = write_package(tmp_path / "pkg")
    model = onnx.load(str(package / "model.onnx"))
    note = model.graph.input[0]
    note.type.tensor_type.shape.dim[0].ClearField("dim_param")
    note.type.tensor_type.shape.dim[0].dim_value = 1 << 40
    onnx.save(model, str(package / "model.onnx"))
    _relist(package)
    _refused(package, outside, monkeypatch, str(package / "model.onnx"))


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (lambda ins: ins.append({"name": "extra", "shape": ["batch", 1], "dtype": "float32"}), "but the graph has"),
        (lambda ins: ins.pop(), "but the graph has"),
        (lambda ins: ins[0].update(name="notes"), "but the graph has"),
        (lambda ins: ins[0].update(dtype="int64"), "tensor 'note' is tensor(float) in the graph, manifest says int64"),
        (lambda ins: ins[0].update(shape=["batch", 3, 1]), "tensor 'note' has rank 2 in the graph"),
        (lambda ins: ins[0].update(shape=["batch", 4]), "tensor 'note' has shape"),
    ],
)
def test_graph_inputs_that_differ_from_the_manifest(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch, change: Callable[[list], None], pattern: str
) -> None:
    def mutate(table: dict) -> None:
        table["graphs"]["step"]["state"] = []
        change(table["graphs"]["step"]["inputs"])

    package = write_package(tmp_path / "pkg", mutate=mutate)
    _refused(package, outside, monkeypatch, str(package / "model.onnx"), pattern)


def test_graph_whose_declared_inputs_differ_from_its_nodes(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The graph's own input list renamed (its nodes still read 'note'): onnx refuses it."""
    package = write_package(tmp_path / "pkg")
    model = onnx.load(str(package / "model.onnx"))
    model.graph.input[0].CopyFrom(helper.make_tensor_value_info("notes", TensorProto.FLOAT, ["batch", 3]))
    onnx.save(model, str(package / "model.onnx"))
    _relist(package)
    _refused(package, outside, monkeypatch, str(package / "model.onnx"))
