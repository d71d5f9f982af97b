"""``livegen jam`` end to end on a real JACK server: what was planned arrives at an independent client.

Each test runs the real command in a child process (as a performer would) and a
peer JACK client in another process that records what arrives on the ``livegen``
port with its own timestamps.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from itertools import pairwise

import mido
import pytest

from livegen.music.midifile import read_midi
from tests.jackutil import Peer
from tests.pkgfactory import write_package

pytestmark = [pytest.mark.jack, pytest.mark.slow]


def start_jam(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "livegen", "jam", "--midi-api", "jack", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ),
    )


def collect(peer: Peer, jam: subprocess.Popen[str], timeout: float = 60.0) -> list[dict]:
    """Messages the peer reports until the jam has exited, and all it received before.

    Once the jam has exited (its output port closed after its last message went out),
    the peer is asked to flush: everything it received comes before its ``flushed``
    line, however far behind its printing is on a loaded machine.
    """
    messages: list[dict] = []
    deadline = time.monotonic() + timeout
    flushing = False
    while time.monotonic() < deadline:
        if not flushing and jam.poll() is not None:
            peer.tell("flush")
            flushing, deadline = True, time.monotonic() + 30
        try:
            item = peer.next(timeout=0.2)
        except AssertionError as err:
            if "said nothing" in str(err):
                continue
            raise
        if item.get("event") == "message":
            messages.append(item)
        elif item.get("event") in ("flushed", "done"):
            break
    return messages


def sounding_after(messages: list[dict]) -> Counter:
    counts: Counter = Counter()
    for m in messages:
        status, *rest = m["data"]
        if status & 0xF0 == 0x90 and rest[1] > 0:
            counts[(status & 0x0F, rest[0])] += 1
        elif status & 0xF0 in (0x80, 0x90) and counts[(status & 0x0F, rest[0])] > 0:
            counts[(status & 0x0F, rest[0])] -= 1
    return +counts


def test_seed_phrase_answer_arrives_on_the_livegen_port_and_nothing_is_left_sounding(jack_server, tmp_path):
    package = write_package(tmp_path / "pkg")
    record = tmp_path / "jam.mid"
    peer = Peer("receive", "--port", "livegen", "--count", "100000", "--timeout", "60")
    try:
        jam = start_jam("--model", str(package), "--out", "livegen", "--bars", "1", "--silence", "1",
                        "--record", str(record), "--rng-seed", "3")  # fmt: skip
        assert peer.expect("ready", timeout=30)["port"] == "livegen:livegen"
        messages = collect(peer, jam)
        out, err = jam.communicate(timeout=30)
    finally:
        peer.stop()
    assert jam.returncode == 0, err
    assert f"MIDI recording: {record}" in out
    notes_on = [m for m in messages if m["data"][0] & 0xF0 == 0x90 and m["data"][2] > 0]
    song = read_midi(record)
    planned = sorted((n for n in song.notes if n.start > 0), key=lambda n: n.start)
    model_notes = planned[len(planned) - len(notes_on) :]
    # The notes that arrived are exactly the model's part of the recording, in order.
    assert notes_on, f"nothing arrived; jam said: {out}\n{err}"
    assert [m["data"][1] for m in notes_on] == [n.pitch for n in model_notes]
    # Their spacing matches the plan (ticks at the seed's 120 BPM: 480 ticks = 500 ms).
    arrived = [m["t_ns"] for m in notes_on]
    for (a, b), (n1, n2) in zip(pairwise(arrived), pairwise(model_notes), strict=True):
        planned_ms = (n2.start - n1.start) * 500 / 480
        assert abs((b - a) / 1e6 - planned_ms) < 15, (planned_ms, (b - a) / 1e6)
    # After the stop nothing sounds, and the stop ends with sustain off, all notes off, all sound off.
    assert not sounding_after(messages)
    assert [m["data"] for m in messages[-3:]] == [[0xB0, 64, 0], [0xB0, 123, 0], [0xB0, 120, 0]]


def test_keyboard_phrase_is_answered_and_playing_again_stops_the_answer(jack_server, tmp_path):
    package = write_package(tmp_path / "pkg")
    keys = Peer("send", "--name", "keys")
    listener = None
    try:
        keys.expect("ready", timeout=30)
        listener = Peer("receive", "--port", "livegen", "--count", "100000", "--timeout", "60")
        jam = start_jam("--model", str(package), "--in", "keys", "--out", "livegen", "--bars", "8",
                        "--silence", "1", "--tempo", "120", "--max-seconds", "12",
                        "--record", str(tmp_path / "k.mid"))  # fmt: skip
        listener.expect("ready", timeout=30)
        time.sleep(1.0)  # the jam opens its input after its output
        for pitch in (60, 64, 67):
            keys.send([0x90, pitch, 100])
            time.sleep(0.2)
            keys.send([0x80, pitch, 0])
        # The answer starts about one beat (500 ms) after the last release.
        first = listener.expect("message", timeout=5)
        assert first["data"][0] == 0x90
        time.sleep(1.2)
        interrupt = keys.send([0x90, 72, 100])
        keys.send([0x80, 72, 0])
        messages = [first, *collect(listener, jam, timeout=30)]
        out, err = jam.communicate(timeout=30)
    finally:
        keys.stop()
        if listener is not None:
            listener.stop()
    assert jam.returncode == 0, err
    assert "keys" in out  # the input it listened to
    before = [m for m in messages if m["t_ns"] < interrupt["t_ns"]]
    after = [m for m in messages if interrupt["t_ns"] <= m["t_ns"] < interrupt["t_ns"] + 400_000_000]
    assert before and any(m["data"][0] == 0x90 for m in before)
    # Playing again silences the answer at once: within 400 ms only note-offs arrive, and nothing sounds.
    assert all(m["data"][0] & 0xF0 == 0x80 for m in after), after
    assert not sounding_after([m for m in messages if m["t_ns"] < interrupt["t_ns"] + 400_000_000])
    assert not sounding_after(messages)


def test_unknown_input_port_is_a_clear_error(jack_server, tmp_path):
    package = write_package(tmp_path / "pkg")
    jam = start_jam("--model", str(package), "--in", "no-such-keyboard", "--out", "none", "--out-dir", str(tmp_path))
    _, err = jam.communicate(timeout=60)
    assert jam.returncode == 2
    assert "Traceback" not in err
    assert "no-such-keyboard" in err and "available" in err


def test_unknown_output_port_is_a_clear_error(jack_server, tmp_path):
    package = write_package(tmp_path / "pkg")
    jam = start_jam("--model", str(package), "--out", "no-such-daw", "--out-dir", str(tmp_path))
    _, err = jam.communicate(timeout=60)
    assert jam.returncode == 2
    assert "Traceback" not in err
    assert "no-such-daw" in err


@pytest.mark.parametrize("mode", ["call-response", "accompany"])
def test_sigterm_mid_answer_silences_everything_and_keeps_the_recording(jack_server, tmp_path, mode):
    package = write_package(tmp_path / "pkg")
    record = tmp_path / "term.mid"
    peer = Peer("receive", "--port", "livegen", "--count", "100000", "--timeout", "60")
    try:
        jam = start_jam("--model", str(package), "--out", "livegen", "--bars", "16", "--silence", "1",
                        "--record", str(record), "--mode", mode, "--listen", "1")  # fmt: skip
        peer.expect("ready", timeout=30)
        first = peer.expect("message", timeout=20)
        assert first["data"][0] == 0x90
        time.sleep(0.7)
        jam.terminate()
        messages = [first, *collect(peer, jam, timeout=30)]
        _, err = jam.communicate(timeout=30)
    finally:
        peer.stop()
    assert jam.returncode == 0, err
    assert not sounding_after(messages)
    assert [m["data"] for m in messages[-3:]] == [[0xB0, 64, 0], [0xB0, 123, 0], [0xB0, 120, 0]]
    song = read_midi(record)  # written on the way out, with what was played so far
    assert any(n.pitch == first["data"][1] for n in song.notes)
    tracks = {t.name: sum(m.type == "note_on" and m.velocity > 0 for m in t) for t in mido.MidiFile(record).tracks}
    assert tracks.get("performer", 0) > 0 and tracks.get("livegen", 0) > 0  # each part on its own track
