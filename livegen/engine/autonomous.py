"""Autonomous mode for installations: the model plays on its own for hours.

Context: control (the planner's thread).

- It starts from the seed phrase (heard, not played) and plays a continuous line,
  planned ``lookahead_beats`` ahead and committed ``commit_beats`` ahead.
- It watches what it committed. One pitch ``max_same_pitch`` times in a row, the
  same bar ``max_bar_repeats`` times in a row, or no note for ``silence_bars`` is a
  degenerate loop: the model is reset and reseeded, from its own output before the
  loop (``reseed = "recent"``, when that was varied enough) or from the seed phrase,
  and goes on at the next bar line. Committed notes still play out.
- When someone plays, it yields at once (what it planned is withdrawn and its
  sounding notes released) to an inner planner, call-and-response or
  accompaniment as the preset says, and takes over again when the performer has
  been silent for ``takeover_beats`` and the inner planner is done, continuing
  from the state the exchange left. A note held longer than ``takeover_beats``
  counts as released there (the inner planner hears its note-off at that bound):
  a keyboard that lost a note-off must not end an installation.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from livegen.engine.config import (
    BAR_REPEATS_BOUNDS,
    RESEED_SOURCES,
    SAME_PITCH_BOUNDS,
    SILENCE_BARS_BOUNDS,
    TAKEOVER_BOUNDS,
    YIELD_MODES,
    check_horizons,
)
from livegen.engine.line import PlannedLine
from livegen.engine.live import Generations, LiveParams
from livegen.engine.planner import Action, Commit, Planner, PlannerReport, Withdraw
from livegen.errors import ConfigError
from livegen.models.step import StepEvent, StepGenerator
from livegen.music.events import MidiEvent, note_off
from livegen.music.held import HeldNotes
from livegen.music.time import PPQN, SIXTEENTH, ceil_to_grid

#: Notes of its own recent output a "recent" reseed feeds, and how varied they must be.
RECENT_NOTES = 16
RECENT_MIN_PITCHES = 3


@dataclass(frozen=True, slots=True)
class AutonomousSettings:
    lookahead_beats: float = 4.0
    commit_beats: float = 2.0
    beats_per_bar: int = 4
    channel: int = 0
    grid: int = SIXTEENTH
    max_same_pitch: int = 12
    max_bar_repeats: int = 4
    silence_bars: float = 2.0
    reseed: str = "recent"
    yield_to: str = "call-response"
    takeover_beats: float = 8.0

    def __post_init__(self) -> None:
        check_horizons(self.lookahead_beats, self.commit_beats)
        SAME_PITCH_BOUNDS.check(self.max_same_pitch, "max-same-pitch")
        BAR_REPEATS_BOUNDS.check(self.max_bar_repeats, "max-bar-repeats")
        SILENCE_BARS_BOUNDS.check(self.silence_bars, "silence-bars")
        if self.reseed not in RESEED_SOURCES:
            raise ConfigError(f"reseed {self.reseed!r}: expected one of {', '.join(RESEED_SOURCES)}")
        if self.yield_to not in YIELD_MODES:
            raise ConfigError(f"yield-to {self.yield_to!r}: expected one of {', '.join(YIELD_MODES)}")
        TAKEOVER_BOUNDS.check(self.takeover_beats, "--takeover")


@dataclass(frozen=True, slots=True)
class Reseed:
    tick: int  # where the reseeded line starts
    reason: str  # "same pitch", "repeated bar", "silence"
    source: str  # "recent" or "seed"


class AutonomousPlanner(Planner):
    """The ``autonomous`` mode over a ``step`` generator."""

    def __init__(
        self,
        generator: StepGenerator,
        live: LiveParams,
        rng: np.random.Generator,
        seed: Sequence[StepEvent],
        make_inner: Callable[[], Planner],
        settings: AutonomousSettings | None = None,
        generations: Generations | None = None,
    ) -> None:
        if not seed:
            raise ConfigError("autonomous mode needs a seed phrase with notes (the model's or --seed-file)")
        self.settings = settings or AutonomousSettings()
        self.generator = generator
        self.live = live
        self.seed = list(seed)
        self.make_inner = make_inner
        self.generations = generations or Generations()
        s = self.settings
        self.line = PlannedLine(generator, live, rng, channel=s.channel, grid=s.grid, bar=s.beats_per_bar * PPQN)
        self.line.dynamics.hear_seed(self.seed)
        self._lookahead = round(s.lookahead_beats * PPQN)
        self._commit = round(s.commit_beats * PPQN)
        self._bar = s.beats_per_bar * PPQN
        self._silence = round(s.silence_bars * self._bar)
        self._takeover = round(s.takeover_beats * PPQN)
        self._history: deque[tuple[int, int, int]] = deque(maxlen=max(256, 4 * s.max_same_pitch))
        self._generation = 0
        self._started = False
        self._inner: Planner | None = None
        self._last_performed = 0
        self._held = HeldNotes()  # what the performer holds
        self._handovers = 0
        self.reseeds: list[Reseed] = []

    @property
    def responses(self) -> int:
        """Times the performer played and the model took over again afterwards."""
        return self._handovers

    @property
    def busy(self) -> bool:
        return True  # it plays until stopped

    @property
    def yielded(self) -> bool:
        """True while a performer has the floor."""
        return self._inner is not None

    # ---- performer ----------------------------------------------------------------

    def on_input(self, event: MidiEvent) -> list[Action]:
        actions: list[Action] = []
        if event.is_note_on or event.is_note_off:
            self._last_performed = event.tick
            self._held.observe(event)
        if event.is_note_on:
            self.line.dynamics.hear(event.tick, event.data2)  # its next turn plays at the performer's level
        if event.is_note_on and self._inner is None:
            if self._generation:
                actions.append(Withdraw(self._generation))
            self._inner = self.make_inner()
            self._started = False
        if self._inner is not None:
            actions += self._inner.on_input(event)
        return actions

    # ---- time ---------------------------------------------------------------------

    def advance(self, now_tick: int) -> list[Action]:
        actions: list[Action] = []
        for channel, pitch, start in self._held.begun_before(now_tick - self._takeover + 1):
            released = note_off(start + self._takeover, channel, pitch)  # its note-off was lost: released at the bound
            self._held.observe(released)
            if self._inner is not None:
                actions += self._inner.on_input(released)
        if self._inner is not None:
            actions += self._inner.advance(now_tick)
            if self._inner.busy or now_tick - self._last_performed < self._takeover:
                return actions
            self._inner = None
            self._handovers += 1
        if not self._started:
            self._begin(now_tick)
        line = self.line
        line.plan(now_tick + self._lookahead)
        following = line.next_onset()
        last = self._history[-1][0] if self._history else line.committed_until - 1
        if following is None or following - last >= self._silence:
            self._reseed("silence", now_tick)
            line.plan(now_tick + self._lookahead)
        committed = line.commit(now_tick + self._commit)
        if committed:
            actions.append(Commit(tuple(committed), self._generation))
            self._history.extend((n.onset, n.event.pitch, n.event.duration) for n in line.last_committed)
            reason = self._degenerate()
            if reason is not None:
                self._reseed(reason, now_tick)
        line.trim(now_tick)
        return actions

    def _begin(self, now_tick: int) -> None:
        """Start (or resume) the line on the next beat, from the seed when the model holds nothing."""
        self._started = True
        self._generation = self.generations.new()
        self._history.clear()
        if self.generator.fed == 0:
            self.generator.reset()
            self.line.feed_context(self.seed)
        start = ceil_to_grid(now_tick + PPQN // 2, PPQN)
        self.line.restart(start)

    # ---- degenerate loops ---------------------------------------------------------

    def _degenerate(self) -> str | None:
        s = self.settings
        history = self._history
        if len(history) >= s.max_same_pitch and len({p for _, p, _ in list(history)[-s.max_same_pitch :]}) == 1:
            return "same pitch"
        bar = self._bar
        current = self.line.committed_until // bar  # bars before this one are complete
        bars: dict[int, list[tuple[int, int]]] = {}
        for onset, pitch, _ in history:
            bars.setdefault(onset // bar, []).append((onset % bar, pitch))
        last = [tuple(sorted(bars.get(b, []))) for b in range(current - s.max_bar_repeats, current)]
        if len(last) == s.max_bar_repeats and last[0] and all(b == last[0] for b in last):
            first_bar = min(bars) if bars else current
            if current - s.max_bar_repeats >= first_bar:
                return "repeated bar"
        return None

    def _recent_context(self, reason: str) -> list[StepEvent] | None:
        """The model's own notes from before the loop, if they were varied enough."""
        s = self.settings
        notes = list(self._history)
        if reason == "same pitch":
            notes = notes[: max(0, len(notes) - s.max_same_pitch)]
        elif reason == "repeated bar":
            loop_start = (self.line.committed_until // self._bar - s.max_bar_repeats) * self._bar
            notes = [n for n in notes if n[0] < loop_start]
        before = notes[-RECENT_NOTES:]
        if not before or len({p for _, p, _ in before}) < RECENT_MIN_PITCHES:
            return None
        events, previous = [], before[0][0]
        for onset, pitch, duration in before:
            events.append(StepEvent(pitch, onset - previous, duration))
            previous = onset
        return events

    def _reseed(self, reason: str, now_tick: int) -> None:
        context = self._recent_context(reason) if self.settings.reseed == "recent" else None
        source = "recent" if context is not None else "seed"
        self.generator.reset()
        self.line.feed_context(context if context is not None else self.seed)
        start = ceil_to_grid(max(self.line.committed_until, now_tick), self._bar)
        self.line.restart(start)
        self._history.clear()
        self.reseeds.append(Reseed(start, reason, source))

    # ---- control ------------------------------------------------------------------

    def silence(self) -> list[Action]:
        actions: list[Action] = [Withdraw(self._generation)] if self._generation else []
        if self._inner is not None:
            actions += self._inner.silence()
            self._inner = None
        self._held.clear()
        self._started = False
        return actions

    def replan(self) -> None:
        if self._inner is not None:
            self._inner.replan()
        else:
            self.line.replan()

    def report(self) -> PlannerReport:
        return PlannerReport(reseeds=len(self.reseeds))
