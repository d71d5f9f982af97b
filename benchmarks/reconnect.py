"""Ports come and go: reconnection times and a leak check over many cycles.

Context: setup (a benchmark; ``tests/test_ports_reconnect.py`` runs :func:`port_cycles` with
fewer cycles and asserts on its figures).

Two experiments, each on a private JACK server (dummy driver, stopped by its PID):

- ``cycles``: a keyboard port (``kbd``) and a synth port (``synth``) of a peer process
  disappear and appear again N times (their JACK client is deleted and opened again, as
  when a program quits or a USB keyboard is unplugged) while livegen's input is connected
  to the one and its output to the other, a :class:`~livegen.io.reconnect.PortKeeper`
  looking every 10 ms. Each cycle a note is held when the keyboard goes; its note-off
  must come back through the input. Before the first counted cycle and after the last:
  livegen's ports in the JACK graph, this process's threads, file descriptors and
  resident memory (with checkpoints in between), and the dead clients kept.
- ``restarts``: the JACK server itself killed (SIGKILL) and started again under the same
  name, N times, under a virtual output ``livegen`` and a virtual input ``livegen in``
  with a keeper looking every 0.25 s as in a jam; how long after the new server's
  request socket accepts both ports are open again, the longest stall of another Python
  thread (a 1 ms ticker) while the ports go offline and while they open again, and what
  each restart costs in memory and threads (a dead output client is retired, never
  deleted: see ``livegen.io.midi_clients.discard_client``).

    python -m benchmarks.reconnect [--cycles 1000] [--restarts 20] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import (
    JACK_PERIOD,
    JACK_RATE,
    JackServer,
    _die_with_parent,
    jack_env,
    machine,
    summary_ms,
    vitals,
)

#: The peer: a JACK client named NAME with one port, opened ("up") and deleted ("down") on
#: command. A ``keyboard`` sends what it is told; a ``sink`` reports what arrives (polled,
#: no rtmidi callback, so deleting it is safe). Answers JSON lines; imports nothing of livegen.
_PEER = r"""
import json, os, sys, threading, time
import rtmidi
kind, name = sys.argv[1], sys.argv[2]
client = None
lock = threading.Lock()
def say(**fields):
    sys.stdout.write(json.dumps(fields) + "\n"); sys.stdout.flush()
def drain():
    while True:
        with lock:
            event = client.get_message() if client is not None and kind == "sink" else None
        if event is None:
            time.sleep(0.001)
        else:
            say(event="message", data=event[0])
threading.Thread(target=drain, daemon=True).start()
for line in sys.stdin:
    command = json.loads(line)
    if command == "up":
        make = rtmidi.MidiOut if kind == "keyboard" else rtmidi.MidiIn
        new = make(rtmidi.API_UNIX_JACK, name)
        new.open_virtual_port(name)
        with lock:
            client = new
        say(event="up")
    elif command == "down":
        with lock:
            old, client = client, None
        old.delete()
        say(event="down")
    elif command == "quit":
        break
    else:
        client.send_message(command)
        say(event="sent")
os._exit(0)
"""


class PortPeer:
    """The peer process above: ``kind`` is ``keyboard`` or ``sink``, ``name`` its client and port."""

    def __init__(self, kind: str, name: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _PEER, kind, name],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
        )  # fmt: skip
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.messages: queue.Queue[tuple[int, ...]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            item = json.loads(line)
            if item["event"] == "message":
                self.messages.put(tuple(item["data"]))
            else:
                self.lines.put(item)
        self.lines.put(None)

    def _ask(self, command: object, answer: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        try:
            item = self.lines.get(timeout=10)
        except queue.Empty:
            raise AssertionError(f"the peer did not answer {command!r}") from None
        if item is None or item["event"] != answer:
            assert self.process.stderr is not None
            raise AssertionError(f"peer: {command!r} -> {item}; {self.process.stderr.read()[-2000:]}")

    def up(self) -> None:
        """Open the client and its port; returns once it is registered."""
        self._ask("up", "up")

    def down(self) -> None:
        """Delete the client (its port and connections go with it)."""
        self._ask("down", "down")

    def send(self, data: list[int]) -> None:
        self._ask(data, "sent")

    def received(self, count: int, timeout: float = 5.0) -> list[tuple[int, ...]]:
        """The next ``count`` messages a sink got; AssertionError if they do not come."""
        out: list[tuple[int, ...]] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            try:
                out.append(self.messages.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"the peer got {out}, expected {count} messages") from None
        return out

    def stop(self) -> None:
        if self.process.poll() is None and self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.write('"quit"\n')
                self.process.stdin.flush()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(3)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(3)


@contextlib.contextmanager
def peer(kind: str, name: str) -> Iterator[PortPeer]:
    """A :class:`PortPeer` whose port is up, stopped on the way out."""
    p = PortPeer(kind, name)
    try:
        p.up()
        yield p
    finally:
        p.stop()


def wait_for(condition: Callable[[], bool], timeout: float, what: str, *, period: float = 0.002) -> float:
    """Seconds until ``condition()`` held (polled every ``period``); AssertionError after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(period)
    return time.monotonic() - start


