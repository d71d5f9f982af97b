"""Training of ``deep-musician``: piano-roll windows, the focal loss, the density figures, the loop and the checkpoint.

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
from export.deepmusician.model import KEYS, NAME, PITCH_MIN, DeepMusician, DeepMusicianConfig
from export.distributed import main_first, world
from export.errors import ExportError
from export.frames import FRAMES_PER_BEAT, fit, onset_profile_of
from livegen.models.deepmusician import focal_probability, tune_roll
from livegen.models.frames import FrameTracker, draw_keys, key_distribution, roll_to_notes, sigmoid
from livegen.models.sampling import SamplingParams
from livegen.music.corpus import Tune, load_corpus, split_by_tune

log = logging.getLogger(__name__)


#: Shares of frames drawn afresh tried for the package's ``redraw``, by the density of what the host plays.
REDRAWS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Mean binary focal loss ``-a_t (1 - p_t)^gamma log p_t``; ``a_t`` = alpha on sounding keys, else 1 - alpha."""
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    a_t = alpha * target + (1 - alpha) * (1 - target)
    return (a_t * (1 - p_t) ** gamma * ce).mean()


@dataclass(frozen=True, slots=True)
class Windows:
    inputs: torch.Tensor  # uint8 [n, window, keys]
    targets: torch.Tensor  # uint8 [n, decode_frames, keys]

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


def make_windows(tunes: Sequence[Tune], config: DeepMusicianConfig) -> Windows:
    """Every ``stride`` frames: ``window`` frames in (empty before the piece starts), the next ``decode_frames`` out."""
    w, d = config.window, config.decode_frames
    xs, ys = [], []
    for tune in tunes:
        roll = tune_roll(tune, PITCH_MIN, KEYS)
        padded = np.concatenate([np.zeros((w, KEYS), dtype=np.float32), roll])
        for s in range(config.stride, len(padded) - w - d + 1, config.stride):
            xs.append(padded[s : s + w])
            ys.append(padded[s + w : s + w + d])
    if not xs:
        return Windows(torch.zeros(0, w, KEYS, dtype=torch.uint8), torch.zeros(0, d, KEYS, dtype=torch.uint8))
    return Windows(torch.from_numpy(np.stack(xs).astype(np.uint8)), torch.from_numpy(np.stack(ys).astype(np.uint8)))


def density(roll: np.ndarray, max_hold: int = 16) -> float:
    """The seed's density metric as notes per beat: onsets of ``roll`` [frames, keys] (a held key is one note)."""
    notes = roll_to_notes(roll, PITCH_MIN, max_hold=max_hold)
    return len(notes) / max(roll.shape[0] / FRAMES_PER_BEAT, 1e-9)


def _predict(model: DeepMusician, windows: Windows, steps: int, batch: int = 256) -> tuple[np.ndarray, float]:
    """Logits of the decoder over every window, and the mean focal loss at the model's settings."""
    out, total = [], 0.0
    c = model.config
    for s in range(0, len(windows), batch):
        x = windows.inputs[s : s + batch].float()
        y = windows.targets[s : s + batch].float()
        logits = model(x, steps)
        total += float(focal_loss(logits, y, c.alpha, c.gamma)) * len(x)
        out.append(logits.numpy())
    return np.concatenate(out), total / max(len(windows), 1)


def densities(logits: np.ndarray, targets: np.ndarray, max_hold: int) -> dict[str, float]:
    """Density (notes per beat) of the thresholded predictions and of the targets, and frame-level F1."""
    predicted = (logits > 0).astype(np.float32)
    truth = targets.astype(np.float32)
    model = float(np.mean([density(p, max_hold) for p in predicted]))
    real = float(np.mean([density(t, max_hold) for t in truth]))
    tp = float((predicted * truth).sum())
    f1 = 2 * tp / max(float(predicted.sum() + truth.sum()), 1.0)
    return {"density": model, "density_true": real, "frame_f1": f1, "keys_per_frame": float(predicted.sum(-1).mean())}


def sampled_density(
    logits: np.ndarray,
    config: DeepMusicianConfig,
    redraw: float,
    profile: Sequence[float] | None,
    *,
    top_p: float = 0.95,
    seed: int = 0,
) -> float:
    """Notes per beat the host plays from these decoder outputs (:func:`draw_keys` at temperature 1 on the
    focal scores read back as chances, polyphony, the onset ``profile``), each window from silence."""
    rng = np.random.default_rng(seed)
    params = SamplingParams(top_p=top_p)
    mask = np.ones(KEYS, dtype=bool)
    metre = [1.0] * FRAMES_PER_BEAT if profile is None else [v / float(np.mean(profile)) for v in profile]
    onsets, frames = 0, 0
    for window in logits:
        tracker = FrameTracker(max_hold=config.max_hold)
        before, keys = np.zeros(KEYS), list[int]()
        for t, frame in enumerate(window):
            probs = key_distribution(focal_probability(sigmoid(frame), config.alpha, config.gamma), params, mask)
            keys = draw_keys(
                probs, before, keys, rng, polyphony=config.polyphony, metre=metre[t % len(metre)], redraw=redraw
            )
            sounding = {PITCH_MIN + k: PITCH_MIN + k for k in keys}
            onsets += sum(1 for slot, pitch in sounding.items() if tracker.held().get(slot) != pitch)
            tracker, _ = tracker.advance(t, sounding, {})
            before = probs
        frames += len(window)
    return onsets / max(frames / FRAMES_PER_BEAT, 1e-9)


