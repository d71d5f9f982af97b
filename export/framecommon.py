"""What the ``frame`` families' training and export share: the training loop, checkpoints, parity, packages.

Context: setup (training and export; imports torch, never imported by the host).

Each family module (:mod:`export.deepmusician`, :mod:`export.multitrack`) says how a
corpus becomes frames, what its loss is and which graphs it exports; this module
runs the epochs with early stopping on validation, writes the checkpoint, and
assembles a package the way :mod:`export.package` does for ``midirnn``: in a
staging folder beside the destination, verified by the host's own loader and the
family's adapter before it replaces the destination.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import tomli_w
import torch

from export.errors import ExportError, ParityError
from export.package import NAME_PATTERN, seed_phrase
from export.train import CHECKPOINT, CHECKPOINT_FORMAT, load_checkpoint
from livegen.errors import PackageError
from livegen.io.corpus import Tune
from livegen.music.midifile import write_midi
from livegen.music.time import TempoMap

log = logging.getLogger(__name__)

OPSET = 18
PARITY_TOLERANCE = 1e-4
MANIFEST = "livegen.toml"
CARD = "README.md"
SEED = "seed.mid"
SEED_BPM = 120.0
FRAMES_PER_BEAT = 4


@dataclass(frozen=True, slots=True)
class FitResult:
    state: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    best_epoch: int
    best_loss: float
    seconds: float


def fit(
    model: torch.nn.Module,
    batches: Callable[[torch.Generator], Sequence[Any]],
    loss: Callable[[Any], torch.Tensor],
    validate: Callable[[], dict[str, float]],
    *,
    epochs: int,
    patience: int,
    learning_rate: float,
    seed: int,
    grad_clip: float = 1.0,
    label: str = "",
) -> FitResult:
    """Adam with gradient clipping; stop after ``patience`` epochs without a lower ``validate()["loss"]``."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    best, best_epoch, waited = math.inf, 0, 0
    best_state = copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        running, count = 0.0, 0
        for batch in batches(generator):
            value = loss(batch)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            running += float(value.detach())
            count += 1
        model.eval()
        with torch.no_grad():
            val = validate()
        seconds = time.perf_counter() - epoch_started
        history.append({"epoch": float(epoch), "train_loss": running / max(count, 1), **val, "seconds": seconds})
        if not math.isfinite(val["loss"]):
            raise ExportError(f"validation loss became {val['loss']} at epoch {epoch}; lower the learning rate")
        improved = val["loss"] < best - 1e-5
        if improved:
            best, best_epoch, waited = val["loss"], epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
        figures = ", ".join(f"{k} {v:.4g}" for k, v in val.items())
        log.info(
            "%sepoch %d: train %.4f, validation %s%s, %.1f s",
            label,
            epoch,
            running / max(count, 1),
            figures,
            " best" if improved else "",
            seconds,
        )
        if waited >= patience:
            log.info("validation loss has not improved for %d epochs; stopping", patience)
            break
    model.load_state_dict(best_state)
    return FitResult(best_state, history, best_epoch, best, time.perf_counter() - started)


