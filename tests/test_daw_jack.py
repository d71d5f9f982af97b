"""livegen in a DAW, end to end on a real JACK server: the ``daw`` preset follows MIDI clock.

A peer process plays the DAW: it sends MIDI clock to livegen's virtual input at 100 BPM
and then 140 BPM, with Start, Stop, Song Position Pointer and Continue, and a few
performed notes; another peer records what livegen sends on its ``livegen`` port. Every
model note must land on the DAW's sixteenth grid as the DAW's own clock defines it
(interpolated between the DAW's send times of its clock pulses). A second test runs
livegen as clock master for a long stretch and counts its clock pulses.
"""

from __future__ import annotations

import itertools
import json
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from livegen.music.midifile import read_midi
from tests.jackutil import JackServer, Peer
from tests.pkgfactory import write_package
from tests.test_jam_jack import collect, sounding_after, start_jam

pytestmark = [pytest.mark.jack, pytest.mark.slow]

TICKS_PER_PULSE = 20
SIXTEENTH_PULSES = 6


def phrase(pitches: list[int], bpm: float) -> list[object]:
    """One performed note per beat (held for half a beat), as plan steps."""
    steps: list[object] = []
    for pitch in pitches:
        steps += [{"on": [pitch, 100]}, {"pulses": 12, "bpm": bpm}, {"off": pitch}, {"pulses": 12, "bpm": bpm}]
    return steps


PLAN = [
    {"pulses": 48, "bpm": 100},  # clock running, transport stopped: livegen waits
    "start",
    *phrase([60, 62, 64, 65], 100),
    {"pulses": 24 * 8, "bpm": 100},  # 8 more beats at 100 BPM
    {"pulses": 24 * 10, "bpm": 140},  # 10 beats at 140 BPM
    "stop",
    {"wait": 0.5},
    {"spp": 32},  # bar 3 (32 sixteenths)
    "continue",
    *phrase([67, 65], 140),
    {"pulses": 24 * 6, "bpm": 140},
    "stop",
    {"pulses": 24, "bpm": 140},
]


def grid_errors_ms(note_times: list[int], pulse_times: list[int], origins: list[tuple[int, int]]) -> list[float]:
    """For each received note-on time: ms to the nearest sixteenth of the DAW's clock.

    ``pulse_times``: the DAW's send times of the clock pulses while playing; ``origins``:
    (index into pulse_times, pulse number of the song position) where each run starts.
    """
    errors = []
    for t in note_times:
        k = max(i for i, p in enumerate(pulse_times[:-1]) if p <= t) if t >= pulse_times[0] else 0
        start, number = max((o for o in origins if o[0] <= k), key=lambda o: o[0])
        interval = pulse_times[k + 1] - pulse_times[k]
        position = number + (k - start) + (t - pulse_times[k]) / interval  # in pulses
        nearest = round(position / SIXTEENTH_PULSES) * SIXTEENTH_PULSES
        errors.append((position - nearest) * interval / 1e6)
    return errors


