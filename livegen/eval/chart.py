"""The seed-000 evaluation chart (melody, rhythm, harmony, uniform mood) as objective proxies.

Context: setup (offline analysis).

Seed 000 (§4.1, Table 1) marks each system ✓ or ✗ by ear on four elements: *melody* (not a
"random switch between an increase and a decrease in pitch", not dissonant), *rhythm*
(uniform, "proper rhythms", no "inappropriate pauses"), *harmony* (N/A for a single line)
and *uniform mood* ("remains consistent throughout the song"). Here each is a rule on the
generated set whose thresholds come from the reference set, never constants:

- two-sided checks: the set's median of a per-sample value lies within the reference's 5th
  to 95th percentile of the same value (where 90% of real pieces lie);
- one-sided checks: at or above the reference's 10th percentile (or at or below its 90th);
- MGEval checks: the set's overlap for a feature is at least the 10th percentile of what one
  half of the reference set scores against the other half (over random splits).

A criterion passes when all its checks pass. The rules, in words, are in
``docs/evaluation.md``; :data:`RULES` holds the one-line version printed in reports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from livegen.eval import metrics
from livegen.eval.mgeval import Comparison
from livegen.eval.stream import NoteStream
from livegen.models.sampling import SCALES

COLUMNS = ("melody", "rhythm", "harmony", "uniform mood")

#: Median polyphony above which a set is more than one line, and harmony is judged.
POLYPHONY_FOR_HARMONY = 1.1
#: Bars per window in which key and density are measured for the uniform-mood rule (a phrase).
MOOD_WINDOW_BARS = 4

RULES = {
    "melody": "median in-scale rate >= reference P10 and median mean |interval| within reference P5-P95",
    "rhythm": "IOI-histogram overlap >= reference split-half P10 and median empty-beat ratio <= reference P95",
    "harmony": "N/A for a single line (median polyphony <= 1.1); else median pitch classes per bar and "
    "median bar-to-bar tonal-centroid distance within reference P5-P95",
    "uniform mood": f"in {MOOD_WINDOW_BARS}-bar windows: median of the lowest in-key share (the piece's scale) "
    ">= reference P10 and median coefficient of variation of notes per window <= reference P90",
}


@dataclass(frozen=True, slots=True)
class Check:
    """One measured value against bounds taken from the reference (``None``: unbounded side)."""

    name: str
    value: float
    low: float | None
    high: float | None

    @property
    def passed(self) -> bool:
        if not np.isfinite(self.value):
            return False
        return (self.low is None or self.value >= self.low) and (self.high is None or self.value <= self.high)


@dataclass(frozen=True, slots=True)
class Criterion:
    """One cell of the chart: passed (True/False) or not applicable (None), and why."""

    passed: bool | None
    checks: tuple[Check, ...]

    @property
    def mark(self) -> str:
        return "N/A" if self.passed is None else ("✓" if self.passed else "✗")


@dataclass(frozen=True, slots=True)
class Chart:
    rows: dict[str, dict[str, Criterion]]  # system key -> column -> criterion


# ---- per-sample values ---------------------------------------------------------------


def _windows(s: NoteStream, bars: int) -> list[NoteStream]:
    """``s`` cut into consecutive windows of ``bars`` bars (the last may be shorter), each from 0."""
    size = bars * s.bar_ticks
    out = []
    for lo in range(0, max(s.length, 1), size):
        mask = (s.start >= lo) & (s.start < lo + size)
        length = min(size, s.length - lo)
        out.append(
            NoteStream(
                s.pitch[mask], s.start[mask] - lo, s.end[mask] - lo, s.track[mask], s.beats_per_bar, max(length, 1)
            )
        )
    return out


def key_steadiness(s: NoteStream) -> float:
    """The lowest share, over the non-empty windows, of a window's notes in the whole piece's scale.

    1.0 when every phrase stays in the piece's key; low when some phrase wanders off it
    (the piece's scale is ``best_scale``; NaN without notes).
    """
    if not len(s):
        return float("nan")
    root, mode = metrics.best_scale(s)
    in_key = np.zeros(12, dtype=bool)
    in_key[[(root + step) % 12 for step in SCALES[mode]]] = True
    shares = [float(in_key[w.pitch % 12].mean()) for w in _windows(s, _window_bars(s)) if len(w)]
    return min(shares)


def density_variation(s: NoteStream) -> float:
    """Coefficient of variation (sd / mean) of the number of notes per window (NaN without notes)."""
    counts = np.array([len(w) for w in _windows(s, _window_bars(s))], dtype=float)
    if not counts.sum():
        return float("nan")
    return float(counts.std() / counts.mean())


def tonal_motion(s: NoteStream) -> float:
    """Mean distance between the tonal centroids of consecutive non-empty bars (NaN with fewer than 2)."""
    chroma = metrics.bar_chroma(s)
    centroids = metrics.tonal_centroid(chroma[chroma.sum(axis=1) > 0])
    if len(centroids) < 2:
        return float("nan")
    return float(np.linalg.norm(np.diff(centroids, axis=0), axis=1).mean())


def _window_bars(s: NoteStream) -> int:
    return max(1, min(MOOD_WINDOW_BARS, s.bars // 2))


PER_SAMPLE: dict[str, Callable[[NoteStream], float]] = {
    "in_scale_rate": metrics.in_scale_rate,
    "average_pitch_interval": metrics.average_pitch_interval,
    "empty_beat_ratio": metrics.empty_beat_ratio,
    "polyphony": metrics.polyphony,
    "pitch_classes_per_bar": metrics.pitch_classes_per_bar,
    "tonal_motion": tonal_motion,
    "key_steadiness": key_steadiness,
    "density_variation": density_variation,
}


def per_sample(items: Sequence[NoteStream]) -> dict[str, np.ndarray]:
    """Every value the chart reads, per sample (samples without notes give NaN where undefined)."""
    return {name: np.array([f(s) for s in items], dtype=float) for name, f in PER_SAMPLE.items()}


def _pct(values: np.ndarray, q: float) -> float:
    finite = values[np.isfinite(values)]
    return float(np.percentile(finite, q)) if finite.size else float("nan")


def _median(values: np.ndarray) -> float:
    return _pct(values, 50)


# ---- the chart -----------------------------------------------------------------------


def judge(
    values: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    comparisons: Mapping[str, Comparison],
    reference_self: Mapping[str, np.ndarray],
) -> dict[str, Criterion]:
    """The four criteria for one set, from per-sample values, MGEval and the reference's values."""

    def within(name: str, label: str) -> Check:
        return Check(label, _median(values[name]), _pct(reference[name], 5), _pct(reference[name], 95))

    def at_least(name: str, label: str) -> Check:
        return Check(label, _median(values[name]), _pct(reference[name], 10), None)

    def at_most(name: str, label: str, q: float) -> Check:
        return Check(label, _median(values[name]), None, _pct(reference[name], q))

    def overlap(feature: str, label: str) -> Check:
        return Check(label, comparisons[feature].overlap, _pct(reference_self[feature], 10), None)

    def criterion(*checks: Check) -> Criterion:
        return Criterion(all(c.passed for c in checks), checks)

    if _median(values["polyphony"]) <= POLYPHONY_FOR_HARMONY:
        harmony = Criterion(None, (Check("median polyphony", _median(values["polyphony"]), None, None),))
    else:
        harmony = criterion(
            within("pitch_classes_per_bar", "median pitch classes per bar"),
            within("tonal_motion", "median bar-to-bar tonal-centroid distance"),
        )
    return {
        "melody": criterion(
            at_least("in_scale_rate", "median in-scale rate"),
            within("average_pitch_interval", "median mean |interval| (semitones)"),
        ),
        "rhythm": criterion(
            overlap("ioi_histogram", "IOI-histogram overlap"),
            at_most("empty_beat_ratio", "median empty-beat ratio", 95),
        ),
        "harmony": harmony,
        "uniform mood": criterion(
            at_least("key_steadiness", "median lowest in-key share of a window"),
            at_most("density_variation", "median variation of notes per window", 90),
        ),
    }


def evaluate_chart(
    systems: Mapping[str, Sequence[NoteStream]],
    reference: Sequence[NoteStream],
    comparisons: Mapping[str, Mapping[str, Comparison]],
    reference_self: Mapping[str, np.ndarray],
) -> Chart:
    """The chart for every system (continuations as streams) against the reference streams."""
    ref_values = per_sample(reference)
    return Chart(
        rows={
            key: judge(per_sample(items), ref_values, comparisons[key], reference_self)
            for key, items in systems.items()
        }
    )
