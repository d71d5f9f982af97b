"""The ``crnngan`` family (seed 003, C-RNN-GAN) as a ``block`` generator.

Context: control (the planner's thread); the manifest checks in the constructor run at setup.

One graph, ``generator``: the C-RNN-GAN's LSTM generator unrolled for a fixed number
N of notes (``representation.notes``), each step reading its noise and its own
previous output.

- ``noise`` float32 [batch, N, noise]: the random vector of each step, uniform in
  [-1, 1] in training; the host multiplies it by the live temperature.
- ``notes`` float32 [batch, N, 4]: one event per step, standardised: the value in
  musical units is ``notes * feature_scale + feature_mean``, and the columns are
  ``representation.features``, always ``["duration", "frequency", "velocity", "step"]``
  (the seed's duration, tone as a frequency in Hz, intensity, and time since the
  previous note's onset; durations and steps in beats).

The family is unconditional (it never reads the performer's notes): for every block
the host asks for ``params.candidates`` phrases, made in one call with the candidates
as the batch, and keeps the one that fits the last bar heard best
(:class:`~livegen.models.block.BlockGenerator`). A phrase is laid from the block's
start by :func:`phrase_notes`: onsets are the running sum of the steps, rounded to the
performer's grid (quarters, eighths or 16ths:
:meth:`~livegen.models.block.BlockGenerator.onset_grid`; 16ths before anyone played);
durations are rounded to 16ths (1 to ``max_hold``); pitches are the nearest allowed MIDI
pitch of each frequency (in the live range and scale, and without a scale in the
performer's key: :meth:`~livegen.models.block.BlockGenerator.allowed_pitches`; in a
single line a repeated pitch only where the frequencies are within half a semitone:
:func:`~livegen.models.block.snap_line`); notes starting at or after the block's end
(``block_frames`` 16ths) are dropped. A package trained on single lines says
``monophonic = true``: its notes are laid one after another, at least a grid step apart,
each ending where the next starts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from livegen.models.block import BlockGenerator, snap_line, snap_values
from livegen.models.contract import ANY, Contract, Exactly, Flag, Numbers, Tensor, Whole
from livegen.models.frames import RollNote
from livegen.models.package import ModelPackage
from livegen.models.sampling import SamplingParams

#: The columns of a generated event, in order.
FEATURES = ("duration", "frequency", "velocity", "step")
#: Frequency of the lowest MIDI pitch (0); lower generated frequencies play as pitch 0.
LOWEST_FREQUENCY = 440.0 * 2.0 ** (-69 / 12)
GRAPH = "generator"
_PER_FEATURE = f", one per feature ({', '.join(FEATURES)})"


def frequency_of_pitch(pitch: np.ndarray | float) -> np.ndarray:
    """Equal-tempered frequency in Hz of a MIDI pitch (A4 = 69 = 440 Hz)."""
    return np.asarray(440.0 * 2.0 ** ((np.asarray(pitch, dtype=np.float64) - 69.0) / 12.0))


def pitch_number(frequency: np.ndarray | float) -> np.ndarray:
    """The MIDI pitch of a frequency in Hz as a continuous number (A4 = 69 = 440 Hz; at least 0)."""
    f = np.maximum(np.asarray(frequency, dtype=np.float64), LOWEST_FREQUENCY)
    return np.asarray(69.0 + 12.0 * np.log2(f / 440.0))


def pitch_of_frequency(frequency: np.ndarray | float) -> np.ndarray:
    """The nearest MIDI pitch (0-127, int64) of a frequency in Hz."""
    return np.clip(np.floor(pitch_number(frequency) + 0.5), 0, 127).astype(np.int64)


def phrase_notes(
    events: np.ndarray,
    block_frames: int,
    max_hold: int,
    *,
    monophonic: bool = False,
    track: int = 0,
    allowed: np.ndarray | None = None,
    onset_grid: int = 1,
) -> list[RollNote]:
    """A generated phrase [N, 4] in musical units (duration, frequency, velocity, step) laid into a block.

    Note k starts at ``round(4 * (step_0 + ... + step_k))`` 16ths from the block's start
    (negative steps count as 0), halves rounding up; it lasts ``round(4 * duration)``
    16ths, at least 1 and at most ``max_hold``; its pitch is the nearest MIDI pitch of its
    frequency (of those ``allowed`` [128] allows, when given) and its velocity the rounded
    intensity, 1 to 127. Notes starting at or after
    ``block_frames`` are dropped (the host cuts the others at the block's end).

    ``monophonic`` (a package trained on single lines): a note starts at least one 16th
    (``onset_grid`` 16ths) after the one before, and ends at the latest where the next one
    starts. ``onset_grid``: onsets are rounded to multiples of that many 16ths (the
    performer's grid, :meth:`~livegen.models.block.BlockGenerator.onset_grid`).
    """
    events = np.asarray(events, dtype=np.float64)
    g = max(1, onset_grid)
    starts = np.minimum(4.0 * np.cumsum(np.maximum(events[:, 3], 0.0)), block_frames)  # later ones are dropped
    onsets = np.floor(starts / g + 0.5).astype(np.int64) * g
    frames = np.clip(np.floor(4.0 * events[:, 0] + 0.5), 1, max_hold).astype(np.int64)
    if monophonic and len(onsets):
        steps = g * np.arange(len(onsets))
        onsets = np.maximum.accumulate(onsets - steps) + steps
        frames[:-1] = np.minimum(frames[:-1], np.diff(onsets))
    pitches = pitch_of_frequency(events[:, 1])
    if allowed is not None:
        snap = snap_line if monophonic else snap_values
        pitches = snap(pitch_number(events[:, 1]), allowed)
    velocities = np.clip(np.floor(events[:, 2] + 0.5), 1, 127).astype(np.int64)
    notes = [
        RollNote(int(onset), int(length), int(pitch), track, int(velocity))
        for onset, length, pitch, velocity in zip(onsets, frames, pitches, velocities, strict=True)
        if onset < block_frames
    ]
    notes.sort(key=lambda n: (n.onset, -n.pitch))
    return notes


class CrnnGanGenerator(BlockGenerator):
    """C-RNN-GAN generator: phrases of N notes from noise, laid into blocks, the best-fitting kept."""

    velocities = True  # each generated note has a velocity feature of its own

    contract = Contract(
        fields=(
            Whole("grid", maximum=1920),
            Whole("block_frames", maximum=256),
            Whole("notes", maximum=1024),
            Whole("noise", maximum=4096),
            Whole("max_hold", maximum=256),
            Exactly("features", FEATURES, meaning=" (duration and step in beats, frequency in Hz, velocity)"),
            Flag("monophonic", default=False, meaning=" (true: lay the notes as one line)"),
            Numbers("feature_mean", len(FEATURES), meaning=_PER_FEATURE),
            Numbers("feature_scale", len(FEATURES), positive=True, meaning=_PER_FEATURE),
        ),
        tensors=(
            Tensor(GRAPH, "noise", (ANY, "notes", "noise")),
            Tensor(GRAPH, "notes", (ANY, "notes", len(FEATURES))),
        ),
    )

    def __init__(self, package: ModelPackage) -> None:
        self.package = package
        values = self.contract.values(package)
        grid, block_frames = values["grid"], values["block_frames"]
        self.notes, self.noise, self.max_hold = values["notes"], values["noise"], values["max_hold"]
        self.monophonic = values["monophonic"]
        self.mean = np.asarray(values["feature_mean"], dtype=np.float64)
        self.scale = np.asarray(values["feature_scale"], dtype=np.float64)
        self._session = package.sessions[GRAPH]
        self._init_block(
            block_frames=block_frames,
            context_frames=0,
            conditioned=False,
            max_hold=self.max_hold,
            grid=grid,
            key_snapping=True,
        )

    def generate(self, noise: np.ndarray) -> np.ndarray:
        """One call of the graph: noise [batch, N, noise] -> events in musical units [batch, N, 4]."""
        (notes,) = self._session.run(["notes"], {"noise": noise.astype(np.float32)})
        return np.asarray(notes, dtype=np.float64) * self.scale + self.mean

    def _propose(
        self, previous: Sequence[RollNote], count: int, params: SamplingParams, rng: np.random.Generator
    ) -> list[list[RollNote]]:
        noise = rng.uniform(-1.0, 1.0, size=(count, self.notes, self.noise)) * params.temperature
        allowed, grid = self.allowed_pitches(params), self.onset_grid()
        return [
            phrase_notes(
                phrase, self.block_frames, self.max_hold, monophonic=self.monophonic, allowed=allowed, onset_grid=grid
            )
            for phrase in self.generate(noise)
        ]
