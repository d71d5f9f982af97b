"""An input flood (issue 18, item 4): does it hold back MIDI clock out, and is what it loses counted?

Context: setup (a benchmark). On a private JACK server (dummy driver, 48 kHz, 128 frames)
the real engine accompanies with the bundled ``folk-lstm`` (inference on the control
thread) and sends MIDI clock (24 a beat at 120 BPM) on its output port ``livegen``. A
child process (the flooder) sends note-on/note-off pairs into livegen's virtual input
``flood-in`` at a fixed rate for ``--seconds``; another (:mod:`benchmarks.jackpeer`)
stamps what arrives from ``livegen``. Each rate runs twice in the same run: with the
jam's input handling (:class:`~livegen.engine.admission.InputAdmission`, a bounded
share of input per control step) and without it (every message taken, the inbox
drained each step: how the engine worked before).

Figures per run: clock pulses due during the flood and how many arrived at the peer in
time (within 5 ms of their deadline), the pulses' lateness at the peer (arrival minus
the planned deadline: p50, p99, max) and the latest arrival; messages the flooder sent,
livegen's reader received, the engine took, and dropped with a count; resident memory
before and after.

    python -m benchmarks.flood [--rates 3000,10000] [--seconds 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import JackServer, jack_env, loadavg, summary_ms, vitals
from benchmarks.onset import _start_peer, stop_peer

TEMPO = 120.0
IN_PORT = "flood-in"
#: A pulse arriving later than this after its deadline counts as missed in time, ns.
IN_TIME_NS = 5_000_000
LEAD_S = 2.0  # the engine runs this long before the flood and after it

_FLOODER = r"""
import sys, time, json, rtmidi
out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "flooder")
deadline = time.monotonic() + 20
while True:
    ports = out.get_ports()
    match = [i for i, p in enumerate(ports) if p.startswith("%(port)s:")]
    if match:
        break
    if time.monotonic() > deadline:
        print(json.dumps({"event": "error", "ports": ports}), flush=True); sys.exit(2)
    time.sleep(0.01)
