"""The ``multitrack-rnn`` family (seed 004's baseline) as a ``frame`` generator.

Context: control (the planner's thread); the manifest checks in the constructor run at setup.
:func:`piece_frames` (setup) is how training reads a piece, shared by the exporter and the
held-out likelihood.

Several tracks, each one line, share a frame vector: per track, a one-hot over
``keys + 1`` classes (class 0 = rest, class ``1 + k`` = pitch ``pitch_min + k``),
concatenated track after track. One streaming graph, ``step``, reads the frame just
played (``frame`` [batch, tracks * (keys + 1)]) with its LSTM state (``h``, ``c``)
and gives ``logits`` [batch, tracks, keys + 1] for the next frame. Each track is drawn
independently from its own distribution (the seed's "independent instrument
sampling"), as one line (:func:`keep_or_change`):

- **How often a voice moves is the model's.** A track changes class (pitch or rest)
  with the model's own probability of a change, and then to a class drawn from the
  others at the live temperature and top-p: the temperature shapes where a voice goes,
  never how often. Tempering the whole distribution would make the class a voice
  already has, nearly always the likeliest, a trap: at 0.5 a chord would be held for
  bars and a rest never left. The roll has no onset flag, so a pitch drawn again is the
  note held.
- **When it moves follows the beat.** The model reads no beat, and left to itself it
  changes as often on a beat's second 16th as on the beat. With
  ``representation.onset_profile`` (the training roll's share of onsets on each 16th
  of a beat) the chance of a change is weighted by the frame's place in the beat
  (:meth:`~livegen.models.frames.FrameGenerator.metre`, mean 1, so the number of
  changes stays about the model's).
- **A silent voice enters.** A track that has rested ``max_silence`` frames enters on
  a pitch drawn from its distribution without the rest. The chorales' voices rest 3%
  of their frames; a voice silent that long (after a one-line phrase) is a context the
  model never learned, and its rest probability there only copies the silence it read.

The frame the model reads next is always the one played. Each track plays on its own
MIDI channel with its own GM program
(``representation.tracks``, see ``docs/model-package.md``); :attr:`programs` tells the
jam which program to send on which channel.

The performer plays one part, not the tracks: each performed note is given to the
track whose usual register (``tracks[].center``) is nearest among those free at its
onset, so a melody played high is heard as the top voice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, cast

import numpy as np

from livegen.errors import PackageError
from livegen.models.contract import ANY, Contract, Tensor
from livegen.models.frames import ANY_TRACK, FRAME_FIELDS, FrameGenerator, RollNote, note_frames, onset_profile
from livegen.models.manifest import MANIFEST
from livegen.models.package import ModelPackage
from livegen.models.sampling import SamplingParams, sample_logits
from livegen.models.step import StreamingGraph
from livegen.music.time import PPQN, SIXTEENTH

if TYPE_CHECKING:
    from livegen.music.corpus import MultiTune


def keep_or_change(
    logits: np.ndarray,
    previous: int,
    params: SamplingParams,
    rng: np.random.Generator,
    mask: np.ndarray,
    metre: float = 1.0,
) -> int:
    """A line's next class: it changes with the model's own probability of a change, ``1 - p(previous)``
    (``p = softmax(logits)`` over the classes ``mask`` allows, at temperature 1) times ``metre`` (at most
    1), to one of the other classes drawn with :func:`~livegen.models.sampling.sample_logits`
    (temperature, top-p); else it keeps ``previous``. At temperature 1 and ``metre`` 1 this is a draw
    from the model's distribution; the temperature never changes how often a line moves."""
    if not (0 <= previous < len(mask) and mask[previous]):
        return sample_logits(logits, params, rng, mask)
    x = np.where(mask, logits.astype(np.float64), -np.inf)
    probs = np.exp(x - x.max())
    change = (1.0 - probs[previous] / probs.sum()) * metre
    others = mask.copy()
    others[previous] = False
    if rng.random() >= change or not others.any():
        return previous
    return sample_logits(logits, params, rng, others)


@dataclass(frozen=True, slots=True)
class _LineState:
    """The graph after the frames it read: the next frame's logits, its state, and per track the class it
    read last and the frames it has rested up to there."""

    logits: np.ndarray  # [tracks, keys + 1]
    graph: tuple[np.ndarray, ...]  # the declared state, in the manifest's order
    classes: tuple[int, ...]
    rests: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Track:
    name: str
    channel: int
    program: int
    center: float


