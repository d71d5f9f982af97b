"""MIDI ports over python-rtmidi: choosing an API, probing it, opening ports by name.

Contexts:

- setup: :func:`api_id`, :func:`compiled_apis`, :func:`default_api`, :func:`probe_api`,
  :func:`list_ports`, :func:`match_port`, :func:`find_keyboard`, :func:`open_output`,
  :func:`open_input` and every ``close()``. They may block (a JACK probe waits up to its
  timeout), log, and raise livegen errors.
- real-time: :meth:`RtMidiOutput.send` (through ``_send``), on the scheduler thread;
  with a crash journal attached (:meth:`RtMidiOutput.attach_journal`, see
  :mod:`livegen.io.journal`) it also stores each note into the journal's mapped page.
- backend thread: :meth:`RtMidiInput._run`, the input's own reader thread, which
  timestamps each message and calls the :data:`~livegen.io.base.InputCallback`.

Every error python-rtmidi raises during setup is translated in one place,
:func:`_backend`, into :class:`~livegen.errors.BackendUnavailableError` or
:class:`~livegen.errors.PortNotFoundError` with ``raise ... from err``; on the real-time
and backend threads errors are counted, never raised.

Why python-rtmidi directly and not mido's port objects. mido's rtmidi backend
(``mido.Backend('mido.backends.rtmidi/UNIX_JACK')``) is a thin layer over these same
``rtmidi.MidiOut``/``MidiIn`` calls (``client_name=`` names the client and forces a
virtual port; without it JACK shows ``RtMidiOut Client:livegen``) that adds, per
message, a ``mido.Message`` (about 3.7 us and several allocations to build and turn
back into bytes, against about 0.6 us for a whole :meth:`RtMidiOutput.send` on JACK),
a lock, and on input a parser queue. Events reach the scheduler already checked, so
the real-time path hands their bytes straight to ``send_message``. mido stays the
project's message codec and builds the messages of the tests.

What python-rtmidi 1.5.8 (RtMidi 5.0.0) does that shapes this module, all measured here:

- ``send_message`` holds the GIL for the whole C++ call. On JACK it writes into a
  16 KiB ring buffer that the JACK process callback drains once per period; when it is
  full it spins (``pthread_yield``) until there is room. With the server stopped or
  killed, the 2341st three-byte message blocks forever, and with it every Python thread.
  The control side must watch the server (:func:`probe_api` ``("jack")``) and close the
  output when it goes away; a closed output drops instead of sending.
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
- JACK client names are unique: a second client asking for ``livegen`` becomes
  ``livegen-01``. Every ``MidiIn``/``MidiOut`` is its own JACK client, so the output's
  client is named after its port (``livegen:livegen`` in ``jack_lsp`` and a DAW) and the
  input's after its own (``livegen in:livegen in``).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import rtmidi

from livegen.errors import BackendUnavailableError, ConfigError, LivegenError, PortNotFoundError
from livegen.io import jack
from livegen.io.base import InputCallback, MidiInput, MidiOutput
from livegen.music.events import MidiStreamParser

if TYPE_CHECKING:
    from livegen.io.journal import NoteJournal

log = logging.getLogger(__name__)

#: ``--midi-api`` names, mapped to python-rtmidi's API constants.
_API_IDS: dict[str, int] = {
    "alsa": rtmidi.API_LINUX_ALSA,
    "jack": rtmidi.API_UNIX_JACK,
    "coremidi": rtmidi.API_MACOSX_CORE,
    "winmm": rtmidi.API_WINDOWS_MM,
}
_API_NAMES: dict[int, str] = {value: key for key, value in _API_IDS.items()}

#: The names ``--midi-api`` accepts.
MIDI_APIS: tuple[str, ...] = tuple(_API_IDS)

#: The port names livegen gives itself.
OUTPUT_NAME = "livegen"
INPUT_NAME = "livegen in"

#: The ALSA sequencer device; without it the ALSA API cannot start.
ALSA_SEQ_DEVICE = "/dev/snd/seq"

ALSA_MISSING = (
    f"ALSA sequencer {ALSA_SEQ_DEVICE} is missing (no snd-seq kernel module or running in a container); "
    "start a JACK server (`jackd -d dummy -r 48000` or `jackd -d alsa` for your sound card) and use --midi-api jack"
)

#: How long opening a port waits for a JACK server to answer before giving up (seconds).
PROBE_TIMEOUT = 5.0

#: A JACK server that answered a probe this recently (seconds) is not probed again before
#: a port is opened: each probe is a child interpreter (0.1 to 0.3 s), and a jam's start
#: probed twice in a row (choosing the API, then opening the port). A failed probe is
#: never reused.
PROBE_REUSE_S = 2.0

_answered: dict[str, float] = {}  # JACK server name -> time.monotonic() of its last good probe

#: Size of RtMidi's own input queue (messages waiting for the reader thread).
INPUT_QUEUE_SIZE = 4096

_OWN_PORT = re.compile(r"livegen(?:$|[\s_:-])", re.IGNORECASE)
_NOT_A_KEYBOARD = re.compile(r"\bthrough\b|monitor", re.IGNORECASE)


# --- APIs ------------------------------------------------------------------------------


def api_id(name: str) -> int:
    """The python-rtmidi constant for an ``--midi-api`` name (setup context).

    Raises :class:`ConfigError` naming the accepted names.
    """
    key = name.strip().lower()
    if key not in _API_IDS:
        raise ConfigError(f"unknown MIDI API {name!r} (--midi-api): accepted are {', '.join(MIDI_APIS)}")
    return _API_IDS[key]


def _api_name(name: str | None) -> str:
    if name is None:
        return default_api()
    api_id(name)
    return name.strip().lower()


def compiled_apis() -> list[str]:
    """The ``--midi-api`` names python-rtmidi was built with here, in its order of preference."""
    return [_API_NAMES[value] for value in rtmidi.get_compiled_api() if value in _API_NAMES]


def default_api() -> str:
    """The platform's own MIDI API: alsa on Linux, coremidi on macOS, winmm on Windows, else jack."""
    if sys.platform.startswith("linux"):
        return "alsa"
    if sys.platform == "darwin":
        return "coremidi"
    if sys.platform in ("win32", "cygwin"):
        return "winmm"
    return "jack"


