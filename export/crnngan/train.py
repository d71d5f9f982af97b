"""Training of ``crnngan``: windows of the corpus's notes, the losses, the two phases (the generator pretrained,
then the GAN), the figures and the checkpoint.

Context: setup (training; imports torch, never imported by the host).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.common import (
    FitResult,
    TrainingOptions,
    finish_fit,
    finished_fit,
    save_checkpoint,
    split_provenance,
    training_record,
    tune_fingerprint,
    tune_sample,
)
from export.crnngan.model import NAME, CrnnGanConfig, Discriminator, Generator, draw_noise
from export.distributed import (
    Checkpoints,
    RunOptions,
    average_gradients,
    broadcast_module,
    from_main,
    main_first,
    mean,
    model_identity,
    rank_generator,
    seed_ranks,
    shard,
    world,
)
from export.errors import ExportError
from export.frames import FRAMES_PER_BEAT
from livegen.models.crnngan import FEATURES, frequency_of_pitch, phrase_notes
from livegen.models.frames import VELOCITY
from livegen.music.corpus import Tune, load_corpus, split_by_tune
from livegen.music.midifile import read_midi

log = logging.getLogger(__name__)


#: Feature columns of an event (the seed's order: duration, tone, intensity, time since the last tone).
DURATION, FREQUENCY, INTENSITY, STEP = range(4)


#: Validation windows the adversarial epochs are scored on.
VALIDATION_WINDOWS = 512


def tune_velocities(tune: Tune) -> np.ndarray:
    """The velocity of each note of ``tune``: read again from its MIDI file when it came from one, else
    :data:`~livegen.models.frames.VELOCITY` (music21's folk tunes and chorales have no dynamics). A prepared
    cache's tunes carry their velocities."""
    if tune.velocity is not None:
        return np.asarray(tune.velocity, dtype=np.float64)
    path = Path(tune.name)
    if path.suffix.lower() in (".mid", ".midi") and path.is_file():
        notes = sorted(read_midi(path).notes, key=lambda n: (n.start, -n.pitch))
        if len(notes) == len(tune):
            return np.asarray([n.velocity for n in notes], dtype=np.float64)
    return np.full(len(tune), float(VELOCITY))


def tune_windows(
    tune: Tune, notes: int, *, stride_beats: int = 1, beats_max: float = 4.0, velocities: np.ndarray | None = None
) -> np.ndarray:
    """Phrases of ``notes`` events float64 [n, notes, 4] (duration, frequency in Hz, velocity, step), in beats.

    A phrase starts on every ``stride_beats``-th whole beat T of the tune where a note
    starts less than a beat later (not inside a long note or rest) and ``notes`` notes
    remain: its first event is the first note starting at or after T, and that event's
    step is its onset minus T (how the host lays a phrase from a block's start); every
    later step is the time since the previous onset. Steps and durations are clipped to
    ``beats_max``.
    """
    n = len(tune)
    if n < notes:
        return np.zeros((0, notes, 4))
    onset = tune.onset.astype(np.float64)
    velocity = tune_velocities(tune) if velocities is None else velocities.astype(np.float64)
    events = np.stack(
        [
            np.minimum(tune.duration.astype(np.float64), beats_max),
            frequency_of_pitch(tune.pitch.astype(np.float64)),
            velocity,
            np.concatenate([[0.0], np.minimum(np.diff(onset), beats_max)]),
        ],
        axis=1,
    )
    out = []
    last_start = -1
    for beat in range(math.ceil(onset[0]), int(onset[n - notes]) + 1, stride_beats):
        first = int(np.searchsorted(onset, beat - 1e-6))
        if first + notes > n or first == last_start or onset[first] - beat >= 1.0:
            continue
        last_start = first
        window = events[first : first + notes].copy()
        window[0, STEP] = min(onset[first] - beat, beats_max)
        out.append(window)
    return np.stack(out) if out else np.zeros((0, notes, 4))


def make_windows(tunes: Sequence[Tune], config: CrnnGanConfig) -> np.ndarray:
    """Every tune's phrases (see :func:`tune_windows`), float32 [n, window, 4]."""
    parts = [
        tune_windows(t, config.window, stride_beats=config.stride_beats, beats_max=config.beats_max) for t in tunes
    ]
    parts = [p for p in parts if len(p)]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, config.window, 4), dtype=np.float32)


