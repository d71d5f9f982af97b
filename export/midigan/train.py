"""Training of ``midigan``: the corpus's notes standardised, the adversarial loop, the held-out figures and the
checkpoint.

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
from torch.nn import functional as F

from export.common import (
    FitResult,
    TrainingOptions,
    fingerprint,
    finish_fit,
    finished_fit,
    progress,
    resume_loop,
    save_checkpoint,
    split_provenance,
    training_record,
    tune_sample,
)
from export.distributed import (
    Checkpoints,
    average_gradients,
    broadcast_module,
    from_main,
    main_first,
    mean,
    model_identity,
    rank_generator,
    seed_ranks,
    shard,
    sync_buffers,
    world,
)
from export.errors import ExportError
from export.midigan.model import NAME, Discriminator, Generator, MidiGanConfig, generate
from livegen.models.midigan import ATTRIBUTES, lay_block, to_frames
from livegen.music.corpus import Tune, load_corpus, split_by_tune

log = logging.getLogger(__name__)


#: Notes scored after each epoch, and drawn for the held-out figures.
EVAL_NOTES = 8192


def tune_notes(tune: Tune, beats_max: float) -> np.ndarray:
    """float64 [len - 1, 3]: (pitch, step, duration) of each note after the tune's first.

    ``step`` is the beats from the previous note's onset, ``duration`` the note's length
    in beats, both clipped to ``0 .. beats_max``.
    """
    if len(tune) < 2:
        return np.zeros((0, 3))
    onset = tune.onset.astype(np.float64)
    step = np.clip(np.diff(onset), 0.0, beats_max)
    duration = np.clip(tune.duration[1:].astype(np.float64), 0.0, beats_max)
    return np.stack([tune.pitch[1:].astype(np.float64), step, duration], axis=1)


def corpus_notes(tunes: Sequence[Tune], beats_max: float) -> np.ndarray:
    parts = [tune_notes(t, beats_max) for t in tunes]
    return np.concatenate(parts) if parts else np.zeros((0, 3))


@dataclass(frozen=True, slots=True)
class Standard:
    """Per-attribute mean and standard deviation of the training notes, and ``reach``: the deviations that
    ``tanh``'s ±1 stands for (the generator's values are ``(note - mean) / (std * reach)``)."""

    mean: np.ndarray
    std: np.ndarray
    reach: np.ndarray

    @classmethod
    def of(cls, notes: np.ndarray, tanh_fit: float = 0.0) -> Standard:
        """``tanh_fit`` in (0, 1): the farthest training value of each attribute lands on ``±tanh_fit``;
        0: the seed's unit deviation (``reach`` 1)."""
        mean, std = notes.mean(0), notes.std(0)
        std = np.where(std > 0, std, 1.0)
        reach = np.ones(notes.shape[1])
        if tanh_fit > 0:
            farthest = np.abs((notes - mean) / std).max(0)
            reach = np.maximum(farthest / tanh_fit, 1.0)
        return cls(mean, std, reach)

    def apply(self, notes: np.ndarray) -> np.ndarray:
        return (notes - self.mean) / (self.std * self.reach)

    def invert(self, standard: np.ndarray) -> np.ndarray:
        return standard * self.std * self.reach + self.mean


def quantise(notes: np.ndarray) -> np.ndarray:
    """int64 [n, 3]: pitch rounded, step and duration in 16ths as the host plays them (at least one)."""
    pitch = np.clip(np.rint(notes[:, 0]), 0, 127)
    return np.stack([pitch, to_frames(np.maximum(notes[:, 1], 0)), to_frames(np.maximum(notes[:, 2], 0))], 1).astype(
        np.int64
    )


def total_variation(a: np.ndarray, b: np.ndarray) -> float:
    """Half the L1 distance between the histograms of two integer samples (0 = same, 1 = disjoint)."""
    values = np.union1d(a, b)
    pa = np.array([np.mean(a == v) for v in values])
    pb = np.array([np.mean(b == v) for v in values])
    return float(np.abs(pa - pb).sum() / 2)


def wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over columns of the 1-D Wasserstein distance between two samples of the same size."""
    return float(np.mean(np.abs(np.sort(a, 0) - np.sort(b, 0))))


@dataclass(frozen=True, slots=True)
class MidiGanOptions(TrainingOptions):
    epochs: int = 8
    patience: int = 3
    config: MidiGanConfig = field(default_factory=MidiGanConfig)

    def check(self) -> None:
        TrainingOptions.check(self)
        c = self.config
        if c.window is not None:
            raise ExportError(f"--window {c.window}: midigan draws one note per noise vector; it takes no window")
        if not 8 <= c.hidden <= 4096:
            raise ExportError(f"--hidden {c.hidden}: expected 8 to 4096 units (the widest layer)")
        if c.batch_size < 2:
            raise ExportError(f"--batch-size {c.batch_size}: expected at least 2 (batch normalisation)")
        if not 0 <= c.tanh_fit < 1 or c.d_learning_rate < 0:
            raise ExportError(
                f"tanh_fit {c.tanh_fit}, d_learning_rate {c.d_learning_rate}: expected 0 <= fit < 1 and a rate >= 0"
            )


def discriminator_accuracy(d: Discriminator, real: np.ndarray, fake: np.ndarray) -> tuple[float, float]:
    """Share of real notes D calls real and of generated notes it calls fake (inference mode, threshold 0.5)."""
    d.eval()
    with torch.no_grad():
        on_real = d(torch.from_numpy(real).float())[:, 0].numpy()
        on_fake = d(torch.from_numpy(fake).float())[:, 0].numpy()
    return float(np.mean(on_real > 0)), float(np.mean(on_fake < 0))


def _subsample(notes: np.ndarray, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return notes[rng.choice(len(notes), size=count, replace=len(notes) < count)]


def train_midigan(options: MidiGanOptions) -> Path:
    """Train the GAN on ``options.data``, keep the epoch whose notes are nearest the validation notes, write
    ``checkpoint.pt``."""
    c = options.config
    started = options.begin()
    with main_first():  # rank 0 converts and caches a corpus: the other ranks read its cache
        tunes = load_corpus(options.data, limit=options.limit)
    split = split_by_tune(tunes)
    train_raw = corpus_notes(split.train, c.beats_max)
    val_raw = corpus_notes(split.validation, c.beats_max)
    held_raw = corpus_notes(split.held_out, c.beats_max)
    if len(train_raw) < c.batch_size or not len(val_raw) or not len(held_raw):
        raise ExportError(f"{options.data}: too few notes to train ({len(train_raw)} training notes)")
    standard = Standard.of(train_raw, c.tanh_fit)
    train = torch.from_numpy(standard.apply(train_raw)).float()
    val = standard.apply(_subsample(val_raw, EVAL_NOTES, options.seed))
    log.info(
        "data %s: %d tunes (train %d, validation %d, held-out %d); %d training notes; mean %s, std %s",
        options.data,
        len(tunes),
        len(split.train),
        len(split.validation),
        len(split.held_out),
        len(train),
        np.round(standard.mean, 3).tolist(),
        np.round(standard.std, 3).tolist(),
    )
    torch.manual_seed(options.seed)
    g, d = Generator(c), Discriminator(c)
    result = _fit_gan(g, d, train, val, c, options)
    if not world().main:  # rank 0 evaluates and writes the checkpoint
        return options.out / "checkpoint.pt"
    history, best_epoch, best = result.history, result.best_epoch, result.best_loss
    best_g, best_d = g.state_dict(), d.state_dict()
    metrics = held_out_metrics(g, d, standard, train_raw, held_raw, c, seed=options.seed)
    chosen = history[best_epoch - 1]
    metrics |= {
        "best_val_wasserstein": best,
        "final_d_loss": history[-1]["d_loss"],
        "final_g_loss": history[-1]["g_loss"],
        "best_epoch_d_loss": chosen["d_loss"],
        "best_epoch_g_loss": chosen["g_loss"],
    }
    log.info("best epoch %d; %s", best_epoch, ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    return save_checkpoint(
        options.out,
        NAME,
        state_dict=best_g,
        discriminator_state_dict=best_d,
        config=c.to_dict(),
        standard={"mean": standard.mean.tolist(), "std": standard.std.tolist(), "reach": standard.reach.tolist()},
        provenance={
            **split_provenance(
                options,
                fingerprint([t.name for t in tunes], [t.pitch for t in tunes]),
                "tunes",
                (split.train, split.validation, split.held_out),
            ),
            "notes_train": len(train_raw),
            "pitch_min": int(train_raw[:, 0].min()),
            "pitch_max": int(train_raw[:, 0].max()),
            "torch_version": str(torch.__version__),
        },
        training=training_record(result, max_epochs=options.epochs, patience=options.patience, started=started),
        history=history,
        metrics=metrics,
        held_out_sample=tune_sample(split.held_out),
    )


def _validate(
    g: Generator, d: Discriminator, val: np.ndarray, c: MidiGanConfig, seed: int
) -> tuple[float, float, float]:
    """The epoch's validation: the Wasserstein distance of generated notes to the validation notes, and the
    discriminator's accuracy on both."""
    fake = generate(g, EVAL_NOTES, seed + 1, c.latent)
    return (wasserstein(fake, val), *discriminator_accuracy(d, val, fake))


