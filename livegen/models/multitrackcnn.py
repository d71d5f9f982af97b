"""The ``multitrack-cnn`` family (seed 004's CNN) as a ``block`` generator.

Context: control (the planner's thread); the manifest checks in the constructor run at setup.

Seed 004 maps the last 20 time steps of a multi-track piano roll (instruments x time x
pitch) to the next 20 with a symmetric 2D CNN, so every instrument's next bar is
predicted from all instruments at once ("dependent instrument sampling"). Here the
tracks are those of ``multitrack-rnn`` (``representation.tracks``: a name, a MIDI
channel, a GM program and the track's mean training pitch), each one line: per track
and frame a one-hot over ``keys + 1`` classes (class 0 = rest, class ``1 + k`` = pitch
``pitch_min + k``).

The graph contract (one graph, ``block``)::

    roll   float32 [batch, tracks, context_frames, keys + 1]   the one-hot frames before the block
    logits float32 [batch, tracks, block_frames, keys + 1]     per track and frame, the next block's classes

The CNN is not autoregressive: every frame of the block is a distribution given the
context only. The host plays it as one line per track (:func:`draw_lines`): frame by
frame, a sounding track keeps the pitch it had in the frame before (the last context
frame for the block's first) while the model gives that pitch a probability of at least
``hold_threshold``; otherwise, and always while it rests, it draws a class at the live
temperature and top-p among the classes the live range and scale allow. Drawing every frame independently would
change a voice almost every 16th (the clutter seed 004 reports for its independently
sampled RNN); holding makes runs of frames into notes.

The family is conditioned (:attr:`~livegen.models.block.BlockGenerator.conditioned`):
``previous`` holds the notes of the ``context_frames`` before the block, the
performer's included; each performed note is given the free track whose ``center`` is
nearest (:func:`~livegen.models.multitrack.assign_tracks`), so a melody played high is
heard as the top voice. The graph is deterministic given the context, so one run serves
every candidate asked for; only the draws differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np

from livegen.errors import PackageError
from livegen.models.block import BlockGenerator, notes_of_block
from livegen.models.frames import RollNote, representation_ints
from livegen.models.manifest import MANIFEST
from livegen.models.multitrack import assign_tracks, read_tracks, tracks_to_frames
from livegen.models.package import ModelPackage
from livegen.models.sampling import SamplingParams, sample_logits

#: The graph's role in ``[graphs]``.
ROLE = "block"
#: Integer representation fields (``pitch_min`` at least 0, the rest at least 1).
INTEGER_FIELDS = ("pitch_min", "keys", "context_frames", "block_frames", "max_hold", "grid")


def context_roll(
    previous: Sequence[RollNote], centers: Sequence[float], frames: int, pitch_min: int, keys: int
) -> np.ndarray:
    """The graph's ``roll`` float32 [tracks, frames, keys + 1] of the ``frames`` before a block.

    ``previous`` has onsets relative to the block's start (negative); performed notes
    (:data:`~livegen.models.frames.ANY_TRACK`) are given tracks first.
    """
    tracks = len(centers)
    notes = assign_tracks(previous, centers)
    flat = tracks_to_frames(notes, -frames, frames, tracks, pitch_min, keys)
    return np.ascontiguousarray(flat.reshape(frames, tracks, keys + 1).transpose(1, 0, 2))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64."""
    x = logits.astype(np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return cast(np.ndarray, e / e.sum(axis=-1, keepdims=True))


def draw_lines(
    logits: np.ndarray,
    last: Sequence[int],
    params: SamplingParams,
    rng: np.random.Generator,
    mask: np.ndarray,
    *,
    hold_threshold: float,
) -> np.ndarray:
    """One line per track: classes int64 [tracks, frames] drawn from ``logits`` [tracks, frames, classes].

    Frame by frame, a track keeps the pitch it sounded in the frame before (``last[t]`` before
    the first frame) while ``mask`` allows it and the model gives it at least ``hold_threshold``
    (``softmax(logits)`` over the classes ``mask`` allows, at temperature 1); otherwise the
    class is drawn with :func:`~livegen.models.sampling.sample_logits` (temperature, top-p,
    ``mask``). A rest is never held: a silent voice may enter on any frame (held rests
    kept a voice silent for as long as the model gave a rest that much, which after a
    sparse bar, such as a performer's single line, was for ever).
    """
    tracks, frames, _ = logits.shape
    probs = softmax(np.where(mask, logits, -np.inf)) if mask.any() else softmax(logits)
    out = np.zeros((tracks, frames), dtype=np.int64)
    for t in range(tracks):
        prev = int(last[t])
        for f in range(frames):
            if 0 < prev < len(mask) and mask[prev] and probs[t, f, prev] >= hold_threshold:
                choice = prev
            else:
                choice = sample_logits(logits[t, f], params, rng, mask)
            out[t, f] = choice
            prev = choice
    return out


def lines_to_notes(classes: np.ndarray, pitch_min: int, keys: int) -> list[RollNote]:
    """The notes of per-track classes [tracks, frames] (0 = rest): a run of one pitch is one note."""
    notes: list[RollNote] = []
    tracks, frames = classes.shape
    for t in range(tracks):
        roll = np.zeros((frames, keys), dtype=np.float32)
        sounding = classes[t] > 0
        roll[np.flatnonzero(sounding), classes[t][sounding] - 1] = 1.0
        notes.extend(notes_of_block(roll, pitch_min, track=t))
    notes.sort(key=lambda n: (n.onset, -n.pitch, n.track))
    return notes


class MultiTrackCnnGenerator(BlockGenerator):
    """Seed 004's symmetric CNN over a multi-track roll: the next block from the block before."""

    def __init__(self, package: ModelPackage) -> None:
        self.package = package
        path = package.folder / MANIFEST
        values = representation_ints(package, INTEGER_FIELDS)
        self.pitch_min, self.keys = values["pitch_min"], values["keys"]
        threshold = package.manifest.representation.get("hold_threshold", 0.5)
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold <= 1:
            raise PackageError(
                f"{path}: field 'representation.hold_threshold': expected a number above 0 and at most 1, "
                f"got {threshold!r}"
            )
        self.hold_threshold = float(threshold)
        self.tracks = read_tracks(package)
        graph = package.manifest.graphs.get(ROLE)
        if graph is None:
            raise PackageError(f"{path}: a {package.manifest.family} package needs [graphs.{ROLE}]")
        width = self.keys + 1
        for tensors, name, frames_field in (
            (graph.inputs, "roll", "context_frames"),
            (graph.outputs, "logits", "block_frames"),
        ):
            spec = next((s for s in tensors if s.name == name), None)
            if spec is None:
                raise PackageError(f"{path}: [graphs.{ROLE}] needs a tensor named {name!r}")
            expected = (len(self.tracks), values[frames_field], width)
            if len(spec.shape) != 4 or tuple(spec.shape[1:]) != expected:
                raise PackageError(
                    f"{path}: field 'representation': {len(self.tracks)} tracks, {frames_field} = "
                    f"{values[frames_field]} and {self.keys} keys need graph tensor {name!r} of shape "
                    f"[batch, {', '.join(map(str, expected))}], the manifest says {list(spec.shape)}"
                )
        self._session = package.sessions[ROLE]
        self._init_block(
            block_frames=values["block_frames"],
            context_frames=values["context_frames"],
            conditioned=True,
            max_hold=values["max_hold"],
            grid=values["grid"],
        )
        self.channels = {t: track.channel for t, track in enumerate(self.tracks)}
        self._centers = [t.center for t in self.tracks]
        self._mask_key: SamplingParams | None = None
        self._mask = np.ones(width, dtype=bool)

    @property
    def programs(self) -> dict[int, int]:
        """MIDI channel -> GM program of each track."""
        return {t.channel: t.program for t in self.tracks}

    def _class_mask(self, params: SamplingParams) -> np.ndarray:
        """Classes the live range and scale allow: the rest always, the pitches inside them (all if none is)."""
        if params != self._mask_key:
            mask = np.ones(self.keys + 1, dtype=bool)
            keys = params.pitch_mask()[self.pitch_min : self.pitch_min + self.keys]
            if keys.any():
                mask[1:] = keys
            self._mask = mask
            self._mask_key = params
        return self._mask

    def _propose(
        self, previous: Sequence[RollNote], count: int, params: SamplingParams, rng: np.random.Generator
    ) -> list[list[RollNote]]:
        roll = context_roll(previous, self._centers, self.context_frames, self.pitch_min, self.keys)
        (logits,) = self._session.run(["logits"], {"roll": roll[None]})
        last = roll[:, -1].argmax(-1)
        mask = self._class_mask(params)
        return [
            lines_to_notes(
                draw_lines(logits[0], last, params, rng, mask, hold_threshold=self.hold_threshold),
                self.pitch_min,
                self.keys,
            )
            for _ in range(count)
        ]
