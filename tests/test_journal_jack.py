"""Crash cleanup end to end on a real JACK server: ``kill -9``, restart, and what a synth hears first.

A process holding notes on the ``livegen`` port is killed with SIGKILL; the next
``livegen jam --out livegen`` must send, before any note of its own, exactly the
note-offs of what was left sounding and then sustain off, all notes off and all sound
off on every channel that was used. Independent peer clients (tests/jackutil.py)
listen on the port in their own processes. Journals go to a test folder
(``LIVEGEN_STATE_DIR``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from livegen.io.journal import STATE_DIR_ENV
from tests.jackutil import Peer
from tests.pkgfactory import write_package
from tests.test_jam_jack import collect, sounding_after, start_jam
from tests.test_journal import TEN_CLEANUP, TEN_HELD

pytestmark = [pytest.mark.jack, pytest.mark.slow]

#: A process that opens the model's port exactly as ``livegen jam`` does, says "ready",
#: sends the JSON list of messages it is given on its stdin, says "sent" and waits to be killed.
HOLDER = r"""
import json, sys
from livegen.engine.jam import open_port_output

port = open_port_output("livegen", "jack")
print("ready", flush=True)
messages = json.loads(sys.stdin.readline())
for data in messages:
    port.send(data)
print("sent", flush=True)
sys.stdin.readline()
"""


def cleanup_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "did not end cleanly" in line]


def test_after_kill_9_the_next_jam_sends_exactly_the_cleanup_before_any_note(jack_server, tmp_path, monkeypatch):
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "state"))
    package = write_package(tmp_path / "pkg")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    heard = Peer("receive", "--port", "livegen", "--count", str(len(TEN_HELD)), "--timeout", "30")
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "ready", holder.stderr
        assert heard.expect("ready", timeout=30)["port"] == "livegen:livegen"
        holder.stdin.write(json.dumps(TEN_HELD) + "\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "sent"
        got = [heard.expect("message", timeout=10)["data"] for _ in TEN_HELD]
        assert got == TEN_HELD  # the synth side really holds ten notes, sustain down on three channels
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        heard.stop()
    assert holder.returncode == -signal.SIGKILL
    journals = list((tmp_path / "state").iterdir())
    assert len(journals) == 1  # what the killed process left
    time.sleep(0.3)  # let JACK drop the dead client's port before the next listener looks for one

    record = tmp_path / "after.mid"
    listener = Peer("receive", "--port", "livegen", "--count", "100000", "--timeout", "60")
    try:
        jam = start_jam("--model", str(package), "--out", "livegen", "--bars", "1", "--silence", "1",
                        "--record", str(record), "--rng-seed", "3")  # fmt: skip
        ready = listener.expect("ready", timeout=30)
        ready_ns = time.perf_counter_ns()
        assert ready["port"] == "livegen:livegen"
        messages = collect(listener, jam)
        _, err = jam.communicate(timeout=30)
    finally:
        listener.stop()
    assert jam.returncode == 0, err
    data = [tuple(m["data"]) for m in messages]
    first_on = next(i for i, d in enumerate(data) if d[0] & 0xF0 == 0x90 and d[2] > 0)
    # Exactly the cleanup, first: ten note-offs, then CC64=0, CC123, CC120 on channels 1, 2 and 10.
    assert data[: len(TEN_CLEANUP)] == TEN_CLEANUP, data[:25]
    assert first_on == len(TEN_CLEANUP)  # and then the jam's own notes
    assert not sounding_after(messages), (data[-12:], err)
    warnings = cleanup_warnings(err)
    assert len(warnings) == 1, err
    assert "sent the note-offs of 10 notes left sounding (sustain was down on channels 1, 2, 10)" in warnings[0]
    assert not list((tmp_path / "state").iterdir())  # the jam ended cleanly: no journal left
    took_ms = (messages[len(TEN_CLEANUP) - 1]["t_ns"] - messages[0]["t_ns"]) / 1e6
    after_ready_ms = (messages[0]["t_ns"] - ready_ns) / 1e6
    print(f"\ncleanup: {len(TEN_CLEANUP)} messages in {took_ms:.2f} ms, first {after_ready_ms:.0f} ms after the "
          f"listener connected; first new note {(messages[first_on]['t_ns'] - messages[0]['t_ns']) / 1e6:.0f} ms "
          "after the cleanup began")  # fmt: skip


def test_a_jam_killed_mid_answer_is_cleaned_up_by_the_next_one(jack_server, tmp_path, monkeypatch):
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "state"))
    package = write_package(tmp_path / "pkg")
    heard = Peer("receive", "--port", "livegen", "--count", "100000", "--timeout", "60")
    try:
        jam = start_jam("--model", str(package), "--out", "livegen", "--bars", "16", "--silence", "1",
                        "--record", str(tmp_path / "killed.mid"), "--mode", "accompany", "--listen", "1")  # fmt: skip
        heard.expect("ready", timeout=30)
        before = [heard.expect("message", timeout=20)]
        assert before[0]["data"][0] & 0xF0 == 0x90
        started = time.monotonic()
        while True:  # after half a second, kill it the moment a note has begun
            before.append(heard.expect("message", timeout=10))
            status, _, velocity = before[-1]["data"]
            if time.monotonic() - started > 0.5 and status & 0xF0 == 0x90 and velocity > 0:
                break
        os.kill(jam.pid, signal.SIGKILL)
        jam.wait(timeout=10)
        before += collect(heard, jam, timeout=5)
    finally:
        if jam.poll() is None:
            jam.kill()
            jam.wait()
        heard.stop()
    for stream in (jam.stdout, jam.stderr):
        if stream is not None:
            stream.close()
    assert jam.returncode == -signal.SIGKILL
    left_sounding = sounding_after(before)
    assert left_sounding  # killed while a note sounded
    used = sorted({m["data"][0] & 0x0F for m in before if m["data"][0] & 0xF0 in (0x80, 0x90, 0xB0)})
    time.sleep(0.3)

    listener = Peer("receive", "--port", "livegen", "--count", "100000", "--timeout", "60")
    try:
        again = start_jam("--model", str(package), "--out", "livegen", "--bars", "1", "--silence", "1",
                          "--record", str(tmp_path / "again.mid"))  # fmt: skip
        listener.expect("ready", timeout=30)
        after = collect(listener, again)
        _, err = again.communicate(timeout=30)
    finally:
        listener.stop()
    assert again.returncode == 0, err
    data = [tuple(m["data"]) for m in after]
    first_on = next(i for i, d in enumerate(data) if d[0] & 0xF0 == 0x90 and d[2] > 0)
    cleanup = data[:first_on]
    offs = [d for d in cleanup if d[0] & 0xF0 == 0x80]
    ccs = [d for d in cleanup if d[0] & 0xF0 == 0xB0]
    assert cleanup == offs + ccs  # note-offs first, then the controllers
    # Every note the listener heard still sounding gets its note-off (the journal may also hold
    # a note-on that was in JACK's buffer when the process died, never less than what sounds).
    for (channel, pitch), count in left_sounding.items():
        assert offs.count((0x80 | channel, pitch, 0)) >= count, (left_sounding, offs)
    assert ccs == [(0xB0 | ch, cc, 0) for ch in used for cc in (64, 123, 120)]
    assert len(cleanup_warnings(err)) == 1, err
    print(f"\nkilled with {sum(left_sounding.values())} note(s) sounding on channel(s) {used}; cleanup sent: {cleanup}")
