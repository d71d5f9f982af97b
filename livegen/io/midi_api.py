"""MIDI APIs over python-rtmidi: choosing one, probing it, listing and matching ports by name.

Context: setup (and the port keeper's thread for :func:`forget_server`). Every call may
block (a JACK probe waits up to its timeout), log, and raise livegen errors.

Every error python-rtmidi raises during setup is translated in one place,
:func:`backend_errors`, into :class:`~livegen.errors.BackendUnavailableError` or
:class:`~livegen.errors.PortNotFoundError` with ``raise ... from err``; on the real-time
and backend threads errors are counted, never raised.

The port modules: this one (APIs and names), :mod:`livegen.io.midi_clients` (backend
clients that come and go), :mod:`livegen.io.midi_output` and :mod:`livegen.io.midi_input`.

Why python-rtmidi directly and not mido's port objects. mido's rtmidi backend
(``mido.Backend('mido.backends.rtmidi/UNIX_JACK')``) is a thin layer over these same
``rtmidi.MidiOut``/``MidiIn`` calls (``client_name=`` names the client and forces a
virtual port; without it JACK shows ``RtMidiOut Client:livegen``) that adds, per
message, a ``mido.Message`` (about 3.7 us and several allocations to build and turn
back into bytes, against about 0.6 us for a whole :meth:`RtMidiOutput.send` on JACK),
a lock, and on input a parser queue. Events reach the scheduler already checked, so
the real-time path hands their bytes straight to ``send_message``. mido stays the
project's message codec and builds the messages of the tests.
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
from typing import Any

import rtmidi

from livegen.errors import BackendUnavailableError, ConfigError, PortNotFoundError
from livegen.io import jack, patchbay

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


def resolve_api(name: str | None) -> str:
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
    api = resolve_api(name)
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


def require_usable(api: str) -> None:
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
def backend_errors(api: str, doing: str) -> Iterator[None]:
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
    # python-rtmidi raises NotImplementedError for a call the API cannot make (a virtual port on WinMM)
    except (rtmidi.RtMidiError, NotImplementedError) as err:
        raise BackendUnavailableError(
            f"{doing} on the {api} MIDI API failed: {err}{_said(noise)}; {_hint(api)}"
        ) from err


def delete_half_opened(client: Any) -> None:
    """Release a python-rtmidi object whose setup failed (its error is already on its way)."""
    try:
        client.delete()
    except Exception:  # the original error matters more
        log.debug("deleting a half-opened rtmidi client failed", exc_info=True)


# --- ports by name ---------------------------------------------------------------------


def named(ports: Sequence[str | None]) -> list[str]:
    return [port for port in ports if port]


def list_ports(api: str | None = None) -> tuple[list[str], list[str]]:
    """``(inputs, outputs)``: the ports livegen could read from and send to (setup context).

    Inputs include livegen's own virtual output, outputs its own virtual input: on
    JACK and ALSA every client sees every port.
    """
    name = resolve_api(api)
    require_usable(name)
    with backend_errors(name, "listing MIDI ports"):
        reader = rtmidi.MidiIn(api_id(name), "livegen ports")
        try:
            inputs = named(reader.get_ports())
        finally:
            reader.delete()
        writer = rtmidi.MidiOut(api_id(name), "livegen ports")
        try:
            outputs = named(writer.get_ports())
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


def keyboards(inputs: Sequence[str]) -> list[str]:
    return [port for port in inputs if not is_own_port(port) and not _NOT_A_KEYBOARD.search(port)]


def find_keyboard(api: str | None = None) -> str | None:
    """The first input port that is not livegen's own, a "Through" port or a monitor, or None.

    Setup context.
    """
    inputs, _ = list_ports(api)
    found = keyboards(inputs)
    return found[0] if found else None


def forget_server() -> None:
    """The JACK server went away: the next client opened probes it again and the
    patchbay is opened again on the server that answers (keeper thread)."""
    _answered.pop(jack.server_name(), None)
    patchbay.forget()
