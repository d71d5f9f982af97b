"""Training loop for ``midirnn``: early stopping on validation loss, held-out evaluation, checkpoint.

Context: setup (training only; imports torch, never imported by the host).

The corpus is split by tune (:func:`livegen.music.corpus.split_by_tune`): the model is
fitted on the training tunes, early stopping watches the validation tunes and
the reported figures come from the held-out tunes, which neither touched. The
held-out evaluation runs each tune as the host does, as one stream from a zero
LSTM state, and scores the prediction made after every note against the next
note. Two baselines are scored on exactly the same targets: always the most
frequent training pitch, and repeat the last pitch.

Everything is deterministic given ``seed`` on a given machine and torch version:
weights are initialised after ``torch.manual_seed`` and batches are shuffled with
a seeded ``torch.Generator``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from export.common import (
    CHECKPOINT,
    TrainingOptions,
    batch_means,
    check_sizes,
    corpus_provenance,
    fit_windows,
    save_checkpoint,
    training_record,
    tune_sample,
)
from export.distributed import main_first, world
from export.errors import ExportError
from export.midirnn.model import (
    BEATS_MAX,
    NAME,
    TIME_HEADS,
    MidiRnn,
    MidiRnnConfig,
    TimeClasses,
    nearest_class,
    time_classes,
)
from livegen.models.midirnn import tune_features
from livegen.music.corpus import Tune, load_corpus, split_by_tune

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Windows:
    """Training windows: inputs and the next-note targets at every position, with a mask."""

    inputs: torch.Tensor  # float32 [n, window, 3]
    pitch: torch.Tensor  # int64 [n, window]: the next note's pitch
    step: torch.Tensor  # float32 [n, window]
    duration: torch.Tensor  # float32 [n, window]
    mask: torch.Tensor  # float32 [n, window]: 1 where a next note exists

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def take(self, index: torch.Tensor) -> Windows:
        return Windows(self.inputs[index], self.pitch[index], self.step[index], self.duration[index], self.mask[index])

    @property
    def targets(self) -> int:
        return int(self.mask.sum().item())


def make_windows(tunes: Sequence[Tune], window: int, beats_max: float = BEATS_MAX) -> Windows:
    """Cut each tune into windows of ``window`` input notes, each followed by its targets.

    A window covers notes ``[s, s + window]``: inputs are the first ``window`` and the
    targets the next note at each position. Consecutive windows start ``window``
    notes apart, so every note of a tune (except the first) is a target exactly once.
    Tails shorter than a window are padded and masked.
    """
    rows_in: list[np.ndarray] = []
    rows_pitch: list[np.ndarray] = []
    rows_next: list[np.ndarray] = []
    lengths: list[int] = []
    for tune in tunes:
        features = tune_features(tune, beats_max)
        pitches = tune.pitch.astype(np.int64)
        for start in range(0, len(tune) - 1, window):
            end = min(start + window + 1, len(tune))
            n = end - start - 1
            x = np.zeros((window, 3), dtype=np.float32)
            x[:n] = features[start : start + n]
            p = np.zeros(window, dtype=np.int64)
            p[:n] = pitches[start + 1 : end]
            nxt = np.zeros((window, 2), dtype=np.float32)
            nxt[:n] = features[start + 1 : end, 1:]
            rows_in.append(x)
            rows_pitch.append(p)
            rows_next.append(nxt)
            lengths.append(n)
    if not rows_in:
        return Windows(
            torch.zeros(0, window, 3), torch.zeros(0, window, dtype=torch.int64), *(torch.zeros(0, window),) * 3
        )
    mask = np.arange(window)[None, :] < np.asarray(lengths)[:, None]
    nxt_all = np.stack(rows_next)
    return Windows(
        inputs=torch.from_numpy(np.stack(rows_in)),
        pitch=torch.from_numpy(np.stack(rows_pitch)),
        step=torch.from_numpy(np.ascontiguousarray(nxt_all[:, :, 0])),
        duration=torch.from_numpy(np.ascontiguousarray(nxt_all[:, :, 1])),
        mask=torch.from_numpy(mask.astype(np.float32)),
    )


def mse_with_positive_pressure(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, pressure: float
) -> torch.Tensor:
    """The tutorial's loss for step and duration: MSE plus ``pressure * mean(relu(-prediction))``."""
    per_item = (target - prediction) ** 2 + pressure * F.relu(-prediction)
    return (per_item * mask).sum() / mask.sum().clamp(min=1.0)


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` [batch, time, K] against ``target`` [batch, time] where ``mask`` is 1."""
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
    return (ce * mask.reshape(-1)).sum() / mask.sum().clamp(min=1.0)


def midirnn_loss(model: MidiRnn, batch: Windows, config: MidiRnnConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the three heads' losses over the unmasked positions of ``batch``.

    Regression heads: MSE with positive pressure; class heads: cross-entropy against
    the class nearest each target.
    """
    logits, step, duration, _ = model(batch.inputs)
    mask = batch.mask
    pitch_loss = masked_cross_entropy(logits, batch.pitch, mask)
    classes = model.time_classes
    if classes is None:
        step_loss = mse_with_positive_pressure(step.squeeze(-1), batch.step, mask, config.pressure)
        duration_loss = mse_with_positive_pressure(duration.squeeze(-1), batch.duration, mask, config.pressure)
    else:
        step_loss = masked_cross_entropy(step, nearest_class(batch.step, classes.step), mask)
        duration_loss = masked_cross_entropy(duration, nearest_class(batch.duration, classes.duration), mask)
    total = config.pitch_weight * pitch_loss + config.step_weight * step_loss + config.duration_weight * duration_loss
    return total, {"pitch": pitch_loss, "step": step_loss, "duration": duration_loss}


#: Held-out tunes kept in the checkpoint for the export's parity check and seed phrase.
SAMPLE_TUNES = 8


SAMPLE_NOTES = 256


#: The step and duration figures of both time heads, in the order the manifest lists them.
REGRESSION_TIME_METRICS = (
    "held_out_step_mae_beats",
    "held_out_duration_mae_beats",
    "baseline_median_step_mae_beats",
    "baseline_median_duration_mae_beats",
)


@dataclass(frozen=True, slots=True)
class TrainOptions(TrainingOptions):
    """What ``python -m export train midirnn`` was asked to do."""

    config: MidiRnnConfig = field(default_factory=MidiRnnConfig)
    min_delta: float = 1e-4

    def check(self) -> None:
        TrainingOptions.check(self)
        check_sizes(self.config.window, "notes", self.config.hidden, self.config.batch_size)
        if self.config.time_head not in TIME_HEADS:
            raise ExportError(f"--time-head {self.config.time_head!r}: expected one of {', '.join(TIME_HEADS)}")


@dataclass(frozen=True, slots=True)
class TrainResult:
    checkpoint: Path
    metrics: dict[str, float]
    epochs_run: int
    best_epoch: int


def _batch_loss(model: MidiRnn, windows: Windows, config: MidiRnnConfig, batch_size: int) -> dict[str, float]:
    """Mean losses over every unmasked target of ``windows`` (no gradient)."""

    def measure(batch: Windows) -> tuple[float, dict[str, torch.Tensor]]:
        total, parts = midirnn_loss(model, batch, config)
        return batch.targets, {"total": total, **parts}

    model.eval()
    return batch_means(windows, measure, batch_size)


def evaluate_held_out(
    model: MidiRnn, held_out: Sequence[Tune], train: Sequence[Tune], beats_max: float
) -> dict[str, float]:
    """Next-note figures on held-out tunes, each run as one stream from a zero state, with baselines.

    Targets are every note but the first of each tune. Step and duration errors
    are in beats, against the same clipped values the model is trained on. With a
    categorical time head the model's step and duration are the values of its
    argmax classes, and their accuracy (argmax = the class nearest the target) is
    reported beside two baselines: always the most frequent training class, and
    repeat the last note's value.
    """
    train_pitches = np.concatenate([t.pitch for t in train]).astype(np.int64)
    most_frequent = int(np.bincount(train_pitches, minlength=128).argmax())
    train_features = np.concatenate([tune_features(t, beats_max)[1:] for t in train if len(t) > 1])
    median_step = float(np.median(train_features[:, 1]))
    median_duration = float(np.median(train_features[:, 2]))
    classes = model.time_classes
    heads = {"step": 1, "duration": 2}
    values: dict[str, np.ndarray] = {}
    frequent_class: dict[str, int] = {}
    if classes is not None:
        values = {"step": np.asarray(classes.step), "duration": np.asarray(classes.duration)}
        for head, column in heads.items():
            train_classes = nearest_class(torch.from_numpy(train_features[:, column]), values[head]).numpy()
            frequent_class[head] = int(np.bincount(train_classes, minlength=len(values[head])).argmax())
    hits = frequent_hits = repeat_hits = 0
    sums: dict[str, float] = {}

    def add(key: str, value: float) -> None:
        sums[key] = sums.get(key, 0.0) + value

    total = 0
    model.eval()
    with torch.no_grad():
        for tune in held_out:
            if len(tune) < 2:
                continue
            features = tune_features(tune, beats_max)
            logits, step, duration, _ = model(torch.from_numpy(features[None, :-1]))
            predicted = logits[0].argmax(-1).numpy()
            target = tune.pitch[1:].astype(np.int64)
            hits += int((predicted == target).sum())
            frequent_hits += int((target == most_frequent).sum())
            repeat_hits += int((tune.pitch[:-1].astype(np.int64) == target).sum())
            add("baseline_median_step_mae_beats", float(np.abs(median_step - features[1:, 1]).sum()))
            add("baseline_median_duration_mae_beats", float(np.abs(median_duration - features[1:, 2]).sum()))
            for head, output in (("step", step[0]), ("duration", duration[0])):
                truth = features[1:, heads[head]]
                if classes is None:
                    add(f"held_out_{head}_mae_beats", float(np.abs(output[:, 0].numpy() - truth).sum()))
                    continue
                choice = output.argmax(-1).numpy()
                truth_class = nearest_class(torch.from_numpy(truth), values[head]).numpy()
                last = features[:-1, heads[head]]
                last_class = nearest_class(torch.from_numpy(last), values[head]).numpy()
                add(f"held_out_{head}_mae_beats", float(np.abs(values[head][choice] - truth).sum()))
                add(f"held_out_{head}_accuracy", float((choice == truth_class).sum()))
                add(f"baseline_most_frequent_{head}_accuracy", float((truth_class == frequent_class[head]).sum()))
                add(f"baseline_repeat_last_{head}_accuracy", float((last_class == truth_class).sum()))
                add(f"baseline_repeat_last_{head}_mae_beats", float(np.abs(last - truth).sum()))
            total += len(target)
    if total == 0:
        raise ExportError("the held-out tunes hold no next-note targets; use a larger corpus")
    return {
        "held_out_pitch_accuracy": hits / total,
        "baseline_most_frequent_pitch_accuracy": frequent_hits / total,
        "baseline_repeat_last_pitch_accuracy": repeat_hits / total,
        **{key: sums.pop(key) / total for key in REGRESSION_TIME_METRICS},
        **{key: value / total for key, value in sorted(sums.items())},
        "held_out_targets": float(total),
    }


def train_midirnn(options: TrainOptions) -> TrainResult:
    """Train, early-stop, evaluate on held-out tunes and write ``checkpoint.pt`` into ``options.out``."""
    config = options.config
    started = options.begin()
    with main_first():  # rank 0 converts and caches a corpus: the other ranks read its cache
        tunes = load_corpus(options.data, limit=options.limit)
    split = split_by_tune(tunes)
    train_windows = make_windows(split.train, config.window, config.beats_max)
    val_windows = make_windows(split.validation, config.window, config.beats_max)
    if len(train_windows) == 0 or len(val_windows) == 0:
        raise ExportError(f"{options.data}: the tunes are too short to make training and validation windows")
    log.info(
        "data %s: %d tunes (train %d, validation %d, held-out %d); %d training windows of %d notes",
        options.data,
        len(tunes),
        len(split.train),
        len(split.validation),
        len(split.held_out),
        len(train_windows),
        config.window,
    )

    vocabulary: TimeClasses | None = None
    coverage: dict[str, float] = {}
    if config.time_head == "classes":
        vocabulary, coverage = time_classes(split.train, config)
        log.info(
            "time classes (beats): step %s (%.2f%% of training targets), duration %s (%.2f%%); "
            "the rest map to the nearest class",
            ", ".join(f"{v:.4g}" for v in vocabulary.step),
            100 * coverage["step_class_coverage"],
            ", ".join(f"{v:.4g}" for v in vocabulary.duration),
            100 * coverage["duration_class_coverage"],
        )

    torch.manual_seed(options.seed)
    model = MidiRnn(config.hidden, vocabulary, config.pitch_embedding)

    def validate() -> tuple[float, dict[str, float], str]:
        val = _batch_loss(model, val_windows, config, 512)
        figures = {"val_pitch_ce": val["pitch"], "val_step": val["step"], "val_duration": val["duration"]}
        return (
            val["total"],
            figures,
            f" (pitch CE {val['pitch']:.3f}, step {val['step']:.4f}, duration {val['duration']:.4f})",
        )

    fitted = fit_windows(
        model,
        train_windows,
        lambda batch: midirnn_loss(model, batch, config)[0],
        validate,
        config,
        options,
        min_delta=options.min_delta,
    )
    best_loss, best_epoch, history = fitted.best_loss, fitted.best_epoch, fitted.history
    epochs_run = len(history)
    if not world().main:  # rank 0 evaluates and writes the checkpoint
        return TrainResult(options.out / CHECKPOINT, metrics={}, epochs_run=epochs_run, best_epoch=best_epoch)
    metrics = {"best_val_loss": best_loss, **evaluate_held_out(model, split.held_out, split.train, config.beats_max)}
    train_pitches = np.concatenate([t.pitch for t in split.train])
    provenance: dict[str, Any] = {
        **corpus_provenance(options.data, options.limit, options.seed, tunes, split),
        "notes_train": int(sum(len(t) for t in split.train)),
        "notes_validation": int(sum(len(t) for t in split.validation)),
        "notes_held_out": int(sum(len(t) for t in split.held_out)),
        "windows_train": len(train_windows),
        "pitch_min": int(train_pitches.min()),
        "pitch_max": int(train_pitches.max()),
        **coverage,
        "torch_version": str(torch.__version__),
    }
    training = training_record(
        fitted,
        max_epochs=options.epochs,
        patience=options.patience,
        started=started,
        stopped_early=epochs_run < options.epochs,
    )
    path = save_checkpoint(
        options.out,
        NAME,
        state_dict=fitted.state,
        config=config.to_dict(),
        time_classes=None if vocabulary is None else vocabulary.to_dict(),
        provenance=provenance,
        training=training,
        history=history,
        metrics=metrics,
        held_out_sample=tune_sample(split.held_out, SAMPLE_TUNES, SAMPLE_NOTES),
    )
    log.info(
        "best epoch %d of %d (validation %.4f); held-out pitch accuracy %.3f (most frequent %.3f, repeat last %.3f); "
        "step MAE %.3f, duration MAE %.3f beats; checkpoint %s",
        best_epoch,
        epochs_run,
        best_loss,
        metrics["held_out_pitch_accuracy"],
        metrics["baseline_most_frequent_pitch_accuracy"],
        metrics["baseline_repeat_last_pitch_accuracy"],
        metrics["held_out_step_mae_beats"],
        metrics["held_out_duration_mae_beats"],
        path,
    )
    if vocabulary is not None:
        log.info(
            "held-out step accuracy %.3f (most frequent %.3f, repeat last %.3f), "
            "duration accuracy %.3f (most frequent %.3f, repeat last %.3f)",
            metrics["held_out_step_accuracy"],
            metrics["baseline_most_frequent_step_accuracy"],
            metrics["baseline_repeat_last_step_accuracy"],
            metrics["held_out_duration_accuracy"],
            metrics["baseline_most_frequent_duration_accuracy"],
            metrics["baseline_repeat_last_duration_accuracy"],
        )
    return TrainResult(checkpoint=path, metrics=metrics, epochs_run=epochs_run, best_epoch=best_epoch)
