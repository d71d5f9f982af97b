"""Objective metrics of a ``NoteStream``: pitch, rhythm, per-bar, structure and following.

Context: setup (offline analysis; never on a real-time path).

Most features follow MGEval (Yang & Lerch 2020, "On the evaluation of generative
models in music"); the per-bar ones (``livegen.eval.bars``) follow MuseGAN (Dong et
al. 2018) with the tonal centroid of Harte, Sandler & Gasser 2006; the bar
self-similarity lives in ``livegen.eval.structure``. This module re-exports them all.
They are written here on numpy rather than taken from muspy, pypianoroll or MGEval:
those read their own score objects or pianorolls, define several features
differently (below) and count empty beats wrongly; each feature is a few numpy lines.

Every function takes a ``NoteStream`` (ticks at PPQN 480, all tracks together unless
you ``select`` one) and returns 0.0, 0 or zeros for an empty stream, never NaN.
Histograms are normalised to sum 1 (all zeros when there is nothing to count).

- ``pitch_range``: highest minus lowest MIDI pitch. ``used_pitch_classes``: distinct
  pitch classes.
- ``pitch_class_histogram``: notes per pitch class (counts of notes, not duration, as
  MGEval). ``pitch_class_entropy``: its Shannon entropy in bits (0 .. log2 12).
- ``melody_line``: the highest pitch at each distinct onset (a skyline of onsets;
  a note still held from an earlier onset is ignored). Intervals and transitions are
  measured on it, so chords do not count as leaps. ``pitch_class_transitions``
  [12, 12] (row from, column to, repeated notes on the diagonal),
  ``average_pitch_interval`` (mean absolute semitones) and ``interval_histogram``
  (signed, bins -12..+12, larger leaps clipped into the end bins) read it.
- ``ioi_histogram``: gaps between consecutive distinct onsets, in beats;
  ``note_length_histogram``: ``end - start`` in beats. Both use the bins
  ``IOI_BINS``/``LENGTH_BINS``, centred on the nominal values in ``DURATION_CLASSES``
  (32nd, 16th, triplet 8th, 8th, triplet quarter, dotted 8th, quarter, dotted
  quarter, half, dotted half, whole) with edges at the geometric means of neighbours,
  so a played value a little short or long stays in its class. The first bin also
  holds everything shorter (grace notes, the spread of a played chord), the last
  everything longer than a whole note.
- ``polyphony``: time-weighted mean number of notes sounding while at least one
  sounds (sum of sounding times / length of their union), as MGEval and muspy; notes
  of one pitch in two tracks count twice. A zero-length note sounds for one tick.
- ``best_scale``: of the 24 major and natural-minor scales, the one holding most
  notes; ties go to the scale whose tonic has most notes (so A minor rather than C
  major when A is played more than C), then to the key signature with fewest
  accidentals, then major before minor, then the lowest root. ``in_scale_rate``: the
  share of notes in it. An empty stream gives (0, "major").
- ``notes_per_beat``: notes per beat of ``s.length`` (the density metric of seed 002).
- ``following_rate``: share of generated notes whose pitch class the performer
  played in the window before the note's onset (see its docstring).
"""

from __future__ import annotations

import numpy as np

from livegen.eval.bars import (
    TONAL_MATRIX,
    bar_chroma,
    bar_pitch_classes,
    empty_bar_count,
    empty_bar_ratio,
    empty_beat_count,
    empty_beat_ratio,
    pitch_classes_per_bar,
    qualified_note_ratio,
    tonal_centroid,
    tonal_distance,
)
from livegen.eval.stream import NoteStream
from livegen.eval.structure import bar_self_similarity, bar_vectors, structure
from livegen.music.time import PPQN

__all__ = [
    "DURATION_CLASSES",
    "INTERVAL_RANGE",
    "IOI_BINS",
    "LENGTH_BINS",
    "TONAL_MATRIX",
    "average_pitch_interval",
    "bar_chroma",
    "bar_pitch_classes",
    "bar_self_similarity",
    "bar_vectors",
    "best_scale",
    "empty_bar_count",
    "empty_bar_ratio",
    "empty_beat_count",
    "empty_beat_ratio",
    "following_rate",
    "histogram_features",
    "in_scale_rate",
    "interval_histogram",
    "ioi_histogram",
    "melody_line",
    "note_length_histogram",
    "notes_per_beat",
    "pitch_class_entropy",
    "pitch_class_histogram",
    "pitch_class_transitions",
    "pitch_classes_per_bar",
    "pitch_range",
    "polyphony",
    "qualified_note_ratio",
    "scalar_features",
    "structure",
    "tonal_centroid",
    "tonal_distance",
    "used_pitch_classes",
]

