"""The ``imagegan`` family (seed 000 §4.3): a convolutional GAN over piano-roll images, as a ``block`` model.

Context: setup (training and export; imports torch, never imported by the host).

The seed turns MIDI files into images, rows the pitches and columns the time steps
(106 x 100), and trains a GAN on them: the generator maps a 10-dimensional latent
through four dense layers, one transposed convolution and one convolution, each
followed by LeakyReLU (slope 0.2) and dropout (0.2); the discriminator has two blocks
of a 16-channel convolution, dropout, LeakyReLU and dropout again, then flattening,
batch normalisation, dropout and a dense decision. Both train with binary
cross-entropy and Adam (learning rate 2e-4, beta1 0.5); the seed reports the
discriminator's and the generator's losses and the discriminator's accuracy on real
and on fake images.

Here an image is a block of the piano roll on livegen's grid: ``block_frames`` 16ths
(four bars) by ``keys`` pitches from ``pitch_min``. The generator's output is a logit
per pixel (the sigmoid is the loss's); the host draws pixels from it at the live
temperature and turns runs of sounding pixels into notes
(:func:`livegen.models.block.notes_of_block`).

What differs from the seed, and why (the model card says it too):

- Bach chorales (``corpus:bach``), not a folder of classical piano MIDI: the project
  ships music21's chorales, and they are the polyphonic classical music an image of
  simultaneous notes is made for. 64 x 48 images (four bars of 16ths by four octaves),
  not 106 x 100: a whole number of bars on the host's grid, the chorales' range.
- An image starts every bar's length (16 frames) from a piece's first note; the corpus
  keeps no bar lines and most chorales open with a one-beat pickup, so the model does
  not know where a bar starts.
- Dense layers of 64, 128 and 256 units and 8 x 16 x 12 before the upsampling (by 4): small enough to
  train in minutes on two CPU cores and to ship a generator of 2 MB.
- GAN stabilisers, ``ImageGanConfig`` fields that default to the seed's recipe (the card lists those in
  use as departures): ``upsampling = "nearest"`` (upsampling then a convolution in place of the transposed
  convolution, whose taps depend on a frame's position mod 4: v1.0.0's generator gives a pixel on frame
  2 mod 4 a mean probability of 0.06 against 0.16-0.20 on frames 0 and 1, so a held note breaks and is
  struck again every 4 16ths), ``generator_dropout``, one-sided label smoothing (``real_label``),
  instance noise (``noise_start`` -> ``noise_end``), the discriminator's own learning rate
  (``d_learning_rate``; above the generator's, two timescales), spectral normalisation of the
  discriminator (``spectral_norm``) and the minibatch standard deviation (``minibatch_std``).
  ``--recipe stable`` (:data:`RECIPES`) keeps the seed's binary cross-entropy, so its figures compare with
  the seed's, and adds nearest upsampling, no generator dropout, spectral normalisation, the minibatch
  standard deviation, two timescales and binary fakes (``binarise``: the discriminator sees fakes drawn
  0/1 as the host draws them, with a straight-through gradient, as real images are 0/1).
- The seed keeps the last epoch; so does this (a GAN has no validation loss to stop
  on: ``patience`` is not used).
"""

from __future__ import annotations

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
from export.family import Family
from export.frames import FRAMES_PER_BEAT
from export.seed import write_seed
from livegen.models.block import notes_of_block
from livegen.models.frames import RollNote, note_frames, notes_to_roll
from livegen.models.imagegan import draw_pixels
from livegen.music.corpus import Tune, load_corpus, split_by_tune
from livegen.music.time import PPQN, SIXTEENTH

log = logging.getLogger(__name__)

NAME = "imagegan"
SLOPE = 0.2
#: Frames of a bar (4/4 in 16ths): block sizes are whole bars.
BAR_FRAMES = 16
#: Temperatures tried for the package's default (:func:`choose_temperature`).
TEMPERATURES = (1.0, 0.5, 0.75)


