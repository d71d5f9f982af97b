"""Clocks: map musical ticks to wall-clock deadlines and back.

Context: any thread may read a clock (``tick_to_ns`` runs on the scheduler's real-time
thread); only the control thread moves one (:meth:`MidiClockFollower.on_message`,
:meth:`ManualClock.set_ns`, a Link clock's ``poll``).

Wall time is ``time.perf_counter_ns()``. Every clock follows the :class:`Clock`
protocol. :class:`InternalClock` is anchored at the wall time of tick 0 and converts
through a tempo map in integers, so deadlines never drift (each is computed from the
anchor, never chained from the previous one). The :class:`ManualClock` is its
in-memory twin used by tests and offline renders. :class:`MidiClockFollower` follows
an incoming MIDI clock (and ``livegen.engine.link.LinkClock`` an Ableton Link
session); their mapping changes while they run, and ``version`` tells the engine when
to retime what the scheduler holds (:meth:`~livegen.engine.scheduler.Scheduler.retime`).

The MIDI clock follower is written here by hand: no maintained Python package follows
MIDI clock with a jitter-robust tempo estimate (mido and python-rtmidi only deliver the
bytes). How it works:

- *Positions count pulses.* After Start the first clock (0xF8) is tick 0 and each
  further clock adds 20 ticks (24 clocks per quarter at PPQN 480); Continue resumes at
  the current position; Song Position Pointer sets it; Stop freezes it. The position is
  never integrated from the tempo estimate, so it cannot drift.
- *Tempo is a least-squares line* through the arrival times of the last ``window``
  clocks (pulse index against arrival), with one intercept per *segment* (a segment
  ends at Start, Continue and after a lost clock, where the sender may re-phase its
  pulses) and one common slope. Arrival jitter (a JACK period is 2.67 ms at 128 frames
  and 48 kHz) averages out over the window.
- *Tempo changes* show as residuals: when ``change_pulses`` clocks in a row miss the
  line by more than ``max(change_min_ns, 4 x rms residual)`` on the same side, the fit
  restarts from them (and the last clock on the line), so a step change settles within
  about two beats. A single late clock is left out of the fit.
- *Between clocks* ``tick_to_ns(t) = anchor_ns + (t - anchor_tick) * ns_per_tick``, where
  the anchor is the fitted (not the raw, jittery) time of the latest clock. The mapping
  is one immutable :class:`ClockMapping` tuple replaced in a single assignment, so the
  scheduler thread always reads a consistent one.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

from livegen.music.time import PPQN, TempoMap

#: Ticks per MIDI clock pulse (24 pulses per quarter note).
TICKS_PER_PULSE = PPQN // 24
#: Ticks per Song Position Pointer unit (a sixteenth note, 6 pulses).
TICKS_PER_SPP = PPQN // 4

MIDI_CLOCK = 0xF8
MIDI_START = 0xFA
MIDI_CONTINUE = 0xFB
MIDI_STOP = 0xFC
MIDI_SPP = 0xF2


@runtime_checkable
class Clock(Protocol):
    """What the engine and the scheduler need from any clock source.

    ``tick_to_ns`` may be called from any thread; the other members from the control
    thread. ``version`` increases whenever the tick<->ns mapping changes, so the
    engine knows to retime what is already scheduled.
    """

    def now_ns(self) -> int: ...

    def now_tick(self) -> int: ...

    def tick_to_ns(self, tick: int) -> int: ...

    def ns_to_tick(self, ns: int) -> int: ...

    @property
    def running(self) -> bool: ...

    @property
    def tempo_bpm(self) -> float: ...

    @property
    def version(self) -> int: ...

    def poll(self) -> bool:
        """Follow a source that moves on its own (a Link session); True when ``version`` rose. Control
        thread, every few ms; nothing to follow by default."""
        return False

    def close(self) -> None:
        """Let go of what the clock holds (setup); nothing by default."""
        return None


class InternalClock(Clock):
    """The machine's monotonic clock at a fixed tempo map."""

    def __init__(self, tempo: TempoMap, *, start_ns: int | None = None) -> None:
        self.tempo = tempo
        self.start_ns = time.perf_counter_ns() if start_ns is None else start_ns

    @property
    def running(self) -> bool:
        """Always true: the internal clock never stops."""
        return True

    @property
    def tempo_bpm(self) -> float:
        """The tempo at tick 0 (from the tempo map's first change)."""
        return self.tempo.initial_bpm

    @property
    def version(self) -> int:
        """Always 0: the mapping is fixed at construction."""
        return 0

    def now_ns(self) -> int:
        return time.perf_counter_ns()

    def tick_to_ns(self, tick: int) -> int:
        """The wall deadline of ``tick`` (any thread)."""
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


