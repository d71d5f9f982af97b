"""Training of ``multitrack-rnn``: windows of one-hot frames, the cross-entropy per track, the held-out figures,
the loop and the checkpoint.

Context: setup (training; imports torch, never imported by the host).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from export.common import TrainingOptions, fingerprint, save_checkpoint, split_provenance, training_record, tune_sample
from export.distributed import main_first, world
from export.frames import FRAMES_PER_BEAT, fit, merged_tune, onset_profile_of
from export.multitrack_rnn.model import NAME, MultiTrackConfig, MultiTrackRnn
from livegen.models.frames import roll_to_notes
from livegen.models.multitrack import piece_frames
from livegen.music.corpus import MultiTune, load_parts, part_names, split_pieces

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Windows:
    inputs: torch.Tensor  # uint8 [n, window, width]
    targets: torch.Tensor  # int64 [n, window, tracks]: the next frame's class per track
    mask: torch.Tensor  # float32 [n, window]

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


def make_windows(pieces: Sequence[MultiTune], config: MultiTrackConfig) -> Windows:
    """Windows of ``window`` frames, every ``window`` frames of each piece; targets the next frame; tails masked."""
    w = config.window
    xs, ys, ms = [], [], []
    for piece in pieces:
        frames = piece_frames(piece, config.tracks, config.pitch_min, config.keys)
        classes = frames.reshape(len(frames), config.tracks, config.keys + 1).argmax(-1)
        for s in range(0, len(frames) - 1, w):
            n = min(w, len(frames) - 1 - s)
            x = np.zeros((w, config.width), dtype=np.uint8)
            y = np.zeros((w, config.tracks), dtype=np.int64)
            x[:n] = frames[s : s + n]
            y[:n] = classes[s + 1 : s + 1 + n]
            xs.append(x)
            ys.append(y)
            ms.append(np.arange(w) < n)
    return Windows(
        torch.from_numpy(np.stack(xs)),
        torch.from_numpy(np.stack(ys)),
        torch.from_numpy(np.stack(ms).astype(np.float32)),
    )


def window_loss(model: MultiTrackRnn, windows: Windows, index: torch.Tensor | slice) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy per track and frame over the unmasked positions; and how many positions."""
    logits, _ = model(windows.inputs[index].float())
    target, mask = windows.targets[index], windows.mask[index]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
    ce = ce.reshape(target.shape).mean(-1)
    count = float(mask.sum())
    return (ce * mask).sum() / max(count, 1.0), int(count)


def accuracy(model: MultiTrackRnn, windows: Windows) -> dict[str, float]:
    """Share of (frame, track) targets the most likely class gets right, and the repeat-the-last-frame baseline's."""
    c = model.config
    logits, _ = model(windows.inputs.float())
    mask = windows.mask.bool()[..., None].expand_as(windows.targets)
    hits = (logits.argmax(-1) == windows.targets) & mask
    last = windows.inputs.float().reshape(*windows.inputs.shape[:2], c.tracks, c.keys + 1).argmax(-1)
    repeat = (last == windows.targets) & mask
    changes = (last != windows.targets) & mask
    total = float(mask.sum())
    return {
        "accuracy": float(hits.sum()) / total,
        "baseline_repeat_accuracy": float(repeat.sum()) / total,
        "accuracy_where_changing": float((hits & changes).sum()) / max(float(changes.sum()), 1.0),
    }


def generated_density(model: MultiTrackRnn, pieces: Sequence[MultiTune], frames: int = 64, seed: int = 0) -> float:
    """Notes per beat the model plays (sampled at temperature 1) after 32 frames of each piece."""
    c = model.config
    rng = np.random.default_rng(seed)
    total, beats = 0, 0.0
    with torch.no_grad():
        for piece in pieces:
            context = torch.from_numpy(piece_frames(piece, c.tracks, c.pitch_min, c.keys)[:32][None])
            logits, state = model(context)
            rolls = np.zeros((frames, c.tracks, c.keys), dtype=np.float32)
            for t in range(frames):
                probs = torch.softmax(logits[0, -1].double(), -1).numpy()
                frame = np.zeros((c.tracks, c.keys + 1), dtype=np.float32)
                for k in range(c.tracks):
                    choice = int(rng.choice(c.keys + 1, p=probs[k] / probs[k].sum()))
                    frame[k, choice] = 1.0
                    if choice:
                        rolls[t, k, choice - 1] = 1.0
                logits, state = model(torch.from_numpy(frame.reshape(1, 1, -1)), state)
            total += sum(len(roll_to_notes(rolls[:, k], c.pitch_min, max_hold=c.max_hold)) for k in range(c.tracks))
            beats += frames / FRAMES_PER_BEAT
    return total / max(beats, 1e-9)


