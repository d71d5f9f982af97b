"""The ``multitrack-rnn`` family (seed 004's baseline): an RNN over flattened multi-track frames.

Context: setup (training and export; imports torch, never imported by the host).

Seed 004's baseline flattens the multi-instrument piano roll into one vector per time
step and trains an RNN to predict the vector at the next step, sampling each
instrument independently ("independent instrument sampling"). Here the tracks are
the four voices of the Bach chorales (soprano, alto, tenor, bass; or a MIDI folder's
busiest channels), each one line: a track's part of the frame is a one-hot over a
rest and ``keys`` pitches, so its prediction is a softmax and the loss the
cross-entropy of each track's next class, summed over tracks. One LSTM layer reads
the frames; the loss is taken after every frame of a window, so the host can stream
it from a zero state.

What differs from the seed, and why (the model card says it too):

- Four voices of chorales, not LPD-5's five instruments of pop songs (the issue asks
  for a corpus the project ships: music21's chorales); 16th-note frames, not 24 per
  beat (the host's grid); a shared range of ``keys`` pitches, not 128.
- Each voice is one line (one-hot with a rest) rather than a multi-hot roll per
  instrument: the seed found "sampling too many notes ... extremely cluttered" and
  settled on one note per time step per instrument, which this makes the model's
  own output.
- Windows of 64 frames, not the seed's 10 steps: the host streams the LSTM over a
  whole phrase and must predict well after any number of frames.
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

NAME = "multitrack-rnn"


@dataclass(frozen=True, slots=True)
class MultiTrackConfig(ConfigRecord):
    hidden: int = 256
    tracks: int = 4
    pitch_min: int = 36
    keys: int = 48
    window: int = 64
    batch_size: int = 32
    learning_rate: float = 2e-3
    max_hold: int = 16
    max_silence: int = 32

    @property
    def width(self) -> int:
        return self.tracks * (self.keys + 1)


class MultiTrackRnn(nn.Module):
    """LSTM over flattened one-hot frames; logits [batch, time, tracks, keys + 1] of the next frame."""

    def __init__(self, config: MultiTrackConfig) -> None:
        super().__init__()
        self.config = config
        self.lstm = nn.LSTM(config.width, config.hidden, batch_first=True)
        self.head = nn.Linear(config.hidden, config.width)

    def forward(
        self, frames: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        out, state = self.lstm(frames, state)
        logits = self.head(out)
        return logits.reshape(*logits.shape[:-1], self.config.tracks, self.config.keys + 1), state


class StepGraph(nn.Module):
    def __init__(self, model: MultiTrackRnn) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, frame: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, (h_out, c_out) = self.model(frame.unsqueeze(1), (h, c))
        return logits[:, 0], h_out, c_out


def model_from_checkpoint(checkpoint: Mapping[str, Any], path: Path) -> MultiTrackRnn:
    model = MultiTrackRnn(MultiTrackConfig.from_dict(checkpoint["config"]))
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError) as err:
        raise ExportError(f"{path}: the weights do not fit a multitrack-rnn of this config ({err})") from err
    return model.eval()
