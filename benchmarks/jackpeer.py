"""A JACK MIDI receiver in its own process: timestamps what arrives on a port.

Context: a benchmark's child process (setup, then python-rtmidi's JACK process thread).
It imports nothing of livegen, so it judges livegen from outside. Protocol on
stdout, one JSON object per line::

    python -m benchmarks.jackpeer --port livegen:livegen --out FILE
        {"event": "ready", "port": "livegen:livegen"}
    then on stdin "stop" (or end of input): it writes FILE as JSON
    [[t_ns, status, data1, data2], ...] and says {"event": "done", "count": N}.

``t_ns`` is ``perf_counter_ns()`` (CLOCK_MONOTONIC on Linux, the same clock in every
process) taken in the rtmidi callback, which runs on this client's JACK process thread
in the cycle the message is delivered. The peer leaves with ``os._exit`` without
closing its rtmidi object (closing a JACK input with a Python callback can deadlock).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any


def _say(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", required=True, help="full JACK port name to read, e.g. livegen:livegen")
    parser.add_argument("--out", required=True)
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for the port to appear")
    args = parser.parse_args(argv)

    import rtmidi

    client = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "bench-peer")
    client.ignore_types(sysex=False, timing=False, active_sense=False)
    got: list[list[int]] = []
    clock = time.perf_counter_ns

    def callback(event: Any, _data: object) -> None:
        got.append([clock(), *event[0]])

    client.set_callback(callback)
    deadline = time.monotonic() + args.timeout
    while True:
        ports = client.get_ports()
        if args.port in ports:
            break
        if time.monotonic() > deadline:
            _say(event="error", message=f"no port {args.port!r} among {ports}")
            os._exit(2)
        time.sleep(0.01)
    client.open_port(ports.index(args.port), "in")
    _say(event="ready", port=args.port)
    for line in sys.stdin:
        if line.strip() == "stop":
            break
    time.sleep(0.05)  # what is still in flight
    with open(args.out, "w") as fh:
        json.dump(list(got), fh)
    _say(event="done", count=len(got))
    os._exit(0)


if __name__ == "__main__":
    main()
