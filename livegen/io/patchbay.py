"""JACK connections made by port name, so that livegen's own MIDI ports never come and go.

Context: setup and the port keeper's thread (:mod:`livegen.io.reconnect`), never the
scheduler's real-time thread. One lock serialises every call.

Why. python-rtmidi connects a JACK port by *registering* a port of its own and
connecting it to the n-th port of a listing, so connecting again after a peer came
back meant ``close_port`` (unregistering livegen's port) and ``open_port`` (registering
it again) while that client's JACK process thread ran. CI saw that crash the whole
process once: a segmentation fault on a JACK thread while the keeper closed a port, in
the 100-cycle reconnect test. It also held the GIL for 1 to 4 ms per port and dropped
every other connection a user had made to livegen's port.

So on JACK livegen's ports are registered once, as RtMidi virtual ports, for as long
as their server lives, and this module connects them by full name with
``jack_connect`` from one extra JACK client, ``livegen patchbay`` (no ports, never
activated, so it has no process thread), through JACK-Client, the maintained cffi
binding of libjack. A connection costs about 0.15 ms without the GIL (measured in
``python -m benchmarks.reconnect``), and connections a user made by hand stay.

JACK-Client loads the system's libjack (Debian ``libjack-jackd2-0``, a dependency of
``jackd2``); python-rtmidi's wheel carries its own copy. Both talk to the same
server and share no state inside the process. When the server goes away the
patchbay is closed (about 6 ms even then, measured) and the next call opens one on
the server that answers.
"""

from __future__ import annotations

import errno
import logging
import re
import threading
from typing import Any

from livegen.errors import BackendUnavailableError
from livegen.io import jack

log = logging.getLogger(__name__)

#: The patchbay's JACK client name (it has no ports; ``jack_lsp`` does not show it).
CLIENT_NAME = "livegen patchbay"

_lock = threading.Lock()
_bay: Patchbay | None = None


class Patchbay:
    """One JACK client that lists MIDI ports and connects them by name (hold :data:`_lock`)."""

    def __init__(self, server: str) -> None:
        import jack as jack_client  # JACK-Client; not livegen.io.jack. Loads libjack, hence here.

        self.server = server
        self._jack = jack_client
        try:
            self._client: Any = jack_client.Client(CLIENT_NAME, no_start_server=True, servername=server)
        except jack_client.JackError as err:
            raise BackendUnavailableError(
                f"opening the JACK client {CLIENT_NAME!r} (it connects livegen's MIDI ports) on the JACK server "
                f"{server!r} failed: {err}; {jack.START_HINT}"
            ) from err

    def midi_ports(self, *, inputs: bool) -> list[str]:
        """Full names of the MIDI input ports (``inputs=True``) or output ports now, in JACK's order."""
        if inputs:
            ports = self._client.get_ports(is_midi=True, is_input=True)
        else:
            ports = self._client.get_ports(is_midi=True, is_output=True)
        return [port.name for port in ports]

    def connect(self, source: str, destination: str) -> None:
        """Connect the output port ``source`` to the input port ``destination``; already connected is fine."""
        try:
            self._client.connect(source, destination)
        except self._jack.JackErrorCode as err:
            if err.code != errno.EEXIST:
                raise BackendUnavailableError(
                    f"connecting JACK port {source!r} to {destination!r} failed: {err}"
                ) from err
        except self._jack.JackError as err:
            raise BackendUnavailableError(f"connecting JACK port {source!r} to {destination!r} failed: {err}") from err

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # a dead server's client: nothing left to release
            log.debug("closing the JACK patchbay client failed", exc_info=True)


def _current() -> Patchbay:
    """The patchbay on the server this process talks to now, opened if needed (hold :data:`_lock`)."""
    global _bay
    server = jack.server_name()
    if _bay is not None and _bay.server != server:
        _bay.close()
        _bay = None
    if _bay is None:
        _bay = Patchbay(server)
    return _bay


def midi_ports(*, inputs: bool) -> list[str]:
    """Full names of the JACK MIDI input or output ports now (setup or keeper thread)."""
    with _lock:
        return _current().midi_ports(inputs=inputs)


def connect(source: str, destination: str) -> None:
    """Connect two JACK MIDI ports by full name (setup or keeper thread); see :meth:`Patchbay.connect`."""
    with _lock:
        _current().connect(source, destination)


def register(open_port: Any, client_name: str, port: str, *, inputs: bool) -> str:
    """Call ``open_port()`` (it registers the port ``port`` of a JACK client asked to be named
    ``client_name``) and return the port's full name (setup or keeper thread).

    JACK renames a client whose name is taken (``livegen`` becomes ``livegen-01``) and
    RtMidi does not say what it got, so the port is found as the one of that name that
    was not listed before. Raises :class:`BackendUnavailableError` if that is not one port.
    """
    shape = re.compile(rf"{re.escape(client_name)}(?:-\d+)?:{re.escape(port)}")
    with _lock:
        bay = _current()
        before = set(bay.midi_ports(inputs=inputs))
        open_port()
        new = [name for name in bay.midi_ports(inputs=inputs) if name not in before and shape.fullmatch(name)]
    if len(new) != 1:
        raise BackendUnavailableError(
            f"cannot tell livegen's own JACK port {port!r} among the new ports {new or 'none'} "
            "(another program registered one of the same name at the same moment); try again"
        )
    return new[0]


def forget() -> None:
    """The JACK server went away: close the patchbay; the next call opens one (keeper thread)."""
    global _bay
    with _lock:
        bay, _bay = _bay, None
    if bay is not None:
        bay.close()
