"""Accompaniment: the model plays continuously beside the performer on the beat grid.

Context: control (the planner's thread).

- The planner keeps ``lookahead_beats`` of the model's notes planned and commits
  them ``commit_beats`` ahead of the playhead: committed notes are final and keep
  playing while the planner works; later ones are re-planned whenever the
  performer plays, from a state that has folded in the performed note at its
  place in time (see :class:`~livegen.engine.line.PlannedLine`).
- The model first plays ``listen_beats`` after the performer's first note (on the
  grid); it keeps playing until the performer has been silent for the live
  response length in bars, and joins again at once when they play again.
- A performed note is heard at its note-on (its length is not known yet: the
  median of the performer's recent lengths stands in). Re-planning then samples
  only up to the commit horizon, and :meth:`AccompanyPlanner.advance` commits that
  before :meth:`AccompanyPlanner.plan_ahead` samples on to the lookahead, once the
  engine has handed the commit to the scheduler: the performer waits for one fold
  and the notes about to be committed, not for the whole lookahead. The engine
  measures the time from the note's arrival to that commit.
- With ``follow_pace`` a line model (:attr:`StepGenerator.one_line`) keeps the
  performer's pace: in any half bar it starts at most as many onsets as the
  performer started per half bar over the last :data:`PACE_WINDOW_BARS` bars (at
  least one a beat, so the beat goes on under a held note; the live density
  multiplies it), a later note waiting for its turn on the grid. Such a model hears both parties as one line, and left
  alone answers that busier line at its own pace. Models with voices of their own
  keep theirs.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass

import numpy as np

from livegen.engine.config import CHANNEL_BOUNDS, LISTEN_BOUNDS, check_horizons
from livegen.engine.line import Pace, PlannedLine
from livegen.engine.live import Generations, LiveParams
from livegen.engine.planner import Action, Commit, Planner, Withdraw
from livegen.errors import ConfigError
from livegen.models.step import StepEvent, StepGenerator
from livegen.music.events import MidiEvent, Note
from livegen.music.held import HeldNotes
from livegen.music.keys import KEY_WINDOW_BARS, KeyTracker
from livegen.music.time import PPQN, SIXTEENTH, ceil_to_grid

#: Bars of the performer's playing the followed pace is measured over.
PACE_WINDOW_BARS = 2


@dataclass(frozen=True, slots=True)
class AccompanySettings:
    lookahead_beats: float = 4.0
    commit_beats: float = 2.0
    listen_beats: float = 8.0
    beats_per_bar: int = 4
    channel: int = 0
    grid: int = SIXTEENTH
    #: Keep sampled pitches in the key the performer played over the last :data:`KEY_WINDOW_BARS`
    #: (when no scale is chosen): an accompanist stays in the soloist's key.
    follow_key: bool = False
    #: Start no more onsets per bar than the performer lately did (see the module docstring).
    follow_pace: bool = True

    def __post_init__(self) -> None:
        check_horizons(self.lookahead_beats, self.commit_beats)
        LISTEN_BOUNDS.check(self.listen_beats, "--listen")
        if not 1 <= self.beats_per_bar <= 16:
            raise ConfigError(f"{self.beats_per_bar} beats per bar: expected 1 to 16")
        CHANNEL_BOUNDS.check(self.channel, "channel")


class AccompanyPlanner(Planner):
    """The ``accompany`` follow mode over a ``step`` generator."""

    def __init__(
        self,
        generator: StepGenerator,
        live: LiveParams,
        rng: np.random.Generator,
        settings: AccompanySettings | None = None,
        generations: Generations | None = None,
        seed: list[StepEvent] | None = None,
    ) -> None:
        self.settings = settings or AccompanySettings()
        self.seed = list(seed or ())  # what it plays from when a transport starts before anyone played
        self.live = live
        self.generations = generations or Generations()
        self.line = PlannedLine(
            generator,
            live,
            rng,
            channel=self.settings.channel,
            grid=self.settings.grid,
            bar=self.settings.beats_per_bar * PPQN,
        )
        self._lookahead = round(self.settings.lookahead_beats * PPQN)
        self._commit = round(self.settings.commit_beats * PPQN)
        self._listen = round(self.settings.listen_beats * PPQN)
        self._bar = self.settings.beats_per_bar * PPQN
        self._held = HeldNotes()  # what the performer holds
        self._lengths: deque[int] = deque(maxlen=16)
        self._onsets: deque[int] = deque()  # the performer's onsets over the pace window
        self._first_onset: int | None = None
        self._last_activity: int | None = None
        self._last_note_on: int | None = None
        self._ended_at: int | None = None  # where the last accompaniment ended
        self._playing = False
        self._heard_first = False
        self._generation = 0
        self._segments = 0
        self._key = KeyTracker(KEY_WINDOW_BARS * self._bar) if self.settings.follow_key else None

    @property
    def responses(self) -> int:
        """Accompaniments that have played to their end."""
        return self._segments

    @property
    def busy(self) -> bool:
        return bool(self._held) or self._playing or (self._first_onset is not None and not self._heard_first)

    # ---- performer ----------------------------------------------------------------

    def on_input(self, event: MidiEvent) -> list[Action]:
        tick, pitch, velocity = event.tick, event.data1, event.data2
        if event.is_note_on:
            self._held.observe(event)
            self.line.dynamics.hear(tick, velocity)
            self._last_activity = tick
            self._last_note_on = tick
            if not self._onsets or self._onsets[-1] != tick:
                self._onsets.append(tick)
                while self._onsets[0] <= tick - PACE_WINDOW_BARS * self._bar:  # only the window is kept
                    self._onsets.popleft()
            if self._first_onset is None:
                self._first_onset = tick
            guess = round(statistics.median(self._lengths)) if self._lengths else PPQN
            if self._key is not None:  # a note before the song's start (a DAW counting in) counts at 0
                self._key.observe(Note(self.live.to_model(pitch), velocity, max(0, tick), guess))
                self.line.key = self._key.key()
            self.line.fold(tick, pitch, guess, velocity)
            if self._playing:
                self.line.plan(tick + self._commit)  # the rest waits for plan_ahead, after the commit
        elif event.is_note_off:
            ended = self._held.observe(event)
            if ended is not None:
                self._lengths.append(max(1, ended.end - ended.start))
                self._last_activity = max(self._last_activity or tick, tick)
        return []

    # ---- time ---------------------------------------------------------------------

    def _tail_end(self) -> int | None:
        if self._held or self._last_activity is None:
            return None
        return ceil_to_grid(self._last_activity + self.live.response_bars * self._bar, self._bar)

    def advance(self, now_tick: int) -> list[Action]:
        line = self.line
        line.trim(now_tick)
        if self._first_onset is None:
            return []
        actions: list[Action] = []
        if not self._playing:
            if self._heard_first:
                if self._ended_at is None or self._last_note_on is None or self._last_note_on < self._ended_at:
                    return actions  # the performer has not played since the model stopped
                start = ceil_to_grid(self._last_note_on, self.settings.grid)
            else:
                start = ceil_to_grid(self._first_onset + self._listen, self.settings.grid)
            tail = self._tail_end()
            if tail is not None and start >= tail:
                return actions  # the performer stopped before the model was due to join
            if now_tick + self._lookahead < start:
                return actions
            self._heard_first = True
            self._playing = True
            self._generation = self.generations.new()
            line.committed_until = max(line.committed_until, start)
            line.plan(start)  # nothing before the start: just settle where the line stands
        line.end = self._tail_end()
        line.pace = self._pace(now_tick)
        line.plan(now_tick + self._commit)
        events = line.commit(now_tick + self._commit)
        if events:
            actions.append(Commit(tuple(events), self._generation))
        if line.end is not None and now_tick >= line.end:
            self._ended_at = line.end
            self._playing = False
            self._segments += 1
        return actions

    def plan_ahead(self, now_tick: int) -> None:
        """Sample on to the lookahead (control thread, after :meth:`advance`'s commit went out).

        A block model makes its bar whole here, a lookahead before it sounds; a step
        model keeps the notes beyond the commit horizon ready, to be re-planned if the
        performer plays.
        """
        if self._playing:
            self.line.plan(now_tick + self._lookahead)

    def replan(self) -> None:
        """Sample everything not committed afresh (after a model swap)."""
        self.line.replan()

    def _pace(self, now_tick: int) -> Pace | None:
        """The performer's onsets per half bar over the pace window before ``now_tick`` (at least a
        beat's worth), times the live density: the knob's "twice as many notes" holds here too."""
        if not (self.settings.follow_pace and self.line.generator.one_line):
            return None
        start = now_tick - PACE_WINDOW_BARS * self._bar
        heard = sum(1 for onset in self._onsets if start < onset <= now_tick)
        onsets = max(math.ceil(self.settings.beats_per_bar / 2), math.ceil(heard / (2 * PACE_WINDOW_BARS)))
        return Pace(onsets=max(1, math.ceil(onsets * self.live.density)), span=self._bar // 2)

    def resume(self, tick: int) -> list[Action]:
        """The DAW's transport started or continued at ``tick``: play from the next eighth (at least a
        sixteenth on), from what the model heard before the stop, or from the seed when it heard
        nothing; no listening window. The performer's notes fold in as they come."""
        line = self.line
        if line.generator.fed == 0 and self.seed:
            line.feed_context(self.seed)
            line.dynamics.hear_seed(self.seed)
        start = ceil_to_grid(tick + PPQN // 4, PPQN // 2)
        if self._first_onset is None:
            self._first_onset = tick
        self._heard_first = True
        self._playing = True
        self._generation = self.generations.new()
        line.restart(start)
        return []

    def silence(self) -> list[Action]:
        """Stop at once (panic, a mode switch, the transport stopping): drop plans, silence what sounds."""
        actions: list[Action] = [Withdraw(self._generation)] if self._generation else []
        self._held.clear()
        self._onsets.clear()
        self._first_onset = None
        self._last_activity = None
        self._last_note_on = None
        self._ended_at = None
        self._playing = False
        self._heard_first = False
        self.line.clear()
        return actions
