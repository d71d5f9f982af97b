"""Input arrival times (issue 18, item 4): stamped from the backend, or when Python read them?

Context: setup (a benchmark). On a private JACK server (dummy driver, 48 kHz, 128
frames) a sender process plays MIDI clock (24 a beat at 150 BPM: one every 16.7 ms)
into livegen's virtual input (:func:`~livegen.io.midi_input.open_input`), noting the
time just before each send. The input's callback keeps two times for each pulse: the
stamp livegen gives it (:class:`~livegen.io.arrival.ArrivalStamps`, from RtMidi's delta
times) and when the callback ran, which is what the stamp was before. Both are compared
with the send time (lateness, p50/p99/max). Two conditions, in the same run: idle, and
with this process's interpreter lock held about 50 ms at a time every 100 ms (a C loop
that keeps the lock, as a garbage collection or a model step does).

    python -m benchmarks.arrival [--seconds 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import JackServer, jack_env, summary_ms

IN_PORT = "arrival-in"
PULSE_S = 60.0 / (150 * 24)

_SENDER = r"""
import json, sys, time, rtmidi
out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "clock-sender")
deadline = time.monotonic() + 20
while True:
    match = [i for i, p in enumerate(out.get_ports()) if p.startswith("%(port)s:")]
    if match:
        break
    if time.monotonic() > deadline:
        sys.exit(2)
    time.sleep(0.01)
out.open_port(match[0])
print(json.dumps({"event": "ready"}), flush=True)
count, interval = int(sys.argv[1]), float(sys.argv[2])
sent, start = [], time.perf_counter_ns()
for k in range(count):
    due = start + round(k * interval * 1e9)
    while time.perf_counter_ns() < due:
        time.sleep(0.0002)
    sent.append(time.perf_counter_ns())
    out.send_message([0xF8])
time.sleep(0.2)
print(json.dumps({"event": "done", "sent": sent}), flush=True)
"""


def _hold_lock(stop: threading.Event) -> None:
    started = time.perf_counter()
    sum(range(1_000_000))
    n = max(1_000_000, round(1_000_000 * 0.05 / (time.perf_counter() - started)))  # one C call of ~50 ms
    while not stop.is_set():
        sum(range(n))  # holds the interpreter lock throughout
        time.sleep(0.05)


def run(server: JackServer, seconds: float, stalls: bool) -> dict[str, Any]:
    from livegen.io.midi_input import open_input

    got: list[tuple[int, int]] = []
    with jack_env(server):
        source = open_input(
            IN_PORT, api="jack", virtual=True, ignore_clock=False,
            callback=lambda data, t_ns: got.append((t_ns, time.perf_counter_ns())),
        )  # fmt: skip
    count = int(seconds / PULSE_S)
    sender = subprocess.Popen(
        [sys.executable, "-c", _SENDER % {"port": IN_PORT}, str(count), str(PULSE_S)],
        stdout=subprocess.PIPE,
        text=True,
        env=server.env(),
    )
    stop = threading.Event()
    holder = threading.Thread(target=_hold_lock, args=(stop,), daemon=True)
    try:
        assert sender.stdout is not None
        json.loads(sender.stdout.readline())  # ready
        time.sleep(0.3)  # the first pulses read promptly
        if stalls:
            holder.start()
        done = json.loads(sender.stdout.readline())
    finally:
        stop.set()
        sender.wait(10)
        time.sleep(0.1)
        source.close()
    sent = done["sent"]
    n = min(len(sent), len(got))
    return {
        "condition": "interpreter lock held 50 ms in 100" if stalls else "idle",
        "pulses_sent": len(sent),
        "pulses_stamped": len(got),
        "stamp_lateness": summary_ms([got[k][0] - sent[k] for k in range(n)]),
        "read_lateness": summary_ms([got[k][1] - sent[k] for k in range(n)]),
    }


def measure(seconds: float = 5.0) -> dict[str, Any]:
    reason = JackServer.available()
    if reason:
        return {"skipped": reason}
    with JackServer() as server:
        runs = [run(server, seconds, stalls) for stalls in (False, True)]
    return {"pulse_interval_ms": round(PULSE_S * 1e3, 3), "runs": runs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = measure(args.seconds)
    for r in result.get("runs", []):
        s, rd = r["stamp_lateness"], r["read_lateness"]
        print(
            f"{r['condition']}: {r['pulses_stamped']}/{r['pulses_sent']} pulses; after the send, "
            f"stamp p50 {s['p50_ms']:.2f} p99 {s['p99_ms']:.2f} max {s['max_ms']:.2f} ms; "
            f"read p50 {rd['p50_ms']:.2f} p99 {rd['p99_ms']:.2f} max {rd['max_ms']:.2f} ms"
        )
    if "skipped" in result:
        print("skipped:", result["skipped"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