def test_model_notes_land_on_the_daws_beat_grid_through_tempo_change_stop_and_song_position(jack_server, tmp_path):
    package = write_package(tmp_path / "pkg")
    record = tmp_path / "daw.mid"
    receiver = Peer("receive", "--port", "livegen", "--count", "100000", "--timeout", "90")
    daw = None
    try:
        jam = start_jam("--preset", "daw", "--model", str(package), "--listen", "4", "--bars", "8",
                        "--record", str(record), "--rng-seed", "1", "--max-seconds", "40")  # fmt: skip
        assert receiver.expect("ready", timeout=30)["port"] == "livegen:livegen"
        daw = Peer("clock", "--name", "daw", "--dest", "livegen in", "--plan", json.dumps(PLAN), "--timeout", "30")
        assert daw.expect("ready", timeout=30)["dest"] == "livegen in:livegen in"
        daw.tell("go")
        sent = daw.expect("done", timeout=60)["sent"]
        time.sleep(0.3)
        jam.send_signal(signal.SIGTERM)
        messages = collect(receiver, jam)
        out, err = jam.communicate(timeout=30)
    finally:
        receiver.stop()
        if daw is not None:
            daw.stop()
    assert jam.returncode == 0, err

    # the DAW's pulses while its transport ran, and where each run started in the song
    running, pulses, origins = False, [], []
    for t_ns, status, *_ in sent:
        if status == 0xFA:
            running, next_origin = True, 0
        elif status == 0xFB:
            running, next_origin = True, 32 * SIXTEENTH_PULSES
        elif status == 0xFC:
            running = False
        elif status == 0xF8 and running:
            if next_origin is not None:
                origins.append((len(pulses), next_origin))
                next_origin = None
            pulses.append(t_ns)
    stops = [t for t, s, *_ in sent if s == 0xFC]
    ons = [m["t_ns"] for m in messages if m["data"][0] & 0xF0 == 0x90 and m["data"][2] > 0]
    assert len(ons) >= 20, out
    # nothing plays while the transport is stopped
    first_stop, continue_at = stops[0], next(t for t, s, *_ in sent if s == 0xFB)
    assert not [t for t in ons if first_stop + 20e6 < t < continue_at]
    played = [t for t in ons if t <= stops[-1]]
    # the model plays from the first beat after Start and after Continue: no listening window
    model_ons = [m["t_ns"] for m in messages if m["data"][0] == 0x90 and m["data"][2] > 0]  # channel 1: the model's
    for transport, bpm in ((0xFA, 100), (0xFB, 140)):
        at = next(t for t, s, *_ in sent if s == transport)
        first_pulse = next(t for t, s, *_ in sent if s == 0xF8 and t > at)
        first_note = next(t for t in model_ons if t > at)
        delay_ms = (first_note - first_pulse) / 1e6
        assert delay_ms <= 60e3 / bpm + 20, f"the first note {delay_ms:.0f} ms after the first pulse at {bpm} BPM"
    errors = grid_errors_ms(played, pulses, origins)
    latency = statistics.median(errors)
    spread = sorted(abs(e - latency) for e in errors)
    print(
        f"\nDAW grid: {len(errors)} notes; offset from the DAW's sixteenths: median {latency:.2f} ms, "
        f"|deviation| p50 {spread[len(spread) // 2]:.2f} ms, p95 {spread[int(0.95 * (len(spread) - 1))]:.2f} ms, "
        f"max {spread[-1]:.2f} ms"
    )
    assert 0 <= latency < 20  # two JACK hops of a few periods
    # every note on the grid: a quarter of a sixteenth (27 ms at 140 BPM) from it would be a
    # different position; in a quiet run all are within 2 ms (printed above)
    assert max(abs(e) for e in errors) < 27, "each note's offset from the grid, ms: " + ", ".join(
        f"{(t - pulses[0]) / 1e9:.2f} s: {e:+.1f}" for t, e in zip(played, errors, strict=True)
    )
    assert spread[int(0.9 * (len(spread) - 1))] < 6
    assert not sounding_after(messages)
    replan = next(line for line in out.splitlines() if "note to new plan" in line)
    print(replan, next(line for line in out.splitlines() if "tempo at the end" in line), sep="\n")
    song = read_midi(record)
    assert song.notes  # the recording holds the performer's notes and the model's


