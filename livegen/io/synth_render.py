"""The built-in synth's sample-accurate renderer, and offline rendering to WAV.

Contexts:

* setup: :class:`Renderer` construction (loads libfluidsynth and the SoundFont),
  :meth:`Renderer.close`, :func:`render_offline`, :func:`write_wav`.
* control (a jam's control thread when no audio device is there): :class:`WavStream`,
  which renders to a WAV file as the performance goes.
* real-time (the audio callback in :mod:`livegen.io.synth_live`, or the offline loop
  standing in for it): :meth:`Renderer.push`, :meth:`Renderer.push_now`,
  :meth:`Renderer.render_block`, :meth:`Renderer.apply`, :meth:`Renderer.panic`,
  :meth:`Renderer.clear_pending`.

A :class:`Renderer` is owned by one thread at a time (fluidsynth is created with
``synth.threadsafe-api = 0``, so it takes no mutex): the audio callback while a stream
runs, the caller otherwise.

Timing. Events carry an absolute frame (sample index). :meth:`Renderer.render_block`
splits each block at every due event: it renders up to the event's frame, applies the
event, renders on. Offline rendering is the same loop on a virtual clock (frames
counted from zero), so a render is deterministic and independent of the block size.
One limit is fluidsynth's, not ours: it computes audio in internal blocks of 64 frames
(``FLUID_BUFSIZE``) and a voice starts at the first such boundary at or after the frame
where the note-on was applied. Onsets therefore land 0..63 frames (at most 1.3 ms at
48 kHz) after their frame, deterministically, whatever block size we render with.

Allocation on the real-time path, honestly: samples are written by
``fluid_synth_write_float`` straight into the caller's buffer (the PortAudio buffer
when live), so there is no copy and no numpy allocation. Python itself still creates
small objects per call (ints, the ctypes argument conversions, heap entries), and the
pending-event heap (a list) can grow when more events are pending than ever before;
there is no logging, no I/O and no lock of ours.

Offline rendering comes in two forms with the same samples: :func:`render_offline` renders
a whole list of events into memory (a render of minutes; :func:`write_wav` then writes it
atomically), and :class:`WavStream` renders and writes as events come, holding only the
events of the next second, so that a jam of days without a sound card neither fills the
memory nor, with its length cap, the disk.

Written by hand (no library does it): the event split and the raw-bytes dispatch.
pyfluidsynth does the synthesis; its ``get_samples`` copies into new int16 arrays
per call, so this module declares ``fluid_synth_write_float`` itself with ctypes.
"""

from __future__ import annotations

import ctypes
import errno
import heapq
import logging
import os
import wave
from collections.abc import Iterable, Sequence
from numbers import Integral
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from livegen.errors import BackendUnavailableError, ConfigError
from livegen.io.soundfont import SoundFontError, describe_load_failure, find_soundfont
from livegen.music.atomic import write_atomically
from livegen.music.events import CONTROL_CHANGE, NOTE_OFF, NOTE_ON, PROGRAM_CHANGE

log = logging.getLogger(__name__)

DEFAULT_SAMPLERATE = 48_000
DEFAULT_GAIN = 0.5
#: fluidsynth's internal block: voices start on multiples of this many frames.
FLUID_BLOCK = 64
NS_PER_S = 1_000_000_000
#: The longest a WAV file can hold at 48 kHz, 16-bit stereo: RIFF sizes are 32-bit (4 GiB), minutes.
WAV_MAX_MINUTES = 360

KEY_PRESSURE = 0xA0
CHANNEL_PRESSURE = 0xD0
PITCH_BEND = 0xE0
SYSTEM_RESET = 0xFF

AudioBuffer = npt.NDArray[np.float32]
#: ``(time, raw MIDI bytes)``; the time unit is stated where the type is used.
TimedBytes = tuple[int, Sequence[int]]


