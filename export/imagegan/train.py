"""Training of ``imagegan``: piano-roll images of the corpus, the adversarial loop, the figures and the checkpoint.

Context: setup (training; imports torch, never imported by the host).
"""

from __future__ import annotations

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
    resume_loop,
    save_checkpoint,
    split_provenance,
    training_record,
    tune_sample,
)
from export.distributed import (
    Checkpoints,
    RunOptions,
    average_gradients,
    broadcast_module,
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
from export.frames import FRAMES_PER_BEAT
from export.imagegan.model import NAME, Discriminator, Generator, ImageGanConfig, sample_images
from livegen.models.block import notes_of_block
from livegen.models.frames import RollNote, note_frames, notes_to_roll
from livegen.music.corpus import Tune, load_corpus, split_by_tune
from livegen.music.time import PPQN, SIXTEENTH

log = logging.getLogger(__name__)


#: Temperatures tried for the package's default (:func:`choose_temperature`).
TEMPERATURES = (1.0, 0.5, 0.75)


def tune_notes(tune: Tune) -> list[RollNote]:
    """The tune's notes on the 16th grid, from its first onset (all voices; pitches as they are)."""
    first = float(tune.onset[0])
    notes = []
    for pitch, onset, duration in zip(tune.pitch, tune.onset, tune.duration, strict=True):
        start, frames = note_frames(round((float(onset) - first) * PPQN), round(float(duration) * PPQN), SIXTEENTH)
        notes.append(RollNote(start, frames, int(pitch)))
    return notes


def tune_images(tune: Tune, config: ImageGanConfig) -> np.ndarray:
    """uint8 [n, window, keys]: the tune's roll from every ``stride``-th frame on, whole images only;
    images with no sounding pixel (pitches outside the range, rests) are left out."""
    notes = tune_notes(tune)
    length = max(n.end for n in notes)
    roll = notes_to_roll(notes, 0, length, config.pitch_min, config.keys)
    images = [roll[s : s + config.window] for s in range(0, length - config.window + 1, config.stride)]
    images = [image for image in images if image.any()]
    if not images:
        return np.zeros((0, config.window, config.keys), dtype=np.uint8)
    return np.stack(images).astype(np.uint8)


def make_images(tunes: Sequence[Tune], config: ImageGanConfig) -> torch.Tensor:
    parts = [tune_images(t, config) for t in tunes]
    parts = [p for p in parts if len(p)]
    if not parts:
        return torch.zeros(0, config.window, config.keys, dtype=torch.uint8)
    return torch.from_numpy(np.concatenate(parts))


def image_statistics(images: np.ndarray, pitch_min: int, max_hold: int = 16) -> dict[str, float]:
    """Of binary images [n, frames, keys]: notes per beat (a run of pixels in a key is one note, cut every
    ``max_hold`` frames as the host does), keys sounding per frame, mean note length in frames, and the share of
    notes one 16th long."""
    notes = []
    for image in images:
        for n in notes_of_block(image, pitch_min):
            pieces = max(1, math.ceil(n.frames / max_hold))
            notes += [min(max_hold, n.frames - i * max_hold) for i in range(pieces)]
    frames = images.shape[0] * images.shape[1]
    lengths = np.asarray(notes, dtype=np.float64)
    return {
        "notes_per_beat": len(notes) / max(frames / FRAMES_PER_BEAT, 1e-9),
        "keys_per_frame": float(images.sum()) / max(frames, 1),
        "note_frames": float(lengths.mean()) if len(lengths) else 0.0,
        "sixteenth_share": float((lengths == 1).mean()) if len(lengths) else 0.0,
    }


@dataclass(frozen=True, slots=True)
class ImageGanOptions(TrainingOptions):
    epochs: int = 40
    patience: int = 5  # not used: a GAN has no validation loss to stop on (the seed ran a fixed number of epochs)
    config: ImageGanConfig = field(default_factory=ImageGanConfig)


def _accuracy(logits: torch.Tensor, real: bool) -> float:
    """The share the discriminator classifies correctly (its probability of "real" above 0.5, or not)."""
    return float(((logits > 0) == real).float().mean())


def present(logits: torch.Tensor, config: ImageGanConfig, rng: torch.Generator) -> torch.Tensor:
    """Fakes as the discriminator sees them, from the generator's pixel logits [batch, frames, keys]: their
    probabilities, or with ``binarise`` their draw (:func:`livegen.models.imagegan.draw_pixels`' thresholds, one per
    key and image, without its cap on keys per frame) with the gradient of the logits (straight-through past the
    sigmoid too: a generator whose pixels are near 0 or 1 would get almost none through it)."""
    probabilities = torch.sigmoid(logits)
    if not config.binarise:
        return probabilities
    thresholds = torch.rand(logits.shape[0], 1, logits.shape[2], generator=rng)
    hard = (probabilities > thresholds).to(logits.dtype)
    return hard + logits - logits.detach()


def gan_figures(
    generator: Generator, discriminator: Discriminator, images: torch.Tensor, rng: torch.Generator
) -> dict[str, float]:
    """Both nets in eval mode on ``images`` (real) and as many fakes: the seed's four numbers.

    Discriminator loss: the mean of its binary cross-entropy on the real images (label 1)
    and on the fakes (label 0); generator loss: its cross-entropy on the fakes labelled real.
    """
    generator.eval()
    discriminator.eval()
    with torch.no_grad():
        z = torch.randn(len(images), generator.config.latent, generator=rng)
        fake = present(generator(z), generator.config, rng)
        real_logits = discriminator(images.float())
        fake_logits = discriminator(fake)
        ones, zeros = torch.ones_like(real_logits), torch.zeros_like(fake_logits)
        d_real = F.binary_cross_entropy_with_logits(real_logits, ones)
        d_fake = F.binary_cross_entropy_with_logits(fake_logits, zeros)
        g_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    return {
        "discriminator_loss": float(0.5 * (d_real + d_fake)),
        "generator_loss": float(g_loss),
        "accuracy_real": _accuracy(real_logits, True),
        "accuracy_fake": _accuracy(fake_logits, False),
    }


def texture_figures(images: np.ndarray) -> dict[str, float]:
    """Of binary images [n, frames, keys]: ``diversity``, the mean share of pixels in which two images differ
    (image ``i`` against image ``i + n // 2``: near 0 when the generator draws one image whatever the latent, the
    GAN's mode collapse), and ``onbeat_share``, the share of note onsets on a beat (frame 0 mod 4; the images
    start on a piece's first note)."""
    half = len(images) // 2
    a, b = images[:half].astype(bool), images[half : 2 * half].astype(bool)
    diversity = float((a != b).mean()) if half else 0.0
    onsets = images.astype(bool) & ~np.pad(images.astype(bool), ((0, 0), (1, 0), (0, 0)))[:, :-1]
    per_frame = onsets.sum(axis=(0, 2))
    total = int(per_frame.sum())
    return {"diversity": diversity, "onbeat_share": float(per_frame[0::FRAMES_PER_BEAT].sum()) / max(total, 1)}


def choose_temperature(
    generator: Generator, true_notes_per_beat: float, seed: int = 0
) -> tuple[float, dict[str, float]]:
    """The package's default temperature: of :data:`TEMPERATURES`, the one whose drawn images come nearest
    the real density (notes per beat) by more than 0.1 than temperature 1 does (else 1, the latent the GAN was
    trained on), and the figures of each."""
    figures: dict[str, float] = {}
    best, gap = 1.0, math.inf
    for t in TEMPERATURES:
        stats = image_statistics(sample_images(generator, 256, seed, t), generator.config.pitch_min)
        figures |= {f"generated_t{t:g}_{k}": v for k, v in stats.items() if k in ("notes_per_beat", "sixteenth_share")}
        if abs(stats["notes_per_beat"] - true_notes_per_beat) < gap - (1e-9 if t == 1.0 else 0.1):
            best, gap = t, abs(stats["notes_per_beat"] - true_notes_per_beat)
    return best, figures


def train_gan(
    generator: Generator,
    discriminator: Discriminator,
    images: torch.Tensor,
    config: ImageGanConfig,
    *,
    epochs: int,
    seed: int,
    run: RunOptions | None = None,
    out: Path | None = None,
) -> FitResult:
    """The seed's alternating updates: the discriminator on a batch of real images (label 1) and as many fakes
    (label 0), then the generator on fresh fakes labelled real; Adam (``learning_rate``, ``beta1``) for both.
    History per epoch: mean losses and the discriminator's accuracy on real and fake during the epoch.

    Under torchrun each rank trains on its shard of every epoch's order with noise of its own, gradients
    are averaged across ranks and batch-norm buffers follow rank 0's. The loop keeps ``out/last.pt``
    (see :mod:`export.distributed`), so an interrupted run continues to the same weights."""
    run = run or RunOptions()
    w = world()
    seed_ranks(seed)
    broadcast_module(generator, discriminator)
    generator_rng = torch.Generator().manual_seed(seed)
    noise_rng = rank_generator(generator_rng, seed)
    betas = (config.beta1, 0.999)
    g_opt = torch.optim.Adam(generator.parameters(), lr=config.learning_rate, betas=betas)
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=config.d_learning_rate or config.learning_rate, betas=betas)
    n = len(images)
    per_rank = len(shard(torch.arange(n)))
    steps = max(1, epochs * math.ceil(per_rank / config.batch_size) - 1)
    identity = {
        "loop": "imagegan",
        **model_identity(generator, discriminator),
        "config": config.to_dict(),
        "images": n,
        "seed": seed,
        "epochs": epochs,
    }
    objects: dict[str, Any] = {
        "generator": generator,
        "discriminator": discriminator,
        "g_opt": g_opt,
        "d_opt": d_opt,
        "shuffle": generator_rng,
    }
    if noise_rng is not generator_rng:
        objects["noise"] = noise_rng
    checkpoints = Checkpoints(out, run, identity)
    keys = ("discriminator_loss", "generator_loss", "accuracy_real", "accuracy_fake")
    with checkpoints.phase("gan", objects) as phase:
        restored = phase.restore()
        done = finished_fit(restored)
        if done is not None:
            return done
        state: dict[str, Any] = {"epoch": 1, "batch": 0, "order": None, "step": 0, "history": [], "seconds": 0.0}
        local: dict[str, float] = {**dict.fromkeys(keys, 0.0), "batches": 0.0}
        state, local, snapshot = resume_loop(restored, state, local)

        def noisy(batch: torch.Tensor) -> torch.Tensor:
            sd = config.noise_start + (config.noise_end - config.noise_start) * min(1.0, state["step"] / steps)
            return batch + sd * torch.randn(batch.shape, generator=noise_rng) if sd > 0 else batch

        while state["epoch"] <= epochs:
            epoch = state["epoch"]
            epoch_started = time.perf_counter()
            generator.train()
            discriminator.train()
            if state["order"] is None:
                state["order"] = torch.randperm(n, generator=generator_rng)
                local.update(dict.fromkeys(local, 0.0))
            mine = shard(state["order"])
            starts = list(range(0, len(mine) - 1, config.batch_size))
            for j in range(state["batch"], len(starts)):
                i = starts[j]
                index = mine[i : i + config.batch_size]
                real = images[index].float()
                state["batch"] = j + 1
                if len(real) < 2:
                    continue
                b = len(real)
                z = torch.randn(b, config.latent, generator=noise_rng)
                fake = present(generator(z), config, noise_rng)
                # real and fake go through the discriminator as one batch, so its batch normalisation
                # sees the same mix in both steps (separate batches would normalise the difference away)
                logits = discriminator(noisy(torch.cat([real, fake.detach()])), groups=2)
                real_logits, fake_logits = logits[:b], logits[b:]
                if config.loss == "hinge":
                    d_real = F.relu(config.real_label - real_logits).mean()
                    d_fake = F.relu(1.0 + fake_logits).mean()
                else:
                    d_real = F.binary_cross_entropy_with_logits(
                        real_logits, torch.full_like(real_logits, config.real_label)
                    )
                    d_fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
                d_loss = 0.5 * (d_real + d_fake)
                d_opt.zero_grad(set_to_none=True)
                d_loss.backward()
                average_gradients(discriminator.parameters())
                d_opt.step()
                z = torch.randn(b, config.latent, generator=noise_rng)
                fake = present(generator(z), config, noise_rng)
                judged = discriminator(noisy(torch.cat([real, fake])), groups=2)[b:]
                if config.loss == "hinge":
                    g_loss = -judged.mean()
                else:
                    g_loss = F.binary_cross_entropy_with_logits(judged, torch.ones_like(judged))
                g_opt.zero_grad(set_to_none=True)
                g_loss.backward()
                average_gradients(generator.parameters())
                g_opt.step()
                sync_buffers(generator, discriminator)
                local["discriminator_loss"] += float(d_loss.detach())
                local["generator_loss"] += float(g_loss.detach())
                local["accuracy_real"] += _accuracy(real_logits.detach(), True)
                local["accuracy_fake"] += _accuracy(fake_logits.detach(), False)
                local["batches"] += 1
                state["step"] += 1
                phase.after_batch(snapshot, lambda: dict(local), batch=index)
            batches = max(local["batches"], 1)
            means = {k: mean(local[k] / batches) for k in keys}
            seconds = time.perf_counter() - epoch_started
            state["history"].append({"epoch": float(epoch), **means, "seconds": seconds})
            log.info(
                "epoch %d: discriminator loss %.4f, generator loss %.4f, accuracy on real %.3f, on fake %.3f, %.1f s%s",
                epoch,
                means["discriminator_loss"],
                means["generator_loss"],
                means["accuracy_real"],
                means["accuracy_fake"],
                seconds,
                f" ({w.size} processes)" if w.distributed else "",
            )
            if not all(math.isfinite(v) for v in means.values()):
                raise ExportError(f"the GAN's losses became {means} at epoch {epoch}; lower the learning rate")
            state |= {"epoch": epoch + 1, "batch": 0, "order": None}
            phase.after_epoch(snapshot, lambda: {**dict.fromkeys(keys, 0.0), "batches": 0.0})
        model_state = {f"generator.{k}": v.clone() for k, v in generator.state_dict().items()}
        model_state |= {f"discriminator.{k}": v.clone() for k, v in discriminator.state_dict().items()}
        history = state["history"]
        result = finish_fit(
            phase, FitResult(model_state, history, epochs, float(history[-1]["generator_loss"]), snapshot()["seconds"])
        )
    return result


