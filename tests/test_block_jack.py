"""The bundled ``block`` models play live: accompanying a keyboard over JACK, and on their own from the seed.

Each jam runs the real command in a child process; a peer JACK client plays the
keyboard and another records what arrives on the ``livegen`` port.
"""

from __future__ import annotations

import time

import mido
import pytest

from livegen.models.registry import resolve_package
from livegen.music.midifile import read_midi
from tests.jackutil import Peer
from tests.test_jam_jack import collect, sounding_after, start_jam

pytestmark = [pytest.mark.jack, pytest.mark.slow]

BLOCK_MODELS = ["midigan", "imagegan", "crnngan", "multitrack-cnn"]


def seed_of(model: str):
    return resolve_package(model) / "seed.mid"


def track_notes(path) -> dict[str, int]:
    """Note-ons per named track of a recording."""
    counts = {}
    for track in mido.MidiFile(path).tracks:
        counts[track.name] = sum(1 for m in track if m.type == "note_on" and m.velocity > 0)
    return counts


@pytest.mark.parametrize("mode", ["accompany", "autonomous"])
@pytest.mark.parametrize("model", BLOCK_MODELS)
def test_plays_with_a_keyboard_and_leaves_nothing_sounding(jack_server, tmp_path, model, mode):
    """Accompany waits for the performer; autonomous plays from its seed and yields when the performer plays."""
    record = tmp_path / "take.mid"
    keys = Peer("send", "--name", "keys")
    listener = None
    try:
        keys.expect("ready", timeout=30)
        listener = Peer("receive", "--port", "livegen", "--count", "100000", "--timeout", "60")
        jam = start_jam("--model", model, "--mode", mode, "--in", "keys", "--out", "livegen",
                        "--tempo", "120", "--max-seconds", "9", "--rng-seed", "1",
                        "--record", str(record))  # fmt: skip
        listener.expect("ready", timeout=30)
        time.sleep(1.0)  # the jam opens its input after its output
        played_at = None
        for pitch in (60, 64, 67, 72, 67, 64):  # a C major arpeggio in eighths
            sent = keys.send([0x90, pitch, 100])
            played_at = played_at or sent["t_ns"]
            time.sleep(0.2)
            keys.send([0x80, pitch, 0])
            time.sleep(0.05)
        messages = collect(listener, jam, timeout=40)
        out, err = jam.communicate(timeout=30)
    finally:
        keys.stop()
        if listener is not None:
            listener.stop()
    assert jam.returncode == 0, err
    ons = [m for m in messages if m["data"][0] & 0xF0 == 0x90 and m["data"][2] > 0]
    assert len(ons) >= 4, f"{model} played {len(ons)} notes; jam said: {out}\n{err}"
    if mode == "accompany":
        assert all(m["t_ns"] >= played_at for m in ons)  # it waits for the performer
    assert not sounding_after(messages)
    counts = track_notes(record)
    assert counts["performer"] == 6 and counts["livegen"] >= len(ons) - 1


def livegen_onsets(path) -> list[float]:
    """Onsets in beats of the notes on a recording's ``livegen`` track."""
    midi = mido.MidiFile(path)
    track = next(t for t in midi.tracks if t.name == "livegen")
    onsets, tick = [], 0
    for message in track:
        tick += message.time
        if message.type == "note_on" and message.velocity > 0:
            onsets.append(tick / midi.ticks_per_beat)
    return onsets


@pytest.mark.parametrize("mode", ["autonomous", "accompany"])
@pytest.mark.parametrize("model", BLOCK_MODELS)
def test_plays_from_the_seed_file(tmp_path, model, mode):
    """Autonomous: hears the seed and plays on its own; accompany: the seed is performed and accompanied.

    Accompany listens 8 beats before it plays and then keeps going for 4 bars after the
    performer stops, so it runs long enough (10 s at 160 BPM) to hear that through;
    it must keep playing bar after bar, not one chord.
    """
    import subprocess
    import sys

    record = tmp_path / "take.mid"
    seconds = "6" if mode == "autonomous" else "10"
    done = subprocess.run(
        [sys.executable, "-m", "livegen", "jam", "--model", model, "--mode", mode, "--out", "none",
         "--tempo", "160", "--max-seconds", seconds, "--rng-seed", "2", "--record", str(record),
         "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    counts = track_notes(record)
    onsets = livegen_onsets(record)
    assert len(onsets) >= 8, (counts, done.stdout)
    assert len({int(beat // 4) for beat in onsets}) >= 3, (onsets, done.stdout)
    assert counts["performer"] == (0 if mode == "autonomous" else len(read_midi(seed_of(model)).notes))
