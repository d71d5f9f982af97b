"""Every file livegen rewrites is written whole or not at all (livegen.music.atomic).

A write that fails half-way (a full disk, an exception, Ctrl-C) leaves the previous file
byte for byte and no temporary file; a reader never sees half a file; a jam stopped by
SIGTERM or SIGINT while it autosaves leaves a recording mido reads.
"""

from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import mido
import numpy as np
import pytest

from livegen.engine import learn as learn_module
from livegen.errors import ConfigError, MidiFileError
from livegen.io.recorder import MidiRecorder
from livegen.io.synth_render import write_wav
from livegen.music.atomic import write_atomically
from livegen.music.events import Note, decode_message
from livegen.music.midifile import read_midi, write_midi
from livegen.music.time import TempoMap
from tests.pkgfactory import write_package

ENOSPC = OSError(28, "No space left on device")


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def notes(count: int) -> list[Note]:
    return [Note(pitch=48 + i % 36, velocity=90, start=i * 120, duration=100) for i in range(count)]


# --- the helper -------------------------------------------------------------------------------


def test_write_atomically_replaces_the_file_and_keeps_its_permissions(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    assert write_atomically(path, lambda out: out.write(b"new contents")) == path
    assert path.read_bytes() == b"new contents"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert listing(tmp_path) == ["f.bin"]


def test_a_new_file_gets_the_umask_like_open(tmp_path):
    old = os.umask(0o027)
    try:
        write_atomically(tmp_path / "new.bin", lambda out: out.write(b"x"))
        write_atomically(tmp_path / "private.bin", lambda out: out.write(b"x"), mode=0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.bin").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "private.bin").stat().st_mode) == 0o600


@pytest.mark.parametrize("error", [ENOSPC, KeyboardInterrupt(), ValueError("bad value")])
def test_a_write_that_fails_half_way_leaves_the_old_file_and_no_temporary(tmp_path, error):
    path = tmp_path / "f.bin"
    path.write_bytes(b"the previous file")

    def half_then_fail(out):
        out.write(b"the new fi")
        raise error

    with pytest.raises(type(error)):
        write_atomically(path, half_then_fail)
    assert path.read_bytes() == b"the previous file"
    assert listing(tmp_path) == ["f.bin"]


def test_create_only_refuses_an_existing_name(tmp_path):
    path = tmp_path / "f.bin"
    write_atomically(path, lambda out: out.write(b"first"), overwrite=False)
    with pytest.raises(FileExistsError):
        write_atomically(path, lambda out: out.write(b"second"), overwrite=False)
    assert path.read_bytes() == b"first"
    assert listing(tmp_path) == ["f.bin"]


def test_the_folder_is_made_when_missing(tmp_path):
    path = tmp_path / "a" / "b" / "f.bin"
    write_atomically(path, lambda out: out.write(b"x"))
    assert path.read_bytes() == b"x"


# --- the files livegen writes -----------------------------------------------------------------


def test_an_interrupted_midi_save_keeps_the_previous_recording(tmp_path, monkeypatch):
    path = tmp_path / "jam.mid"
    recorder = MidiRecorder()
    for n in notes(8):
        recorder.record("livegen", decode_message(n.start, (0x90, n.pitch, n.velocity)))
        recorder.record("livegen", decode_message(n.end, (0x80, n.pitch, 0)))
    recorder.save(path, TempoMap())
    before = path.read_bytes()
    real_save = mido.MidiFile.save

    def half_save(self, filename=None, file=None):  # the disk fills up half-way through
        buffer = io.BytesIO()
        real_save(self, file=buffer)
        half = buffer.getvalue()[: len(buffer.getvalue()) // 2]
        if file is None:
            with open(filename, "wb") as out:
                out.write(half)
        else:
            file.write(half)
        raise ENOSPC

    for n in notes(16)[8:]:
        recorder.record("livegen", decode_message(n.start, (0x90, n.pitch, n.velocity)))
    monkeypatch.setattr(mido.MidiFile, "save", half_save)
    with pytest.raises(MidiFileError, match=r"jam\.mid: cannot write the MIDI file \(No space left on device\)"):
        recorder.save(path, TempoMap())
    assert path.read_bytes() == before
    assert listing(tmp_path) == ["jam.mid"]
    assert len(read_midi(path).notes) == 8


def test_a_reader_never_sees_half_a_recording(tmp_path):
    path = tmp_path / "autosave.mid"
    write_midi(path, {"livegen": notes(1)})
    stop = threading.Event()
    problems: list[str] = []
    reads = 0

    def read_all_the_time() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                mido.MidiFile(path)
            except Exception as err:  # a torn file: EOFError, KeyError, OSError ...
                problems.append(repr(err))
            reads += 1

    reader = threading.Thread(target=read_all_the_time)
    reader.start()
    try:
        for count in range(2, 300):  # an autosave that grows and shrinks
            write_midi(path, {"livegen": notes(count if count % 2 else 300 - count)})
    finally:
        stop.set()
        reader.join()
    assert reads > 50 and problems == []
    assert listing(tmp_path) == ["autosave.mid"]


def test_an_interrupted_wav_keeps_the_previous_render(tmp_path, monkeypatch):
    path = tmp_path / "jam.wav"
    write_wav(path, np.linspace(-0.5, 0.5, 4800))
    before = path.read_bytes()

    def half_frames(self, data):
        self.writeframesraw(bytes(data)[: len(data) // 2])
        raise ENOSPC

    monkeypatch.setattr(wave.Wave_write, "writeframes", half_frames)
    with pytest.raises(OSError, match="No space left on device"):
        write_wav(path, np.zeros(9600))
    assert path.read_bytes() == before
    assert listing(tmp_path) == ["jam.wav"]


def test_an_interrupted_preset_write_keeps_the_preset(tmp_path, monkeypatch):
    preset = tmp_path / "my.toml"
    preset.write_text("# mine\n[jam]\nmode = 'accompany'\n", encoding="utf-8")
    real = learn_module.write_atomically

    def halfway(path, write, **options):
        def broken(out):
            buffer = io.BytesIO()
            write(buffer)
            out.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            raise ENOSPC

        return real(path, broken, **options)

    monkeypatch.setattr(learn_module, "write_atomically", halfway)
    with pytest.raises(ConfigError, match=r"my\.toml: cannot write the preset"):
        learn_module._write_atomically(preset, "# mine\n[jam]\nmode = 'accompany'\n[controls]\ntemperature = 21\n")
    assert preset.read_text(encoding="utf-8") == "# mine\n[jam]\nmode = 'accompany'\n"
    assert listing(tmp_path) == ["my.toml"]


# --- a jam stopped while it autosaves ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_jam_stopped_while_autosaving_leaves_a_readable_recording(tmp_path, signum):
    package = write_package(tmp_path / "pkg")
    folder = tmp_path / "out"
    record = folder / "long.mid"
    jam = subprocess.Popen(
        [sys.executable, "-m", "livegen", "jam", "--model", str(package), "--mode", "autonomous", "--out", "none",
         "--tempo", "240", "--autosave", "1", "--record", str(record), "--max-seconds", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        saves: list[int] = []  # st_mtime_ns of each autosave seen
        while len(saves) < 3 and time.monotonic() < deadline and jam.poll() is None:
            if record.exists() and (not saves or record.stat().st_mtime_ns != saves[-1]):
                saves.append(record.stat().st_mtime_ns)
            time.sleep(0.005)
        assert len(saves) == 3, f"no autosaves seen: {saves}; {jam.poll()} {jam.stderr}"
        autosaved = len(read_midi(record).notes)
        # The next autosave starts about a second after the last one ended: signal right then.
        time.sleep(max(0.0, (saves[-1] + 1_000_000_000 - time.time_ns()) / 1e9))
        os.kill(jam.pid, signum)
        _, err = jam.communicate(timeout=60)
    finally:
        if jam.poll() is None:
            jam.kill()
            jam.wait()
    assert jam.returncode == 0, err
    assert "Traceback" not in err
    midi = mido.MidiFile(record)  # whole: mido reads it
    played = sum(m.type == "note_on" and m.velocity > 0 for t in midi.tracks for m in t)
    assert played >= autosaved > 0  # written again on the way out, with everything so far
    assert listing(folder) == ["long.mid"]  # no temporary file left
