"""Test helpers for a real JACK server (dummy driver) and independent JACK MIDI clients.

Context: tests only (setup). Nothing here imports livegen: the server check and the
peer clients use python-rtmidi directly, so they judge livegen from outside.

Run as a script this module is a peer client in its own process, speaking JSON lines
on stdout (one object per line, ``perf_counter_ns`` timestamps, which on Linux read
CLOCK_MONOTONIC and so compare across processes)::

    python jackutil.py receive --port livegen --count 8 --timeout 10
        {"event": "ready", "port": "livegen:livegen"}
        {"event": "message", "t_ns": 123, "data": [144, 60, 100]}  ... then
        {"event": "done", "count": 8}
        reads "flush" on stdin: {"event": "flushed", "count": N} once every message that
        arrived before it has been printed; "quit" exits at once
    python jackutil.py send --name kbd
        {"event": "ready", "port": "kbd:kbd"}; then reads JSON lines on stdin:
        [144, 60, 100]                     send now, answer {"event": "sent", "t_ns": ..., "data": [...]}
        {"stream": 500, "interval": 0.001} send 500 note-ons in the background; then
                                           {"event": "streamed", "t_ns": [...]}, each one's send time
        "quit" (or end of input)           exit at once
    python jackutil.py clock --name clk --dest "livegen in" --plan '["start", {"pulses": 96, "bpm": 100}]'
        {"event": "ready", "port": "clk:clk", "dest": "livegen in:livegen in"}; waits for "go" on
        stdin, plays the plan, then {"event": "done", "sent": [[t_ns, status, ...], ...]}, every
        message sent with the time just before it was handed to JACK. Plan steps:
        {"pulses": N, "bpm": B}            N clocks (0xF8) on an absolute grid at B BPM; a tempo
                                           change at pulse K is two steps, K pulses then the rest
        "start" | "stop" | "continue"      0xFA / 0xFC / 0xFB, 5 ms before the next grid point
        {"spp": SIXTEENTHS}                Song Position Pointer (LSB first), 5 ms before it too
        {"wait": SECONDS}                  move the grid on (a pause, e.g. while stopped)
        {"on": [PITCH, VEL]} | {"off": P}  a performed note-on / note-off, 1 ms before the next grid point

Peers leave with ``os._exit`` and never close their rtmidi objects: closing a JACK
input whose Python callback is busy can deadlock (see livegen.io.midi_input).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

JACKD_FALLBACK = "/usr/bin/jackd"

_OPEN_CLIENT = """
import rtmidi
try:
    rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "livegen-test-wait").delete()
except Exception as err:
    print("error", err)
else:
    print("ok")
"""


def find_jackd() -> str | None:
    """Path of jackd (PATH, then /usr/bin/jackd), or None."""
    found = shutil.which("jackd")
    if found:
        return found
    return JACKD_FALLBACK if os.access(JACKD_FALLBACK, os.X_OK) else None


def client_opens(server: str, timeout: float = 5.0) -> bool:
    """Whether a JACK client can be opened on ``server`` now (asked from a child process)."""
    env = dict(os.environ, JACK_DEFAULT_SERVER=server, JACK_NO_START_SERVER="1")
    try:
        done = subprocess.run(
            [sys.executable, "-c", _OPEN_CLIENT],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.stdout.strip() == "ok"


def jackd_processes() -> dict[int, list[str]]:
    """Every process named jackd on this machine, PID to command line (read from /proc)."""
    found: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "jackd":
                    found[int(entry.name)] = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
    return found


class JackServer:
    """One jackd with the dummy driver, started and stopped by PID (never by name)."""

    def __init__(self, jackd: str, name: str, log_dir: Path) -> None:
        self.jackd = jackd
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def command(self) -> list[str]:
        return [self.jackd, "-n", self.name, "-d", "dummy", "-r", "48000", "-p", "128"]

    def start(self) -> None:
        # jackd prints a line per xrun, forever: a file, not a pipe nobody reads.
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log_text(self, tail: int = 4000) -> str:
        try:
            text = self.log_path.read_bytes().decode("utf-8", "replace")
        except OSError:
            return "(no jackd output)"
        text = "\n".join(line.rstrip() for line in text.splitlines() if line.strip())
        return text[-tail:]

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Poll by opening a client until the server answers; RuntimeError with its log if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                code = self.process.returncode if self.process else None
                raise RuntimeError(f"jackd exited with status {code}: {' '.join(self.command)}\n{self.log_text()}")
            if client_opens(self.name, timeout=min(5.0, max(0.5, deadline - time.monotonic()))):
                return
            time.sleep(0.1)
        raise RuntimeError(f"jackd did not answer within {timeout:g} s: {' '.join(self.command)}\n{self.log_text()}")

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the jackd this object started (by its PID), kill it if it lingers."""
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)  # a paused server cannot handle SIGTERM
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None


