"""The ``block`` kind: models that generate a whole bar or phrase at once, played one note at a time.

Context: control (the planner's thread); an adapter's constructor runs at setup.

The GANs of seeds 000 and 003 and the CNN of seed 004 make a block of music (a
bar, a phrase) in one call. :class:`BlockGenerator` hosts them on top of the frame
host (:class:`~livegen.models.frames.FrameGenerator`), so every planner plays them
as it plays any other model:

- **Blocks on the bar grid.** Blocks of :attr:`block_frames` 16ths tile time from a
  bar line. The planners say where bars fall (``StepEvent.bar_phase`` of a fed note);
  before they do, the first note fed is taken to start a bar.
- **Ahead of the playhead.** A block is generated as a whole when the frame host
  first needs a frame of it, which is when the planner samples the next note, a
  lookahead before it sounds; notes reach the planner only complete, so the planner
  commits them at its commit horizon like any other model's. When generation starts
  inside a block (the performer just played), the block is still the whole bar's,
  and only its notes starting from there on are played.
- **Conditioned families** (:attr:`conditioned`) read the notes of the
  :attr:`context_frames` before the block, the performer's included, and propose one
  block. **Unconditional families** follow the performer another way: the host asks
  for ``params.candidates`` blocks and keeps the one that best fits the performer's
  last bar (:func:`fit_score`: pitch classes, register, density): the notes they
  played in the bar up to their latest note, however long ago; before anyone has
  played, the bar before the block (the model's own notes). Scores are logged (debug) and
  counted in :attr:`BlockGenerator.fit` for ``livegen evaluate``.
- **The performer's key.** When no scale is set (``params.scale`` chromatic), the key is
  estimated from the performer's notes of the last :data:`KEY_FRAMES` before their
  latest note (:func:`performer_key`): a candidate's share of notes in that key joins
  its fit score, and families whose pitch is a continuous number
  (:attr:`BlockGenerator.key_snapping`) round it to the nearest pitch of the key
  (:meth:`BlockGenerator.allowed_pitches`, :func:`snap_values`). A scale the performer
  sets wins over the estimate. Families whose timing is continuous too place their onsets
  on the performer's grid (:meth:`BlockGenerator.onset_grid`): quarters, eighths or 16ths,
  the coarsest their recent onsets keep to. The performer's notes are the fed notes
  without a track that this host did not generate: a planner that folds a performed note
  in feeds the model's later notes back without a channel too.
- **Joins.** A block's notes are cut at its end. A note at a block's first frame of
  the same pitch and track as one sounding at the end of the block before continues
  it, so a note across a bar line is held, not struck again; everything else is
  struck at its onset, repeated pitches included (the frame host's tracker ends
  every note it started, so nothing is left sounding).
- **Range and scale.** Notes outside the live pitch range or scale move to the
  nearest allowed pitch.

A family implements :meth:`BlockGenerator._propose`. Written by hand: the bar
alignment, the selection and the join rules are this host's.
"""

from __future__ import annotations

import logging
import math
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import cast

import numpy as np

from livegen.models.frames import ANY_TRACK, GRID, VELOCITY, FrameGenerator, RollNote, frame_of
from livegen.models.sampling import SCALES, SamplingParams
from livegen.models.step import StepEvent
from livegen.music.keys import Key, key_correlations
from livegen.music.time import PPQN

log = logging.getLogger(__name__)