def _fit_gan(
    g: Generator, d: Discriminator, train: torch.Tensor, val: np.ndarray, c: MidiGanConfig, options: MidiGanOptions
) -> FitResult:
    """The alternating updates over epochs of shuffled notes, keeping the epoch whose generated notes are
    nearest the validation notes; the best epoch's weights are loaded into ``g`` and ``d``.

    Under torchrun each rank trains on its shard of every epoch's order with noise of its own, gradients
    are averaged across ranks and batch-norm buffers follow rank 0's; rank 0 validates. The loop keeps
    ``out/last.pt`` (see :mod:`export.distributed`), so an interrupted run continues to the same weights.
    """
    w = world()
    seed_ranks(options.seed)
    broadcast_module(g, d)
    opt_g = torch.optim.Adam(g.parameters(), lr=c.learning_rate)
    opt_d = torch.optim.Adam(d.parameters(), lr=c.d_learning_rate or c.learning_rate)
    generator = torch.Generator().manual_seed(options.seed)
    noise = rank_generator(generator, options.seed)
    ones, zeros = torch.ones(c.batch_size, 1), torch.zeros(c.batch_size, 1)
    # a pass over the training notes; the last partial batch is dropped
    per_epoch = len(shard(torch.arange(len(train)))) // c.batch_size
    identity = {
        "loop": "midigan",
        **model_identity(g, d),
        "config": c.to_dict(),
        "notes": len(train),
        "seed": options.seed,
        "epochs": options.epochs,
        "patience": options.patience,
    }
    objects: dict[str, Any] = {"g": g, "d": d, "opt_g": opt_g, "opt_d": opt_d, "shuffle": generator}
    if noise is not generator:
        objects["noise"] = noise
    checkpoints = Checkpoints(options.out, options.run, identity)
    with checkpoints.phase("gan", objects) as phase:
        restored = phase.restore()
        done = finished_fit(restored)
        if done is not None:
            return done
        state: dict[str, Any] = {
            "epoch": 1,
            "batch": 0,
            "order": None,
            "history": [],
            "best": math.inf,
            "best_epoch": 0,
            "best_g": copy.deepcopy(g.state_dict()),
            "best_d": copy.deepcopy(d.state_dict()),
            "waited": 0,
            "seconds": 0.0,
            "stopped": False,
        }
        local = dict.fromkeys(("sum_d", "sum_g", "sum_real", "sum_fake"), 0.0)
        state, local, snapshot = resume_loop(restored, state, local)

        with progress(disable=not w.main) as bar:
            while state["epoch"] <= options.epochs and not state["stopped"]:
                epoch = state["epoch"]
                epoch_started = time.perf_counter()
                if state["order"] is None:
                    state["order"] = torch.randperm(len(train), generator=generator)
                    local.update(dict.fromkeys(local, 0.0))
                mine = shard(state["order"])
                task = bar.add_task(f"epoch {epoch}", total=per_epoch, completed=state["batch"], info="")
                g.train()
                d.train()
                for i in range(state["batch"], per_epoch):
                    index = mine[i * c.batch_size : (i + 1) * c.batch_size]
                    real = train[index]
                    fake = g(torch.randn(c.batch_size, c.latent, generator=noise))
                    on_real, on_fake = d(real), d(fake.detach())
                    loss_d = F.binary_cross_entropy_with_logits(on_real, ones) + F.binary_cross_entropy_with_logits(
                        on_fake, zeros
                    )
                    opt_d.zero_grad(set_to_none=True)
                    loss_d.backward()
                    average_gradients(d.parameters())
                    opt_d.step()
                    loss_g = F.binary_cross_entropy_with_logits(d(fake), ones)
                    opt_g.zero_grad(set_to_none=True)
                    loss_g.backward()
                    average_gradients(g.parameters())
                    opt_g.step()
                    sync_buffers(g, d)
                    local["sum_d"] += loss_d.item()
                    local["sum_g"] += loss_g.item()
                    local["sum_real"] += float((on_real > 0).float().mean())
                    local["sum_fake"] += float((on_fake < 0).float().mean())
                    state["batch"] = i + 1
                    if i % 64 == 63:
                        bar.update(
                            task,
                            completed=i + 1,
                            info=f"D {local['sum_d'] / (i + 1):.3f} G {local['sum_g'] / (i + 1):.3f}",
                        )
                    phase.after_batch(snapshot, lambda: dict(local), batch=index)
                sums = {k: mean(v) for k, v in local.items()}
                score, acc_real, acc_fake = from_main(lambda: _validate(g, d, val, c, options.seed))
                seconds = time.perf_counter() - epoch_started
                batches = max(per_epoch, 1)
                state["history"].append(
                    {
                        "epoch": float(epoch),
                        "d_loss": sums["sum_d"] / batches,
                        "g_loss": sums["sum_g"] / batches,
                        "d_accuracy_real_train": sums["sum_real"] / batches,
                        "d_accuracy_fake_train": sums["sum_fake"] / batches,
                        "val_wasserstein": score,
                        "val_d_accuracy_real": acc_real,
                        "val_d_accuracy_fake": acc_fake,
                        "seconds": seconds,
                    }
                )
                improved = score < state["best"] - 1e-4
                if improved:
                    state["best"], state["best_epoch"], state["waited"] = score, epoch, 0
                    state["best_g"], state["best_d"] = copy.deepcopy(g.state_dict()), copy.deepcopy(d.state_dict())
                else:
                    state["waited"] += 1
                bar.remove_task(task)
                log.info(
                    "epoch %d: D loss %.4f, G loss %.4f; validation: Wasserstein %.4f, D accuracy real %.3f fake "
                    "%.3f%s, %.1f s",
                    epoch,
                    sums["sum_d"] / batches,
                    sums["sum_g"] / batches,
                    score,
                    acc_real,
                    acc_fake,
                    " best" if improved else "",
                    seconds,
                )
                state |= {"epoch": epoch + 1, "batch": 0, "order": None}
                if state["waited"] >= options.patience:
                    log.info("the validation score has not improved for %d epochs; stopping", options.patience)
                    state["stopped"] = True
                phase.after_epoch(snapshot, lambda: dict.fromkeys(local, 0.0))
        g.load_state_dict(state["best_g"])
        d.load_state_dict(state["best_d"])
        result = finish_fit(
            phase,
            FitResult(state["best_g"], state["history"], state["best_epoch"], state["best"], snapshot()["seconds"]),
        )
    return result


