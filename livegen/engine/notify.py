"""systemd supervision: READY=1 once the scheduler runs, WATCHDOG=1 only while it keeps running.

Contexts:

* setup and control (the jam's calling thread): :class:`Notifier` construction,
  :meth:`Supervisor.start`, :meth:`Supervisor.stopping`, :meth:`Supervisor.close`.
* the supervisor thread (``livegen-supervisor``): :meth:`Supervisor.tick`, which only
  reads the scheduler's :attr:`~livegen.engine.scheduler.Scheduler.heartbeat_ns` (a plain
  attribute) and sends a datagram.

The protocol is sd_notify(3), through the ``sdnotify`` package: a unit with
``Type=notify`` counts the service as started when ``READY=1`` arrives, and one with
``WatchdogSec=`` (which systemd passes as ``WATCHDOG_USEC``, with ``WATCHDOG_PID``)
kills and restarts a service that sends no ``WATCHDOG=1`` for that long. Here the
keep-alive is tied to the real-time thread, not to the supervisor thread being alive:
the scheduler stores its time at every turn of its loop (it turns at least every
:data:`~livegen.engine.scheduler.BEAT_NS`), and ``WATCHDOG=1`` goes out only while that
heartbeat is younger than half the watchdog interval, so a stuck scheduler stops the
keep-alives and systemd restarts the jam. ``STOPPING=1`` goes out when the jam starts
to wind down, before the scheduler stops, so writing the recording is not mistaken
for a hang.

Without ``NOTIFY_SOCKET`` (not started by systemd) nothing is created and nothing is
sent. The supervisor thread is deliberately an ordinary thread, not a niced one: it
sleeps between checks, and a niced thread that happened to hold the interpreter lock
would delay the scheduler behind it (priority inversion).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Protocol

log = logging.getLogger(__name__)

#: How often the supervisor looks for the scheduler's first heartbeat before READY=1, seconds.
READY_POLL_S = 0.02


class Beating(Protocol):
    """What the supervisor watches: the scheduler (``heartbeat_ns``: its time at its loop's
    last turn, in the clock the supervisor is given; 0 before it starts)."""

    heartbeat_ns: int


def watchdog_interval_ns(environ: Mapping[str, str] | None = None, pid: int | None = None) -> int | None:
    """The watchdog interval systemd expects keep-alives within, in ns; None when there is none.

    As sd_watchdog_enabled(3): ``WATCHDOG_USEC`` set to a positive integer, and
    ``WATCHDOG_PID`` unset or this process's id (a child that inherited the variables
    is not the one systemd watches). A malformed value is logged and ignored.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "").strip()
    if not usec:
        return None
    owner = env.get("WATCHDOG_PID", "").strip()
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    try:
        value = int(usec)
    except ValueError:
        value = 0
    if value <= 0:
        log.warning("WATCHDOG_USEC=%r: expected a positive number of microseconds; no watchdog keep-alives", usec)
        return None
    return value * 1000


def heartbeat_fresh(heartbeat_ns: int, now_ns: int, limit_ns: int) -> bool:
    """True when a heartbeat was taken (non-zero) and is younger than ``limit_ns`` at ``now_ns``.

    Any thread. A heartbeat a little after ``now_ns`` (stored between reading the clock
    and reading the attribute) counts as fresh.
    """
    return heartbeat_ns > 0 and now_ns - heartbeat_ns < limit_ns


class Notifier:
    """sd_notify messages to systemd; does nothing when ``NOTIFY_SOCKET`` is unset.

    Context: any thread (one datagram per message). The socket is non-blocking: if
    systemd's queue were full a message is dropped rather than block the caller.
    """

    def __init__(self) -> None:
        self.address = os.environ.get("NOTIFY_SOCKET", "")
        self.enabled = bool(self.address)
        self.sent = 0  # messages handed to the socket
        self.recent: deque[str] = deque(maxlen=16)  # the last of them, for reports and tests
        self._notifier = None
        if not self.enabled:
            return
        import sdnotify

        self._notifier = sdnotify.SystemdNotifier()  # connects to NOTIFY_SOCKET (an abstract one too)
        sock = getattr(self._notifier, "socket", None)
        if sock is None:
            log.warning("NOTIFY_SOCKET=%s cannot be reached: systemd will not hear from livegen", self.address)
            self.enabled = False
            return
        sock.setblocking(False)

    def send(self, state: str) -> None:
        """Send ``state`` (lines such as ``READY=1``); nothing when disabled."""
        if self._notifier is None or not self.enabled:
            return
        self._notifier.notify(state)
        self.sent += 1
        self.recent.append(state)

    def close(self) -> None:
        sock = getattr(self._notifier, "socket", None)
        if sock is not None:
            sock.close()
        self.enabled = False


