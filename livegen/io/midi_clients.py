"""python-rtmidi clients that come and go: opening one, connecting it by name, letting it go.

Context: setup, or the port keeper's thread (:mod:`livegen.io.reconnect`) for a port that
went away. They open, connect, close or delete backend clients and may block.

What python-rtmidi 1.5.8 (RtMidi 5.0.0) does that shapes this module, measured here:

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
from typing import Any, NamedTuple

import rtmidi

from livegen.errors import LivegenError, PortNotFoundError
from livegen.io import patchbay
from livegen.io.midi_api import (
    INPUT_NAME,
    OUTPUT_NAME,
    api_id,
    backend_errors,
    delete_half_opened,
    keyboards,
    match_port,
    named,
    require_usable,
    resolve_api,
)

log = logging.getLogger(__name__)

#: Size of RtMidi's own input queue (messages waiting for the reader thread).
INPUT_QUEUE_SIZE = 4096


def release_client(client: Any, api: str, what: str) -> None:
    """Close the port and delete the rtmidi client; a failure is logged, never raised (setup context)."""
    try:
        with backend_errors(api, what):
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
    release_client(client, api, what)
    return False


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
    return named(_listing(client))


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
    with backend_errors(api, f"connecting to MIDI {kind} {wanted!r}"):
        for _ in range(CONNECT_TRIES):
            available = _listing(client)
            names = named(available)
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
    with backend_errors(api, f"listing MIDI ports to look for {port!r}"):
        return port in _available(client, kind=kind, api=api)


def _not_connected(port: str, client: Any, *, kind: str, api: str) -> PortNotFoundError:
    """Why connecting to ``port`` failed: nothing matches (listing them), or the ports kept moving."""
    with backend_errors(api, f"listing MIDI ports to look for {port!r}"):
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


def _connected(client: Any, port: str | None, *, kind: str, api: str, required: bool) -> Opened:
    """The tail of opening a ``kind`` client that connects to another port: its own port (on JACK),
    the port ``port`` means (None, for an input: the first keyboard), the connection. The client is
    deleted when any of it fails; with ``required=False`` it is returned unconnected (target None)."""
    mine = OUTPUT_NAME if kind == "output" else INPUT_NAME
    try:
        with backend_errors(api, f"opening livegen's MIDI {kind} to connect it"):
            own = _own_port(client, mine, kind=kind, api=api)
        if port is None:
            available = _available(client, kind=kind, api=api)
            found = keyboards(available)
            if not found:
                listing = ", ".join(repr(p) for p in available) or "none"
                raise PortNotFoundError(
                    f"no MIDI keyboard found on the {api} MIDI API (inputs: {listing}); name one with --in PORT"
                )
            port = found[0]
        target = connect_client(client, port, kind=kind, api=api, own=own)
        if target is None and required:
            raise _not_connected(port, client, kind=kind, api=api)
    except BaseException:
        delete_half_opened(client)
        raise
    return Opened(client, target, own)


def new_output_client(api: str, port: str, *, virtual: bool, required: bool = True) -> Opened:
    """A new python-rtmidi output client, connected or virtual (setup or keeper thread).

    ``virtual``: with its own virtual port ``port`` on a client named ``port``.
    Otherwise connected to the existing port ``port`` means; when none matches, a
    :class:`PortNotFoundError` listing the ports, or with ``required=False`` the client
    with no connection yet (target None). Probes the server first (see :func:`probe_api`).
    """
    api_name = resolve_api(api)
    require_usable(api_name)
    if virtual:
        with backend_errors(api_name, f"creating the virtual MIDI output {port!r}"):
            client = rtmidi.MidiOut(api_id(api_name), port)
            try:
                client.open_virtual_port(port)
            except BaseException:
                delete_half_opened(client)
                raise
        return Opened(client, port, None)
    with backend_errors(api_name, f"connecting to MIDI output {port!r}"):
        client = rtmidi.MidiOut(api_id(api_name), OUTPUT_NAME)
    return _connected(client, port, kind="output", api=api_name, required=required)


def new_input_client(
    api: str,
    port: str | None,
    *,
    virtual: bool,
    ignore_sysex: bool = True,
    required: bool = True,
) -> Opened:
    """A new python-rtmidi input client, connected or virtual (setup or keeper thread).

    ``virtual``: with its own virtual port ``port`` (default ``livegen in``). Otherwise
    connected to the port ``port`` means (None: the first keyboard, see
    :func:`find_keyboard`); when none matches, a :class:`PortNotFoundError` listing the
    ports, or with ``required=False`` the client with no connection yet (target None).
    Probes the server first (see :func:`probe_api`).
    """
    api_name = resolve_api(api)
    require_usable(api_name)
    own = port or INPUT_NAME
    doing = f"creating the virtual MIDI input {own!r}" if virtual else f"connecting to MIDI input {port!r}"
    with backend_errors(api_name, doing):
        client = rtmidi.MidiIn(api_id(api_name), own if virtual else INPUT_NAME, queue_size_limit=INPUT_QUEUE_SIZE)
        try:
            # Clock and active sensing are dropped by the reader: one RtMidi ignores loses its delta time.
            client.ignore_types(sysex=ignore_sysex, timing=False, active_sense=False)
            if virtual:
                client.open_virtual_port(own)
        except BaseException:
            delete_half_opened(client)
            raise
    if virtual:
        return Opened(client, own, None)
    return _connected(client, port, kind="input", api=api_name, required=required)