@dataclass(frozen=True, slots=True)
class Standard:
    """Per-feature mean and scale: the model sees ``(value - mean) / scale``."""

    mean: np.ndarray  # [4]
    scale: np.ndarray  # [4]

    @classmethod
    def of(cls, windows: np.ndarray) -> Standard:
        flat = windows.reshape(-1, 4).astype(np.float64)
        std = flat.std(0)
        return cls(flat.mean(0), np.where(std > 1e-6, std, 1.0))

    def apply(self, windows: np.ndarray) -> np.ndarray:
        return ((windows - self.mean) / self.scale).astype(np.float32)

    def invert(self, values: np.ndarray) -> np.ndarray:
        return values.astype(np.float64) * self.scale + self.mean


EPS = 1e-7


def discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """The seed's: mean of ``-log D(x) - log(1 - D(G(z)))``."""
    return (-torch.log(d_real.clamp(EPS, 1.0)) - torch.log((1.0 - d_fake).clamp(EPS, 1.0))).mean()


def generator_adversarial_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """``-log D(G(z))``: reported, and compared with the discriminator's loss for freezing."""
    return (-torch.log(d_fake.clamp(EPS, 1.0))).mean()


def feature_matching_loss(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """Squared distance between the mean discriminator features of real and generated sequences."""
    return ((real_features.mean(dim=(0, 1)) - fake_features.mean(dim=(0, 1))) ** 2).mean()


def freeze_discriminator(d_loss: float, g_loss: float, ratio: float = 0.7) -> bool:
    """The seed's freezing rule: no discriminator update while its loss is below ``ratio`` of the generator's."""
    return d_loss < ratio * g_loss


def pretrain_lengths(window: int, epochs: int) -> list[int]:
    """Sequence length of each pretraining epoch: growing from short to ``window`` (the seed's schedule)."""
    return [max(min(4, window), math.ceil(window * (e + 1) / epochs)) for e in range(epochs)]


def wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    """1-D earth mover's distance between two samples (by quantiles)."""
    q = np.linspace(0.0, 1.0, 101)
    return float(np.mean(np.abs(np.quantile(a, q) - np.quantile(b, q))))


def feature_distance(real: np.ndarray, fake: np.ndarray, standard: Standard) -> float:
    """How far generated phrases are from real ones: the mean over the four features (standardised) and
    the melodic interval (in octaves) of the 1-D earth mover's distance between the two samples.

    ``real``, ``fake``: events in musical units [n, window, 4]. Lower is better; used to keep the best
    generator and to stop adversarial training.
    """
    a, b = standard.apply(real), standard.apply(fake)
    parts = [wasserstein(a[..., k].ravel(), b[..., k].ravel()) for k in range(4)]

    def intervals(x: np.ndarray) -> np.ndarray:
        pitch = np.log2(np.maximum(x[..., FREQUENCY], 1.0))
        return np.diff(pitch, axis=1).ravel()

    parts.append(wasserstein(intervals(real), intervals(fake)))
    return float(np.mean(parts))


def _optimizer(module: nn.Module, config: CrnnGanConfig) -> torch.optim.Optimizer:
    """The seed's minibatch SGD (``optimizer = "sgd"``, learning rate 0.1 in the seed) or Adam (beta1 0.5),
    both with L2 regularisation of the weights."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    return torch.optim.Adam(
        module.parameters(), lr=config.learning_rate, betas=(0.5, 0.999), weight_decay=config.weight_decay
    )


def _step(
    optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], clip: float
) -> None:
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    average_gradients(params)
    torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def pretrain(
    generator: Generator,
    train: torch.Tensor,
    val: torch.Tensor,
    config: CrnnGanConfig,
    seed: int,
    patience: int,
    checkpoints: Checkpoints | None = None,
) -> list[dict[str, float]]:
    """Next-event prediction with squared error, lengths growing over the epochs; keeps the best epoch's weights.

    Under torchrun each rank trains on its shard with noise of its own and gradients are averaged; rank 0
    validates. ``checkpoints`` keeps the phase resumable (see :mod:`export.distributed`)."""
    checkpoints = checkpoints or Checkpoints(None, RunOptions(resume=False), {})
    rng = torch.Generator().manual_seed(seed)
    noise = rank_generator(rng, seed, stream=1)
    optimizer = _optimizer(generator, config)
    val_noise = draw_noise((len(val), config.window, config.noise), torch.Generator().manual_seed(seed + 1))
    lengths = pretrain_lengths(config.window, config.pretrain_epochs)
    objects: dict[str, Any] = {"generator": generator, "optimizer": optimizer, "shuffle": rng}
    if noise is not rng:
        objects["noise"] = noise
    with checkpoints.phase("pretrain", objects) as phase:
        restored = phase.restore()
        if restored is not None and restored[0].get("finished"):
            return list(restored[0]["history"])
        state: dict[str, Any] = {
            "epoch": 1,
            "batch": 0,
            "order": None,
            "history": [],
            "best": math.inf,
            "best_state": copy.deepcopy(generator.state_dict()),
            "waited": 0,
            "stopped": False,
        }
        local = {"running": 0.0, "count": 0.0}
        if restored is not None:
            state |= restored[0]
            local |= restored[1]

        def snapshot() -> dict[str, Any]:
            return dict(state)

        while state["epoch"] <= len(lengths) and not state["stopped"]:
            epoch = state["epoch"]
            length = lengths[epoch - 1]
            started = time.perf_counter()
            generator.train()
            if state["order"] is None:
                state["order"] = torch.randperm(len(train), generator=rng)
                local.update(running=0.0, count=0.0)
            mine = shard(state["order"])
            starts = list(range(0, len(mine), config.batch_size))
            for j in range(state["batch"], len(starts)):
                i = starts[j]
                index = mine[i : i + config.batch_size]
                real = train[index, :length]
                drawn = draw_noise((len(real), length, config.noise), noise)
                loss = ((generator.teacher_forced(drawn, real) - real) ** 2).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                average_gradients(generator.parameters())
                torch.nn.utils.clip_grad_norm_(generator.parameters(), config.grad_clip)
                optimizer.step()
                local["running"] += float(loss.detach())
                local["count"] += 1
                state["batch"] = j + 1
                phase.after_batch(snapshot, lambda: dict(local), batch=index)
            generator.eval()
            with torch.no_grad():
                errors = from_main(lambda: ((generator.teacher_forced(val_noise, val) - val) ** 2).mean(dim=(0, 1)))
            value = float(errors.mean())
            row = {
                "epoch": float(epoch),
                "length": float(length),
                "train_mse": mean(local["running"] / max(local["count"], 1)),
                "val_mse": value,
                **{f"val_mse_{name}": float(e) for name, e in zip(FEATURES, errors, strict=True)},
                "seconds": time.perf_counter() - started,
            }
            state["history"].append(row)
            if not math.isfinite(value):
                raise ExportError(f"pretraining loss became {value} at epoch {epoch}; lower the learning rate")
            # Only full-length epochs compete: a shorter curriculum epoch is not the model to keep.
            improved = length == config.window and value < state["best"] - 1e-5
            if improved:
                state["best"], state["best_state"], state["waited"] = value, copy.deepcopy(generator.state_dict()), 0
            elif length == config.window:
                state["waited"] += 1
            log.info(
                "pretraining epoch %d (length %d): train %.4f, validation %.4f (%s)%s, %.1f s",
                epoch,
                length,
                row["train_mse"],
                value,
                ", ".join(f"{n} {float(e):.3f}" for n, e in zip(FEATURES, errors, strict=True)),
                " best" if improved else "",
                row["seconds"],
            )
            state |= {"epoch": epoch + 1, "batch": 0, "order": None}
            if state["waited"] >= patience:
                state["stopped"] = True
            phase.after_epoch(snapshot, lambda: {"running": 0.0, "count": 0.0})
        if math.isfinite(state["best"]):
            generator.load_state_dict(state["best_state"])
        phase.finish({"history": state["history"]})
    return state["history"]


@dataclass(slots=True)
class AdversarialResult:
    fit: FitResult
    final: dict[str, float]
    start_distance: float  # the validation distance of the pretrained generator


def adversarial(
    generator: Generator,
    discriminator: Discriminator,
    train: torch.Tensor,
    val_real: np.ndarray,
    val: torch.Tensor,
    standard: Standard,
    config: CrnnGanConfig,
    *,
    epochs: int,
    patience: int,
    seed: int,
    checkpoints: Checkpoints | None = None,
) -> AdversarialResult:
    """GAN training: discriminator BCE (frozen by the seed's rule), feature matching for the generator.

    Under torchrun each rank trains on its shard with noise of its own; the freezing rule reads the losses
    averaged over the ranks, so that all ranks freeze together, and gradients are averaged; rank 0
    validates. ``checkpoints`` keeps the phase resumable (see :mod:`export.distributed`)."""
    checkpoints = checkpoints or Checkpoints(None, RunOptions(resume=False), {})
    rng = torch.Generator().manual_seed(seed + 2)
    noise = rank_generator(rng, seed, stream=2)
    g_opt, d_opt = _optimizer(generator, config), _optimizer(discriminator, config)
    g_params = [p for p in generator.parameters() if p.requires_grad]
    d_params = [p for p in discriminator.parameters() if p.requires_grad]
    val_noise = draw_noise((len(val), config.window, config.noise), torch.Generator().manual_seed(seed + 3))
    objects: dict[str, Any] = {
        "generator": generator,
        "discriminator": discriminator,
        "g_opt": g_opt,
        "d_opt": d_opt,
        "shuffle": rng,
    }
    if noise is not rng:
        objects["noise"] = noise
    with checkpoints.phase("adversarial", objects) as phase:
        restored = phase.restore()
        fit = finished_fit(restored)
        if fit is not None:
            assert restored is not None
            return AdversarialResult(fit, dict(restored[0]["final"]), restored[0]["start_distance"])
        if restored is None:
            order = torch.randperm(len(train), generator=rng)
            with torch.no_grad():
                generator.eval()
                start_distance = feature_distance(val_real, standard.invert(generator(val_noise).numpy()), standard)
            log.info("before adversarial training: validation distance %.4f", start_distance)
            state: dict[str, Any] = {
                "epoch": 1,
                "batch": 0,
                "order": order,
                "cursor": 0,
                "history": [],
                "best": math.inf,
                "best_epoch": 0,
                "best_state": copy.deepcopy(generator.state_dict()),
                "waited": 0,
                "start_distance": start_distance,
                "seconds": 0.0,
                "stopped": False,
            }
            local = dict.fromkeys(("d_loss", "g_loss", "fm_loss", "frozen"), 0.0)
        else:
            state, local = restored
        started = time.perf_counter()

        def snapshot() -> dict[str, Any]:
            return {**state, "seconds": state["seconds"] + time.perf_counter() - started}

        while state["epoch"] <= epochs and not state["stopped"]:
            epoch = state["epoch"]
            epoch_started = time.perf_counter()
            generator.train()
            discriminator.train()
            for j in range(state["batch"], config.batches_per_epoch):
                mine = shard(state["order"])
                if state["cursor"] + config.batch_size > len(mine):
                    state["order"], state["cursor"] = torch.randperm(len(train), generator=rng), 0
                    mine = shard(state["order"])
                index = mine[state["cursor"] : state["cursor"] + config.batch_size]
                real = train[index]
                state["cursor"] += config.batch_size
                fake = generator(draw_noise((len(real), config.window, config.noise), noise))
                d_real, f_real = discriminator(real)
                d_fake, f_fake = discriminator(fake)
                d_loss = discriminator_loss(d_real, d_fake)
                g_loss = generator_adversarial_loss(d_fake)
                fm = feature_matching_loss(f_real.detach(), f_fake)
                # the rule reads the losses of all ranks, so that every rank freezes (or not) together
                d_value, g_value = mean(float(d_loss.detach())), mean(float(g_loss.detach()))
                frozen = freeze_discriminator(d_value, g_value, config.freeze_ratio)
                # Both gradients from the same forward pass, before either network changes.
                d_grads = None if frozen else torch.autograd.grad(d_loss, d_params, retain_graph=True)
                g_grads = torch.autograd.grad(fm, g_params)
                if d_grads is not None:
                    _step(d_opt, d_params, d_grads, config.grad_clip)
                _step(g_opt, g_params, g_grads, config.grad_clip)
                local["d_loss"] += float(d_loss.detach())
                local["g_loss"] += float(g_loss.detach())
                local["fm_loss"] += float(fm.detach())
                local["frozen"] += float(frozen)
                state["batch"] = j + 1
                phase.after_batch(snapshot, lambda: dict(local), batch=index)
            figures = {k: mean(v / config.batches_per_epoch) for k, v in local.items()}
            generator.eval()
            discriminator.eval()

            def measure() -> tuple[dict[str, float], float]:
                with torch.no_grad():
                    fake = generator(val_noise)
                    return (
                        validation_scores(discriminator, val, fake),
                        feature_distance(val_real, standard.invert(fake.numpy()), standard),
                    )

            scores, distance = from_main(measure)
            seconds = time.perf_counter() - epoch_started
            state["history"].append(
                {"epoch": float(epoch), **figures, **scores, "val_distance": distance, "seconds": seconds}
            )
            if not math.isfinite(distance) or not math.isfinite(figures["d_loss"]):
                raise ExportError(f"adversarial training diverged at epoch {epoch}; lower the learning rate")
            improved = distance < state["best"] - 1e-5
            if improved:
                state["best"], state["best_epoch"], state["waited"] = distance, epoch, 0
                state["best_state"] = copy.deepcopy(generator.state_dict())
            else:
                state["waited"] += 1
            log.info(
                "epoch %d: D %.3f, G %.3f, FM %.4f, D frozen %.0f%%; validation: D accuracy real %.2f fake %.2f, "
                "distance %.4f%s, %.1f s",
                epoch,
                figures["d_loss"],
                figures["g_loss"],
                figures["fm_loss"],
                100 * figures["frozen"],
                scores["d_accuracy_real"],
                scores["d_accuracy_fake"],
                distance,
                " best" if improved else "",
                seconds,
            )
            local.update(dict.fromkeys(local, 0.0))
            state |= {"epoch": epoch + 1, "batch": 0}
            if epoch >= config.min_epochs and state["waited"] >= patience:
                log.info("validation distance has not improved for %d epochs; stopping", patience)
                state["stopped"] = True
            phase.after_epoch(snapshot, lambda: dict(local))
        final = state["history"][-1] if state["history"] else {}
        generator.load_state_dict(state["best_state"])
        fit = finish_fit(
            phase,
            FitResult(state["best_state"], state["history"], state["best_epoch"], state["best"], snapshot()["seconds"]),
            final=dict(final),
            start_distance=state["start_distance"],
        )
    return AdversarialResult(fit, dict(final), state["start_distance"])


def validation_scores(discriminator: Discriminator, real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    """The discriminator's losses and accuracies (D > 0.5 means real) on validation and generated phrases."""
    d_real, f_real = discriminator(real)
    d_fake, f_fake = discriminator(fake)
    return {
        "val_d_loss": float(discriminator_loss(d_real, d_fake)),
        "val_g_loss": float(generator_adversarial_loss(d_fake)),
        "val_fm_loss": float(feature_matching_loss(f_real, f_fake)),
        "d_accuracy_real": float((d_real > 0.5).float().mean()),
        "d_accuracy_fake": float((d_fake <= 0.5).float().mean()),
    }


def is_monophonic(windows: np.ndarray) -> bool:
    """No note of the phrases starts with the one before (every step after the first is above 0)."""
    return bool(windows.shape[1] < 2 or (windows[:, 1:, STEP] > 0).all())


def tunes_monophonic(tunes: Sequence[Tune]) -> bool:
    """No two notes of a tune start together."""
    return all(len(t) < 2 or bool((np.diff(t.onset) > 0).all()) for t in tunes)


def phrase_statistics(events: np.ndarray, config: CrnnGanConfig, *, monophonic: bool = False) -> dict[str, float]:
    """What phrases laid into blocks hold, laid the way the host lays them: notes per beat, mean pitch and
    distinct pitch classes per block."""
    notes_per_block: list[int] = []
    pitches: list[int] = []
    classes: list[int] = []
    for phrase in events:
        notes = phrase_notes(phrase, config.block_frames, config.max_hold, monophonic=monophonic)
        notes_per_block.append(len(notes))
        pitches.extend(n.pitch for n in notes)
        classes.append(len({n.pitch % 12 for n in notes}))
    beats = config.block_frames / FRAMES_PER_BEAT
    return {
        "notes_per_beat": float(np.mean(notes_per_block)) / beats,
        "mean_pitch": float(np.mean(pitches)) if pitches else float("nan"),
        "pitch_classes_per_block": float(np.mean(classes)),
    }


@dataclass(frozen=True, slots=True)
class CrnnGanOptions(TrainingOptions):
    config: CrnnGanConfig = field(default_factory=CrnnGanConfig)


def train_crnngan(options: CrnnGanOptions) -> Path:
    """Pretrain the generator, train the GAN, measure; write ``checkpoint.pt``."""
    c = options.config
    c.check()
    started = options.begin()
    with main_first():  # rank 0 converts and caches a corpus: the other ranks read its cache
        tunes = load_corpus(options.data, limit=options.limit)
    split = split_by_tune(tunes)
    raw_train, raw_val, raw_held = (make_windows(part, c) for part in (split.train, split.validation, split.held_out))
    if not len(raw_train) or not len(raw_val) or not len(raw_held):
        raise ExportError(f"{options.data}: the tunes are too short for phrases of {c.window} notes (--window)")
    standard = Standard.of(raw_train)
    val_pick = np.random.default_rng(options.seed).permutation(len(raw_val))[:VALIDATION_WINDOWS]
    raw_val = raw_val[np.sort(val_pick)]
    train, val, held = (torch.from_numpy(standard.apply(w)) for w in (raw_train, raw_val, raw_held))
    log.info(
        "data %s: %d tunes (train %d, validation %d, held-out %d); %d training phrases of %d notes",
        options.data,
        len(tunes),
        len(split.train),
        len(split.validation),
        len(split.held_out),
        len(train),
        c.window,
    )
    torch.manual_seed(options.seed)
    generator = Generator(c)
    discriminator = Discriminator(c)
    seed_ranks(options.seed)
    broadcast_module(generator, discriminator)
    checkpoints = Checkpoints(
        options.out,
        options.run,
        {
            "loop": "crnngan",
            **model_identity(generator, discriminator),
            "config": c.to_dict(),
            "phrases": len(train),
            "seed": options.seed,
            "epochs": options.epochs,
            "patience": options.patience,
        },
    )
    pre_history = (
        pretrain(generator, train, val, c, options.seed, options.patience, checkpoints) if c.pretrain_epochs else []
    )
    result = adversarial(
        generator,
        discriminator,
        train,
        raw_val.astype(np.float64),
        val,
        standard,
        c,
        epochs=options.epochs,
        patience=options.patience,
        seed=options.seed,
        checkpoints=checkpoints,
    )
    if not world().main:  # rank 0 evaluates and writes the checkpoint
        return options.out / "checkpoint.pt"
    generator.eval()
    discriminator.eval()
    with torch.no_grad():
        noise = draw_noise((len(held), c.window, c.noise), torch.Generator().manual_seed(options.seed + 4))
        fake = generator(noise)
        held_scores = validation_scores(discriminator, held, fake)
        fake_raw = standard.invert(fake.numpy())
        held_distance = feature_distance(raw_held.astype(np.float64), fake_raw, standard)
        tf_noise = draw_noise((len(held), c.window, c.noise), torch.Generator().manual_seed(options.seed + 5))
        held_mse = float(((generator.teacher_forced(tf_noise, held) - held) ** 2).mean())
    monophonic = is_monophonic(raw_train)
    real_stats = phrase_statistics(raw_held.astype(np.float64), c, monophonic=monophonic)
    fake_stats = phrase_statistics(fake_raw, c, monophonic=monophonic)
    final = result.final
    metrics: dict[str, float] = {
        "pretrain_val_mse": pre_history[-1]["val_mse"] if pre_history else float("nan"),
        "pretrain_best_val_mse": min((h["val_mse"] for h in pre_history if h["length"] == c.window), default=math.nan),
        "held_out_next_event_mse": held_mse,
        "final_d_loss": final["d_loss"],
        "final_g_loss": final["g_loss"],
        "final_fm_loss": final["fm_loss"],
        "final_d_frozen_share": final["frozen"],
        "pretrained_val_distance": result.start_distance,
        "best_val_distance": result.fit.best_loss,
        "held_out_d_loss": held_scores["val_d_loss"],
        "held_out_g_loss": held_scores["val_g_loss"],
        "held_out_d_accuracy_real": held_scores["d_accuracy_real"],
        "held_out_d_accuracy_fake": held_scores["d_accuracy_fake"],
        "held_out_distance": held_distance,
        "generated_notes_per_beat": fake_stats["notes_per_beat"],
        "held_out_notes_per_beat": real_stats["notes_per_beat"],
        "generated_mean_pitch": fake_stats["mean_pitch"],
        "held_out_mean_pitch": real_stats["mean_pitch"],
        "generated_pitch_classes_per_block": fake_stats["pitch_classes_per_block"],
        "held_out_pitch_classes_per_block": real_stats["pitch_classes_per_block"],
    }
    log.info("held-out: %s", ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    pitches = np.concatenate([t.pitch for t in split.train])
    training = training_record(result.fit, max_epochs=options.epochs, patience=options.patience, started=started)
    training["pretrain_epochs_run"] = len(pre_history)
    training["pretrain_seconds"] = sum(h["seconds"] for h in pre_history)
    training["total_seconds"] = time.perf_counter() - started
    return save_checkpoint(
        options.out,
        NAME,
        state_dict=generator.state_dict(),
        discriminator_state_dict=discriminator.state_dict(),
        config=c.to_dict(),
        standard={"mean": standard.mean.tolist(), "scale": standard.scale.tolist()},
        provenance={
            **split_provenance(
                options, tune_fingerprint(tunes), "tunes", (split.train, split.validation, split.held_out)
            ),
            "phrases_train": len(train),
            "monophonic": monophonic,
            "pitch_min": int(pitches.min()),
            "pitch_max": int(pitches.max()),
            "torch_version": str(torch.__version__),
        },
        training=training,
        pretrain_history=pre_history,
        history=result.fit.history,
        metrics=metrics,
        held_out_sample=tune_sample(split.held_out),
    )
