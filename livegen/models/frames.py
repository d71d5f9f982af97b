"""The ``frame`` kind: a model of piano-roll frames, played one note at a time by the step planners.

Context: control (the planner's thread); the constructor runs at setup.

A frame model predicts the next grid step (a 16th) of a piano roll from the roll
before it. The planners, however, take one note at a time and must know each
note's duration when they take it (they commit its note-on and note-off
together). :class:`FrameGenerator` bridges the two, for every frame family:

- **Context.** Fed notes (the performer's and the model's own) are kept as
  :class:`RollNote` values on the frame grid, relative to the first note fed since
  the last reset. When a sample is needed and no generation is under way, the
  family encodes the last ``window`` frames of that context (:meth:`_encode`).
- **Frames to notes.** The family turns each generated frame's distribution into
  the pitches sounding in it (:meth:`_frame`; :func:`draw_keys` is the rule for
  independent keys). :class:`FrameTracker` turns consecutive frames into
  notes: a slot (a key, or a track) sounding the same pitch as in the frame
  before *continues* its note, so held notes are held and not struck again every
  16th; a note is cut after ``max_hold`` frames (4 beats), which is how far ahead
  the adapter must generate before it knows a duration, and is not struck again
  while the model keeps it on (only an onset strikes a key).
- **A buffer of notes.** Frames are generated ahead until the earliest note not
  yet handed out is complete and no earlier one is still sounding; :meth:`sample`
  returns it as a :class:`~livegen.models.step.StepEvent` (a chord: several events
  with step 0). When the planner feeds back exactly that note, it is taken from the
  buffer and generation goes on where it was; any other fed note (the performer's,
  or a note the planner moved) is added to the context and the next sample encodes
  again: the model re-reads the roll when the performer plays.
- **Snapshots.** The context, the generation under way (the graph state, the open
  notes, the buffer) and the counters are immutable values (tuples, frozen
  dataclasses and arrays never written in place), so :meth:`snapshot` costs nothing.

The conversion between notes and rolls (:func:`notes_to_roll`, :func:`roll_to_notes`)
lives here too, for the families' adapters and for training. Written by hand: the
held-note and buffer rules are this host's, no library has them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import cast

import numpy as np

from livegen.errors import PackageError
from livegen.models.contract import Whole
from livegen.models.manifest import MANIFEST
from livegen.models.package import ModelPackage
from livegen.models.sampling import SamplingParams
from livegen.models.step import StepEvent
from livegen.music.time import SIXTEENTH

#: Frames are 16th notes.
GRID = SIXTEENTH
#: A track value for a note whose track is not known (the performer's).
ANY_TRACK = -1
VELOCITY = 90


@dataclass(frozen=True, slots=True)
class RollNote:
    """A note on the frame grid: first frame, length in frames (at least 1), pitch, track."""

    onset: int
    frames: int
    pitch: int
    track: int = 0
    velocity: int = VELOCITY

    @property
    def end(self) -> int:
        return self.onset + self.frames


def frame_of(tick: int, grid: int = GRID) -> int:
    """The frame nearest ``tick`` (halves round up)."""
    return (tick + grid // 2) // grid


def note_frames(onset_tick: int, duration: int, grid: int = GRID) -> tuple[int, int]:
    """(first frame, frames) of a note in ticks: at least one frame, as the roll shows it."""
    first = frame_of(onset_tick, grid)
    return first, max(1, frame_of(onset_tick + duration, grid) - first)


def notes_to_roll(notes: Iterable[RollNote], start: int, length: int, pitch_min: int, keys: int) -> np.ndarray:
    """A binary roll float32 [length, keys] of the frames ``start .. start + length - 1``.

    Row ``t``, column ``k`` is 1 when a note of pitch ``pitch_min + k`` sounds in frame
    ``start + t``. Notes outside the pitch range are left out.
    """
    roll = np.zeros((length, keys), dtype=np.float32)
    for n in notes:
        key = n.pitch - pitch_min
        if 0 <= key < keys:
            a, b = max(n.onset, start), min(n.end, start + length)
            if a < b:
                roll[a - start : b - start, key] = 1.0
    return roll


@dataclass(frozen=True, slots=True)
class _Open:
    slot: int
    pitch: int
    onset: int
    track: int
    inherited: bool  # a context note the generation found sounding: never handed out again


@dataclass(frozen=True, slots=True)
class FrameTracker:
    """Notes sounding at the generation frontier, one per slot (a key or a track).

    ``tied``: (slot, pitch) of notes the host cut at ``max_hold`` while the model kept them
    on. The model did not strike them again, so they stay silent until the slot stops
    sounding that pitch (or the family says the slot strikes).
    """

    open: tuple[_Open, ...] = ()
    max_hold: int = 16
    tied: tuple[tuple[int, int], ...] = ()

    def inherit(self, notes: Iterable[tuple[int, RollNote]]) -> FrameTracker:
        """Start from context notes sounding at the frontier (``(slot, note)`` pairs); they are never emitted."""
        return replace(
            self, open=tuple(_Open(slot, n.pitch, n.onset, n.track, inherited=True) for slot, n in notes), tied=()
        )

    def advance(
        self,
        frame: int,
        sounding: Mapping[int, int],
        tracks: Mapping[int, int],
        strikes: frozenset[int] = frozenset(),
    ) -> tuple[FrameTracker, list[RollNote]]:
        """Frame ``frame`` sounds ``sounding`` (slot -> pitch): the tracker after it and the notes it ended.

        A slot sounding the same pitch as its open note continues it, unless the slot is in
        ``strikes`` (a model that knows its onsets strikes the key again): then, or with
        another pitch or none, the note ends, and a new one starts with the new pitch. A note
        that has lasted ``max_hold`` frames ends too, but is not struck again while the slot
        keeps sounding its pitch: the model gave no onset. ``tracks`` gives the track of
        each new note's slot (default 0). Inherited notes end without being returned.
        """
        ended: list[RollNote] = []
        still: list[_Open] = []
        tied: list[tuple[int, int]] = []
        for note in self.open:
            same = sounding.get(note.slot) == note.pitch and note.slot not in strikes
            if same and frame - note.onset < self.max_hold:
                still.append(note)
                continue
            if not note.inherited:
                ended.append(RollNote(note.onset, frame - note.onset, note.pitch, note.track))
            if same:
                tied.append((note.slot, note.pitch))
        tied.extend((slot, pitch) for slot, pitch in self.tied if sounding.get(slot) == pitch and slot not in strikes)
        taken = {n.slot for n in still} | {slot for slot, _ in tied}
        for slot, pitch in sounding.items():
            if slot not in taken:
                still.append(_Open(slot, pitch, frame, tracks.get(slot, 0), inherited=False))
        return replace(self, open=tuple(still), tied=tuple(tied)), ended

    def close(self, frame: int) -> tuple[FrameTracker, list[RollNote]]:
        """End every open note at ``frame``."""
        ended = [RollNote(n.onset, frame - n.onset, n.pitch, n.track) for n in self.open if not n.inherited]
        return replace(self, open=(), tied=()), ended

    def held(self) -> dict[int, int]:
        """Slot -> pitch the model keeps on at the frontier: the sounding notes and the tied ones."""
        return {**dict(self.tied), **{n.slot: n.pitch for n in self.open}}

    def earliest_emittable(self) -> int | None:
        """The onset of the earliest open note that will be handed out when it ends."""
        return min((n.onset for n in self.open if not n.inherited), default=None)


def roll_to_notes(roll: np.ndarray, pitch_min: int, *, start: int = 0, max_hold: int = 1 << 30) -> list[RollNote]:
    """The notes of a binary roll [frames, keys]: a run of 1s in a key is one note (cut every ``max_hold`` frames).

    Sorted by onset, then pitch from the top.
    """
    tracker = FrameTracker(max_hold=1 << 30)
    runs: list[RollNote] = []
    for t in range(roll.shape[0]):
        sounding = {int(k): pitch_min + int(k) for k in np.flatnonzero(roll[t] > 0.5)}
        tracker, ended = tracker.advance(start + t, sounding, {})
        runs.extend(ended)
    tracker, ended = tracker.close(start + roll.shape[0])
    runs.extend(ended)
    notes = [
        replace(n, onset=onset, frames=min(max_hold, n.end - onset))
        for n in runs
        for onset in range(n.onset, n.end, max_hold)
    ]
    notes.sort(key=lambda n: (n.onset, -n.pitch))
    return notes


def sigmoid(x: np.ndarray) -> np.ndarray:
    return cast(np.ndarray, 0.5 * (1.0 + np.tanh(0.5 * x)))


def key_distribution(probs: np.ndarray, params: SamplingParams, mask: np.ndarray) -> np.ndarray:
    """Each key's chance of sounding as drawn, float64: ``probs`` at the live temperature
    (``sigmoid(logit(p) / temperature)``), 0 where ``mask`` forbids and outside the smallest
    set of keys, likeliest first, whose share of the summed probability reaches ``top_p``."""
    p = np.clip(probs.astype(np.float64), 1e-9, 1 - 1e-9)
    tempered = sigmoid(np.log(p / (1 - p)) / params.temperature) if params.temperature != 1.0 else p
    tempered = np.where(mask, tempered, 0.0)
    total = float(tempered.sum())
    if params.top_p < 1.0 and total > 0:
        order = np.argsort(-tempered, kind="stable")
        kept = order[: int(np.searchsorted(np.cumsum(tempered[order]) / total, params.top_p) + 1)]
        cut = np.zeros_like(tempered)
        cut[kept] = tempered[kept]
        tempered = cut
    return cast(np.ndarray, tempered)


def draw_keys(
    probs: np.ndarray,
    before: np.ndarray,
    sounding: Iterable[int],
    rng: np.random.Generator,
    *,
    polyphony: int,
    metre: float = 1.0,
    redraw: float = 0.0,
) -> list[int]:
    """The keys sounding in a frame of independent keys (indices into ``probs``), likeliest first.

    ``probs``: each key's chance of sounding in this frame (:func:`key_distribution`);
    ``before``: the chances the frame before was drawn from (1 for the keys ``sounding``
    and 0 for the others when it was not drawn); ``sounding``: the keys on in the frame
    before. Each key is a line of two classes, on and off, drawn as
    :func:`~livegen.models.multitrackcnn.draw_lines` draws a track: with probability
    ``min(1, redraw * metre)`` afresh (on with ``probs``), otherwise it moves from the
    frame before only as far as its chance moved (a key on turns off with probability
    ``1 - probs / before``, a key off turns on with ``(probs - before) / (1 - before)``,
    each times ``metre``, at most 1). The roll has no onset flag: a key on in
    consecutive frames is one note. At most ``polyphony`` keys sound, the likeliest.
    """
    on_before = np.zeros(len(probs), dtype=bool)
    on_before[list(sounding)] = True
    with np.errstate(divide="ignore", invalid="ignore"):
        stay = np.where(before > 0, np.minimum(1.0, probs / before), 0.0)
        enter = np.where(before < 1, np.maximum(probs - before, 0.0) / (1.0 - before), 1.0)
    leave = np.minimum(1.0, (1.0 - stay) * metre)
    enter = np.minimum(1.0, enter * metre)
    moved = rng.random(len(probs))
    on = np.where(on_before, moved >= leave, moved < enter)
    fresh = rng.random(len(probs)) < min(1.0, redraw * metre)
    on = np.where(fresh, rng.random(len(probs)) < probs, on) & (probs > 0)
    return sorted((int(k) for k in np.flatnonzero(on)), key=lambda k: (-probs[k], k))[:polyphony]


@dataclass(frozen=True, slots=True)
class _Generation:
    """A generation under way: the family's state, the frontier and the notes found so far."""

    state: object
    frame: int  # the next frame to generate
    tracker: FrameTracker
    buffer: tuple[RollNote, ...]  # complete notes, by onset then pitch from the top
    since_encode: int
    silent: int  # frames since the last onset generated


