"""Following incoming MIDI clock: tempo under JACK-like jitter, exact positions, transport, loss.

Pulse trains are synthetic: ideal pulse times on a tempo, each delivered at the start of
the next 2.67 ms JACK period (128 frames at 48 kHz, a random period phase) plus up to
1 ms of input polling, from a seeded rng.
"""

from __future__ import annotations

import random
import re
import statistics

import pytest

from livegen.engine.clock import Clock, InternalClock, ManualClock, MidiClockFollower, Transport
from livegen.music.time import TempoMap

PERIOD_NS = 128 * 1_000_000_000 // 48000  # 2_666_666
CLOCK, START, CONTINUE, STOP = (0xF8,), (0xFA,), (0xFB,), (0xFC,)


def pulse_train(segments, *, seed, t0=1_000_000_000, poll_ns=1_000_000):
    """(ideal, arrival) ns per pulse for ``segments`` of (pulse count, BPM), back to back."""
    rng = random.Random(seed)
    phase = rng.randrange(PERIOD_NS)
    out = []
    start = t0
    for count, bpm in segments:
        interval = 60e9 / (bpm * 24)
        for k in range(count):
            ideal = round(start + k * interval)
            period_start = -(-(ideal - phase) // PERIOD_NS) * PERIOD_NS + phase
            out.append((ideal, period_start + rng.randrange(poll_ns)))
        start = round(start + count * interval)
    return out


class Wall:
    def __init__(self, ns: int = 0) -> None:
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


def follow(pulses, *, start=True):
    """A follower fed ``pulses`` (after Start), and its tempo estimate after each pulse."""
    wall = Wall(pulses[0][1] - 10_000_000)
    follower = MidiClockFollower(now_ns=wall)
    if start:
        follower.on_message(START, wall.ns)
    estimates = []
    for _, arrival in pulses:
        wall.ns = arrival
        follower.on_message(CLOCK, arrival)
        estimates.append(follower.tempo_bpm)
    return follower, estimates, wall


def test_every_clock_has_the_protocol():
    tempo = TempoMap.constant(90)
    for clock in (InternalClock(tempo), ManualClock(tempo), MidiClockFollower()):
        assert isinstance(clock, Clock)
    internal = ManualClock(tempo, start_ns=5)
    assert (internal.running, internal.version, internal.start_ns) == (True, 0, 5)
    assert internal.tempo_bpm == pytest.approx(90, abs=1e-4)  # 666_667 us per beat


@pytest.mark.parametrize("seed", range(5))
def test_steady_100_bpm_settles_within_half_a_bpm(seed):
    _, estimates, _ = follow(pulse_train([(2400, 100)], seed=seed))
    errors = [abs(e - 100) for e in estimates[48:]]  # after two beats
    print(f"seed {seed}: 100 BPM error p50 {statistics.median(errors):.4f} max {max(errors):.4f} BPM")
    assert max(errors) < 0.5


@pytest.mark.parametrize("seed", range(5))
def test_step_from_100_to_140_bpm_settles_within_two_beats(seed):
    follower, estimates, _ = follow(pulse_train([(480, 100), (960, 140)], seed=seed))
    assert all(abs(e - 100) < 0.5 for e in estimates[48:480])
    after = [abs(e - 140) for e in estimates[480 + 48 :]]  # two beats after the change
    print(f"seed {seed}: 140 BPM error p50 {statistics.median(after):.4f} max {max(after):.4f} BPM")
    assert max(after) < 0.5
    assert follower.restarts >= 1


def test_positions_are_exact_and_the_mapping_does_not_drift_after_thousands_of_pulses():
    pulses = pulse_train([(6000, 123)], seed=7)  # 250 beats
    wall = Wall(pulses[0][1] - 10_000_000)
    follower = MidiClockFollower(now_ns=wall)
    follower.on_message(START, wall.ns)
    mean_latency = PERIOD_NS // 2 + 500_000  # of the synthetic delivery: half a period, half a poll
    errors = []
    for k, (ideal, arrival) in enumerate(pulses):
        wall.ns = arrival
        follower.on_message(CLOCK, arrival)
        mapping = follower.mapping
        assert mapping.anchor_tick == 20 * k  # pulses counted, never the tempo integrated
        assert 20 * k <= follower.now_tick() < 20 * k + 20
        if k >= 48:
            errors.append(mapping.tick_to_ns(20 * k) - ideal - mean_latency)
    assert follower.position == 20 * 6000
    # The fitted line stays on the ideal grid (to within the jitter), at the end as at the start.
    assert max(abs(e) for e in errors) < 1_500_000
    assert abs(statistics.mean(errors[-500:]) - statistics.mean(errors[:500])) < 300_000


def test_mapping_between_pulses_on_an_exact_120_bpm_clock():
    wall = Wall(0)
    follower = MidiClockFollower(now_ns=wall, initial_bpm=90)
    assert follower.on_message(START, 0) == Transport("start", 0)
    assert not follower.running  # no pulse yet
    for k in range(10):
        wall.ns = 1_000_000_000 + k * 20_833_333  # 120 BPM: 500 ms / 24 = 20.833 ms
        follower.on_message(CLOCK, wall.ns)
    assert follower.running
    assert follower.tempo_bpm == pytest.approx(120, abs=0.001)
    m = follower.mapping
    assert (m.anchor_tick, m.anchor_ns) == (180, pytest.approx(1_187_499_997, abs=2))
    # Half a beat on from the last pulse: 240 ticks at 1_041_666.65 ns per tick.
    assert follower.tick_to_ns(420) == pytest.approx(1_187_499_997 + 250_000_000, abs=10)
    assert follower.ns_to_tick(follower.tick_to_ns(420)) in (419, 420)
    wall.ns += 10_416_667  # half a pulse after the last: tick 190
    assert follower.now_tick() == 190
    wall.ns += 40_000_000  # past where the next pulse is due: held before it until it comes
    assert follower.now_tick() == 199


def test_start_stop_song_position_continue():
    wall = Wall(0)
    follower = MidiClockFollower(now_ns=wall)

    def clocks(n):
        for _ in range(n):
            wall.ns += 20_833_333
            assert follower.on_message(CLOCK, wall.ns) is None

    assert follower.on_message(START, wall.ns) == Transport("start", 0)
    clocks(1)
    assert follower.now_tick() == 0 and follower.running  # the first clock after Start is tick 0
    clocks(3)
    assert follower.mapping.anchor_tick == 60
    assert follower.on_message(STOP, wall.ns) == Transport("stop", 80)  # the next clock's tick
    assert not follower.running
    clocks(48)  # clocks while stopped: tempo still followed, position frozen
    assert follower.now_tick() == 80 and follower.position == 80
    # SPP value 16 + 128 * 1 = 144 sixteenths = 17280 ticks, LSB first.
    assert follower.on_message((0xF2, 16, 1), wall.ns) == Transport("position", 17280)
    assert follower.now_tick() == 17280 and not follower.running
    assert follower.on_message(CONTINUE, wall.ns) == Transport("continue", 17280)
    assert not follower.running  # until the next clock marks the position
    clocks(1)
    assert follower.running and follower.now_tick() == 17280
    clocks(2)
    assert follower.mapping.anchor_tick == 17320
    assert follower.on_message(STOP, wall.ns) == Transport("stop", 17340)
    assert follower.on_message(START, wall.ns) == Transport("start", 0)
    clocks(1)
    assert follower.now_tick() == 0
    assert follower.on_message((0x90, 60, 100), wall.ns) is None  # not clock: ignored


def test_tempo_is_followed_while_stopped():
    pulses = pulse_train([(240, 90)], seed=3)
    follower, estimates, _ = follow(pulses, start=False)
    assert not follower.running and follower.now_tick() == 0
    assert abs(estimates[-1] - 90) < 0.5


def test_version_bumps_on_transport_and_tempo_changes_not_on_steady_pulses():
    pulses = pulse_train([(480, 100), (480, 140)], seed=11)
    wall = Wall(pulses[0][1] - 10_000_000)
    follower = MidiClockFollower(now_ns=wall)
    assert follower.version == 0
    follower.on_message(START, wall.ns)
    assert follower.version == 1
    versions = []
    for _, arrival in pulses:
        wall.ns = arrival
        follower.on_message(CLOCK, arrival)
        versions.append(follower.version)
    # Steady: a bump only when the old line has drifted 1 ms from the fit, seldom.
    assert versions[479] - versions[96] <= 2
    assert versions[480 + 48] >= versions[479] + 3  # the step moved it, pulse by pulse
    assert versions[-1] - versions[600] <= 2


def test_a_lost_clock_stops_running_until_pulses_return():
    wall = Wall(0)
    follower = MidiClockFollower(now_ns=wall)
    follower.on_message(START, 0)
    for _ in range(48):
        wall.ns += 20_833_333  # 120 BPM: a beat is 500 ms
        follower.on_message(CLOCK, wall.ns)
    assert follower.running and follower.mapping.anchor_tick == 940
    wall.ns += 400_000_000
    assert follower.running  # less than a beat without a pulse
    wall.ns += 200_000_000
    assert not follower.running and follower.lost  # more than a beat: lost
    assert follower.now_tick() == 959  # held before the next pulse's tick
    follower.on_message(CLOCK, wall.ns)  # pulses return: the count goes on
    assert follower.running and follower.now_tick() == 960
    assert follower.tempo_bpm == pytest.approx(120, abs=0.01)  # the gap is not read as a tempo


def test_rejects_an_impossible_initial_tempo():
    with pytest.raises(ValueError, match=re.escape("initial_bpm 0 is outside the accepted 10.0..1000.0 BPM")):
        MidiClockFollower(initial_bpm=0)
