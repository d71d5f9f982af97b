"""Key following: transpose the model's output into the key the performer is playing in.

Context: control (the planner's thread).

Two key trackers listen over the same window: one to the performer's notes, one
to the model's own notes as the model produced them (before transposition). At
each bar line the transposition that moves the model's key onto the performer's
(:func:`~livegen.music.keys.transpose_interval`) becomes the live transposition:
generated pitches sound that much higher or lower and performed pitches reach the
model that much the other way, so the model stays in its own key and the band in
the performer's. It changes only on bar lines so a phrase is never split between
two keys mid-bar.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from livegen.engine.live import LiveParams
from livegen.music.events import MidiEvent
from livegen.music.held import HeldNotes
from livegen.music.keys import KeyTracker, transpose_interval
from livegen.music.time import PPQN


class KeyFollower:
    """Sets ``live.transpose`` at bar lines from the performer's key and the model's."""

    def __init__(self, live: LiveParams, *, window_bars: int = 4, beats_per_bar: int = 4) -> None:
        self.live = live
        self.bar = beats_per_bar * PPQN
        self.performer = KeyTracker(window_bars * self.bar)
        self.model = KeyTracker(window_bars * self.bar)
        self._performed = HeldNotes()
        self._committed = HeldNotes()  # the model's notes as they sound
        self._bar_index: int | None = None
        self.changes: list[tuple[int, int]] = []  # (tick, semitones) of each change

    def observe_performed(self, event: MidiEvent) -> None:
        """A performed message (note-ons and note-offs make notes for the performer's key)."""
        ended = self._performed.observe(event)
        if ended is not None:
            self.performer.observe(ended.note(shortest=1))

    def observe_committed(self, events: Iterable[MidiEvent]) -> None:
        """Notes the model committed, heard in the model's own key (as the transposition is when they end)."""
        for event in sorted(events):
            ended = self._committed.observe(event)
            if ended is not None:
                self.model.observe(replace(ended.note(shortest=1), pitch=self.live.to_model(ended.pitch)))

    def update(self, now_tick: int) -> None:
        """On the first call in each bar: follow the performer's key if both keys are known."""
        index = now_tick // self.bar
        if index == self._bar_index:
            return
        self._bar_index = index
        theirs, ours = self.performer.key(), self.model.key()
        if theirs is None or ours is None:
            return
        semitones = transpose_interval(ours, theirs)
        if semitones != self.live.transpose:
            self.live.transpose = semitones
            self.changes.append((now_tick, semitones))
