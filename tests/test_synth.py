"""The built-in synth offline: SoundFont discovery, onsets on the rendered audio, determinism, WAV.

Needs libfluidsynth and a General MIDI SoundFont (Debian: libfluidsynth3, timgm6mb-soundfont);
skipped with the reason when either is missing.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from livegen.errors import ConfigError, LivegenError
from livegen.io.soundfont import SOUNDFONT_ENV, SoundFontError, SoundFontNotFoundError, find_soundfont
from livegen.io.synth import FLUID_BLOCK, Renderer, ns_to_frames, render_offline, write_wav

SR = 48_000


def _soundfont_or_skip() -> Path:
    try:
        path = find_soundfont(None)
        import fluidsynth  # noqa: F401
    except (SoundFontNotFoundError, ImportError, OSError) as err:
        pytest.skip(f"built-in synth unavailable here: {err}")
    return path


@pytest.fixture(scope="module")
def soundfont() -> Path:
    return _soundfont_or_skip()


def frame_to_ns(frame: int) -> int:
    """A time in ns that ns_to_frames maps back to exactly ``frame``."""
    return (frame * 1_000_000_000 + SR // 2) // SR


def detect_onsets(
    audio: npt.NDArray[np.float32],
    *,
    threshold: float = 1e-2,
    quiet: float = 2e-3,
    guard: int = 480,
    window: int = 960,
    refractory: int = 4800,
) -> list[int]:
    """Frames where the signal rises above ``threshold`` (-40 dBFS) after a quiet stretch.

    A crossing counts as an onset when the 20 ms that end 10 ms before it (``window``
    frames ending ``guard`` frames earlier: the guard skips the note's own attack ramp)
    stayed below ``quiet`` (-54 dBFS), and no onset was found in the ``refractory``
    100 ms before (the waveform crosses the threshold on every cycle).
    """
    env = np.abs(audio).max(axis=1)
    found: list[int] = []
    next_allowed = 0
    for crossing in np.flatnonzero(env > threshold):
        i = int(crossing)
        if i < next_allowed or i < guard + window:
            continue
        if env[i - guard - window : i - guard].max() < quiet:
            found.append(i)
            next_allowed = i + refractory
    return found


def grid(frame: int) -> int:
    """Where fluidsynth starts a voice whose note-on was applied at ``frame``: its next 64-frame block."""
    return -(-frame // FLUID_BLOCK) * FLUID_BLOCK


# Planned onsets in frames, irregular gaps (~0.6 s: the release tails fall below -54 dBFS).
# Alternately on a 64-frame boundary and just after one: a conversion or split that is
# one frame off either way moves a voice start by a whole fluidsynth block (63 or 64 frames).
PLAN = [  # (frame, pitch, velocity), program 0 (Acoustic Grand Piano)
    (4_800, 60, 100),  # = 75 * 64
    (35_265, 72, 110),  # = 551 * 64 + 1 -> the voice starts 63 frames later
    (64_064, 48, 100),  # = 1001 * 64
    (96_001, 84, 90),  # = 1500 * 64 + 1
    (124_833, 67, 80),  # = 1950 * 64 + 33
]
NOTE_NS = 150_000_000


def _events(plan: list[tuple[int, int, int]]) -> list[tuple[int, list[int]]]:
    events: list[tuple[int, list[int]]] = []
    for frame, pitch, velocity in plan:
        t = frame_to_ns(frame)
        events += [(t, [0x90, pitch, velocity]), (t + NOTE_NS, [0x80, pitch, 0])]
    return events


def _attack(pitch: int, velocity: int, *, reverb: bool = True, chorus: bool = True) -> int:
    """Frames from a voice start to the detector firing, for this note rendered alone."""
    start = 4_800  # on the grid, after the detector's 30 ms look-back
    audio = render_offline(
        [(frame_to_ns(start), [0x90, pitch, velocity]), (frame_to_ns(start) + NOTE_NS, [0x80, pitch, 0])],
        tail_s=0.3,
        reverb=reverb,
        chorus=chorus,
    )
    (onset,) = detect_onsets(audio)
    return onset - start


def test_onsets_in_the_audio_land_where_planned(soundfont: Path) -> None:
    audio = render_offline(_events(PLAN))
    onsets = detect_onsets(audio)
    assert len(onsets) == len(PLAN), f"expected {len(PLAN)} onsets, heard {onsets}"
    for onset, (frame, pitch, velocity) in zip(onsets, PLAN, strict=True):
        attack = _attack(pitch, velocity)
        # The SoundFont's attack (and sample lead-in) delays the -40 dBFS crossing by a
        # fixed, per-note amount: 54..383 frames for these notes in TimGM6mb. Measured on
        # the note alone and removed, what is left is our timing plus fluidsynth's grid.
        assert 0 <= onset - attack - frame < FLUID_BLOCK + 2, (frame, onset, attack)
        # Exactly: the voice starts on the first 64-frame boundary at or after the frame;
        # +-2 frames for the previous note's tail adding to this one's attack.
        assert abs(onset - (grid(frame) + attack)) <= 2, (frame, onset, attack)


def test_render_is_deterministic(soundfont: Path) -> None:
    events = [*_events(PLAN[:3]), (frame_to_ns(20_000), [0xB0, 64, 127]), (frame_to_ns(50_000), [0xB0, 64, 0])]
    first = render_offline(events, tail_s=0.5)
    second = render_offline(events, tail_s=0.5)
    assert np.abs(first).max() > 0.01
    assert np.array_equal(first, second)


def test_block_size_does_not_change_the_audio(soundfont: Path) -> None:
    # Bit-identical, not just close: events are applied at their frame whatever the block,
    # and fluidsynth computes its 64-frame blocks the same way however it is asked for them.
    events = [*_events(PLAN[:2]), (frame_to_ns(10_007), [0xC0, 11]), (frame_to_ns(10_007), [0x90, 76, 90])]
    small = render_offline(events, block_frames=64, tail_s=0.3)
    large = render_offline(events, block_frames=1024, tail_s=0.3)
    odd = render_offline(events, block_frames=333, tail_s=0.3)
    assert np.abs(small).max() > 0.01
    assert np.array_equal(small, large)
    assert np.array_equal(small, odd)


def test_tail_is_kept_after_the_last_event(soundfont: Path) -> None:
    events = [(0, [0x90, 60, 100]), (100_000_000, [0x80, 60, 0])]
    audio = render_offline(events, tail_s=1.0)
    assert audio.shape == (ns_to_frames(100_000_000, SR) + 1 + SR, 2)
    assert audio.dtype == np.float32
    release = np.abs(audio[ns_to_frames(100_000_000, SR) + 480 :]).max()
    assert release > 1e-3  # the release is still sounding after the note-off: not cut


def test_event_order_at_the_same_time_is_kept(soundfont: Path) -> None:
    t = frame_to_ns(4_800)
    off_then_on = render_offline([(t, [0x80, 60, 0]), (t, [0x90, 60, 100])], tail_s=0.2)
    on_then_off = render_offline([(t, [0x90, 60, 100]), (t, [0x80, 60, 0])], tail_s=0.2)
    assert detect_onsets(off_then_on)
    # A note released at once still sounds briefly, but far less than one held.
    assert np.abs(on_then_off).max() < np.abs(off_then_on).max()


def test_panic_silences_and_bad_messages_are_counted(soundfont: Path) -> None:
    with Renderer(soundfont, reverb=False, chorus=False) as renderer:
        out = np.zeros((4800, 2), dtype=np.float32)
        renderer.push(0, (0xB0, 64, 127))  # sustain on: note-offs alone would not stop it
        renderer.push(0, (0x90, 60, 100))
        renderer.push(0, (0x80, 60, 0))
        renderer.push(10, ())
        renderer.push(10, (0x90,))
        renderer.push(10, (0xF8,))
        renderer.render_block(out, 4800)
        assert np.abs(out).max() > 0.01
        assert renderer.ignored == 3
        renderer.panic()
        renderer.render_block(out, 4800)
        assert np.abs(out[512:]).max() < 1e-4  # all sound off within a few blocks


def test_late_events_play_at_the_block_start_and_are_counted(soundfont: Path) -> None:
    with Renderer(soundfont) as renderer:
        out = np.zeros((1024, 2), dtype=np.float32)
        renderer.render_block(out, 1024)
        renderer.push(100, (0x90, 60, 100))  # frame 100 is already rendered
        renderer.render_block(out, 1024)
        assert renderer.late == 1
        assert renderer.max_late_frames == 1024 - 100
        assert np.abs(out).max() > 1e-3


def test_ns_to_frames_is_exact() -> None:
    assert ns_to_frames(0, SR) == 0
    assert ns_to_frames(1_000_000_000, SR) == SR
    assert ns_to_frames(20_833, SR) == 1  # 0.999984 frames
    assert ns_to_frames(10_416, SR) == 0  # 0.49997 frames
    assert ns_to_frames(10_417, SR) == 1  # 0.50002 frames
    assert all(ns_to_frames(frame_to_ns(f), SR) == f for f in range(0, 200_000, 7))


def test_offline_event_times_must_be_whole_non_negative_ns(soundfont: Path) -> None:
    with pytest.raises(ConfigError, match="whole ns"):
        render_offline([(-1, [0x90, 60, 100])])
    with pytest.raises(ConfigError, match="whole ns"):
        render_offline([(0.5, [0x90, 60, 100])])  # type: ignore[list-item]
    assert render_offline([(np.int64(0), [0x90, 60, 100])], tail_s=0.1).shape == (4801, 2)  # type: ignore[list-item]


def test_write_wav_round_trips_16_bit_pcm(tmp_path: Path) -> None:
    t = np.arange(4800) / SR
    audio = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), np.full_like(t, 2.0)], axis=1).astype(np.float32)
    path = write_wav(tmp_path / "out.wav", audio, SR)
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (2, 2, SR, 4800)
        pcm = np.frombuffer(w.readframes(4800), dtype="<i2").reshape(-1, 2)
    assert np.abs(pcm[:, 0] / 32767 - audio[:, 0]).max() < 1e-4
    assert (pcm[:, 1] == 32767).all()  # clipped, not wrapped
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]  # no temp file left


def test_write_wav_leaves_no_temp_file_on_failure(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        write_wav(tmp_path / "bad.wav", np.zeros((2, 2, 2)), SR)
    assert list(tmp_path.iterdir()) == []


# -- SoundFont discovery ------------------------------------------------------------------


def test_missing_soundfont_error_lists_paths_and_the_fix(tmp_path: Path) -> None:
    candidates = [tmp_path / "a.sf2", tmp_path / "b.sf2"]
    with pytest.raises(SoundFontNotFoundError) as info:
        find_soundfont(None, environ={}, candidates=candidates)
    message = str(info.value)
    assert str(candidates[0]) in message and str(candidates[1]) in message
    assert "timgm6mb-soundfont" in message and "fluid-soundfont-gm" in message
    assert "--soundfont FILE.sf2" in message
    assert isinstance(info.value, LivegenError) and isinstance(info.value, FileNotFoundError)


def test_explicit_and_env_soundfont_win_and_must_exist(tmp_path: Path) -> None:
    mine = tmp_path / "mine.sf2"
    mine.write_bytes(b"x")
    system = tmp_path / "system.sf2"
    system.write_bytes(b"x")
    assert find_soundfont(mine, environ={}, candidates=[system]) == mine
    assert find_soundfont(None, environ={SOUNDFONT_ENV: str(mine)}, candidates=[system]) == mine
    assert find_soundfont(None, environ={}, candidates=[tmp_path / "gone.sf2", system]) == system
    with pytest.raises(SoundFontNotFoundError, match="given with --soundfont"):
        find_soundfont(tmp_path / "typo.sf2", environ={}, candidates=[system])
    with pytest.raises(SoundFontNotFoundError, match=SOUNDFONT_ENV):
        find_soundfont(None, environ={SOUNDFONT_ENV: str(tmp_path / "typo.sf2")}, candidates=[system])


def test_a_file_that_is_not_a_soundfont_is_a_clear_error(tmp_path: Path, soundfont: Path) -> None:
    text = tmp_path / "notes.sf2"
    text.write_text("not a soundfont\n")
    with pytest.raises(SoundFontError, match="not a RIFF file") as info:
        Renderer(text)
    assert str(text) in str(info.value)
    wav = tmp_path / "sound.sf2"
    write_wav(wav, np.zeros((10, 2)), SR)
    with pytest.raises(SoundFontError, match="'WAVE', not a SoundFont"):
        Renderer(wav)
