"""Clocks: map musical ticks to wall-clock deadlines and back.

Context: any thread may read a clock; only setup code starts or moves one.

Wall time is ``time.perf_counter_ns()``. A clock is anchored at the wall time of
tick 0 and converts through a tempo map in integers, so deadlines never drift
(each is computed from the anchor, never chained from the previous one). The
:class:`ManualClock` is the in-memory twin used by tests and offline renders.
"""

from __future__ import annotations

import time

from livegen.music.time import TempoMap


class InternalClock:
    """The machine's monotonic clock at a fixed tempo map."""

    def __init__(self, tempo: TempoMap, *, start_ns: int | None = None) -> None:
        self.tempo = tempo
        self.start_ns = time.perf_counter_ns() if start_ns is None else start_ns

    def now_ns(self) -> int:
        return time.perf_counter_ns()

    def tick_to_ns(self, tick: int) -> int:
        """The wall deadline of ``tick``."""
        return self.start_ns + self.tempo.tick_to_ns(tick)

    def ns_to_tick(self, ns: int) -> int:
        """The tick sounding at wall time ``ns`` (negative before the start)."""
        offset = ns - self.start_ns
        if offset < 0:
            return -self.tempo.ns_to_tick(-offset)
        return self.tempo.ns_to_tick(offset)

    def now_tick(self) -> int:
        return self.ns_to_tick(self.now_ns())


class ManualClock(InternalClock):
    """A clock whose "now" moves only when told (tests and offline renders)."""

    def __init__(self, tempo: TempoMap, *, start_ns: int = 0) -> None:
        super().__init__(tempo, start_ns=start_ns)
        self._now = start_ns

    def now_ns(self) -> int:
        return self._now

    def set_ns(self, ns: int) -> None:
        if ns < self._now:
            raise ValueError("a manual clock never moves backwards")
        self._now = ns

    def set_tick(self, tick: int) -> None:
        self.set_ns(self.tick_to_ns(tick))
