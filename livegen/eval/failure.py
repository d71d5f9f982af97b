"""Failure metrics: what a performer hears go wrong in one answer (a drone, a silence, a collapse).

Context: setup (offline analysis).

Each function reads one answer as a :class:`NoteStream` whose ``length`` and
``beats_per_bar`` are the phrase's own, and gives one number; :func:`answer_figures`
gives them all. Definitions (``docs/evaluation.md``, "The quality gate"):

- a bar's *content* is the set of (onset within the bar on a 16th grid, pitch) of the
  notes starting in it; an empty bar's content is the empty set;
- the *top line* is the highest pitch at each distinct onset (:func:`metrics.melody_line`);
- the phrase's *key* is the best major or natural-minor scale of its seed.

Written here on numpy: these are a few lines each, and no library defines them on our
note streams (muspy's groove consistency reads its own Music objects).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby

import numpy as np

from livegen.eval import metrics
from livegen.eval.bars import empty_beat_ratio
from livegen.eval.stream import NoteStream
from livegen.music.time import PPQN, SIXTEENTH

#: The per-answer figures, in the order reports show them.
ANSWER_FIGURES = (
    "identical_bar_run",
    "distinct_bars",
    "notes_per_beat",
    "in_key",
    "empty_beats",
    "repeated_pitch",
    "top_line_interval",
    "groove",
)

Key = tuple[int, str]


def bar_contents(s: NoteStream) -> list[frozenset[tuple[int, int]]]:
    """Each bar's (16th within the bar, pitch) onsets, bar after bar over ``s.length``."""
    bar = s.bar_ticks
    contents: list[set[tuple[int, int]]] = [set() for _ in range(s.bars)]
    for pitch, start in zip(s.pitch.tolist(), s.start.tolist(), strict=True):
        index = start // bar
        if 0 <= index < len(contents):
            contents[index].add(((start - index * bar) // SIXTEENTH, pitch))
    return [frozenset(c) for c in contents]


def identical_bar_run(s: NoteStream) -> int:
    """The longest run of consecutive bars with the same content (0 for a stream of no bars)."""
    return max((len(list(run)) for _, run in groupby(bar_contents(s))), default=0)


def distinct_bars(s: NoteStream) -> float:
    """Distinct bar contents over bars (0 for a stream of no bars)."""
    contents = bar_contents(s)
    return len(set(contents)) / len(contents) if contents else 0.0


def events(s: NoteStream) -> frozenset[tuple[int, int]]:
    """The (16th from the stream's start, pitch) onsets of ``s``."""
    return frozenset(zip((s.start // SIXTEENTH).tolist(), s.pitch.tolist(), strict=True))


def dice(a: frozenset[tuple[int, int]], b: frozenset[tuple[int, int]]) -> float:
    """2·|a ∩ b| / (|a| + |b|); 0 when both are empty."""
    total = len(a) + len(b)
    return 2 * len(a & b) / total if total else 0.0


def cross_phrase_overlaps(answers: Sequence[NoteStream]) -> np.ndarray:
    """Per answer, its mean :func:`dice` overlap with the answers to every *other* phrase."""
    sets = [events(s) for s in answers]
    n = len(sets)
    if n < 2:
        return np.zeros(n)
    pair = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            pair[i, j] = pair[j, i] = dice(sets[i], sets[j])
    return pair.sum(axis=1) / (n - 1)


def scale_of(key: Key) -> np.ndarray:
    root, mode = key
    return (root + (metrics.MAJOR if mode == "major" else metrics.MINOR)) % 12


def in_key(s: NoteStream, key: Key) -> float:
    """Share of notes whose pitch class is in ``key`` (0 for an empty stream)."""
    if not len(s):
        return 0.0
    return float(np.isin(s.pitch % 12, scale_of(key)).mean())


def repeated_pitch(s: NoteStream) -> float:
    """Share of top-line steps that repeat the previous pitch (0 with fewer than two onsets)."""
    steps = np.diff(metrics.melody_line(s))
    return float((steps == 0).mean()) if len(steps) else 0.0


def onset_grid(s: NoteStream) -> np.ndarray:
    """[bars, 16ths per bar] booleans: where a note starts."""
    per_bar = s.bar_ticks // SIXTEENTH
    grid = np.zeros((s.bars, per_bar), dtype=bool)
    slot = s.start // SIXTEENTH
    keep = (slot >= 0) & (slot < s.bars * per_bar)
    grid.reshape(-1)[slot[keep]] = True
    return grid


def groove(s: NoteStream) -> float:
    """Groove consistency (Wu & Yang 2020): 1 - mean Hamming distance of neighbouring bars' 16th onsets."""
    grid = onset_grid(s)
    if len(grid) < 2:
        return 1.0
    return float(1.0 - (grid[1:] != grid[:-1]).mean())


def answer_figures(s: NoteStream, key: Key) -> dict[str, float]:
    """Every per-answer figure of :data:`ANSWER_FIGURES`."""
    return {
        "identical_bar_run": float(identical_bar_run(s)),
        "distinct_bars": distinct_bars(s),
        "notes_per_beat": len(s) * PPQN / s.length if s.length else 0.0,
        "in_key": in_key(s, key),
        "empty_beats": empty_beat_ratio(s),
        "repeated_pitch": repeated_pitch(s),
        "top_line_interval": metrics.average_pitch_interval(s),
        "groove": groove(s),
    }
