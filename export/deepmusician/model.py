"""The ``deep-musician`` family (seed 002): a GRU encoder-decoder over an 88-key piano roll, focal loss.

Context: setup (training and export; imports torch, never imported by the host).

As in the seed: the roll has the 88 piano keys (MIDI 21-108) and one frame per 16th
note; a 2-layer GRU encoder reads a window of ``window`` frames (the seed's 96) and
hands its final hidden state to a 2-layer GRU decoder of the same shape, which
starts from an empty frame (the seed's start token) and is fed its own sigmoid
output frame by frame; a classifier hidden-256 (ReLU, dropout 0.5)-88 with a sigmoid
gives each key's probability; GRU dropout 0.2. The loss is the binary focal loss
(Lin et al. 2017), the seed's answer to rolls that are almost all zeros, with
``alpha`` (the weight of the sounding keys) and ``gamma`` as options; the seed's
density metric (notes per beat of what the model generates, against the real
continuation's) is measured on the validation pieces after every epoch, and is
what the chosen ``alpha`` and ``gamma`` are justified by (the model card's table).

Scaled to train on two CPU cores (the card says so): hidden 192 instead of 512 (a
512-unit encoder and decoder hold 5 M weights, 20 MB, and an epoch would take
minutes); the decoder is trained to run ``decode_frames`` (32, two bars) frames, not
96, and the host encodes the played roll again every 32 frames. Windows start every
``stride`` frames, including windows that begin before a piece (padded with empty
frames), so the encoder also learns from the short contexts a performer gives it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from export.common import ConfigRecord
from export.errors import ExportError

NAME = "deep-musician"


PITCH_MIN = 21


KEYS = 88


@dataclass(frozen=True, slots=True)
class DeepMusicianConfig(ConfigRecord):
    hidden: int = 192
    layers: int = 2
    dropout: float = 0.2
    classifier: int = 256
    classifier_dropout: float = 0.5
    window: int = 96
    decode_frames: int = 32
    stride: int = 16
    batch_size: int = 32
    learning_rate: float = 1e-3
    alpha: float = 0.75
    gamma: float = 2.0
    polyphony: int = 4
    max_hold: int = 16
    max_silence: int = 32


class DeepMusician(nn.Module):
    """Encoder GRU, decoder GRU fed its own sigmoid output, classifier; outputs logits (the sigmoid is the loss's)."""

    def __init__(self, config: DeepMusicianConfig) -> None:
        super().__init__()
        c = config
        self.config = config
        self.encoder = nn.GRU(KEYS, c.hidden, c.layers, batch_first=True, dropout=c.dropout)
        self.decoder = nn.GRU(KEYS, c.hidden, c.layers, batch_first=True, dropout=c.dropout)
        self.classifier = nn.Sequential(
            nn.Linear(c.hidden, c.classifier),
            nn.ReLU(),
            nn.Dropout(c.classifier_dropout),
            nn.Linear(c.classifier, KEYS),
        )

    def encode(self, roll: torch.Tensor) -> torch.Tensor:
        return self.encoder(roll)[1]

    def step(self, frame: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, h = self.decoder(frame.unsqueeze(1), h)
        return self.classifier(out[:, 0]), h

    def forward(self, roll: torch.Tensor, steps: int) -> torch.Tensor:
        """Logits [batch, steps, keys] of the ``steps`` frames after ``roll`` [batch, frames, keys]."""
        h = self.encode(roll)
        frame = roll.new_zeros(roll.shape[0], KEYS)
        outputs = []
        for _ in range(steps):
            logits, h = self.step(frame, h)
            outputs.append(logits)
            frame = torch.sigmoid(logits)
        return torch.stack(outputs, 1)


class EncoderGraph(nn.Module):
    def __init__(self, model: DeepMusician) -> None:
        super().__init__()
        self.model = model

    def forward(self, roll: torch.Tensor) -> torch.Tensor:
        return self.model.encode(roll)


class DecoderGraph(nn.Module):
    def __init__(self, model: DeepMusician) -> None:
        super().__init__()
        self.model = model

    def forward(self, frame: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.step(frame, h)


def model_from_checkpoint(checkpoint: Mapping[str, Any], path: Path) -> DeepMusician:
    model = DeepMusician(DeepMusicianConfig.from_dict(checkpoint["config"]))
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError) as err:
        raise ExportError(f"{path}: the weights do not fit a deep-musician of this config ({err})") from err
    return model.eval()
