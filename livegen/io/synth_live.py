"""The built-in synth playing live through a PortAudio output stream.

Contexts:

* setup: :class:`LiveSynth` construction, :meth:`LiveSynth.start`, :meth:`LiveSynth.close`.
* control (any thread but the audio one): :meth:`LiveSynth.schedule`,
  :meth:`LiveSynth.send_now`, :meth:`LiveSynth.panic`, :meth:`LiveSynth.stats`,
  :attr:`LiveSynth.output_latency_ns`, and :class:`SynthOutput` (the synth as a
  scheduler output, called on the scheduler's thread).
* real-time (PortAudio's callback thread): :meth:`LiveSynth._callback`,
  :meth:`LiveSynth.process` and what they call (:class:`DacClock`, the
  :class:`~livegen.io.synth_render.Renderer`).

Control -> audio hand-off is one ``collections.deque`` (``append``/``popleft`` are
atomic in CPython, no lock is taken) of immutable tuples, bounded by ``capacity``
counted over the queue plus the events the callback holds; an event that would exceed
it is dropped and counted in ``overflow``. The callback drains the queue at the start
of every block, maps each deadline to an output frame with :class:`DacClock`, and
hands the block to the shared renderer, which splits it at every event (the same code
renders offline). Deadlines are ``time.perf_counter_ns()`` values of the moment the
sound should leave the DAC; an event scheduled less than :attr:`LiveSynth.output_latency_ns`
plus a block ahead cannot make it and is played at the start of the next block,
counted ``late``. :class:`SynthOutput` turns the scheduler's send-at-the-deadline into
such a schedule, a fixed offset later.

The callback follows python-sounddevice's rules as far as Python allows: no lock of
ours, no logging, no I/O, no numpy allocation (fluidsynth writes into PortAudio's
buffer), every frame filled, exceptions counted instead of raised. It does create
small Python objects (ints, tuples, ctypes argument conversions), and it needs the
GIL: another Python thread can hold it for up to ``sys.getswitchinterval()`` (5 ms by
default), longer than a 128-frame block, so an application with busy Python threads
and small blocks should lower the switch interval or raise the block size.
``max_callback_ns`` in :meth:`LiveSynth.stats` shows the headroom.

Tests drive :meth:`LiveSynth.process` directly with a fake clock (the in-memory twin);
``tests/test_synth_jack.py`` checks the same code through a real JACK server.
"""

from __future__ import annotations

import operator
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from livegen.errors import BackendUnavailableError, ConfigError
from livegen.io.audio_devices import AudioDevice, find_output_device, load_sounddevice
from livegen.io.base import MidiOutput
from livegen.io.synth_render import DEFAULT_GAIN, DEFAULT_SAMPLERATE, NS_PER_S, AudioBuffer, Renderer

_SCHEDULED = 0
_NOW = 1
_PANIC = 2
_PANIC_ITEM: tuple[int, int, tuple[int, ...]] = (_PANIC, 0, ())


