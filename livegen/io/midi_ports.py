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
- the port keeper's thread (:mod:`livegen.io.reconnect`), or setup:
  :func:`new_output_client`, :func:`new_input_client`, :func:`connect_client`,
  :func:`port_listed`, :func:`discard_client`, :func:`forget_server` and the ports'
  ``suspend``/``detach``/``attach``/``resume``/``release_held``. They open, connect,
  close or delete backend clients for a port that went away, and hold a port's lock
  only to swap references.

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
- Every python-rtmidi call holds the GIL, so it stops every other Python thread (the
  scheduler's too) while it runs: opening a JACK client 15 to 50 ms, connecting or
  closing a port 1 to 4 ms, listing the ports 0.3 ms. Closing or deleting an output
  whose JACK server died waits 1 s for a process cycle that never comes (see
  :func:`discard_client`).
- Connecting to another program's port (``open_port``) *registers* a port of the
  client's own and connects it to the n-th port of a listing; connecting again means
  closing (unregistering) and opening it while the client's JACK process thread runs,
  which once crashed the process in CI. On JACK livegen therefore registers its own port
  once, as a virtual port, and connects it by name through :mod:`livegen.io.patchbay`.
- JACK client names are unique: a second client asking for ``livegen`` becomes
  ``livegen-01``. Every ``MidiIn``/``MidiOut`` is its own JACK client, so the output's
  client is named after its port (``livegen:livegen`` in ``jack_lsp`` and a DAW) and the
  input's after its own (``livegen in:livegen in``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple

import rtmidi

from livegen.errors import BackendUnavailableError, ConfigError, LivegenError, PortNotFoundError
from livegen.io import jack, patchbay
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


# --- clients that come and go (used at setup and by livegen.io.reconnect) ---------------


def _release_client(client: Any, api: str, what: str) -> None:
    """Close the port and delete the rtmidi client; a failure is logged, never raised (setup context)."""
    try:
        with _backend(api, what):
            client.close_port()
            client.delete()
    except LivegenError as err:
        log.warning("%s", err)


#: Output clients whose JACK server died that are kept rather than deleted, at most (see
#: :func:`discard_client`). Each holds about 16 KiB.
RETIRED_MAX = 32

_retired: list[Any] = []  # dead JACK output clients, never deleted (see discard_client)


def discard_client(client: Any, api: str, what: str, *, server_gone: bool) -> bool:
    """Let go of a backend client for good (setup or keeper thread); True if it was kept, not deleted.

    A python-rtmidi JACK *output* whose server died cannot be deleted without stopping
    every Python thread for one second: RtMidi's ``closePort`` (also run by its
    destructor) waits up to 1 s, holding the GIL, for a JACK process cycle that never
    comes (measured: 1.000 s, the scheduler's thread included). Such a client is
    therefore retired instead: kept, with an extra reference so that not even the
    interpreter's exit deallocates it, because deleting it after a new client has been
    opened on the restarted server ends the process (measured: libjack cleans its
    state up at that open). At most :data:`RETIRED_MAX` are kept (about 16 KiB each);
    past that a dead output is deleted, one second of stall each. Inputs, and clients
    whose server still runs, are deleted at once (a few milliseconds).
    """
    if server_gone and api == "jack" and isinstance(client, rtmidi.MidiOut) and len(_retired) < RETIRED_MAX:
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(client))
        _retired.append(client)
        return True
    _release_client(client, api, what)
    return False


def forget_server() -> None:
    """The JACK server went away: the next client opened probes it again and the
    patchbay is opened again on the server that answers (keeper thread)."""
    _answered.pop(jack.server_name(), None)
    patchbay.forget()


#: How often :func:`connect_client` lists and connects again when the ports moved meanwhile.
CONNECT_TRIES = 3


class Opened(NamedTuple):
    """A new backend client (:func:`new_output_client`, :func:`new_input_client`)."""

    client: Any  #: the python-rtmidi ``MidiOut`` or ``MidiIn``
    target: str | None  #: the full name of the port it is connected to (virtual: its own); None: none yet
    own: str | None  #: on JACK, the full name of its own port when it connects to another; else None


