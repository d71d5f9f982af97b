"""Crafted, hostile model packages: each is refused by a PackageError that names the
problem, within a bounded time and memory, and nothing outside the package folder is
opened; a zipped package leaves no folder behind.

"Opened" is watched twice: Python's ``open``/``os.open`` are recorded, and the file
outside is a FIFO, which onnx's or onnxruntime's C++ code could not open without a
writer (so the watcher thread sees any reader, from any language, at once).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import gc
import os
import stat
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import tomli_w
from onnx import TensorProto, helper

from livegen.errors import PackageError
from livegen.models import package as package_module
from livegen.models.manifest import MAX_DIM, MAX_MANIFEST_BYTES
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


# ---- refused by name within bounded time and memory; nothing left behind -------------------


def _load_in_child(package: Path, seconds: float = 30) -> tuple[int | None, str, float]:
    """load_package(``package``) in a child limited to 1 GiB of address space and ``seconds``:
    (its exit status, or None when it ran out of time; its stderr; seconds taken)."""
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from livegen.models.package import load_package\n"
        "load_package(sys.argv[1])\n"
    )
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, str(package)], capture_output=True, text=True, timeout=seconds
        )
    except subprocess.TimeoutExpired as err:
        return None, (err.stderr or b"").decode(errors="replace"), time.monotonic() - started
    return done.returncode, done.stderr, time.monotonic() - started


def test_external_data_beside_a_graph_in_a_subfolder_is_where_it_is_checked(tmp_path: Path) -> None:
    """onnx reads external data beside its graph: for a graph in ``graphs/``, location
    'weights.bin' is ``graphs/weights.bin``. That file is the one [files] must list; a
    same-named file at the package root, listed and honest, does not vouch for it."""
    package = write_package(tmp_path / "pkg")
    raw = _externalize(package, "Wp", WEIGHTS)
    (package / "graphs").mkdir()
    (package / "model.onnx").rename(package / "graphs" / "model.onnx")
    (package / WEIGHTS).write_bytes(raw)  # honest, listed
    (package / "graphs" / WEIGHTS).write_bytes(b"\x7f\x7f\x7f\x7f" * (len(raw) // 4))  # what onnx reads

    def listing(*names: str) -> None:
        table = tomllib.loads((package / "livegen.toml").read_text())
        table["graphs"]["step"]["file"] = "graphs/model.onnx"
        table["files"] = {name: sha256_of(package / name) for name in ("README.md", "seed.mid", *names)}
        (package / "livegen.toml").write_text(tomli_w.dumps(table))

    listing("graphs/model.onnx", WEIGHTS)
    with pytest.raises(PackageError, match=f"external data of tensor 'Wp' is in 'graphs/{WEIGHTS}', which"):
        load_package(package)
    (package / "graphs" / WEIGHTS).write_bytes(raw)
    listing("graphs/model.onnx", f"graphs/{WEIGHTS}")  # listed where onnx reads it, it loads
    assert load_package(package).name == "test-rnn"


def test_a_manifest_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    package = write_package(tmp_path / "pkg")
    (package / "livegen.toml").unlink()
    os.mkfifo(package / "livegen.toml")
    status, stderr, took = _load_in_child(package)
    assert status == 1 and f"{package / 'livegen.toml'}: the manifest is not a regular file" in stderr, stderr
    assert took < 20


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node (mknod) needs root")
def test_a_manifest_that_is_a_device_is_refused_without_reading_it(tmp_path: Path) -> None:
    package = write_package(tmp_path / "pkg")
    (package / "livegen.toml").unlink()
    os.mknod(package / "livegen.toml", stat.S_IFCHR | 0o644, os.makedev(1, 5))  # /dev/zero's numbers
    status, stderr, took = _load_in_child(package)
    assert status == 1 and "the manifest is not a regular file" in stderr, stderr
    assert took < 20


def test_a_manifest_over_its_size_limit_is_refused(tmp_path: Path) -> None:
    package = write_package(tmp_path / "pkg")
    with (package / "livegen.toml").open("a") as manifest:
        manifest.write("# padding\n" * (MAX_MANIFEST_BYTES // 10 + 1))
    with pytest.raises(PackageError, match="the manifest holds more than 1024 KiB"):
        load_package(package)


def _zipped(package: Path, archive: Path, extra: Path | None = None) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(package.rglob("*")):
            z.write(path, path.relative_to(package.parent))
        if extra is not None:
            with z.open(f"{package.name}/padding.bin", "w", force_zip64=True) as member:
                for _ in range(extra.stat().st_size >> 20):
                    member.write(bytes(1 << 20))
    return archive


def test_a_zip_bomb_is_refused_before_anything_is_extracted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A zip whose members would extract to more than MAX_PACKAGE_BYTES (lowered here to 8 MiB;
    the bomb is 64 MiB of zeros in 64 KiB) is refused by its declared sizes, and nothing is
    extracted."""
    monkeypatch.setattr(package_module, "MAX_PACKAGE_BYTES", 8 << 20)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    size = tmp_path / "size"
    size.write_bytes(b"")
    os.truncate(size, 64 << 20)
    archive = _zipped(write_package(tmp_path / "pkg"), tmp_path / "bomb.zip", extra=size)
    assert archive.stat().st_size < 1 << 20
    with pytest.raises(PackageError, match=r"bomb\.zip: its members would extract to \d+ bytes; a package holds at"):
        load_package(archive)
    assert not list(scratch.iterdir())


