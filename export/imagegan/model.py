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

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.common import ConfigRecord
from export.errors import ExportError
from livegen.models.imagegan import draw_pixels

NAME = "imagegan"


SLOPE = 0.2


#: Frames of a bar (4/4 in 16ths): block sizes are whole bars.
BAR_FRAMES = 16


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