def _listing(client: Any) -> list[str | None]:
    """``client.get_ports()``, listed again when a port went away while it was read.

    RtMidi counts the ports, then names each by its number: a port that goes away in
    between makes it raise ``InvalidPortError`` (seen while ports came and went).
    """
    for attempt in range(CONNECT_TRIES):
        try:
            return list(client.get_ports())
        except rtmidi.InvalidPortError:
            if attempt == CONNECT_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def _available(client: Any, *, kind: str, api: str) -> list[str]:
    """The ports a ``kind`` port could connect to now: JACK's own listing there, else ``client``'s."""
    if api == "jack":
        return patchbay.midi_ports(inputs=kind == "output")
    return _names(_listing(client))


def connect_client(client: Any, wanted: str, *, kind: str, api: str, own: str | None = None) -> str | None:
    """Connect ``client``'s own port to the port ``wanted`` means now; its full name, or None.

    Setup or keeper thread. ``kind`` is ``"output"`` (``client`` is a ``MidiOut``; it
    lists the ports it could send to) or ``"input"``. ``wanted`` is matched as by
    :func:`match_port`; None when nothing matches now.

    On JACK ``own`` is the full name of ``client``'s own port, registered once (see
    :func:`new_output_client`): the :mod:`~livegen.io.patchbay` connects the two by
    name and nothing of ``client`` is touched, so its JACK process thread never sees
    its port come and go.

    Elsewhere (ALSA) RtMidi connects to a port by its *number* in a listing, which it
    names again when it connects: a port registered or removed meanwhile would connect
    it to another port. So a port ``client`` already had is closed first, and the ports
    are listed again after connecting; if they moved, the connection is closed and made
    again, up to :data:`CONNECT_TRIES` times, then None (the keeper tries at its next look).

    Raises :class:`PortNotFoundError` when several ports match and
    :class:`BackendUnavailableError` when the backend refuses.
    """
    folded = wanted.casefold()
    if api == "jack":
        if own is None:
            raise ValueError("a JACK port connects by the full name of its own port")
        names = patchbay.midi_ports(inputs=kind == "output")
        if wanted not in names and not any(folded in port.casefold() for port in names):
            return None
        target = match_port(wanted, names, kind=kind, api=api)  # several: PortNotFoundError naming them
        if kind == "output":
            patchbay.connect(own, target)
        else:
            patchbay.connect(target, own)
        return target
    mine = OUTPUT_NAME if kind == "output" else INPUT_NAME
    with _backend(api, f"connecting to MIDI {kind} {wanted!r}"):
        for _ in range(CONNECT_TRIES):
            available = _listing(client)
            names = _names(available)
            if wanted not in names and not any(folded in port.casefold() for port in names):
                return None
            target = match_port(wanted, names, kind=kind, api=api)
            client.close_port()
            client.open_port(available.index(target), mine)
            if _listing(client) == available:
                return target
            client.close_port()  # the ports moved while it connected: the number may have named another
    return None


def port_listed(client: Any, port: str, *, kind: str, api: str) -> bool:
    """Whether a ``kind`` port could still connect to ``port`` (keeper thread; a JACK listing reads
    shared memory, ~0.3 ms)."""
    with _backend(api, f"listing MIDI ports to look for {port!r}"):
        return port in _available(client, kind=kind, api=api)


def _not_connected(port: str, client: Any, *, kind: str, api: str) -> PortNotFoundError:
    """Why connecting to ``port`` failed: nothing matches (listing them), or the ports kept moving."""
    with _backend(api, f"listing MIDI ports to look for {port!r}"):
        available = _available(client, kind=kind, api=api)
    try:
        match_port(port, available, kind=kind, api=api)
    except PortNotFoundError as err:
        return err
    return PortNotFoundError(
        f"MIDI {kind} {port!r} on the {api} MIDI API: the ports kept changing while livegen connected to it "
        f"({CONNECT_TRIES} tries); try again"
    )


def _own_port(client: Any, mine: str, *, kind: str, api: str) -> str | None:
    """Give a client that connects to another port its own port: on JACK registered now, once,
    as a virtual port whose full name is returned; elsewhere None (:func:`connect_client` opens it)."""
    if api != "jack":
        return None
    return patchbay.register(lambda: client.open_virtual_port(mine), mine, mine, inputs=kind == "input")


