"""The ``midigan`` family (seed 000 §4.2): a dense GAN over single notes (pitch, step, duration).

Context: setup (training and export; imports torch, never imported by the host).

As in the seed: every note of the training tunes is one sample of three attributes,
its pitch, its step (beats since the previous note's onset) and its duration (beats),
standardised to zero mean and unit standard deviation over the training notes. The
generator maps 100 normal numbers through dense layers of 128, 256 and 512 units, each
followed by batch normalisation and a LeakyReLU, to three ``tanh`` outputs; the
discriminator reads three attributes through dense layers of 512, 256 and 128 units,
each followed by a LeakyReLU and dropout 0.3, to one sigmoid output. Both are trained
with binary cross-entropy and Adam at 1e-4, batches of 64. Only the generator is
exported (graph ``generator``: ``z`` [batch, 100] -> ``notes`` [batch, 3]); the host
(:mod:`livegen.models.midigan`) lays the notes it draws one after another into bars.

What the seed leaves open, and what differs from it (the model card says it too):

- LeakyReLU slope 0.2 in both networks (the seed gives no slope, and no activation
  for the discriminator's hidden layers); the sigmoid is applied inside the loss
  (``BCEWithLogits``, the same function, numerically safer).
- Data: music21's folk tunes (or a MIDI folder), not 5-10 MAESTRO files; each note
  after a tune's first (the first has no step); step and duration clipped to
  ``beats_max`` (4 beats, one bar: the host's blocks are bars).
- After each epoch (a pass over the training notes) the generator, in inference
  mode as exported, is scored against the validation notes, and the best epoch is
  kept: training stops after ``patience`` epochs without a better score. The score is
  the mean over the three attributes of the 1-D Wasserstein distance between generated
  and validation notes in standardised units (the seed picked its model by ear).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from export.common import (
    ConfigRecord,
    FitResult,
    TrainingOptions,
    check_parity,
    export_graph,
    fingerprint,
    finish_fit,
    finished_fit,
    progress,
    read_checkpoint,
    resume_loop,
    sample_tunes,
    save_checkpoint,
    session,
    tensor,
    training_record,
    tune_sample,
    write_package,
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
from export.family import Family
from export.seed import write_seed
from livegen.models.midigan import ATTRIBUTES, GRAPH, lay_block, to_frames
from livegen.music.corpus import Tune, load_corpus, split_by_tune
from livegen.music.time import SIXTEENTH

log = logging.getLogger(__name__)

NAME = "midigan"
FILE = "generator.onnx"
#: Notes scored after each epoch, and drawn for the held-out figures.
EVAL_NOTES = 8192
#: The package's default temperature (the scale of the noise). ``livegen evaluate --split validation --seeds 32
#: --bars 8`` on the bundled corpus:folk model, MGEval overlap of pitch classes / melodic intervals / inter-onset
#: intervals: 0.121 / 0.384 / 0.230 at 0.5, 0.266 / 0.337 / 0.270 at 1, 0.294 / 0.309 / 0.096 at 1.5,
#: 0.224 / 0.139 / 0.102 at 2 (random notes: 0.537 / 0.573 / 0.105). 1, the seed's noise, is kept.
DEFAULT_TEMPERATURE = 1.0
#: The same figures for the card: (temperature, pitch classes, melodic intervals, inter-onset intervals),
#: measured on the data whose fingerprint is :data:`TEMPERATURES_MEASURED_ON`; a card for other data
#: does not show them.
TEMPERATURES_MEASURED_ON = "8c2ffeb7d45e30ac"
VALIDATION_TEMPERATURES = (
    (0.5, 0.121, 0.384, 0.230),
    (1.0, 0.266, 0.337, 0.270),
    (1.5, 0.294, 0.309, 0.096),
    (2.0, 0.224, 0.139, 0.102),
)


@dataclass(frozen=True, slots=True)
class MidiGanConfig(ConfigRecord):
    """Sizes, data scaling, optimiser and stabilisers; the defaults are the seed's recipe (:data:`RECIPES`)."""

    latent: int = 100
    hidden: int = 512  # the widest layer; the generator is hidden/4, hidden/2, hidden, the discriminator reversed
    leaky_slope: float = 0.2
    dropout: float = 0.3
    batch_size: int = 64
    learning_rate: float = 1e-4
    beats_max: float = 4.0
    block_frames: int = 16
    context_frames: int = 16
    notes_per_block: int = 32
    window: int | None = None  # not used: the seed draws one note per noise vector (refused when given)
    #: where ``tanh`` puts the training notes' farthest value of each attribute: standardised data is divided by
    #: ``max |z| / tanh_fit`` (:class:`Standard`); 0 keeps the seed's unit deviation, which ``tanh`` cannot leave
    tanh_fit: float = 0.95
    #: stabilisers (the card names those in use): spectral normalisation of the discriminator's dense layers,
    #: the minibatch standard deviation beside its last layer, and its own learning rate (0: ``learning_rate``)
    spectral_norm: bool = False
    minibatch_std: bool = False
    d_learning_rate: float = 0.0

    @property
    def widths(self) -> tuple[int, int, int]:
        return (self.hidden // 4, self.hidden // 2, self.hidden)


#: ``python -m export train midigan --recipe NAME``: config fields over the defaults (the seed's recipe). Spectral
#: normalisation is left out of "stable": with ``tanh_fit`` the notes lie within ±0.95, and a 1-Lipschitz discriminator
#: over inputs that small gave every note the same logit (losses ln 4 and ln 2, 1.3863 and 0.6932, for three epochs).
RECIPES: dict[str, dict[str, object]] = {
    "seed": {},
    "stable": {"minibatch_std": True, "d_learning_rate": 4e-4},
}


class Generator(nn.Module):
    """noise [batch, latent] -> standardised (pitch, step, duration) [batch, 3] in (-1, 1)."""

    def __init__(self, config: MidiGanConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = config.latent
        for units in config.widths:
            layers += [nn.Linear(width, units), nn.BatchNorm1d(units), nn.LeakyReLU(config.leaky_slope)]
            width = units
        layers += [nn.Linear(width, len(ATTRIBUTES)), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(z)
        return out


class Discriminator(nn.Module):
    """standardised notes [batch, 3] -> the logit of "real" [batch, 1] (the sigmoid is the loss's)."""

    def __init__(self, config: MidiGanConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = len(ATTRIBUTES)
        for units in reversed(config.widths):
            layers += [_dense(width, units, config), nn.LeakyReLU(config.leaky_slope), nn.Dropout(config.dropout)]
            width = units
        self.net = nn.Sequential(*layers)
        self.minibatch_std = config.minibatch_std
        self.decision = _dense(width + int(config.minibatch_std), 1, config)

    def forward(self, notes: torch.Tensor) -> torch.Tensor:
        h = self.net(notes)
        if self.minibatch_std:
            spread = h.std(dim=0, unbiased=False).mean() if len(h) > 1 else h.new_zeros(())
            h = torch.cat([h, spread.expand(len(h), 1)], dim=1)
        out: torch.Tensor = self.decision(h)
        return out


def _dense(width: int, units: int, config: MidiGanConfig) -> nn.Module:
    layer = nn.Linear(width, units)
    return nn.utils.parametrizations.spectral_norm(layer) if config.spectral_norm else layer


# ---- data ------------------------------------------------------------------------------


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


# ---- training --------------------------------------------------------------------------


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


def generate(model: Generator, count: int, seed: int, latent: int) -> np.ndarray:
    """``count`` standardised notes from the generator in inference mode, from seeded noise."""
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    with torch.no_grad():
        return model(torch.randn(count, latent, generator=generator)).double().numpy()


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
            "data": options.data,
            "limit": options.limit,
            "seed": options.seed,
            "corpus_fingerprint": fingerprint([t.name for t in tunes], [t.pitch for t in tunes]),
            "tunes_train": len(split.train),
            "tunes_validation": len(split.validation),
            "tunes_held_out": len(split.held_out),
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


# ---- export ----------------------------------------------------------------------------


def model_from_checkpoint(checkpoint: Mapping[str, Any], path: Path) -> Generator:
    model = Generator(MidiGanConfig.from_dict(checkpoint["config"]))
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError) as err:
        raise ExportError(f"{path}: the weights do not fit a midigan generator of this config ({err})") from err
    return model.eval()


def parity(model: Generator, path: Path, config: MidiGanConfig, seed: int = 0) -> float:
    """Largest |onnxruntime - PyTorch float64| of the generator's notes: single rows and a batch of 256, at noise
    scales 0.5, 1 and 2 (the host's temperatures)."""
    graph = session(path)
    latent = config.latent
    exact = Generator(config).double().eval()
    exact.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in model.state_dict().items()})
    rng = np.random.default_rng(seed)
    worst = 0.0
    with torch.no_grad():
        for scale in (0.5, 1.0, 2.0):
            z = rng.standard_normal((256, latent)) * scale
            for batch in (z[:1], z[1:2], z):
                (notes,) = graph.run(["notes"], {"z": batch.astype(np.float32)})
                reference = exact(torch.from_numpy(batch.astype(np.float32).astype(np.float64))).numpy()
                worst = max(worst, float(np.abs(notes - reference).max()))
    return worst if np.isfinite(worst) else float("inf")


def export_midigan(checkpoint_path: Path, out: Path, *, name: str | None = None, version: str = "1.0.0") -> Path:
    """Export the generator, check parity, write the package ``out``."""
    checkpoint = read_checkpoint(checkpoint_path, NAME)
    model = model_from_checkpoint(checkpoint, checkpoint_path)
    c = MidiGanConfig.from_dict(checkpoint["config"])
    name = name or out.name
    sample = sample_tunes(checkpoint["held_out_sample"])

    def build(staging: Path) -> tuple[dict[str, Any], str]:
        batch = torch.export.Dim("batch")
        export_graph(
            model,
            (torch.zeros(2, c.latent),),
            staging / FILE,
            inputs=["z"],
            outputs=["notes"],
            dynamic={"z": {0: batch}},
        )
        diff = parity(model, staging / FILE, c)
        log.info("parity: max |onnxruntime - torch float64| = %.3g", diff)
        check_parity(diff, str(staging))
        provenance = checkpoint["provenance"]
        seed_tune = write_seed(staging / "seed.mid", sample, provenance["pitch_min"], provenance["pitch_max"])
        metrics = {**checkpoint["metrics"], "parity_max_abs_diff": diff}
        t = checkpoint["training"]
        manifest: dict[str, Any] = {
            "schema": 1,
            "name": name,
            "family": NAME,
            "kind": "block",
            "version": version,
            "description": (
                f"Dense GAN of single notes (noise {c.latent} -> {'-'.join(map(str, c.widths))} -> pitch, step, "
                f"duration), laid one after another into bars; trained on {provenance['data']}."
            ),
            "seed_phrase": "seed.mid",
            "representation": {
                "grid": SIXTEENTH,
                "block_frames": c.block_frames,
                "context_frames": c.context_frames,
                "latent": c.latent,
                "notes_per_block": c.notes_per_block,
                "attributes": list(ATTRIBUTES),
                "time_unit": "beat",
                "mean": [float(v) for v in checkpoint["standard"]["mean"]],
                "std": [float(v) for v in checkpoint["standard"]["std"]],
                "tanh_reach": [float(v) for v in checkpoint["standard"].get("reach", [1.0] * len(ATTRIBUTES))],
                "beats_max": c.beats_max,
                "pitch_min": int(provenance["pitch_min"]),
                "pitch_max": int(provenance["pitch_max"]),
            },
            "graphs": {
                GRAPH: {
                    "file": FILE,
                    "inputs": [tensor("z", ["batch", c.latent])],
                    "outputs": [tensor("notes", ["batch", len(ATTRIBUTES)])],
                }
            },
            "parameters": {
                "temperature": {"default": DEFAULT_TEMPERATURE, "min": 0.05, "max": 4.0},
                "top_p": {"default": 1.0, "min": 0.05, "max": 1.0},
            },
            "training": {
                "data": provenance["data"],
                "corpus_fingerprint": provenance["corpus_fingerprint"],
                "tunes_train": provenance["tunes_train"],
                "tunes_validation": provenance["tunes_validation"],
                "tunes_held_out": provenance["tunes_held_out"],
                "notes_train": provenance["notes_train"],
                "split": "by tune (sha256 of the tune name): 80% train, 10% validation, 10% held-out",
                "loss": "binary cross-entropy (discriminator: real 1, generated 0; generator: generated 1)",
                "optimiser": (
                    f"Adam lr {c.learning_rate:g} (generator), {c.d_learning_rate or c.learning_rate:g} (discriminator)"
                ),
                "stabilisers": ", ".join(midigan_stabilisers(c)) or "none (the seed's recipe)",
                "batch_size": c.batch_size,
                "generator": (
                    f"{c.latent} -> {' -> '.join(map(str, c.widths))} (BN, LeakyReLU {c.leaky_slope:g}) -> 3 tanh"
                ),
                "discriminator": (
                    f"3 -> {' -> '.join(map(str, reversed(c.widths)))} (LeakyReLU {c.leaky_slope:g}, "
                    f"dropout {c.dropout:g}) -> 1 sigmoid"
                ),
                "epochs": t["epochs_run"],
                "best_epoch": t["best_epoch"],
                "max_epochs": t["max_epochs"],
                "patience": t["patience"],
                "training_seconds": round(float(t["training_seconds"]), 1),
                "threads": t["threads"],
                "seed": provenance["seed"],
                "seed_tune": seed_tune,
                "torch": provenance["torch_version"],
            },
            "metrics": {k: float(v) for k, v in metrics.items()},
        }
        if provenance.get("limit") is not None:
            manifest["training"]["limit"] = provenance["limit"]
        return manifest, midigan_card(name, checkpoint, metrics)

    return write_package(out, name, build)


def midigan_stabilisers(c: MidiGanConfig) -> list[str]:
    """Short names of the stabilisers a config uses (the manifest's ``training.stabilisers``)."""
    names = []
    if c.spectral_norm:
        names.append("spectral normalisation (discriminator)")
    if c.minibatch_std:
        names.append("minibatch standard deviation (discriminator)")
    if c.d_learning_rate and c.d_learning_rate != c.learning_rate:
        names.append(f"two timescales (discriminator lr {c.d_learning_rate:g}, generator {c.learning_rate:g})")
    return names


def midigan_stabiliser_lines(c: MidiGanConfig) -> list[str]:
    """The card's lines on each stabiliser in use."""
    lines = []
    if c.spectral_norm:
        lines.append(
            "**Spectral normalisation** (Miyato et al. 2018) of every dense layer of the discriminator: each weight "
            "matrix divided by its largest singular value, so the discriminator cannot sharpen without bound and the "
            "generator keeps a gradient."
        )
    if c.minibatch_std:
        lines.append(
            "**Minibatch standard deviation** (Karras et al. 2018), a form of minibatch discrimination: the "
            "discriminator's last layer also reads how much the batch's notes differ (the mean standard deviation "
            "of its last hidden layer over the batch, real and generated batches apart), so a generator whose notes "
            "gather around a few values is told apart by that alone. One more input to the last layer; the "
            "discriminator is not shipped."
        )
    if c.d_learning_rate and c.d_learning_rate != c.learning_rate:
        lines.append(
            f"**Two timescales** (Heusel et al. 2017): Adam at {c.d_learning_rate:g} for the discriminator and "
            f"{c.learning_rate:g} for the generator (the seed: 1e-4 for both)."
        )
    return lines


def midigan_card(name: str, checkpoint: Mapping[str, Any], m: Mapping[str, float]) -> str:
    c = MidiGanConfig.from_dict(checkpoint["config"])
    p, t = checkpoint["provenance"], checkpoint["training"]
    mean, std = checkpoint["standard"]["mean"], checkpoint["standard"]["std"]
    reach = checkpoint["standard"].get("reach", [1.0] * len(ATTRIBUTES))
    widths = ", ".join(map(str, c.widths))
    seed_sizes = c.widths == (128, 256, 512)
    sizes = (
        "the seed's sizes"
        if seed_sizes
        else f"**scaled down** from the seed's 128, 256, 512 to {widths} (and the discriminator in reverse)"
    )
    history = checkpoint.get("history", [])
    rows = "\n".join(
        f"| {int(h['epoch'])} | {h['d_loss']:.3f} | {h['g_loss']:.3f} | {h['val_d_accuracy_real']:.3f} "
        f"| {h['val_d_accuracy_fake']:.3f} | {h['val_wasserstein']:.4f} |"
        for h in history
    )
    attribute_rows = "\n".join(
        f"| {a} | {m[f'held_out_{a}_mean']:.2f} ± {m[f'held_out_{a}_std']:.2f} "
        f"| {m[f'generated_{a}_mean']:.2f} ± {m[f'generated_{a}_std']:.2f} "
        f"| {m[f'held_out_{a}_tv']:.3f} | {m[f'baseline_training_notes_{a}_tv']:.3f} |"
        for a in ATTRIBUTES
    )
    per_epoch = int(p["notes_train"]) // c.batch_size
    temperatures = (
        f"default is {DEFAULT_TEMPERATURE:g}, the seed's noise (not tuned on this data: compare "
        "`livegen evaluate --split validation --temperature T`)"
    )
    if p.get("corpus_fingerprint") == TEMPERATURES_MEASURED_ON:
        temperatures = (
            f"default is {DEFAULT_TEMPERATURE:g}, the seed's noise; on the validation tunes of the bundled folk model "
            "(`livegen evaluate --split validation --seeds 32 --bars 8`), MGEval overlap of pitch classes, melodic "
            "intervals and inter-onset intervals: "
            + ", ".join(f"{pcs:.3f} / {iv:.3f} / {ioi:.3f} at {t:g}" for t, pcs, iv, ioi in VALIDATION_TEMPERATURES)
            + "; random notes 0.537 / 0.573 / 0.105"
        )
    lo = [mean[k] - reach[k] * std[k] for k in range(3)]
    hi = [mean[k] + reach[k] * std[k] for k in range(3)]
    if all(r == 1.0 for r in reach):
        tanh_text = f"""- **What `tanh` on standardised data means**: the generator cannot leave mean ± 1 standard
  deviation, i.e. pitches {lo[0]:.1f}-{hi[0]:.1f}, steps and durations up to {hi[1]:.2f} and {hi[2]:.2f} beats. Of the
  held-out notes, {100 * m["held_out_share_within_tanh_reach"]:.0f}% lie inside that box in all three
  attributes; the model cannot play the rest (lower and higher pitches, longer steps and durations).
  This is the seed's design, kept as it is."""
    else:
        tanh_text = f"""- **Standardised data scaled into `tanh`'s reach** (the seed standardises to unit deviation,
  which a `tanh` output cannot leave: its MidiGAN could only play within mean ± 1 deviation, e.g. MIDI 65-76 on
  these tunes): each standardised attribute is divided by {", ".join(f"{r:.2f}" for r in reach)} (pitch, step,
  duration; the package's `representation.tanh_reach`), so that the training notes' farthest value lands at
  `tanh` = ±{c.tanh_fit:g}. The generator's reach is pitches {lo[0]:.1f}-{hi[0]:.1f}, steps and durations up to
  {hi[1]:.2f} and {hi[2]:.2f} beats; {100 * m["held_out_share_within_tanh_reach"]:.0f}% of the held-out notes lie
  inside it in all three attributes."""
    stabilisers = "\n".join(f"- {line}" for line in midigan_stabiliser_lines(c))
    if stabilisers:
        stabilisers = "\nGAN stabilisers that keep the seed's networks and loss:\n\n" + stabilisers + "\n"
    return f"""# {name}

A `midigan` model (livegen `block` kind) after MidiGAN, seed 000 §4.2 (*Comparing Different Neural
Network Architectures for Music Generation*): a GAN whose generator turns a noise vector into **one
note**, its pitch, step (beats since the previous note began) and duration.

## Data

`{p["data"]}`: {p["tunes_train"]} tunes for training, {p["tunes_validation"]} for validation,
{p["tunes_held_out"]} held out (split by a hash of the tune name, as for every livegen model, so
`livegen evaluate` seeds come from tunes the model never saw). Every note after a tune's first is one
sample, {p["notes_train"]} in all; step and duration are clipped to {c.beats_max:g} beats (one bar), then
each attribute is standardised with the training notes' mean and standard deviation (pitch
{mean[0]:.2f} ± {std[0]:.2f}, step {mean[1]:.3f} ± {std[1]:.3f} beats, duration {mean[2]:.3f} ± {std[2]:.3f}
beats; the package's `representation.mean` and `std`).

## Model and training: what is the seed's and what differs

Kept: noise of {c.latent}; a generator of dense layers {widths}, each followed by batch normalisation and a
LeakyReLU, and a dense `tanh` output of the three standardised attributes; a discriminator of dense
layers {", ".join(map(str, reversed(c.widths)))}, each followed by dropout {c.dropout:g}, and a sigmoid
output; binary cross-entropy for both; Adam at {c.learning_rate:g} for both; batches of {c.batch_size}.
Layer sizes: {sizes}. Only the generator is shipped. What is scaled down for two CPU cores: only the
number of epochs (below), so that training fits about 20 minutes on one thread of a machine shared with
other jobs.

- **Not in the seed, chosen here**: LeakyReLU slope {c.leaky_slope:g} in both networks (the seed names no
  slope, and no activation for the discriminator's layers); the sigmoid sits inside the loss
  (`BCEWithLogits`, the same function computed stably).
- **Data**: music21's folk tunes instead of 5-10 MAESTRO piano files (the project's monophonic corpus; a
  GAN of independent notes has no way to place chords anyway).
- **Epochs and model selection**: {t["epochs_run"]} epochs ran (passes over the training notes, {per_epoch}
  batches each; the seed ran 25 or 50 over its 5 or 10 files), {t["training_seconds"]:.0f} s wall time
  ({t["total_seconds"]:.0f} s with loading and evaluation) on {t["threads"]} thread(s); the generator kept is
  epoch {t["best_epoch"]}'s, the one whose notes (drawn in inference mode, as exported) lie nearest the
  validation notes (mean 1-D Wasserstein distance over the three standardised attributes). The seed
  chose its models by listening.
{tanh_text}
{stabilisers}
| epoch | D loss | G loss | D accuracy, real validation notes | D accuracy, generated notes | validation Wasserstein |
|---:|---:|---:|---:|---:|---:|
{rows}

Final figures (epoch {t["epochs_run"]}, training-batch means): discriminator loss {m["final_d_loss"]:.3f},
generator loss {m["final_g_loss"]:.3f} (chance, a discriminator that cannot tell: 1.386 and 0.693). On held-out
notes the kept discriminator calls {100 * m["held_out_d_accuracy_real"]:.0f}% of real notes real and
{100 * m["held_out_d_accuracy_fake"]:.0f}% of generated notes fake (the seed reports these for ImageGAN;
50% / 50% would be a generator it cannot tell from the data).

## How the generated notes compare with held-out notes

Attributes as the host plays them (pitch rounded, step and duration in 16ths, at least one). Total
variation distance of the histograms: 0 = the same, 1 = disjoint; the training notes' own distance to
the held-out notes is the ceiling for any model of independent notes.

| attribute | held-out (mean ± sd) | generated (mean ± sd) | generated vs held-out (TV) | training vs held-out (TV) |
|---|---:|---:|---:|---:|
{attribute_rows}

Generated pitches span {m["generated_pitch_min"]:.0f}-{m["generated_pitch_max"]:.0f}. Laid one after another, the
generated steps fill a bar with {m["generated_notes_per_bar"]:.1f} notes on average (held-out steps:
{m["held_out_notes_per_bar"]:.1f}).

## How livegen plays it: notes laid into bars, and what that means for musical structure

The seed generated each note on its own from its own noise vector and strung them into a song; livegen
does the same one bar at a time. For a bar it draws {c.notes_per_block} notes per candidate (all candidates
in one call of the graph) and lays them one after another: the first its step after the last note heard
before the bar, each next one its step after the one before, on the 16th grid, until the bar is full; a
note ends where the next begins; steps are rounded to the performer's grid (quarters, eighths or 16ths,
the coarsest holding 85% of their recent onsets). Each generated pitch, a continuous number, becomes the
nearest pitch the key allows: the jam's `--key` when one is given, else the key the performer plays in
(the major or natural-minor scale holding most of their notes of the last four bars; before anyone has
played, the nearest semitone), a pitch repeating only where the numbers are within half a semitone. The
block host then draws `candidates` such bars (8 by default) and keeps the one whose
pitch classes, register and density best fit the bar just heard.

What this means musically:

- **No melody beyond the single note.** Consecutive pitches are independent draws, so the intervals are
  those of two random notes of the corpus's pitch distribution: no stepwise motion, no contour, no
  cadence. Pitch is one continuous number, so the generator has no notion of a scale: its pitches follow
  the corpus as a whole (all keys of the folk tunes pooled) as far as a smooth distribution can; the key
  its notes keep to is the host's rounding, not the model's.
- **Rhythm without metre.** Steps are drawn independently too, so onsets drift across the beat: there is
  no preference for downbeats, no repeated rhythmic figure, and the bar lines are where livegen cuts,
  not where the music articulates. The mix of step lengths is the corpus's as far as the generator
  learned it (the table above).
- **Structure comes only from the host.** Choosing among candidates the bar that best fits what was just
  heard pulls the pitch classes toward the performer's key and the register and density toward theirs,
  bar by bar; within a bar nothing connects the notes. Over several bars nothing repeats on purpose.

The Evaluation below scores whole continuations against what the held-out tunes really play. A model of
independent notes is not expected to match a tune's pitch classes and intervals: each tune keeps to one
key and moves mostly by step, while these notes come from all keys pooled and leap at random; random notes
over the seed's own range at least share the seed's register and spread. The seed found the same by ear:
"the notes still sounding rather random", "dissonant".

The temperature scales the noise: below 1 the notes gather at the generator's most common note, above 1
they spread to the edges of its range (never past `tanh`'s reach, above). The {temperatures}. Top-p truncates the
noise (each component redrawn until it lies in the central top-p of the normal distribution; the
package's default is 1, no truncation).

Export parity: the largest difference between onnxruntime and PyTorch in float64 over single noise vectors
and a batch of 256, at noise scales 0.5, 1 and 2, is {m["parity_max_abs_diff"]:.2g} (accepted: 1e-4).
"""


FAMILY = Family(
    NAME,
    options=MidiGanOptions,
    config=MidiGanConfig,
    train=train_midigan,
    export=export_midigan,
    card=midigan_card,
    recipes=RECIPES,
)