#: The fields every frame family reads: the roll's keys from ``pitch_min``, the frames the model
#: hears (``window``), the longest note and silence it may make, and ticks per frame (``grid``).
FRAME_FIELDS: tuple[Whole, ...] = (
    Whole("pitch_min", minimum=0),
    Whole("keys"),
    Whole("window"),
    Whole("max_hold"),
    Whole("max_silence"),
    Whole("grid"),
)


def onset_profile(package: ModelPackage, frames_per_beat: int) -> tuple[float, ...] | None:
    """``representation.onset_profile`` scaled to a mean of 1, or None when the package has none.

    It is the training roll's share of note onsets on each frame of a beat (the beat's
    first 16th, its second, ...): ``frames_per_beat`` numbers at least 0, not all 0.
    """
    value = package.manifest.representation.get("onset_profile")
    if value is None:
        return None
    ok = isinstance(value, list) and len(value) == frames_per_beat
    ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in value)
    if not ok or not sum(value) > 0:
        raise PackageError(
            f"{package.folder / MANIFEST}: field 'representation.onset_profile': expected {frames_per_beat} numbers "
            f"at least 0 and not all 0 (the share of onsets on each frame of a beat), got {value!r}"
        )
    mean = sum(value) / len(value)
    return tuple(float(v) / mean for v in value)


