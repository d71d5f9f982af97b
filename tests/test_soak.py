"""Guarantee 7, the soak, and guarantee 8 for long runs: bounded memory, nothing lost.

The long soak is a script (``livegen soak --hours 24``, figures in the README); here run
its short variants: an accelerated hour on the bundled model in a fresh process (no
stuck note, no drift, a memory slope within a tolerance), the same machinery with a
leak put in (the measure sees it), the memory-holding structures not growing with
simulated time, a real-time jam long enough to cut its recording in parts, and the
rolling recording and the streamed WAV checked by hand.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import wave
from pathlib import Path

import mido
import numpy as np
import pytest

from livegen.engine import soak
from livegen.engine.config import JamConfig
from livegen.engine.session import Engine
from livegen.engine.soak import SoakSettings, run_accelerated, run_realtime, summary_lines
from livegen.errors import ConfigError
from livegen.io import recorder as recorder_module
from livegen.io.recorder import RollingRecording
from livegen.music.events import Note, decode_message
from livegen.music.midifile import read_midi
from livegen.music.time import TempoMap

ON, OFF = 0x90, 0x80


def notes_of(path: Path, track: str) -> list[tuple[int, int, int]]:
    """(pitch, start, duration) of one named track of a MIDI file, in file order."""
    midi = mido.MidiFile(str(path))
    for t in midi.tracks:
        if any(m.type == "track_name" and m.name == track for m in t):
            tick, starts, out = 0, {}, []
            for m in t:
                tick += m.time
                if m.type == "note_on" and m.velocity:
                    starts[m.note] = tick
                elif m.type in ("note_on", "note_off") and m.note in starts:
                    begun = starts.pop(m.note)
                    out.append((m.note, begun, tick - begun))
            return sorted(out, key=lambda n: n[1])
    raise AssertionError(f"{path} has no track {track!r}")


# ---- the rolling recording, by hand -----------------------------------------------------


def test_a_rolling_recording_loses_nothing_across_its_cuts(tmp_path: Path) -> None:
    """Two-bar parts (3840 ticks): a note crossing the cut stays whole in its part when it ends
    within the hold, a note held past the hold is ended there and begun again in the next."""
    path = tmp_path / "jam.mid"
    rec = RollingRecording(path, TempoMap.constant(120), part_ticks=3840, lag_ticks=480, hold_ticks=1440)
    rec.record("livegen", decode_message(0, (ON, 60, 90)))  # A: part 1
    rec.record("livegen", decode_message(480, (OFF, 60, 0)))
    rec.record("livegen", decode_message(3600, (ON, 62, 91)))  # B: crosses the cut at 3840, ends within the hold
    rec.record("livegen", decode_message(3700, (ON, 64, 92)))  # C: held until 6000, past the hold (3840 + 1440)
    rec.record("performer", decode_message(3700, (ON, 50, 70)))  # E: part 1
    rec.record("performer", decode_message(3800, (OFF, 50, 0)))
    rec.record("performer", decode_message(3820, (ON, 52, 71)))  # F: crosses the cut, ends within the hold
    rec.keep_up(4000)
    rec.write()  # an autosave of part 1 under the recording's own name
    assert path.exists() and rec.parts == []
    rec.record("livegen", decode_message(4000, (OFF, 62, 0)))
    rec.record("livegen", decode_message(4000, (ON, 65, 93)))  # D: part 2
    rec.record("performer", decode_message(4100, (OFF, 52, 0)))
    rec.record("livegen", decode_message(4200, (OFF, 65, 0)))
    rec.keep_up(4400)  # the lag is over, but C (begun in part 1) still sounds: wait
    assert rec.parts == []
    rec.keep_up(5300)  # the hold is over: part 1 is written, C is cut at 5300
    part1 = tmp_path / "jam-part001.mid"
    assert rec.parts == [part1] and not path.exists()  # part 1's autosave is part001 now
    assert rec.current_path == tmp_path / "jam-part002.mid"
    assert notes_of(part1, "livegen") == [(60, 0, 480), (62, 3600, 400), (64, 3700, 1600)]
    assert notes_of(part1, "performer") == [(50, 3700, 100), (52, 3820, 280)]
    rec.record("livegen", decode_message(6000, (OFF, 64, 0)))
    part2 = rec.write()
    assert part2 == tmp_path / "jam-part002.mid"
    # part 2's tick 0 is the cut (3840): D at 4000 -> 160; C again from 5300 -> 1460, until 6000
    assert notes_of(part2, "livegen") == [(65, 160, 200), (64, 1460, 700)]
    assert notes_of(part2, "performer") == []
    assert rec.carried == 1 and rec.carried_by_track == {"performer": 0, "livegen": 1}
    assert (rec.note_count("livegen"), rec.note_count("performer")) == (4, 2)
    velocities = {m.note: m.velocity for m in mido.MidiFile(str(part2)).tracks[2] if m.type == "note_on"}
    assert velocities == {65: 93, 64: 92}  # begun again as it was struck
    assert read_midi(part1).tempo == TempoMap.constant(120) == read_midi(part2).tempo


def test_a_part_that_cannot_be_written_stays_in_memory_and_is_written_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rec = RollingRecording(tmp_path / "jam.mid", TempoMap.constant(120), part_ticks=1920, lag_ticks=0)
    for k in range(8):  # a quarter note every beat, across the cut at 1920
        rec.record("livegen", decode_message(k * 480, (ON, 60 + k, 90)))
        rec.record("livegen", decode_message(k * 480 + 240, (OFF, 60 + k, 0)))
    real = recorder_module.write_midi

    def full_disk(*args: object, **kwargs: object) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recorder_module, "write_midi", full_disk)
    with caplog.at_level(logging.WARNING, logger="livegen.io.recorder"):
        rec.keep_up(1920 + 100)
    assert rec.parts == [] and rec.held == 16 and "No space left" in caplog.text
    monkeypatch.setattr(recorder_module, "write_midi", real)
    rec.keep_up(1920 + 200)  # sooner than the retry (a bar later): still waiting
    assert rec.parts == []
    rec.keep_up(1920 + 100 + 1920)  # both bars are over by now: two parts
    assert [p.name for p in rec.parts] == ["jam-part001.mid", "jam-part002.mid"] and rec.held == 0
    assert [n.pitch for n in read_midi(rec.parts[0]).notes] == [60, 61, 62, 63]
    assert [(n.pitch, n.start) for n in read_midi(rec.parts[1]).notes] == [(64, 0), (65, 480), (66, 960), (67, 1440)]


def test_a_short_recording_is_one_file_as_before(tmp_path: Path) -> None:
    rec = RollingRecording(tmp_path / "jam.mid", TempoMap.constant(120), part_ticks=115_200)
    rec.record("livegen", decode_message(960, (ON, 67, 90)))
    rec.record("livegen", decode_message(1200, (OFF, 67, 0)))
    rec.keep_up(2000)
    assert rec.write() == tmp_path / "jam.mid" and rec.parts == []
    assert read_midi(tmp_path / "jam.mid").notes == (Note(67, 90, 960, 240),)


def test_parts_are_whole_bars(tmp_path: Path) -> None:
    rec = RollingRecording(tmp_path / "a.mid", TempoMap(), part_ticks=1000, beats_per_bar=3)
    assert rec.part_ticks == 1440  # three beats of 480
    with pytest.raises(ValueError):
        RollingRecording(tmp_path / "a.mid", TempoMap(), part_ticks=0)


# ---- the streamed WAV ---------------------------------------------------------------------


@pytest.fixture
def soundfont() -> Path:
    from livegen.io.soundfont import SoundFontError, find_soundfont

    try:
        return find_soundfont(None)
    except SoundFontError as err:
        pytest.skip(f"built-in synth unavailable here: {err}")


def phrase_events(n: int) -> list[tuple[int, tuple[int, ...]]]:
    events = [(i * 125_000_000, (ON, 60 + i % 12, 100)) for i in range(n)]
    events += [(i * 125_000_000 + 100_000_000, (OFF, 60 + i % 12, 0)) for i in range(n)]
    return sorted(events, key=lambda e: e[0])


def test_the_streamed_wav_is_the_offline_render(tmp_path: Path, soundfont: Path) -> None:
    """Rendered as the events come, a block at a time, it is byte for byte what a jam wrote before."""
    from livegen.io.synth_render import WavStream, render_offline, write_wav

    events = [(0, (0xC0, 0)), *phrase_events(24)]
    whole = write_wav(tmp_path / "whole.wav", render_offline(events, soundfont=soundfont))
    with WavStream(tmp_path / "streamed.wav", soundfont=soundfont, block_frames=1000) as stream:
        for t_ns, data in events:
            stream.push(t_ns, data)
            stream.render_until(t_ns)
        assert stream.pending <= 40  # only what is within a second of now is held
    assert (tmp_path / "streamed.wav").read_bytes() == whole.read_bytes()


def test_the_streamed_wav_is_readable_while_written_and_stops_at_its_cap(
    tmp_path: Path, soundfont: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from livegen.io.synth_render import WavStream

    path = tmp_path / "long.wav"
    stream = WavStream(path, soundfont=soundfont, max_seconds=2.0)
    with caplog.at_level(logging.WARNING, logger="livegen.io.synth_render"):
        for t_ns, data in phrase_events(8):  # one second of notes
            stream.push(t_ns, data)
        stream.render_until(1_900_000_000)
        with wave.open(str(path)) as half:  # mid-way, a valid WAV of what is written so far
            assert 0 < half.getnframes() == stream.frames < 2 * 48_000
        for t_ns, data in phrase_events(40)[16:]:  # 1 to 5 seconds: past the cap
            stream.push(t_ns, data)
            stream.render_until(t_ns)
        assert stream.capped and stream.dropped > 0 and "length cap" in caplog.text
        assert stream.close() == path
    with wave.open(str(path)) as done:
        assert done.getnframes() == 2 * 48_000 and done.getnchannels() == 2
        audio = np.frombuffer(done.readframes(done.getnframes()), dtype="<i2")
    assert np.abs(audio).max() > 1000  # the notes are in it


def test_wav_and_part_lengths_are_checked() -> None:
    with pytest.raises(ConfigError, match="--wav-minutes 400"):
        JamConfig(wav_minutes=400)
    with pytest.raises(ConfigError, match="--part-minutes 0"):
        JamConfig(part_minutes=0)


# ---- the soak ---------------------------------------------------------------------------


@pytest.mark.slow
def test_an_accelerated_hour_has_no_drift_no_growth_and_no_stuck_note(tmp_path: Path) -> None:
    """The CI variant of the 24-hour soak: the default command, in its own process (the memory is the process's)."""
    report_path = tmp_path / "soak.json"
    run = subprocess.run(
        [sys.executable, "-m", "livegen", "soak", "--hours", "1", "--out-dir", str(tmp_path / "out"),
         "--json", str(report_path)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(report_path.read_text())
    assert report["notes"]["generated"] > 5000 and report["notes"]["performed"] > 0  # a visitor played
    drift = report["drift"]
    assert drift["onsets_checked"] == report["notes"]["generated"]
    assert drift["max_grid_error_ns"] < 1 and drift["late_max_ms"] == 0 and drift["off_grid_onsets"] == 0
    assert drift["last_onset"]["beat"] >= 7190  # an hour at 120 BPM, and beat k still at k beats
    assert report["late_steps"] == 0
    stuck = report["stuck"]
    assert stuck["stuck_notes"] == 0 and stuck["sounding_at_end"] == []
    assert stuck["note_ons"] == stuck["note_offs"]
    assert report["tracker_sounding_end"] == [[], [], []]
    memory = report["memory"]
    assert report["max_slope_mb_per_hour"] == 1.0  # the default limit, as in the 24-hour soak
    assert memory["anon_slope_mb_per_hour"] < 1  # the old recorder and sent log grew about 5 MB an hour
    recording = report["recording"]
    assert len(recording["parts"]) == 4 and recording["complete"] and recording["model_checksum_matches"]
    assert report["ok"], "\n".join(summary_lines(report))


class LeakyEngine(Engine):
    """The engine as a long jam ran it before: every sent message kept for the WAV at the end."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs, keep_sent=True)  # type: ignore[arg-type,misc]


def test_the_soak_sees_a_leak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(soak, "Engine", LeakyEngine)
    settings = SoakSettings(hours=0.4, part_minutes=5, sample_minutes=1, warmup_hours=0.1, out_dir=tmp_path)
    report = run_accelerated(settings)
    assert report["held_end"]["engine_sent"] == report["notes"]["messages_sent"]
    assert report["memory"]["blocks_slope_per_hour"] > 20_000
    assert report["recording"]["complete"]  # a leak, not a loss


def test_what_holds_memory_does_not_grow_with_simulated_time(tmp_path: Path) -> None:
    def run(hours: float) -> dict:
        settings = SoakSettings(hours=hours, part_minutes=5, visitor_minutes=7, out_dir=tmp_path / str(hours))
        return run_accelerated(settings)

    short, long = run(0.3), run(0.9)
    assert long["notes"]["generated"] > 2.5 * short["notes"]["generated"]
    # the recording holds one part (5 minutes) and a few bars, however long it plays
    assert long["held_max"]["recorder_messages"] < 1.5 * short["held_max"]["recorder_messages"]
    assert long["held_max"]["recorder_messages"] < long["notes"]["messages_sent"] / 5
    for report in (short, long):
        assert report["held_end"]["engine_sent"] == 0 and report["held_end"]["scheduler_pending"] == 0
        assert report["held_max"]["scheduler_pending"] < 100 and report["held_max"]["sounding"] < 20
        assert report["recording"]["complete"]


@pytest.mark.slow
def test_a_real_time_soak_cuts_its_recording_in_parts_and_keeps_every_note(tmp_path: Path) -> None:
    """A real jam at 240 BPM with two-bar parts (2 s) for 7 s: the jam's own wiring, measured."""
    config = JamConfig(mode="autonomous", outputs=("none",), tempo=240, commands=False, out_dir=tmp_path)
    settings = SoakSettings(hours=7 / 3600, part_minutes=1 / 30, sample_minutes=0.02, out_dir=tmp_path)
    report = run_realtime(settings, config)
    assert report["notes"]["generated"] > 20
    recording = report["recording"]
    parts = [Path(p).name for p in recording["parts"]]
    assert len(parts) >= 3 and recording["complete"]
    assert [name[-12:] for name in parts] == [f"-part{k:03d}.mid" for k in range(1, len(parts) + 1)]
    assert report["stuck"]["stuck_notes"] == 0 and report["stuck"]["sounding_at_end"] == []
    assert report["drift"]["max_grid_error_ns"] < 1
    assert len(report["memory"]["samples"]) >= 5


def test_a_file_paged_in_is_not_counted_as_growth(tmp_path: Path) -> None:
    import mmap

    data = tmp_path / "big.bin"
    data.write_bytes(b"\1" * (32 << 20))
    resident, anonymous = soak.resident_bytes(), soak.anonymous_bytes()
    assert resident is not None and anonymous is not None
    with data.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        assert sum(mapped[i] for i in range(0, len(mapped), 4096)) == (32 << 20) // 4096  # every page read
        grown_resident = (soak.resident_bytes() or 0) - resident
        grown_anonymous = (soak.anonymous_bytes() or 0) - anonymous
    assert grown_resident > 24 << 20  # resident memory counts the file's pages
    assert grown_anonymous < 4 << 20  # the slope judges what the process allocated


def _log(anon: list[tuple[float, float]], at_parts: list[tuple[float, int]] = ()) -> soak.MemoryLog:
    log = soak.MemoryLog(at_parts=list(at_parts))
    log.samples = [(h, mb + 50, 280_000, mb) for h, mb in anon]
    return log


def test_the_warm_up_covers_the_first_parts_and_visitor_and_still_sees_a_leak() -> None:
    hours = [k / 144 for k in range(145)]
    # an hour with 15-minute parts: the first two part writes each raise the high-water mark once
    steps = _log([(h, 55 + 0.55 * (h > 0.251) + 0.30 * (h > 0.501)) for h in hours])
    assert SoakSettings(hours=1).warmup > max(2 * 15, 30) / 60
    assert steps.report(0.2)["anon_slope_mb_per_hour"] > 0.7  # a fifth of the hour reads the steps as growth
    assert abs(steps.report(SoakSettings(hours=1).warmup)["anon_slope_mb_per_hour"]) < 0.01
    leak = _log([(h, 55 + 2 * h) for h in hours])  # a real leak of 2 MB an hour is still seen
    assert leak.report(SoakSettings(hours=1).warmup)["anon_slope_mb_per_hour"] == pytest.approx(2, abs=0.01)
    assert SoakSettings(hours=24).warmup == 1.0


def test_python_blocks_are_compared_at_one_point_of_the_part_cycle() -> None:
    hours = [k / 144 for k in range(145)]
    log = _log([(h, 55) for h in hours], at_parts=[(0.25 * k + 0.001, 271_000) for k in range(1, 4)])
    log.samples = [(h, 105, 271_000 + round(68_000 * (h % 0.25)), 55) for h in hours]  # a part filling, then let go
    report = log.report(0.3)
    assert report["blocks_slope_per_hour"] == 0 and report["blocks_sampled"] == "after each part"
    assert log.report(0.6)["blocks_slope_per_hour"] is None  # one part written after the warm-up: n/a
