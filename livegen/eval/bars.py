"""Per-bar and per-beat metrics after MuseGAN (Dong et al. 2018), on a ``NoteStream``.

Context: setup (offline analysis; never on a real-time path).

Definitions (ticks at PPQN 480; a bar is ``s.bar_ticks``, a beat one quarter note):

- A note *sounds* over ``[start, max(end, start + 1))``: a zero-length note counts as
  one tick, so a note that was played is never invisible. Only the part inside
  ``[0, s.length)`` counts; notes outside the stream's length are ignored.
- A beat or bar is *empty* when no note sounds in it for even one tick. A note held
  across a bar line fills every bar it sounds in; a note ending exactly on a bar line
  does not fill the next bar; a note starting exactly on a bar line fills only the
  bar it starts. Every beat/bar of ``length`` is counted, trailing empty ones
  included, and a last partial bar (``length`` not a whole number of bars) counts as
  a bar. These counts are written here because the ones in muspy and pypianoroll are
  known to count wrongly (muspy's ``empty_beat_rate`` treats a note's end beat as
  filled even when the note ends on the beat line and adds a beat past the end;
  pypianoroll's counts the non-empty beats).
- Used pitch classes per bar (MuseGAN "UPC"): the number of distinct pitch classes
  sounding in a bar, held notes included, averaged over the non-empty bars only.
- Qualified note ratio (MuseGAN "QN"): share of notes lasting at least ``min_ticks``
  (default a 32nd note, MuseGAN's three time steps at 24 per beat).
- Tonal distance (MuseGAN "TD"): per bar, each track's chroma is the time each pitch
  class sounds in the bar (ticks, summed over notes, so doubled octaves weigh twice),
  L1-normalised and mapped to the 6-D tonal centroid of Harte, Sandler & Gasser 2006
  (circle of fifths, minor thirds and major thirds; radii 1, 1, 0.5); the distance is
  the Euclidean distance between the two centroids, averaged over the bars in which
  both tracks sound (0.0 where there are none).
"""

from __future__ import annotations

import numpy as np

from livegen.eval.stream import NoteStream
from livegen.music.time import PPQN

#: Harte et al. 2006 tonal-centroid matrix [6, 12]: rows sin/cos of the circle of fifths
#: (r1 = 1), of minor thirds (r2 = 1) and of major thirds (r3 = 0.5).
TONAL_MATRIX: np.ndarray = np.concatenate(
    [
        r * np.stack([np.sin(np.arange(12) * a), np.cos(np.arange(12) * a)])
        for r, a in ((1.0, 7 * np.pi / 6), (1.0, 3 * np.pi / 2), (0.5, 2 * np.pi / 3))
    ]
)


def sounding_span(s: NoteStream) -> tuple[np.ndarray, np.ndarray]:
    """Each note's sounding ``[start, end)`` clipped to ``[0, s.length)`` (empty where outside)."""
    lo = np.maximum(s.start, 0)
    hi = np.minimum(np.maximum(s.end, s.start + 1), s.length)
    return lo, np.maximum(hi, lo)


def cover(s: NoteStream, unit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(note index, unit index, ticks sounding) for every unit of ``unit`` ticks each note sounds in."""
    lo, hi = sounding_span(s)
    keep = np.flatnonzero(hi > lo)
    first, last = lo[keep] // unit, (hi[keep] - 1) // unit
    counts = last - first + 1
    note = np.repeat(keep, counts)
    units = np.repeat(first, counts) + np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    ticks = np.minimum(hi[note], (units + 1) * unit) - np.maximum(lo[note], units * unit)
    return note, units, ticks


def _empty_count(s: NoteStream, unit: int) -> int:
    n_units = -(-s.length // unit) if s.length > 0 else 0
    filled = np.zeros(n_units, dtype=bool)
    filled[cover(s, unit)[1]] = True
    return int(n_units - filled.sum())


def empty_beat_count(s: NoteStream) -> int:
    """Beats of ``s.length`` in which no note sounds at all (held notes fill the beats they span)."""
    return _empty_count(s, PPQN)


def empty_bar_count(s: NoteStream) -> int:
    """Bars of ``s.length`` in which no note sounds at all, trailing empty bars included."""
    return _empty_count(s, s.bar_ticks)


def empty_beat_ratio(s: NoteStream) -> float:
    beats = -(-s.length // PPQN) if s.length > 0 else 0
    return empty_beat_count(s) / beats if beats else 0.0


def empty_bar_ratio(s: NoteStream) -> float:
    """Share of the stream's bars that are empty (MuseGAN "EB"); 0.0 for a stream of no bars."""
    return empty_bar_count(s) / s.bars if s.bars else 0.0


def bar_pitch_classes(s: NoteStream) -> np.ndarray:
    """[bars, 12] bool: which pitch classes sound in each bar."""
    note, bar, _ = cover(s, s.bar_ticks)
    present = np.zeros((s.bars, 12), dtype=bool)
    present[bar, s.pitch[note] % 12] = True
    return present


def pitch_classes_per_bar(s: NoteStream) -> float:
    """Mean number of distinct pitch classes over the non-empty bars (MuseGAN "UPC")."""
    counts = bar_pitch_classes(s).sum(axis=1)
    counts = counts[counts > 0]
    return float(counts.mean()) if len(counts) else 0.0


def qualified_note_ratio(s: NoteStream, min_ticks: int = PPQN // 8) -> float:
    """Share of notes lasting at least ``min_ticks`` (default a 32nd: MuseGAN "QN")."""
    return float(np.mean(s.end - s.start >= min_ticks)) if len(s) else 0.0


def bar_chroma(s: NoteStream) -> np.ndarray:
    """[bars, 12] ticks each pitch class sounds in each bar (summed over notes)."""
    note, bar, ticks = cover(s, s.bar_ticks)
    chroma = np.zeros((s.bars, 12))
    np.add.at(chroma, (bar, s.pitch[note] % 12), ticks)
    return chroma


def tonal_centroid(chroma: np.ndarray) -> np.ndarray:
    """Harte et al. 2006 6-D tonal centroid of L1-normalised chroma rows [..., 12] -> [..., 6]."""
    total = chroma.sum(axis=-1, keepdims=True)
    return (chroma / np.where(total > 0, total, 1.0)) @ TONAL_MATRIX.T


def tonal_distance(s: NoteStream, track_a: int, track_b: int) -> float:
    """Mean per-bar tonal-centroid distance between two tracks over bars where both sound (MuseGAN "TD")."""
    a, b = bar_chroma(s.select(s.track == track_a)), bar_chroma(s.select(s.track == track_b))
    both = (a.sum(axis=1) > 0) & (b.sum(axis=1) > 0)
    if not both.any():
        return 0.0
    return float(np.linalg.norm(tonal_centroid(a[both]) - tonal_centroid(b[both]), axis=1).mean())
