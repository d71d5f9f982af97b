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

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.common import ConfigRecord
from export.errors import ExportError
from livegen.models.midigan import ATTRIBUTES

NAME = "midigan"


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


def generate(model: Generator, count: int, seed: int, latent: int) -> np.ndarray:
    """``count`` standardised notes from the generator in inference mode, from seeded noise."""
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    with torch.no_grad():
        return model(torch.randn(count, latent, generator=generator)).double().numpy()


def model_from_checkpoint(checkpoint: Mapping[str, Any], path: Path) -> Generator:
    model = Generator(MidiGanConfig.from_dict(checkpoint["config"]))
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError) as err:
        raise ExportError(f"{path}: the weights do not fit a midigan generator of this config ({err})") from err
    return model.eval()
