"""The MIDI recorder: what the performer played and what the model sent, on separate tracks.

Context: control (fed from the input queue and the scheduler's sent log, never
from a real-time thread); :meth:`MidiRecorder.save` is file I/O.
"""

from __future__ import annotations

from pathlib import Path

from livegen.music.events import Note, pair_notes
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
        """The track's notes; notes still open are closed at ``end`` (or the last tick)."""
        return pair_notes(sorted(self._messages[track], key=lambda m: m[0]), end=end)

    def save(self, path: str | Path, tempo: TempoMap, *, beats_per_bar: int = 4) -> Path:
        return write_midi(path, {t: self.notes(t) for t in self.tracks}, tempo=tempo, beats_per_bar=beats_per_bar)
