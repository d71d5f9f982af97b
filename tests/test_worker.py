"""Inference in a supervised child process: kills, hangs and slow models never stop the music's time.

The real Engine, Scheduler and MIDI clock output run on the machine's clock into memory
outputs while a planner runs in a worker process (tests/worker_planners.py); the
worker is killed (SIGKILL) or stopped (SIGSTOP) mid-phrase.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Callable

import pytest

from livegen.engine.clock import InternalClock
from livegen.engine.clockout import ClockMaster
from livegen.engine.scheduler import Scheduler
from livegen.engine.session import MODEL_TRACK, PERFORMER_TRACK, Engine
from livegen.engine.worker import PlannerWorker, WorkerFailed
from livegen.io.base import MemoryOutput
from livegen.io.recorder import MidiRecorder
from livegen.models.step import StepEvent
from livegen.music.time import TempoMap
from tests import worker_planners

pytestmark = pytest.mark.slow

BPM = 120
GRID_STEP_S = 60 / BPM / 4  # a sixteenth


class Rig:
    """An engine on the internal clock, its planner in a worker; model and clock outputs in memory."""

    def __init__(self, build: Callable[..., object], **worker: float) -> None:
        self.clock = InternalClock(TempoMap.constant(BPM))
        self.out = MemoryOutput()
        self.clock_port = MemoryOutput()
        self.scheduler = Scheduler([[self.out], [], [self.clock_port]], tick_of=self.clock.ns_to_tick)
        self.worker = PlannerWorker(build, **worker)  # type: ignore[arg-type]
        self.worker.start()
        self.engine = Engine(
            self.worker,
            self.clock,
            self.scheduler,
            MidiRecorder((PERFORMER_TRACK, MODEL_TRACK)),
            clock_out=ClockMaster(),
        )
        self.scheduler.start()

    def run(self, seconds: float, until: Callable[[], bool] = lambda: False) -> None:
        end = time.monotonic() + seconds
        self.engine.run(lambda: time.monotonic() > end or until())

    def close(self) -> None:
        self.engine.finish()
        self.worker.close()

    def sounding_at(self, t_ns: int) -> set[tuple[int, int]]:
        """(channel, pitch) sounding on the model output just before ``t_ns``."""
        held: dict[tuple[int, int], int] = {}
        for at, m in self.out.messages:
            if at >= t_ns:
                break
            key = (m[0] & 0x0F, m[1])
            if m[0] & 0xF0 == 0x90 and m[2] > 0:
                held[key] = held.get(key, 0) + 1
            elif m[0] & 0xF0 == 0x80 or m[0] & 0xF0 == 0x90:
                held[key] = held.get(key, 0) - 1
        return {k for k, n in held.items() if n > 0}

    def offs_after(self, t_ns: int) -> dict[tuple[int, int], int]:
        """The first note-off time after ``t_ns`` of each (channel, pitch)."""
        first: dict[tuple[int, int], int] = {}
        for at, m in self.out.messages:
            if at >= t_ns and (m[0] & 0xF0 == 0x80 or (m[0] & 0xF0 == 0x90 and m[2] == 0)):
                first.setdefault((m[0] & 0x0F, m[1]), at)
        return first

    def ons_after(self, t_ns: int) -> list[int]:
        return [at for at, m in self.out.messages if at >= t_ns and m[0] & 0xF0 == 0x90 and m[2] > 0]

    def largest_pulse_gap_s(self) -> float:
        pulses = [at for at, m in self.clock_port.messages if m == (0xF8,)]
        return max(b - a for a, b in itertools.pairwise(pulses)) / 1e9


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_a_killed_or_hung_worker_is_silenced_within_a_grid_step_and_back_within_two_seconds(how):
    rig = Rig(worker_planners.chords)
    try:
        rig.run(2.5)
        pid = rig.worker.pid
        assert pid is not None
        hit_ns = time.perf_counter_ns()
        os.kill(pid, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        rig.run(3.0)
    finally:
        rig.close()
    sounding = rig.sounding_at(hit_ns)
    assert len(sounding) >= 3  # mid-phrase: overlapping whole-bar notes
    offs = rig.offs_after(hit_ns)
    assert set(offs) >= sounding
    assert max(offs[k] - hit_ns for k in sounding) / 1e9 <= GRID_STEP_S
    assert rig.worker.restarts == 1 and (rig.worker.crashes, rig.worker.hangs) == ((1, 0) if how == "kill" else (0, 1))
    assert rig.worker.recovery_s[0] < 2.0
    assert rig.ons_after(hit_ns + int(GRID_STEP_S * 1e9))  # it plays again
    assert rig.largest_pulse_gap_s() < GRID_STEP_S  # the clock never stalled (a pulse is 21 ms)
    assert not rig.sounding_at(time.perf_counter_ns())


def test_a_model_slower_than_the_music_skips_steps_and_the_clock_keeps_time():
    rig = Rig(worker_planners.slow_sixteenths)
    try:
        rig.run(5.0)
    finally:
        rig.close()
    assert rig.engine.late_steps > 0
    # nothing went out late: the notes planned too late (seconds) were skipped
    assert rig.scheduler.stats.max_late_ns / 1e9 < GRID_STEP_S
    assert rig.largest_pulse_gap_s() < GRID_STEP_S
    assert rig.worker.restarts == 0  # slow is not hung: its heartbeat went on
    assert not rig.sounding_at(time.perf_counter_ns())


def test_a_worker_that_keeps_crashing_backs_off_then_gives_up_while_the_clock_goes_on(caplog):
    """Each restart in a row waits twice as long as the one before, and after max_failures in a
    row the worker is not started again: the clock keeps its pulse and the failure is logged
    (restarting at once without end, 55 restarts in 40 s, used to take a core for good)."""
    rig = Rig(worker_planners.crashes, restart_backoff_s=0.4, max_failures=4)
    times: list[tuple[str, float]] = []
    spawn, failed = rig.worker._spawn, rig.worker._failed

    def timed_spawn(seed):  # type: ignore[no-untyped-def]
        times.append(("spawn", time.monotonic()))
        return spawn(seed)

    def timed_failed(why, **kwargs):  # type: ignore[no-untyped-def]
        times.append(("failed", time.monotonic()))
        return failed(why, **kwargs)

    rig.worker._spawn = timed_spawn  # type: ignore[method-assign]
    rig.worker._failed = timed_failed  # type: ignore[method-assign]
    try:
        rig.run(60.0, until=lambda: rig.worker.gave_up)
        rig.run(1.5)  # and after giving up, nothing starts again
    finally:
        rig.close()
    assert rig.worker.gave_up and rig.worker.crashes == 4 and rig.worker.restarts == 3
    assert [kind for kind, _ in times] == ["failed", "spawn"] * 3 + ["failed"]
    waited = [times[i + 1][1] - times[i][1] for i in range(0, 6, 2)]  # from each failure to the next start
    assert waited[1] >= 0.4 and waited[2] >= 0.8, waited  # none is started sooner than its back-off
    assert (
        "starting another in 0.0 s" in caplog.text and "starting another in 0.8 s (failure 3 in a row)" in caplog.text
    )
    assert rig.worker.pid is None
    assert rig.largest_pulse_gap_s() < GRID_STEP_S  # the clock never stalled
    assert "failed 4 times in a row and is not started again" in caplog.text
    assert not rig.sounding_at(time.perf_counter_ns())


def test_a_worker_that_cannot_build_its_planner_raises_the_error():
    worker = PlannerWorker(worker_planners.broken)
    with pytest.raises(WorkerFailed, match="field 'kind'"):
        worker.start()
    assert worker.pid is None


def test_a_restarted_worker_hears_the_recent_performance():
    heard = [StepEvent(70, 0, 480), StepEvent(71, 480, 480)]
    rig = Rig(worker_planners.replays_seed)
    rig.worker.recent = lambda: heard
    try:
        rig.run(1.5)
        pid = rig.worker.pid
        assert pid is not None
        hit_ns = time.perf_counter_ns()
        os.kill(pid, signal.SIGKILL)
        rig.run(3.0)
    finally:
        rig.close()
    assert rig.worker.restarts == 1
    ons = [(at, m[1]) for at, m in rig.out.messages if m[0] & 0xF0 == 0x90 and m[2] > 0]
    before = {pitch for at, pitch in ons if at < hit_ns}
    # what the killed worker committed may still go out until its death is noticed; from the
    # restarted worker's first note on, only what it heard plays
    restarted_at = min(at for at, pitch in ons if at > hit_ns and pitch in (70, 71))
    after = {pitch for at, pitch in ons if at >= restarted_at}
    assert 70 not in before and after == {70, 71}


def test_a_transport_start_reaches_the_planner_in_the_worker_and_it_plays_within_a_beat():
    rig = Rig(worker_planners.accompanies)
    try:
        rig.run(0.3)
        assert not rig.ons_after(0)  # an accompaniment waits for a performer...
        started = time.perf_counter_ns()
        tick = rig.clock.now_tick()
        rig.engine._apply(rig.worker.resume(tick))  # ...unless a DAW's transport starts, as the session says
        rig.run(1.0, until=lambda: bool(rig.ons_after(started)))
    finally:
        rig.close()
    first = rig.ons_after(started)
    assert first and (first[0] - started) / 1e9 <= 60 / BPM + 0.1
