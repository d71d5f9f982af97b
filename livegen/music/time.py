"""Musical time: integer ticks at a fixed resolution on a tempo map.

Context: any (pure values). Positions on the grid are integers, never floats.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

#: Ticks per quarter note everywhere inside livegen (files are rescaled on reading).
PPQN = 480
#: One sixteenth note, the default grid of the step models.
SIXTEENTH = PPQN // 4


def bpm_to_us_per_beat(bpm: float) -> int:
    return round(60_000_000 / bpm)


@dataclass(frozen=True, slots=True)
class TempoMap:
    """Tempo changes as (tick, microseconds per quarter note), sorted by tick.

    The first change is always at tick 0. Conversions are exact in integer
    nanoseconds up to rounding at the final step.
    """

    changes: tuple[tuple[int, int], ...] = ((0, 500_000),)

    def __post_init__(self) -> None:
        if not self.changes or self.changes[0][0] != 0:
            raise ValueError("a tempo map starts with a change at tick 0")
        ticks = [t for t, _ in self.changes]
        if ticks != sorted(ticks) or any(us <= 0 for _, us in self.changes):
            raise ValueError("tempo changes must be sorted by tick with positive tempi")

    @classmethod
    def constant(cls, bpm: float) -> TempoMap:
        return cls(((0, bpm_to_us_per_beat(bpm)),))

    @property
    def initial_bpm(self) -> float:
        return 60_000_000 / self.changes[0][1]

    def _segment_starts_ns(self) -> list[int]:
        starts = [0]
        for (t0, us), (t1, _) in zip(self.changes, self.changes[1:], strict=False):
            starts.append(starts[-1] + -(-(t1 - t0) * us * 1000 // PPQN))
        return starts

    def tick_to_ns(self, tick: int) -> int:
        """Nanoseconds from tick 0 to ``tick``, rounded up, so that ``ns_to_tick`` gives ``tick`` back."""
        i = max(0, bisect.bisect_right([t for t, _ in self.changes], tick) - 1)
        t0, us = self.changes[i]
        return self._segment_starts_ns()[i] + -(-(tick - t0) * us * 1000 // PPQN)

    def ns_to_tick(self, ns: int) -> int:
        """The tick sounding ``ns`` nanoseconds after tick 0 (rounded down)."""
        starts = self._segment_starts_ns()
        i = bisect.bisect_right(starts, ns) - 1
        t0, us = self.changes[max(i, 0)]
        return t0 + (ns - starts[max(i, 0)]) * PPQN // (us * 1000)


def beats_to_ticks(beats: float) -> int:
    return round(beats * PPQN)


def quantize(tick: int, grid: int) -> int:
    """Round ``tick`` to the nearest multiple of ``grid`` (grid <= 1: unchanged)."""
    if grid <= 1:
        return tick
    return ((tick + grid // 2) // grid) * grid


def ceil_to_grid(tick: int, grid: int) -> int:
    if grid <= 1:
        return tick
    return -(-tick // grid) * grid
