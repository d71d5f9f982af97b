"""The ``deep-musician`` family (seed 002) as a ``frame`` generator.

Context: control (the planner's thread); the manifest checks in the constructor run at setup.
:func:`tune_roll` (setup) is how training reads a piece, shared by the exporter and the
held-out likelihood.

Two graphs over an 88-key piano roll on a 16th-note grid (see ``docs/model-package.md``):

- ``encoder``: ``roll`` [batch, frames, keys] (the last ``window`` frames of what was
  played) -> ``h`` [layers, batch, hidden], the GRU encoder's final hidden state;
- ``decoder``: one step of the GRU decoder and its classifier: ``frame`` [batch, keys]
  (the previous output's sigmoid, or an empty frame, the seed's start token, after an
  encoding) and ``h`` -> ``logits`` [batch, keys] of the next frame and ``h_out``.

As in the seed and in training, the decoder is fed its own sigmoid output, never the
played notes: fed the true frames of validation pieces instead (the best that feeding
it sampled frames could do), it gives their continuation a lower likelihood. After
``decode_frames`` generated frames (the length the decoder was trained to run) the
played roll is encoded again (``window`` frames, empty before the first note, as
training padded it) and the decoder restarts from the start token, so what was played
steers what follows.

The host plays notes drawn from the decoder's outputs (:func:`~livegen.models.frames.draw_keys`):

- **Probabilities.** The decoder was trained with the focal loss, whose best output
  is not the chance of a key sounding but a score pulled towards 0.5 (0.55 where a
  key sounds a third of the time). With ``representation.focal_alpha`` and
  ``focal_gamma`` the host maps each score back to the chance whose focal loss it
  minimises (Charoenphakdee et al. 2021): the key's expected share of frames, so the
  keys sounding add up to the roll's (about 4, where the scores add up to 15).
- **Holding.** The roll has no onset flag. A key on stays on, and a key off stays off,
  as far as the model's chances allow (each key moves from one frame to the next only
  as much as its chance moved), and a share ``representation.redraw`` of frames is
  drawn afresh; both weighted by the frame's place in the beat
  (``representation.onset_profile``, the training roll's share of onsets on each 16th
  of a beat). A key kept on longer than ``max_hold`` frames is not struck again until
  it is released (:class:`~livegen.models.frames.FrameTracker`).
- At most ``polyphony`` keys sound, the likeliest, whether held or new: held keys put
  first would keep every new one out, and one chord would be held and struck again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, cast

import numpy as np

from livegen.models.contract import ANY, Contract, Number, Tensor, Whole
from livegen.models.frames import (
    FRAME_FIELDS,
    FrameGenerator,
    RollNote,
    draw_keys,
    key_distribution,
    note_frames,
    notes_to_roll,
    onset_profile,
    sigmoid,
)
from livegen.models.package import ModelPackage
from livegen.models.sampling import SamplingParams
from livegen.music.time import PPQN, SIXTEENTH

if TYPE_CHECKING:
    from livegen.music.corpus import Tune


def focal_probability(scores: np.ndarray, alpha: float, gamma: float) -> np.ndarray:
    """The chance ``q`` of a key sounding whose expected focal loss (``alpha`` on sounding keys,
    ``1 - alpha`` on silent ones, focusing ``gamma``) the score ``p`` minimises, float64.

    From ``q * alpha * A'(p) + (1 - q) * (1 - alpha) * B'(p) = 0`` with ``A(p) = -(1 - p)^gamma log p``
    and ``B(p) = -p^gamma log(1 - p)``; with ``gamma`` 0 and ``alpha`` 0.5 it is ``p`` itself.
    """
    p = np.clip(scores.astype(np.float64), 1e-6, 1 - 1e-6)
    falls = gamma * (1 - p) ** (gamma - 1) * np.log(p) - (1 - p) ** gamma / p  # A'(p) < 0
    rises = -gamma * p ** (gamma - 1) * np.log(1 - p) + p**gamma / (1 - p)  # B'(p) > 0
    return cast(np.ndarray, (1 - alpha) * rises / ((1 - alpha) * rises - alpha * falls))


def tune_roll(tune: Tune, pitch_min: int, keys: int) -> np.ndarray:
    """The piece as training reads it: a binary roll float32 [frames, keys] on the 16th grid, from its first onset."""
    first = float(tune.onset[0])
    notes = []
    for pitch, onset, duration in zip(tune.pitch, tune.onset, tune.duration, strict=True):
        start, frames = note_frames(round((float(onset) - first) * PPQN), round(float(duration) * PPQN), SIXTEENTH)
        notes.append(RollNote(start, frames, int(pitch)))
    length = max(n.end for n in notes)
    return notes_to_roll(notes, 0, length, pitch_min, keys)


class DeepMusicianGenerator(FrameGenerator):
    """GRU encoder-decoder over an 88-key piano roll."""

    contract = Contract(
        fields=(
            *FRAME_FIELDS,
            Whole("decode_frames"),
            Whole("polyphony"),
            Number("focal_alpha", 0.0, 1.0, default=0.5),
            Number("focal_gamma", 0.0, 10.0, default=0.0),
            Number("redraw", 0.0, 1.0, default=0.0),
        ),
        tensors=(
            Tensor("encoder", "roll", (ANY, ANY, "keys")),
            Tensor("decoder", "frame", (ANY, "keys")),
            Tensor("decoder", "logits", (ANY, "keys")),
        ),
        key_range=True,
    )

    def __init__(self, package: ModelPackage) -> None:
        self.package = package
        values = self.contract.values(package)
        self._init_frames(values)
        self.polyphony = values["polyphony"]
        self.reencode_every = values["decode_frames"]
        self.focal = (values["focal_alpha"], values["focal_gamma"])
        self.redraw = values["redraw"]
        self.profile = onset_profile(package, PPQN // self.grid)
        self._encoder = package.sessions["encoder"]
        self._decoder = package.sessions["decoder"]
        self._empty = np.zeros((1, self.keys), dtype=np.float32)
        self._mask_key: SamplingParams | None = None
        self._mask = np.ones(self.keys, dtype=bool)

    def _encode(self, notes: Sequence[RollNote], end: int) -> object:
        roll = notes_to_roll(notes, end - self.window, self.window, self.pitch_min, self.keys)
        (h,) = self._encoder.run(["h"], {"roll": roll[None]})
        return (h, self._empty, None)

    def _keys_mask(self, params: SamplingParams) -> np.ndarray:
        if params != self._mask_key:
            mask = params.pitch_mask()[self.pitch_min : self.pitch_min + self.keys]
            self._mask = mask if mask.any() else np.ones(self.keys, dtype=bool)
            self._mask_key = params
        return self._mask

    def _frame(
        self, state: object, held: Mapping[int, int], params: SamplingParams, rng: np.random.Generator
    ) -> tuple[object, dict[int, int]]:
        h, frame, before = cast(tuple[np.ndarray, np.ndarray, np.ndarray | None], state)
        logits, h_out = self._decoder.run(["logits", "h_out"], {"frame": frame, "h": h})
        scores = sigmoid(logits[0].astype(np.float64))
        probs = key_distribution(focal_probability(scores, *self.focal), params, self._keys_mask(params))
        sounding = [k for k in (p - self.pitch_min for p in held) if 0 <= k < self.keys]
        if before is None:
            before = np.zeros(self.keys)
            before[sounding] = 1.0
        keys = draw_keys(probs, before, sounding, rng, polyphony=self.polyphony, metre=self.metre(), redraw=self.redraw)
        return (h_out, scores[None].astype(np.float32), probs), {self.pitch_min + k: self.pitch_min + k for k in keys}

    def _force(self, state: object, params: SamplingParams) -> dict[int, int]:
        _, scores, _ = cast(tuple[np.ndarray, np.ndarray, np.ndarray | None], state)
        key = int(np.argmax(np.where(self._keys_mask(params), scores[0], -1.0)))
        return {self.pitch_min + key: self.pitch_min + key}