# ---- following an incoming MIDI clock ---------------------------------------------


class ClockMapping(NamedTuple):
    """One immutable tick<->ns mapping: ``ns = anchor_ns + (tick - anchor_tick) * ns_per_tick``."""

    anchor_ns: int
    anchor_tick: int
    ns_per_tick: float
    version: int

    def tick_to_ns(self, tick: int) -> int:
        return self.anchor_ns + round((tick - self.anchor_tick) * self.ns_per_tick)

    def ns_to_tick(self, ns: int) -> int:
        return self.anchor_tick + math.floor((ns - self.anchor_ns) / self.ns_per_tick)


@dataclass(frozen=True, slots=True)
class Transport:
    """A transport event from the clock source: ``kind`` is start, stop, continue or position.

    ``tick`` is the position it concerns: 0 for start, the frozen position for stop,
    where playing resumes for continue, the new position for position (SPP).
    """

    kind: str
    tick: int


def bpm_to_ns_per_tick(bpm: float) -> float:
    return 60e9 / (bpm * PPQN)


class MappedClock(Clock):
    """A clock whose tick <-> wall-time mapping is one immutable :class:`ClockMapping`.

    Its owner replaces ``_mapping`` whole (one attribute store, atomic under the GIL),
    so :meth:`tick_to_ns` is safe on any thread (the scheduler's) while the control
    thread moves the clock. ``version`` is the mapping's.
    """

    _mapping: ClockMapping
    _bpm: float

    # ---- any thread ---------------------------------------------------------------

    @property
    def mapping(self) -> ClockMapping:
        """The current mapping (one immutable tuple; read it once and use it)."""
        return self._mapping

    def tick_to_ns(self, tick: int) -> int:
        """The wall time of ``tick`` on the current mapping (any thread)."""
        return self._mapping.tick_to_ns(tick)

    def ns_to_tick(self, ns: int) -> int:
        """The tick at wall time ``ns`` on the current mapping (any thread)."""
        return self._mapping.ns_to_tick(ns)

    # ---- control thread -----------------------------------------------------------

    @property
    def version(self) -> int:
        return self._mapping.version

    @property
    def tempo_bpm(self) -> float:
        """The tempo as the source last said it (a follower: its estimate)."""
        return self._bpm


class _Fit:
    """Least squares over recent pulses: one common slope, one intercept per segment.

    Context: control thread only (the follower's private state).
    """

    def __init__(self, window: int) -> None:
        self.points: deque[tuple[int, int, int]] = deque(maxlen=window)  # (segment, pulse index, t_ns)

    def clear(self, keep: list[tuple[int, int, int]] | None = None) -> None:
        self.points.clear()
        self.points.extend(keep or ())

    def add(self, segment: int, index: int, t_ns: int) -> None:
        self.points.append((segment, index, t_ns))

    def solve(self, fallback_ns_per_pulse: float) -> tuple[float, dict[int, tuple[float, float]], float]:
        """(ns per pulse, {segment: (mean index, mean t)}, rms residual in ns)."""
        if not self.points:
            return fallback_ns_per_pulse, {}, 0.0
        t_ref = self.points[0][2]
        groups: dict[int, list[tuple[int, int]]] = {}
        for segment, index, t in self.points:
            groups.setdefault(segment, []).append((index, t - t_ref))
        means: dict[int, tuple[float, float]] = {}
        sxx = sxy = 0.0
        for segment, pts in groups.items():
            mi = sum(i for i, _ in pts) / len(pts)
            mt = sum(t for _, t in pts) / len(pts)
            means[segment] = (mi, mt + t_ref)
            for i, t in pts:
                sxx += (i - mi) ** 2
                sxy += (i - mi) * (t - mt)
        slope = sxy / sxx if sxx > 0 else fallback_ns_per_pulse
        if not slope > 0:
            slope = fallback_ns_per_pulse
        dof = len(self.points) - len(groups) - 1
        rms = 0.0
        if dof > 0:
            ss = 0.0
            for segment, pts in groups.items():
                mi, mt = means[segment]
                for i, t in pts:
                    ss += (t + t_ref - (mt + slope * (i - mi))) ** 2
            rms = math.sqrt(ss / dof)
        return slope, means, rms


