"""Key estimation (Krumhansl–Kessler) and transposition between keys.

Context: any (pure functions and values). :class:`KeyTracker` holds the notes of a
sliding window and belongs to the thread that feeds it (the control thread).

The estimate is the Krumhansl–Schmuckler algorithm: correlate a duration-weighted
pitch-class histogram with the 24 rotations of the Krumhansl–Kessler probe-tone
profiles (Krumhansl 1990, *Cognitive Foundations of Musical Pitch*, table 4.1) and
take the best. Written by hand because it is twenty lines of arithmetic over 12
numbers; music21's ``analyze('key')`` does the same but is far too heavy for the
engine (it is only an ``eval`` extra).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from livegen.music.events import Note

Mode = Literal["major", "minor"]

#: Krumhansl–Kessler probe-tone ratings, tonic first.
MAJOR_PROFILE: tuple[float, ...] = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
MINOR_PROFILE: tuple[float, ...] = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)

#: Tonic spellings as most scores write them (and ``--key`` reads them).
MAJOR_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MINOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")


@dataclass(frozen=True, slots=True)
class Key:
    """A tonic pitch class (0 = C) and a mode."""

    root: int
    mode: Mode

    def __post_init__(self) -> None:
        if not 0 <= self.root <= 11:
            raise ValueError(f"key root {self.root}: expected a pitch class 0..11")
        if self.mode not in ("major", "minor"):
            raise ValueError(f"key mode {self.mode!r}: expected 'major' or 'minor'")

    @property
    def name(self) -> str:
        """E.g. ``"D minor"``, ``"Bb major"`` (a form ``--key`` accepts)."""
        names = MAJOR_NAMES if self.mode == "major" else MINOR_NAMES
        return f"{names[self.root]} {self.mode}"

    @property
    def relative(self) -> Key:
        """The relative key: A minor for C major, C major for A minor."""
        if self.mode == "major":
            return Key((self.root + 9) % 12, "minor")
        return Key((self.root + 3) % 12, "major")

    def __str__(self) -> str:
        return self.name


def _centred(profile: Sequence[float]) -> tuple[tuple[float, ...], float]:
    mean = sum(profile) / len(profile)
    centred = tuple(p - mean for p in profile)
    return centred, math.sqrt(sum(c * c for c in centred))


_PROFILES: tuple[tuple[Mode, tuple[float, ...], float], ...] = (
    ("major", *_centred(MAJOR_PROFILE)),
    ("minor", *_centred(MINOR_PROFILE)),
)


def pitch_class_histogram(notes: Iterable[Note]) -> list[float]:
    """Total duration (ticks) per pitch class; all-zero durations count each note once."""
    weights = [0.0] * 12
    counts = [0.0] * 12
    for note in notes:
        weights[note.pitch % 12] += note.duration
        counts[note.pitch % 12] += 1
    return weights if any(weights) else counts


def key_correlations(histogram: Sequence[float]) -> dict[Key, float]:
    """Pearson correlation of ``histogram`` with each of the 24 key profiles (0.0 when flat)."""
    mean = sum(histogram) / 12
    centred = [h - mean for h in histogram]
    norm = math.sqrt(sum(c * c for c in centred))
    result: dict[Key, float] = {}
    for mode, profile, profile_norm in _PROFILES:
        for root in range(12):
            if norm == 0:
                result[Key(root, mode)] = 0.0
                continue
            # Profile rotated so its tonic sits on ``root``: rating of pitch class pc is profile[pc - root].
            dot = sum(centred[pc] * profile[(pc - root) % 12] for pc in range(12))
            result[Key(root, mode)] = dot / (norm * profile_norm)
    return result


def estimate_key(notes: Sequence[Note]) -> Key | None:
    """The key whose Krumhansl–Kessler profile best fits the notes; None when there are none.

    Ties (for example a histogram with every pitch class equal) go to the first in the
    order C major .. B major, C minor .. B minor.
    """
    if not notes:
        return None
    correlations = key_correlations(pitch_class_histogram(notes))
    return max(correlations, key=lambda k: correlations[k])


#: Bars of a performer's playing a followed key is estimated from.
KEY_WINDOW_BARS = 4


class KeyTracker:
    """The key of the notes heard lately: those whose end is within ``window_ticks``
    of the latest end observed (one owner thread, usually the control thread)."""

    def __init__(self, window_ticks: int) -> None:
        if window_ticks <= 0:
            raise ValueError(f"key window {window_ticks} ticks: expected a positive number of ticks")
        self.window_ticks = window_ticks
        self._notes: list[Note] = []
        self._latest = 0

    def observe(self, note: Note) -> None:
        """Add a finished note and forget those that ended before the window."""
        self._latest = max(self._latest, note.end)
        cutoff = self._latest - self.window_ticks
        self._notes = [n for n in self._notes if n.end > cutoff]
        if note.end > cutoff:
            self._notes.append(note)

    @property
    def notes(self) -> tuple[Note, ...]:
        """The notes in the window, in the order observed."""
        return tuple(self._notes)

    def key(self) -> Key | None:
        """The estimated key of the window's notes, or None when it is empty."""
        return estimate_key(self._notes)

    def clear(self) -> None:
        self._notes = []
        self._latest = 0


def transpose_interval(from_key: Key, to_key: Key) -> int:
    """Semitones (-5..+6) that move music in ``from_key`` into ``to_key``.

    Same mode: the tonic moves onto the other tonic (D minor -> A minor: -5; C major ->
    F# major: +6). Different modes: a line keeps its own mode and goes to the target's
    relative key, so a minor line played into a major key becomes its relative minor
    (A minor -> C major: 0, since A minor shares C major's notes; E minor -> C major: +5,
    onto A minor) and a major line into a minor key becomes its relative major (C major
    -> A minor: 0; G major -> E minor: 0; D major -> A minor: -2, onto C major). The
    shortest move wins; a tritone goes up (+6).
    """
    target = to_key if to_key.mode == from_key.mode else to_key.relative
    return (target.root - from_key.root + 5) % 12 - 5
