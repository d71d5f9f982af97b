"""What the frame and block families share in training: their epoch loop, the onset profile, the merged tune
of a multi-track piece and the voices' programs.

Context: setup (training; imports torch, never imported by the host).

Each family says how a corpus becomes frames or blocks and what its loss is; :func:`fit`
runs the epochs with early stopping on validation (resumable, under torchrun too).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from export.common import FitResult, TrainingOptions, finish_fit, finished_fit, resume_loop
from export.distributed import (
    Checkpoints,
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
from livegen.music.corpus import MultiTune, Tune

log = logging.getLogger(__name__)

FRAMES_PER_BEAT = 4
#: GM programs of the voices (a woodwind quartet: oboe, clarinet, English horn, bassoon), else piano.
VOICE_PROGRAMS = {"soprano": 68, "alto": 71, "tenor": 69, "bass": 70}


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
    options: TrainingOptions,
    *,
    learning_rate: float,
    grad_clip: float = 1.0,
    label: str = "",
) -> FitResult:
    """Adam with gradient clipping; stop after ``patience`` epochs without a lower ``validate()["loss"]``.

    Under torchrun each rank trains on its share of every epoch's batches and gradients are averaged
    across ranks; rank 0 validates and every rank takes its figures. The loop keeps ``out/last.pt``
    (see :mod:`export.distributed`), so an interrupted run continues to the same weights. These
    families train on the CPU (their loss functions index CPU tensors): one process per core.
    """
    epochs, patience, seed = options.epochs, options.patience, options.seed
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
    checkpoints = Checkpoints(options.out, options.run, identity)
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


def merged_tune(piece: MultiTune) -> Tune:
    """All tracks of a piece as one tune (for the seed phrase the performer plays)."""
    pitch = np.concatenate([t.pitch for t in piece.tracks])
    onset = np.concatenate([t.onset for t in piece.tracks])
    duration = np.concatenate([t.duration for t in piece.tracks])
    order = np.lexsort((-pitch.astype(np.int64), onset))
    return Tune(piece.name, pitch[order], onset[order], duration[order])