#: Nominal durations in beats that the IOI and note-length bins are centred on.
DURATION_CLASSES: np.ndarray = np.array([1 / 8, 1 / 4, 1 / 3, 1 / 2, 2 / 3, 3 / 4, 1, 3 / 2, 2, 3, 4])
#: Bin edges in beats, [lo, hi): 0, the geometric means of neighbouring classes, inf (11 bins).
IOI_BINS: np.ndarray = np.concatenate([[0.0], np.sqrt(DURATION_CLASSES[:-1] * DURATION_CLASSES[1:]), [np.inf]])
LENGTH_BINS: np.ndarray = IOI_BINS.copy()
#: Interval histogram bins: -INTERVAL_RANGE .. +INTERVAL_RANGE semitones.
INTERVAL_RANGE = 12

MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
MINOR = np.array([0, 2, 3, 5, 7, 8, 10])


def _normalise(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else np.zeros(counts.shape)


def _histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    bins = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    return _normalise(np.bincount(bins, minlength=len(edges) - 1).astype(float))


def pitch_range(s: NoteStream) -> int:
    return int(s.pitch.max() - s.pitch.min()) if len(s) else 0


def used_pitch_classes(s: NoteStream) -> int:
    return len(np.unique(s.pitch % 12))


def _pc_counts(s: NoteStream) -> np.ndarray:
    return np.bincount(s.pitch % 12, minlength=12).astype(float)


def pitch_class_histogram(s: NoteStream) -> np.ndarray:
    """[12] share of notes per pitch class."""
    return _normalise(_pc_counts(s))


def pitch_class_entropy(s: NoteStream) -> float:
    """Shannon entropy in bits of ``pitch_class_histogram``."""
    p = pitch_class_histogram(s)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum()) + 0.0  # turns -0.0 into 0.0


def melody_line(s: NoteStream) -> np.ndarray:
    """Pitch of the highest note at each distinct onset, in time order."""
    order = np.lexsort((s.pitch, s.start))
    start = s.start[order]
    last_of_onset = np.append(start[1:] != start[:-1], True) if len(s) else np.zeros(0, dtype=bool)
    return s.pitch[order][last_of_onset]


def pitch_class_transitions(s: NoteStream) -> np.ndarray:
    """[12, 12] share of melody-line steps from pitch class ``row`` to ``column``."""
    pc = melody_line(s) % 12
    return _normalise(np.bincount(pc[:-1] * 12 + pc[1:], minlength=144).astype(float)).reshape(12, 12)


def average_pitch_interval(s: NoteStream) -> float:
    """Mean absolute interval in semitones between consecutive melody-line pitches."""
    steps = np.abs(np.diff(melody_line(s)))
    return float(steps.mean()) if len(steps) else 0.0


def interval_histogram(s: NoteStream) -> np.ndarray:
    """[25] share of melody-line intervals -12..+12 semitones (wider leaps in the end bins)."""
    steps = np.clip(np.diff(melody_line(s)), -INTERVAL_RANGE, INTERVAL_RANGE) + INTERVAL_RANGE
    return _normalise(np.bincount(steps, minlength=2 * INTERVAL_RANGE + 1).astype(float))


def ioi_histogram(s: NoteStream) -> np.ndarray:
    """Share of gaps between consecutive distinct onsets per ``IOI_BINS`` bin."""
    return _histogram(np.diff(np.unique(s.start)) / PPQN, IOI_BINS)


def note_length_histogram(s: NoteStream) -> np.ndarray:
    """Share of notes per ``LENGTH_BINS`` bin of ``end - start`` in beats."""
    return _histogram((s.end - s.start) / PPQN, LENGTH_BINS)


def polyphony(s: NoteStream) -> float:
    """Time-weighted mean number of notes sounding while at least one sounds."""
    if not len(s):
        return 0.0
    order = np.argsort(s.start, kind="stable")
    start, end = s.start[order], np.maximum(s.end, s.start + 1)[order]
    reached = np.concatenate([[start[0]], np.maximum.accumulate(end)[:-1]])
    union = np.maximum(end - np.maximum(start, reached), 0).sum()
    return float((end - start).sum() / union)