def real_density(pieces: Sequence[MultiTune], config: MultiTrackConfig, frames: int = 64) -> float:
    total, beats = 0, 0.0
    for piece in pieces:
        one_hot = piece_frames(piece, config.tracks, config.pitch_min, config.keys)[32 : 32 + frames]
        roll = one_hot.reshape(len(one_hot), config.tracks, config.keys + 1)[:, :, 1:]
        total += sum(
            len(roll_to_notes(roll[:, k], config.pitch_min, max_hold=config.max_hold)) for k in range(config.tracks)
        )
        beats += len(one_hot) / FRAMES_PER_BEAT
    return total / max(beats, 1e-9)


@dataclass(frozen=True, slots=True)
class MultiTrackOptions(TrainingOptions):
    epochs: int = 40
    patience: int = 4
    config: MultiTrackConfig = field(default_factory=MultiTrackConfig)


def train_multitrack(options: MultiTrackOptions) -> Path:
    c = options.config
    started = options.begin()
    with main_first():  # rank 0 converts and caches a corpus: the other ranks read its cache
        pieces = load_parts(options.data, tracks=c.tracks, limit=options.limit)
    train_p, val_p, held_p = split_pieces(pieces)
    train, val, held = (make_windows(p, c) for p in (train_p, val_p, held_p))
    log.info(
        "data %s: %d pieces of %d tracks (train %d, validation %d, held-out %d); %d training windows",
        options.data,
        len(pieces),
        c.tracks,
        len(train_p),
        len(val_p),
        len(held_p),
        len(train),
    )
    torch.manual_seed(options.seed)
    model = MultiTrackRnn(c)

    def batches(generator: torch.Generator) -> list[torch.Tensor]:
        order = torch.randperm(len(train), generator=generator)
        return [order[i : i + c.batch_size] for i in range(0, len(train), c.batch_size)]

    def validate() -> dict[str, float]:
        value, _ = window_loss(model, val, slice(None))
        return {"loss": float(value)}

    result = fit(
        model,
        batches,
        lambda index: window_loss(model, train, index)[0],
        validate,
        options,
        learning_rate=c.learning_rate,
    )
    if not world().main:  # rank 0 evaluates and writes the checkpoint
        return options.out / "checkpoint.pt"
    model.eval()
    with torch.no_grad():
        held_loss, _ = window_loss(model, held, slice(None))
        figures = accuracy(model, held)
    metrics = {
        "best_val_loss": result.best_loss,
        "held_out_cross_entropy": float(held_loss),
        "held_out_accuracy": figures["accuracy"],
        "baseline_repeat_last_frame_accuracy": figures["baseline_repeat_accuracy"],
        "held_out_accuracy_where_changing": figures["accuracy_where_changing"],
        "val_density_notes_per_beat": generated_density(model, val_p),
        "val_density_true_notes_per_beat": real_density(val_p, c),
    }
    log.info("best epoch %d; held-out %s", result.best_epoch, ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    names = part_names(options.data, c.tracks)
    centers = [
        float(np.mean(np.concatenate([p.tracks[k].pitch for p in train_p]).astype(np.float64))) for k in range(c.tracks)
    ]
    return save_checkpoint(
        options.out,
        NAME,
        state_dict=result.state,
        config=c.to_dict(),
        provenance={
            **split_provenance(
                options,
                fingerprint([p.name for p in pieces], [t.pitch for p in pieces for t in p.tracks]),
                "pieces",
                (train_p, val_p, held_p),
            ),
            "windows_train": len(train),
            "track_names": list(names),
            "track_centers": centers,
            "onset_profile": onset_profile_of(t.onset for p in train_p for t in p.tracks),
            "torch_version": str(torch.__version__),
        },
        training=training_record(result, max_epochs=options.epochs, patience=options.patience, started=started),
        history=result.history,
        metrics=metrics,
        held_out_sample=tune_sample([merged_tune(p) for p in held_p]),
        held_out_frames=[
            piece_frames(p, c.tracks, c.pitch_min, c.keys)[:128].tolist()
            for p in held_p[:: max(1, len(held_p) // 6)][:6]
        ],
    )
