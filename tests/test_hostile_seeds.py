"""Hostile seed files: a render ends in bounded time, and reading one costs bounded memory."""

from __future__ import annotations

import struct
import subprocess
import sys
import tracemalloc

import mido
import pytest

from livegen.errors import MidiFileError
from livegen.music.midifile import MAX_MIDI_BYTES, read_midi
from tests.pkgfactory import write_package


def livegen(*args, timeout=120):
    proc = subprocess.run([sys.executable, "-m", "livegen", *args], capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture
def package_dir(tmp_path):
    return write_package(tmp_path / "pkg")


def test_a_pause_of_billions_of_ticks_in_a_seed_renders_in_bounded_time(tmp_path, package_dir):
    track = mido.MidiTrack()
    for pitch in (60, 62):
        track.append(mido.Message("note_on", note=pitch, velocity=80, time=0))
        track.append(mido.Message("note_off", note=pitch, time=240))
    track.append(mido.Message("note_on", note=64, velocity=80, time=4_300_000_000))
    track.append(mido.Message("note_off", note=64, time=240))
    seed = tmp_path / "pause.mid"
    mido.MidiFile(tracks=[track], ticks_per_beat=480).save(str(seed))
    assert seed.stat().st_size < 110
    out = tmp_path / "o.mid"
    # stepping 10 ticks at a time through the pause took hours; a render of 3 notes takes seconds
    proc = livegen("render", "--model", str(package_dir), "--seed-file", str(seed), "--bars", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    performer = [n for n in read_midi(out).notes if n.channel == 0 and n.start < 480 * 4]
    assert [n.pitch for n in performer][:2] == [60, 62]


def _dense_midi(path, size):
    """A valid type-0 file of about ``size`` bytes: note-on/note-off pairs ten ticks apart."""
    pair = b"\x0a\x90\x3c\x50\x0a\x80\x3c\x00"
    body = pair * (size // len(pair)) + b"\x00\xff\x2f\x00"
    path.write_bytes(b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480) + b"MTrk" + struct.pack(">I", len(body)) + body)
    return path


def test_a_midi_file_over_the_limit_is_refused_before_it_is_read(tmp_path):
    big = _dense_midi(tmp_path / "big.mid", MAX_MIDI_BYTES + 1000)
    tracemalloc.start()
    try:
        with pytest.raises(MidiFileError) as caught:
            read_midi(big)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert str(big) in message and f"at most {MAX_MIDI_BYTES} bytes (1 MiB)" in message
    assert peak < 8 * MAX_MIDI_BYTES  # reading it whole took about 130 bytes of memory per byte of file


def test_a_midi_file_at_the_limit_is_read(tmp_path):
    song = read_midi(_dense_midi(tmp_path / "ok.mid", MAX_MIDI_BYTES - 100))
    assert len(song.notes) == (MAX_MIDI_BYTES - 100) // 8


def test_render_names_a_seed_file_over_the_limit(tmp_path, package_dir):
    seed = tmp_path / "huge.mid"
    with seed.open("wb") as file:
        file.truncate(50 * 1024 * 1024)  # sparse: 50 MB on paper
    proc = livegen("render", "--model", str(package_dir), "--seed-file", str(seed), "--bars", "1",
                   "--out", str(tmp_path / "o.mid"))  # fmt: skip
    assert proc.returncode == 2
    assert f"{seed}: 52428800 bytes is too large; expected a Standard MIDI File of at most" in proc.stderr
    assert not (tmp_path / "o.mid").exists()