def _counts(keeper: Any, counter: str, value: int) -> Callable[[], bool]:
    """Whether ``keeper``'s ``counter`` has reached ``value`` (for :func:`wait_for`)."""
    return lambda: bool(getattr(keeper, counter) >= value)


def own_ports() -> list[str]:
    """livegen's ports in the JACK graph now."""
    from livegen.io.midi_api import is_own_port, list_ports

    inputs, outputs = list_ports("jack")
    return sorted(p for p in {*inputs, *outputs} if is_own_port(p))


def port_cycles(cycles: int, *, poll_s: float = 0.01, warm: int = 5, checkpoints: int = 4) -> dict[str, Any]:
    """``cycles`` disappearances and returns of a keyboard and a synth port (on the JACK server
    ``JACK_DEFAULT_SERVER`` names); the figures of the leak check."""
    from livegen.io import midi_clients
    from livegen.io.midi_input import open_input
    from livegen.io.midi_output import open_output
    from livegen.io.reconnect import PortKeeper

    got: queue.Queue[tuple[int, ...]] = queue.Queue()
    every = max(1, cycles // checkpoints)
    retired_before = len(midi_clients._retired)
    with peer("keyboard", "kbd") as keyboard, peer("sink", "synth") as synth:
        source = open_input("kbd", api="jack", callback=lambda data, t_ns: got.put(data))
        out = open_output("synth", api="jack", virtual=False)
        keeper = PortKeeper("jack", poll_s=poll_s)
        keeper.add(source)
        keeper.add(out)
        try:
            keeper.start()
            ports_before = own_ports()
            back_ns: list[int] = []
            rss: list[int] = []
            before: dict[str, int] = {}
            started = time.monotonic()
            for k in range(cycles + warm):
                if k == warm:
                    before, started = vitals(), time.monotonic()
                if k > warm and (k - warm) % every == 0:
                    rss.append(vitals()["rss_kib"])
                keyboard.send([0x90, 60, 100])  # held when it goes
                if got.get(timeout=5) != (0x90, 60, 100):
                    raise AssertionError(f"cycle {k}: the note-on did not arrive first")
                keyboard.down()
                synth.down()
                wait_for(_counts(keeper, "port_losses", 2 * (k + 1)), 5.0, f"cycle {k}: both ports lost")
                if got.get(timeout=5) != (0x80, 60, 0):
                    raise AssertionError(f"cycle {k}: the held note was not released")
                keyboard.up()
                synth.up()
                took = wait_for(_counts(keeper, "reconnects", 2 * (k + 1)), 5.0, f"cycle {k}: both ports back")
                if k >= warm:
                    back_ns.append(round(took * 1e9))
            seconds = time.monotonic() - started
            after = vitals()
            ports_after = own_ports()
            out.send((0x90, 61, 1))
            still_plays = synth.received(1) == [(0x90, 61, 1)]
            extra: list[tuple[int, ...]] = []
            with contextlib.suppress(queue.Empty):
                while True:
                    extra.append(got.get(timeout=0.2))
        finally:
            keeper.close()
            source.close()
            out.close()
    return {
        "cycles": cycles,
        "poll_s": poll_s,
        "seconds": round(seconds, 2),
        "per_cycle_ms": round(1000 * seconds / cycles, 1),
        "back_after_up": summary_ms(back_ns),  # peer's port registered -> both of livegen's ports play again
        "before": before,
        "after": after,
        "rss_checkpoints_kib": rss,
        "own_ports_before": ports_before,
        "own_ports_after": ports_after,
        "released": source.released,
        "extra_messages": len(extra),
        "retired_clients": len(midi_clients._retired) - retired_before,  # dead clients kept by these cycles
        "port_losses": keeper.port_losses,
        "reconnects": keeper.reconnects,
        "still_plays": still_plays,
    }


def _launch(server: JackServer) -> None:
    """Start ``server``'s jackd again without waiting for it (from this thread: the child ends with it)."""
    server.process = subprocess.Popen(
        ["jackd", "-n", server.name, "-d", "dummy", "-r", str(JACK_RATE), "-p", str(JACK_PERIOD)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=server.env(),
        preexec_fn=_die_with_parent,
    )  # fmt: skip


def _listening(name: str) -> bool:
    from livegen.io.reconnect import JackServerWatch

    watch = JackServerWatch(name)
    return watch.path is not None and watch.identity() is not None


def server_restarts(server: JackServer, restarts: int) -> dict[str, Any]:
    """Kill ``server`` and start it again ``restarts`` times under a virtual output and input."""
    from livegen.io import midi_clients
    from livegen.io.midi_input import open_input
    from livegen.io.midi_output import open_output
    from livegen.io.reconnect import PortKeeper

    assert server.process is not None
    gaps: list[float] = []
    stop = threading.Event()

    def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    out = open_output("livegen", api="jack")
    source = open_input(api="jack", virtual=True, callback=lambda data, t_ns: None)
    keeper = PortKeeper("jack")
    keeper.add(out)
    keeper.add(source)
    back: list[int] = []
    lost: list[int] = []
    loss_gap: list[float] = []  # the longest stall of the ticker from the kill to both ports offline
    return_gap: list[float] = []  # and from the new server's start to both ports open again
    tick = threading.Thread(target=ticker, daemon=True)
    try:
        keeper.start()
        tick.start()
        before = vitals()
        for k in range(restarts):
            gaps.clear()
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait(5)
            lost.append(round(wait_for(_counts(keeper, "port_losses", 2 * (k + 1)), 5.0, "ports lost") * 1e9))
            loss_gap.append(max(gaps))
            gaps.clear()
            _launch(server)  # the same name again
            wait_for(lambda: _listening(server.name), 20.0, "the server listening")
            back.append(round(wait_for(_counts(keeper, "reconnects", 2 * (k + 1)), 10.0, "ports back") * 1e9))
            return_gap.append(max(gaps))
        after = vitals()
        ports = own_ports()
    finally:
        stop.set()
        keeper.close()
        source.close()
        out.close()
    return {
        "restarts": restarts,
        "poll_s": keeper.poll_s,
        "lost_after_kill": summary_ms(lost),
        "back_after_server_listens": summary_ms(back),  # its request socket accepts -> both ports open again
        "longest_stall_of_another_thread_ms": {
            "while_going_offline": summary_ms([round(g * 1e9) for g in loss_gap]),
            "while_opening_again": summary_ms([round(g * 1e9) for g in return_gap]),
        },
        "before": before,
        "after": after,
        "rss_per_restart_kib": round((after["rss_kib"] - before["rss_kib"]) / restarts, 1),
        "own_ports_after": ports,
        "retired_clients": len(midi_clients._retired),
        "port_losses": keeper.port_losses,
        "reconnects": keeper.reconnects,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cycles", type=int, default=1000, help="keyboard and synth port cycles (0: none)")
    parser.add_argument("--restarts", type=int, default=20, help="JACK server restarts (0: none)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    why = JackServer.available()
    if why is not None:
        raise SystemExit(f"cannot run: {why}")
    report: dict[str, Any] = {"machine": machine()}
    if args.cycles:
        with JackServer() as server, jack_env(server):
            report["cycles"] = port_cycles(args.cycles)
        print(json.dumps({"cycles": report["cycles"]}, indent=1), flush=True)
    if args.restarts:
        with JackServer() as server, jack_env(server):
            report["restarts"] = server_restarts(server, args.restarts)
        print(json.dumps({"restarts": report["restarts"]}, indent=1), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