def new_output_client(api: str, port: str, *, virtual: bool, required: bool = True) -> Opened:
    """A new python-rtmidi output client, connected or virtual (setup or keeper thread).

    ``virtual``: with its own virtual port ``port`` on a client named ``port``.
    Otherwise connected to the existing port ``port`` means; when none matches, a
    :class:`PortNotFoundError` listing the ports, or with ``required=False`` the client
    with no connection yet (target None). Probes the server first (see :func:`probe_api`).
    """
    api_name = _api_name(api)
    _require_usable(api_name)
    if virtual:
        with _backend(api_name, f"creating the virtual MIDI output {port!r}"):
            client = rtmidi.MidiOut(api_id(api_name), port)
            try:
                client.open_virtual_port(port)
            except BaseException:
                _delete(client)
                raise
        return Opened(client, port, None)
    with _backend(api_name, f"connecting to MIDI output {port!r}"):
        client = rtmidi.MidiOut(api_id(api_name), OUTPUT_NAME)
    try:
        with _backend(api_name, f"opening livegen's MIDI output to connect to {port!r}"):
            own = _own_port(client, OUTPUT_NAME, kind="output", api=api_name)
        target = connect_client(client, port, kind="output", api=api_name, own=own)
        if target is None and required:
            raise _not_connected(port, client, kind="output", api=api_name)
    except BaseException:
        _delete(client)
        raise
    return Opened(client, target, own)


# --- output ----------------------------------------------------------------------------