def probe_api(name: str, *, timeout: float = 5.0) -> str | None:
    """Return ``None`` when the MIDI API can be used now, else a sentence saying why not.

    Setup context. Never hangs (JACK is asked from a child process, at most ``timeout``
    seconds), never starts a JACK server, and keeps the backends' stderr messages out of
    the terminal (they go to the debug log). An unknown name raises :class:`ConfigError`.
    """
    api = _api_name(name)
    if api_id(api) not in rtmidi.get_compiled_api():
        built = ", ".join(compiled_apis()) or "none"
        return f"python-rtmidi on this machine was built without the {api} MIDI API (built with: {built})"
    if api == "jack":
        reason = jack.probe_server(timeout)
        if reason is None:
            _answered[jack.server_name()] = time.monotonic()
        else:
            _answered.pop(jack.server_name(), None)
        return reason
    if api == "alsa" and not os.path.exists(ALSA_SEQ_DEVICE):
        return ALSA_MISSING
    noise: list[str] = []
    try:
        with _captured_stderr(noise):
            client = rtmidi.MidiIn(api_id(api), "livegen probe")
            client.delete()
    except rtmidi.RtMidiError as err:
        return f"the {api} MIDI API does not start: {err}{_said(noise)}; {_hint(api)}"
    return None


def _require_usable(api: str) -> None:
    if api == "jack" and time.monotonic() - _answered.get(jack.server_name(), -PROBE_REUSE_S) < PROBE_REUSE_S:
        return  # it answered a moment ago (see PROBE_REUSE_S)
    reason = probe_api(api, timeout=PROBE_TIMEOUT)
    if reason is not None:
        others = [name for name in compiled_apis() if name != api]
        also = f" (other MIDI APIs built here: {', '.join(others)})" if others else ""
        raise BackendUnavailableError(f"the {api} MIDI API cannot be used: {reason}{also}")


# --- the one boundary where backend errors become livegen errors ------------------------

_fd2_lock = threading.Lock()


@contextmanager
def _captured_stderr(lines: list[str]) -> Iterator[None]:
    """Collect what C libraries write to file descriptor 2 while the block runs.

    Setup context. libjack and alsa-lib print straight to fd 2, below ``sys.stderr``.
    The redirection is process-wide for the block's few milliseconds, so it is
    serialised; whatever any thread writes meanwhile ends in the debug log.
    """
    with _fd2_lock, tempfile.TemporaryFile() as sink:
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 at all (a daemon): nothing to protect
            saved = -1
        if saved >= 0:
            if sys.stderr is not None:
                sys.stderr.flush()
            os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            if saved >= 0:
                os.dup2(saved, 2)
                os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            lines.extend(line.strip() for line in text.splitlines() if line.strip())
            if lines:
                log.debug("MIDI backend wrote to stderr: %s", " | ".join(lines))


