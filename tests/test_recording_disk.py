"""A recording survives the disk it goes to: full, read-only, wrong, or left dirty by a kill.

A full disk never ends a jam: what cannot be written stays in memory, is tried again,
logged and counted in ``/metrics``, and at the end the recording goes to a fallback
folder it names. A place that can never be written is refused before the first note.
The temporary files a killed write leaves are removed at the next start, and only those.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
import urllib.request
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from livegen.engine.config import JamConfig
from livegen.engine.health import Counters, Vitals
from livegen.engine.jam import run_jam
from livegen.errors import LivegenError
from livegen.io import recorder as recorder_module
from livegen.io.recorder import RollingRecording
from livegen.music.events import decode_message
from livegen.music.midifile import read_midi
from livegen.music.time import TempoMap
from tests.pkgfactory import write_package

ON, OFF = 0x90, 0x80
ENOSPC = OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_package(tmp_path_factory.mktemp("pkg") / "pkg")


def _mount_tmpfs(folder: Path, *options: str) -> None:
    """Mount a tiny tmpfs on ``folder``, or skip the test where this machine does not allow it."""
    if not sys.platform.startswith("linux") or shutil.which("mount") is None:
        pytest.skip("a real full or read-only file system needs Linux's mount (a tmpfs)")
    folder.mkdir(parents=True, exist_ok=True)
    opts = ",".join(("size=256k", *options))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a small tmpfs needs root and a kernel that allows it here: {done.stderr.strip()}")


def _unmount(folder: Path) -> None:
    subprocess.run(["umount", str(folder)], check=True, capture_output=True)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(a folder on a 256 KiB file system filled to the last block, the file that fills it)."""
    folder = tmp_path / "full"
    _mount_tmpfs(folder)
    filler = folder / "filler"
    try:
        with open(filler, "wb", buffering=0) as out:
            try:
                while True:
                    out.write(b"\0" * 4096)
            except OSError as err:
                assert err.errno == errno.ENOSPC
        yield folder, filler
    finally:
        _unmount(folder)