def assert_pulses_counted(messages: list[dict], record: Path, lost: int = 0) -> int:
    """Every model note-on arrives after exactly as many clock pulses as its tick says.

    The pulse at tick 0 comes first and one follows every 20 ticks; a note at tick T is
    preceded by T / 20 pulses, or T / 20 + 1 when the pulse at T went out first. A count,
    not a time: it holds however loaded the machine is, except that a JACK cycle the
    receiving client missed (an xrun the server reports: "client ... was not finished")
    loses what arrived in it: ``lost`` such cycles may take up to ``lost`` pulses. Returns
    the number of pulses.
    """
    ticks = sorted(n.start for n in read_midi(record).notes)
    pulses, before = 0, []
    for m in messages:
        if m["data"] == [0xF8]:
            pulses += 1
        elif m["data"][0] & 0xF0 == 0x90 and m["data"][2] > 0:
            before.append(pulses)
    assert len(before) == len(ticks) > 0
    wrong = [
        (t, b)
        for t, b in zip(ticks, before, strict=True)
        if not t // TICKS_PER_PULSE - lost <= b <= t // TICKS_PER_PULSE + 1
    ]
    assert not wrong, f"(tick, pulses before it) off the count ({lost} receiver xruns): {wrong[:5]}"
    return pulses


def receiver_xruns(server: JackServer, since: int) -> int:
    """Cycles the receiving peer missed since byte ``since`` of the server's log (JACK drops their input)."""
    text = server.log_path.read_bytes()[since:].decode("utf-8", "replace")
    return text.count("client = peer-receive was not finished")


def test_clock_master_sends_exactly_24_pulses_per_beat_in_step_with_its_notes(
    jack_server, jack_server_process, tmp_path
):
    log_from = jack_server_process.log_path.stat().st_size
    package = write_package(tmp_path / "pkg")
    record = tmp_path / "master.mid"
    receiver = Peer("receive", "--port", "livegen", "--count", "100000", "--timeout", "90")
    try:
        jam = start_jam("--model", str(package), "--mode", "autonomous", "--out", "livegen", "--clock-out",
                        "--tempo", "150", "--max-seconds", "20", "--rng-seed", "2", "--no-commands",
                        "--record", str(record))  # fmt: skip
        assert receiver.expect("ready", timeout=30)["port"] == "livegen:livegen"
        messages = collect(receiver, jam, timeout=60)
        _out, err = jam.communicate(timeout=30)
    finally:
        receiver.stop()
    assert jam.returncode == 0, err
    statuses = [m["data"][0] for m in messages]
    assert statuses[:2] == [0xF2, 0xFA] and messages[0]["data"] == [0xF2, 0, 0]  # SPP 0, then Start
    assert 0xFC in statuses  # Stop at the end
    pulses = [m["t_ns"] for m in messages if m["data"] == [0xF8]]
    interval = 60e9 / (150 * 24)
    assert len(pulses) > 24 * 40  # 16 s and more at 150 BPM
    # none missed, none extra (every gap one interval, give or take JACK's period), and no
    # drift: a line through pulse k's arrival has the slope of exactly 24 pulses per beat
    gaps = [(b - a) / interval for a, b in itertools.pairwise(pulses)]
    n = len(pulses)
    mean_k, mean_t = (n - 1) / 2, statistics.fmean(pulses)
    slope = sum((k - mean_k) * (t - mean_t) for k, t in enumerate(pulses)) / sum((k - mean_k) ** 2 for k in range(n))
    residuals = [abs(t - (mean_t + (k - mean_k) * slope)) / 1e6 for k, t in enumerate(pulses)]
    print(
        f"\nclock master: {n} pulses, interval {slope / 1e6:.4f} ms (exact {interval / 1e6:.4f}), "
        f"max residual {max(residuals):.2f} ms, gaps {min(gaps):.2f}-{max(gaps):.2f} intervals"
    )
    lost = receiver_xruns(jack_server_process, log_from)
    print(f"receiver xruns: {lost}")
    assert assert_pulses_counted(messages, record, lost) == n  # 24 per beat, in step with the notes
    assert abs(slope - interval) / interval < 1e-3  # the tempo: 150 BPM (1e-4 in a quiet run)


