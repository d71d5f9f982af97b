"""Following MIDI clock on a real JACK server: a peer process sends clock, livegen's real input follows.

The peer (``tests/jackutil.py clock``) sends on an absolute grid and reports the time
just before it handed each message to JACK; livegen's JACK input (the reader thread
polls every 1 ms) timestamps arrivals and feeds a :class:`MidiClockFollower`. Arrival
jitter here is real: the sender's wake-ups, one or two JACK periods (2.67 ms at 128
frames and 48 kHz) and the 1 ms poll. The measured errors are printed (``-s``).
"""

from __future__ import annotations

import json
import statistics
import threading

import pytest

from livegen.engine.clock import ClockMapping, MidiClockFollower, Transport
from livegen.io.midi_input import open_input
from tests.jackutil import Peer

pytestmark = [pytest.mark.jack, pytest.mark.slow]

SLOW, FAST = 240, 336  # pulses: 10 beats at 100 BPM, then 14 beats at 140 BPM
AGAIN = 96  # pulses after Continue, at 140 BPM
PLAN = [
    "start",
    {"pulses": SLOW, "bpm": 100},
    {"pulses": FAST, "bpm": 140},
    "stop",
    {"wait": 0.3},
    {"spp": 64},  # 64 sixteenths = tick 7680
    "continue",
    {"pulses": AGAIN, "bpm": 140},
    "stop",
]


def ms(ns: float) -> float:
    return ns / 1e6


def test_follows_tempo_and_position_of_a_jack_midi_clock(jack_server):
    follower = MidiClockFollower()
    lock = threading.Lock()
    received: list[tuple[tuple[int, ...], int]] = []
    clocks: list[tuple[int, ClockMapping, ClockMapping, float]] = []  # (t_ns, before, after, bpm)
    transports: list[Transport | None] = []

    def on_midi(data: tuple[int, ...], t_ns: int) -> None:
        # The input's reader thread: the test's only caller of the follower (its "control thread").
        with lock:
            received.append((data, t_ns))
            before = follower.mapping
            event = follower.on_message(data, t_ns)
            if data[0] == 0xF8:
                clocks.append((t_ns, before, follower.mapping, follower.tempo_bpm))
            else:
                transports.append(event)

    port = open_input("clockin", api="jack", virtual=True, ignore_clock=False, callback=on_midi)
    peer = Peer("clock", "--name", "clkpeer", "--dest", "clockin", "--plan", json.dumps(PLAN), "--timeout", "20")
    try:
        assert peer.expect("ready", timeout=30)["dest"] == "clockin:clockin"
        peer.tell("go")
        sent = peer.expect("done", timeout=60)["sent"]
    finally:
        peer.stop()
        port.close()

    # Nothing lost, nothing reordered.
    assert [tuple(s[1:]) for s in sent] == [data for data, _ in received]
    sent_clocks = [s[0] for s in sent if s[1] == 0xF8]
    assert len(clocks) == len(sent_clocks) == SLOW + FAST + AGAIN
    stop_tick = 20 * (SLOW + FAST)
    assert transports == [
        Transport("start", 0),
        Transport("stop", stop_tick),
        Transport("position", 7680),
        Transport("continue", 7680),
        Transport("stop", 7680 + 20 * AGAIN),
    ]

    # Positions count pulses: exact, with no drift.
    expected_ticks = [20 * k for k in range(SLOW + FAST)] + [7680 + 20 * k for k in range(AGAIN)]
    assert [after.anchor_tick for _, _, after, _ in clocks] == expected_ticks

    # Tempo, two beats (48 pulses) after the start and after the change.
    slow_err = [abs(bpm - 100) for *_, bpm in clocks[48:SLOW]]
    fast_err = [abs(bpm - 140) for *_, bpm in clocks[SLOW + 48 : SLOW + FAST]]
    settle = next(k for k in range(SLOW, SLOW + FAST) if all(abs(c[3] - 140) < 0.5 for c in clocks[k : SLOW + FAST]))

    # Position in time: the fitted time of each pulse against when the peer sent it.
    latency = [after.anchor_ns - s for (_, _, after, _), s in zip(clocks, sent_clocks, strict=True)]
    settled = [*range(48, SLOW), *range(SLOW + 48, SLOW + FAST)]
    median_latency = statistics.median(latency[k] for k in settled)
    fit_err = [abs(latency[k] - median_latency) for k in settled]
    raw_err = [abs(clocks[k][0] - sent_clocks[k] - median_latency) for k in settled]
    # Where the mapping before each pulse put that pulse (what a note scheduled then would hit).
    predicted = [
        abs(clocks[k][1].tick_to_ns(clocks[k][2].anchor_tick) - sent_clocks[k] - median_latency) for k in settled
    ]
    first = statistics.median(latency[k] for k in range(48, 148))
    last = statistics.median(latency[k] for k in range(SLOW + FAST - 100, SLOW + FAST))
    print(
        f"\nMIDI clock over JACK: tempo error at 100 BPM p50 {statistics.median(slow_err):.3f} "
        f"max {max(slow_err):.3f} BPM; at 140 BPM p50 {statistics.median(fast_err):.3f} max {max(fast_err):.3f} BPM; "
        f"within 0.5 BPM of 140 from {settle - SLOW} pulses after the change; fit restarts {follower.restarts}\n"
        f"  pulse time (fitted) vs sent, less the median latency {ms(median_latency):.2f} ms: "
        f"p50 {ms(statistics.median(fit_err)):.2f} max {ms(max(fit_err)):.2f} ms "
        f"(raw arrivals p50 {ms(statistics.median(raw_err)):.2f} max {ms(max(raw_err)):.2f} ms; "
        f"predicted one pulse ahead p50 {ms(statistics.median(predicted)):.2f} max {ms(max(predicted)):.2f} ms); "
        f"latency first 100 {ms(first):.2f} ms, last 100 {ms(last):.2f} ms"
    )
    assert max(slow_err) < 0.5
    assert max(fast_err) < 0.5
    assert abs(last - first) < 1_000_000  # drift-free: no growing offset over 24 beats and a tempo change