class RtMidiOutput(MidiOutput):
    """A MIDI output port over python-rtmidi (a virtual port or a connection to one).

    Real-time context for :meth:`send`: the bytes go straight to ``send_message`` under
    an uncontended lock (about 0.6 us per message on JACK, measured). The lock keeps two threads (the scheduler
    and a control-side panic) from interleaving their writes into RtMidi's JACK ring
    buffer, and ``close()`` from deleting the rtmidi object under a send. Invalid bytes
    (empty, or longer than 3 without 0xF0) are counted in :attr:`errors`.

    When the port it sends to or its JACK server goes away, :mod:`livegen.io.reconnect`
    takes it offline (:meth:`suspend`, or :meth:`detach` to take its client away): from
    then on messages are counted in :attr:`errors` and never reach the backend, so a
    dead server's full ring buffer cannot block the scheduler. Once the port is back it
    gets a client again (:meth:`attach`) and goes back online (:meth:`resume`). Those
    run on the keeper's thread and hold the send lock only to swap references (and to
    send a short cleanup), never while a backend client is opened or closed.
    ``wanted`` is the name the port was asked for: reconnection looks for it again.
    """

    def __init__(
        self,
        client: Any,
        *,
        name: str,
        api: str,
        port: str,
        virtual: bool,
        wanted: str | None = None,
        own: str | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.api = api
        self.port = port
        self.virtual = virtual
        self.wanted = port if wanted is None else wanted
        self.own = own  # JACK: the full name of its own port, which connects to ``port``
        self._client = client
        self._send_message = client.send_message
        self._lock = threading.Lock()
        self._live = True
        self._online = True
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
            if not self._online:  # its port or server went away: counted, never handed to a dead client
                self.errors += 1
                return
            journal = self._journal
            if journal is None:
                self._send_message(data)
            else:
                journal.before_send(data)
                self._send_message(data)
                journal.after_send(data)

    @property
    def online(self) -> bool:
        """Whether messages reach the backend now (False while the port or its server is away)."""
        return self._online

    @property
    def client(self) -> Any:
        """The python-rtmidi client, or None while the port has none (keeper thread)."""
        return self._client

    def suspend(self) -> None:
        """Keeper thread: go offline; messages from now on are counted in :attr:`errors`."""
        with self._lock:
            self._online = False

    def detach(self) -> Any:
        """Keeper thread: go offline and hand over the backend client (None if there was none)."""
        with self._lock:
            self._online = False
            client, self._client = self._client, None
        return client

    def attach(self, client: Any, port: str, own: str | None) -> None:
        """Keeper thread: send through ``client`` (its own port ``own``, connected to ``port``)
        from the next :meth:`resume` on."""
        with self._lock:
            self._client, self._send_message, self.port, self.own = client, client.send_message, port, own

    def resume(self) -> int:
        """Keeper thread: back online; returns how many cleanup messages went out first.

        With a crash journal that holds notes or a pedal from before the port was lost
        (their note-offs could not be sent), their cleanup goes out first, as after a
        crash (:meth:`~livegen.io.journal.Leftovers.messages`), so a synth that stayed up
        across the loss does not keep them sounding. Under the send lock: nothing the
        scheduler sends can fall between the cleanup and going online.
        """
        with self._lock:
            if not self._live or self._client is None:
                return 0
            journal, sent = self._journal, 0
            if journal is not None:
                try:
                    left = journal.leftovers()
                except LivegenError:  # our own page, written only by us: cannot happen
                    left = None
                if left is not None and (left.notes or left.sustained):
                    for data in left.messages():
                        journal.before_send(data)
                        try:
                            self._send_message(data)
                        except Exception:  # counted like any refused message
                            self.errors += 1
                        journal.after_send(data)
                        sent += 1
            self._online = True
        return sent

    def _close(self) -> None:
        """Setup context. On JACK this waits (up to 1 s) until queued messages went out.

        Then the crash journal, if any, is closed: removed when nothing sounds any more.
        """
        with self._lock:
            self._live = False
            journal, self._journal = self._journal, None
            client, self._client = self._client, None
        if client is not None:
            _release_client(client, self.api, f"closing MIDI output {self.port!r}")
        if journal is not None:
            journal.close()

    def __repr__(self) -> str:
        kind = "virtual" if self.virtual else "connected"
        state = "" if self._online else " offline"
        return f"<RtMidiOutput {self.port!r} {kind}{state} api={self.api} closed={self.closed}>"


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
    client, target, own = new_output_client(api_name, name, virtual=virtual)
    assert target is not None
    if virtual:
        log.info("opened virtual MIDI output %r on %s", name, api_name)
    else:
        log.info("connected MIDI output to %r on %s", target, api_name)
    return RtMidiOutput(client, name=target, api=api_name, port=target, virtual=virtual, wanted=name, own=own)


# --- input -----------------------------------------------------------------------------

_NOTE_OFF, _NOTE_ON, _CONTROL_CHANGE, _SUSTAIN = 0x80, 0x90, 0xB0, 64


def new_input_client(
    api: str,
    port: str | None,
    *,
    virtual: bool,
    ignore_sysex: bool = True,
    ignore_clock: bool = True,
    required: bool = True,
) -> Opened:
    """A new python-rtmidi input client, connected or virtual (setup or keeper thread).

    ``virtual``: with its own virtual port ``port`` (default ``livegen in``). Otherwise
    connected to the port ``port`` means (None: the first keyboard, see
    :func:`find_keyboard`); when none matches, a :class:`PortNotFoundError` listing the
    ports, or with ``required=False`` the client with no connection yet (target None).
    Probes the server first (see :func:`probe_api`).
    """
    api_name = _api_name(api)
    _require_usable(api_name)
    own = port or INPUT_NAME
    doing = f"creating the virtual MIDI input {own!r}" if virtual else f"connecting to MIDI input {port!r}"
    with _backend(api_name, doing):
        client = rtmidi.MidiIn(api_id(api_name), own if virtual else INPUT_NAME, queue_size_limit=INPUT_QUEUE_SIZE)
        try:
            client.ignore_types(sysex=ignore_sysex, timing=ignore_clock, active_sense=True)
            if virtual:
                client.open_virtual_port(own)
        except BaseException:
            _delete(client)
            raise
    if virtual:
        return Opened(client, own, None)
    try:
        with _backend(api_name, "opening livegen's MIDI input to connect it"):
            mine = _own_port(client, INPUT_NAME, kind="input", api=api_name)
        if port is None:
            available = _available(client, kind="input", api=api_name)
            keyboards = _keyboards(available)
            if not keyboards:
                listing = ", ".join(repr(p) for p in available) or "none"
                raise PortNotFoundError(
                    f"no MIDI keyboard found on the {api_name} MIDI API (inputs: {listing}); name one with --in PORT"
                )
            port = keyboards[0]
        target = connect_client(client, port, kind="input", api=api_name, own=mine)
        if target is None and required:
            raise _not_connected(port, client, kind="input", api=api_name)
    except BaseException:
        _delete(client)
        raise
    return Opened(client, target, mine)


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
        while not stop.is_set():
            with lock:
                client = self._client
                try:
                    event = None if client is None else client.get_message()
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
            t_ns = clock()
            self.received += 1
            try:
                for message in parse(event[0]):
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
            _release_client(client, self.api, f"closing MIDI input {self.port!r}")

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
    client, port, own = new_input_client(
        api_name, name, virtual=virtual, ignore_sysex=ignore_sysex, ignore_clock=ignore_clock
    )
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
