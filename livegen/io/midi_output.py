"""MIDI output ports over python-rtmidi.

Contexts: setup for :func:`open_output` and ``close()``; real-time for
:meth:`RtMidiOutput.send` (through ``_send``) on the scheduler thread: with a crash
journal attached (:meth:`RtMidiOutput.attach_journal`, see :mod:`livegen.io.journal`) it
also stores each note into the journal's mapped page; the port keeper's thread for
``suspend``/``detach``/``attach``/``resume``.

What python-rtmidi 1.5.8 (RtMidi 5.0.0) does that shapes this module, measured here:

- ``send_message`` holds the GIL for the whole C++ call. On JACK it writes into a
  16 KiB ring buffer that the JACK process callback drains once per period; when it is
  full it spins (``pthread_yield``) until there is room. With the server stopped or
  killed, the 2341st three-byte message blocks forever, and with it every Python thread.
  The control side must watch the server (:func:`probe_api` ``("jack")``) and close the
  output when it goes away; a closed output drops instead of sending.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from livegen.errors import BackendUnavailableError, LivegenError
from livegen.io.base import MidiOutput
from livegen.io.midi_api import OUTPUT_NAME, resolve_api
from livegen.io.midi_clients import new_output_client, release_client

if TYPE_CHECKING:
    from livegen.io.journal import NoteJournal

log = logging.getLogger(__name__)


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
            release_client(client, self.api, f"closing MIDI output {self.port!r}")
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
    api_name = resolve_api(api)
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
