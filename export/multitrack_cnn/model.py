"""The ``multitrack-cnn`` family (seed 004): a symmetric 2D CNN from one block of a multi-track roll to the next.

Context: setup (training and export; imports torch, never imported by the host).

Seed 004 takes a ``5 x 20 x 128`` tensor (instruments x time steps x pitches), passes it
through four convolution layers and "deconvolutes" it back to its original size with
the transposed path, with no dense layers, and trains it to predict the next 20 time
steps; all instruments are predicted together ("dependent instrument sampling"). Here:

- **Tracks** are ``multitrack-rnn``'s (:mod:`export.multitrack_rnn`): the four voices of the
  Bach chorales (or a MIDI folder's busiest channels), each one line, one MIDI channel
  and GM program per track. A track's row of the roll is a one-hot over a rest and
  ``keys`` pitches (class 0 = rest), so the tracks are the CNN's input channels and the
  roll's pitch axis is ``keys + 1`` wide.
- **The network**: four ``Conv2d`` layers (kernel 3, ReLU; ``hidden``, 2, 4 and 8 times
  ``hidden`` channels; stride 2 over time in each, over pitch in the first
  ``pitch_strides``) and four ``ConvTranspose2d`` layers back to ``tracks x window x
  (keys + 1)``, each output padded so the sizes mirror the way down exactly. No dense
  layer. The seed gives neither strides nor sizes.
- **The loss**: the cross-entropy of each track's class in each frame of the next block
  (one line per track, as ``multitrack-rnn``); Adam with gradient clipping and early
  stopping on the validation loss (:func:`export.framecommon.fit`). Each training batch
  is transposed by a random shift of up to ``transpose`` semitones (not the seed's: the
  chorales' few keys would otherwise be all the model knows, and the performer plays
  in any key).
- **Blocks of 16 frames (16ths), not 20**: the seed's 20 steps were at 24 per beat, less
  than one beat, not a musical unit; livegen's blocks tile time from a bar line, and 16
  16ths are one 4/4 bar, so each block is a bar and every block joins the next on a bar
  line. ``--window 20`` trains the seed's 20 frames (1¼ bars) instead.

The model card says what else was scaled down.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from export.common import ConfigRecord
from export.errors import ExportError

NAME = "multitrack-cnn"


#: The package's default temperature, chosen on the validation pieces (``livegen evaluate --split validation``).
DEFAULT_TEMPERATURE = 0.7


#: Convolution layers on the way down (and transposed ones on the way up): the seed's four.
LAYERS = 4


@dataclass(frozen=True, slots=True)
class MultiTrackCnnConfig(ConfigRecord):
    """``window``: frames of the context and of the predicted block; ``hidden``: channels of the first layer;
    ``stride``: frames between training blocks; ``transpose``: most semitones a training batch is shifted by."""

    tracks: int = 4
    pitch_min: int = 36
    keys: int = 47
    window: int = 16
    stride: int = 2
    hidden: int = 32
    kernel: int = 3
    batch_size: int = 64
    learning_rate: float = 1e-3
    transpose: int = 0
    pitch_strides: int = 2
    max_hold: int = 16

    def __post_init__(self) -> None:
        if not 2 <= self.window <= 64:
            raise ExportError(f"--window {self.window}: expected 2 to 64 frames (16 = one 4/4 bar of 16ths)")
        if not 4 <= self.hidden <= 256:
            raise ExportError(f"--hidden {self.hidden}: expected 4 to 256 channels in the first convolution layer")
        if self.batch_size < 1:
            raise ExportError(f"--batch-size {self.batch_size}: expected at least 1")
        if not 0 <= self.pitch_strides <= LAYERS:
            raise ExportError(f"pitch_strides {self.pitch_strides}: expected 0 to {LAYERS} layers")
        if not 0 <= self.transpose <= 12:
            raise ExportError(f"transpose {self.transpose}: expected 0 to 12 semitones")
        if self.stride < 1:
            raise ExportError(f"stride {self.stride}: expected at least 1 frame between training windows")

    @property
    def width(self) -> int:
        """Classes per track and frame: a rest and ``keys`` pitches."""
        return self.keys + 1

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(self.hidden * 2**i for i in range(LAYERS))

    @property
    def strides(self) -> tuple[tuple[int, int], ...]:
        """(time, pitch) stride of each layer: 2 over time; 2 over pitch in the first ``pitch_strides`` layers."""
        return tuple((2, 2 if i < self.pitch_strides else 1) for i in range(LAYERS))


def conv_size(size: int, kernel: int, stride: int) -> int:
    """A convolution's output size with padding ``kernel // 2``."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


class MultiTrackCnn(nn.Module):
    """Seed 004's symmetric CNN: roll [batch, tracks, window, keys + 1] -> logits of the same shape (the next block)."""

    def __init__(self, config: MultiTrackCnnConfig) -> None:
        super().__init__()
        self.config = config
        k, pad = config.kernel, config.kernel // 2
        strides = config.strides
        sizes = [(config.window, config.width)]
        for st, sw in strides:
            t, w = sizes[-1]
            sizes.append((conv_size(t, k, st), conv_size(w, k, sw)))
        widths = (config.tracks, *config.channels)
        self.down = nn.ModuleList(
            nn.Conv2d(widths[i], widths[i + 1], k, stride=strides[i], padding=pad) for i in range(LAYERS)
        )
        ups = []
        for i in reversed(range(LAYERS)):
            (t_in, w_in), (t_out, w_out) = sizes[i + 1], sizes[i]
            (st, sw) = strides[i]
            # a transposed convolution gives s (n - 1) - 2 pad + k; pad the output to the size on the way down
            extra = (t_out - (st * (t_in - 1) - 2 * pad + k), w_out - (sw * (w_in - 1) - 2 * pad + k))
            ups.append(
                nn.ConvTranspose2d(widths[i + 1], widths[i], k, stride=strides[i], padding=pad, output_padding=extra)
            )
        self.up = nn.ModuleList(ups)

    def forward(self, roll: torch.Tensor) -> torch.Tensor:
        x = roll
        for conv in self.down:
            x = F.relu(conv(x))
        for i, deconv in enumerate(self.up):
            x = deconv(x)
            if i < LAYERS - 1:
                x = F.relu(x)
        return x


def model_from_checkpoint(checkpoint: Mapping[str, Any], path: Path) -> MultiTrackCnn:
    model = MultiTrackCnn(MultiTrackCnnConfig.from_dict(checkpoint["config"]))
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError) as err:
        raise ExportError(f"{path}: the weights do not fit a multitrack-cnn of this config ({err})") from err
    return model.eval()
