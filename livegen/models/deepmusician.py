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

As in the seed, the decoder is fed its own sigmoid output, never the sampled notes; the
host plays notes drawn from those probabilities (:func:`~livegen.models.frames.choose_keys`:
a held key holds while its probability is at least ``hold_threshold``, new keys are
drawn at the live temperature and top-p, at most ``polyphony`` keys sound). After
``decode_frames`` generated frames (the length the decoder was trained to run) the
played roll is encoded again and the decoder restarts from the start token, so what
was played steers what follows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, cast

import numpy as np

from livegen.errors import PackageError
from livegen.models.frames import (
    FrameGenerator,
    RollNote,
    choose_keys,
    graph_width,
    note_frames,
    notes_to_roll,
    sigmoid,
)
from livegen.models.manifest import MANIFEST
from livegen.models.package import ModelPackage
from livegen.models.sampling import SamplingParams
from livegen.music.time import PPQN, SIXTEENTH

if TYPE_CHECKING:
    from livegen.io.corpus import Tune

#: The representation fields this adapter reads, each an integer at least 1 (``hold_threshold``: in (0, 1)).
INTEGER_FIELDS = ("pitch_min", "keys", "window", "decode_frames", "polyphony", "max_hold", "max_silence", "grid")


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

    def __init__(self, package: ModelPackage) -> None:
        self.package = package
        values = self._init_representation(package, INTEGER_FIELDS)
        self.polyphony = values["polyphony"]
        self.reencode_every = values["decode_frames"]
        threshold = package.manifest.representation.get("hold_threshold", 0.5)
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold < 1:
            raise PackageError(
                f"{package.folder / MANIFEST}: field 'representation.hold_threshold': expected a number between "
                f"0 and 1, got {threshold!r}"
            )
        self.hold_threshold = float(threshold)
        for role, tensor in (("encoder", "roll"), ("decoder", "frame"), ("decoder", "logits")):
            width = graph_width(package, role, tensor)
            if width != self.keys:
                raise PackageError(
                    f"{package.folder / MANIFEST}: field 'representation.keys': expected {width} (the last dimension "
                    f"of graph {role!r} tensor {tensor!r}), got {self.keys}"
                )
        self._encoder = package.sessions["encoder"]
        self._decoder = package.sessions["decoder"]
        self._empty = np.zeros((1, self.keys), dtype=np.float32)
        self._mask_key: SamplingParams | None = None
        self._mask = np.ones(self.keys, dtype=bool)

    def _encode(self, notes: Sequence[RollNote], end: int) -> object:
        first = min((n.onset for n in notes), default=end - 1)
        start = max(end - self.window, min(first, end - 1))
        roll = notes_to_roll(notes, start, end - start, self.pitch_min, self.keys)
        (h,) = self._encoder.run(["h"], {"roll": roll[None]})
        return (h, self._empty)

    def _keys_mask(self, params: SamplingParams) -> np.ndarray:
        if params != self._mask_key:
            mask = params.pitch_mask()[self.pitch_min : self.pitch_min + self.keys]
            self._mask = mask if mask.any() else np.ones(self.keys, dtype=bool)
            self._mask_key = params
        return self._mask

    def _frame(
        self, state: object, held: Mapping[int, int], params: SamplingParams, rng: np.random.Generator
    ) -> tuple[object, dict[int, int]]:
        h, frame = cast(tuple[np.ndarray, np.ndarray], state)
        logits, h_out = self._decoder.run(["logits", "h_out"], {"frame": frame, "h": h})
        keys = choose_keys(
            logits[0],
            (p - self.pitch_min for p in held),
            params,
            rng,
            self._keys_mask(params),
            polyphony=self.polyphony,
            hold_threshold=self.hold_threshold,
        )
        probabilities = sigmoid(logits).astype(np.float32)
        return (h_out, probabilities), {self.pitch_min + k: self.pitch_min + k for k in keys}

    def _force(self, state: object, params: SamplingParams) -> dict[int, int]:
        _, probabilities = cast(tuple[np.ndarray, np.ndarray], state)
        key = int(np.argmax(np.where(self._keys_mask(params), probabilities[0], -1.0)))
        return {self.pitch_min + key: self.pitch_min + key}
