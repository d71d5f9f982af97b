"""The ``midigan`` family (seed 000 §4.2) as a ``block`` generator.

Context: control (the planner's thread); the manifest checks in the constructor run at setup.

The seed's MidiGAN makes *one note* per noise vector: a dense generator maps
``latent`` (100) normal numbers to the note's three attributes (pitch, step,
duration), standardised (zero mean, unit standard deviation over the training
notes) and squashed by ``tanh``. One graph, ``generator``:

- ``z`` [batch, latent] float32 -> ``notes`` [batch, 3] float32, the standardised
  (pitch, step, duration) in the order of ``representation.attributes``;
  ``notes * tanh_reach * std + mean`` turns them back into a MIDI pitch and a step
  and a duration in beats (``time_unit = "beat"``), from ``representation.mean``,
  ``std`` and ``tanh_reach``, three numbers each: how many standard deviations
  ``tanh``'s ±1 spans per attribute (1 when absent: the seed's standardised data,
  which keeps every attribute within mean ± 1 deviation).

Notes drawn this way are independent of each other; this adapter lays a block of
them into a bar the way the seed laid them into a song, sequentially: each note
starts its ``step`` after the note before (rounded to the 16th grid, at least one
16th), the first its step after the last onset heard before the block (or on the
block's first 16th when nothing was), and notes are drawn until the bar is full.
A note sounds its ``duration`` but ends where the next starts (the corpus is one
line); onsets keep to the performer's grid (quarters, eighths or 16ths:
:meth:`~livegen.models.block.BlockGenerator.onset_grid`). A pitch is the nearest
allowed pitch to the generated number (in the live range and scale, and without a
scale in the performer's key:
:meth:`~livegen.models.block.BlockGenerator.allowed_pitches`), a repeated pitch only
where the numbers are within half a semitone (:func:`~livegen.models.block.snap_line`).
``representation.notes_per_block`` notes are drawn per candidate, and all candidates
go through the graph in one call (batch ``candidates * notes_per_block``).

Sampling parameters: the temperature scales the noise (``z * temperature``: below 1
the notes gather at the generator's most common note, above 1 they spread to the
ends of its range); top-p truncates it (every component of ``z`` redrawn until it
lies in the central ``top_p`` of the standard normal, the GAN "truncation trick";
1 = no truncation). The family is unconditional: it follows the performer through
the block host's choice among ``params.candidates`` blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from livegen.errors import PackageError
from livegen.models.block import BlockGenerator, snap_line
from livegen.models.contract import ANY, Contract, Exactly, Numbers, Tensor, Whole
from livegen.models.frames import RollNote
from livegen.models.manifest import MANIFEST
from livegen.models.package import ModelPackage
from livegen.models.sampling import SamplingParams

ATTRIBUTES = ("pitch", "step", "duration")
GRAPH = "generator"
#: Frames (16ths) per beat on the block grid.
FRAMES_PER_BEAT = 4
#: The longest step or duration a note may have, beats (a block is far shorter).
MAX_BEATS = 64


def to_frames(beats: np.ndarray, frames_per_beat: int = FRAMES_PER_BEAT) -> np.ndarray:
    """Beats as whole frames, halves rounded up, at least 1 and at most :data:`MAX_BEATS` beats."""
    frames = np.floor(np.asarray(beats, dtype=np.float64) * frames_per_beat + 0.5)
    return np.clip(frames, 1, MAX_BEATS * frames_per_beat).astype(np.int64)


def lay_block(
    pitches: Sequence[int] | np.ndarray,
    steps: Sequence[int] | np.ndarray,
    durations: Sequence[int] | np.ndarray,
    *,
    last_onset: int | None,
    block_frames: int,
    onset_grid: int = 1,
) -> list[RollNote]:
    """Independently drawn notes laid one after another into a block of ``block_frames`` frames.

    ``steps`` and ``durations`` are in frames (at least 1). The first note starts
    ``steps[0]`` after ``last_onset`` (the last onset before the block, relative to the
    block's start, so negative) or on frame 0 when there is none; each later note
    ``steps[i]`` after the one before. Notes before the block are skipped, drawing
    stops at the block's end, and a note ends where the next one starts (one line).
    ``onset_grid``: steps are rounded to multiples of that many frames (halves up, at least
    one), and the first onset after ``last_onset`` up to the next multiple from the block's
    start.
    """
    g = max(1, onset_grid)
    onsets: list[int] = []
    kept: list[int] = []
    onset = last_onset
    for i, step in enumerate(steps):
        # on the grid from the block's start: a step is a whole number of grid steps, the first one rounded up
        onset = 0 if onset is None else -(-(onset + max(g, g * ((int(step) + g // 2) // g))) // g) * g
        if onset >= block_frames:
            break
        if onset >= 0:
            onsets.append(onset)
            kept.append(i)
    notes = []
    for j, i in enumerate(kept):
        frames = max(1, int(durations[i]))
        if j + 1 < len(kept):
            frames = min(frames, onsets[j + 1] - onsets[j])
        notes.append(RollNote(onsets[j], frames, int(pitches[i])))
    return notes


def truncated_normal(rng: np.random.Generator, shape: tuple[int, int], top_p: float) -> np.ndarray:
    """Standard normal draws, each redrawn until it lies in the central ``top_p`` of the distribution."""
    z = rng.standard_normal(shape)
    if top_p >= 1.0:
        return z
    bound = NormalDist().inv_cdf(0.5 + top_p / 2)
    outside = np.abs(z) > bound
    while outside.any():
        z[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(z) > bound
    return z


class MidiGanGenerator(BlockGenerator):
    """Dense GAN generator of single notes, laid sequentially into bars."""

    contract = Contract(
        fields=(
            Whole("grid"),
            Whole("block_frames", maximum=256),
            Whole("context_frames", minimum=0),
            Whole("latent"),
            Whole("notes_per_block"),
            Exactly("attributes", ATTRIBUTES, meaning=" (the order of the graph's note attributes)"),
            Exactly("time_unit", "beat", default="beat", meaning=" (step and duration in quarter notes)"),
            Numbers("mean", len(ATTRIBUTES), meaning=" (pitch, step, duration)"),
            Numbers("std", len(ATTRIBUTES), positive=True, meaning=" (pitch, step, duration)"),
            Numbers(
                "tanh_reach",
                len(ATTRIBUTES),
                positive=True,
                default=(1.0,) * len(ATTRIBUTES),
                meaning=" (standard deviations at tanh's ±1)",
            ),
        ),
        tensors=(Tensor(GRAPH, "z", (ANY, "latent")), Tensor(GRAPH, "notes", (ANY, len(ATTRIBUTES)))),
    )

    def __init__(self, package: ModelPackage) -> None:
        self.package = package
        values = self.contract.values(package)
        grid, block_frames, context_frames = values["grid"], values["block_frames"], values["context_frames"]
        self.latent, self.notes_per_block = values["latent"], values["notes_per_block"]
        self.mean = np.asarray(values["mean"], dtype=np.float64)
        self.std = np.asarray(values["std"], dtype=np.float64)
        self.scale = self.std * np.asarray(values["tanh_reach"], dtype=np.float64)
        self.frames_per_beat = 480 // grid if 480 % grid == 0 else 0
        if not self.frames_per_beat:
            raise PackageError(
                f"{package.folder / MANIFEST}: field 'representation.grid': expected a whole fraction of a beat in "
                f"ticks (PPQN 480), e.g. 120 for 16ths, got {grid!r}"
            )
        self._session = package.sessions[GRAPH]
        self._init_block(
            block_frames=block_frames, context_frames=context_frames, conditioned=False, grid=grid, key_snapping=True
        )

    def draw(self, count: int, params: SamplingParams, rng: np.random.Generator) -> np.ndarray:
        """``count`` notes from the generator: float64 [count, 3] of (pitch, step, duration) in MIDI and beats."""
        z = truncated_normal(rng, (count, self.latent), params.top_p) * params.temperature
        (notes,) = self._session.run(["notes"], {"z": z.astype(np.float32)})
        return np.asarray(notes, dtype=np.float64) * self.scale + self.mean

    def _propose(
        self, previous: Sequence[RollNote], count: int, params: SamplingParams, rng: np.random.Generator
    ) -> list[list[RollNote]]:
        n = self.notes_per_block
        notes = self.draw(count * n, params, rng).reshape(count, n, len(ATTRIBUTES))
        allowed, grid = self.allowed_pitches(params), self.onset_grid()
        pitches = np.stack([snap_line(line, allowed) for line in notes[..., 0]])
        steps = to_frames(np.maximum(notes[..., 1], 0.0), self.frames_per_beat)
        durations = to_frames(np.maximum(notes[..., 2], 0.0), self.frames_per_beat)
        last = max((p.onset for p in previous), default=None)
        return [
            lay_block(
                pitches[k], steps[k], durations[k], last_onset=last, block_frames=self.block_frames, onset_grid=grid
            )
            for k in range(count)
        ]
