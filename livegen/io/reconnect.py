"""Ports come and go: a lost MIDI port or JACK server is noticed, counted and opened again.

Contexts:

- setup (the jam's calling thread): :class:`PortKeeper` construction, :meth:`PortKeeper.add`,
  :meth:`PortKeeper.start` and :meth:`PortKeeper.close`.
- the keeper's thread (``livegen-ports``): :meth:`PortKeeper.poll`, every ``poll_s``
  (:data:`POLL_S`). Everything that opens, connects, closes or deletes a backend client
  runs here, never on the scheduler's real-time thread; it may block (a server probe
  waits for a child process) and it logs.
- any thread: the counters :attr:`PortKeeper.port_losses` and :attr:`PortKeeper.reconnects`
  (plain ints, read by the health endpoint).

What is watched, each poll:

1. The JACK server (JACK API only), in-process and without a JACK call
   (:class:`JackServerWatch`): a connection to jack2's request socket, whose peer
   credentials name the server's process. A missing socket or a refused connection means
   the server is gone; another process id means it was restarted (its old clients are
   dead even if it answers). A connection that does not answer in time (a stopped server)
   decides nothing.
2. Each port connected to another program's port (``--in kbd``, ``--out synth``): whether
   that port is still listed by the port's own client.

When the server goes away every port goes offline at once: an output counts what the
scheduler sends in its ``errors`` and hands nothing to the backend (a dead server's ring
buffer, once full, would block the sender forever); an input first delivers note-offs for
every note the performer held (and sustain pedal releases), then its client is deleted;
an output's dead client is retired (:func:`~livegen.io.midi_clients.discard_client` says why
it is never deleted). libjack requires all of them gone before a client is opened on a new
server. When a server answers again it is probed from a child process (a hung one cannot
hang livegen), then every port is opened again: virtual ports at once, connected ones as
soon as the port they connect to is listed.

A port whose peer goes away (the server still up) goes offline the same way but keeps its
client: an input releases what was held, an output stops sending. When a port matching
the name it was first asked for (``--in kbd`` matches ``kbd:kbd``; see
:func:`~livegen.io.midi_api.match_port`) is listed again, it is connected; an output
first sends the note-offs (and CC64, CC123, CC120) of what its crash journal says was
sounding when it was lost. A virtual port whose peer (a DAW) goes away needs nothing: the
DAW connects to it again.

On JACK connecting again is one ``jack_connect`` by name (:mod:`~livegen.io.patchbay`):
the port's own client and port stay as they are. Elsewhere the client's port is opened
again (:func:`~livegen.io.midi_clients.connect_client`).

Limits: a peer that goes away and comes back between two polls is not noticed (the
keeper looks for the port, not for its connection), and a stopped (not killed) server is
not taken for a lost one. Written by hand: no library watches python-rtmidi ports.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from livegen.errors import LivegenError
from livegen.io import jack, midi_api, midi_clients
from livegen.io.midi_input import RtMidiInput
from livegen.io.midi_output import RtMidiOutput

log = logging.getLogger(__name__)

#: Seconds between two looks at the server and the ports.
POLL_S = 0.25
#: How long a look at the server's socket may take before it decides nothing, seconds.
SERVER_TIMEOUT_S = 0.2

#: Identity of a running JACK server: its process id (0 where the platform does not say)
#: and the inode of its request socket.
ServerId = tuple[int, int]

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class JackServerWatch:
    """Which jack2 server answers on the request socket of server ``name`` now.

    Keeper thread (or setup). jack2 listens on ``<dir>/jack_<name>_<uid>_0`` (``dir`` is
    ``/dev/shm`` on Linux, ``/tmp`` on macOS; ``jack_<name>_0`` with
    ``JACK_PROMISCUOUS_SERVER``). Connecting and closing again without a request is how
    libjack itself checks for a server; jack2 logs nothing for it. A look costs about
    12 us. :attr:`path` is None where no such socket is found (JACK1, another platform):
    then nothing is watched.
    """

    def __init__(self, name: str | None = None, *, timeout: float = SERVER_TIMEOUT_S) -> None:
        self.name = name or jack.server_name()
        self.timeout = timeout
        self.path = next((path for path in self.candidates() if os.path.exists(path)), None)

    def candidates(self) -> list[str]:
        """The socket paths jack2 may use for this server, most likely first."""
        safe = self.name.replace("/", "_").replace("\\", "_")  # as jack2's JackTools::RewriteName
        getuid = getattr(os, "getuid", None)
        names = ([f"jack_{safe}_{getuid()}_0"] if getuid is not None else []) + [f"jack_{safe}_0"]
        return [os.path.join(folder, name) for folder in ("/dev/shm", "/tmp") for name in names]

    def identity(self) -> ServerId | None:
        """The server answering now, or None when none does (no socket, or refused).

        Raises :class:`OSError` (:class:`TimeoutError` for a stopped server) when it
        cannot tell.
        """
        if self.path is None:
            raise FileNotFoundError("no JACK server socket to watch")
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            return None
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(self.timeout)
            try:
                probe.connect(self.path)
            except (FileNotFoundError, ConnectionRefusedError):
                return None
            pid = 0
            peercred = getattr(socket, "SO_PEERCRED", None)
            if peercred is not None:
                pid = _PEERCRED.unpack(probe.getsockopt(socket.SOL_SOCKET, peercred, _PEERCRED.size))[0]
        return (pid, inode)


Port = RtMidiOutput | RtMidiInput


@dataclass(slots=True)
class _Watched:
    """One port the keeper looks after (keeper thread only)."""

    port: Port
    away_since: float | None = None  # when it went away (the keeper's clock); None while it plays
    trouble: str = ""  # the last problem logged for it: each is logged once

    @property
    def kind(self) -> str:
        return "output" if isinstance(self.port, RtMidiOutput) else "input"

    @property
    def label(self) -> str:
        return f"MIDI {self.kind} {self.port.port!r}"


class PortKeeper:
    """Watches a jam's MIDI ports (and their JACK server) and opens them again after a loss.

    ``api`` is the ports' MIDI API; ``poll_s`` the time between looks; ``server`` the
    watch of the JACK server (default: a :class:`JackServerWatch` of the server this
    process talks to, JACK only; None: none); ``clock`` gives seconds for the logs.
    Counters (plain ints, any thread reads them): :attr:`port_losses`, ports that went
    away (each port once per loss, a server loss counts every port); :attr:`reconnects`,
    ports that play again after one; :attr:`server_losses`, JACK servers that went away
    or were restarted under livegen.
    """

    def __init__(
        self,
        api: str,
        *,
        poll_s: float = POLL_S,
        server: JackServerWatch | bool | None = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.poll_s = poll_s
        self.port_losses = 0
        self.reconnects = 0
        self.server_losses = 0
        self._clock = clock
        self._ports: list[_Watched] = []
        if server is True:
            server = JackServerWatch() if api == "jack" else None
        self._server: JackServerWatch | None = server or None
        self._server_id: ServerId | None = None  # the server every client of the ports belongs to
        self._down_since: float | None = None  # when the server went away; None while the ports have it
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- setup ----------------------------------------------------------------------

    def add(self, port: object) -> None:
        """Look after ``port`` (setup, before :meth:`start`); anything but a python-rtmidi port is ignored."""
        if isinstance(port, RtMidiOutput | RtMidiInput) and port.api == self.api:
            self._ports.append(_Watched(port))

    def start(self) -> None:
        """Learn which server the ports are on and start the ``livegen-ports`` thread (setup).

        Nothing starts when there is nothing to watch: no port connected to another
        program's port and no JACK server.
        """
        if self._server is not None:
            watch = self._server
            try:
                self._server_id = watch.identity()
            except OSError:
                self._server_id = None
            if self._server_id is None:
                where = watch.path or " or ".join(watch.candidates()[:2])
                log.info(
                    "the JACK server %r cannot be watched (no jack2 request socket answers at %s): if it is "
                    "restarted, livegen will not notice it and its MIDI ports stay silent until it is started again",
                    watch.name,
                    where,
                )
                self._server = None
        if self._server is None and all(w.port.virtual for w in self._ports):
            return
        self._thread = threading.Thread(target=self._run, name="livegen-ports", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop watching (setup, before the ports close); waits for a look under way."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(midi_api.PROBE_TIMEOUT + 5.0)
            if thread.is_alive():
                log.warning("the MIDI port keeper did not stop within %g s", midi_api.PROBE_TIMEOUT + 5.0)

    def __enter__(self) -> PortKeeper:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # ---- the keeper's thread ----------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except Exception:  # the keeper must outlive any surprise
                log.exception("the MIDI port keeper failed a look at the ports; it keeps looking")

    def poll(self) -> None:
        """One look at the server and every port; acts on what changed (keeper thread)."""
        with self._poll_lock:
            now = self._clock()
            if self._server is not None and not self._look_at_server(now):
                return
            for watched in self._ports:
                if watched.port.closed or watched.port.virtual:
                    continue
                if watched.away_since is None:
                    self._look_at_port(watched, now)
                else:
                    self._connect_again(watched, now)

    def _look_at_server(self, now: float) -> bool:
        """True while the ports' clients have a live server to talk to."""
        assert self._server is not None
        try:
            ident = self._server.identity()
        except OSError:  # no answer in time (a stopped server): decide nothing
            return self._down_since is None
        if ident != self._server_id:
            self._server_gone(now, restarted=ident is not None)
            self._server_id = ident  # every client left belongs to this one (there are none yet)
        if ident is None:
            return False
        if self._down_since is not None:
            return self._open_again(now)
        return True

    def _server_gone(self, now: float, *, restarted: bool) -> None:
        """Every port offline, every client let go (they belong to a dead server)."""
        first = self._down_since is None
        if first:
            self._down_since = now
            self.server_losses += 1
        midi_api.forget_server()
        released = 0
        for watched in self._ports:
            port = watched.port
            if port.closed:
                continue
            if isinstance(port, RtMidiInput):
                released += port.release_held()
            client = port.detach()
            if client is not None:
                midi_clients.discard_client(client, self.api, f"closing {watched.label}", server_gone=True)
            if watched.away_since is None:
                watched.away_since = now
                self.port_losses += 1
        if first:
            assert self._server is not None
            log.warning(
                "the JACK server %r %s: MIDI %s offline%s; messages to the outputs are dropped and counted, "
                "the built-in synth and the recording go on; livegen opens the ports again when the server "
                "is back (looking every %g s)",
                self._server.name,
                "was restarted" if restarted else "went away",
                ", ".join(f"{w.kind} {w.port.port!r}" for w in self._ports if not w.port.closed) or "ports",
                f", {released} note-off(s) and pedal release(s) delivered for what was held" if released else "",
                self.poll_s,
            )

    def _open_again(self, now: float) -> bool:
        """Give every port a client on the server that answers now; True once all have one."""
        assert self._server is not None and self._down_since is not None
        for watched in self._ports:
            port = watched.port
            if port.closed or port.client is not None:
                continue
            try:
                if isinstance(port, RtMidiOutput):
                    opened = midi_clients.new_output_client(self.api, port.wanted, virtual=port.virtual, required=False)
                else:
                    opened = midi_clients.new_input_client(
                        self.api, port.wanted, virtual=port.virtual, ignore_sysex=port.ignore[0], required=False
                    )
            except LivegenError as err:
                self._complain(
                    watched, f"{watched.label} cannot be opened again yet: {err}; trying again every {self.poll_s:g} s"
                )
                return False
            port.attach(opened.client, opened.target or port.port, opened.own)
            if opened.target is not None:
                self._back(watched, now)
        log.warning(
            "the JACK server %r is back: MIDI ports opened again %.2f s after it went away%s",
            self._server.name,
            now - self._down_since,
            "".join(
                f"; {w.label} waits for a port matching {w.port.wanted!r}"
                for w in self._ports
                if w.away_since is not None and not w.port.closed
            ),
        )
        self._down_since = None
        return True

    def _look_at_port(self, watched: _Watched, now: float) -> None:
        """Is the port this one connects to still there?"""
        port = watched.port
        client = port.client
        if client is None:
            return
        try:
            present = midi_clients.port_listed(client, port.port, kind=watched.kind, api=self.api)
        except LivegenError as err:
            self._complain(watched, f"{watched.label}: cannot list the MIDI ports: {err}")
            return
        if present:
            return
        watched.away_since = now
        self.port_losses += 1
        if isinstance(port, RtMidiInput):
            released = port.release_held()
            what = f"delivered {released} note-off(s) and pedal release(s) for what was held; "
        else:
            port.suspend()
            what = "messages to it are dropped and counted, the built-in synth and the recording go on; "
        log.warning(
            "%s went away (its program or device is gone): %slivegen keeps playing and connects to a port "
            "matching %r as soon as one appears (looking every %g s)",
            watched.label,
            what,
            port.wanted,
            self.poll_s,
        )

    def _connect_again(self, watched: _Watched, now: float) -> None:
        """Connect a port that went away as soon as a port matching its name is listed."""
        port = watched.port
        client = port.client
        if client is None:
            return
        try:
            if isinstance(port, RtMidiInput) and self.api != "jack":  # the reader must not read while it reopens
                with port.client_lock:
                    target = midi_clients.connect_client(client, port.wanted, kind="input", api=self.api)
            else:  # on JACK only the patchbay connects: the client is not touched
                target = midi_clients.connect_client(client, port.wanted, kind=watched.kind, api=self.api, own=port.own)
        except LivegenError as err:
            self._complain(watched, f"{watched.label} cannot be connected again yet: {err}")
            return
        if target is None:
            return
        port.attach(client, target, port.own)
        self._back(watched, now)

    def _back(self, watched: _Watched, now: float) -> None:
        """The port plays again: online, counted, said."""
        port = watched.port
        cleanup = port.resume() if isinstance(port, RtMidiOutput) else 0
        away = now - watched.away_since if watched.away_since is not None else 0.0
        watched.away_since = None
        watched.trouble = ""
        self.reconnects += 1
        log.info(
            "%s plays again (%.2f s after it went away)%s",
            watched.label,
            away,
            f"; first sent the cleanup of what it held when it was lost ({cleanup} messages)" if cleanup else "",
        )

    def _complain(self, watched: _Watched, text: str) -> None:
        if text != watched.trouble:
            watched.trouble = text
            log.warning("%s", text)
