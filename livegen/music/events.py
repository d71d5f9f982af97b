"""Immutable note and MIDI event values shared by every layer.

Context: any (pure values, safe to hand between threads).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass

NOTE_OFF = 0x80
NOTE_ON = 0x90
CONTROL_CHANGE = 0xB0
PROGRAM_CHANGE = 0xC0

CC_SUSTAIN = 64
CC_ALL_SOUND_OFF = 120
CC_ALL_NOTES_OFF = 123


@dataclass(frozen=True, slots=True)
class Note:
    """A note: MIDI pitch and velocity, start and duration in ticks, channel 0-15."""

    pitch: int
    velocity: int
    start: int
    duration: int
    channel: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.pitch <= 127:
            raise ValueError(f"pitch {self.pitch} outside 0..127")
        if not 1 <= self.velocity <= 127:
            raise ValueError(f"velocity {self.velocity} outside 1..127")
        if self.duration < 0 or self.start < 0:
            raise ValueError("start and duration must be non-negative ticks")
        if not 0 <= self.channel <= 15:
            raise ValueError(f"channel {self.channel} outside 0..15")

    @property
    def end(self) -> int:
        return self.start + self.duration


@dataclass(frozen=True, slots=True, order=True)
class MidiEvent:
    """A channel message at a tick. Orders by tick, then note-offs before note-ons."""

    tick: int
    order: int  # 0 for releases and controls, 1 for note-ons (sort key)
    status: int
    data1: int
    data2: int

    @property
    def kind(self) -> int:
        return self.status & 0xF0

    @property
    def channel(self) -> int:
        return self.status & 0x0F

    @property
    def is_note_on(self) -> bool:
        return self.kind == NOTE_ON and self.data2 > 0

    @property
    def is_note_off(self) -> bool:
        return self.kind == NOTE_OFF or (self.kind == NOTE_ON and self.data2 == 0)

    def bytes(self) -> list[int]:
        if self.kind == PROGRAM_CHANGE:
            return [self.status, self.data1]
        return [self.status, self.data1, self.data2]


def note_on(tick: int, channel: int, pitch: int, velocity: int) -> MidiEvent:
    return MidiEvent(tick, 1, NOTE_ON | channel, pitch, velocity)


def note_off(tick: int, channel: int, pitch: int) -> MidiEvent:
    return MidiEvent(tick, 0, NOTE_OFF | channel, pitch, 0)


def control_change(tick: int, channel: int, control: int, value: int) -> MidiEvent:
    return MidiEvent(tick, 0, CONTROL_CHANGE | channel, control, value)


def notes_to_events(notes: Iterable[Note]) -> list[MidiEvent]:
    """Note-on and note-off events for ``notes``, sorted; releases come first at a tick."""
    events: list[MidiEvent] = []
    for n in notes:
        events.append(note_on(n.start, n.channel, n.pitch, n.velocity))
        events.append(note_off(n.end, n.channel, n.pitch))
    events.sort()
    return events


def pair_notes(messages: Iterable[tuple[int, tuple[int, ...]]], *, end: int | None = None) -> list[Note]:
    """Notes from timed channel messages ``(tick, bytes)`` sorted by tick.

    Note-ons pair with note-offs (or note-ons of velocity 0) first in, first out per
    channel and pitch; notes still open are closed at ``end`` (default: the last tick).
    Other messages are ignored. The result is sorted by start, pitch and channel.
    """
    open_notes: dict[tuple[int, int], deque[tuple[int, int]]] = defaultdict(deque)
    notes: list[Note] = []
    last = 0
    for tick, data in messages:
        last = max(last, tick)
        if len(data) < 3:
            continue
        kind, channel, pitch, velocity = data[0] & 0xF0, data[0] & 0x0F, data[1], data[2]
        if kind == NOTE_ON and velocity > 0:
            open_notes[(channel, pitch)].append((tick, velocity))
        elif kind in (NOTE_OFF, NOTE_ON):
            queue = open_notes.get((channel, pitch))
            if queue:
                start, vel = queue.popleft()
                notes.append(Note(pitch, vel, start, max(0, tick - start), channel))
    close_at = last if end is None else end
    for (channel, pitch), queue in open_notes.items():
        for start, vel in queue:
            notes.append(Note(pitch, vel, start, max(0, close_at - start), channel))
    notes.sort(key=lambda n: (n.start, n.pitch, n.channel))
    return notes
