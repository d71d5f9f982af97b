"""No code from the working directory runs in a child livegen starts.

A jam's working directory may hold anything (an installation's shared folder, a download):
a ``tomllib.py``, ``multiprocessing.py`` or ``rtmidi.py`` there must never be imported by the
children livegen starts: the verification of a swapped-in model, the inference worker (and
multiprocessing's resource tracker), the JACK probe. Each planted module writes a marker
file when imported; none may appear.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from livegen.engine.worker import PlannerWorker
from livegen.io import jack
from livegen.models.trial import verify_in_child
from tests import worker_planners
from tests.pkgfactory import write_package


def _plant(folder: Path, module: str) -> Path:
    """A ``module``.py in ``folder`` that leaves ``folder/module.ran`` when imported, then fails."""
    marker = folder / f"{module}.ran"
    (folder / f"{module}.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported from the working directory')\n"
        "raise ImportError('planted module')\n"
    )
    return marker


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cwd"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def test_a_model_verified_in_a_child_imports_nothing_from_the_working_directory(tmp_path: Path, cwd: Path) -> None:
    markers = [_plant(cwd, m) for m in ("tomllib", "numpy", "onnx")]
    verify_in_child(write_package(tmp_path / "pkg"))  # passes: the real modules were imported
    assert not [m for m in markers if m.exists()]


def test_the_inference_worker_imports_nothing_from_the_working_directory(cwd: Path) -> None:
    markers = [_plant(cwd, m) for m in ("multiprocessing", "tomllib")]
    worker = PlannerWorker(worker_planners.chords)
    try:
        worker.start()
        assert worker.pid is not None
    finally:
        worker.close()
    assert not [m for m in markers if m.exists()]


def test_the_jack_probe_imports_nothing_from_the_working_directory(cwd: Path) -> None:
    marker = _plant(cwd, "rtmidi")
    jack.probe_server(timeout=10)  # whatever it finds: no server here, or one
    assert not marker.exists()
