"""A model's line planned ahead of the playhead: a committed part that is final, the rest re-plannable.

Context: control (the planner's thread).

The line is the single stream of notes the model hears, in onset order: its own
notes and (in accompaniment) the performer's. Every fed note keeps the model's
state from before it, so a performed note can be folded in at its place in time:
the state goes back to just before the first later note, the performed note is
fed, the committed notes after it are fed again, and everything not yet committed
is sampled afresh. Committed notes (onset before ``committed_until``) are final:
they went to the scheduler with their note-offs and keep playing whatever happens
here. Onsets land on ``grid`` at the live density; pitches sound transposed by the
live transposition while the model keeps hearing its own key. With :attr:`PlannedLine.key`
set and no scale chosen, sampled pitches keep to that key. With a :class:`Pace` set (an
accompaniment keeping the performer's pace), a note that would start more model onsets than it
allows in its span waits, on the grid, until the oldest of them is a span behind.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace

import numpy as np

from livegen.engine.dynamics import Dynamics
from livegen.engine.live import MAX_CHORD, LiveParams
from livegen.models.step import StepEvent, StepGenerator
from livegen.music.events import MidiEvent, note_off, note_on
from livegen.music.keys import Key
from livegen.music.time import PPQN, ceil_to_grid, quantize

#: Fed notes kept (with their snapshots) behind the playhead, ticks.
KEEP_BEHIND = 4 * PPQN


@dataclass(frozen=True, slots=True)
class Pace:
    """At most ``onsets`` model onsets in any ``span`` ticks."""

    onsets: int
    span: int


@dataclass(slots=True)
class FedNote:
    """One note of the line as the model heard it."""

    onset: int
    event: StepEvent  # model pitch; step from the previous fed onset
    before: object  # generator snapshot before this note was fed
    prev_onset: int | None
    performer: bool
    committed: bool = False


class PlannedLine:
    """The line of one ``step`` generator, planned up to a horizon and committed up to another."""

    def __init__(
        self,
        generator: StepGenerator,
        live: LiveParams,
        rng: np.random.Generator,
        *,
        channel: int = 0,
        grid: int = PPQN // 4,
        bar: int | None = None,
    ) -> None:
        self.generator = generator
        self.bar = bar  # ticks per bar (bars start at tick 0), told to the model with every note fed
        self.live = live
        self.rng = rng
        self.channel = channel
        self.grid = grid
        #: How loud each committed note is: its owner tells it what the performer plays.
        self.dynamics = Dynamics(bar or 4 * PPQN, live)
        self.committed_until = 0
        self.end: int | None = None  # no model onset at or after this tick
        self.fed: list[FedNote] = []
        self.last_committed: list[FedNote] = []  # what the last commit made final
        self._next: StepEvent | None = None
        self._last_onset: int | None = None
        #: The key sampled pitches keep to while the live scale is chromatic (the performer's, in the
        #: model's own key space), or None for every pitch.
        self.key: Key | None = None
        #: How many onsets the model may start in a span, or None for no limit.
        self.pace: Pace | None = None

    # ---- state --------------------------------------------------------------------

    def _feed(self, onset: int, event: StepEvent, *, performer: bool) -> FedNote:
        step = 0 if self._last_onset is None else max(0, onset - self._last_onset)
        event = replace(event, step=step, bar_phase=None if self.bar is None else onset % self.bar)
        note = FedNote(onset, event, self.generator.snapshot(), self._last_onset, performer)
        self.generator.feed(event)
        self.fed.append(note)
        self._last_onset = onset
        return note

    def _sample(self) -> None:
        params = self.live.sampling.following(self.key)
        self._next = self.generator.sample(params, self.rng) if self.generator.fed else None

    def restart(self, tick: int) -> None:
        """Plan from ``tick`` on, keeping the generator's state but no fed history (after a reset or a reseed)."""
        self.fed.clear()
        self.committed_until = tick
        self._last_onset = None
        self.end = None
        self._sample()

    def clear(self) -> None:
        """Forget the planned line (its committed notes were withdrawn: a panic, a stop, a jump of the
        song position); the generator keeps its state. Planning resumes wherever it is next asked."""
        self.fed.clear()
        self.committed_until = 0
        self._last_onset = None
        self.end = None

    def feed_context(self, events: list[StepEvent]) -> None:
        """Prime the generator with notes that will not sound (a seed, a reseed); :meth:`restart` follows."""
        for event in events:
            self.generator.feed(event)

    # ---- performer ----------------------------------------------------------------

    def fold(self, onset: int, pitch: int, duration: int, velocity: int) -> None:
        """Fold a performed note in at its place in time and re-plan everything not committed."""
        at = bisect.bisect_right([n.onset for n in self.fed], onset)
        later = self.fed[at:]
        del self.fed[at:]
        if later:
            self.generator.restore(later[0].before)
            self._last_onset = later[0].prev_onset
        self._feed(onset, StepEvent(self.live.to_model(pitch), 0, max(1, duration), velocity), performer=True)
        for note in later:
            if note.committed or note.performer:
                again = self._feed(note.onset, note.event, performer=note.performer)
                again.committed = note.committed
        self._sample()

    def replan(self) -> None:
        """Drop the planned notes not yet committed and sample from the last committed state."""
        first = next((i for i, n in enumerate(self.fed) if not n.committed and not n.performer), None)
        if first is not None:
            later = self.fed[first:]
            del self.fed[first:]
            self.generator.restore(later[0].before)
            self._last_onset = later[0].prev_onset
            for note in later:
                if note.performer:
                    self._feed(note.onset, note.event, performer=True)
        self._sample()

    # ---- planning -----------------------------------------------------------------

    def _place(self, event: StepEvent) -> int:
        """Where ``event`` would start: after the last fed note, on the grid, never in the committed part.

        A step after the last note stays a step on the grid however short the density
        makes it (else a model of 16ths at density 4 would stand still on one tick), and
        after :data:`~livegen.engine.live.MAX_CHORD` notes at one onset the line moves on.
        """
        floor = ceil_to_grid(self.committed_until, self.grid)
        last = self._last_onset
        if last is None:
            return floor
        onset = quantize(last + self.live.scale_time(event.step), self.grid)
        if event.step > 0 or self._notes_at(last) >= MAX_CHORD:
            onset = max(onset, last + self.grid)
        return self._paced(max(onset, floor))

    def _paced(self, onset: int) -> int:
        """The first grid point from ``onset`` on where a model note keeps to :attr:`pace`.

        A note joining a model chord already started there starts no new onset.
        """
        pace = self.pace
        if pace is None:
            return onset
        own = sorted({n.onset for n in self.fed if not n.performer and onset - pace.span < n.onset <= onset})
        if own and own[-1] == onset:
            return onset
        excess = len(own) - pace.onsets + 1
        if excess <= 0:
            return onset
        return max(onset, ceil_to_grid(own[excess - 1] + pace.span, self.grid))

    def _notes_at(self, onset: int) -> int:
        """How many fed notes start at ``onset`` (the latest ones)."""
        count = 0
        for note in reversed(self.fed):
            if note.onset != onset:
                break
            count += 1
        return count

    def next_onset(self) -> int | None:
        """Where the next model note would start, or None when the model has nothing to continue."""
        return None if self._next is None else self._place(self._next)

    def plan(self, horizon: int) -> None:
        """Place sampled notes whose onsets fall before ``horizon`` (and before :attr:`end`)."""
        while self._next is not None:
            onset = self._place(self._next)
            if onset >= horizon or (self.end is not None and onset >= self.end):
                return
            duration = max(1, self.live.scale_time(self._next.duration))
            self._feed(onset, replace(self._next, duration=duration), performer=False)
            self._sample()

    def commit(self, horizon: int) -> list[MidiEvent]:
        """Make every planned note starting before ``horizon`` final; its note-on and note-off."""
        events: list[MidiEvent] = []
        self.last_committed = []
        for note in self.fed:
            if not note.performer and not note.committed and note.onset < horizon:
                note.committed = True
                self.last_committed.append(note)
                pitch = self.live.from_model(note.event.pitch)
                end = note.onset + note.event.duration
                if self.end is not None:
                    end = min(end, max(self.end, note.onset + 1))
                channel = self.channel if note.event.channel is None else note.event.channel
                own = note.event.velocity if self.generator.velocities else None
                events.append(note_on(note.onset, channel, pitch, self.dynamics.velocity(note.onset, own=own)))
                events.append(note_off(end, channel, pitch))
        self.committed_until = max(self.committed_until, horizon)
        events.sort()
        return events

    def trim(self, now: int) -> None:
        """Forget fed notes well behind the playhead (a performed note can only land near now; the
        pace looks a span back)."""
        behind = max(KEEP_BEHIND, self.pace.span if self.pace else 0)
        keep_from = bisect.bisect_left([n.onset for n in self.fed], now - behind)
        if keep_from > 0:
            del self.fed[:keep_from]
