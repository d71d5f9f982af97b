"""The scheduler on a manual clock and in-memory outputs: exact sends, withdrawal, stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from livegen.engine.clock import InternalClock, ManualClock
from livegen.engine.scheduler import Scheduled, Scheduler
from livegen.io.base import MemoryOutput
from livegen.music.time import TempoMap

TEMPO = TempoMap.constant(120)  # 480 ticks = 500 ms


def make():
    clock = ManualClock(TEMPO)
    out = MemoryOutput(clock=clock.now_ns)
    echo = MemoryOutput(clock=clock.now_ns)
    return clock, out, echo, Scheduler([[out], [echo]], tick_of=clock.ns_to_tick, now_ns=clock.now_ns)


def at(clock, tick, data, generation=1, group=0):
    return Scheduled(clock.tick_to_ns(tick), tick, data, group, generation)


def test_sends_each_message_at_its_deadline_in_order():
    clock, out, _, sched = make()
    sched.submit([at(clock, 480, (0x80, 60, 0)), at(clock, 0, (0x90, 60, 100)), at(clock, 480, (0x90, 62, 100))])
    sched.run_until(clock.now_ns())
    assert out.messages == [(0, (0x90, 60, 100))]
    clock.set_tick(479)
    sched.run_until(clock.now_ns())
    assert len(out.messages) == 1
    clock.set_tick(480)
    sched.run_until(clock.now_ns())
    # Same deadline: submission order is kept (the planner already sorts offs before ons).
    assert out.messages[1:] == [(500_000_000, (0x80, 60, 0)), (500_000_000, (0x90, 62, 100))]
    assert sched.stats.sent == 3 and sched.stats.late == 0


def test_withdraw_drops_pending_and_releases_exactly_what_sounds():
    clock, out, _, sched = make()
    sched.submit(
        [
            at(clock, 0, (0x90, 60, 100)),
            at(clock, 960, (0x80, 60, 0)),
            at(clock, 480, (0x90, 64, 100)),
            at(clock, 960, (0x80, 64, 0)),
            at(clock, 0, (0x90, 40, 100), generation=2),
        ]
    )
    clock.set_tick(600)
    sched.run_until(clock.now_ns())
    sched.withdraw(1, 0)
    sched.run_until(clock.now_ns())
    received = out.received()
    assert received[:3] == [(0x90, 60, 100), (0x90, 40, 100), (0x90, 64, 100)]
    # Generation 1's notes are released now; generation 2's note is not touched by name,
    # but the whole group is released since it sounds on the same output group.
    assert sorted(received[3:]) == [(0x80, 40, 0), (0x80, 60, 0), (0x80, 64, 0)]
    clock.set_tick(2000)
    sched.run_until(clock.now_ns())
    assert len(out.received()) == 6  # the withdrawn note-offs never went out
    assert sched.stats.withdrawn == 2


def test_stop_silences_every_group_with_controllers_on_used_channels():
    clock, out, echo, sched = make()
    sched.submit([at(clock, 0, (0x93, 50, 90)), at(clock, 900, (0x83, 50, 0))])
    sched.send_now((0x91, 70, 80), 1)
    sched.run_until(clock.now_ns())
    sched.stop()
    assert out.received() == [(0x93, 50, 90), (0x83, 50, 0), (0xB3, 64, 0), (0xB3, 123, 0), (0xB3, 120, 0)]
    assert echo.received() == [(0x91, 70, 80), (0x81, 70, 0), (0xB1, 64, 0), (0xB1, 123, 0), (0xB1, 120, 0)]
    assert sched.pending == 0


def test_sent_log_carries_ticks_for_the_recorder():
    clock, _, _, sched = make()
    sched.submit([at(clock, 240, (0x90, 60, 100))])
    clock.set_tick(240)
    sched.run_until(clock.now_ns())
    [sent] = sched.drain_sent()
    assert (sent.tick, sent.group, sent.data) == (240, 0, (0x90, 60, 100))


def test_real_thread_sends_on_wall_clock_deadlines():
    """The twin tells the truth: the threaded loop sends the same list, near each deadline."""
    clock = InternalClock(TempoMap.constant(600), start_ns=time.perf_counter_ns() + 50_000_000)
    out = MemoryOutput()
    sched = Scheduler([[out]], tick_of=clock.ns_to_tick)
    sched.start()
    items = [Scheduled(clock.tick_to_ns(t), t, (0x90, 60 + i, 100)) for i, t in enumerate(range(0, 480, 48))]
    sched.submit(items)
    done = threading.Event()
    while not done.wait(0.01):
        if len(out.messages) >= len(items):
            done.set()
    sched.stop()
    sent = out.messages[: len(items)]
    assert [m for _, m in sent] == [i.data for i in items]
    # Never early; lateness is reported, not asserted on time (time is noisy here).
    assert all(t >= i.deadline_ns for (t, _), i in zip(sent, items, strict=True))
    assert sched.stats.sent >= len(items)


def test_retime_moves_pending_deadlines_to_the_new_mapping_and_sends_what_is_due_at_once():
    clock, out, _, sched = make()  # 120 BPM: tick 480 at 500 ms
    sched.submit([at(clock, 480, (0x90, 60, 100)), at(clock, 960, (0x80, 60, 0)), at(clock, 1440, (0x90, 62, 100))])
    clock.set_ns(400_000_000)
    sched.run_until(clock.now_ns())
    assert out.messages == []
    # The followed clock now says 60 BPM with tick 0 at 0 ns minus 300 ms: tick t at
    # t * 1_000_000_000 / 480 - 300 ms. Tick 480 -> 700 ms, 960 -> 1700 ms, 1440 -> 2700 ms.
    sched.retime(lambda tick: tick * 1_000_000_000 // 480 - 300_000_000)
    clock.set_ns(600_000_000)  # past 500 ms, the old deadline of tick 480
    sched.run_until(clock.now_ns())
    assert out.messages == []
    clock.set_ns(700_000_000)
    sched.run_until(clock.now_ns())
    assert out.messages == [(700_000_000, (0x90, 60, 100))]
    # A jump the other way: tick 960 is now due at 650 ms, already past; tick 1440 at 1150 ms.
    sched.retime(lambda tick: tick * 500_000_000 // 480 - 350_000_000)
    sched.run_until(clock.now_ns())
    assert out.messages[1:] == [(700_000_000, (0x80, 60, 0))]
    clock.set_ns(1_150_000_000)
    sched.run_until(clock.now_ns())
    assert out.messages[2:] == [(1_150_000_000, (0x90, 62, 100))]
    assert [s.deadline_ns for s in sched.drain_sent()] == [700_000_000, 650_000_000, 1_150_000_000]


def test_retime_keeps_submission_order_for_equal_ticks():
    clock, out, _, sched = make()
    sched.submit([at(clock, 480, (0x80, 60, 0)), at(clock, 480, (0x90, 62, 100)), at(clock, 480, (0x90, 64, 100))])
    sched.retime(lambda tick: tick * 1_000_000)
    clock.set_ns(480_000_000)
    sched.run_until(clock.now_ns())
    assert out.received() == [(0x80, 60, 0), (0x90, 62, 100), (0x90, 64, 100)]


def test_retime_on_the_real_thread_sends_a_message_made_due():
    clock = InternalClock(TEMPO, start_ns=time.perf_counter_ns())
    out = MemoryOutput()
    sched = Scheduler([[out]], tick_of=clock.ns_to_tick)
    sched.start()
    far = clock.tick_to_ns(480 * 120)  # a minute ahead
    sched.submit([Scheduled(far, 480 * 120, (0x90, 60, 100))])
    now = time.perf_counter_ns()
    sched.retime(lambda tick: now + 20_000_000 + tick - 480 * 120)
    deadline = time.monotonic() + 30
    while not out.messages and time.monotonic() < deadline:
        time.sleep(0.005)
    sched.stop()
    assert out.messages[:1] and out.messages[0][1] == (0x90, 60, 100)
    assert out.messages[0][0] >= now + 20_000_000  # at the new deadline, never early


def _run_on_thread(sched: Scheduler, out: MemoryOutput, until: Callable[[list[tuple[int, ...]]], bool]) -> None:
    sched.start()
    deadline = time.monotonic() + 10
    while not until(out.received()) and time.monotonic() < deadline:
        time.sleep(0.005)
    sched.stop()


def test_after_a_stall_stale_clock_pulses_are_dropped_and_receivers_resume_at_a_sixteenth():
    # The process was stopped: 40 pulses (ticks 0..780) are 1.0-0.2 s overdue; the next
    # ones, from tick 800, are on time. A slave must not race through 40 pulses at once.
    now = time.perf_counter_ns()
    pulse_ns = 20_000_000
    stale = [Scheduled(now - 1_000_000_000 + k * pulse_ns, k * 20, (0xF8,)) for k in range(40)]
    fresh = [Scheduled(now + 100_000_000 + k * pulse_ns, 800 + k * 20, (0xF8,)) for k in range(20)]
    out = MemoryOutput()
    sched = Scheduler([[out]], tick_of=lambda ns: 0)
    sched.submit(stale + fresh)
    _run_on_thread(sched, out, lambda got: got.count((0xF8,)) >= 18)
    got = [m for m in out.received() if m[0] != 0xB0]  # the stop's controller resets aside
    # Stop at once; then nothing until the first pulse on a sixteenth (tick 840, 120 ticks
    # each): Song Position 7 (sixteenths), Continue, and the pulses from there.
    assert got[:4] == [(0xFC,), (0xF2, 7, 0), (0xFB,), (0xF8,)]
    assert set(got[4:]) == {(0xF8,)}
    assert len(got) - 3 == 20 - 2  # ticks 800 and 820 waited for the sixteenth
    assert sched.stats.stale == 40 + 2 and sched.stats.resyncs == 1


def test_a_stale_note_on_is_dropped_with_its_note_off_and_later_notes_play():
    now = time.perf_counter_ns()
    items = [
        Scheduled(now - 500_000_000, 0, (0x90, 60, 100)),  # 0.5 s overdue
        Scheduled(now - 100_000_000, 0, (0x90, 64, 100)),  # 0.1 s late: still played
        Scheduled(now + 50_000_000, 0, (0x80, 60, 0)),
        Scheduled(now + 60_000_000, 0, (0x80, 64, 0)),
        Scheduled(now + 70_000_000, 0, (0x90, 60, 90)),
        Scheduled(now + 80_000_000, 0, (0x80, 60, 0)),
    ]
    out = MemoryOutput()
    sched = Scheduler([[out]], tick_of=lambda ns: 0)
    sched.submit(items)
    _run_on_thread(sched, out, lambda got: len(got) >= 4)
    assert out.received()[:4] == [(0x90, 64, 100), (0x80, 64, 0), (0x90, 60, 90), (0x80, 60, 0)]
    assert sched.stats.stale == 1


def test_offline_driving_drops_nothing_however_far_the_clock_jumps():
    clock, out, _, sched = make()
    sched.submit([at(clock, 0, (0xF8,)), at(clock, 0, (0x90, 60, 100)), at(clock, 480, (0x80, 60, 0))])
    clock.set_tick(4800)  # 5 s on at once
    sched.run_until(clock.now_ns())
    assert out.received() == [(0xF8,), (0x90, 60, 100), (0x80, 60, 0)]
    assert sched.stats.stale == 0


def test_a_withdrawal_after_a_stale_note_on_leaves_no_later_note_of_that_pitch_stuck():
    now = time.perf_counter_ns()
    out = MemoryOutput()
    sched = Scheduler([[out]], tick_of=lambda ns: 0)
    sched.submit([Scheduled(now - 500_000_000, 0, (0x90, 60, 100), generation=1)])  # stale: dropped
    sched.submit([Scheduled(now + 2_000_000_000, 0, (0x80, 60, 0), generation=1)])
    sched.start()
    deadline = time.monotonic() + 5
    while sched.stats.stale < 1 and time.monotonic() < deadline:
        time.sleep(0.002)
    assert sched.stats.stale == 1
    sched.withdraw(1, 0)  # its note-off is withdrawn before it is due
    later = time.perf_counter_ns()
    sched.submit([Scheduled(later + 50_000_000, 0, (0x90, 60, 90), generation=2)])
    sched.submit([Scheduled(later + 100_000_000, 0, (0x80, 60, 0), generation=2)])
    while (0x80, 60, 0) not in out.received() and time.monotonic() < deadline:
        time.sleep(0.005)
    got = out.received()  # before stop(), which releases whatever still sounds
    sched.stop()
    assert got == [(0x90, 60, 90), (0x80, 60, 0)]