def ns_to_frames(t_ns: int, samplerate: int) -> int:
    """The frame at ``t_ns`` nanoseconds (exact integer arithmetic, halves round up)."""
    return (t_ns * samplerate + NS_PER_S // 2) // NS_PER_S


def frames_to_ns(frames: int, samplerate: int) -> int:
    """The time of frame ``frames`` in nanoseconds (rounded down to whole ns)."""
    return frames * NS_PER_S // samplerate


def load_fluidsynth() -> ModuleType:
    """Import pyfluidsynth, turning a missing libfluidsynth into a clear error."""
    try:
        import fluidsynth
    except (ImportError, OSError) as err:
        raise BackendUnavailableError(
            f"the built-in synth needs the FluidSynth library ({err}); install the Debian package "
            "libfluidsynth3 (or your system's fluidsynth package), or use --out PORT|none"
        ) from err
    return fluidsynth


class _Fluid:
    """ctypes prototypes pyfluidsynth 1.4 does not declare (bound once, at setup)."""

    _cache: _Fluid | None = None

    def __init__(self, fluidsynth: ModuleType) -> None:
        lib = ctypes.CDLL(fluidsynth.lib)
        vp, ci = ctypes.c_void_p, ctypes.c_int
        self.write_float = self._proto(lib, "fluid_synth_write_float", vp, ci, vp, ci, ci, vp, ci, ci)
        self.channel_pressure = self._proto(lib, "fluid_synth_channel_pressure", vp, ci, ci)
        self.key_pressure = self._proto(lib, "fluid_synth_key_pressure", vp, ci, ci, ci)
        self.pitch_bend = self._proto(lib, "fluid_synth_pitch_bend", vp, ci, ci)

    @staticmethod
    def _proto(lib: ctypes.CDLL, name: str, *argtypes: Any) -> Any:
        func = getattr(lib, name)
        func.argtypes = list(argtypes)
        func.restype = ctypes.c_int
        return func

    @classmethod
    def get(cls, fluidsynth: ModuleType) -> _Fluid:
        if cls._cache is None:
            cls._cache = cls(fluidsynth)
        return cls._cache


class Renderer:
    """A fluidsynth instance with a SoundFont and a queue of events timed in frames.

    Setup: ``Renderer(soundfont, samplerate=..., gain=...)``. Real-time: push events
    with :meth:`push`/:meth:`push_now`, then call :meth:`render_block` once per block.
    Counters (``late``, ``max_late_frames``, ``applied``, ``ignored``) are written
    only by the owning thread; other threads may read them.
    """

    def __init__(
        self,
        soundfont: str | os.PathLike[str] | None = None,
        *,
        samplerate: int = DEFAULT_SAMPLERATE,
        gain: float = DEFAULT_GAIN,
        reverb: bool = True,
        chorus: bool = True,
        polyphony: int = 256,
    ) -> None:
        if not 8_000 <= samplerate <= 192_000:
            raise ConfigError(f"synth sample rate {samplerate} Hz is outside 8000..192000")
        if not 0.0 < gain <= 10.0:
            raise ConfigError(f"synth gain {gain} is outside (0, 10]")
        path = find_soundfont(soundfont)
        fluidsynth = load_fluidsynth()
        self._fl = _Fluid.get(fluidsynth)
        self.samplerate = samplerate
        self.soundfont = path
        self._synth = fluidsynth.Synth(
            gain=gain,
            samplerate=samplerate,
            channels=16,
            **{
                "synth.threadsafe-api": 0,
                "synth.cpu-cores": 1,
                "synth.polyphony": polyphony,
                "synth.reverb.active": int(reverb),
                "synth.chorus.active": int(chorus),
            },
        )
        self._handle = self._synth.synth
        # update_midi_preset=1: every channel gets its General MIDI default (bank 128 on 10).
        self.sfid = self._synth.sfload(str(path), 1)
        if self.sfid < 0:
            self._synth.delete()
            raise SoundFontError(
                f"fluidsynth could not load {str(path)!r} as a SoundFont: {describe_load_failure(path)}; "
                "pass --soundfont with a General MIDI .sf2 file (e.g. from the Debian package timgm6mb-soundfont)"
            )
        self.position = 0  # absolute frame of the next sample render_block writes
        self._pending: list[tuple[int, int, Sequence[int]]] = []
        self._seq = 0
        self.late = 0
        self.max_late_frames = 0
        self.applied = 0
        self.ignored = 0
        self._closed = False

    # -- real-time ------------------------------------------------------------

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def push(self, frame: int, data: Sequence[int]) -> None:
        """Queue ``data`` for absolute ``frame`` (FIFO among equal frames)."""
        self._seq += 1
        heapq.heappush(self._pending, (frame, self._seq, data))

    def push_now(self, data: Sequence[int]) -> None:
        """Queue ``data`` for the start of the next block, never counted late."""
        self.push(self.position, data)

    def clear_pending(self) -> None:
        self._pending.clear()

    def render_block(self, out: AudioBuffer, frames: int) -> None:
        """Fill ``out[:frames]`` (float32, shape (>=frames, 2), C-contiguous), applying due events.

        An event whose frame lies before this block is applied at its start and counted
        in ``late``. Always fills every frame.
        """
        start = self.position
        end = start + frames
        ptr = out.ctypes.data
        cursor = 0
        pending = self._pending
        while pending and pending[0][0] < end:
            frame, _seq, data = heapq.heappop(pending)
            offset = frame - start
            if offset < 0:
                self.late += 1
                if -offset > self.max_late_frames:
                    self.max_late_frames = -offset
                offset = 0
            if offset > cursor:
                self._write(ptr, cursor, offset - cursor)
                cursor = offset
            self.apply(data)
        if cursor < frames:
            self._write(ptr, cursor, frames - cursor)
        self.position = end

    def _write(self, ptr: int, offset: int, frames: int) -> None:
        # Interleaved stereo: left at 2*i, right at 2*i + 1 (offsets count floats).
        self._fl.write_float(self._handle, frames, ptr, 2 * offset, 2, ptr, 2 * offset + 1, 2)

    def apply(self, data: Sequence[int]) -> bool:
        """Apply one raw MIDI message now. Unknown or malformed ones are counted, not raised."""
        n = len(data)
        if n == 0:
            self.ignored += 1
            return False
        status = data[0]
        if status == SYSTEM_RESET:
            self._synth.system_reset()
            self.applied += 1
            return True
        if n < 2 or not 0x80 <= status < 0xF0:
            self.ignored += 1
            return False
        kind = status & 0xF0
        chan = status & 0x0F
        d1 = data[1] & 0x7F
        h = self._handle
        if kind == PROGRAM_CHANGE:
            self._synth.program_change(chan, d1)
        elif kind == CHANNEL_PRESSURE:
            self._fl.channel_pressure(h, chan, d1)
        elif n < 3:
            self.ignored += 1
            return False
        else:
            d2 = data[2] & 0x7F
            if kind == NOTE_ON and d2 > 0:
                self._synth.noteon(chan, d1, d2)
            elif kind in (NOTE_ON, NOTE_OFF):
                self._synth.noteoff(chan, d1)
            elif kind == CONTROL_CHANGE:
                self._synth.cc(chan, d1, d2)
            elif kind == PITCH_BEND:
                self._fl.pitch_bend(h, chan, d1 | (d2 << 7))
            else:  # KEY_PRESSURE
                self._fl.key_pressure(h, chan, d1, d2)
        self.applied += 1
        return True

    def panic(self) -> None:
        """Now, on all 16 channels: sustain off (CC64=0), all notes off (CC123), all sound off (CC120)."""
        synth = self._synth
        for chan in range(16):
            synth.cc(chan, 64, 0)
            synth.cc(chan, 123, 0)
            synth.cc(chan, 120, 0)

    # -- setup ------------------------------------------------------------------

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._synth.delete()

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def render_offline(
    events: Iterable[TimedBytes],
    *,
    soundfont: str | os.PathLike[str] | None = None,
    samplerate: int = DEFAULT_SAMPLERATE,
    tail_s: float = 2.0,
    block_frames: int = 256,
    gain: float = DEFAULT_GAIN,
    reverb: bool = True,
    chorus: bool = True,
) -> AudioBuffer:
    """Render ``(t_ns, bytes)`` events, timed in nanoseconds from the start, to float32 (frames, 2).

    Each time is converted to a frame exactly (:func:`ns_to_frames`); events at the same
    time keep their order. The render runs ``tail_s`` seconds past the last event so
    release and reverb tails are kept. A fresh synth is used, so the same events give
    the same samples, for any ``block_frames``.
    """
    if block_frames < 1:
        raise ConfigError(f"block_frames {block_frames} must be at least 1")
    if tail_s < 0:
        raise ConfigError(f"tail_s {tail_s} must not be negative")
    timed: list[tuple[int, tuple[int, ...]]] = []
    for t_ns, data in events:
        if not isinstance(t_ns, Integral) or t_ns < 0:
            raise ConfigError(f"event {list(data)} at {t_ns!r}: times must be whole ns >= 0 from the start")
        timed.append((ns_to_frames(int(t_ns), samplerate), tuple(int(b) for b in data)))
    last = max((frame for frame, _ in timed), default=0)
    total = last + 1 + round(tail_s * samplerate)
    out: AudioBuffer = np.zeros((total, 2), dtype=np.float32)
    with Renderer(soundfont, samplerate=samplerate, gain=gain, reverb=reverb, chorus=chorus) as renderer:
        for frame, data in timed:  # push keeps input order among equal frames
            renderer.push(frame, data)
        pos = 0
        while pos < total:
            n = min(block_frames, total - pos)
            renderer.render_block(out[pos : pos + n], n)
            pos += n
    return out


def write_wav(path: str | os.PathLike[str], audio: npt.ArrayLike, samplerate: int = DEFAULT_SAMPLERATE) -> Path:
    """Write float audio in [-1, 1] (shape (frames,) or (frames, channels)) as 16-bit PCM WAV.

    Written with :func:`~livegen.music.atomic.write_atomically` (a temporary file
    beside ``path``, fsync-ed, renamed over it), so a reader, a crash or a signal never
    leaves half a file. Samples beyond full scale are clipped. Raises :class:`OSError`
    from the file system.
    """
    target = Path(path)
    data = np.asarray(audio, dtype=np.float64)
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2 or data.shape[1] < 1:
        raise ConfigError(f"audio for {str(target)!r} must have shape (frames,) or (frames, channels)")
    pcm = np.round(np.clip(data, -1.0, 1.0) * 32767.0).astype("<i2")

    def write(raw: BinaryIO) -> None:
        with wave.open(raw, "wb") as w:  # closing the writer patches the header; ``raw`` stays open
            w.setnchannels(pcm.shape[1])
            w.setsampwidth(2)
            w.setframerate(samplerate)
            w.writeframes(pcm.tobytes())

    write_atomically(target, write)
    return target


class WavStream:
    """The built-in synth rendering to a 16-bit stereo WAV file while a performance plays.

    Context: setup (construction, :meth:`close`) and control (:meth:`push`,
    :meth:`render_until`), one thread at a time; never the real-time thread (it writes
    the file).

    Events are pushed with their time in ns from the performance's start, in about the
    order they were sent; :meth:`render_until` renders and appends the audio up to
    ``behind_s`` before the time it is given, so every event sent on time lands on its
    exact frame (an event pushed for a frame already written is applied at the next
    block, and counted in ``late``). The samples are those :func:`render_offline`
    gives for the same events: the same synth settings, the same frames, and the same
    length at :meth:`close` (the last event plus ``tail_s``).

    The file is written in place and stays a valid WAV at every moment: :mod:`wave`
    writes each block's samples first and then patches the header's sizes, so a crash
    leaves every block written so far, readable. ``max_seconds`` caps its length (a WAV
    holds at most :data:`WAV_MAX_MINUTES` minutes): at the cap the file is finished,
    the synth is closed, a warning is logged, and later events are only counted in
    ``dropped``; ``capped`` says so. A block that cannot be written (a full disk) ends the
    file the same way, keeping what was written before it: ``failed`` says where and why,
    ``write_errors`` counts it, and the performance plays on (its MIDI recording holds
    every note).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        soundfont: str | os.PathLike[str] | None = None,
        samplerate: int = DEFAULT_SAMPLERATE,
        max_seconds: float | None = None,
        tail_s: float = 2.0,
        behind_s: float = 1.0,
        block_frames: int = 4096,
        gain: float = DEFAULT_GAIN,
        reverb: bool = True,
        chorus: bool = True,
    ) -> None:
        if max_seconds is not None and not 0 < max_seconds <= WAV_MAX_MINUTES * 60:
            raise ConfigError(f"WAV length {max_seconds} s: expected more than 0 and at most {WAV_MAX_MINUTES} minutes")
        if block_frames < 1 or tail_s < 0 or behind_s < 0:
            raise ConfigError("block_frames must be at least 1, tail_s and behind_s not negative")
        self.path = Path(path)
        self.samplerate = samplerate
        self._renderer: Renderer | None = Renderer(
            soundfont, samplerate=samplerate, gain=gain, reverb=reverb, chorus=chorus
        )
        self._limit = None if max_seconds is None else round(max_seconds * samplerate)
        self._tail = round(tail_s * samplerate)
        self._behind = round(behind_s * samplerate)
        self._block: AudioBuffer = np.zeros((block_frames, 2), dtype=np.float32)
        self._last = 0  # the frame of the latest event pushed
        self.frames = 0  # frames written to the file so far
        self.late = 0  # events pushed for a frame already written (applied at the next block)
        self.dropped = 0  # events past the cap
        self.capped = False
        self.failed: str | None = None  # why the WAV stopped early, naming the file
        self.write_errors = 0
        self._raw: BinaryIO | None = None
        self._wave: wave.Wave_write | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._raw = open(self.path, "wb")  # noqa: SIM115 (close() closes it)
            self._wave = wave.open(self._raw, "wb")  # noqa: SIM115
            self._wave.setnchannels(2)
            self._wave.setsampwidth(2)
            self._wave.setframerate(samplerate)
            self._wave.writeframes(b"")  # the header, saying 0 frames, before any sample
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                self._renderer.close()
                raise
            self._give_up(err)  # a full disk (no free inode): no WAV, the performance plays on
        except BaseException:
            self._renderer.close()
            raise

    @property
    def pending(self) -> int:
        """Events pushed and not yet rendered (bounded by ``behind_s`` of music)."""
        return self._renderer.pending_count if self._renderer is not None else 0

    def push(self, t_ns: int, data: Sequence[int]) -> None:
        """Queue ``data`` at ``t_ns`` ns from the start (earlier times count as 0)."""
        frame = ns_to_frames(max(0, int(t_ns)), self.samplerate)
        if self._renderer is None or (self._limit is not None and frame >= self._limit):
            self.dropped += 1
            return
        self._renderer.push(frame, tuple(int(b) for b in data))
        if frame > self._last:
            self._last = frame

    def render_until(self, t_ns: int, *, max_blocks: int = 8) -> None:
        """Render and write the whole blocks that end ``behind_s`` or more before ``t_ns`` ns from the
        start, at most ``max_blocks`` of them (a call every control step stays short; a backlog,
        after a silence, is caught up over the next calls)."""
        renderer = self._renderer
        if renderer is None:
            return
        due = ns_to_frames(max(0, int(t_ns)), self.samplerate) - self._behind
        size = len(self._block)
        blocks = min((due - renderer.position) // size, max_blocks)
        if blocks > 0:
            self._render_to(renderer.position + blocks * size)

    def _render_to(self, frame: int) -> None:
        renderer, out = self._renderer, self._wave
        if renderer is None or out is None:
            return
        if self._limit is not None and frame >= self._limit:
            frame = self._limit
        block = self._block
        while renderer.position < frame:
            n = min(len(block), frame - renderer.position)
            renderer.render_block(block, n)
            try:
                out.writeframes(_pcm16(block[:n]))
            except OSError as err:
                self._give_up(err)
                return
            self.frames = renderer.position
        self.late = renderer.late
        if self._limit is not None and renderer.position >= self._limit:
            self.capped = True
            log.warning(
                "%s: the WAV stops at its length cap (%.0f minutes); the MIDI recording goes on",
                self.path,
                self._limit / self.samplerate / 60,
            )
            self._end()

    def close(self) -> Path:
        """Render to the last event plus the tail (within the cap), finish the file; its path."""
        if self._renderer is not None:
            self._render_to(self._last + 1 + self._tail)
        self._end()
        return self.path

    def _end(self) -> None:
        try:
            self._finish()
        except OSError as err:  # the last samples or sizes did not reach the disk
            self._give_up(err)

    def _give_up(self, err: OSError) -> None:
        """A block could not be written: end the file with what it holds, and say so once."""
        self.write_errors += 1
        seconds = self.frames / self.samplerate
        self.failed = f"{self.path}: cannot write the WAV ({err.strerror or err}); it stops after {seconds:.1f} s"
        log.warning("%s; the MIDI recording goes on", self.failed)
        try:
            self._finish()
        except OSError as again:  # the header's last sizes may not reach the disk either
            log.debug("%s: finishing the WAV: %s", self.path, again)

    def _finish(self) -> None:
        wav, raw, renderer = self._wave, self._raw, self._renderer
        self._wave = self._raw = self._renderer = None
        try:
            if wav is not None:
                wav.close()  # the final sizes in the header (``raw`` stays open: wave did not open it)
            if raw is not None:
                raw.flush()
                os.fsync(raw.fileno())
        finally:
            try:
                if raw is not None:
                    raw.close()
            finally:
                if renderer is not None:
                    renderer.close()

    def __enter__(self) -> WavStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pcm16(block: AudioBuffer) -> bytes:
    """Float samples in [-1, 1] as little-endian 16-bit PCM, rounded as :func:`write_wav` rounds."""
    data = np.asarray(block, dtype=np.float64)
    return np.round(np.clip(data, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