def fingerprint(names: Sequence[str], arrays: Sequence[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode())
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def tune_sample(tunes: Sequence[Tune], count: int = 8, notes: int = 256) -> list[dict[str, Any]]:
    """A few tunes spread over ``tunes``, as plain lists (for ``torch.load(weights_only=True)``)."""
    eligible = [t for t in tunes if len(t) >= 16] or list(tunes)
    stride = max(1, len(eligible) // count)
    return [
        {
            "name": t.name,
            "pitch": [int(p) for p in t.pitch[:notes]],
            "onset": [float(x) for x in t.onset[:notes]],
            "duration": [float(x) for x in t.duration[:notes]],
        }
        for t in eligible[::stride][:count]
    ]


def sample_tunes(sample: Sequence[Mapping[str, Any]]) -> list[Tune]:
    return [
        Tune(
            name=str(item["name"]),
            pitch=np.asarray(item["pitch"], dtype=np.int16),
            onset=np.asarray(item["onset"], dtype=np.float32),
            duration=np.asarray(item["duration"], dtype=np.float32),
        )
        for item in sample
    ]


def save_checkpoint(out: Path, family: str, **fields: Any) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / CHECKPOINT
    tmp = path.with_name(path.name + ".part")
    torch.save({"format": CHECKPOINT_FORMAT, "family": family, **fields}, tmp)
    tmp.replace(path)
    return path


def read_checkpoint(path: Path, family: str) -> dict[str, Any]:
    checkpoint = load_checkpoint(path)
    if checkpoint.get("family") != family:
        raise ExportError(f"{path}: family {checkpoint.get('family')!r} is not {family!r}")
    return checkpoint


def export_graph(
    module: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    *,
    inputs: Sequence[str],
    outputs: Sequence[str],
    dynamic: Mapping[str, Mapping[int, Any]],
) -> None:
    """One graph with weights inside the file, checked by ``onnx.checker``."""
    noise = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(noise):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                example,
                str(path),
                input_names=list(inputs),
                output_names=list(outputs),
                opset_version=OPSET,
                dynamo=True,
                dynamic_shapes=dict(dynamic),
                external_data=False,
                verbose=False,
            )
    except Exception as err:  # the exporter raises many internal types
        raise ExportError(f"{path}: torch.onnx.export failed ({type(err).__name__}: {err})") from err
    onnx.checker.check_model(str(path), full_check=True)


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_parity(diff: float, what: str, tolerance: float = PARITY_TOLERANCE) -> None:
    if not diff <= tolerance:
        raise ParityError(
            f"{what}: parity check failed: the ONNX graphs differ from PyTorch (float64) by up to {diff:.3g} "
            f"(accepted: at most {tolerance:g}); the package was not written"
        )


def tensor(name: str, shape: Sequence[object]) -> dict[str, Any]:
    return {"name": name, "shape": shape, "dtype": "float32"}


def write_seed(path: Path, tunes: Sequence[Tune], pitch_min: int, pitch_max: int) -> str:
    """The package's seed phrase (about two bars of a held-out piece); returns the piece's name."""
    name, notes = seed_phrase(tunes, pitch_min, pitch_max)
    write_midi(path, {"seed": notes}, tempo=TempoMap.constant(SEED_BPM))
    return name


def write_package(
    out: Path,
    name: str,
    build: Callable[[Path], tuple[dict[str, Any], str]],
) -> Path:
    """Assemble a package: ``build(staging)`` writes the graphs and the seed phrase into ``staging`` and
    returns the manifest (without [files]) and the model card; every file gets its sha256, the host
    verifies the result with the family's adapter, and only then does it replace ``out``."""
    if not NAME_PATTERN.match(name):
        raise ExportError(f"package name {name!r}: expected lowercase letters, digits and dashes")
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out}: is a file; expected a folder for the model package")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ExportError(f"--out {out}: the folder is not empty and holds no {MANIFEST}; refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out.parent))
    try:
        manifest, card = build(staging)
        (staging / CARD).write_text(card, encoding="utf-8")
        files = sorted(p.name for p in staging.iterdir() if p.is_file())
        manifest["files"] = {f: "sha256:" + hashlib.sha256((staging / f).read_bytes()).hexdigest() for f in files}
        (staging / MANIFEST).write_bytes(tomli_w.dumps(manifest).encode("utf-8"))
        from livegen.models.package import load_package
        from livegen.models.registry import generator_class

        try:
            package = load_package(staging)
            generator_class(package.manifest.family)(package)
        except PackageError as err:
            raise ExportError(f"the written package fails the host's verification: {err}") from err
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
        out.chmod(0o755)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    size = sum(f.stat().st_size for f in out.iterdir())
    log.info("wrote package %s (%.0f KB)", out, size / 1024)
    return out
