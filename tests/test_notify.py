"""systemd supervision: READY=1 once the scheduler turns, WATCHDOG=1 only while its heartbeat is fresh,
STOPPING=1 on the way out, and nothing at all without NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from livegen.engine.notify import Notifier, Supervisor, heartbeat_fresh, watchdog_interval_ns
from livegen.engine.scheduler import BEAT_NS, Scheduled, Scheduler
from livegen.io.base import MemoryOutput

MS = 1_000_000
S = 1_000_000_000


# ---- the decision, on an injected clock ---------------------------------------------------------


def test_watchdog_interval_comes_from_watchdog_usec_for_this_process_only():
    assert watchdog_interval_ns({}) is None
    assert watchdog_interval_ns({"WATCHDOG_USEC": "10000000"}) == 10 * S
    assert watchdog_interval_ns({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "42"}, pid=42) == 10 * S
    assert watchdog_interval_ns({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "42"}, pid=43) is None  # a child's
    assert watchdog_interval_ns({"WATCHDOG_USEC": "ten"}) is None
    assert watchdog_interval_ns({"WATCHDOG_USEC": "0"}) is None


def test_a_heartbeat_is_fresh_only_when_taken_and_younger_than_the_limit():
    assert not heartbeat_fresh(0, 5 * S, S)  # never beat: the scheduler has not started
    assert heartbeat_fresh(5 * S, 5 * S + 999 * MS, S)
    assert not heartbeat_fresh(5 * S, 6 * S, S)
    assert heartbeat_fresh(5 * S + 1, 5 * S, S)  # stored just after the clock was read


class FakeNotifier:
    enabled = True

    def __init__(self):
        self.messages: list[str] = []

    def send(self, state):
        self.messages.append(state)

    def close(self):
        self.enabled = False


class Beat:
    heartbeat_ns = 0


def test_supervisor_says_ready_at_the_first_heartbeat_and_feeds_the_watchdog_only_while_it_is_fresh():
    now = [100 * S]
    beat, notifier = Beat(), FakeNotifier()
    sup = Supervisor(beat, notifier=notifier, interval_ns=2 * S, clock=lambda: now[0], status="playing x")
    assert sup.fresh_limit_ns == S and sup.period_s == 0.5
    assert sup.tick() and notifier.messages == []  # the scheduler has not turned yet: not ready
    beat.heartbeat_ns = now[0]
    now[0] += 10 * MS
    assert sup.tick()
    assert notifier.messages == ["READY=1\nSTATUS=playing x", "WATCHDOG=1"]
    now[0] += 990 * MS - 1  # heartbeat 999.99... ms old: still fresh
    sup.tick()
    assert notifier.messages[-1] == "WATCHDOG=1" and sup.fed == 2
    now[0] += 1  # exactly half the interval: stale, nothing is sent
    sup.tick()
    now[0] += 5 * S
    sup.tick()
    assert notifier.messages.count("WATCHDOG=1") == 2 and sup.withheld == 2
    beat.heartbeat_ns = now[0]  # the loop turns again: keep-alives resume
    sup.tick()
    assert notifier.messages.count("WATCHDOG=1") == 3
    sup.stopping()
    sup.stopping()
    assert notifier.messages[-1] == "STOPPING=1" and notifier.messages.count("STOPPING=1") == 1
    beat.heartbeat_ns = now[0]
    assert not sup.tick() and notifier.messages[-1] == "STOPPING=1"  # nothing after STOPPING


def test_without_a_watchdog_only_ready_and_stopping_are_sent():
    beat, notifier = Beat(), FakeNotifier()
    sup = Supervisor(beat, notifier=notifier, interval_ns=0, clock=lambda: 5 * S)
    beat.heartbeat_ns = 5 * S
    assert not sup.tick()  # READY was all there was to do
    sup.close()
    assert notifier.messages == ["READY=1", "STOPPING=1"]


def test_without_notify_socket_nothing_is_created_or_sent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled and notifier._notifier is None
    sup = Supervisor(Beat(), notifier=notifier, interval_ns=S)
    sup.start()
    assert sup._thread is None
    sup.close()
    assert notifier.sent == 0


def test_an_unreachable_notify_socket_is_reported_and_disabled(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    notifier = Notifier()
    assert not notifier.enabled
    notifier.send("READY=1")
    assert notifier.sent == 0 and "cannot be reached" in caplog.text


# ---- the scheduler's heartbeat --------------------------------------------------------------------


class StuckOutput(MemoryOutput):
    """An output whose send hangs until released: a wedged port, the scheduler stuck in it."""

    def __init__(self):
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def _send(self, data):
        self.entered.set()
        self.release.wait(30)
        super()._send(data)


def test_the_scheduler_beats_while_idle_and_while_waiting_for_a_far_deadline():
    out = MemoryOutput()
    sched = Scheduler([[out]], tick_of=lambda ns: 0, rt_priority=None)
    assert sched.heartbeat_ns == 0
    sched.start()
    try:
        time.sleep(0.7)  # idle: nothing pending, the loop still turns every BEAT_NS
        assert 0 < time.perf_counter_ns() - sched.heartbeat_ns <= BEAT_NS + 150 * MS
        far = time.perf_counter_ns() + 30 * S
        sched.submit([Scheduled(far, 0, (0x90, 60, 100))])
        time.sleep(0.7)
        assert 0 < time.perf_counter_ns() - sched.heartbeat_ns <= BEAT_NS + 150 * MS
        assert out.messages == []  # woke to beat, never sent early
    finally:
        sched.stop()


# ---- a real datagram socket ---------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    """A UNIX datagram socket standing in for systemd's, with NOTIFY_SOCKET pointing at it."""
    path = tmp_path / "notify.sock"
    if len(str(path)) > 100:  # sun_path holds 108 bytes
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"livegen-notify-{os.getpid()}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock, path
    sock.close()
    path.unlink(missing_ok=True)


