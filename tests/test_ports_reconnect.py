"""Ports come and go: a lost keyboard, synth port or JACK server is counted, its held
notes released, and it plays again within 2 s of coming back, leaking nothing.

A peer process owns the ports livegen connects to and makes them appear and disappear on
command (its JACK client is opened and deleted, as when a program quits or a USB keyboard
is unplugged). The server restart runs a real ``livegen jam`` against a JACK server of
the test's own, killed with SIGKILL and started again under the same name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.reconnect import peer, port_cycles, wait_for
from livegen.io import patchbay
from livegen.io.journal import guard_output
from livegen.io.midi_input import open_input
from livegen.io.midi_output import open_output
from livegen.io.reconnect import JackServerWatch, PortKeeper
from tests.conftest import JACKD_MISSING
from tests.jackutil import JackServer, Peer, find_jackd
from tests.pkgfactory import write_package
from tests.test_jam_jack import start_jam


def drain(q: queue.Queue[Any], settle: float = 0.3) -> list[Any]:
    out = []
    with contextlib.suppress(queue.Empty):
        while True:
            out.append(q.get(timeout=settle))
    return out


# --- the server watch, without JACK ----------------------------------------------------

_LISTEN = """
import socket, sys, time
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(sys.argv[1])
server.listen(8)
print("listening", flush=True)
sys.stdin.read()
"""


def test_the_server_watch_tells_a_server_gone_from_one_restarted(tmp_path, monkeypatch):
    folder = tmp_path / "shm"
    folder.mkdir()
    path = folder / f"jack_fake_{os.getuid()}_0"
    monkeypatch.setattr(JackServerWatch, "candidates", lambda self: [str(path)])
    assert JackServerWatch("fake").path is None  # no socket: nothing to watch

    def listen() -> socket.socket:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        server.listen(8)
        return server

    server = listen()
    watch = JackServerWatch("fake")
    assert watch.path == str(path)
    first = watch.identity()
    assert first is not None and first[0] == os.getpid()  # the peer credentials name the listening process
    assert watch.identity() == first
    server.close()  # killed: the socket file stays, nobody listens
    assert watch.identity() is None
    path.unlink()  # stopped cleanly: no socket file
    assert watch.identity() is None
    # started again: another process listens on the same path
    child = subprocess.Popen(
        [sys.executable, "-c", _LISTEN, str(path)], stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "listening"
        again = watch.identity()
        assert again is not None and again[0] == child.pid != first[0]
    finally:
        child.kill()
        child.wait(5)


# --- a keyboard and a synth port that come and go (the session's JACK server) ------------


@pytest.mark.jack
def test_a_keyboard_unplugged_mid_chord_is_released_counted_and_heard_again_within_2_s(jack_server, caplog):
    caplog.set_level(logging.INFO, logger="livegen.io.reconnect")
    got: queue.Queue[tuple[int, ...]] = queue.Queue()
    with peer("keyboard", "kbd") as keyboard:
        source = open_input("kbd", api="jack", callback=lambda data, t_ns: got.put(data))
        keeper = PortKeeper("jack")  # as a jam has it: a look every 0.25 s
        keeper.add(source)
        try:
            keeper.start()
            played = [[0x90, 60, 100], [0x90, 64, 90], [0x91, 67, 80], [0x91, 67, 0], [0xB0, 64, 127]]
            for data in played:
                keyboard.send(data)
            assert [got.get(timeout=5) for _ in played] == [tuple(d) for d in played]

            keyboard.down()  # unplugged: C and E held on channel 1, the pedal down
            wait_for(lambda: keeper.port_losses == 1, 2.0, "the lost keyboard counted")
            assert drain(got) == [(0x80, 60, 0), (0x80, 64, 0), (0xB0, 64, 0)]
            time.sleep(3 * keeper.poll_s)
            gone = [r for r in caplog.records if "went away" in r.getMessage()]
            assert len(gone) == 1 and gone[0].levelno == logging.WARNING  # said once, not every look
            assert "'kbd:kbd'" in gone[0].getMessage() and "matching 'kbd'" in gone[0].getMessage()

            keyboard.up()  # plugged in again
            back = time.monotonic()
            while got.empty():
                assert time.monotonic() - back < 5, "the keyboard is not heard again"
                keyboard.send([0x92, 72, 1])
            heard = time.monotonic() - back
            print(f"\nkeyboard heard again {heard * 1000:.0f} ms after its port came back (looks every 0.25 s)")
            assert heard < 2.0
            assert got.get() == (0x92, 72, 1)
            assert keeper.reconnects == 1 and keeper.port_losses == 1
            assert source.port == "kbd:kbd" and source.released == 3
        finally:
            keeper.close()
            source.close()


@pytest.mark.jack
def test_a_synth_port_that_goes_away_counts_what_is_sent_and_is_cleaned_up_when_it_is_back(jack_server):
    with peer("sink", "synth") as synth:
        out = open_output("synth", api="jack", virtual=False)
        guard_output(out)  # the crash journal knows what sounds
        keeper = PortKeeper("jack", poll_s=0.05)
        keeper.add(out)
        try:
            keeper.start()
            out.send((0x90, 60, 100))
            out.send((0xB0, 64, 127))
            assert synth.received(2) == [(0x90, 60, 100), (0xB0, 64, 127)]

            synth.down()  # the synth quits while a note sounds and the pedal is down
            wait_for(lambda: not out.online, 2.0, "the output offline")
            for _ in range(10):
                out.send((0x90, 62, 100))  # nowhere to go: counted, never handed to the backend
            assert out.errors == 10 and keeper.port_losses == 1

            synth.up()
            took = wait_for(lambda: out.online, 2.0, "the output online again")
            print(f"\nsynth port connected again {took * 1000:.0f} ms after it came back (looks every 0.05 s)")
            out.send((0x90, 65, 100))
            # first the cleanup of what sounded when it was lost, then what plays now
            cleanup = [(0x80, 60, 0), (0xB0, 64, 0), (0xB0, 123, 0), (0xB0, 120, 0)]
            assert synth.received(5) == [*cleanup, (0x90, 65, 100)]
            assert keeper.reconnects == 1 and out.port == "synth:synth"
            out.send((0x80, 65, 0))
        finally:
            keeper.close()
            out.close()


@pytest.mark.jack
def test_livegen_s_own_ports_stay_registered_and_a_hand_made_connection_survives_a_reconnect(jack_server):
    """On JACK the patchbay connects by name: livegen's own port is never unregistered while
    its peer comes and goes (that port churn once crashed the process on a JACK thread), so
    its identity stays and a connection a user made to it by hand stays too."""
    import jack as jack_client  # JACK-Client, the library livegen.io.patchbay connects with

    with peer("sink", "synth") as synth, peer("sink", "recorder") as recorder:
        out = open_output("synth", api="jack", virtual=False)
        keeper = PortKeeper("jack", poll_s=0.02)
        keeper.add(out)
        looker = jack_client.Client("livegen-test-looker", no_start_server=True)
        try:
            keeper.start()
            assert out.own == "livegen:livegen"
            uuid = looker.get_port_by_name(out.own).uuid
            looker.connect(out.own, "recorder:recorder")  # a user patches livegen into a recorder too
            for k in range(5):
                synth.down()
                wait_for(lambda k=k: keeper.port_losses == k + 1, 2.0, "the synth lost")
                synth.up()
                wait_for(lambda k=k: keeper.reconnects == k + 1, 2.0, "the synth connected again")
            assert looker.get_port_by_name(out.own).uuid == uuid  # the same port all along
            out.send((0x90, 60, 100))
            assert synth.received(1) == [(0x90, 60, 100)]
            assert recorder.received(1) == [(0x90, 60, 100)]  # the hand-made connection is still there
            out.send((0x80, 60, 0))
        finally:
            looker.close()
            keeper.close()
            out.close()


@pytest.mark.jack
@pytest.mark.slow
def test_connected_ports_are_connected_again_after_a_jack_server_restart(own_jack_server):
    """The patchbay belongs to the dead server: a new one connects the new ports on the new server."""
    server = own_jack_server
    got: queue.Queue[tuple[int, ...]] = queue.Queue()
    with contextlib.ExitStack() as stack:
        keyboard = stack.enter_context(peer("keyboard", "kbd"))
        synth = stack.enter_context(peer("sink", "synth"))
        source = open_input("kbd", api="jack", callback=lambda data, t_ns: got.put(data))
        out = open_output("synth", api="jack", virtual=False)
        keeper = PortKeeper("jack", poll_s=0.05)
        keeper.add(source)
        keeper.add(out)
        try:
            keeper.start()
            keyboard.send([0x90, 60, 100])
            assert got.get(timeout=5) == (0x90, 60, 100)

            assert server.process is not None
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait(5)
            wait_for(lambda: keeper.port_losses == 2, 3.0, "both ports lost with the server")
            assert drain(got) == [(0x80, 60, 0)]  # the held note released
            server.start()
            server.wait_ready(timeout=20.0)
            wait_for(lambda: out.client is not None and source.client is not None, 5.0, "clients on the new server")
            # the keyboard's and the synth's programs quit with their server and start again (a
            # program left running beside its namesake would share JACK's wake-up semaphore with it)
            keyboard.stop()
            synth.stop()
            keyboard = stack.enter_context(peer("keyboard", "kbd"))
            synth = stack.enter_context(peer("sink", "synth"))
            wait_for(lambda: keeper.reconnects == 2, 3.0, "both ports connected again")
            keyboard.send([0x90, 62, 100])
            assert got.get(timeout=5) == (0x90, 62, 100)
            out.send((0x90, 64, 100))
            assert synth.received(1) == [(0x90, 64, 100)]
            assert (source.own, out.own) == ("livegen in:livegen in", "livegen:livegen")
        finally:
            keeper.close()
            source.close()
            out.close()
            patchbay.forget()


@pytest.mark.jack
@pytest.mark.slow
def test_a_hundred_comings_and_goings_leak_no_client_port_thread_or_memory(jack_server):
    """CI runs 100 cycles; ``python -m benchmarks.reconnect`` runs 1000 with the same code."""
    figures = port_cycles(100)
    print(f"\n{json.dumps(figures)}")
    assert figures["own_ports_before"] == figures["own_ports_after"] == ["livegen in:livegen in", "livegen:livegen"]
    before, after = figures["before"], figures["after"]
    assert after["threads"] == before["threads"] and after["fds"] == before["fds"]
    # Memory: flat once warm. Between the checkpoints after cycles 25 and 75 a leaked client
    # (about 80 KiB each) or port would add megabytes; the allocator's one-time growth in the
    # first cycles (up to 2.8 MB inside the full suite's 860 MB process) is bounded apart.
    checkpoints = figures["rss_checkpoints_kib"]
    assert len(checkpoints) == 3 and checkpoints[-1] - checkpoints[0] < 1024, checkpoints
    assert after["rss_kib"] - before["rss_kib"] < 8192
    assert figures["released"] == 105 and figures["extra_messages"] == 0  # one note-off per note held, no more
    assert figures["retired_clients"] == 0 and figures["still_plays"]
    assert figures["back_after_up"]["max_ms"] < 2000


# --- the JACK server restarted under a jam ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
        text = answer.read().decode()
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^(livegen_[a-z_]+)(?:\{[^}]*\})? (\S+)$", text, re.MULTILINE)
        if "{" not in m.group(0)
    }


def _listening(name: str) -> bool:
    watch = JackServerWatch(name)
    return watch.path is not None and watch.identity() is not None


@pytest.fixture
def own_jack_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JackServer]:
    """A JACK server of this test alone (it is killed and started again), stopped by its PID."""
    jackd = find_jackd()
    if jackd is None:
        pytest.skip(JACKD_MISSING)
    server = JackServer(jackd, f"lgr-{os.getpid()}-{secrets.token_hex(2)}", tmp_path)
    server.start()
    try:
        server.wait_ready(timeout=20.0)
        monkeypatch.setenv("JACK_DEFAULT_SERVER", server.name)
        yield server
    finally:
        server.stop()


@pytest.mark.jack
@pytest.mark.slow
def test_a_jam_plays_on_through_a_jack_server_restart_and_opens_its_ports_again_within_2_s(own_jack_server, tmp_path):
    server = own_jack_server
    package = write_package(tmp_path / "pkg")
    health = _free_port()
    jam = start_jam("--model", str(package), "--mode", "autonomous", "--in", "virtual", "--out", "livegen",
                    "--clock-out", "--tempo", "150", "--no-commands", "--max-seconds", "40", "--health-port",
                    str(health), "--record", str(tmp_path / "restart.mid"))  # fmt: skip
    receivers: list[Peer] = []
    try:
        receivers.append(Peer("receive", "--port", "livegen", "--count", "48", "--timeout", "30"))
        assert receivers[-1].expect("ready", timeout=30)["port"] == "livegen:livegen"
        assert receivers[-1].expect("message", timeout=10)["data"]  # it plays
        wait_for(lambda: _metrics(health).get("livegen_healthy") == 1, 10, "the jam healthy", period=0.02)

        os.kill(server.process.pid, signal.SIGKILL)  # the server dies under the jam
        server.process.wait(5)
        wait_for(lambda: _metrics(health)["livegen_port_losses_total"] >= 2, 3, "both ports counted lost", period=0.02)
        time.sleep(1.0)
        during = _metrics(health)
        assert jam.poll() is None
        assert during["livegen_healthy"] == 1 and during["livegen_scheduler_heartbeat_age_seconds"] < 0.5
        assert during["livegen_send_errors_total"] > 0  # the clock goes on; its pulses are counted, not sent

        server.start()  # the same server name again
        wait_for(lambda: _listening(server.name), 20, "the server listening")
        back = wait_for(
            lambda: _metrics(health)["livegen_reconnects_total"] >= 2, 5, "both ports opened again", period=0.02
        )
        print(f"\nports opened again {back * 1000:.0f} ms after the restarted server accepted connections")
        assert back < 2.0
        server.wait_ready(timeout=20.0)
        receivers.append(Peer("receive", "--port", "livegen", "--count", "48", "--timeout", "30"))
        assert receivers[-1].expect("ready", timeout=30)["port"] == "livegen:livegen"
        pulses = [receivers[-1].expect("message", timeout=10) for _ in range(48)]
        assert sum(1 for m in pulses if m["data"] == [0xF8]) >= 40  # the clock plays on the new server
        sender = Peer("clock", "--name", "daw", "--dest", "livegen in", "--plan", json.dumps([{"wait": 0}]))
        receivers.append(sender)
        assert sender.expect("ready", timeout=30)["dest"] == "livegen in:livegen in"  # the input is back too
        after = _metrics(health)
        # the dead output client was retired, not deleted: deleting it stops every thread for 1 s
        assert after["livegen_max_late_send_seconds"] < 0.5
        jam.send_signal(signal.SIGTERM)
        out, err = jam.communicate(timeout=30)
    finally:
        for receiver in receivers:
            receiver.stop()
        if jam.poll() is None:
            jam.kill()
            jam.communicate(timeout=10)
    assert jam.returncode == 0, err
    assert "the JACK server" in err and "went away" in err and "is back" in err
    assert re.search(r"MIDI ports went away (\d+) time\(s\) and played again (\d+) time\(s\)", out), out