class Peer:
    """This module run as a peer JACK client in a child process (see the module docstring)."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.process = subprocess.Popen(
            [sys.executable, __file__, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self._lines.put(json.loads(line))
            except ValueError:
                self._lines.put({"event": "garbage", "line": line})
        self._lines.put(None)

    def next(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next JSON line; AssertionError (with the peer's stderr) on timeout or exit."""
        try:
            item = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"peer {self.args} said nothing for {timeout:g} s; stderr: {self.stderr()}") from None
        if item is None:
            raise AssertionError(f"peer {self.args} exited ({self.process.wait()}); stderr: {self.stderr()}")
        return item

    def expect(self, event: str, timeout: float = 10.0) -> dict[str, Any]:
        item = self.next(timeout)
        if item.get("event") != event:
            raise AssertionError(f"peer {self.args}: expected {event!r}, got {item}; stderr: {self.stderr()}")
        return item

    def tell(self, command: object) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def send(self, data: Sequence[int]) -> dict[str, Any]:
        """Have a sender peer send ``data``; return its ``sent`` line (with ``t_ns``)."""
        self.tell(list(data))
        return self.expect("sent")

    def stderr(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        assert self.process.stderr is not None
        return self.process.stderr.read()[-2000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self.tell("quit")
            try:
                self.process.wait(3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(3)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                with contextlib.suppress(BrokenPipeError, OSError):
                    stream.close()


# --- the peer process ------------------------------------------------------------------


def _say(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def _find_port(client: Any, port: str, deadline: float) -> tuple[int, str]:
    """Index and full name of the one port named ``port`` (or of client ``port``); exit 2 if none by then."""
    while True:
        ports = client.get_ports()
        names = [name for name in ports if name]
        hits = [name for name in names if name == port or name.split(":", 1)[0] == port]
        if len(hits) == 1:
            return ports.index(hits[0]), hits[0]
        if len(hits) > 1 or time.monotonic() > deadline:
            _say(event="error", message=f"port {port!r} -> {hits} among {names}")
            os._exit(2)
        time.sleep(0.02)


def _receive(port: str, count: int, timeout: float) -> None:
    import rtmidi

    # No callback: JACK's process thread queues each message inside RtMidi without the GIL, so
    # a busy peer never makes it miss a cycle (and lose that cycle's messages); a thread polls.
    client = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "peer-receive", queue_size_limit=1 << 16)
    client.ignore_types(sysex=False, timing=False, active_sense=False)
    got: queue.Queue[tuple[int, list[int]]] = queue.Queue()
    deadline = time.monotonic() + timeout
    index, full_name = _find_port(client, port, deadline)
    client.open_port(index, "in")
    threading.Thread(target=_poll, args=(client, got), daemon=True).start()
    threading.Thread(target=_flush_on_request, args=(got,), daemon=True).start()
    _say(event="ready", port=full_name)
    received = 0
    while received < count:
        try:
            t_ns, data = got.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            _say(event="timeout", count=received)
            os._exit(1)
        if t_ns == FLUSHED:
            _say(event="flushed", count=received)
            continue
        received += 1
        _say(event="message", t_ns=t_ns, data=data)
    time.sleep(0.05)  # anything after the expected count is an error the test must see
    while not got.empty():
        t_ns, data = got.get()
        _say(event="message", t_ns=t_ns, data=data)
    _say(event="done", count=received)
    os._exit(0)


#: How long a receiver's poller sleeps when RtMidi's queue is empty, s.
POLL_S = 0.0005


def _poll(client: Any, got: queue.Queue[tuple[int, list[int]]]) -> None:
    """A receiver's poller: each message from RtMidi's queue, timed on ``perf_counter_ns``.

    RtMidi stamps each message with the time since the one before, taken on JACK's
    process thread as it arrived; the times are those sums from an origin, the earliest
    that no poll contradicts (a message cannot have arrived after it was taken).
    """
    origin: int | None = None
    since_first = 0.0
    while True:
        item = client.get_message()
        if item is None:
            time.sleep(POLL_S)
            continue
        taken = time.perf_counter_ns()
        data, delta = item
        since_first += delta
        offset = round(since_first * 1e9)
        if origin is None or taken - offset < origin:
            origin = taken - offset
        got.put((origin + offset, data))


#: Stands for a flush request in a receiver's queue of (t_ns, data).
FLUSHED = -1
#: How long a receiver lets JACK's process thread hand over what arrived before a flush, s.
FLUSH_SETTLE_S = 0.2


def _flush_on_request(got: queue.Queue[tuple[int, list[int]]]) -> None:
    """A receiver's stdin: ``"flush"`` queues a marker behind what has arrived; ``"quit"`` exits.

    The marker goes in after :data:`FLUSH_SETTLE_S`, so every message JACK delivered
    before the request (the poller takes it within a millisecond or so) is printed
    before the ``flushed`` line: a test that asks once the sender has closed its port
    reads everything that was sent, however far the printing lags behind.
    """
    for line in sys.stdin:
        command = json.loads(line)
        if command == "quit":
            os._exit(0)
        if command == "flush":
            time.sleep(FLUSH_SETTLE_S)
            got.put((FLUSHED, []))


def _stream(client: Any, count: int, interval: float) -> None:
    sent = []
    for i in range(count):
        sent.append(time.perf_counter_ns())
        client.send_message((0x90, 36 + i % 48, 1 + i % 127))
        time.sleep(interval)
    _say(event="streamed", t_ns=sent)


def _send(name: str) -> None:
    import rtmidi

    client = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name)
    client.open_virtual_port(name)
    _say(event="ready", port=f"{name}:{name}")
    for line in sys.stdin:
        command = json.loads(line)
        if command == "quit":
            break
        if isinstance(command, dict) and "stream" in command:
            args = (client, int(command["stream"]), float(command.get("interval", 0.001)))
            threading.Thread(target=_stream, args=args, daemon=True).start()
            _say(event="streaming")
            continue
        t_ns = time.perf_counter_ns()
        client.send_message(command)
        _say(event="sent", t_ns=t_ns, data=command)
    os._exit(0)


def _wait_until(deadline_ns: int) -> None:
    """Sleep to 1 ms before ``deadline_ns`` (perf_counter_ns), then spin to it."""
    remaining = deadline_ns - time.perf_counter_ns() - 1_000_000
    if remaining > 0:
        time.sleep(remaining / 1e9)
    while time.perf_counter_ns() < deadline_ns:
        pass


def _clock(name: str, dest: str, plan: list[Any], timeout: float) -> None:
    import rtmidi

    client = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name)
    index, full_name = _find_port(client, dest, time.monotonic() + timeout)
    client.open_port(index, name)
    _say(event="ready", port=f"{name}:{name}", dest=full_name)
    line = sys.stdin.readline().strip()
    if json.loads(line or '"quit"') != "go":
        os._exit(0)
    sent: list[list[int]] = []

    def send(message: list[int], at_ns: int) -> None:
        _wait_until(at_ns)
        t_ns = time.perf_counter_ns()
        client.send_message(message)
        sent.append([t_ns, *message])

    grid = time.perf_counter_ns() + 50_000_000  # the next pulse's time
    for step in plan:
        if isinstance(step, dict) and "pulses" in step:
            interval = 60e9 / (float(step["bpm"]) * 24)
            count = int(step["pulses"])
            for k in range(count):
                send([0xF8], grid + round(k * interval))  # from the step's origin: no drift
            grid += round(count * interval)
        elif isinstance(step, dict) and "spp" in step:
            value = int(step["spp"])
            send([0xF2, value & 0x7F, value >> 7], grid - 5_000_000)
        elif isinstance(step, dict) and "wait" in step:
            grid += round(float(step["wait"]) * 1e9)
        elif isinstance(step, dict) and ("on" in step or "off" in step):
            # a performed note just before the next pulse: {"on": [pitch, velocity]} or {"off": pitch}
            message = [0x90, *step["on"]] if "on" in step else [0x80, int(step["off"]), 0]
            send(message, grid - 1_000_000)
        elif step in ("start", "stop", "continue"):
            send([{"start": 0xFA, "stop": 0xFC, "continue": 0xFB}[step]], grid - 5_000_000)
        else:
            _say(
                event="error",
                message=f"plan step {step!r}: expected pulses/bpm, spp, wait, on, off, start, stop, continue",
            )
            os._exit(2)
    time.sleep(0.1)  # let JACK deliver the last messages before the process goes
    _say(event="done", sent=sent)
    os._exit(0)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    verbs = parser.add_subparsers(dest="verb", required=True)
    receive = verbs.add_parser("receive")
    receive.add_argument("--port", required=True, help="full port name, or a client name")
    receive.add_argument("--count", type=int, required=True)
    receive.add_argument("--timeout", type=float, default=10.0)
    send = verbs.add_parser("send")
    send.add_argument("--name", required=True)
    clock = verbs.add_parser("clock")
    clock.add_argument("--name", required=True, help="this client's name and its output port's")
    clock.add_argument("--dest", required=True, help="the input port to send to: full name, or a client name")
    clock.add_argument("--plan", required=True, help="JSON list of steps (see the module docstring)")
    clock.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the destination port")
    args = parser.parse_args(argv)
    if args.verb == "receive":
        _receive(args.port, args.count, args.timeout)
    elif args.verb == "clock":
        _clock(args.name, args.dest, json.loads(args.plan), args.timeout)
    else:
        _send(args.name)


if __name__ == "__main__":
    main()