#: Frames of the bar a candidate is scored against (a 4/4 bar of 16ths).
LISTEN_FRAMES = 16
#: The shortest rest of a note, in frames, that enters late (:meth:`BlockGenerator._from`).
LATE_ENTRY_MIN = 2
#: Proposals kept for re-plans inside a block (:meth:`BlockGenerator._candidates`).
PROPOSALS_KEPT = 8
#: Slot numbers: one per (track, pitch), so two tracks may sound the same pitch.
SLOTS_PER_TRACK = 128
#: The model's own notes remembered to tell them from the performer's when fed back (:meth:`BlockGenerator.feed`).
OWN_NOTES_KEPT = 512
#: Frames of the performer's playing their key is estimated from (four 4/4 bars).
KEY_FRAMES = 64
#: Onset grids in frames from a bar line, coarsest first (quarters, eighths, 16ths), and the share of the
#: performer's onsets a grid must hold to be theirs (:func:`onset_grid`). 0.85 from the validation split of
#: corpus:folk (64 phrases, 2 draws, the bundled crnngan): groove in accompaniment 0.72 at 0.9, 0.75 at 0.85
#: (the tunes 0.84), inter-onset-interval overlap 0.813 and 0.812.
ONSET_GRIDS = (4, 2, 1)
ON_GRID = 0.85
#: Onsets needed before the performer's grid is judged.
GRID_ONSETS = 4


def slot_of(track: int, pitch: int) -> int:
    return track * SLOTS_PER_TRACK + pitch


def track_of(slot: int) -> int:
    return slot // SLOTS_PER_TRACK


# ---- choosing a candidate --------------------------------------------------------------


def pitch_class_profile(notes: Sequence[RollNote]) -> np.ndarray:
    """[12] frames sounded per pitch class."""
    profile = np.zeros(12)
    for n in notes:
        profile[n.pitch % 12] += n.frames
    return profile


def fit_score(
    candidate: Sequence[RollNote],
    heard: Sequence[RollNote],
    *,
    candidate_frames: int,
    heard_frames: int,
    key: np.ndarray | None = None,
) -> float:
    """How well a block fits what was heard, 0..1 (1 = same pitch classes, register and density).

    The mean of three parts, pitch classes counting twice:

    - pitch classes: cosine similarity of the two pitch-class profiles (frames sounded
      per class), which rewards the same key and the same chord tones;
    - register: ``1 - |mean pitch difference| / 12``, floored at 0;
    - density: ``1 - |log2(onsets per frame ratio)|``, floored at 0 (twice or half as
      many onsets per frame scores 0).

    ``key`` (boolean [12], the pitch classes of the performer's key): a fourth part, the
    candidate's share of notes in the key, also counting twice.

    With nothing heard every candidate scores 0; an empty candidate scores 0.
    """
    if not heard or not candidate:
        return 0.0
    a, b = pitch_class_profile(candidate), pitch_class_profile(heard)
    pcs = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    shift = float(np.mean([n.pitch for n in candidate])) - float(np.mean([n.pitch for n in heard]))
    register = max(0.0, 1.0 - abs(shift) / 12.0)
    rate_c = len(candidate) / max(1, candidate_frames)
    rate_h = len(heard) / max(1, heard_frames)
    density = max(0.0, 1.0 - abs(math.log2(rate_c / rate_h)))
    if key is None:
        return (2.0 * pcs + register + density) / 4.0
    in_key = float(np.mean([key[n.pitch % 12] for n in candidate]))
    return (2.0 * pcs + 2.0 * in_key + register + density) / 6.0


@dataclass(slots=True)
class FitCounter:
    """What candidate selection achieved: blocks chosen, and the mean score of the chosen
    and of all candidates (what a block drawn without selection would score)."""

    blocks: int = 0
    chosen_sum: float = 0.0
    candidates_sum: float = 0.0

    def add(self, chosen: float, scores: Sequence[float]) -> None:
        self.blocks += 1
        self.chosen_sum += chosen
        self.candidates_sum += float(np.mean(scores))

    @property
    def chosen_mean(self) -> float:
        return self.chosen_sum / self.blocks if self.blocks else float("nan")

    @property
    def candidates_mean(self) -> float:
        return self.candidates_sum / self.blocks if self.blocks else float("nan")


def snap_pitch(pitch: int, mask: np.ndarray) -> int:
    """``pitch`` if ``mask`` allows it, else the nearest allowed pitch (the lower on a tie);
    ``pitch`` itself when nothing is allowed."""
    if 0 <= pitch < 128 and mask[pitch]:
        return pitch
    for d in range(1, 128):
        for candidate in (pitch - d, pitch + d):
            if 0 <= candidate < 128 and mask[candidate]:
                return candidate
    return pitch


