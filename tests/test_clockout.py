"""The clock master: exact pulse, transport and song position bytes by tick."""

from __future__ import annotations

import pytest

from livegen.engine.clock import MidiClockFollower
from livegen.engine.clockout import ClockMaster, song_position

CLOCK = (0xF8,)


def test_start_at_zero_sends_song_position_and_start_then_the_pulse_at_zero():
    master = ClockMaster()
    assert master.start(0) == [(0, (0xF2, 0, 0)), (0, (0xFA,))]
    assert master.advance(0, lookahead_ticks=0) == [(0, CLOCK)]
    assert master.advance(0, lookahead_ticks=0) == []  # never the same pulse twice
    assert master.advance(10, lookahead_ticks=50) == [(20, CLOCK), (40, CLOCK), (60, CLOCK)]
    assert master.advance(15, lookahead_ticks=50) == []  # 65: nothing new until 80
    assert master.advance(30, lookahead_ticks=50) == [(80, CLOCK)]


def test_default_lookahead_is_one_beat():
    master = ClockMaster()
    master.start(0)
    pulses = master.advance(0)
    assert [t for t, _ in pulses] == list(range(0, 481, 20))  # 25 pulses: 0 to 480 inclusive


def test_exactly_24_pulses_per_beat_over_a_long_span_with_irregular_steps():
    master = ClockMaster()
    master.start(0)
    ticks: list[int] = []
    now = 0
    step = 1
    while now < 480 * 1000:
        ticks += [t for t, data in master.advance(now, lookahead_ticks=240) if data == CLOCK]
        now += step
        step = step * 7 % 97 + 1  # 1..97 ticks, irregular
    ticks += [t for t, _ in master.advance(480 * 1000, lookahead_ticks=240)]
    assert ticks == list(range(0, 480 * 1000 + 241, 20))
    assert len([t for t in ticks if t < 480 * 1000]) == 24 * 1000


def test_stop_then_continue_from_a_song_position():
    master = ClockMaster()
    master.start(0)
    master.advance(100, lookahead_ticks=0)  # 0..100
    assert master.stop(110) == [(110, (0xFC,))]
    assert master.advance(1000) == []
    # Resume at bar 3 of 4/4 (tick 3840 = 32 sixteenths): SPP 32 = LSB 32, MSB 0.
    assert master.continue_(3840) == [(3840, (0xF2, 32, 0)), (3840, (0xFB,))]
    assert master.advance(3840, lookahead_ticks=40) == [(3840, CLOCK), (3860, CLOCK), (3880, CLOCK)]


def test_start_from_a_later_tick_is_song_position_and_continue():
    master = ClockMaster()
    # 200 sixteenths = 24000 ticks: LSB 200 & 127 = 72, MSB 200 >> 7 = 1.
    assert master.start(24000) == [(24000, (0xF2, 72, 1)), (24000, (0xFB,))]
    assert master.next_pulse_tick == 24000


def test_song_position_accepts_only_whole_sixteenths_in_14_bits():
    assert song_position(16383 * 120) == (0xF2, 127, 127)
    with pytest.raises(ValueError, match="tick 130 is not a whole sixteenth"):
        song_position(130)
    with pytest.raises(ValueError, match="past the last Song Position Pointer"):
        song_position(16384 * 120)
    with pytest.raises(ValueError, match="tick -120"):
        ClockMaster().start(-120)


def test_a_follower_reads_back_what_the_master_sends():
    """The master's bytes, fed at their ticks' times at 120 BPM, put the follower on the same ticks."""
    master = ClockMaster()
    follower = MidiClockFollower(now_ns=lambda: 0)
    events = master.start(0) + master.advance(0, lookahead_ticks=960)
    events += master.stop(970) + master.continue_(1920) + master.advance(1920, lookahead_ticks=100)
    marked = []
    for tick, data in events:
        t_ns = 10**9 + tick * 1_041_667
        follower.on_message(data, t_ns)
        if data == CLOCK:
            marked.append(follower.mapping.anchor_tick)
    assert marked == [t for t, data in events if data == CLOCK]