def _scale_ranking(s: NoteStream) -> tuple[np.ndarray, np.ndarray]:
    """(scale indices best first, notes in each scale); scale i < 12 is major on root i, else minor on i - 12."""
    counts = _pc_counts(s)
    roots = np.arange(12)
    members = np.concatenate([(roots[:, None] + MAJOR) % 12, (roots[:, None] + MINOR) % 12])
    inside = counts[members].sum(axis=1)
    tonic = counts[members[:, 0]]
    fifths = (np.concatenate([roots, roots + 3]) * 7) % 12  # major key's place on the circle of fifths
    accidentals = np.minimum(fifths, 12 - fifths)
    mode = np.repeat([0, 1], 12)
    return np.lexsort((np.tile(roots, 2), mode, accidentals, -tonic, -inside)), inside


def best_scale(s: NoteStream) -> tuple[int, str]:
    """(root pitch class, "major" or "minor") of the scale holding most notes (ties: see module docstring)."""
    best = int(_scale_ranking(s)[0][0])
    return best % 12, "major" if best < 12 else "minor"


def in_scale_rate(s: NoteStream) -> float:
    """Share of notes in ``best_scale``."""
    if not len(s):
        return 0.0
    order, inside = _scale_ranking(s)
    return float(inside[order[0]] / len(s))


def notes_per_beat(s: NoteStream) -> float:
    """Notes per beat of the stream's length."""
    return len(s) * PPQN / s.length if s.length > 0 else 0.0


def following_rate(performer: NoteStream, generated: NoteStream, window_ticks: int | None = None) -> float:
    """Share of generated notes whose pitch class the performer played in the window before their onset.

    A performer note counts for a generated note starting at ``t`` when it starts before
    ``t`` and still sounds after ``t - window`` (so a chord held from earlier counts; a
    note starting together with the generated one does not, since a live model cannot
    have heard it). The window defaults to one bar of ``performer``. Both streams must
    be on one timeline (the same ``offset``). 0.0 when nothing was generated.
    """
    window = performer.bar_ticks if window_ticks is None else window_ticks
    if window <= 0:
        raise ValueError(f"following_rate: window_ticks must be a positive number of ticks, not {window}")
    hits = np.zeros(len(generated), dtype=bool)
    perf_pc, perf_end = performer.pitch % 12, np.maximum(performer.end, performer.start + 1)
    for pc in np.unique(perf_pc):
        order = np.argsort(performer.start[perf_pc == pc], kind="stable")
        starts = performer.start[perf_pc == pc][order]
        reach = np.maximum.accumulate(perf_end[perf_pc == pc][order])  # latest end among notes started so far
        mine = np.flatnonzero(generated.pitch % 12 == pc)
        t = generated.start[mine]
        before = np.searchsorted(starts, t, side="left")  # performer notes of pc starting before t
        hits[mine] = (before > 0) & (reach[np.maximum(before - 1, 0)] > t - window)
    return float(hits.mean()) if len(generated) else 0.0


def scalar_features(s: NoteStream) -> dict[str, float]:
    """Every scalar metric by name; the ``structure`` entries are prefixed ``structure_``."""
    features = {
        "pitch_range": float(pitch_range(s)),
        "used_pitch_classes": float(used_pitch_classes(s)),
        "pitch_class_entropy": pitch_class_entropy(s),
        "average_pitch_interval": average_pitch_interval(s),
        "polyphony": polyphony(s),
        "in_scale_rate": in_scale_rate(s),
        "notes_per_beat": notes_per_beat(s),
        "empty_bar_ratio": empty_bar_ratio(s),
        "pitch_classes_per_bar": pitch_classes_per_bar(s),
        "qualified_note_ratio": qualified_note_ratio(s),
    }
    features.update({f"structure_{k}": v for k, v in structure(s).items()})
    return features


def histogram_features(s: NoteStream) -> dict[str, np.ndarray]:
    """Every histogram by name, each 1-D (the transition matrix flattened row by row)."""
    return {
        "pitch_class_histogram": pitch_class_histogram(s),
        "pitch_class_transitions": pitch_class_transitions(s).ravel(),
        "interval_histogram": interval_histogram(s),
        "ioi_histogram": ioi_histogram(s),
        "note_length_histogram": note_length_histogram(s),
    }
