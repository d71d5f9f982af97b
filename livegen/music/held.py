"""Held notes: note-ons paired with the note-offs that end them, the one pairing livegen uses.

Context: any; an instance belongs to one thread (the recorder's, a planner's, the key
follower's) and is not locked. A note-off (or a note-on of velocity 0) ends the oldest
note still held on its channel and pitch, first in, first out, as a synthesizer's voice
allocation and the scheduler's :class:`~livegen.engine.tracker.NoteTracker` count them.
Ticks may be negative (a DAW counting in before the song's start).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from livegen.music.events import MidiEvent, Note


@dataclass(frozen=True, slots=True)
class Ended:
    """A note that a note-off ended: where it began and ended, at what velocity."""

    channel: int
    pitch: int
    velocity: int
    start: int
    end: int

    def note(self, *, shortest: int = 0) -> Note:
        """As a :class:`Note` from tick 0 on, lasting at least ``shortest`` ticks."""
        start = max(0, self.start)
        return Note(self.pitch, self.velocity, start, max(shortest, self.end - start), self.channel)


class HeldNotes:
    """The notes sounding now, per (channel, pitch), each with its start tick and velocity."""

    def __init__(self) -> None:
        self._open: dict[tuple[int, int], deque[tuple[int, int]]] = {}

    def observe(self, event: MidiEvent) -> Ended | None:
        """A note-on starts a note; a note-off ends the oldest one of its key and returns it.

        None for a note-off that finds nothing held (a stray or repeated one) and for
        messages that are not notes.
        """
        if event.is_note_on:
            self._open.setdefault(event.key, deque()).append((event.tick, event.data2))
            return None
        if event.is_note_off:
            return self.release(event.tick, *event.key)
        return None

    def release(self, tick: int, channel: int, pitch: int) -> Ended | None:
        """End the oldest note held on ``channel`` and ``pitch`` at ``tick`` (None: none is held)."""
        starts = self._open.get((channel, pitch))
        if not starts:
            return None
        start, velocity = starts.popleft()
        if not starts:
            del self._open[(channel, pitch)]
        return Ended(channel, pitch, velocity, start, max(start, tick))

    def __len__(self) -> int:
        return sum(len(starts) for starts in self._open.values())

    def __bool__(self) -> bool:
        return bool(self._open)

    def __contains__(self, key: tuple[int, int]) -> bool:
        return key in self._open

    def earliest(self) -> int | None:
        """The start of the oldest note held, or None when nothing is."""
        return min((starts[0][0] for starts in self._open.values()), default=None)

    def begun_before(self, tick: int) -> list[tuple[int, int, int]]:
        """(channel, pitch, start) of each note held that began before ``tick``, oldest first."""
        begun = [(start, key) for key, starts in self._open.items() for start, _ in starts if start < tick]
        return [(key[0], key[1], start) for start, key in sorted(begun)]

    def sounding(self) -> list[tuple[int, int]]:
        """(channel, pitch) of every note held, once per note-on not yet ended."""
        return [key for key, starts in self._open.items() for _ in starts]

    def end_channel(self, tick: int, channel: int) -> list[Ended]:
        """End every note held on ``channel`` at ``tick`` (all notes off), oldest first."""
        ended: list[Ended] = []
        for key in [k for k in self._open if k[0] == channel]:
            ended += [
                Ended(channel, key[1], velocity, start, max(start, tick)) for start, velocity in self._open.pop(key)
            ]
        ended.sort(key=lambda e: (e.start, e.pitch))
        return ended

    def end_all(self, tick: int) -> list[Ended]:
        """End every note held at ``tick`` (a recording's end, a cut), oldest first."""
        ended = [
            Ended(channel, pitch, velocity, start, max(start, tick))
            for (channel, pitch), starts in self._open.items()
            for start, velocity in starts
        ]
        self._open.clear()
        ended.sort(key=lambda e: (e.start, e.pitch, e.channel))
        return ended

    def restart(self, before: int, at: int) -> None:
        """Notes held that began before ``before`` count as begun at ``at`` (struck again there)."""
        for starts in self._open.values():
            for k, (start, velocity) in enumerate(starts):
                if start < before:
                    starts[k] = (at, velocity)

    def clear(self) -> None:
        self._open.clear()


def pair_notes(events: Iterable[MidiEvent], *, end: int | None = None) -> list[Note]:
    """The notes of ``events`` (sorted by tick), notes still held closed at ``end`` (default: the last
    tick); sorted by start, pitch and channel."""
    held = HeldNotes()
    notes: list[Note] = []
    last = 0
    for event in events:
        last = max(last, event.tick)
        ended = held.observe(event)
        if ended is not None:
            notes.append(ended.note())
    notes += [ended.note() for ended in held.end_all(last if end is None else end)]
    notes.sort(key=lambda n: (n.start, n.pitch, n.channel))
    return notes