class Supervisor:
    """Tells systemd the jam is ready, keeps its watchdog fed while the scheduler turns, and says stopping.

    ``beating`` is the scheduler (anything with ``heartbeat_ns``), ``clock`` the clock its
    heartbeat is in (the scheduler's, ``time.perf_counter_ns``), ``interval_ns`` the
    watchdog interval (None: read from the environment; no watchdog: only READY and
    STOPPING are sent). ``status`` goes with READY=1 as systemd's STATUS= line.
    """

    def __init__(
        self,
        beating: Beating,
        *,
        notifier: Notifier | None = None,
        interval_ns: int | None = None,
        clock: Callable[[], int] = time.perf_counter_ns,
        status: str = "",
    ) -> None:
        self.beating = beating
        self.notifier = notifier if notifier is not None else Notifier()
        self.interval_ns = watchdog_interval_ns() if interval_ns is None else interval_ns
        self.clock = clock
        self.status = status
        self.ready = False
        self.fed = 0  # WATCHDOG=1 sent
        self.withheld = 0  # checks that found the heartbeat stale and sent nothing
        self._stopping = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def fresh_limit_ns(self) -> int | None:
        """How old the heartbeat may be for a keep-alive: half the watchdog interval (None: no watchdog)."""
        return None if not self.interval_ns else self.interval_ns // 2

    @property
    def period_s(self) -> float:
        """Seconds between checks once ready: a quarter of the watchdog interval."""
        return self.interval_ns / 4e9 if self.interval_ns else READY_POLL_S

    def tick(self) -> bool:
        """One check (supervisor thread; tests call it directly): READY=1 at the first heartbeat,
        then WATCHDOG=1 if the heartbeat is fresh. False when there is nothing left to do."""
        if self._stopping:
            return False
        heartbeat = self.beating.heartbeat_ns
        now = self.clock()
        if not self.ready:
            if heartbeat <= 0:
                return True  # the scheduler has not turned yet
            self.ready = True
            lines = ["READY=1"] + ([f"STATUS={self.status}"] if self.status else [])
            self.notifier.send("\n".join(lines))
            log.info("systemd: ready%s", f" ({self.status})" if self.status else "")
            if not self.interval_ns:
                return False  # no watchdog: READY was all
        limit = self.fresh_limit_ns
        assert limit is not None
        if heartbeat_fresh(heartbeat, now, limit):
            self.notifier.send("WATCHDOG=1")
            self.fed += 1
        else:
            if self.withheld == 0:
                log.error(
                    "the scheduler's loop has not turned for %.3f s: no more watchdog keep-alives, "
                    "systemd will restart livegen",
                    (now - heartbeat) / 1e9,
                )
            self.withheld += 1
        return True

    def _run(self) -> None:
        """The supervisor thread: :meth:`tick` every :data:`READY_POLL_S` until ready, then every
        quarter of the watchdog interval, until :meth:`stopping`."""
        while not self._wake.wait(READY_POLL_S if not self.ready else self.period_s):
            if not self.tick():
                return

    def start(self) -> None:
        """Start the supervisor thread (setup); nothing when systemd is not listening."""
        if not self.notifier.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="livegen-supervisor", daemon=True)
        self._thread.start()

    def stopping(self) -> None:
        """STOPPING=1 (once) and no more keep-alives (control thread, before the scheduler stops)."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        self.notifier.send("STOPPING=1")

    def close(self) -> None:
        """Stopping, then release the socket (setup, on the way out)."""
        self.stopping()
        self.notifier.close()
