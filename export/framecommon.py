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
from collections.abc import Callable, Iterable, Sequence
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
from export.common import finish_fit, finished_fit, load_checkpoint, log_written, resume_loop
from export.common import sample_tunes as sample_tunes
from export.common import save_checkpoint as save_checkpoint
from export.common import session as session
from export.common import tensor as tensor
from export.common import training_record as training_record
from export.common import tune_sample as tune_sample
from export.distributed import (
    Checkpoints,
    RunOptions,
    average_gradients,
    broadcast_module,
    from_main,
    mean,
    model_identity,
    seed_ranks,
    shard_list,
    world,
)
from export.errors import ExportError
from export.package import write_seed as write_seed

log = logging.getLogger(__name__)

FRAMES_PER_BEAT = 4


def onset_profile_of(onsets: Iterable[np.ndarray], frames_per_beat: int = FRAMES_PER_BEAT) -> list[float]:
    """The share of notes starting on each frame of a beat (its first 16th, its second, ...), from onsets in
    beats: the frame host's ``representation.onset_profile``, which weights when a line moves."""
    counts = np.zeros(frames_per_beat)
    for beats in onsets:
        frames = np.round(np.asarray(beats, dtype=np.float64) % 1.0 * frames_per_beat).astype(int) % frames_per_beat
        counts += np.bincount(frames, minlength=frames_per_beat)
    return [round(float(c), 4) for c in counts / max(counts.sum(), 1.0)]


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
    run: RunOptions | None = None,
    out: Path | None = None,
) -> FitResult:
    """Adam with gradient clipping; stop after ``patience`` epochs without a lower ``validate()["loss"]``.

    Under torchrun each rank trains on its share of every epoch's batches and gradients are averaged
    across ranks; rank 0 validates and every rank takes its figures. The loop keeps ``out/last.pt``
    (see :mod:`export.distributed`), so an interrupted run continues to the same weights. These
    families train on the CPU (their loss functions index CPU tensors): one process per core.
    """
    run = run or RunOptions()
    w = world()
    seed_ranks(seed)
    broadcast_module(model)
    identity = {
        "loop": "frames",
        **model_identity(model),
        "seed": seed,
        "epochs": epochs,
        "patience": patience,
        "learning_rate": learning_rate,
        "grad_clip": grad_clip,
        "label": label,
    }
    checkpoints = Checkpoints(out, run, identity)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    objects = {"model": model, "optimizer": optimizer, "shuffle": generator}
    with checkpoints.phase(f"{label}fit", objects) as phase:
        restored = phase.restore()
        done = finished_fit(restored)
        if done is not None:
            return done
        state: dict[str, Any] = {
            "epoch": 1,
            "batch": 0,
            "batches": None,  # the epoch's batches, all ranks' (each rank trains on its share)
            "history": [],
            "best_loss": math.inf,
            "best_epoch": 0,
            "best_state": copy.deepcopy(model.state_dict()),
            "waited": 0,
            "seconds": 0.0,
            "stopped": False,
        }
        local = {"running": 0.0, "count": 0}
        state, local, snapshot = resume_loop(restored, state, local)

        while state["epoch"] <= epochs and not state["stopped"]:
            epoch = state["epoch"]
            epoch_started = time.perf_counter()
            if state["batches"] is None:
                state["batches"] = list(batches(generator))
                local["running"], local["count"] = 0.0, 0
            mine = shard_list(state["batches"])
            model.train()
            for i in range(state["batch"], len(mine)):
                value = loss(mine[i])
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                average_gradients(model.parameters())
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                optimizer.step()
                local["running"] += float(value.detach())
                local["count"] += 1
                state["batch"] = i + 1
                phase.after_batch(snapshot, lambda: dict(local), batch=mine[i])
            train_loss = mean(local["running"] / max(local["count"], 1))
            model.eval()
            with torch.no_grad():
                val = from_main(validate)
            seconds = time.perf_counter() - epoch_started
            state["history"].append({"epoch": float(epoch), "train_loss": train_loss, **val, "seconds": seconds})
            if not math.isfinite(val["loss"]):
                raise ExportError(f"validation loss became {val['loss']} at epoch {epoch}; lower the learning rate")
            improved = val["loss"] < state["best_loss"] - 1e-5
            if improved:
                state["best_loss"], state["best_epoch"], state["waited"] = val["loss"], epoch, 0
                state["best_state"] = copy.deepcopy(model.state_dict())
            else:
                state["waited"] += 1
            figures = ", ".join(f"{k} {v:.4g}" for k, v in val.items())
            log.info(
                "%sepoch %d: train %.4f, validation %s%s, %.1f s%s",
                label,
                epoch,
                train_loss,
                figures,
                " best" if improved else "",
                seconds,
                f" ({w.size} processes)" if w.distributed else "",
            )
            state |= {"epoch": epoch + 1, "batch": 0, "batches": None}
            if state["waited"] >= patience:
                log.info("validation loss has not improved for %d epochs; stopping", patience)
                state["stopped"] = True
            phase.after_epoch(snapshot, lambda: {"running": 0.0, "count": 0})
        model.load_state_dict(state["best_state"])
        result = finish_fit(
            phase,
            FitResult(
                state["best_state"], state["history"], state["best_epoch"], state["best_loss"], snapshot()["seconds"]
            ),
        )
    return result


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