def train_imagegan(options: ImageGanOptions) -> Path:
    """Train on ``options.data`` for ``options.epochs`` epochs, measure; write ``checkpoint.pt``."""
    c = options.config
    c.check()
    started = options.begin()
    with main_first():  # rank 0 converts and caches a corpus: the other ranks read its cache
        tunes = load_corpus(options.data, limit=options.limit)
    split = split_by_tune(tunes)
    train, val, held = (make_images(part, c) for part in (split.train, split.validation, split.held_out))
    if len(train) < 2 or not len(val) or not len(held):
        raise ExportError(f"{options.data}: the pieces are too short for images of {c.window} frames")
    log.info(
        "data %s: %d pieces (train %d, validation %d, held-out %d); %d training images of %d x %d",
        options.data,
        len(tunes),
        len(split.train),
        len(split.validation),
        len(split.held_out),
        len(train),
        c.window,
        c.keys,
    )
    torch.manual_seed(options.seed)
    generator, discriminator = Generator(c), Discriminator(c)
    result = train_gan(
        generator, discriminator, train, c, epochs=options.epochs, seed=options.seed, run=options.run, out=options.out
    )
    if not world().main:  # rank 0 evaluates and writes the checkpoint
        return options.out / "checkpoint.pt"
    rng = torch.Generator().manual_seed(options.seed + 1)
    held_figures = gan_figures(generator, discriminator, held, rng)
    fakes = sample_images(generator, min(512, max(len(held), 64)), options.seed)
    generated = image_statistics(fakes, c.pitch_min, c.max_hold)
    real = image_statistics(held.numpy(), c.pitch_min, c.max_hold)
    last = result.history[-1]
    metrics = {
        "final_discriminator_loss": last["discriminator_loss"],
        "final_generator_loss": last["generator_loss"],
        "final_accuracy_real": last["accuracy_real"],
        "final_accuracy_fake": last["accuracy_fake"],
        **{f"held_out_{k}": v for k, v in held_figures.items()},
        **{f"generated_{k}": v for k, v in generated.items()},
        **{f"held_out_true_{k}": v for k, v in real.items()},
    }
    log.info("final: %s", ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
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
            "images_train": len(train),
            "torch_version": str(torch.__version__),
        },
        training=training_record(result, max_epochs=options.epochs, patience=options.patience, started=started),
        history=result.history,
        metrics=metrics,
        held_out_sample=tune_sample(split.held_out),
    )