def test_model_swap_by_typed_command_keeps_the_clock_running_and_leaves_nothing_sounding(
    jack_server, jack_server_process, tmp_path
):
    log_from = jack_server_process.log_path.stat().st_size
    package = write_package(tmp_path / "pkg")
    record = tmp_path / "swap.mid"
    receiver = Peer("receive", "--port", "livegen", "--count", "100000", "--timeout", "90")
    jam = None
    try:
        jam = subprocess.Popen(
            [sys.executable, "-m", "livegen", "jam", "--midi-api", "jack", "--model", str(package),
             "--mode", "autonomous", "--out", "livegen", "--clock-out", "--tempo", "150", "--commands",
             "--max-seconds", "12", "--record", str(record)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert receiver.expect("ready", timeout=30)["port"] == "livegen:livegen"
        time.sleep(4)
        assert jam.stdin is not None
        jam.stdin.write("model folk-lstm\n")  # the bundled model: a real load on a background thread
        jam.stdin.flush()
        messages = collect(receiver, jam, timeout=60)
        out, err = jam.communicate(timeout=30)
    finally:
        receiver.stop()
        if jam is not None and jam.poll() is None:
            jam.kill()
    assert jam.returncode == 0, err
    assert "live: model = folk-lstm" in out, out
    pulses = [m["t_ns"] for m in messages if m["data"] == [0xF8]]
    interval = 60e9 / (150 * 24)
    gaps = [(b - a) / interval for a, b in itertools.pairwise(pulses)]
    print(f"\nclock across a model swap: {len(pulses)} pulses, gaps {min(gaps):.2f}-{max(gaps):.2f} intervals")
    assert len(pulses) > 24 * 20
    lost = receiver_xruns(jack_server_process, log_from)
    assert assert_pulses_counted(messages, record, lost) == len(pulses)  # none missed while the model loaded
    assert not sounding_after(messages)


def test_a_clock_master_stopped_for_two_seconds_resumes_without_a_burst_and_resyncs_its_slaves(jack_server, tmp_path):
    package = write_package(tmp_path / "pkg")
    receiver = Peer("receive", "--port", "livegen", "--count", "100000", "--timeout", "90")
    try:
        jam = start_jam("--model", str(package), "--mode", "autonomous", "--out", "livegen", "--clock-out",
                        "--tempo", "150", "--max-seconds", "9", "--rng-seed", "2", "--no-commands",
                        "--record", str(tmp_path / "stalled.mid"))  # fmt: skip
        assert receiver.expect("ready", timeout=30)["port"] == "livegen:livegen"
        time.sleep(3.0)
        jam.send_signal(signal.SIGSTOP)  # the whole process: every thread, the scheduler's too
        time.sleep(2.0)
        jam.send_signal(signal.SIGCONT)
        messages = collect(receiver, jam, timeout=60)
        out, err = jam.communicate(timeout=30)
    finally:
        receiver.stop()
    assert jam.returncode == 0, err
    statuses = [m["data"][0] for m in messages]
    pulses = [m["t_ns"] for m in messages if m["data"] == [0xF8]]
    interval = 60e9 / (150 * 24)
    # no burst: never more pulses in 100 ms than 100 ms holds (6 at 150 BPM), give or take two
    most = max(sum(1 for t in pulses[k:] if t - pulses[k] < 100e6) for k in range(len(pulses)))
    assert most <= 100e6 / interval + 2, f"{most} pulses within 100 ms"
    # the slaves were stopped and told where to resume: Stop, Song Position, Continue
    resync = next(k for k in range(1, len(statuses)) if statuses[k : k + 2] == [0xF2, 0xFB])
    assert 0xFC in statuses[:resync]
    spp = messages[resync]["data"]
    sixteenths = spp[1] | spp[2] << 7
    # the position is where the clock is: pulses before it + the ones dropped while stopped
    assert sixteenths * 6 > statuses[:resync].count(0xF8) + 24 * 2.5 * 1.5  # more than 1.5 s of pulses were skipped
    assert "not played: the process was held up" in out
