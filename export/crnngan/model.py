"""The ``crnngan`` family (seed 003, C-RNN-GAN): a recurrent GAN over note events, played as ``block`` phrases.

Context: setup (training and export; imports torch, never imported by the host).

Seed 003's C-RNN-GAN (Mogren's continuous RNN-GAN) models a sequence of note events,
each a vector of four continuous values: the note's duration, its tone (as a sound
frequency), its intensity (velocity) and the time since the previous note's onset.

- **Generator**: a unidirectional LSTM of ``layers`` layers; the input of each step is
  a random vector concatenated with the generator's own output at the previous step
  (zeros before the first); a dense layer shared over time maps each step's LSTM
  output to the four values (standardised: each value minus the training mean,
  divided by the training standard deviation).
- **Discriminator**: a bidirectional LSTM of ``layers`` layers over the sequence, a
  dense layer with weights shared over time giving one sigmoid per step, averaged into
  the decision for the whole sequence.
- **Training** (the seed's, but for the optimiser): L2 regularisation of the weights
  of both networks, gradients clipped to norm 5 as in Mogren's code; Adam by default,
  the seed's minibatch SGD at learning rate 0.1 with ``optimizer = "sgd"`` (too slow for
  this budget: the card says what it measured); first ``pretrain_epochs`` epochs of pretraining the generator on
  next-event prediction with a squared-error loss (the input is the noise and the real
  previous event; the sequence length grows from short to ``window`` over those
  epochs, the seed's schedule), then adversarial training: the discriminator's binary
  cross-entropy, **feature matching** for the generator (the squared distance between
  the mean of the discriminator's last LSTM layer over real and over generated
  sequences replaces the generator's adversarial loss), and **freezing**: the
  discriminator is not updated on a batch whose discriminator loss is below 70% of the
  generator's adversarial loss (``-log D(G(z))``, on the same scale as the
  discriminator's), as in the seed.

The host (``livegen/models/crnngan.py``) draws ``params.candidates`` phrases of
``window`` notes in one call of the exported generator and lays each from the start
of a block of ``block_frames`` 16ths by its times since the last note; see the
adapter for the graph contract.

What differs from the seed, and why (the model card says it too): the sizes (the seed:
2 layers of 350 units and sequences of up to hundreds of events; here ``hidden`` units
and ``window`` notes, so that training fits about 15 minutes on one CPU thread); an
adversarial "epoch" is ``batches_per_epoch`` batches, not a pass over the data, and the
generator kept is the one whose validation distance (:func:`feature_distance`) was
lowest; music21's folk tunes, which have no dynamics, give every note the same
intensity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from export.common import ConfigRecord
from export.errors import ExportError

NAME = "crnngan"


@dataclass(frozen=True, slots=True)
class CrnnGanConfig(ConfigRecord):
    """Sizes and training settings. ``window`` is N, the notes of a phrase (the graph's fixed length)."""

    hidden: int = 64
    layers: int = 2
    window: int = 20
    noise: int = 16
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 5.0
    pretrain_epochs: int = 6
    batches_per_epoch: int = 50
    min_epochs: int = 10
    freeze_ratio: float = 0.7
    stride_beats: int = 4
    beats_max: float = 4.0
    block_frames: int = 32
    max_hold: int = 16

    def check(self) -> None:
        if self.window < 2:
            raise ExportError(f"--window {self.window}: expected at least 2 notes per phrase")
        if not 8 <= self.hidden <= 1024:
            raise ExportError(f"--hidden {self.hidden}: expected 8 to 1024 units")
        if self.batch_size < 2:
            raise ExportError(f"--batch-size {self.batch_size}: expected at least 2")
        if self.layers < 1 or self.noise < 1 or self.pretrain_epochs < 0 or self.batches_per_epoch < 1:
            raise ExportError("crnngan config: layers, noise and batches_per_epoch must be at least 1")
        if self.optimizer not in ("sgd", "adam"):
            raise ExportError(f"crnngan config: optimizer {self.optimizer!r}; accepted: sgd, adam")
        if self.block_frames < 1 or self.max_hold < 1 or self.stride_beats < 1 or not self.beats_max > 0:
            raise ExportError("crnngan config: block_frames, max_hold, stride_beats and beats_max must be above 0")


class Generator(nn.Module):
    """LSTM whose input at each step is noise concatenated with its previous output; a shared dense output."""

    def __init__(self, config: CrnnGanConfig) -> None:
        super().__init__()
        self.config = config
        self.lstm = nn.LSTM(config.noise + 4, config.hidden, config.layers, batch_first=True)
        self.out = nn.Linear(config.hidden, 4)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        """Free running: noise [batch, steps, noise] -> events [batch, steps, 4] (standardised)."""
        batch, steps = noise.shape[0], noise.shape[1]
        previous = noise.new_zeros(batch, 4)
        state: tuple[torch.Tensor, torch.Tensor] | None = None
        outputs = []
        for t in range(steps):
            x = torch.cat([noise[:, t], previous], dim=-1).unsqueeze(1)
            y, state = self.lstm(x, state)
            previous = self.out(y[:, 0])
            outputs.append(previous)
        return torch.stack(outputs, dim=1)

    def teacher_forced(self, noise: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Next-event prediction: step t reads noise and the real event t - 1 (zeros at t = 0)."""
        previous = torch.cat([real.new_zeros(real.shape[0], 1, 4), real[:, :-1]], dim=1)
        y, _ = self.lstm(torch.cat([noise, previous], dim=-1))
        return self.out(y)


class Discriminator(nn.Module):
    """Bidirectional LSTM; a dense layer shared over time gives a sigmoid per step, averaged over the sequence."""

    def __init__(self, config: CrnnGanConfig) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, config.hidden, config.layers, batch_first=True, bidirectional=True)
        self.decision = nn.Linear(2 * config.hidden, 1)

    def forward(self, events: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probability of real [batch], the last LSTM layer's outputs [batch, steps, 2 * hidden])."""
        features, _ = self.lstm(events)
        per_step = torch.sigmoid(self.decision(features))[..., 0]
        return per_step.mean(dim=1), features


class GeneratorGraph(nn.Module):
    """What is exported: ``noise`` [batch, window, noise] -> ``notes`` [batch, window, 4], unrolled."""

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.generator(noise)


def draw_noise(shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """The generator's input: uniform in [-1, 1] (the host scales it by the temperature)."""
    return torch.rand(*shape, generator=generator) * 2.0 - 1.0


def generator_from_checkpoint(checkpoint: Mapping[str, Any], path: Path) -> Generator:
    model = Generator(CrnnGanConfig.from_dict(checkpoint["config"]))
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError) as err:
        raise ExportError(f"{path}: the weights do not fit a crnngan generator of this config ({err})") from err
    return model.eval()
