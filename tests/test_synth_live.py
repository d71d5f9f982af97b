"""The live synth's callback logic, driven directly with fake times (its in-memory twin),
its frame clock, and audio device selection. The real-device check is test_synth_jack.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest

from livegen.errors import BackendUnavailableError, LivegenError, PortNotFoundError
from livegen.io import audio_devices
from livegen.io.synth import render_offline
from livegen.io.synth_live import DacClock, LiveSynth, SynthOutput
from tests.test_synth import _attack, detect_onsets, frame_to_ns, grid

SR = 48_000
BLOCK = 128
BLOCK_NS = BLOCK * 1_000_000_000 / SR  # 2.67 ms
T0 = 5_000_000_000_000  # an arbitrary perf_counter_ns() origin
DELAY = 5_333_333  # callback -> DAC, as PortAudio reports it for JACK with 2 x 128 frames


@pytest.fixture
def synth() -> Iterator[LiveSynth]:
    try:
        s = LiveSynth(samplerate=SR)
    except LivegenError as err:
        pytest.skip(f"built-in synth unavailable here: {err}")
    yield s
    s.close()


def run_blocks(synth: LiveSynth, n: int, first: int = 0, jitter_ns: list[int] | None = None) -> np.ndarray:
    """Call the callback body for blocks first..first+n-1 as PortAudio would, every 128 frames."""
    out = np.zeros((n * BLOCK, 2), dtype=np.float32)
    for k in range(n):
        now = T0 + round((first + k) * BLOCK_NS) + (jitter_ns[k] if jitter_ns else 0)
        synth.process(out[k * BLOCK : (k + 1) * BLOCK], BLOCK, now, DELAY)
    return out


def dac_time(frame: int) -> int:
    """The wall time at which output frame ``frame`` plays, in the fake world."""
    return T0 + DELAY + frame_to_ns(frame)


def test_twin_plays_scheduled_events_exactly_like_the_offline_render(synth: LiveSynth) -> None:
    plan = [(4_800, 0x90, 60, 100), (9_601, 0x90, 64, 90), (14_000, 0x80, 60, 0), (16_063, 0x80, 64, 0)]
    for frame, status, pitch, vel in plan:  # scheduled ahead, in arbitrary order
        assert synth.schedule(dac_time(frame), [status, pitch, vel])
    live = run_blocks(synth, 200)
    offline = render_offline([(frame_to_ns(f), [s, p, v]) for f, s, p, v in plan], tail_s=1.0)[: len(live)]
    assert np.abs(live).max() > 0.01
    # Same frames, same split, same synth: the twin is sample-identical to the offline render.
    assert np.array_equal(live, offline)
    stats = synth.stats()
    assert (stats.late, stats.overflow, stats.applied, stats.resyncs) == (0, 0, 4, 0)


def test_events_land_on_their_frame_despite_callback_jitter(synth: LiveSynth) -> None:
    rng = np.random.default_rng(7)
    jitter = [0, *(int(x) for x in rng.uniform(0, 1_000_000, 399))]  # callbacks up to 1 ms (48 frames) late
    jitter[100] = 900_000  # the callback that takes the event from the queue is 0.9 ms late
    first = run_blocks(synth, 100, jitter_ns=jitter[:100])
    # Mid-way between fluidsynth's 64-frame boundaries: mapped more than 32 frames off
    # (the 0.9 ms of the late callback is 43), the voice would start 64 frames off.
    frame = 313 * 64 + 32  # block 156, offset 96
    synth.schedule(dac_time(frame), [0x90, 72, 110])
    audio = np.concatenate([first, run_blocks(synth, 300, first=100, jitter_ns=jitter[100:])])
    (onset,) = detect_onsets(audio)
    # Callback jitter must not move the event: the clock follows the earliest callbacks.
    assert abs(onset - (grid(frame) + _attack(72, 110))) <= 2
    assert synth.stats().late == 0


def test_late_events_play_at_the_block_start_and_are_counted(synth: LiveSynth) -> None:
    run_blocks(synth, 40)  # frames 0..5119 played
    synth.schedule(dac_time(5_000), [0x90, 72, 110])  # frame 5000 has passed
    audio = run_blocks(synth, 100, first=40)
    stats = synth.stats()
    assert stats.late == 1
    assert stats.max_late_ns == pytest.approx((5_120 - 5_000) * 1e9 / SR, abs=1)
    (onset,) = detect_onsets(np.concatenate([np.zeros((5_120, 2), np.float32), audio]))
    assert abs(onset - (5_120 + _attack(72, 110))) <= 2  # at the start of block 40


def test_send_now_plays_at_the_next_block_and_is_not_late(synth: LiveSynth) -> None:
    run_blocks(synth, 40)
    assert synth.send_now([0x90, 72, 110])
    audio = run_blocks(synth, 100, first=40)
    (onset,) = detect_onsets(np.concatenate([np.zeros((40 * BLOCK, 2), np.float32), audio]))
    assert abs(onset - (40 * BLOCK + _attack(72, 110))) <= 2
    assert synth.stats().late == 0


def test_synth_output_plays_scheduler_sends_a_fixed_offset_after_their_deadline(synth: LiveSynth) -> None:
    run_blocks(synth, 1)  # PortAudio has told the synth its latency and block size
    out = SynthOutput(synth)
    assert out.offset_ns == DELAY + BLOCK * 1_000_000_000 // SR + 2_000_000
    # The scheduler sends at the deadline, a little late (it woke 300 us after it):
    frame = 9_000
    out.send_at((0x90, 72, 110), dac_time(frame) - out.offset_ns)
    audio = run_blocks(synth, 200, first=1)
    (onset,) = detect_onsets(np.concatenate([np.zeros((BLOCK, 2), np.float32), audio]))
    assert abs(onset - (grid(frame) + _attack(72, 110))) <= 2
    out.close()
    out.send_at((0x90, 60, 100), dac_time(frame))
    assert out.dropped == 1 and synth.stats().scheduled == 1


def test_queue_is_bounded_and_counts_overflow() -> None:
    try:
        synth = LiveSynth(samplerate=SR, capacity=3)
    except LivegenError as err:
        pytest.skip(f"built-in synth unavailable here: {err}")
    try:
        assert all(synth.schedule(dac_time(100_000 + i), [0x90, 60, 1]) for i in range(3))
        assert not synth.schedule(dac_time(100_010), [0x90, 61, 1])
        assert not synth.send_now([0x80, 61, 0])
        run_blocks(synth, 1)  # the callback takes them from the queue; still in flight (pending)
        assert not synth.schedule(dac_time(100_011), [0x90, 62, 1])
        assert synth.stats().overflow == 3
    finally:
        synth.close()
    assert not synth.schedule(0, [0x90, 60, 1])  # closed: dropped, not raised
    assert synth.stats().dropped == 1


def test_bad_messages_are_refused_on_the_control_side(synth: LiveSynth) -> None:
    with pytest.raises(ValueError, match=r"0\.\.255"):
        synth.schedule(dac_time(100), [0x90, 60, 300])
    with pytest.raises(TypeError):
        synth.schedule(float(dac_time(100)), [0x90, 60, 100])  # type: ignore[arg-type]
    out = SynthOutput(synth, offset_ns=0)
    out.send_at((0x90, 999, 1), dac_time(100))  # the scheduler's thread gets a count, not an exception
    assert out.errors == 1
    assert synth.stats().scheduled == 0
    run_blocks(synth, 2)
    assert synth.stats().callback_errors == 0


def test_panic_drops_scheduled_events_and_silences() -> None:
    try:
        synth = LiveSynth(samplerate=SR, reverb=False, chorus=False)  # dry: no reverb tail after the voices
    except LivegenError as err:
        pytest.skip(f"built-in synth unavailable here: {err}")
    synth.schedule(dac_time(0), [0xB0, 64, 127])  # sustain on
    synth.schedule(dac_time(480), [0x90, 60, 100])
    synth.schedule(dac_time(600), [0x80, 60, 0])  # sustained: still sounding after this
    synth.schedule(dac_time(40_000), [0x90, 67, 100])  # must never play
    before = run_blocks(synth, 40)
    assert np.abs(before[-BLOCK:]).max() > 0.01
    synth.panic()
    after = run_blocks(synth, 400, first=40)
    synth.close()
    assert np.abs(after[4 * BLOCK :]).max() < 1e-4  # silent within 4 blocks, and the note at 40000 never came
    assert synth.stats().late == 0


def test_portaudio_callback_uses_the_time_info_and_never_raises() -> None:
    now = [T0]
    try:
        synth = LiveSynth(samplerate=SR, clock=lambda: now[0])
    except LivegenError as err:
        pytest.skip(f"built-in synth unavailable here: {err}")
    # PortAudio's stream time base is not perf_counter: only the difference DAC - current is used.
    timing = SimpleNamespace(currentTime=123.0, outputBufferDacTime=123.0 + DELAY / 1e9)
    audio = np.ones((300 * BLOCK, 2), dtype=np.float32)
    frame = 80 * BLOCK + 32
    for k in range(300):
        now[0] = T0 + round(k * BLOCK_NS)
        if k == 10:
            synth.schedule(dac_time(frame), [0x90, 72, 110])
        underflow = k == 100  # PortAudio flags one block: the clock re-anchors, nothing else changes
        synth._callback(audio[k * BLOCK : (k + 1) * BLOCK], BLOCK, timing, _Flags(underflow))
    assert synth.output_latency_ns == DELAY
    (onset,) = detect_onsets(audio)
    assert abs(onset - (grid(frame) + _attack(72, 110))) <= 2
    out = np.ones((BLOCK, 2), dtype=np.float32)
    synth._callback(out, BLOCK, None, _Flags(False))  # broken time info: counted, block silenced
    stats = synth.stats()
    synth.close()
    assert (stats.callbacks, stats.underflows, stats.status_flags, stats.resyncs) == (301, 1, 1, 1)
    assert stats.callback_errors == 1 and stats.late == 0
    assert not out.any()


class _Flags:
    def __init__(self, underflow: bool) -> None:
        self.output_underflow = underflow

    def __bool__(self) -> bool:
        return self.output_underflow


# -- the frame clock ---------------------------------------------------------------------


def test_clock_follows_the_earliest_callbacks_and_resyncs_on_a_jump() -> None:
    clock = DacClock(SR)
    clock.update(T0 + 300_000, DELAY, 0)  # a late first callback
    assert clock.frame_at(T0 + 300_000 + DELAY) == 0
    clock.update(T0 + round(BLOCK_NS), DELAY, BLOCK)  # an on-time one: the map moves back at once
    assert clock.frame_at(T0 + DELAY) == 0
    assert clock.frame_at(T0 + DELAY + 1_000_000_000) == SR
    clock.update(T0 + round(2 * BLOCK_NS) + 640_000, DELAY, 2 * BLOCK)  # a late one: 500 ppm of 2.7 ms
    assert clock.time_at(2 * BLOCK) - (T0 + DELAY + round(2 * BLOCK_NS)) == pytest.approx(1_333, abs=2)
    clock.update(T0 + 1_000_000_000, DELAY, 3 * BLOCK)  # frames stopped for a second: resync
    assert clock.resyncs == 1
    assert clock.frame_at(T0 + 1_000_000_000 + DELAY) == 3 * BLOCK


def test_clock_keeps_callback_jitter_out_of_the_frame_map() -> None:
    rng = np.random.default_rng(3)
    clock = DacClock(SR)
    errors = []
    for k in range(20_000):
        true_dac = T0 + DELAY + round(k * BLOCK_NS)
        clock.update(true_dac - DELAY + int(rng.uniform(0, 1_000_000)), DELAY, k * BLOCK)  # up to 1 ms late
        if k > 1_000:
            errors.append(k * BLOCK - clock.frame_at(true_dac))
    # The map errs early by a few frames at most (the naive map, each callback's own time: 0..48).
    assert min(errors) >= 0 and max(errors) <= 10
    assert np.mean(errors) < 4


def test_clock_follows_a_slow_audio_clock() -> None:
    clock = DacClock(SR)
    slow = 1.0001  # the device plays 100 ppm slower than nominal
    for k in range(20_000):
        clock.update(T0 + round(k * BLOCK_NS * slow), DELAY, k * BLOCK)
    k = 20_000
    true_time = T0 + DELAY + round(k * BLOCK_NS * slow)
    assert abs(clock.time_at(k * BLOCK) - true_time) < 300_000  # within 15 frames after 53 s
    assert clock.resyncs == 0


# -- devices -----------------------------------------------------------------------------------


def test_unknown_device_lists_what_is_available() -> None:
    try:
        devices = audio_devices.list_audio_devices()
    except BackendUnavailableError as err:
        pytest.skip(str(err))
    with pytest.raises(PortNotFoundError) as info:
        audio_devices.find_output_device("no-such-device-xyz")
    message = str(info.value)
    assert "no-such-device-xyz" in message
    outputs = [d for d in devices if d.is_output]
    if outputs:
        assert all(d.name in message for d in outputs)
    else:
        assert "no audio output devices are available" in message and "jackd" in message
    assert audio_devices.audio_output_available() == bool(outputs)
    with pytest.raises(PortNotFoundError, match="index 9999"):
        audio_devices.find_output_device(9999)


def test_missing_portaudio_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_portaudio(name: str) -> object:
        raise OSError("PortAudio library not found")

    monkeypatch.setattr(audio_devices.importlib, "import_module", no_portaudio)
    with pytest.raises(BackendUnavailableError, match="libportaudio2"):
        audio_devices.list_audio_devices()
    assert audio_devices.audio_output_available() is False
