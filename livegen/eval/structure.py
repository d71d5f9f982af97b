"""Structure over many bars: how much the music repeats, varies and keeps its shape.

Context: setup (offline analysis; never on a real-time path).

The seeds' main complaint is that longer music loses its shape, so bars are compared
with each other (a self-similarity matrix, as in Foote's self-similarity analysis, on
symbolic bars).

- Bar vector: a grid of sixteenth-note positions (``beats_per_bar * 4`` per bar) by
  12 pitch classes. A cell is 1.0 where a note of that pitch class starts at that
  position (onsets rounded to the nearest sixteenth, so a slightly early downbeat
  belongs to the next bar) and 0.5 where one only sounds through it (held notes,
  including the tail of a note held over the bar line), else 0. Octave and velocity
  are ignored. A bar whose vector is all zeros is *silent* here; that is the same as
  ``empty_bar_count``'s empty bar except for a note within a 32nd of a bar line whose
  rounded onset lands in a bar it does not sound in.
- ``bar_self_similarity``: cosine similarity of every pair of bar vectors, in [0, 1];
  1 on the diagonal for non-silent bars, 0 in every row and column of a silent bar.
- ``structure`` (all over the non-silent bars only; 0.0 where a value has no pairs):

  - ``repetition``: share of bars that nearly repeat (similarity >= 0.9) an earlier
    bar; one bar repeated 16 times gives 15/16, 16 different bars 0.
  - ``variation``: 1 - mean similarity over all pairs of different bars.
  - ``local``: mean similarity of neighbouring bars (one bar apart).
  - ``long_range``: mean similarity of bars 8 or more bars apart (needs 9+ bars).
  - ``long_range_drop``: ``local - long_range`` when both exist: positive when bars
    far apart resemble each other less than neighbours do (the shape is lost over
    distance), near 0 or negative for music that returns to its material.
"""

from __future__ import annotations

import numpy as np

from livegen.eval.bars import cover
from livegen.eval.stream import NoteStream
from livegen.music.time import SIXTEENTH

#: Similarity from which a bar counts as a repeat of an earlier one.
REPEAT_THRESHOLD = 0.9
#: Bars at least this far apart are "long range".
LONG_RANGE_BARS = 8
#: Cell values of a bar vector.
ONSET, HELD = 1.0, 0.5


def bar_vectors(s: NoteStream) -> np.ndarray:
    """[bars, positions * 12]: sixteenth positions x pitch classes, 1 at onsets, 0.5 where held."""
    positions = s.bar_ticks // SIXTEENTH
    slots = s.bars * positions
    grid = np.zeros((slots, 12))
    note, slot, _ = cover(s, SIXTEENTH)
    grid[slot, s.pitch[note] % 12] = HELD
    onset = (s.start + SIXTEENTH // 2) // SIXTEENTH
    keep = (onset >= 0) & (onset < slots) & (s.start < s.length)
    grid[onset[keep], s.pitch[keep] % 12] = ONSET
    return grid.reshape(s.bars, positions * 12)


def bar_self_similarity(s: NoteStream) -> np.ndarray:
    """[bars, bars] cosine similarity of bar vectors (0 for silent bars, 1 on the diagonal otherwise)."""
    v = bar_vectors(s)
    norm = np.linalg.norm(v, axis=1)
    u = v / np.where(norm > 0, norm, 1.0)[:, None]
    sim = np.clip(u @ u.T, 0.0, 1.0)
    np.fill_diagonal(sim, (norm > 0).astype(float))
    return sim


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else 0.0


def structure(s: NoteStream) -> dict[str, float]:
    """Repetition, variation, local and long-range similarity of bars (see the module docstring)."""
    sim = bar_self_similarity(s)
    bars = np.flatnonzero(np.diag(sim) > 0)
    sub = sim[np.ix_(bars, bars)]
    k = len(bars)
    earlier = np.tril(sub >= REPEAT_THRESHOLD, k=-1)
    upper = np.triu(np.ones((k, k), dtype=bool), k=1)
    gap = np.abs(bars[:, None] - bars[None, :])
    local, far = sub[upper & (gap == 1)], sub[upper & (gap >= LONG_RANGE_BARS)]
    return {
        "repetition": float(earlier.any(axis=1).sum() / k) if k else 0.0,
        "variation": 1.0 - _mean(sub[upper]) if k > 1 else 0.0,
        "local": _mean(local),
        "long_range": _mean(far),
        "long_range_drop": _mean(local) - _mean(far) if local.size and far.size else 0.0,
    }