def snap_values(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Continuous pitches (float, MIDI numbers) as the nearest pitches ``mask`` allows, int64 (the lower on a
    tie); rounded and kept in 0..127 when nothing is allowed."""
    values = np.asarray(values, dtype=np.float64)
    allowed = np.flatnonzero(mask)
    if not len(allowed):
        return np.clip(np.floor(values + 0.5), 0, 127).astype(np.int64)
    above = np.clip(np.searchsorted(allowed, values), 0, len(allowed) - 1)
    below = np.clip(above - 1, 0, len(allowed) - 1)
    up, down = allowed[above], allowed[below]
    return np.where(np.abs(up - values) < np.abs(values - down), up, down).astype(np.int64)


def snap_line(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A line of continuous pitches as allowed pitches (:func:`snap_values`) that keeps the line's motion: where two
    neighbours differ by half a semitone or more but would take the same pitch, the second moves one allowed pitch
    the way the line went, so a repeated pitch is one the line repeated."""
    values = np.asarray(values, dtype=np.float64)
    out = snap_values(values, mask)
    allowed = np.flatnonzero(mask)
    for i in range(1, len(out)):
        motion = values[i] - values[i - 1]
        if out[i] != out[i - 1] or abs(motion) < 0.5 or not len(allowed):
            continue
        at = int(np.searchsorted(allowed, out[i]))
        step = at + 1 if motion > 0 else at - 1
        if 0 <= step < len(allowed):
            out[i] = allowed[step]
    return out


# ---- the performer's key ---------------------------------------------------------------


def key_classes(key: Key) -> np.ndarray:
    """Boolean [12]: the pitch classes of ``key``'s major or natural-minor scale."""
    classes = np.zeros(12, dtype=bool)
    classes[[(key.root + step) % 12 for step in SCALES[key.mode]]] = True
    return classes


def performer_key(notes: Sequence[RollNote]) -> Key | None:
    """The key of what the performer played: of the 24 major and natural-minor keys, the one whose scale holds
    the most of ``notes`` (each note once), ties to the best Krumhansl-Kessler correlation (frames sounded per
    pitch class); None without notes."""
    if not notes:
        return None
    counts = np.zeros(12)
    for n in notes:
        counts[n.pitch % 12] += 1
    correlations = key_correlations(pitch_class_profile(notes).tolist())
    return max(correlations, key=lambda k: (float(counts[key_classes(k)].sum()), correlations[k]))


def onset_grid(onsets: Sequence[int]) -> int:
    """The coarsest of :data:`ONSET_GRIDS` holding at least :data:`ON_GRID` of ``onsets`` (frames from a bar
    line); the finest with fewer than :data:`GRID_ONSETS` onsets."""
    if len(onsets) < GRID_ONSETS:
        return ONSET_GRIDS[-1]
    for grid in ONSET_GRIDS:
        if np.mean([onset % grid == 0 for onset in onsets]) >= ON_GRID:
            return grid
    return ONSET_GRIDS[-1]


# ---- the host --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Row:
    sounding: tuple[tuple[int, int], ...]  # (slot, pitch)
    strikes: frozenset[int]


@dataclass(frozen=True, slots=True)
class _BlockState:
    """The generation's state: the rest of the current block, and what the next one reads."""

    rows: tuple[_Row, ...]  # the current block's frames not yet generated, the next first
    next_start: int  # the frame the next block starts at
    recent: tuple[RollNote, ...]  # context and generated notes, absolute frames
    strikes: frozenset[int] = frozenset()  # of the frame just generated
    last_pitch: int = 60


class BlockGenerator(FrameGenerator):
    """A :class:`~livegen.models.step.StepGenerator` over a model that makes a block at a time.

    An adapter calls :meth:`_init_block` in its constructor, may set :attr:`channels`
    (track -> MIDI channel) and a ``programs`` property (channel -> GM program), and
    implements :meth:`_propose`.
    """

    def _init_block(
        self,
        *,
        block_frames: int,
        context_frames: int,
        conditioned: bool,
        max_hold: int = 16,
        grid: int = GRID,
        key_snapping: bool = False,
    ) -> None:
        """``key_snapping``: the family's pitches are continuous numbers, rounded to the performer's key
        (:meth:`allowed_pitches`)."""
        FrameGenerator.__init__(
            self,
            window=max(context_frames, LISTEN_FRAMES) + block_frames,
            max_hold=max_hold,
            max_silence=2 * max(block_frames, LISTEN_FRAMES),
            grid=grid,
        )
        self.block_frames = block_frames
        self.context_frames = context_frames
        self.conditioned = conditioned
        self.key_snapping = key_snapping
        self.fit = FitCounter()
        self._origin = 0  # a frame on a bar line, relative to the first fed note
        self._performer_bar: tuple[RollNote, ...] = ()  # the performer's notes in the bar up to their last
        self._performer_key: tuple[RollNote, ...] = ()  # the performer's notes of the last KEY_FRAMES
        self._proposals: dict[tuple[object, ...], list[list[RollNote]]] = {}  # see :meth:`_candidates`
        self._own: dict[tuple[int, int], None] = {}  # (onset frame, pitch) of the notes this host generated

    # ---- the family's part --------------------------------------------------------

    @abstractmethod
    def _propose(
        self, previous: Sequence[RollNote], count: int, params: SamplingParams, rng: np.random.Generator
    ) -> list[list[RollNote]]:
        """``count`` candidate blocks.

        ``previous``: the notes sounding in the :attr:`context_frames` before the block,
        onsets relative to the block's start (so negative), the performer's with track
        :data:`~livegen.models.frames.ANY_TRACK`. Each block: notes with onsets in
        ``0 .. block_frames - 1`` relative to its start, at least one frame long (the host
        cuts them at the block's end), on the family's tracks. Conditioned families are
        asked for one block.
        """

    # ---- alignment ----------------------------------------------------------------

    def reset(self) -> None:
        super().reset()
        self._origin = 0
        self._performer_bar = ()
        self._performer_key = ()
        self._proposals.clear()
        self._own.clear()

    def feed(self, event: StepEvent) -> None:
        super().feed(event)
        if event.bar_phase is not None:
            self._origin = frame_of(self._clock - event.bar_phase, self.grid)
        note = self._context[-1]
        # A planner feeds the model's own notes back without a channel (a single-track model's notes have none),
        # after a performed note was folded in before them: the notes this host generated are not the performer's.
        if note.track == ANY_TRACK and (note.onset, note.pitch) not in self._own:
            since = note.onset - LISTEN_FRAMES
            self._performer_bar = (*(n for n in self._performer_bar if n.onset > since), note)
            since = note.onset - KEY_FRAMES
            self._performer_key = (*(n for n in self._performer_key if n.onset > since), note)

    def snapshot(self) -> object:
        return (super().snapshot(), self._origin, self._performer_bar, self._performer_key)

    def restore(self, snapshot: object) -> None:
        inner, self._origin, self._performer_bar, self._performer_key = cast(
            tuple[object, int, tuple[RollNote, ...], tuple[RollNote, ...]], snapshot
        )
        super().restore(inner)

    # ---- the performer's key ------------------------------------------------------

    def key(self, params: SamplingParams) -> np.ndarray | None:
        """Boolean [12]: the pitch classes of the key the performer plays in, when ``params`` sets no scale and
        they played; None otherwise."""
        if params.scale != "chromatic":
            return None
        key = performer_key(self._performer_key)
        return key_classes(key) if key is not None else None

    def allowed_pitches(self, params: SamplingParams) -> np.ndarray:
        """Boolean [128]: the pitches a block may hold: the live range and scale, and for a key-snapping family
        without a scale the performer's key (:meth:`key`)."""
        mask = params.pitch_mask()
        key = self.key(params) if self.key_snapping else None
        if key is None:
            return mask
        in_key = mask & np.tile(key, 11)[:128]
        return in_key if in_key.any() else mask

    def onset_grid(self) -> int:
        """Frames between the places a note may start for a family whose timing is continuous: the coarsest
        grid from the bar line that the performer's onsets of the last :data:`KEY_FRAMES` keep to
        (:func:`onset_grid`), 1 before they played."""
        return onset_grid([n.onset - self._origin for n in self._performer_key])

    def block_start(self, frame: int) -> int:
        """The first frame of the block holding ``frame``."""
        return frame - (frame - self._origin) % self.block_frames

    # ---- FrameGenerator -----------------------------------------------------------

    def _slot_of(self, note: RollNote) -> int:
        return slot_of(note.track, note.pitch)

    def _slot_track(self, slot: int) -> int:
        return track_of(slot)

    def _encode(self, notes: Sequence[RollNote], end: int) -> object:
        # The block holding ``end`` is made when its first frame is asked for (:meth:`_frame`
        # has the sampling parameters); only its notes from ``end`` on are played.
        last = max(notes, key=lambda n: n.onset).pitch if notes else 60
        return _BlockState(rows=(), next_start=end, recent=tuple(notes), last_pitch=last)

    def _frame(
        self, state: object, held: Mapping[int, int], params: SamplingParams, rng: np.random.Generator
    ) -> tuple[object, dict[int, int]]:
        s = cast(_BlockState, state)
        if not s.rows:
            s = self._generate(s, held, params, rng, first=s.next_start)
        row = s.rows[0]
        return replace(s, rows=s.rows[1:], strikes=row.strikes), dict(row.sounding)

    def _strikes(self, state: object) -> frozenset[int]:
        return cast(_BlockState, state).strikes

    def _force(self, state: object, params: SamplingParams) -> dict[int, int]:
        pitch = snap_pitch(cast(_BlockState, state).last_pitch, self.allowed_pitches(params))
        return {slot_of(0, pitch): pitch}

    # ---- generation ---------------------------------------------------------------

    def _generate(
        self,
        state: _BlockState,
        held: Mapping[int, int],
        params: SamplingParams,
        rng: np.random.Generator,
        *,
        first: int,
    ) -> _BlockState:
        """Make the block holding frame ``first`` and return the state with its rows from ``first`` on."""
        start = self.block_start(first)
        previous = [
            replace(n, onset=n.onset - start)
            for n in state.recent
            if n.onset < start and n.end > start - self.context_frames
        ]
        candidates = self._candidates(start, previous, params, rng)
        chosen = candidates[0]
        if not self.conditioned and len(candidates) > 1:
            heard = self._heard(state.recent, first)
            if heard:
                key = self.key(params)
                scores = [
                    fit_score(c, heard, candidate_frames=self.block_frames, heard_frames=LISTEN_FRAMES, key=key)
                    for c in candidates
                ]
                best = int(np.argmax(scores))
                chosen = candidates[best]
                self.fit.add(scores[best], scores)
                log.debug("block at frame %d: candidate %d of %d, fit %.3f", start, best, len(scores), scores[best])
        placed = tuple(self._from(first, start, chosen, held))
        for n in placed:
            self._own[(n.onset, n.pitch)] = None
        while len(self._own) > OWN_NOTES_KEPT:
            del self._own[next(iter(self._own))]
        rows = self._rows(placed, first, start + self.block_frames, held)
        horizon = start + self.block_frames - self.window
        recent = tuple(n for n in (*state.recent, *placed) if n.end > horizon)
        last = placed[-1].pitch if placed else state.last_pitch
        return replace(state, rows=rows, next_start=start + self.block_frames, recent=recent, last_pitch=last)

    def _candidates(
        self, start: int, previous: Sequence[RollNote], params: SamplingParams, rng: np.random.Generator
    ) -> list[list[RollNote]]:
        """The cleaned candidate blocks starting at ``start``: proposed once per context and parameters.

        A re-plan inside a block (the performer played mid-bar) asks for the same block again
        with the same notes before it. It gets the same candidates back, so the notes already
        committed and the rest of the bar come from one block: drawing afresh on every
        performed note kept only the new draw's notes after the note, and against a
        performer playing on every beat a chorale-like model then played almost nothing
        (its notes start on the bar and last it). An unconditional family's candidates are
        re-scored against the performer's newest bar; their pitches keep the key estimated
        when the block was first proposed. Only the last few blocks are kept.
        """
        cache_key = (start, tuple(previous), params)
        found = self._proposals.get(cache_key)
        if found is None:
            allowed = self.allowed_pitches(params)
            count = 1 if self.conditioned else max(1, params.candidates)
            found = [self._clean(block, allowed) for block in self._propose(previous, count, params, rng)] or [[]]
            while len(self._proposals) >= PROPOSALS_KEPT:
                del self._proposals[next(iter(self._proposals))]
            self._proposals[cache_key] = found
        return found

    def _from(self, first: int, start: int, block: Sequence[RollNote], held: Mapping[int, int]) -> list[RollNote]:
        """The notes of ``block`` (starting at frame ``start``) played from frame ``first`` on, absolute.

        A note begun before ``first`` and still sounding there is not lost: if the same
        pitch on the same track is sounding (a committed note) it continues; otherwise it
        enters on the next beat with what is left of it, if that is at least
        :data:`LATE_ENTRY_MIN` frames, as a player joining mid-bar comes in with the
        chord of the moment.
        """
        beat = max(1, PPQN // self.grid)
        out: list[RollNote] = []
        for n in block:
            onset, end = n.onset + start, n.onset + start + n.frames
            if onset < first:
                sounding = held.get(slot_of(n.track, n.pitch)) == n.pitch
                onset = first if sounding else first + (start - first) % beat
                if end - onset < LATE_ENTRY_MIN:
                    continue
            out.append(replace(n, onset=onset, frames=end - onset))
        out.sort(key=lambda n: (n.onset, -n.pitch, n.track))
        return out

    def _heard(self, recent: Sequence[RollNote], first: int) -> list[RollNote]:
        """What a candidate is scored against: the performer's last bar, else the bar before ``first``."""
        if self._performer_bar:
            return list(self._performer_bar)
        return [n for n in recent if first - LISTEN_FRAMES <= n.onset < first]

    def _clean(self, block: Sequence[RollNote], mask: np.ndarray) -> list[RollNote]:
        """A proposed block inside its bounds and the allowed pitches (:meth:`allowed_pitches`), sorted by onset."""
        out = []
        for n in block:
            if not 0 <= n.onset < self.block_frames:
                continue
            frames = max(1, min(n.frames, self.block_frames - n.onset))
            out.append(RollNote(n.onset, frames, snap_pitch(n.pitch, mask), n.track, n.velocity))
        out.sort(key=lambda n: (n.onset, -n.pitch, n.track))
        return out

    def _rows(self, notes: Sequence[RollNote], first: int, end: int, held: Mapping[int, int]) -> tuple[_Row, ...]:
        """Frames ``first .. end - 1`` of ``notes`` as rows; a note on ``first`` continues a held one."""
        sounding: list[dict[int, int]] = [{} for _ in range(end - first)]
        strikes: list[set[int]] = [set() for _ in range(end - first)]
        for n in notes:
            slot = slot_of(n.track, n.pitch)
            for f in range(n.onset, min(n.end, end)):
                sounding[f - first][slot] = n.pitch
            if not (n.onset == first and held.get(slot) == n.pitch):
                strikes[n.onset - first].add(slot)
        return tuple(
            _Row(tuple(sorted(row.items())), frozenset(hits)) for row, hits in zip(sounding, strikes, strict=True)
        )


def notes_of_block(block: np.ndarray, pitch_min: int, *, track: int = 0, velocity: int = VELOCITY) -> list[RollNote]:
    """A binary roll [frames, keys] as block notes: each run of 1s in a key is one note."""
    notes = []
    frames, keys = block.shape
    for k in range(keys):
        column = block[:, k] > 0.5
        f = 0
        while f < frames:
            if column[f]:
                g = f
                while g < frames and column[g]:
                    g += 1
                notes.append(RollNote(f, g - f, pitch_min + k, track, velocity))
                f = g
            else:
                f += 1
    notes.sort(key=lambda n: (n.onset, -n.pitch))
    return notes
