"""The MIDI recorder: what the performer played and what the model sent, on separate tracks.

Context: control (fed from the input queue and the scheduler's sent log, never
from a real-time thread); :meth:`MidiRecorder.save` is file I/O.
"""

from __future__ import annotations

from collections import defaultdict, deque
from pathlib import Path

from livegen.music.events import NOTE_OFF, NOTE_ON, Note
from livegen.music.midifile import write_midi
from livegen.music.time import TempoMap


class MidiRecorder:
    """Collects channel messages per track at musical ticks and writes a type-1 file."""

    def __init__(self, tracks: tuple[str, ...] = ("performer", "livegen")) -> None:
        self.tracks = tracks
        self._messages: dict[str, list[tuple[int, tuple[int, ...]]]] = {t: [] for t in tracks}

    def record(self, track: str, tick: int, data: tuple[int, ...]) -> None:
        self._messages[track].append((max(0, tick), data))

    def notes(self, track: str, *, end: int | None = None) -> list[Note]:
        """Notes paired first-in first-out; notes still open are closed at ``end`` (or the last tick)."""
        messages = sorted(self._messages[track], key=lambda m: m[0])
        last = end if end is not None else max((t for t, _ in messages), default=0)
        open_notes: dict[tuple[int, int], deque[tuple[int, int]]] = defaultdict(deque)
        notes: list[Note] = []
        for tick, data in messages:
            if len(data) < 3:
                continue
            kind, channel, pitch, velocity = data[0] & 0xF0, data[0] & 0x0F, data[1], data[2]
            if kind == NOTE_ON and velocity > 0:
                open_notes[(channel, pitch)].append((tick, velocity))
            elif kind in (NOTE_OFF, NOTE_ON) and open_notes[(channel, pitch)]:
                start, vel = open_notes[(channel, pitch)].popleft()
                notes.append(Note(pitch, vel, start, tick - start, channel))
        for (channel, pitch), queue in open_notes.items():
            for start, vel in queue:
                notes.append(Note(pitch, vel, start, max(0, last - start), channel))
        notes.sort(key=lambda n: (n.start, n.pitch))
        return notes

    def save(self, path: str | Path, tempo: TempoMap, *, beats_per_bar: int = 4) -> Path:
        return write_midi(path, {t: self.notes(t) for t in self.tracks}, tempo=tempo, beats_per_bar=beats_per_bar)