def test_the_trial_inputs_have_a_total_size_limit(tmp_path: Path) -> None:
    """Two inputs of 64 MiB each (each at the per-tensor limit): the trial would feed 128 MiB
    of zeros; the manifest is refused by name instead."""

    def mutate(table: dict) -> None:
        table["graphs"]["step"]["inputs"][1]["shape"] = [1, 4096, 4096]
        table["graphs"]["step"]["inputs"][2]["shape"] = [1, 4096, 4096]

    package = write_package(tmp_path / "pkg", mutate=mutate)
    with pytest.raises(PackageError, match="field 'graphs': expected inputs of at most 64 MiB in all"):
        load_package(package)


def _extractions(folder: Path) -> list[Path]:
    return sorted(folder.glob("livegen-pkg-*"))


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary folder of this process and of the children it starts."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setenv("TMPDIR", str(folder))
    return folder


def test_a_zipped_package_is_removed_with_the_package_and_after_a_kill(tmp_path: Path, scratch: Path) -> None:
    archive = _zipped(write_package(tmp_path / "pkg"), tmp_path / "pkg.zip")
    package = load_package(archive)
    assert package.folder.is_relative_to(scratch) and (package.folder / "model.onnx").is_file()
    assert len(_extractions(scratch)) == 1
    del package
    gc.collect()
    assert _extractions(scratch) == []
    # a process killed before it could remove its extraction: the next one removes it
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys; from livegen.models.package import load_package; "
            "kept = load_package(sys.argv[1]); os.kill(os.getpid(), 9)",
            str(archive),
        ],
        capture_output=True,
    )
    assert killed.returncode == -9 and len(_extractions(scratch)) == 1
    package = load_package(archive)
    assert _extractions(scratch) == [next(p for p in (package.folder, *package.folder.parents) if p.parent == scratch)]


def test_a_jam_and_its_model_swaps_leave_no_folder_behind(tmp_path: Path, scratch: Path) -> None:
    """A zipped model played in-process and in the inference worker, and swapped to and fro
    during the play: every extraction (the jam's, the worker's, each verification's, each
    swap's) is gone when the jam has ended."""
    from livegen.engine.config import JamConfig
    from livegen.engine.jam import run_jam
    from livegen.models.registry import load_generator

    first = _zipped(write_package(tmp_path / "a"), tmp_path / "a.zip")
    second = _zipped(write_package(tmp_path / "b", seed=1), tmp_path / "b.zip")
    for worker in (False, True):
        config = JamConfig(
            model=str(first),
            mode="autonomous",
            outputs=("none",),
            max_seconds=2,
            commands=False,
            out_dir=tmp_path / "out",
            worker=worker,
        )
        run_jam(config)
        gc.collect()
        assert _extractions(scratch) == [], worker
    swapped = [load_generator(str(p), checked_in_child=True)[1] for p in (first, second, first)]
    assert len(_extractions(scratch)) == 3
    del swapped
    gc.collect()
    assert _extractions(scratch) == []