out.open_port(match[0])
print(json.dumps({"event": "ready"}), flush=True)
rate, seconds = (float(x) for x in sys.stdin.readline().split())
per_ms = rate / 1000.0
sent, owed, start = 0, 0.0, time.perf_counter()
t0 = time.perf_counter_ns()
while time.perf_counter() - start < seconds:
    owed += per_ms
    while owed >= 2:
        pitch = 36 + (sent // 2) %% 61
        out.send_message([0x90, pitch, 100]); out.send_message([0x80, pitch, 0])
        sent += 2; owed -= 2
    next_ms = start + (time.perf_counter() - start) // 0.001 * 0.001 + 0.001
    time.sleep(max(0.0, next_ms - time.perf_counter()))
print(json.dumps({"event": "done", "sent": sent, "t0_ns": t0, "t1_ns": time.perf_counter_ns()}), flush=True)
"""


def _rss_mb() -> float:
    return round(vitals()["rss_kib"] / 1024, 1)


def run(server: JackServer, rate: int, seconds: float, *, guarded: bool) -> dict[str, Any]:
    """One flood of ``rate`` messages a second for ``seconds``, with the jam's input handling or without."""
    import numpy as np

    from livegen.engine import session
    from livegen.engine.accompany import AccompanyPlanner, AccompanySettings
    from livegen.engine.admission import InputAdmission
    from livegen.engine.clock import InternalClock
    from livegen.engine.clockout import ClockMaster
    from livegen.engine.jam import sampling_params
    from livegen.engine.live import LiveParams
    from livegen.engine.scheduler import Scheduler
    from livegen.engine.session import CLOCK_GROUP, MODEL_TRACK, PERFORMER_TRACK, Engine
    from livegen.io import midi_input, midi_output
    from livegen.io.recorder import MidiRecorder
    from livegen.models.registry import load_generator
    from livegen.music.time import TempoMap

    package, generator = load_generator("folk-lstm")
    live = LiveParams(sampling=sampling_params(package, None, None))
    planner = AccompanyPlanner(generator, live, np.random.default_rng(0), AccompanySettings())
    with jack_env(server):
        port = midi_output.open_output("livegen", api="jack", virtual=True)
    clock = InternalClock(TempoMap.constant(TEMPO), start_ns=time.perf_counter_ns() + 300_000_000)
    scheduler = Scheduler([[port], [], [port]], tick_of=clock.ns_to_tick)
    engine = Engine(
        planner,
        clock,
        scheduler,
        MidiRecorder((PERFORMER_TRACK, MODEL_TRACK)),
        keep_sent=True,
        clock_out=ClockMaster(),
        admission=InputAdmission() if guarded else None,
    )
    saved_per_step, saved_interval = session.INPUTS_PER_STEP, sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # as run_jam does before it starts the scheduler
    if not guarded:
        session.INPUTS_PER_STEP = 1 << 30  # the inbox drained whatever its depth, as before
    with jack_env(server):
        source = midi_input.open_input(IN_PORT, api="jack", virtual=True, callback=engine.on_midi)
    flooder = subprocess.Popen(
        [sys.executable, "-c", _FLOODER % {"port": IN_PORT}],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=server.env(),
    )
    peer_file = Path(tempfile.mkstemp(prefix="livegen-bench-flood-", suffix=".json")[1])
    peer = None
    try:
        assert flooder.stdin is not None and flooder.stdout is not None
        if '"ready"' not in flooder.stdout.readline():
            raise RuntimeError("the flooder did not find livegen's input")
        peer = _start_peer(server, peer_file)
        rss_before = _rss_mb()
        scheduler.start()
        flood_done: dict[str, Any] = {}
        started = time.monotonic()
        flooder.stdin.write(f"{rate} {seconds}\n")
        flooder.stdin.flush()
        flood_from = time.perf_counter_ns()

        def until() -> bool:
            if not flood_done and flooder.poll() is not None:
                flood_done.update(json.loads(flooder.stdout.readline()))  # type: ignore[union-attr]
            return time.monotonic() - started > seconds + LEAD_S

        engine.run(until)
        engine.finish()
        rss_after = _rss_mb()
        if not flood_done:
            flooder.wait(30)
            flood_done.update(json.loads(flooder.stdout.readline()))
    finally:
        session.INPUTS_PER_STEP = saved_per_step
        sys.setswitchinterval(saved_interval)
        source.close()
        port.close()
        if flooder.poll() is None:
            flooder.kill()
    assert peer is not None
    received = stop_peer(peer, peer_file)
    peer_file.unlink(missing_ok=True)
    flood_to = int(flood_done.get("t1_ns", flood_from + seconds * 1e9))
    pulses = [s for s in engine.sent if s.group == CLOCK_GROUP and s.data == (0xF8,)]
    arrivals = [r[0] for r in received if r[1] == 0xF8]
    due = [s.deadline_ns for s in pulses if flood_from <= s.deadline_ns <= flood_to]
    # pulses are identical bytes: pair the n-th sent with the n-th arrived
    late = [a - s.deadline_ns for s, a in zip(pulses, arrivals, strict=False)]
    late_in_flood = [
        a - s.deadline_ns for s, a in zip(pulses, arrivals, strict=False) if flood_from <= s.deadline_ns <= flood_to
    ]
    in_time = sum(1 for v in late_in_flood if v <= IN_TIME_NS)
    ticks_due = round((flood_to - flood_from) / 1e9 * TEMPO / 60 * 24)
    return {
        "rate_per_s": rate,
        "input_handling": "admission, bounded steps" if guarded else "every message, inbox drained",
        "flood_s": round((flood_to - flood_from) / 1e9, 2),
        "pulses_due_in_flood": ticks_due,
        "pulses_sent_for_flood": len(due),
        "pulses_in_time_at_peer": in_time,
        "pulse_lateness_at_peer_in_flood": summary_ms(late_in_flood),
        "pulse_lateness_at_peer_all": summary_ms(late),
        "messages_flooder_sent": int(flood_done.get("sent", 0)),
        "messages_reader_received": source.received,
        "messages_dropped_counted": engine.input_dropped,
        "performer_notes_recorded": len(engine.recorder.notes(PERFORMER_TRACK)),
        "late_sends_over_1ms": scheduler.stats.late,
        "scheduler_realtime": scheduler.stats.realtime,
        "rss_mb_before_after": [rss_before, rss_after],
        "loadavg": loadavg(),
    }


def measure(rates: tuple[int, ...] = (3000, 10_000), seconds: float = 10.0) -> dict[str, Any]:
    if (why := JackServer.available()) is not None:
        return {"skipped": why}
    runs = []
    with JackServer() as server:
        for rate in rates:
            for guarded in (False, True):
                runs.append(run(server, rate, seconds, guarded=guarded))
    return {"tempo_bpm": TEMPO, "in_time_ms": IN_TIME_NS / 1e6, "runs": runs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rates", default="3000,10000", help="messages a second, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = measure(tuple(int(r) for r in args.rates.split(",")), args.seconds)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