def assign_tracks(notes: Sequence[RollNote], centers: Sequence[float]) -> list[RollNote]:
    """``notes`` with every :data:`ANY_TRACK` note given a track: the free track nearest its pitch.

    Notes are taken in onset order; a track is free at an onset when its last note has
    ended. When none is free, the nearest track takes the note anyway.
    """
    busy = [-(1 << 30)] * len(centers)
    for n in notes:
        if n.track != ANY_TRACK and 0 <= n.track < len(centers):
            busy[n.track] = max(busy[n.track], n.end)
    out = []
    for n in sorted(notes, key=lambda n: (n.onset, -n.pitch)):
        if n.track == ANY_TRACK:
            order = sorted(range(len(centers)), key=lambda t: (abs(centers[t] - n.pitch), t))
            track = next((t for t in order if busy[t] <= n.onset), order[0])
            busy[track] = max(busy[track], n.end)
            n = replace(n, track=track)
        out.append(n)
    return out


def tracks_to_frames(
    notes: Sequence[RollNote], start: int, length: int, tracks: int, pitch_min: int, keys: int
) -> np.ndarray:
    """One-hot frames float32 [length, tracks * (keys + 1)] (class 0 = rest) of notes with known tracks.

    Where two notes of a track overlap, the one that started later sounds. Pitches
    outside the range are rests.
    """
    width = keys + 1
    classes = np.zeros((length, tracks), dtype=np.int64)
    for n in sorted(notes, key=lambda n: n.onset):
        key = n.pitch - pitch_min
        if 0 <= n.track < tracks and 0 <= key < keys:
            a, b = max(n.onset, start), min(n.end, start + length)
            if a < b:
                classes[a - start : b - start, n.track] = 1 + key
    frames = np.zeros((length, tracks * width), dtype=np.float32)
    rows = np.repeat(np.arange(length), tracks)
    cols = (np.arange(tracks) * width)[None, :].repeat(length, 0).ravel() + classes.ravel()
    frames[rows, cols] = 1.0
    return frames


def piece_notes(piece: MultiTune) -> list[RollNote]:
    """The piece's notes on the frame grid, each with its track, from the piece's first onset."""
    first = min(float(t.onset[0]) for t in piece.tracks)
    notes = []
    for track, tune in enumerate(piece.tracks):
        for pitch, onset, duration in zip(tune.pitch, tune.onset, tune.duration, strict=True):
            start, frames = note_frames(round((float(onset) - first) * PPQN), round(float(duration) * PPQN), SIXTEENTH)
            notes.append(RollNote(start, frames, int(pitch), track))
    return notes


def piece_frames(piece: MultiTune, tracks: int, pitch_min: int, keys: int) -> np.ndarray:
    """The piece as training reads it: :func:`tracks_to_frames` of all its frames (its first ``tracks`` tracks)."""
    notes = piece_notes(piece)
    return tracks_to_frames(notes, 0, max(n.end for n in notes), tracks, pitch_min, keys)


def read_tracks(package: ModelPackage) -> tuple[Track, ...]:
    """``representation.tracks`` as :class:`Track` values (the same table as ``multitrack-rnn``'s)."""
    path = package.folder / MANIFEST
    items = package.manifest.representation.get("tracks")
    expected = "a list of {name, channel (0-15), program (0-127), center (a MIDI pitch)} tables, one per track"
    if not isinstance(items, list) or not items:
        raise PackageError(f"{path}: field 'representation.tracks': expected {expected}, got {items!r}")
    tracks = []
    for i, item in enumerate(items):
        ok = isinstance(item, dict) and isinstance(item.get("name"), str)
        channel, program, center = (item.get(k) for k in ("channel", "program", "center")) if ok else (0, 0, 0)
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in (channel, program))
        ok = ok and isinstance(center, int | float) and not isinstance(center, bool)
        if not ok or not 0 <= cast(int, channel) <= 15 or not 0 <= cast(int, program) <= 127:
            raise PackageError(f"{path}: field 'representation.tracks[{i}]': expected {expected}, got {item!r}")
        tracks.append(Track(item["name"], cast(int, channel), cast(int, program), float(cast(float, center))))
    if len({t.channel for t in tracks}) != len(tracks):
        raise PackageError(f"{path}: field 'representation.tracks': expected one channel per track, got {items!r}")
    return tuple(tracks)