@dataclass(frozen=True, slots=True)
class ImageGanConfig(ConfigRecord):
    """Sizes and optimiser. ``window``: frames per image (the block); ``hidden``: the widest dense layer."""

    latent: int = 10
    hidden: int = 256
    channels: int = 8
    upsample: int = 4
    filters: int = 16
    disc_filters: int = 16
    dropout: float = 0.2
    #: the generator's dropout (the discriminator's is ``dropout``); the seed's is 0.2, see the card
    generator_dropout: float = 0.2
    window: int = 64
    pitch_min: int = 36
    keys: int = 48
    stride: int = BAR_FRAMES
    batch_size: int = 64
    learning_rate: float = 2e-4
    beta1: float = 0.5
    polyphony: int = 4
    max_hold: int = 16
    #: "nearest" (nearest-neighbour upsampling by ``upsample``, then a convolution of kernel ``2 * upsample - 1``)
    #: or "transpose" (the seed's transposed convolution, kernel ``2 * upsample``, stride ``upsample``)
    upsampling: str = "transpose"
    #: the discriminator's target for real images (one-sided label smoothing; 1 is the seed's)
    real_label: float = 1.0
    #: instance noise: the standard deviation of Gaussian noise added to every image the discriminator
    #: sees in training, falling linearly from ``noise_start`` at the first step to ``noise_end`` at the last
    noise_start: float = 0.0
    noise_end: float = 0.0
    #: minibatch standard deviation (Karras et al. 2018): the discriminator's head also sees how much the
    #: images of a batch differ, so a generator drawing one image whatever the latent is told apart
    minibatch_std: bool = False
    #: the discriminator's learning rate (the generator's is ``learning_rate``); 0 = ``learning_rate``
    d_learning_rate: float = 0.0
    #: spectral normalisation (Miyato et al. 2018) of the discriminator's convolutions and dense layer
    spectral_norm: bool = False
    #: the discriminator sees fakes drawn as the host draws them, 0/1 like the real images (a pixel on when its
    #: probability is above a threshold drawn per key and image), the generator's gradient passing straight
    #: through the draw (Dong and Yang 2018); False: the seed's probabilities
    binarise: bool = False
    #: "bce" (the seed's binary cross-entropy, the generator's non-saturating form) or "hinge" (Lim and Ye 2017,
    #: Miyato et al. 2018): the discriminator minimises relu(1 - D(real)) + relu(1 + D(fake)), the generator -D(fake)
    loss: str = "bce"

    @property
    def dense(self) -> tuple[int, int, int]:
        """The widths of the first three dense layers (the fourth reshapes into the convolution's input)."""
        return (max(1, self.hidden // 4), max(1, self.hidden // 2), self.hidden)

    def check(self) -> None:
        if self.window < BAR_FRAMES or self.window % BAR_FRAMES:
            raise ExportError(f"--window {self.window}: expected whole bars of 16ths (16, 32, 48, 64, ...)")
        if self.upsample not in (2, 4) or self.keys % self.upsample:
            raise ExportError(f"upsample {self.upsample}, keys {self.keys}: expected 2 or 4 dividing the keys")
        if not 8 <= self.hidden <= 2048:
            raise ExportError(f"--hidden {self.hidden}: expected 8 to 2048 units")
        if self.loss not in ("bce", "hinge"):
            raise ExportError(f"loss {self.loss!r}: expected 'bce' or 'hinge'")
        if self.upsampling not in ("nearest", "transpose"):
            raise ExportError(f"upsampling {self.upsampling!r}: expected 'nearest' or 'transpose'")
        if not 0.5 < self.real_label <= 1.0:
            raise ExportError(f"real_label {self.real_label}: expected above 0.5 and at most 1")
        if not (0 <= self.dropout < 1 and 0 <= self.generator_dropout < 1):
            raise ExportError(f"dropout {self.dropout}, generator_dropout {self.generator_dropout}: expected 0 to 1")
        if self.noise_start < 0 or self.noise_end < 0 or self.d_learning_rate < 0:
            raise ExportError("noise_start, noise_end and d_learning_rate: expected at least 0")
        if self.batch_size < 2:
            raise ExportError(f"--batch-size {self.batch_size}: expected at least 2 (batch normalisation)")
        if self.pitch_min < 0 or self.pitch_min + self.keys > 128:
            raise ExportError(f"pitch_min {self.pitch_min} + keys {self.keys}: expected MIDI pitches 0..127")


#: ``python -m export train imagegan --recipe NAME``: config fields over the defaults (the seed's recipe).
RECIPES: dict[str, dict[str, object]] = {
    "seed": {},
    "stable": {
        "upsampling": "nearest",
        "generator_dropout": 0.0,
        "spectral_norm": True,
        "minibatch_std": True,
        "d_learning_rate": 4e-4,
        "binarise": True,
        "loss": "hinge",
    },
}


class Generator(nn.Module):
    """Latent [batch, latent] -> pixel logits [batch, frames, keys]."""

    def __init__(self, config: ImageGanConfig) -> None:
        super().__init__()
        c = config
        self.config = config
        self.rows, self.cols = c.window // c.upsample, c.keys // c.upsample
        d1, d2, d3 = c.dense
        layers: list[nn.Module] = []
        for a, b in ((c.latent, d1), (d1, d2), (d2, d3), (d3, c.channels * self.rows * self.cols)):
            layers += [nn.Linear(a, b), nn.LeakyReLU(SLOPE), nn.Dropout(c.generator_dropout)]
        self.dense = nn.Sequential(*layers)
        s = c.upsample
        grow: list[nn.Module]
        if c.upsampling == "transpose":
            # kernel 2s, stride s, padding s/2: exactly s x the rows and columns, each output pixel from 2 x 2
            # inputs, but through taps that depend on the pixel's position mod s (a period of s frames)
            grow = [nn.ConvTranspose2d(c.channels, c.filters, 2 * s, stride=s, padding=s // 2)]
        else:
            # every output pixel through the same taps: no period of s frames
            grow = [
                nn.Upsample(scale_factor=s, mode="nearest"),
                nn.Conv2d(c.channels, c.filters, 2 * s - 1, padding=s - 1),
            ]
        self.up = nn.Sequential(*grow, nn.LeakyReLU(SLOPE), nn.Dropout(c.generator_dropout))
        self.out = nn.Conv2d(c.filters, 1, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.dense(z).reshape(-1, self.config.channels, self.rows, self.cols)
        return self.out(self.up(x))[:, 0]


def _normed(layer: nn.Module, config: ImageGanConfig) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(layer) if config.spectral_norm else layer


class Discriminator(nn.Module):
    """Image [batch, frames, keys] (0..1) -> the logit of "real"."""

    def __init__(self, config: ImageGanConfig) -> None:
        super().__init__()
        c = config
        f = c.disc_filters
        blocks: list[nn.Module] = []
        for a in (1, f):
            blocks += [
                _normed(nn.Conv2d(a, f, 3, stride=2, padding=1), c),
                nn.Dropout(c.dropout),
                nn.LeakyReLU(SLOPE),
                nn.Dropout(c.dropout),
            ]
        self.blocks = nn.Sequential(*blocks)
        self.minibatch_std = c.minibatch_std
        flat = (f + int(c.minibatch_std)) * math.ceil(c.window / 4) * math.ceil(c.keys / 4)
        self.head = nn.Sequential(
            nn.Flatten(), nn.BatchNorm1d(flat), nn.Dropout(c.dropout), _normed(nn.Linear(flat, 1), c)
        )

    def forward(self, image: torch.Tensor, groups: int = 1) -> torch.Tensor:
        """``groups``: the batch is that many equal parts (real, fake) whose spread is measured apart."""
        h = self.blocks(image.unsqueeze(1))
        if self.minibatch_std:
            parts = []
            for part in h.chunk(groups):
                spread = part.std(dim=0, unbiased=False).mean() if len(part) > 1 else part.new_zeros(())
                parts.append(spread.expand(len(part), 1, *h.shape[2:]))
            h = torch.cat([h, torch.cat(parts)], dim=1)
        return self.head(h)[:, 0]


# ---- data ------------------------------------------------------------------------------


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


# ---- training --------------------------------------------------------------------------


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


def sample_images(generator: Generator, count: int, seed: int, temperature: float = 1.0) -> np.ndarray:
    """``count`` images drawn as the host draws them (latent times ``temperature``, :func:`draw_pixels`),
    uint8 [count, frames, keys]."""
    generator.eval()
    c = generator.config
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((count, c.latent)) * temperature).astype(np.float32)
    with torch.no_grad():
        logits = generator(torch.from_numpy(z)).numpy()
    return draw_pixels(logits, temperature, rng.random((count, c.keys)), c.polyphony).astype(np.uint8)


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
            "data": options.data,
            "limit": options.limit,
            "seed": options.seed,
            "corpus_fingerprint": fingerprint([t.name for t in tunes], [t.pitch for t in tunes]),
            "pieces_train": len(split.train),
            "pieces_validation": len(split.validation),
            "pieces_held_out": len(split.held_out),
            "images_train": len(train),
            "torch_version": str(torch.__version__),
        },
        training=training_record(result, max_epochs=options.epochs, patience=options.patience, started=started),
        history=result.history,
        metrics=metrics,
        held_out_sample=tune_sample(split.held_out),
    )


# ---- export ----------------------------------------------------------------------------


def models_from_checkpoint(checkpoint: Mapping[str, Any], path: Path) -> tuple[Generator, Discriminator]:
    config = ImageGanConfig.from_dict(checkpoint["config"])
    generator, discriminator = Generator(config), Discriminator(config)
    state = checkpoint["state_dict"]
    try:
        for prefix, model in (("generator.", generator), ("discriminator.", discriminator)):
            model.load_state_dict({k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)})
    except (RuntimeError, KeyError) as err:
        raise ExportError(f"{path}: the weights do not fit an imagegan of this config ({err})") from err
    return generator.eval(), discriminator.eval()


def parity(generator: Generator, path: Path, latents: np.ndarray) -> float:
    """Largest |onnxruntime - PyTorch float64| / max(1, |PyTorch|) of the logits, each latent alone and all as one
    batch: relative where a logit is above 1 in size, since a trained generator's pixel logits run to tens (a
    float32 sum of hundreds of terms of that size is exact to about 1e-6 of it, not to 1e-6 absolute)."""
    graph = session(path)
    exact = Generator(generator.config).double().eval()
    exact.load_state_dict({k: v.double() for k, v in generator.state_dict().items()})
    worst = 0.0
    with torch.no_grad():
        for z in [latents[i : i + 1] for i in range(len(latents))] + [latents]:
            reference = exact(torch.from_numpy(z).double()).numpy()
            (logits,) = graph.run(["logits"], {"z": z.astype(np.float32)})
            worst = max(worst, float((np.abs(logits - reference) / np.maximum(1.0, np.abs(reference))).max()))
    return worst if np.isfinite(worst) else float("inf")


def export_imagegan(checkpoint_path: Path, out: Path, *, name: str | None = None, version: str = "1.0.0") -> Path:
    """Export the generator alone as one graph (``z`` -> ``logits``), check parity, write the package ``out``."""
    checkpoint = read_checkpoint(checkpoint_path, NAME)
    generator, _ = models_from_checkpoint(checkpoint, checkpoint_path)
    c = generator.config
    name = name or out.name
    latents = np.random.default_rng(0).standard_normal((16, c.latent)).astype(np.float32)
    latents[-1] *= 3.0  # far from the mean too

    def build(staging: Path) -> tuple[dict[str, Any], str]:
        export_graph(
            generator,
            (torch.zeros(2, c.latent),),
            staging / "generator.onnx",
            inputs=["z"],
            outputs=["logits"],
            dynamic={"z": {0: torch.export.Dim("batch")}},
        )
        diff = parity(generator, staging / "generator.onnx", latents)
        log.info(
            "parity: %d latents alone and batched: max relative |onnxruntime - torch float64| = %.3g",
            len(latents),
            diff,
        )
        check_parity(diff, str(staging))
        provenance = checkpoint["provenance"]
        sample = sample_tunes(checkpoint["held_out_sample"])
        seed_tune = write_seed(staging / "seed.mid", sample, c.pitch_min, c.pitch_min + c.keys - 1)
        temperature, sweep = choose_temperature(generator, float(checkpoint["metrics"]["held_out_true_notes_per_beat"]))
        log.info("default temperature %g (%s)", temperature, ", ".join(f"{k} {v:.3f}" for k, v in sweep.items()))
        drawn = sample_images(generator, 256, 1, temperature)
        held = make_images(sample, c).numpy()
        held = held[np.random.default_rng(0).permutation(len(held))]
        texture = {f"generated_{k}": v for k, v in texture_figures(drawn).items()}
        texture |= {f"held_out_sample_{k}": v for k, v in texture_figures(held).items()}
        metrics = {**checkpoint["metrics"], **sweep, **texture, "parity_max_abs_diff": diff}
        training = checkpoint["training"]
        manifest: dict[str, Any] = {
            "schema": 1,
            "name": name,
            "family": NAME,
            "kind": "block",
            "version": version,
            "description": (
                f"Convolutional GAN over piano-roll images ({c.window} 16ths x {c.keys} pitches) from a "
                f"{c.latent}-dimensional latent, trained on {provenance['data']}; the host keeps the best fitting "
                "of several drawn blocks."
            ),
            "seed_phrase": "seed.mid",
            "representation": {
                "grid": SIXTEENTH,
                "pitch_min": c.pitch_min,
                "keys": c.keys,
                "block_frames": c.window,
                "latent": c.latent,
                "polyphony": c.polyphony,
                "max_hold": c.max_hold,
            },
            "graphs": {
                "generator": {
                    "file": "generator.onnx",
                    "inputs": [tensor("z", ["batch", c.latent])],
                    "outputs": [tensor("logits", ["batch", c.window, c.keys])],
                }
            },
            "parameters": {"temperature": {"default": temperature, "min": 0.05, "max": 4.0}},
            "training": {
                "data": provenance["data"],
                "corpus_fingerprint": provenance["corpus_fingerprint"],
                "pieces_train": provenance["pieces_train"],
                "pieces_validation": provenance["pieces_validation"],
                "pieces_held_out": provenance["pieces_held_out"],
                "images_train": provenance["images_train"],
                "split": "by piece (sha256 of the name): 80% train, 10% validation, 10% held-out",
                "loss": (
                    f"binary cross-entropy (discriminator: real {c.real_label:g}, fake 0; generator: fake labelled 1)"
                    if c.loss == "bce"
                    else "hinge (discriminator: relu(1 - D(real)) + relu(1 + D(fake)); generator: -D(fake))"
                ),
                "optimizer": (
                    f"Adam, beta1 {c.beta1:g}, learning rate {c.learning_rate:g} (generator), "
                    f"{c.d_learning_rate or c.learning_rate:g} (discriminator)"
                ),
                "upsampling": c.upsampling,
                "stabilisers": "; ".join(line.split("**")[1] for line in imagegan_departures(c))
                or "none (the seed's recipe)",
                "real_label": c.real_label,
                "instance_noise": f"Gaussian, sd {c.noise_start:g} falling linearly to {c.noise_end:g}",
                "latent": c.latent,
                "dense": ", ".join(str(d) for d in c.dense),
                "batch_size": c.batch_size,
                "epochs": training["epochs_run"],
                "training_seconds": round(float(training["training_seconds"]), 1),
                "threads": training["threads"],
                "seed": provenance["seed"],
                "seed_tune": seed_tune,
                "torch": provenance["torch_version"],
            },
            "metrics": {k: float(v) for k, v in metrics.items()},
        }
        return manifest, imagegan_card(name, checkpoint, metrics, temperature)

    return write_package(out, name, build)


def imagegan_departures(c: ImageGanConfig) -> list[str]:
    """The card's lines on what the training does beyond the seed's recipe (none for the seed's settings)."""
    s = c.upsample
    lines = []
    if c.upsampling == "nearest":
        lines.append(
            f"**Upsampling then convolution instead of the transposed convolution** (Odena et al. 2016, "
            f"*Deconvolution and checkerboard artifacts*): the transposed convolution (kernel {2 * s}, stride {s}) "
            f"gives each output frame its taps by the frame's position mod {s}, and v1.0.0's images carried that "
            f"period: notes broken and struck again every {s}th 16th. Nearest-neighbour upsampling by {s} then a "
            f"{2 * s - 1} x {2 * s - 1} convolution treats every frame alike."
        )
    if c.generator_dropout != 0.2:
        lines.append(
            f"**Dropout {c.generator_dropout:g} in the generator, not the seed's 0.2** (the discriminator keeps "
            f"{c.dropout:g}): with dropout the generator learnt to draw its variety from the dropout masks and to "
            "ignore the latent (in training, one latent repeated gave fakes as different as many latents did); "
            "exported without dropout, as a generator is, it drew one image whatever the latent (v1.0.0, and a "
            "first try with the stabilisers below: two blocks differed in 0.2-0.5% of their pixels, real ones in 13%)."
        )
    if c.real_label < 1.0:
        lines.append(
            f"**One-sided label smoothing** (Salimans et al. 2016): the discriminator's target for real images is "
            f"{c.real_label:g}, not 1 (fakes stay 0), so it is not rewarded for ever more confident logits."
        )
    if c.noise_start > 0 or c.noise_end > 0:
        lines.append(
            f"**Instance noise** (Sønderby et al. 2016; Arjovsky and Bottou 2017): every image the discriminator "
            f"sees in training, real or fake, gets Gaussian noise of standard deviation {c.noise_start:g} at the "
            f"first step falling linearly to {c.noise_end:g} at the last; real images are 0/1 and fakes are "
            f"probabilities, which without noise the discriminator tells apart by their values alone."
        )
    if c.minibatch_std:
        lines.append(
            "**Minibatch standard deviation in the discriminator** (Karras et al. 2018, *Progressive growing of "
            "GANs*): before the seed's flattening, one more feature map holds how much the batch's images differ "
            "(the mean over features of their standard deviation, measured on the real and the fake half apart), so "
            "a generator that draws one image whatever the latent is told apart by that alone. It adds one input "
            "channel to the head; the discriminator is not shipped."
        )
    if c.binarise:
        lines.append(
            "**Binary fakes with a straight-through gradient** (Dong and Yang 2018, *Convolutional generative "
            "adversarial networks with binary neurons for polyphonic music generation*): the discriminator sees each "
            "fake drawn as the host draws it, a pixel on when its probability is above a threshold drawn per key and "
            "image, 0/1 like the real images; without this it tells real from fake by the values alone (real pixels "
            "are exactly 0 or 1, the seed's fakes probabilities). The generator's gradient passes through the draw "
            "to the logits as if the draw were the identity: through the sigmoid, a generator whose pixels are near 0 "
            "or 1 gets almost none (in a run that passed it through, the generator drew one image whatever the "
            "latent: two fakes differed in 1.1% of their pixels, two real images in 14%)."
        )
    if c.loss == "hinge":
        lines.append(
            "**Hinge loss** (Lim and Ye 2017; Miyato et al. 2018) in place of binary cross-entropy: the discriminator "
            "minimises relu(1 - D(real)) + relu(1 + D(fake)), so it stops pushing a logit once it is past the margin, "
            "and the generator minimises -D(fake). The training table's losses are these; the figures after training "
            "are the seed's (binary cross-entropy of the same logits), so they compare with its 0.691 / 0.592."
        )
    if c.spectral_norm:
        lines.append(
            "**Spectral normalisation of the discriminator** (Miyato et al. 2018): each convolution's and the dense "
            "layer's weights divided by their largest singular value, so the discriminator cannot sharpen without "
            "bound (the seed's 20-epoch run ended with a discriminator loss of 0) and the generator keeps a gradient."
        )
    if c.d_learning_rate and c.d_learning_rate > c.learning_rate:
        lines.append(
            f"**Two timescales** (Heusel et al. 2017): the discriminator learns at {c.d_learning_rate:g}, the "
            f"generator at {c.learning_rate:g}; with spectral normalisation bounding the discriminator, its faster "
            "steps track the generator instead of overpowering it."
        )
    elif c.d_learning_rate and c.d_learning_rate != c.learning_rate:
        lines.append(
            f"**A lower learning rate for the discriminator**: {c.d_learning_rate:g} (the generator keeps the "
            f"seed's {c.learning_rate:g}), so it does not run away from the generator."
        )
    return lines


def imagegan_card(name: str, checkpoint: Mapping[str, Any], m: Mapping[str, float], temperature: float) -> str:
    c = ImageGanConfig.from_dict(checkpoint["config"])
    p, t = checkpoint["provenance"], checkpoint["training"]
    d1, d2, d3 = c.dense
    bars = c.window // BAR_FRAMES
    data = (
        "the four-part Bach chorales music21 ships, all voices in one roll"
        if p["data"] == "corpus:bach"
        else f"`{p['data']}`, all tracks in one roll"
    )
    history = checkpoint.get("history") or []
    rows = "\n".join(
        f"| {int(h['epoch'])} | {h['discriminator_loss']:.3f} | {h['generator_loss']:.3f} | {h['accuracy_real']:.3f} "
        f"| {h['accuracy_fake']:.3f} |"
        for h in history
        if len(history) <= 15 or int(h["epoch"]) in {1, 2, 5, 10, 20, 30, 40, 60, 80, 100, len(history)}
    )
    minutes = float(t["training_seconds"]) / 60
    parameters = sum(w.numel() for w in Generator(c).parameters())
    s = c.upsample
    if c.upsampling == "transpose":
        grow_short = "a transposed convolution"
        grow_long = f"a transposed convolution ({c.filters} filters, kernel {2 * s}, stride {s})"
    else:
        grow_short = "an upsampling with a convolution (in place of the seed's transposed convolution)"
        grow_long = (
            f"a nearest-neighbour upsampling by {s} then a convolution ({c.filters} filters, {2 * s - 1} x {2 * s - 1})"
        )
    limits = imagegan_limits(m)
    g_dropout = (
        f" and dropout {c.generator_dropout:g}" if c.generator_dropout else " (the seed's dropout 0.2: see below)"
    )
    departures = "\n".join(f"- {line}" for line in imagegan_departures(c)) or "- none: the seed's recipe as it is."
    loss_kept = "binary cross-entropy;" if c.loss == "bce" else "(the loss: see below);"
    loss_text = (
        "The discriminator's loss is the mean of its cross-entropy on real images (label 1) and on fakes\n"
        "(label 0); the generator's loss is the cross-entropy of its fakes labelled real."
        if c.loss == "bce"
        else "The table's losses are the hinge losses trained on: the discriminator's is the mean of\n"
        "relu(1 - D(real)) and relu(1 + D(fake)), the generator's -D(fake). The figures after the table are\n"
        "the seed's binary cross-entropy of the same logits."
    )
    return f"""# {name}

An `imagegan` model (livegen `block` kind), after the ImageGAN of seed 000 (*Comparing Different Neural
Network Architectures for Music Generation*, §4.3): a convolutional GAN that draws the piano roll as an
image, here a block of {bars} bars ({c.window} 16ths) by {c.keys} pitches ({c.pitch_min}-{c.pitch_min + c.keys - 1}).
Only the generator is shipped (`generator.onnx`: `z` [batch, {c.latent}] -> `logits` [batch, {c.window}, {c.keys}]).

## Data

`{p["data"]}`: {data}. {p["pieces_train"]} pieces for training, {p["pieces_validation"]} for validation,
{p["pieces_held_out"]} held out, split by piece (the same split as every corpus:bach model), so the seed
phrase and `livegen evaluate` come from pieces the model never saw. An image is {c.window} frames of a
piece's roll, one starting every {c.stride} frames from the piece's first note ({p["images_train"]} training
images; images with no note in the range are left out). The corpus keeps no bar lines and most chorales
open with a one-beat pickup, so these images mostly start a beat before a bar line: the model does not know
where its bars begin, and the host lays its blocks on the performer's bar lines anyway.

Why the chorales and not the folk tunes: the seed trained on classical piano music, and an image of a
roll is made for polyphony (chords are columns of pixels); the folk tunes are single lines, which an image
GAN whose pixels are drawn independently cannot keep to one note at a time.

## Model, and what is the seed's

Kept from the seed: a {c.latent}-dimensional latent; four dense layers, {grow_short} and a
convolution in the generator, each followed by LeakyReLU 0.2{g_dropout} (the last convolution gives
the pixel logits); a discriminator of two blocks (16-channel convolution, dropout 0.2, LeakyReLU 0.2,
dropout 0.2), then flattening, batch normalisation, dropout and one dense output; {loss_kept}
Adam with learning rate {c.learning_rate:g} and beta1 {c.beta1:g} (the generator's; the discriminator's
below); a fixed number of epochs, the last one kept.

Departures from the seed's recipe, standard GAN stabilisers (the seed's own first run ended with the
discriminator winning outright, and so did this family's first package, v1.0.0, below):

{departures}

Scaled down or chosen here (the seed gives its widths only in a figure):

- **Images of {c.window} x {c.keys}, not 106 x 100**: {bars} bars of 16ths (the host's grid; the
  nearest whole number of bars to the seed's 100 steps) by four octaves (the chorales' range; notes
  outside it are left out of the images).
- **Dense layers of {d1}, {d2} and {d3} units, then {c.channels} x {c.window // s} x {c.keys // s}**,
  {grow_long} and a 3 x 3 convolution to one channel; the discriminator's convolutions have stride 2.
  Small enough that {t["epochs_run"]} epochs took {minutes:.1f} minutes with {t["threads"]} torch
  thread(s) on a two-core machine shared with other training jobs, and the generator has {parameters:,}
  parameters ({parameters * 4 / 1e6:.1f} MB).
- Batches of {c.batch_size}; each step trains the discriminator on a real batch and as many fakes, then
  the generator on fresh fakes (with binary cross-entropy, labelled real: the non-saturating loss the
  seed's Keras recipe uses).

## Training figures (as the seed reports them)

{loss_text} "Accuracy on real" is
the share of real images the discriminator calls real, "on fake" the share of fakes it calls fake.
The seed reports, after 20 epochs, a discriminator loss of 0, a generator loss of 15.8 and 100% on both
(the discriminator won), and after 40 epochs 0.691, 0.592, 17% on real and 94% on fake.

| epoch | discriminator loss | generator loss | accuracy on real | accuracy on fake |
|---:|---:|---:|---:|---:|
{rows}

After training, both nets in evaluation mode (no dropout) on the {p["pieces_held_out"]} held-out pieces'
images and as many fresh fakes: discriminator loss {m["held_out_discriminator_loss"]:.3f}, generator loss
{m["held_out_generator_loss"]:.3f}, accuracy on real {m["held_out_accuracy_real"]:.3f}, on fake
{m["held_out_accuracy_fake"]:.3f}. These differ from the training epochs' figures because the
discriminator then judges with its running batch-normalisation statistics and without dropout, where in
training it normalised each batch of real and fake images by that batch's own statistics.

What the images hold (fakes drawn as the host draws them at temperature 1, see below, a run of pixels
in a key read as one note; against the held-out images):

| | generated | held-out |
|---|---:|---:|
| notes per beat | {m["generated_notes_per_beat"]:.2f} | {m["held_out_true_notes_per_beat"]:.2f} |
| keys sounding per frame | {m["generated_keys_per_frame"]:.2f} | {m["held_out_true_keys_per_frame"]:.2f} |
| mean note length (16ths) | {m["generated_note_frames"]:.2f} | {m["held_out_true_note_frames"]:.2f} |
| share of notes one 16th long | {m["generated_sixteenth_share"]:.2f} | {m["held_out_true_sixteenth_share"]:.2f} |
| share of note onsets on a beat * | {m["generated_onbeat_share"]:.2f} | {m["held_out_sample_onbeat_share"]:.2f} |
| pixels two images differ in * | {m["generated_diversity"]:.3f} | {m["held_out_sample_diversity"]:.3f} |

\\* At the default temperature ({temperature:g}), against the images of the sample of held-out pieces
the checkpoint keeps (8 pieces, the seed phrase's among them); the last row measures mode collapse: two
fakes from two latents should differ in about as many pixels as two real images do.

The package's default temperature is {temperature:g}: 1 unless 0.5 or 0.75 brings the drawn blocks nearer the
held-out density by more than 0.1 notes per beat (notes per beat:
{", ".join(f"{m[f'generated_t{t:g}_notes_per_beat']:.2f} at {t:g}" for t in TEMPERATURES)}; share of 16ths:
{", ".join(f"{m[f'generated_t{t:g}_sixteenth_share']:.2f}" for t in TEMPERATURES)}).

Export parity: the largest difference between onnxruntime and PyTorch in float64 over 16 latents, alone
and batched, is {m["parity_max_abs_diff"]:.2g} (accepted: 1e-4), relative to the logit where a logit is
larger than 1 (the pixel logits of a trained generator run to tens).

## How it plays

The host (`livegen/models/imagegan.py`) makes one block of {bars} bars at a time, a lookahead before it
sounds, on the bar lines the planner gives. It draws `candidates` latents (8 by default, one ONNX call),
each `z ~ N(0, temperature^2)`; a pixel sounds when `sigmoid(logit / temperature)` is above a threshold
drawn once per key and block (so a note is not broken up by independent pixel draws; at a low
temperature this is the seed's threshold at 0.5); at most {c.polyphony} keys sound in a frame, the most
probable; a run of sounding pixels in a key is one note. Of the candidates, the host keeps the block
that best fits the last bar heard (pitch classes, register, density). The model is unconditional: it
follows the performer only through that choice, the key and range the performer sets, and the join at
the bar line (a note sounding across it is held, not struck again).

## Limits

{limits}
- A block is a piece of texture, not a continuation: nothing carries a phrase from one block to the next
  but the choice of candidate; the chorales' cadences and voice leading are images to it, so voices may
  appear and vanish mid-phrase.
"""


def imagegan_limits(m: Mapping[str, float]) -> str:
    """The card's figures on what is still wrong with the drawn images (collapse, density, rhythm)."""
    diversity, real_diversity = m["generated_diversity"], m["held_out_sample_diversity"]
    density, real_density = m["generated_notes_per_beat"], m["held_out_true_notes_per_beat"]
    lines = [
        f"- **Mode collapse**: two drawn blocks differ in {diversity:.3f} of their pixels, two real ones in "
        f"{real_diversity:.3f} ({diversity / max(real_diversity, 1e-9):.0%} of the real variety; v1.0.0, which "
        "drew nearly one image whatever the latent, 0.005). "
        + (
            "The generator still covers only a part of the chorales' textures."
            if diversity < 0.5 * real_diversity
            else "Less collapsed than v1.0.0, but a GAN of this size covers fewer textures than the chorales hold."
        ),
        f"- **Density and rhythm**: {density:.2f} notes per beat against {real_density:.2f} in the held-out "
        f"chorales, {m['generated_sixteenth_share']:.0%} of notes one 16th long against "
        f"{m['held_out_true_sixteenth_share']:.0%}, {m['generated_onbeat_share']:.0%} of onsets on a beat against "
        f"{m['held_out_sample_onbeat_share']:.0%} (v1.0.0: 9.94 notes per beat, 66% 16ths, 40% on a beat).",
        f"- **The discriminator still tells fakes apart**: in evaluation mode it calls "
        f"{m['held_out_accuracy_fake']:.0%} of fakes fake and {m['held_out_accuracy_real']:.0%} of held-out images "
        "real; the generator has not converged to the chorales' distribution.",
    ]
    return "\n".join(lines)


FAMILY = Family(
    NAME,
    options=ImageGanOptions,
    config=ImageGanConfig,
    train=train_imagegan,
    export=export_imagegan,
    card=imagegan_card,
    recipes=RECIPES,
)
