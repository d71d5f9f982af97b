"""MIDI input ports over python-rtmidi, each read by its own thread.

Contexts: setup for :func:`open_input` and ``close()``; backend thread for
:meth:`RtMidiInput._run`, the input's reader thread, which timestamps each message and
calls the :data:`~livegen.io.base.InputCallback`; the port keeper's thread for
``suspend``/``detach``/``attach``/``resume``/``release_held``.

What python-rtmidi 1.5.8 (RtMidi 5.0.0) does that shapes this module, measured here:

- A Python input callback (``MidiIn.set_callback``) runs on JACK's real-time process
  thread and must take the GIL there, so the whole JACK graph waits whenever another
  Python thread holds it. Worse, closing such an input while messages arrive deadlocked the
  interpreter in 3 of 3 runs (``jack_client_close`` cancels the process thread while it
  waits for the GIL, leaving the GIL's mutex locked) and once crashed it
  (python-rtmidi frees the callback's data while the process thread still uses it).
  So :class:`RtMidiInput` registers no rtmidi callback: RtMidi queues incoming messages
  lock-free on the backend's own thread, and a livegen reader thread polls that queue
  every ``poll_interval`` (1 ms: +2.5 % of one core, at most 1 ms added to latency,
  below JACK's 2.7 ms period at 128 frames and 48 kHz). Closing stops and joins the
  reader before the rtmidi object is deleted: 300 open/close cycles under a
  5000 message/s stream ran clean.
- The time a message is polled is not when it arrived: a stall of the interpreter lock
  moves it. Each message is stamped from RtMidi's delta times instead
  (:mod:`livegen.io.arrival`). RtMidi measures a delta from the previous message it
  saw, ignored or not, so it is asked to ignore only SysEx (when wanted): clock, MIDI
  time code and active sensing are dropped here, after stamping.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from livegen.errors import BackendUnavailableError
from livegen.io.arrival import ArrivalStamps
from livegen.io.base import InputCallback, MidiInput
from livegen.io.midi_api import INPUT_NAME, resolve_api
from livegen.io.midi_clients import new_input_client, release_client
from livegen.music.events import MidiStreamParser

log = logging.getLogger(__name__)


_NOTE_OFF, _NOTE_ON, _CONTROL_CHANGE, _SUSTAIN = 0x80, 0x90, 0xB0, 64
_IGNORED = frozenset({0xFE})  # active sensing
_IGNORED_TIMING = frozenset({0xFE, 0xF8, 0xF1})  # and MIDI clock and time code (as RtMidi's "timing")


class RtMidiInput(MidiInput):
    """A MIDI input port over python-rtmidi, read by its own thread.

    The backend queues each message on its own thread without Python (see the module
    docstring for why no rtmidi callback is used). The reader thread, every
    ``poll_interval`` seconds, takes all waiting messages; it stamps each with its
    arrival time on the ``perf_counter_ns`` clock (:class:`~livegen.io.arrival.ArrivalStamps`),
    drops active sensing (and clock and time code when ``ignore`` says so), then calls
    the callback once per complete, well-formed message a
    :class:`~livegen.music.events.MidiStreamParser` finds in its bytes (JACK
    passes on whatever another client wrote); what it drops is counted in :attr:`malformed`.
    It never raises: callback and backend errors are counted in :attr:`errors`.

    The reader also keeps count of the notes held and the sustain pedals down, so that
    when the port is lost :meth:`release_held` can deliver their note-offs (and pedal
    releases) through the callback: the engine, the echo and the recording then hear
    the performer let go. Its backend client can be taken away and replaced while it
    runs (:meth:`detach`, :meth:`attach`, :attr:`client_lock`; see
    :mod:`livegen.io.reconnect`); without one it idles. ``wanted`` is the name the port
    was asked for: reconnection looks for it again.
    """

    def __init__(
        self,
        client: Any,
        *,
        name: str,
        api: str,
        port: str,
        virtual: bool,
        poll_interval: float,
        wanted: str | None = None,
        ignore: tuple[bool, bool] = (True, True),
        own: str | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.api = api
        self.port = port
        self.virtual = virtual
        self.wanted = port if wanted is None else wanted
        self.own = own  # JACK: the full name of its own port, which ``port`` connects to
        self.ignore = ignore  # (sysex, clock), for a client opened again
        self.errors = 0
        self.received = 0
        self.released = 0  # note-offs and pedal releases delivered for a lost port, in all
        #: Held while the reader uses the client: the keeper takes it to swap or reconnect the client.
        self.client_lock = threading.Lock()
        self._parser = MidiStreamParser()
        self._stamps = ArrivalStamps()
        self._drop = _IGNORED_TIMING if ignore[1] else _IGNORED
        self._client = client
        self._poll_interval = poll_interval
        self._stop = threading.Event()
        self._held = bytearray(16 * 128)  # note-ons minus note-offs per channel * 128 + pitch
        self._pedals = bytearray(16)  # 1 while the channel's sustain pedal is down
        self._release_asked = threading.Event()
        self._release_done = threading.Event()
        self._last_release = 0
        self._thread = threading.Thread(target=self._run, name=f"livegen MIDI in {port}", daemon=True)

    def _start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        """Backend thread: poll, timestamp, deliver; no logging, nothing raised."""
        clock = time.perf_counter_ns
        sleep = time.sleep
        stop = self._stop
        lock = self.client_lock
        interval = self._poll_interval
        parse = self._parser.feed
        hold = self._hold
        stamp, found_empty = self._stamps.stamp, self._stamps.found_empty
        drop = self._drop
        while not stop.is_set():
            with lock:
                client = self._client
                try:
                    asked = clock()
                    event = None if client is None else client.get_message()
                    if event is None:
                        found_empty(asked)
                    else:
                        t_ns = stamp(event[1], clock())
                except Exception:  # counted; the reader must not die
                    self.errors += 1
                    event = None
            if event is None:
                if self._release_asked.is_set():  # the queue is empty: release what is still held
                    self._release_asked.clear()
                    self._last_release = self._release(clock())
                    self._release_done.set()
                sleep(interval)
                continue
            self.received += 1
            try:
                for message in parse(event[0]):
                    if message[0] in drop:
                        continue
                    hold(message)
                    self._deliver(message, t_ns)
            except Exception:  # a failing callback is counted, not fatal
                self.errors += 1

    def _hold(self, message: tuple[int, ...]) -> None:
        """Reader thread: count a note held or let go, a pedal pressed or released."""
        if len(message) != 3:
            return
        status = message[0]
        kind = status & 0xF0
        if kind in (_NOTE_ON, _NOTE_OFF):
            index = ((status & 0x0F) << 7) | message[1]
            count = self._held[index]
            if kind == _NOTE_ON and message[2]:
                if count < 255:
                    self._held[index] = count + 1
            elif count:
                self._held[index] = count - 1
        elif kind == _CONTROL_CHANGE and message[1] == _SUSTAIN:
            self._pedals[status & 0x0F] = 1 if message[2] >= 64 else 0

    def _release(self, t_ns: int) -> int:
        """Reader thread (or the caller once the reader stopped): deliver a note-off for every
        note held and a release for every pedal down; returns how many messages."""
        sent = 0
        held = self._held
        for index in range(len(held)):
            for _ in range(held[index]):
                self._deliver_safely((_NOTE_OFF | (index >> 7), index & 0x7F, 0), t_ns)
                sent += 1
            held[index] = 0
        for channel in range(16):
            if self._pedals[channel]:
                self._pedals[channel] = 0
                self._deliver_safely((_CONTROL_CHANGE | channel, _SUSTAIN, 0), t_ns)
                sent += 1
        self.released += sent
        return sent

    def _deliver_safely(self, message: tuple[int, ...], t_ns: int) -> None:
        try:
            self._deliver(message, t_ns)
        except Exception:  # a failing callback is counted, not fatal
            self.errors += 1

    def release_held(self, timeout: float = 1.0) -> int:
        """Keeper thread: the port is lost; deliver note-offs for every note held from it.

        The reader delivers them once RtMidi's queue is empty (so nothing that arrived
        before the loss comes after its note-off), within a poll interval; once the
        reader has stopped, the calling thread does. Also releases each sustain pedal
        held down (CC64 = 0). Returns how many messages were delivered.
        """
        if not self._thread.is_alive():
            return self._release(time.perf_counter_ns())
        self._release_done.clear()
        self._release_asked.set()
        if not self._release_done.wait(timeout):
            return 0  # the callback is stuck; what is held stays held
        return self._last_release

    @property
    def client(self) -> Any:
        """The python-rtmidi client, or None while the port has none (keeper thread)."""
        return self._client

    def detach(self) -> Any:
        """Keeper thread: take the backend client away (the reader idles meanwhile)."""
        with self.client_lock:
            client, self._client = self._client, None
        return client

    def attach(self, client: Any, port: str, own: str | None) -> None:
        """Keeper thread: read from ``client`` (its own port ``own``, listening to ``port``) from now on."""
        with self.client_lock:
            self._client, self.port, self.own = client, port, own
            self._stamps.reset()  # the new client's deltas start anew

    @property
    def malformed(self) -> int:
        """Messages and bytes dropped as malformed (cut short, stray, not bytes)."""
        return self._parser.dropped

    def _close(self) -> None:
        """Setup context: stop and join the reader, then release the backend."""
        self._stop.set()
        thread = self._thread
        if thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=max(1.0, 20 * self._poll_interval))
            if thread.is_alive():
                log.warning("MIDI input %r: its callback does not return; leaving the backend open", self.port)
                return
        client, self._client = self._client, None
        if client is not None:
            release_client(client, self.api, f"closing MIDI input {self.port!r}")

    def __repr__(self) -> str:
        kind = "virtual" if self.virtual else "connected"
        return f"<RtMidiInput {self.port!r} {kind} api={self.api} closed={self.closed}>"


def open_input(
    name: str | None = None,
    *,
    api: str | None = None,
    callback: InputCallback | None = None,
    virtual: bool = False,
    ignore_sysex: bool = True,
    ignore_clock: bool = True,
    poll_interval: float = 0.001,
) -> RtMidiInput:
    """Open a MIDI input and start delivering its messages to ``callback`` (setup context).

    ``virtual=False``: connect to the port ``name`` means (exact, or a unique
    case-insensitive part of it); ``name=None`` takes :func:`find_keyboard`'s choice.
    ``virtual=True``: create a port others connect to, named ``name`` or ``livegen in``.
    ``ignore_sysex``/``ignore_clock``: drop SysEx and MIDI clock/MTC (active sensing is
    always dropped); a clock follower passes ``ignore_clock=False``.

    Raises :class:`BackendUnavailableError`, :class:`PortNotFoundError` or
    :class:`ConfigError`, each naming the port and the API.
    """
    api_name = resolve_api(api)
    if virtual and api_name == "winmm":
        raise BackendUnavailableError(
            f"the winmm MIDI API cannot create the virtual port {name or INPUT_NAME!r}: connect to an existing "
            "port instead with virtual=False / --in PORT"
        )
    client, port, own = new_input_client(api_name, name, virtual=virtual, ignore_sysex=ignore_sysex)
    assert port is not None
    reader = RtMidiInput(
        client,
        name=port,
        api=api_name,
        port=port,
        virtual=virtual,
        poll_interval=max(poll_interval, 0.0001),
        wanted=name or port,
        ignore=(ignore_sysex, ignore_clock),
        own=own,
    )
    if callback is not None:
        reader.set_callback(callback)
    reader._start()
    log.info("%s MIDI input %r on %s", "opened virtual" if virtual else "connected", port, api_name)
    return reader