class FrameGenerator(ABC):
    """A :class:`~livegen.models.step.StepGenerator` over a frame model (the shared host of the ``frame`` kind).

    A family implements :meth:`_encode` and :meth:`_frame`, and may set
    :attr:`reencode_every` (encode the played roll again after that many generated
    frames: the horizon the family's decoder was trained for), :attr:`channels`
    (a track's MIDI channel) and :attr:`profile` (:func:`onset_profile`: the weight
    :meth:`metre` gives each frame of a beat).

    Where beats fall: the planners give the bar line (``StepEvent.bar_phase``) with the
    notes they feed; before they do, the first note fed is taken to start a bar.
    """

    one_line = False  # the performer's notes sound in the roll beside its voices
    velocities = False  # a roll holds no velocities (crnngan's notes do)

    def __init__(self, *, window: int, max_hold: int = 16, max_silence: int = 32, grid: int = GRID) -> None:
        self.window = window
        self.max_hold = max_hold
        self.max_silence = max_silence
        self.grid = grid
        self.reencode_every: int | None = None
        self.channels: Mapping[int, int] = {}
        self.profile: tuple[float, ...] | None = None
        self._context: tuple[RollNote, ...] = ()
        self._clock = 0  # ticks of the last fed onset since the first
        self._fed = 0
        self._origin = 0  # a frame on a bar line, relative to the first fed note
        self._frontier = 0  # the frame :meth:`_frame` is generating
        self._generation: _Generation | None = None

    def _init_frames(self, values: Mapping[str, int]) -> None:
        """Set the frame host up from the package's checked :data:`FRAME_FIELDS` (an adapter's ``__init__``)."""
        FrameGenerator.__init__(
            self,
            window=values["window"],
            max_hold=values["max_hold"],
            max_silence=values["max_silence"],
            grid=values["grid"],
        )
        self.pitch_min = values["pitch_min"]
        self.keys = values["keys"]

    # ---- the family's part --------------------------------------------------------

    @abstractmethod
    def _encode(self, notes: Sequence[RollNote], end: int) -> object:
        """The family's state after reading ``notes`` up to frame ``end`` (excluded), ready for frame ``end``."""

    @abstractmethod
    def _frame(
        self, state: object, held: Mapping[int, int], params: SamplingParams, rng: np.random.Generator
    ) -> tuple[object, dict[int, int]]:
        """Generate one frame from ``state`` (slot -> pitch held at the frontier): the new state and what sounds.

        :meth:`metre` is the weight of the frame being generated."""

    def _slot_track(self, slot: int) -> int:
        """The track of a note in ``slot`` (a family whose slots are tracks says so)."""
        return 0

    def metre(self) -> float:
        """The onset weight of the frame :meth:`_frame` is generating: :attr:`profile` at its place in the
        beat (mean 1 over a beat), 1 without a profile."""
        if self.profile is None:
            return 1.0
        return self.profile[(self._frontier - self._origin) % len(self.profile)]

    def _slot_of(self, note: RollNote) -> int:
        """The slot a context note occupies (default: its pitch)."""
        return note.pitch

    def _placed(self, notes: Sequence[RollNote]) -> Sequence[RollNote]:
        """The context notes as the family reads them (a family that gives performed notes a track says so)."""
        return notes

    def _strikes(self, state: object) -> frozenset[int]:
        """Slots whose note the frame just generated by :meth:`_frame` strikes anew even if
        the same pitch sounded in the frame before (default none: a roll cannot tell)."""
        return frozenset()

    @abstractmethod
    def _force(self, state: object, params: SamplingParams) -> dict[int, int]:
        """What to play (slot -> pitch, not empty) when the model has been silent for ``max_silence`` frames:
        a performance never stalls on a model that only predicts rests."""

    # ---- StepGenerator ------------------------------------------------------------

    @property
    def programs(self) -> dict[int, int] | None:
        """None: one part (a multi-track family gives its tracks' programs)."""
        return None

    @property
    def fed(self) -> int:
        return self._fed

    def reset(self) -> None:
        self._context = ()
        self._clock = 0
        self._fed = 0
        self._origin = 0
        self._generation = None

    def feed(self, event: StepEvent) -> None:
        onset = self._clock + event.step if self._fed else 0
        gen = self._generation
        track = ANY_TRACK
        if event.channel is not None:
            track = next((t for t, ch in self.channels.items() if ch == event.channel), ANY_TRACK)
        head = gen.buffer[0] if gen is not None and gen.buffer else None
        if (
            gen is not None
            and head is not None
            and head.pitch == event.pitch
            and head.onset * self.grid == onset
            and head.frames * self.grid == event.duration
            and (event.channel is None or head.track == track)
        ):
            self._generation = replace(gen, buffer=gen.buffer[1:])
            note = head
        else:
            self._generation = None
            first, frames = note_frames(onset, event.duration, self.grid)
            note = RollNote(first, frames, event.pitch, track, event.velocity)
        horizon = frame_of(onset, self.grid) - self.window
        self._context = (*(n for n in self._context if n.end > horizon), note)
        self._clock = onset
        self._fed += 1
        if event.bar_phase is not None:
            self._origin = frame_of(onset - event.bar_phase, self.grid)

    def sample(self, params: SamplingParams, rng: np.random.Generator) -> StepEvent:
        if not self._fed:
            raise RuntimeError("sample() needs at least one fed event")
        gen = self._generation or self._begin()
        budget = self.max_silence + 8 * self.max_hold  # a forced note ends within max_hold frames
        while not self._ready(gen):
            gen = self._step(gen, params, rng)
            budget -= 1
            if budget < 0:
                raise RuntimeError(f"{type(self).__name__}: no complete note after {self.max_silence} frames")
        self._generation = gen
        head = gen.buffer[0]
        return StepEvent(
            pitch=head.pitch,
            step=head.onset * self.grid - self._clock,
            duration=head.frames * self.grid,
            velocity=head.velocity,
            channel=self.channels.get(head.track),
        )

    def snapshot(self) -> object:
        return (self._context, self._clock, self._fed, self._origin, self._generation)

    def restore(self, snapshot: object) -> None:
        self._context, self._clock, self._fed, self._origin, self._generation = cast(
            tuple[tuple[RollNote, ...], int, int, int, _Generation | None], snapshot
        )

    # ---- generation ---------------------------------------------------------------

    def _begin(self) -> _Generation:
        end = frame_of(self._clock, self.grid) + 1
        state = self._encode(self._context, end)
        sounding = [(self._slot_of(n), n) for n in self._placed(self._context) if n.onset < end <= n.end]
        tracker = FrameTracker(max_hold=self.max_hold).inherit(sounding)
        return _Generation(state, end, tracker, (), 0, 0)

    def _ready(self, gen: _Generation) -> bool:
        if not gen.buffer:
            return False
        earliest = gen.tracker.earliest_emittable()
        return earliest is None or earliest > gen.buffer[0].onset

    def _played(self, gen: _Generation) -> list[RollNote]:
        """Every note of the roll up to the frontier: the context, the buffer and the open notes."""
        open_notes = [RollNote(n.onset, gen.frame - n.onset, n.pitch, n.track) for n in gen.tracker.open]
        return [*self._context, *gen.buffer, *open_notes]

    def _step(self, gen: _Generation, params: SamplingParams, rng: np.random.Generator) -> _Generation:
        state, since = gen.state, gen.since_encode
        if self.reencode_every is not None and since >= self.reencode_every:
            state, since = self._encode(self._played(gen), gen.frame), 0
        self._frontier = gen.frame
        state, sounding = self._frame(state, gen.tracker.held(), params, rng)
        strikes = self._strikes(state)
        held = gen.tracker.held()
        starts = any(held.get(slot) != pitch or slot in strikes for slot, pitch in sounding.items())
        if not starts and gen.silent + 1 >= self.max_silence and not gen.tracker.open:
            sounding = self._force(state, params)
            starts = bool(sounding)
        tracks = {slot: self._slot_track(slot) for slot in sounding}
        tracker, ended = gen.tracker.advance(gen.frame, sounding, tracks, strikes)
        buffer = gen.buffer
        if ended:
            buffer = tuple(sorted((*buffer, *ended), key=lambda n: (n.onset, -n.pitch, n.track)))
        return _Generation(state, gen.frame + 1, tracker, buffer, since + 1, 0 if starts else gen.silent + 1)