def receive(sock: socket.socket, seconds: float) -> list[str]:
    """Every datagram that arrives within ``seconds``."""
    got, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    return got


def test_a_stuck_scheduler_stops_the_keepalives_on_a_real_socket(notify_socket):
    sock, _ = notify_socket
    stuck = StuckOutput()
    sched = Scheduler([[stuck]], tick_of=lambda ns: 0, rt_priority=None)
    sup = Supervisor(sched, notifier=Notifier(), interval_ns=S)  # keep-alives every 250 ms, fresh below 500 ms
    assert sup.notifier.enabled
    sup.start()
    sched.start()
    try:
        running = receive(sock, 1.2)
        assert running[0].splitlines()[0] == "READY=1"
        assert running[1:].count("WATCHDOG=1") >= 3 and set(running[1:]) == {"WATCHDOG=1"}
        sched.submit([Scheduled(time.perf_counter_ns(), 0, (0x90, 60, 100))])  # the send hangs
        assert stuck.entered.wait(5)
        receive(sock, 0.6)  # the last keep-alives of a fresh heartbeat (it is at most 500 ms old)
        assert receive(sock, 1.5) == []  # then none: systemd would restart the service
        assert sup.withheld >= 3
    finally:
        stuck.release.set()
        sched.stop()
        sup.close()
    assert receive(sock, 0.5) == ["STOPPING=1"]


# ---- the jam, started as systemd would ---------------------------------------------------------


@pytest.mark.slow
def test_the_jam_says_ready_feeds_the_watchdog_and_says_stopping(notify_socket, tmp_path):
    sock, path = notify_socket
    env = {**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "livegen", "jam", "--out", "none", "--mode", "autonomous",
         "--max-seconds", "3", "--out-dir", str(tmp_path / "out")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        messages: list[str] = []
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            messages += receive(sock, 0.2)
        messages += receive(sock, 0.3)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert messages, err
    assert messages[0].splitlines() == ["READY=1", "STATUS=playing folk-lstm (autonomous)"]
    assert messages[-1] == "STOPPING=1"
    keepalives = messages[1:-1]
    # 3 s of play, a check every 250 ms: about 12 keep-alives, and nothing else in between
    assert set(keepalives) == {"WATCHDOG=1"} and len(keepalives) >= 8, messages