class MultiTrackGenerator(FrameGenerator):
    """LSTM over flattened multi-track frames, one line per track on its own channel.

    Its frame holds every track's keys and a rest (``tracks`` times ``keys + 1``), checked here:
    the contract states the tensors, the adapter their width.
    """

    contract = Contract(
        fields=FRAME_FIELDS,
        tensors=(Tensor("step", "frame", (ANY, ANY)), Tensor("step", "logits", (ANY, ANY, ANY))),
        key_range=True,
    )

    def __init__(self, package: ModelPackage) -> None:
        self.package = package
        path = package.folder / MANIFEST
        self._init_frames(self.contract.values(package))
        self.tracks = read_tracks(package)
        self.channels = {t: track.channel for t, track in enumerate(self.tracks)}
        width = len(self.tracks) * (self.keys + 1)
        shapes = {
            spec.name: spec.shape
            for spec in (*package.manifest.graphs["step"].inputs, *package.manifest.graphs["step"].outputs)
        }
        for tensor, expected in (("frame", width), ("logits", self.keys + 1)):
            declared = shapes[tensor][-1]
            if declared != expected:
                raise PackageError(
                    f"{path}: field 'representation.tracks': {len(self.tracks)} tracks of {self.keys} keys need graph "
                    f"tensor {tensor!r} to end in {expected}, the manifest says {declared}"
                )
        self.profile = onset_profile(package, PPQN // self.grid)
        self._graph = StreamingGraph(package, "step")
        self._centers = [t.center for t in self.tracks]
        self._mask_key: SamplingParams | None = None
        self._mask = np.ones(self.keys + 1, dtype=bool)

    @property
    def programs(self) -> dict[int, int]:
        """MIDI channel -> GM program of each track."""
        return {t.channel: t.program for t in self.tracks}

    def _slot_track(self, slot: int) -> int:
        return slot

    def _slot_of(self, note: RollNote) -> int:
        return note.track

    def _placed(self, notes: Sequence[RollNote]) -> Sequence[RollNote]:
        return assign_tracks(notes, self._centers)

    def _run(self, frame: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        out = self._graph.run({"frame": frame[None]})
        return out["logits"][0], tuple(self._graph.state[src] for src, _ in self._graph.spec.state)

    def _encode(self, notes: Sequence[RollNote], end: int) -> object:
        notes = assign_tracks(notes, self._centers)
        first = min((n.onset for n in notes), default=end - 1)
        start = max(end - self.window, min(first, end - 1))
        frames = tracks_to_frames(notes, start, end - start, len(self.tracks), self.pitch_min, self.keys)
        self._graph.reset()
        logits = np.zeros((len(self.tracks), self.keys + 1), dtype=np.float32)
        graph: tuple[np.ndarray, ...] = ()
        for frame in frames:
            logits, graph = self._run(frame)
        classes = frames.reshape(len(frames), len(self.tracks), self.keys + 1).argmax(-1)
        sounded = classes > 0
        rests = tuple(
            int(len(frames) - 1 - np.flatnonzero(sounded[:, t]).max()) if sounded[:, t].any() else len(frames)
            for t in range(len(self.tracks))
        )
        return _LineState(logits, graph, tuple(int(c) for c in classes[-1]), rests)

    def _track_mask(self, params: SamplingParams) -> np.ndarray:
        if params != self._mask_key:
            mask = np.ones(self.keys + 1, dtype=bool)
            mask[1:] = params.pitch_mask()[self.pitch_min : self.pitch_min + self.keys]
            self._mask = mask
            self._mask_key = params
        return self._mask

    def _frame(
        self, state: object, held: Mapping[int, int], params: SamplingParams, rng: np.random.Generator
    ) -> tuple[object, dict[int, int]]:
        s = cast(_LineState, state)
        mask = self._track_mask(params)
        entering = mask.copy()
        entering[0] = False
        width = self.keys + 1
        metre = self.metre()
        frame = np.zeros(len(self.tracks) * width, dtype=np.float32)
        sounding: dict[int, int] = {}
        classes, rests = [], []
        for t, (previous, rested) in enumerate(zip(s.classes, s.rests, strict=True)):
            if previous == 0 and rested >= self.max_silence and entering.any():
                choice = sample_logits(s.logits[t], params, rng, entering)
            else:
                choice = keep_or_change(s.logits[t], previous, params, rng, mask, metre)
            frame[t * width + choice] = 1.0
            classes.append(choice)
            rests.append(rested + 1 if choice == 0 else 0)
            if choice:
                sounding[t] = self.pitch_min + choice - 1
        self._graph.state = {src: value for (src, _), value in zip(self._graph.spec.state, s.graph, strict=True)}
        logits, graph = self._run(frame)
        return _LineState(logits, graph, tuple(classes), tuple(rests)), sounding

    def _force(self, state: object, params: SamplingParams) -> dict[int, int]:
        logits = cast(_LineState, state).logits[0]
        mask = self._track_mask(params).copy()
        mask[0] = False
        key = int(np.argmax(np.where(mask, logits, -np.inf))) if mask.any() else 1 + self.keys // 2
        return {0: self.pitch_min + key - 1}