def _said(noise: list[str]) -> str:
    return f" (the backend said: {' / '.join(noise[:3])})" if noise else ""


def _hint(api: str) -> str:
    if api == "jack":
        return f"is the JACK server '{jack.server_name()}' running? {jack.START_HINT}"
    if api == "alsa":
        if not os.path.exists(ALSA_SEQ_DEVICE):
            return ALSA_MISSING
        return f"check that this user may open {ALSA_SEQ_DEVICE} (group 'audio')"
    if api == "winmm":
        return "WinMM ports are exclusive: close other programs that hold the port"
    return "check the MIDI setup of the system"


@contextmanager
def _backend(api: str, doing: str) -> Iterator[None]:
    """Run python-rtmidi setup calls; translate their errors (the one boundary).

    ``doing`` says what was attempted, naming the port, e.g. "opening MIDI output 'x'".
    """
    noise: list[str] = []
    try:
        with _captured_stderr(noise):
            yield
    except rtmidi.InvalidPortError as err:
        raise PortNotFoundError(
            f"{doing} on the {api} MIDI API failed: {err}; the port may have just gone away "
            "(see the current ones with `livegen ports`)"
        ) from err
    # python-rtmidi raises NotImplementedError where an API cannot do the call (virtual ports on WinMM).
    except (rtmidi.RtMidiError, NotImplementedError) as err:
        raise BackendUnavailableError(
            f"{doing} on the {api} MIDI API failed: {err}{_said(noise)}; {_hint(api)}"
        ) from err


def _delete(client: Any) -> None:
    """Release a python-rtmidi object whose setup failed (its error is already on its way)."""
    try:
        client.delete()
    except Exception:  # the original error matters more
        log.debug("deleting a half-opened rtmidi client failed", exc_info=True)


# --- ports by name ---------------------------------------------------------------------


def _names(ports: Sequence[str | None]) -> list[str]:
    return [port for port in ports if port]


def list_ports(api: str | None = None) -> tuple[list[str], list[str]]:
    """``(inputs, outputs)``: the ports livegen could read from and send to (setup context).

    Inputs include livegen's own virtual output, outputs its own virtual input: on
    JACK and ALSA every client sees every port.
    """
    name = _api_name(api)
    _require_usable(name)
    with _backend(name, "listing MIDI ports"):
        reader = rtmidi.MidiIn(api_id(name), "livegen ports")
        try:
            inputs = _names(reader.get_ports())
        finally:
            reader.delete()
        writer = rtmidi.MidiOut(api_id(name), "livegen ports")
        try:
            outputs = _names(writer.get_ports())
        finally:
            writer.delete()
    return inputs, outputs


def match_port(name: str, available: Sequence[str], *, kind: str, api: str) -> str:
    """The one port ``name`` means: an exact name, else a unique case-insensitive part of one.

    ``kind`` ("input" or "output") and ``api`` only word the error. Raises
    :class:`PortNotFoundError` naming ``name`` and listing what is available.
    """
    if name in available:
        return name
    wanted = name.casefold()
    hits = [port for port in available if wanted in port.casefold()]
    if len(hits) == 1:
        return hits[0]
    listing = ", ".join(repr(port) for port in available) or "none"
    if hits:
        raise PortNotFoundError(
            f"MIDI {kind} name {name!r} matches several ports on the {api} MIDI API: "
            f"{', '.join(repr(port) for port in hits)}; give more of the name (available: {listing})"
        )
    raise PortNotFoundError(
        f"no MIDI {kind} port matches {name!r} on the {api} MIDI API; available {kind}s: {listing} "
        "(give the exact name or a unique part of it)"
    )


def is_own_port(port: str) -> bool:
    """Whether a port belongs to a livegen client (its client name starts with ``livegen``)."""
    return _OWN_PORT.match(port) is not None


def _keyboards(inputs: Sequence[str]) -> list[str]:
    return [port for port in inputs if not is_own_port(port) and not _NOT_A_KEYBOARD.search(port)]