def livegen(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "livegen", "jam", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def metric(port: int, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def recorded(count: int, rec: RollingRecording) -> None:
    for k in range(count):
        rec.record("livegen", decode_message(k * 480, (ON, 60 + k % 24, 90)))
        rec.record("livegen", decode_message(k * 480 + 240, (OFF, 60 + k % 24, 0)))


# --- 1. a full disk -----------------------------------------------------------------------------


def test_an_autosave_on_a_full_disk_is_counted_kept_in_memory_and_written_when_space_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rec = RollingRecording(tmp_path / "jam.mid", TempoMap.constant(120), part_ticks=1_000_000)
    recorded(6, rec)
    real = recorder_module.write_midi

    def full(*args: object, **kwargs: object) -> Path:
        raise ENOSPC

    monkeypatch.setattr(recorder_module, "write_midi", full)
    with caplog.at_level(logging.WARNING, logger="livegen.io.recorder"):
        for _ in range(5):
            assert rec.autosave() is None  # no exception: the jam plays on
    assert rec.write_errors == 5 and rec.held == 12
    assert caplog.text.count("No space left on device") == 1  # one warning, not one per try
    assert "jam.mid" in caplog.text
    monkeypatch.setattr(recorder_module, "write_midi", real)
    assert rec.autosave() == tmp_path / "jam.mid"
    assert len(read_midi(tmp_path / "jam.mid").notes) == 6


def test_write_errors_are_a_metric(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from livegen.engine.scheduler import Scheduler

    rec = RollingRecording(tmp_path / "jam.mid", TempoMap.constant(120), part_ticks=1_000_000)
    recorded(2, rec)
    monkeypatch.setattr(recorder_module, "write_midi", lambda *a, **k: (_ for _ in ()).throw(ENOSPC))
    rec.autosave()
    rec.autosave()
    text = Vitals(
        Scheduler([], tick_of=lambda ns: 0), counters=Counters(write_errors=lambda: rec.write_errors)
    ).exposition()
    assert "# TYPE livegen_recording_write_errors_total counter" in text
    assert "\nlivegen_recording_write_errors_total 2\n" in text


def test_the_last_write_tries_again_then_goes_to_a_fallback_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = RollingRecording(tmp_path / "out" / "jam.mid", TempoMap.constant(120), part_ticks=1_000_000)
    recorded(4, rec)
    real = recorder_module.write_midi
    tries: list[Path] = []

    def full_out_dir(path: Path, *args: object, **kwargs: object) -> Path:
        tries.append(Path(path))
        if Path(path).parent == tmp_path / "out":
            raise recorder_module.MidiFileError(f"{path}: cannot write the MIDI file (No space left on device)")
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(recorder_module, "write_midi", full_out_dir)
    path, problem = rec.write_last(fallbacks=[tmp_path / "state"], wait_s=0.01)
    assert tries[:3] == [tmp_path / "out" / "jam.mid"] * 3  # tried three times where it belongs
    assert path == tmp_path / "state" / "jam.mid" and len(read_midi(path).notes) == 4
    assert problem is not None
    assert str(tmp_path / "out" / "jam.mid") in problem and "No space left on device" in problem
    assert str(path) in problem


def test_when_no_fallback_can_be_written_the_error_names_every_place_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = RollingRecording(tmp_path / "out" / "jam.mid", TempoMap.constant(120), part_ticks=1_000_000)
    recorded(4, rec)
    monkeypatch.setattr(recorder_module, "write_midi", lambda *a, **k: (_ for _ in ()).throw(ENOSPC))
    with pytest.raises(LivegenError) as caught:
        rec.write_last(fallbacks=[tmp_path / "a", tmp_path / "b"], wait_s=0.01)
    message = str(caught.value)
    for place in ("out", "a", "b"):
        assert str(tmp_path / place) in message
    assert rec.held == 8  # still in memory


def test_a_wav_that_cannot_be_written_stops_and_the_jam_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from livegen.io.soundfont import SoundFontNotFoundError, find_soundfont
    from livegen.io.synth_render import WavStream

    try:
        soundfont = find_soundfont(None)
        import fluidsynth  # noqa: F401
    except (SoundFontNotFoundError, ImportError, OSError) as err:
        pytest.skip(f"built-in synth unavailable here: {err}")
    path = tmp_path / "jam.wav"
    stream = WavStream(path, soundfont=soundfont, block_frames=4800, behind_s=0)
    stream.push(0, (ON, 60, 100))
    stream.render_until(200_000_000)  # 0.2 s written
    real = wave.Wave_write.writeframes

    def full(self: wave.Wave_write, data: bytes) -> None:
        raise ENOSPC

    monkeypatch.setattr(wave.Wave_write, "writeframes", full)
    stream.push(300_000_000, (OFF, 60, 0))
    stream.render_until(600_000_000)  # no exception: the jam plays on
    assert stream.write_errors == 1 and stream.failed is not None and "No space left on device" in stream.failed
    stream.push(700_000_000, (ON, 62, 100))
    stream.render_until(900_000_000)
    monkeypatch.setattr(wave.Wave_write, "writeframes", real)
    assert stream.close() == path
    with wave.open(str(path), "rb") as reader:  # a valid WAV holding what was written
        assert reader.getnframes() == 9600


def test_a_wav_on_a_disk_without_a_free_inode_is_not_started_and_the_jam_goes_on(tmp_path: Path):
    from livegen.io.soundfont import SoundFontNotFoundError, find_soundfont
    from livegen.io.synth_render import WavStream

    try:
        soundfont = find_soundfont(None)
        import fluidsynth  # noqa: F401
    except (SoundFontNotFoundError, ImportError, OSError) as err:
        pytest.skip(f"built-in synth unavailable here: {err}")
    folder = tmp_path / "no-inodes"
    _mount_tmpfs(folder, "nr_inodes=1")  # the folder itself takes the only inode: no file can be made
    try:
        stream = WavStream(folder / "jam.wav", soundfont=soundfont)  # no exception: the jam plays on
        stream.push(0, (ON, 60, 100))
        stream.render_until(3_000_000_000)
        assert stream.close() == folder / "jam.wav"
    finally:
        _unmount(folder)
    assert stream.write_errors == 1 and stream.failed is not None and "No space left on device" in stream.failed


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.mark.slow
def test_a_jam_on_a_full_disk_plays_on_and_writes_its_recording_to_a_named_fallback(
    full_disk: tuple[Path, Path], package: Path, state: Path
) -> None:
    folder, _ = full_disk
    record = folder / "take.mid"
    port = free_port()
    started = time.monotonic()
    jam = livegen(
        "--model", str(package), "--mode", "autonomous", "--worker", "--autosave", "1", "--out", "none",
        "--tempo", "240", "--record", str(record), "--max-seconds", "8", "--health-port", str(port),
        env={"LIVEGEN_STATE_DIR": str(state)},
    )  # fmt: skip
    try:
        errors = None
        while time.monotonic() - started < 60 and jam.poll() is None:
            errors = metric(port, "livegen_recording_write_errors_total") or errors
            time.sleep(0.3)
        out, err = jam.communicate(timeout=60)
    finally:
        if jam.poll() is None:
            jam.kill()
            jam.wait()
    assert jam.returncode == 0, err
    assert "Traceback" not in err
    assert time.monotonic() - started > 7  # it played to its end, not 3 s
    assert errors is not None and errors >= 2  # the failed autosaves, counted while it played
    fallback = state / "recordings" / "take.mid"
    assert f"could not write the recording to {record}" in out and "No space left on device" in out
    assert f"MIDI recording: {fallback}" in out
    assert len(read_midi(fallback).notes) > 0


@pytest.mark.slow
def test_a_recording_held_while_the_disk_is_full_is_written_when_space_returns(
    full_disk: tuple[Path, Path], package: Path, state: Path
) -> None:
    folder, filler = full_disk
    record = folder / "take.mid"
    port = free_port()
    jam = livegen(
        "--model", str(package), "--mode", "autonomous", "--autosave", "1", "--out", "none", "--tempo", "240",
        "--record", str(record), "--max-seconds", "60", "--health-port", str(port),
        env={"LIVEGEN_STATE_DIR": str(state)},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while (metric(port, "livegen_recording_write_errors_total") or 0) < 2 and time.monotonic() < deadline:
            assert jam.poll() is None, jam.communicate()
            time.sleep(0.2)
        assert not record.exists()
        filler.unlink()  # space comes back
        while not record.exists() and time.monotonic() < deadline:
            assert jam.poll() is None, jam.communicate()
            time.sleep(0.2)
        autosaved = len(read_midi(record).notes)
        jam.send_signal(signal.SIGTERM)
        out, err = jam.communicate(timeout=60)
    finally:
        if jam.poll() is None:
            jam.kill()
            jam.wait()
    assert jam.returncode == 0, err
    assert "Traceback" not in err
    assert f"MIDI recording: {record}" in out
    assert len(read_midi(record).notes) >= autosaved > 0  # from the first note: nothing was dropped
    assert not (state / "recordings").exists()


# --- 2. a place that can never be written --------------------------------------------------------


def _unwritable(kind: str, tmp_path: Path) -> tuple[list[str], Path]:
    """(the jam's options naming it, the path the error must name)."""
    if kind == "record is a folder":
        folder = tmp_path / "takes"
        folder.mkdir()
        return ["--record", str(folder)], folder
    if kind == "record is a FIFO":
        fifo = tmp_path / "pipe.mid"
        os.mkfifo(fifo)
        return ["--record", str(fifo)], fifo
    if kind == "record in /proc":
        if not Path("/proc/self").exists():
            pytest.skip("no /proc on this system")
        return ["--record", "/proc/livegen-x.mid"], Path("/proc/livegen-x.mid")
    if kind == "out-dir under a file":
        (tmp_path / "notes.txt").write_text("mine")
        return ["--out-dir", str(tmp_path / "notes.txt" / "out")], tmp_path / "notes.txt"
    assert kind == "read-only out-dir"
    folder = tmp_path / "ro"
    _mount_tmpfs(folder, "ro")
    return ["--out-dir", str(folder)], folder


@pytest.mark.parametrize(
    "kind", ["record is a folder", "record is a FIFO", "record in /proc", "out-dir under a file", "read-only out-dir"]
)
def test_a_place_that_cannot_be_written_is_refused_before_the_first_note(
    kind: str, tmp_path: Path, package: Path
) -> None:
    options, named = _unwritable(kind, tmp_path)
    try:
        started = time.monotonic()
        jam = livegen("--model", str(package), "--mode", "autonomous", "--out", "none", "--max-seconds", "30", *options)
        out, err = jam.communicate(timeout=120)
        took = time.monotonic() - started
    finally:
        if kind == "read-only out-dir":
            _unmount(tmp_path / "ro")
    assert jam.returncode == 2, (out, err)
    assert "Traceback" not in err
    assert err.startswith("livegen: error: ") and str(named) in err, err
    assert took < 20  # refused at the start, not after the 30 s jam
    assert "notes performed" not in out
    if kind == "record is a FIFO":
        assert stat.S_ISFIFO((tmp_path / "pipe.mid").stat().st_mode)  # left as it was


# --- 3. temporary files a kill left behind -----------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import sys
    from livegen.music.atomic import write_atomically

    def write(out):
        out.write(b"MThd half a file")
        out.flush()
        print("writing", flush=True)
        sys.stdin.readline()  # until told to go on (or killed)
        out.write(b" and the rest")

    write_atomically(sys.argv[1], write)
    print("done", flush=True)
    """
)


def start_writer(path: Path) -> subprocess.Popen[str]:
    """A process half-way through writing ``path`` with livegen's atomic writer, waiting on stdin."""
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
    return writer


def temporaries(folder: Path, name: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}.") and p.name.endswith(".tmp"))


def test_temporary_files_a_killed_write_left_are_removed_at_the_next_start_and_nothing_else(
    tmp_path: Path, package: Path
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    writer = start_writer(folder / "take.mid")
    writer.kill()  # kill -9 in the middle of the write
    writer.wait()
    left = temporaries(folder, "take.mid")
    assert len(left) == 1
    others = {  # look like temporaries, but not livegen's: kept
        ".take.mid.tmp": b"x",
        ".take.mid.ABCDEF12.tmp": b"x",
        "take.mid.0123abcd.tmp": b"x",
        ".take.mid.0123abcd.tmp.bak": b"x",
        ".notes.0123abc.tmp": b"x",
        "mine.txt": b"x",
    }
    for name, data in others.items():
        (folder / name).write_bytes(data)
    (folder / ".dir.0123abcd.tmp").mkdir()
    run_jam(
        JamConfig(model=str(package), mode="autonomous", outputs=("none",), record=folder / "take.mid", max_seconds=1)
    )
    assert sorted(p.name for p in folder.iterdir()) == sorted([*others, ".dir.0123abcd.tmp", "take.mid"])


def test_a_temporary_file_another_writer_is_writing_is_kept(tmp_path: Path) -> None:
    from livegen.music.atomic import remove_stale_temporaries

    folder = tmp_path / "out"
    writer = start_writer(folder / "take.mid")
    try:
        stale = start_writer(folder / "old.mid")
        stale.kill()
        stale.wait()
        assert remove_stale_temporaries(folder) == 1
        assert len(temporaries(folder, "take.mid")) == 1 and temporaries(folder, "old.mid") == []
        out, _ = writer.communicate("go on\n", timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert out == "done\n" and writer.returncode == 0
    assert (folder / "take.mid").read_bytes() == b"MThd half a file and the rest"
    assert sorted(p.name for p in folder.iterdir()) == ["take.mid"]
