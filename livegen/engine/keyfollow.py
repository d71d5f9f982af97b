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

from livegen.engine.live import LiveParams
from livegen.music.events import NOTE_OFF, NOTE_ON, MidiEvent, Note
from livegen.music.keys import KeyTracker, transpose_interval
from livegen.music.time import PPQN


class KeyFollower:
    """Sets ``live.transpose`` at bar lines from the performer's key and the model's."""

    def __init__(self, live: LiveParams, *, window_bars: int = 4, beats_per_bar: int = 4) -> None:
        self.live = live
        self.bar = beats_per_bar * PPQN
        self.performer = KeyTracker(window_bars * self.bar)
        self.model = KeyTracker(window_bars * self.bar)
        self._held: dict[tuple[int, int], tuple[int, int]] = {}  # performer (channel, pitch) -> (start, velocity)
        self._model_held: dict[tuple[int, int], tuple[int, int, int]] = {}  # -> (start, velocity, model pitch)
        self._bar_index: int | None = None
        self.changes: list[tuple[int, int]] = []  # (tick, semitones) of each change

    def observe_performed(self, tick: int, data: tuple[int, ...]) -> None:
        """A performed message (note-ons and note-offs make notes for the performer's key)."""
        note = self._pair(self._held, tick, data)
        if note is not None:
            self.performer.observe(note)

    def observe_committed(self, events: Iterable[MidiEvent]) -> None:
        """Notes the model committed, heard in the model's own key."""
        for event in sorted(events):
            kind, channel = event.status & 0xF0, event.status & 0x0F
            if kind == NOTE_ON and event.data2 > 0:
                model_pitch = self.live.to_model(event.data1)
                self._model_held[(channel, event.data1)] = (event.tick, event.data2, model_pitch)
            elif kind in (NOTE_ON, NOTE_OFF):
                started = self._model_held.pop((channel, event.data1), None)
                if started is not None:
                    start, velocity, pitch = started
                    self.model.observe(Note(pitch, max(1, velocity), start, max(1, event.tick - start), channel))

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

    @staticmethod
    def _pair(held: dict[tuple[int, int], tuple[int, int]], tick: int, data: tuple[int, ...]) -> Note | None:
        if len(data) < 3:
            return None
        kind, channel, pitch, velocity = data[0] & 0xF0, data[0] & 0x0F, data[1], data[2]
        if kind == NOTE_ON and velocity > 0:
            held[(channel, pitch)] = (tick, velocity)
        elif kind in (NOTE_ON, NOTE_OFF):
            started = held.pop((channel, pitch), None)
            if started is not None:
                return Note(pitch, started[1], started[0], max(1, tick - started[0]), channel)
        return None
