"""Call-and-response: listen to a phrase, answer it after a silence, yield when interrupted.

Context: control (the planner's thread).

- A phrase is the notes the performer plays until nothing is held and
  ``silence_beats`` have passed since the last release. A note held longer than
  ``held_beats`` (a jam passes its takeover time, 8 beats by default) counts as
  released at that bound: a keyboard that lost a note-off must not silence the model.
- The response starts at the first grid point at or after that moment and lasts
  the live response length (:class:`~livegen.engine.live.LiveParams`); it continues
  the phrase from the state the phrase left in the generator. Its events are
  generated and committed ``lookahead_beats`` ahead of the playhead, so the first
  note is on time and inference cost is spread out.
- When the performer plays during a response (or during the lookahead before it
  starts), the response is withdrawn at once: pending events are dropped and its
  sounding notes get their note-offs. That note begins the next phrase.
- With ``follow_key`` (a jam with no ``--key``) the answer keeps to the key of the
  performer's last :data:`~livegen.music.keys.KEY_WINDOW_BARS` bars, as an
  accompaniment does: an answer is in the key of its call.

Performed notes are fed to the generator as soon as they are complete and no
earlier note is still held, so the phrase's inference is done while it is played.
The first answering note's step is the model's own prediction (its onset is the
response start), so the model continues its line rather than seeing the pause.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, replace

import numpy as np

from livegen.engine.config import CHANNEL_BOUNDS
from livegen.engine.dynamics import Dynamics
from livegen.engine.live import MAX_CHORD, Generations, LiveParams
from livegen.engine.planner import Action, Commit, Planner, Withdraw
from livegen.errors import ConfigError
from livegen.models.step import StepEvent, StepGenerator
from livegen.music.events import MidiEvent, Note, note_off, note_on
from livegen.music.held import HeldNotes
from livegen.music.keys import KEY_WINDOW_BARS, Key, KeyTracker
from livegen.music.time import PPQN, SIXTEENTH, ceil_to_grid


@dataclass(frozen=True, slots=True)
class CallResponseSettings:
    silence_beats: float = 2.0
    beats_per_bar: int = 4
    lookahead_beats: float = 1.0
    channel: int = 0
    grid: int = SIXTEENTH
    held_beats: float = 8.0
    #: Keep the answer in the key of the performer's recent playing (when no scale is chosen).
    follow_key: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.silence_beats <= 64:
            raise ConfigError(f"silence {self.silence_beats} beats: expected more than 0 and at most 64")
        if not 1 <= self.beats_per_bar <= 16:
            raise ConfigError(f"{self.beats_per_bar} beats per bar: expected 1 to 16")
        if not 0 < self.lookahead_beats <= 16:
            raise ConfigError(f"lookahead {self.lookahead_beats} beats: expected more than 0 and at most 16")
        CHANNEL_BOUNDS.check(self.channel, "channel")
        if not 0 < self.held_beats <= 1024:
            raise ConfigError(f"held note bound {self.held_beats} beats: expected more than 0 and at most 1024")


@dataclass(slots=True)
class _Response:
    generation: int
    start: int
    end: int
    next_onset: int
    next_event: StepEvent | None  # sampled, not yet placed
    chord: int = 0  # notes placed at the last onset
    key: Key | None = None  # the key it keeps to, when it follows the performer's


class CallResponsePlanner(Planner):
    """The ``call-response`` follow mode over a ``step`` generator."""

    def __init__(
        self,
        generator: StepGenerator,
        live: LiveParams,
        rng: np.random.Generator,
        settings: CallResponseSettings | None = None,
        generations: Generations | None = None,
    ) -> None:
        self.generator = generator
        self.live = live
        self.rng = rng
        self.settings = settings or CallResponseSettings()
        self.generations = generations or Generations()
        self._silence = round(self.settings.silence_beats * PPQN)
        self._lookahead = round(self.settings.lookahead_beats * PPQN)
        self._held = round(self.settings.held_beats * PPQN)
        self._holding = HeldNotes()  # what the performer holds
        self._done: list[tuple[int, int, int, int]] = []  # heap of (start, pitch, end, velocity)
        self._last_onset: int | None = None
        self._last_release = 0
        self._phrase_notes = 0
        self._response: _Response | None = None
        self._responses = 0
        bar = self.settings.beats_per_bar * PPQN
        self.dynamics = Dynamics(bar, live)
        self._key = KeyTracker(KEY_WINDOW_BARS * bar) if self.settings.follow_key else None

    @property
    def responses(self) -> int:
        return self._responses

    @property
    def busy(self) -> bool:
        return bool(self._holding or self._phrase_notes or self._response)

    # ---- performer ----------------------------------------------------------------

    def on_input(self, event: MidiEvent) -> list[Action]:
        actions: list[Action] = []
        if event.is_note_on:
            if self._response is not None:
                actions.append(Withdraw(self._response.generation))
                self._response = None
            if self._phrase_notes == 0 and not self._holding:
                self.generator.reset()
            self._holding.observe(event)
            self._phrase_notes += 1
            self.dynamics.hear(event.tick, event.data2)
        elif event.is_note_off:
            ended = self._holding.observe(event)
            if ended is not None:
                heapq.heappush(self._done, (ended.start, ended.pitch, ended.end, ended.velocity))
                self._last_release = max(self._last_release, event.tick)
                self._feed_ready()
        return actions

    def _feed_ready(self, *, flush: bool = False) -> None:
        """Feed completed notes in onset order while no earlier note is still held."""
        earliest_open = self._holding.earliest()
        while self._done and (flush or earliest_open is None or self._done[0][0] <= earliest_open):
            start, pitch, end, velocity = heapq.heappop(self._done)
            step = 0 if self._last_onset is None else start - self._last_onset
            self._last_onset = start
            heard = self.live.to_model(pitch)
            if self._key is not None:
                self._key.observe(Note(heard, velocity, max(0, start), max(1, end - start)))
            phase = start % (self.settings.beats_per_bar * PPQN)
            self.generator.feed(
                StepEvent(pitch=heard, step=step, duration=end - start, velocity=velocity, bar_phase=phase)
            )

    # ---- time ---------------------------------------------------------------------

    def advance(self, now_tick: int) -> list[Action]:
        actions: list[Action] = []
        for channel, pitch, start in self._holding.begun_before(now_tick - self._held + 1):
            self.on_input(note_off(start + self._held, channel, pitch))  # its note-off was lost: released at the bound
        if self._response is None and self._phrase_notes and not self._holding:
            start = ceil_to_grid(self._last_release + self._silence, self.settings.grid)
            if now_tick >= start - self._lookahead:
                self._begin_response(start)
        response = self._response
        if response is not None:
            events = self._plan(response, now_tick + self._lookahead)
            if events:
                actions.append(Commit(tuple(events), response.generation))
            if response.next_event is None and now_tick >= response.end:
                self._response = None
                self._responses += 1
        return actions

    def _begin_response(self, start: int) -> None:
        self._feed_ready(flush=True)
        self.dynamics.end_phrase()
        self._phrase_notes = 0
        self._last_onset = None
        key = self._key.key() if self._key is not None else None
        first = self.generator.sample(self.live.sampling.following(key), self.rng) if self.generator.fed else None
        length = self.live.response_bars * self.settings.beats_per_bar * PPQN
        self._response = _Response(
            generation=self.generations.new(),
            start=start,
            end=start + length,
            next_onset=start,
            next_event=first,
            key=key,
        )

    def silence(self) -> list[Action]:
        """Stop at once (panic, a mode switch, the transport stopping): the phrase and the response end."""
        actions: list[Action] = []
        if self._response is not None:
            actions.append(Withdraw(self._response.generation))
            self._response = None
        self._holding.clear()
        self._done.clear()
        self._phrase_notes = 0
        self._last_onset = None
        return actions

    def replan(self) -> None:
        """Nothing to redo: a response in flight continues with the model now playing."""

    def _plan(self, response: _Response, horizon: int) -> list[MidiEvent]:
        """Place sampled notes whose onsets fall before ``horizon``; sample the next ones."""
        events: list[MidiEvent] = []
        channel = self.settings.channel
        while response.next_event is not None and response.next_onset <= horizon:
            event = response.next_event
            onset = response.next_onset
            duration = max(1, self.live.scale_time(event.duration))
            end = min(onset + duration, response.end)
            pitch = self.live.from_model(event.pitch)
            on_channel = channel if event.channel is None else event.channel
            own = event.velocity if self.generator.velocities else None
            velocity = self.dynamics.velocity(onset, own=own, answer=(response.start, response.end - response.start))
            events.append(note_on(onset, on_channel, pitch, velocity))
            events.append(note_off(end, on_channel, pitch))
            self.generator.feed(replace(event, bar_phase=onset % (self.settings.beats_per_bar * PPQN)))
            following = self.generator.sample(self.live.sampling.following(response.key), self.rng)
            step = self.live.scale_time(following.step)
            response.chord = response.chord + 1 if step == 0 else 0
            if response.chord >= MAX_CHORD:  # a model of endless chord notes: move on a 16th
                step, response.chord = SIXTEENTH, 0
            response.next_onset = onset + step
            response.next_event = following if response.next_onset < response.end else None
        events.sort()
        return events