@dataclass(frozen=True, slots=True)
class DeepMusicianOptions(TrainingOptions):
    epochs: int = 30
    patience: int = 4
    config: DeepMusicianConfig = field(default_factory=DeepMusicianConfig)

    def check(self) -> None:
        TrainingOptions.check(self)
        c = self.config
        if not 0 < c.alpha < 1 or c.gamma < 0:
            raise ExportError(f"--alpha {c.alpha} --gamma {c.gamma}: expected 0 < alpha < 1 and gamma >= 0")
        if c.stride < 1:
            raise ExportError(f"--stride {c.stride}: expected at least 1 frame between training windows")


def train_deep_musician(options: DeepMusicianOptions) -> Path:
    """Train on ``options.data``, early-stop on validation focal loss, measure densities; write ``checkpoint.pt``."""
    c = options.config
    started = options.begin()
    with main_first():  # rank 0 converts and caches a corpus: the other ranks read its cache
        tunes = load_corpus(options.data, limit=options.limit)
    split = split_by_tune(tunes)
    train, val, held = (make_windows(part, c) for part in (split.train, split.validation, split.held_out))
    if not len(train) or not len(val) or not len(held):
        raise ExportError(f"{options.data}: the pieces are too short for windows of {c.window} + {c.decode_frames}")
    log.info(
        "data %s: %d pieces (train %d, validation %d, held-out %d); %d training windows",
        options.data,
        len(tunes),
        len(split.train),
        len(split.validation),
        len(split.held_out),
        len(train),
    )
    torch.manual_seed(options.seed)
    model = DeepMusician(c)

    def batches(generator: torch.Generator) -> list[torch.Tensor]:
        order = torch.randperm(len(train), generator=generator)
        return [order[i : i + c.batch_size] for i in range(0, len(train), c.batch_size)]

    def loss(index: torch.Tensor) -> torch.Tensor:
        logits = model(train.inputs[index].float(), c.decode_frames)
        return focal_loss(logits, train.targets[index].float(), c.alpha, c.gamma)

    def validate() -> dict[str, float]:
        logits, value = _predict(model, val, c.decode_frames)
        return {"loss": value, **densities(logits, val.targets.numpy(), c.max_hold)}

    result = fit(
        model,
        batches,
        loss,
        validate,
        options,
        learning_rate=c.learning_rate,
    )
    if not world().main:  # rank 0 evaluates and writes the checkpoint
        return options.out / "checkpoint.pt"
    model.eval()
    with torch.no_grad():
        val_logits, val_loss = _predict(model, val, c.decode_frames)
        held_logits, held_loss = _predict(model, held, c.decode_frames)
    val_figures = densities(val_logits, val.targets.numpy(), c.max_hold)
    held_figures = densities(held_logits, held.targets.numpy(), c.max_hold)
    repeat = np.repeat(held.inputs.numpy()[:, -1:, :], c.decode_frames, 1).astype(np.float32) * 2 - 1
    repeat_figures = densities(repeat, held.targets.numpy(), c.max_hold)
    profile = onset_profile_of(t.onset for t in split.train)
    sampled = {r: sampled_density(val_logits[:400], c, r, profile) for r in REDRAWS}
    redraw = min(REDRAWS, key=lambda r: abs(sampled[r] - val_figures["density_true"]))
    metrics = {
        "best_val_loss": val_loss,
        "val_density_notes_per_beat": val_figures["density"],
        "val_density_true_notes_per_beat": val_figures["density_true"],
        **{f"val_sampled_density_r{r:g}": v for r, v in sampled.items()},
        "held_out_focal_loss": held_loss,
        "held_out_density_notes_per_beat": held_figures["density"],
        "held_out_density_true_notes_per_beat": held_figures["density_true"],
        "held_out_frame_f1": held_figures["frame_f1"],
        "baseline_hold_last_frame_f1": repeat_figures["frame_f1"],
        "baseline_hold_last_frame_density": repeat_figures["density"],
    }
    log.info(
        "best epoch %d; validation density %.3f notes/beat (real %.3f); played, by share drawn afresh: %s; "
        "held-out frame F1 %.3f (holding the last frame: %.3f)",
        result.best_epoch,
        val_figures["density"],
        val_figures["density_true"],
        ", ".join(f"{r:g}: {v:.3f}" for r, v in sampled.items()),
        held_figures["frame_f1"],
        repeat_figures["frame_f1"],
    )
    all_pitch = np.concatenate([t.pitch for t in split.train])
    return save_checkpoint(
        options.out,
        NAME,
        state_dict=result.state,
        config=c.to_dict(),
        provenance={
            **split_provenance(
                options,
                fingerprint([t.name for t in tunes], [t.pitch for t in tunes]),
                "pieces",
                (split.train, split.validation, split.held_out),
            ),
            "windows_train": len(train),
            "pitch_min": int(all_pitch.min()),
            "pitch_max": int(all_pitch.max()),
            "onset_profile": profile,
            "torch_version": str(torch.__version__),
        },
        training={
            **training_record(result, max_epochs=options.epochs, patience=options.patience, started=started),
            "redraw": redraw,
        },
        history=result.history,
        metrics=metrics,
        held_out_sample=tune_sample(split.held_out),
    )