def find_keyboard(api: str | None = None) -> str | None:
    """The first input port that is not livegen's own, a "Through" port or a monitor, or None.

    Setup context.
    """
    inputs, _ = list_ports(api)
    found = _keyboards(inputs)
    return found[0] if found else None


# --- output ----------------------------------------------------------------------------


def _release_client(client: Any, api: str, what: str) -> None:
    """Close the port and delete the rtmidi client; a failure is logged, never raised (setup context)."""
    try:
        with _backend(api, what):
            client.close_port()
            client.delete()
    except LivegenError as err:
        log.warning("%s", err)


class RtMidiOutput(MidiOutput):
    """A MIDI output port over python-rtmidi (a virtual port or a connection to one).

    Real-time context for :meth:`send`: the bytes go straight to ``send_message`` under
    an uncontended lock (about 0.6 us per message on JACK, measured). The lock keeps two threads (the scheduler
    and a control-side panic) from interleaving their writes into RtMidi's JACK ring
    buffer, and ``close()`` from deleting the rtmidi object under a send. Invalid bytes
    (empty, or longer than 3 without 0xF0) are counted in :attr:`errors`.
    """

    def __init__(self, client: Any, *, name: str, api: str, port: str, virtual: bool) -> None:
        super().__init__()
        self.name = name
        self.api = api
        self.port = port
        self.virtual = virtual
        self._client = client
        self._send_message = client.send_message
        self._lock = threading.Lock()
        self._live = True
        self._journal: NoteJournal | None = None

    def attach_journal(self, journal: NoteJournal) -> None:
        """Setup context: journal every message from now on; closing the port closes ``journal``.

        A note-on is journalled before it is handed to the backend and a note-off after
        (see :mod:`livegen.io.journal`), both under the send lock, so the journal never
        holds less than what sounds.
        """
        with self._lock:
            self._journal = journal

    def _send(self, data: Sequence[int]) -> None:
        with self._lock:
            if not self._live:
                self.dropped += 1
                return
            journal = self._journal
            if journal is None:
                self._send_message(data)
            else:
                journal.before_send(data)
                self._send_message(data)
                journal.after_send(data)

    def _close(self) -> None:
        """Setup context. On JACK this waits (up to 1 s) until queued messages went out.

        Then the crash journal, if any, is closed: removed when nothing sounds any more.
        """
        with self._lock:
            self._live = False
            journal, self._journal = self._journal, None
        _release_client(self._client, self.api, f"closing MIDI output {self.port!r}")
        if journal is not None:
            journal.close()

    def __repr__(self) -> str:
        kind = "virtual" if self.virtual else "connected"
        return f"<RtMidiOutput {self.port!r} {kind} api={self.api} closed={self.closed}>"


def open_output(name: str = OUTPUT_NAME, *, api: str | None = None, virtual: bool = True) -> RtMidiOutput:
    """Open a MIDI output (setup context).

    ``virtual=True``: create a port named ``name`` on a client named ``name``, so a DAW
    sees ``livegen`` (JACK: ``livegen:livegen``). ``virtual=False``: connect to the
    existing port ``name`` means (exact, or a unique case-insensitive part of it).
    ``api`` is an ``--midi-api`` name (default: :func:`default_api`).

    Raises :class:`BackendUnavailableError` (the API cannot be used, with why and what to
    do), :class:`PortNotFoundError` (no or several ports match; lists them) or
    :class:`ConfigError` (unknown API name).
    """
    api_name = _api_name(api)
    if virtual and api_name == "winmm":
        raise BackendUnavailableError(
            f"the winmm MIDI API cannot create the virtual port {name!r}: open an existing port instead "
            "(for example a loopMIDI port) with virtual=False / --out PORT"
        )
    _require_usable(api_name)
    if virtual:
        with _backend(api_name, f"creating the virtual MIDI output {name!r}"):
            client = rtmidi.MidiOut(api_id(api_name), name)
            try:
                client.open_virtual_port(name)
            except BaseException:
                _delete(client)
                raise
        log.info("opened virtual MIDI output %r on %s", name, api_name)
        return RtMidiOutput(client, name=name, api=api_name, port=name, virtual=True)
    with _backend(api_name, f"connecting to MIDI output {name!r}"):
        client = rtmidi.MidiOut(api_id(api_name), OUTPUT_NAME)
        try:
            index, target = _resolve(client, name, kind="output", api=api_name)
            client.open_port(index, OUTPUT_NAME)
        except BaseException:
            _delete(client)
            raise
    log.info("connected MIDI output to %r on %s", target, api_name)
    return RtMidiOutput(client, name=target, api=api_name, port=target, virtual=False)


