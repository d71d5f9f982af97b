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

import copy
import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export import common
from export.common import CARD as CARD
from export.common import MANIFEST as MANIFEST
from export.common import OPSET as OPSET
from export.common import PARITY_TOLERANCE as PARITY_TOLERANCE
from export.common import FitResult as FitResult
from export.common import check_parity as check_parity
from export.common import export_graph as export_graph
from export.common import load_checkpoint, log_written
from export.common import sample_tunes as sample_tunes
from export.common import save_checkpoint as save_checkpoint
from export.common import session as session
from export.common import tensor as tensor
from export.common import training_record as training_record
from export.common import tune_sample as tune_sample
from export.errors import ExportError
from export.package import write_seed as write_seed

log = logging.getLogger(__name__)

FRAMES_PER_BEAT = 4


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


def read_checkpoint(path: Path, family: str) -> dict[str, Any]:
    checkpoint = load_checkpoint(path)
    if checkpoint.get("family") != family:
        raise ExportError(f"{path}: family {checkpoint.get('family')!r} is not {family!r}")
    return checkpoint


def write_package(
    out: Path,
    name: str,
    build: Callable[[Path], tuple[dict[str, Any], str]],
) -> Path:
    """Assemble a package with :func:`export.common.write_package` and say where it went."""
    common.write_package(out, name, build)
    log_written(out)
    return out
