"""The note stream every metric reads: parallel numpy arrays in ticks (PPQN 480).

Context: setup (offline analysis).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from livegen.music.events import Note
from livegen.music.time import PPQN


@dataclass(frozen=True, slots=True)
class NoteStream:
    """Notes as arrays sorted by (start, pitch): pitch, start and end in ticks, track index.

    ``length`` is how many ticks the stream covers (so trailing empty bars count);
    by default the last note's end rounded up to a whole bar.
    """

    pitch: np.ndarray  # int64 [n]
    start: np.ndarray  # int64 [n], ticks
    end: np.ndarray  # int64 [n], ticks
    track: np.ndarray  # int64 [n]
    beats_per_bar: int = 4
    length: int = 0

    @classmethod
    def from_notes(
        cls,
        notes: Sequence[Note],
        *,
        beats_per_bar: int = 4,
        length: int | None = None,
        tracks: Sequence[int] | None = None,
        offset: int = 0,
    ) -> NoteStream:
        """Build from notes; ``offset`` ticks are subtracted (a continuation starts at 0)."""
        order = sorted(range(len(notes)), key=lambda i: (notes[i].start, notes[i].pitch))
        pitch = np.array([notes[i].pitch for i in order], dtype=np.int64)
        start = np.array([notes[i].start - offset for i in order], dtype=np.int64)
        end = np.array([notes[i].end - offset for i in order], dtype=np.int64)
        track = np.array([tracks[i] if tracks is not None else 0 for i in order], dtype=np.int64)
        bar = beats_per_bar * PPQN
        if length is None:
            last = int(end.max()) if len(end) else 0
            length = max(bar, -(-last // bar) * bar)
        return cls(pitch, start, end, track, beats_per_bar, int(length))

    def __len__(self) -> int:
        return int(self.pitch.shape[0])

    @property
    def bar_ticks(self) -> int:
        return self.beats_per_bar * PPQN

    @property
    def bars(self) -> int:
        return -(-self.length // self.bar_ticks) if self.length else 0

    def select(self, mask: np.ndarray) -> NoteStream:
        return NoteStream(
            self.pitch[mask], self.start[mask], self.end[mask], self.track[mask], self.beats_per_bar, self.length
        )