def _resolve(client: Any, name: str, *, kind: str, api: str) -> tuple[int, str]:
    """Index and full name of the port ``name`` means, read from ``client``'s own list."""
    available = client.get_ports()
    target = match_port(name, _names(available), kind=kind, api=api)
    return available.index(target), target


# --- input -----------------------------------------------------------------------------


class RtMidiInput(MidiInput):
    """A MIDI input port over python-rtmidi, read by its own thread.

    The backend queues each message on its own thread without Python (see the module
    docstring for why no rtmidi callback is used). The reader thread, every
    ``poll_interval`` seconds, takes all waiting messages; for each it reads
    ``perf_counter_ns()`` first, then calls the callback once per complete, well-formed
    message a :class:`~livegen.music.events.MidiStreamParser` finds in its bytes (JACK
    passes on whatever another client wrote); what it drops is counted in :attr:`malformed`.
    It never raises: callback and backend errors are counted in :attr:`errors`.
    SysEx, MIDI clock (and MTC) and active sensing are dropped by RtMidi unless asked for.
    """

    def __init__(self, client: Any, *, name: str, api: str, port: str, virtual: bool, poll_interval: float) -> None:
        super().__init__()
        self.name = name
        self.api = api
        self.port = port
        self.virtual = virtual
        self.errors = 0
        self.received = 0
        self._parser = MidiStreamParser()
        self._client = client
        self._poll_interval = poll_interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"livegen MIDI in {port}", daemon=True)

    def _start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        """Backend thread: poll, timestamp, deliver; no logging, nothing raised."""
        get_message = self._client.get_message
        clock = time.perf_counter_ns
        sleep = time.sleep
        stop = self._stop
        interval = self._poll_interval
        parse = self._parser.feed
        while not stop.is_set():
            try:
                event = get_message()
            except Exception:  # counted; the reader must not die
                self.errors += 1
                sleep(interval)
                continue
            if event is None:
                sleep(interval)
                continue
            t_ns = clock()
            self.received += 1
            try:
                for message in parse(event[0]):
                    self._deliver(message, t_ns)
            except Exception:  # a failing callback is counted, not fatal
                self.errors += 1

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
        _release_client(self._client, self.api, f"closing MIDI input {self.port!r}")

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
    ``ignore_sysex``/``ignore_clock``: let RtMidi drop SysEx and MIDI clock/MTC (active
    sensing is always dropped); a clock follower passes ``ignore_clock=False``.

    Raises :class:`BackendUnavailableError`, :class:`PortNotFoundError` or
    :class:`ConfigError`, each naming the port and the API.
    """
    api_name = _api_name(api)
    if virtual and api_name == "winmm":
        raise BackendUnavailableError(
            f"the winmm MIDI API cannot create the virtual port {name or INPUT_NAME!r}: connect to an existing "
            "port instead with virtual=False / --in PORT"
        )
    _require_usable(api_name)
    port = name or INPUT_NAME
    doing = f"creating the virtual MIDI input {port!r}" if virtual else f"connecting to MIDI input {name!r}"
    with _backend(api_name, doing):
        client = rtmidi.MidiIn(api_id(api_name), port if virtual else INPUT_NAME, queue_size_limit=INPUT_QUEUE_SIZE)
        try:
            client.ignore_types(sysex=ignore_sysex, timing=ignore_clock, active_sense=True)
            if virtual:
                client.open_virtual_port(port)
            else:
                if name is None:
                    available = _names(client.get_ports())
                    keyboards = _keyboards(available)
                    if not keyboards:
                        listing = ", ".join(repr(p) for p in available) or "none"
                        raise PortNotFoundError(
                            f"no MIDI keyboard found on the {api_name} MIDI API (inputs: {listing}); "
                            "name one with --in PORT"
                        )
                    name = keyboards[0]
                index, port = _resolve(client, name, kind="input", api=api_name)
                client.open_port(index, INPUT_NAME)
        except BaseException:
            _delete(client)
            raise
    reader = RtMidiInput(
        client, name=port, api=api_name, port=port, virtual=virtual, poll_interval=max(poll_interval, 0.0001)
    )
    if callback is not None:
        reader.set_callback(callback)
    reader._start()
    log.info("%s MIDI input %r on %s", "opened virtual" if virtual else "connected", port, api_name)
    return reader