def held_out_metrics(
    g: Generator,
    d: Discriminator,
    standard: Standard,
    train_raw: np.ndarray,
    held_raw: np.ndarray,
    c: MidiGanConfig,
    *,
    seed: int,
) -> dict[str, float]:
    """The discriminator's accuracy on held-out and generated notes, and how the generated notes' attributes (as
    the host plays them) compare with the held-out notes', beside the training notes' (the ceiling of a model of
    independent notes)."""
    held = _subsample(held_raw, EVAL_NOTES, seed + 2)
    fake = generate(g, EVAL_NOTES, seed + 3, c.latent)
    acc_real, acc_fake = discriminator_accuracy(d, standard.apply(held), fake)
    generated = standard.invert(fake)
    q_fake, q_held, q_train = quantise(generated), quantise(held), quantise(_subsample(train_raw, EVAL_NOTES, seed + 4))
    reach = np.all(np.abs(standard.apply(held)) < 1.0, axis=1)
    metrics = {
        "held_out_d_accuracy_real": acc_real,
        "held_out_d_accuracy_fake": acc_fake,
        "held_out_share_within_tanh_reach": float(reach.mean()),
    }
    for k, name in enumerate(ATTRIBUTES):
        metrics[f"held_out_{name}_tv"] = total_variation(q_fake[:, k], q_held[:, k])
        metrics[f"baseline_training_notes_{name}_tv"] = total_variation(q_train[:, k], q_held[:, k])
        metrics[f"generated_{name}_mean"] = float(generated[:, k].mean())
        metrics[f"generated_{name}_std"] = float(generated[:, k].std())
        metrics[f"held_out_{name}_mean"] = float(held[:, k].mean())
        metrics[f"held_out_{name}_std"] = float(held[:, k].std())
    metrics["generated_pitch_min"] = float(q_fake[:, 0].min())
    metrics["generated_pitch_max"] = float(q_fake[:, 0].max())
    # notes per bar when laid sequentially (the host's layout), against the held-out tunes' steps
    metrics["generated_notes_per_bar"] = notes_per_bar(q_fake[:, 1], c.block_frames)
    metrics["held_out_notes_per_bar"] = notes_per_bar(q_held[:, 1], c.block_frames)
    return metrics


def notes_per_bar(steps: np.ndarray, block_frames: int) -> float:
    """Mean notes a bar of ``block_frames`` holds when notes with these steps (frames) are laid one after another."""
    blocks = [
        len(lay_block([60] * 64, chunk, [1] * 64, last_onset=None, block_frames=block_frames))
        for chunk in (steps[i : i + 64] for i in range(0, len(steps) - 63, 64))
    ]
    return float(np.mean(blocks)) if blocks else float("nan")