class MidiClockFollower(MappedClock):
    """A :class:`Clock` that follows incoming MIDI clock (24 pulses per quarter note).

    Context: :meth:`on_message` and every property on the control thread, in arrival
    order; :meth:`tick_to_ns` on any thread (the scheduler's) concurrently.

    ``now_ns`` is the wall clock the arrival timestamps come from (perf_counter_ns).
    ``window`` pulses feed the tempo fit; ``change_pulses`` clocks in a row off the line
    by more than ``max(change_min_ns, 4 x rms residual)`` restart it. The clock is lost
    (``running`` false) after ``lost_beats`` beats without a pulse. ``version``
    increases on every transport event and whenever the mapping moves by more than
    ``retime_tolerance_ns`` at the anchor or one beat after it (0: at every change).
    """

    def __init__(
        self,
        *,
        initial_bpm: float = 120.0,
        now_ns: Callable[[], int] = time.perf_counter_ns,
        window: int = 72,
        change_pulses: int = 3,
        change_min_ns: int = 4_000_000,
        lost_beats: float = 1.0,
        retime_tolerance_ns: int = 1_000_000,
        min_bpm: float = 10.0,
        max_bpm: float = 1000.0,
    ) -> None:
        if not min_bpm <= initial_bpm <= max_bpm:
            raise ValueError(f"initial_bpm {initial_bpm} is outside the accepted {min_bpm}..{max_bpm} BPM")
        if window < 3 or change_pulses < 1:
            raise ValueError(f"window {window} must be at least 3 and change_pulses {change_pulses} at least 1")
        self._now = now_ns
        self._fit = _Fit(window)
        self._change_pulses = change_pulses
        self._change_min_ns = change_min_ns
        self._lost_beats = lost_beats
        self._tolerance = retime_tolerance_ns
        self._min_pulse_ns = 60e9 / (max_bpm * 24)
        self._max_pulse_ns = 60e9 / (min_bpm * 24)
        self._pulse_ns = 60e9 / (initial_bpm * 24)  # the tempo estimate, ns per pulse
        self._pulse_index = 0  # counts every clock received, playing or not
        self._segment = 0
        self._pending: list[tuple[int, int, int]] = []  # clocks off the line, not yet a change
        self._pending_sign = 0
        self._last_arrival: int | None = None
        self._playing = False  # between Start/Continue and Stop
        self._pulsed = False  # a clock has marked a position since Start/Continue
        self._position = 0  # the tick the next clock marks while playing
        self._last_tick = 0  # the tick the latest clock marked
        self.pulses = 0  # clocks received (for reports)
        self.restarts = 0  # tempo-fit restarts (tempo changes seen)
        self._version = 0
        now = now_ns()
        self._mapping = ClockMapping(now, 0, self._pulse_ns / TICKS_PER_PULSE, 0)
        self._reference = self._mapping  # the mapping at the last version bump
        self._bpm = initial_bpm

    # ---- control thread -----------------------------------------------------------

    def now_ns(self) -> int:
        return self._now()

    @property
    def playing(self) -> bool:
        """Whether the transport is started (Start/Continue seen, no Stop since)."""
        return self._playing

    @property
    def lost(self) -> bool:
        """Whether clocks stopped arriving for more than ``lost_beats`` beats."""
        last = self._last_arrival
        return last is None or self._now() - last > self._lost_beats * 24 * self._pulse_ns

    @property
    def running(self) -> bool:
        """Playing, a clock has marked the position, and clocks keep arriving."""
        return self._playing and self._pulsed and not self.lost

    @property
    def position(self) -> int:
        """The tick the next clock marks (where Continue resumes)."""
        return self._position

    def now_tick(self) -> int:
        """The tick now: frozen when stopped, between the latest clock and the next when running.

        It never passes the next clock's tick before that clock arrives, and never
        goes back behind the latest clock's tick.
        """
        if not (self._playing and self._pulsed):
            return self._position
        tick = self._mapping.ns_to_tick(self._now())
        return min(max(tick, self._last_tick), self._last_tick + TICKS_PER_PULSE - 1)

    def on_message(self, data: tuple[int, ...], t_ns: int) -> Transport | None:
        """Consume one incoming message (control thread, arrival order); return its transport event.

        Messages other than clock, Start, Continue, Stop and Song Position Pointer are
        ignored (None).
        """
        if not data:
            return None
        status = data[0]
        if status == MIDI_CLOCK:
            self._on_clock(t_ns)
            return None
        if status == MIDI_START:
            self._playing, self._pulsed, self._position = True, False, 0
            self._segment += 1
            self._publish(self._mapping_until_next_pulse(t_ns, 0), force=True)
            return Transport("start", 0)
        if status == MIDI_CONTINUE:
            self._playing, self._pulsed = True, False
            self._segment += 1
            self._publish(self._mapping_until_next_pulse(t_ns, self._position), force=True)
            return Transport("continue", self._position)
        if status == MIDI_STOP:
            self._playing = False
            m = self._mapping
            # Freeze at the next clock's tick, where Continue resumes (on the same line: no jump).
            self._publish(ClockMapping(m.tick_to_ns(self._position), self._position, m.ns_per_tick, 0), force=True)
            return Transport("stop", self._position)
        if status == MIDI_SPP and len(data) >= 3:
            self._position = ((data[2] & 0x7F) << 7 | (data[1] & 0x7F)) * TICKS_PER_SPP
            self._pulsed = False if self._playing else self._pulsed
            m = self._mapping
            self._publish(ClockMapping(m.anchor_ns, self._position, m.ns_per_tick, 0), force=True)
            return Transport("position", self._position)
        return None

    def _mapping_until_next_pulse(self, t_ns: int, tick: int) -> ClockMapping:
        """Before the first clock after Start/Continue: ``tick`` one pulse after ``t_ns``."""
        return ClockMapping(t_ns + round(self._pulse_ns), tick, self._pulse_ns / TICKS_PER_PULSE, 0)

    def _on_clock(self, t_ns: int) -> None:
        self.pulses += 1
        last = self._last_arrival
        if last is not None and t_ns - last > self._lost_beats * 24 * self._pulse_ns:
            self._segment += 1  # clocks came back after a loss: the sender may have re-phased
            self._pending.clear()
        self._last_arrival = t_ns
        self._pulse_index += 1
        index = self._pulse_index
        anchor = self._fold(index, t_ns)
        if not self._playing:
            return
        tick = self._position
        self._last_tick = tick
        self._position = tick + TICKS_PER_PULSE
        self._pulsed = True
        self._publish(ClockMapping(anchor, tick, self._pulse_ns / TICKS_PER_PULSE, 0))

    def _fold(self, index: int, t_ns: int) -> int:
        """Add one clock to the tempo fit; return the time to anchor it at."""
        fit = self._fit
        segment = self._segment
        slope, means, rms = fit.solve(self._pulse_ns)
        if segment in means:
            mi, mt = means[segment]
            predicted = mt + slope * (index - mi)
            residual = t_ns - predicted
            threshold = max(self._change_min_ns, 4.0 * rms)
            if abs(residual) > threshold:
                sign = 1 if residual > 0 else -1
                if self._pending and sign != self._pending_sign:
                    self._pending.clear()
                self._pending_sign = sign
                self._pending.append((segment, index, t_ns))
                if len(self._pending) < self._change_pulses:
                    return t_ns  # off the line: kept out of the fit, anchored where it came
                # A tempo change: restart from the last clock on the line and the new ones.
                on_line = [p for p in fit.points if p[0] == segment][-1:]
                fit.clear(on_line + self._pending)
                self._pending.clear()
                self.restarts += 1
            else:
                self._pending.clear()
                fit.add(segment, index, t_ns)
        else:
            self._pending.clear()
            fit.add(segment, index, t_ns)
        slope, means, _ = fit.solve(self._pulse_ns)
        slope = min(max(slope, self._min_pulse_ns), self._max_pulse_ns)
        self._pulse_ns = slope
        self._bpm = 60e9 / (slope * 24)
        mi, mt = means[segment]
        return round(mt + slope * (index - mi))

    def _publish(self, new: ClockMapping, *, force: bool = False) -> None:
        ref = self._reference
        moved = force or self._tolerance <= 0
        if not moved:
            for tick in (new.anchor_tick, new.anchor_tick + PPQN):
                if abs(new.tick_to_ns(tick) - ref.tick_to_ns(tick)) > self._tolerance:
                    moved = True
                    break
        version = self._mapping.version + 1 if moved else self._mapping.version
        mapping = new._replace(version=version)
        self._mapping = mapping  # one assignment: readers see the old tuple or the new one
        if moved:
            self._reference = mapping