class DacClock:
    """Maps ``perf_counter_ns()`` to absolute output frames (real-time context).

    Once per block, :meth:`update` gets the wall time the callback started plus the
    stream's delay until this block's first frame reaches the DAC. Callbacks only ever
    run late, never early, so the map follows the earliest observations: one earlier
    than the prediction moves the anchor back at once; a later one moves it forward by
    at most ``max_drift_ppm`` of the time elapsed, enough to follow an audio clock that
    runs slower than the system clock but too little for callback jitter to move
    events. A gap above ``resync_ns``, or an underflow, re-anchors outright.
    """

    def __init__(self, samplerate: int, *, max_drift_ppm: int = 500, resync_ns: int = 10_000_000) -> None:
        self.samplerate = samplerate
        self.max_drift_ppm = max_drift_ppm
        self.resync_ns = resync_ns
        self.anchored = False
        self.anchor_ns = 0
        self.anchor_frame = 0
        self.last_frame = 0
        self.resyncs = 0

    def update(self, now_ns: int, delay_ns: int, frame: int, *, force: bool = False) -> None:
        """``frame`` (the block's first) leaves the DAC at about ``now_ns + delay_ns``."""
        observed = now_ns + delay_ns
        if self.anchored and not force:
            predicted = self.time_at(frame)
            gap = observed - predicted
            if 0 <= gap <= self.resync_ns:
                elapsed_ns = (frame - self.last_frame) * NS_PER_S // self.samplerate
                self.anchor_ns += min(gap, elapsed_ns * self.max_drift_ppm // 1_000_000)
                self.last_frame = frame
                return
            if gap > 0:
                self.resyncs += 1
        elif self.anchored:
            self.resyncs += 1
        self.anchored = True
        self.anchor_ns = observed
        self.anchor_frame = self.last_frame = frame

    def frame_at(self, t_ns: int) -> int:
        """The output frame that plays at wall time ``t_ns`` (halves round up)."""
        return self.anchor_frame + ((t_ns - self.anchor_ns) * self.samplerate + NS_PER_S // 2) // NS_PER_S

    def time_at(self, frame: int) -> int:
        """The wall time at which ``frame`` plays."""
        return self.anchor_ns + (frame - self.anchor_frame) * NS_PER_S // self.samplerate


@dataclass(frozen=True, slots=True)
class SynthStats:
    """A snapshot of the live synth's counters, for the control side to report."""

    scheduled: int  # events accepted by schedule() and send_now()
    applied: int  # MIDI messages applied to the synth
    late: int  # events whose frame had passed: played at a block start
    max_late_ns: int  # the latest of those, in ns
    overflow: int  # events dropped because the queue was full
    dropped: int  # events sent after close()
    ignored: int  # malformed or unsupported messages
    callbacks: int
    underflows: int  # blocks PortAudio flagged output_underflow
    status_flags: int  # blocks with any PortAudio status flag
    callback_errors: int  # exceptions caught in the callback (the block was silenced)
    max_callback_ns: int  # the longest callback, start to return (compare with the block duration)
    resyncs: int  # times the frame clock re-anchored
    frames: int  # frames rendered


class LiveSynth:
    """SoundFont synth on an audio device, fed events ahead of time by the control side.

    ``device`` is a PortAudio output index or name (None: the default output).
    ``capacity`` bounds the events in flight (queued plus waiting for their block).
    ``clock`` is the wall clock (``time.perf_counter_ns``; tests pass a fake).
    Without :meth:`start` nothing plays unless a test calls :meth:`process` itself.
    """

    def __init__(
        self,
        soundfont: str | os.PathLike[str] | None = None,
        *,
        device: int | str | None = None,
        samplerate: int = DEFAULT_SAMPLERATE,
        blocksize: int = 0,
        latency: float | str = "low",
        capacity: int = 4096,
        gain: float = DEFAULT_GAIN,
        reverb: bool = True,
        chorus: bool = True,
        clock: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        if capacity < 1:
            raise ConfigError(f"synth event capacity {capacity} must be at least 1")
        self.device = device
        self.samplerate = samplerate
        self.blocksize = blocksize
        self.latency = latency
        self.capacity = capacity
        self._clock = clock
        self._renderer = Renderer(soundfont, samplerate=samplerate, gain=gain, reverb=reverb, chorus=chorus)
        self._dac = DacClock(samplerate)
        self._queue: deque[tuple[int, int, Sequence[int]]] = deque()
        self._stream: Any = None
        self.closed = False
        self.output_device: AudioDevice | None = None
        #: Delay from a callback to the DAC when PortAudio's time info gives none.
        self.fallback_delay_ns = 0
        self._last_delay_ns = 0
        self._last_frames = 0
        # control-side counters
        self._scheduled = 0
        self._overflow = 0
        self._dropped = 0
        # audio-side counters
        self._callbacks = 0
        self._underflows = 0
        self._status_flags = 0
        self._callback_errors = 0
        self._max_callback_ns = 0

    # -- setup ------------------------------------------------------------------

    def start(self, *, first_callback_timeout_s: float = 2.0) -> None:
        """Open and start the output stream (float32 stereo); return once its callback has run.

        Waiting for the first callback makes :attr:`output_latency_ns` and
        :attr:`block_ns` PortAudio's real figures, not estimates.
        """
        if self._stream is not None:
            return
        if self.closed:
            raise BackendUnavailableError("the synth is closed; create a new LiveSynth")
        sd = load_sounddevice()
        self.output_device = find_output_device(self.device)
        stream = None
        try:
            stream = sd.OutputStream(
                samplerate=self.samplerate,
                blocksize=self.blocksize,
                device=self.output_device.index,
                channels=2,
                dtype="float32",
                latency=self.latency,
                callback=self._callback,
            )
            self.fallback_delay_ns = round(float(stream.latency) * NS_PER_S)
            self._stream = stream  # from here on the renderer belongs to the callback
            stream.start()
        except (sd.PortAudioError, ValueError) as err:
            self._stream = None
            if stream is not None:
                stream.close()
            raise BackendUnavailableError(
                f"cannot play on audio output {self.output_device.name!r} at {self.samplerate} Hz, "
                f"stereo float32: {err}"
            ) from err
        give_up = time.monotonic() + first_callback_timeout_s
        while self._callbacks == 0:
            if time.monotonic() > give_up:
                self.close()
                raise BackendUnavailableError(
                    f"audio output {self.output_device.name!r} started but never asked for audio "
                    f"within {first_callback_timeout_s} s"
                )
            time.sleep(0.001)

    @property
    def device_name(self) -> str:
        if self.output_device is not None:
            return f"{self.output_device.name} ({self.output_device.hostapi})"
        return "default output" if self.device is None else str(self.device)

    @property
    def running(self) -> bool:
        stream = self._stream
        return stream is not None and bool(stream.active)

    def close(self) -> None:
        """Stop the stream (waiting for the callback to return), then free the synth."""
        if self.closed:
            return
        self.closed = True
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop()
            stream.close()
        self._renderer.close()

    def __enter__(self) -> LiveSynth:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- control ------------------------------------------------------------------

    @property
    def output_latency_ns(self) -> int:
        """Callback to DAC, as PortAudio reported it for the last block."""
        return self._last_delay_ns or self.fallback_delay_ns

    @property
    def block_ns(self) -> int:
        """Duration of the last block PortAudio asked for."""
        return self._last_frames * NS_PER_S // self.samplerate

    def schedule(self, deadline_ns: int, data: Sequence[int]) -> bool:
        """Play ``data`` when the DAC reaches ``deadline_ns`` (perf_counter_ns); False if dropped.

        Raises ValueError/TypeError for bytes outside 0..255 or a non-integer deadline.

        To be on time, ``deadline_ns`` must be at least :attr:`output_latency_ns` plus
        one block ahead of now; otherwise it plays at the next block, counted late.
        """
        return self._enqueue(_SCHEDULED, deadline_ns, data)

    def send_now(self, data: Sequence[int]) -> bool:
        """Play ``data`` at the start of the next block (immediate messages); False if dropped."""
        return self._enqueue(_NOW, 0, data)

    def _enqueue(self, kind: int, deadline_ns: int, data: Sequence[int]) -> bool:
        # Checked here, on the control side, so the callback never meets a bad value.
        message = tuple(operator.index(b) for b in data)
        if not all(0 <= b <= 0xFF for b in message):
            raise ValueError(f"MIDI bytes must be 0..255, got {list(message)}")
        deadline_ns = operator.index(deadline_ns)
        if self.closed:
            self._dropped += 1
            return False
        if len(self._queue) + self._renderer.pending_count >= self.capacity:
            self._overflow += 1
            return False
        self._queue.append((kind, deadline_ns, message))
        self._scheduled += 1
        return True

    def panic(self) -> None:
        """Drop every scheduled event, then CC64=0, CC123, CC120 on all 16 channels.

        While the stream runs this reaches the synth at the next block, in order with
        what was sent before and after; otherwise it applies at once.
        """
        if self.closed:
            return
        if self._stream is not None:
            self._queue.append(_PANIC_ITEM)  # bypasses the capacity check on purpose
        else:
            self._queue.clear()
            self._renderer.clear_pending()
            self._renderer.panic()

    def stats(self) -> SynthStats:
        r = self._renderer
        return SynthStats(
            scheduled=self._scheduled,
            applied=r.applied,
            late=r.late,
            max_late_ns=r.max_late_frames * NS_PER_S // self.samplerate,
            overflow=self._overflow,
            dropped=self._dropped,
            ignored=r.ignored,
            callbacks=self._callbacks,
            underflows=self._underflows,
            status_flags=self._status_flags,
            callback_errors=self._callback_errors,
            max_callback_ns=self._max_callback_ns,
            resyncs=self._dac.resyncs,
            frames=r.position,
        )

    # -- real-time ------------------------------------------------------------------

    def _callback(self, outdata: AudioBuffer, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's stream callback: never raises, always fills ``outdata``."""
        now_ns = self._clock()
        try:
            self._callbacks += 1
            underflow = bool(status.output_underflow)
            if status:
                self._status_flags += 1
                if underflow:
                    self._underflows += 1
            # PortAudio's own estimate of when this block plays, relative to now.
            delay_ns = round((time_info.outputBufferDacTime - time_info.currentTime) * NS_PER_S)
            if not 0 < delay_ns < NS_PER_S:
                delay_ns = self.fallback_delay_ns
            self.process(outdata, frames, now_ns, delay_ns, underflow=underflow)
        except Exception:  # counted; an exception would stop the stream
            self._callback_errors += 1
            outdata.fill(0)
        took = self._clock() - now_ns
        if took > self._max_callback_ns:
            self._max_callback_ns = took

    def process(
        self, outdata: AudioBuffer, frames: int, now_ns: int, delay_ns: int, *, underflow: bool = False
    ) -> None:
        """Render one block whose first frame leaves the DAC at about ``now_ns + delay_ns``.

        Real-time. The callback's body, callable from tests with fake times.
        """
        renderer = self._renderer
        self._last_delay_ns = delay_ns
        self._last_frames = frames
        dac = self._dac
        dac.update(now_ns, delay_ns, renderer.position, force=underflow)
        queue = self._queue
        while queue:
            kind, deadline_ns, data = queue.popleft()
            if kind == _SCHEDULED:
                renderer.push(dac.frame_at(deadline_ns), data)
            elif kind == _NOW:
                renderer.push_now(data)
            else:
                renderer.clear_pending()
                renderer.panic()
        renderer.render_block(outdata, frames)


class SynthOutput(MidiOutput):
    """A :class:`LiveSynth` as a scheduler output (control / scheduler thread).

    The scheduler calls :meth:`send_at` at each deadline. A message cannot reach the
    DAC before the synth's output latency plus a block has passed, so this output
    plays every message a fixed ``offset_ns`` after its deadline, placed on the exact
    frame: the scheduler's wake-up jitter disappears and every message, model or
    echo, is delayed by the same amount. ``offset_ns`` defaults to the synth's output
    latency + one block + ``margin_ns``, fixed when this output is made (after
    :meth:`LiveSynth.start`). A message later than that is played at once and
    counted late by the synth. Closing this output leaves the synth to its owner.
    """

    name = "synth"

    def __init__(self, synth: LiveSynth, *, offset_ns: int | None = None, margin_ns: int = 2_000_000) -> None:
        super().__init__()
        self.synth = synth
        if offset_ns is None:
            offset_ns = synth.output_latency_ns + synth.block_ns + margin_ns
        self.offset_ns = offset_ns

    def send_at(self, data: Sequence[int], deadline_ns: int) -> None:
        try:
            if self.closed or not self.synth.schedule(deadline_ns + self.offset_ns, data):
                self.dropped += 1
        except Exception:  # counted like MidiOutput.send: the scheduler thread must not die
            self.errors += 1

    def _send(self, data: Sequence[int]) -> None:
        if not self.synth.send_now(data):
            self.dropped += 1
