"""The health endpoint: ``/healthz`` and Prometheus ``/metrics`` on the loopback interface.

Contexts:

* setup (the jam's calling thread): :func:`check_health_address`, :func:`model_identity`,
  :class:`HealthServer` construction, :meth:`HealthServer.start`, :meth:`HealthServer.close`
  and :func:`supervise`, which wires the endpoint and the systemd supervisor
  (:mod:`livegen.engine.notify`) around a jam.
* the health server's threads (``livegen-health`` accepts, one short-lived thread per
  request): :class:`Vitals` and the request handler. They only read plain attributes
  the engine keeps (the scheduler's heartbeat and counters, the note tracker's counts,
  the live synth's counters, the counters named in :class:`Counters`) and ``/proc/self/statm``; they take no
  lock the scheduler or the control thread takes, so a slow or hostile client can delay
  nothing but its own answer.

``/healthz`` answers 200 ``ok`` while the scheduler's heartbeat is fresh (younger than
half the systemd watchdog interval, or :data:`DEFAULT_STALE_S` without one) and 503 with
the reason otherwise. ``/metrics`` answers the Prometheus text exposition format 0.0.4.
Every other path is 404. The endpoint binds 127.0.0.1 (or another loopback address)
only: it has no authentication, so anything else is refused with an error; reach it from
elsewhere through an SSH tunnel or a proxy that adds authentication.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import socketserver
import sys
import threading
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from livegen.engine.config import DEFAULT_HOST, check_health_address, loopback_address
from livegen.engine.notify import Notifier, Supervisor, watchdog_interval_ns
from livegen.engine.planner import Planner
from livegen.engine.scheduler import Scheduler
from livegen.engine.session import ECHO_GROUP, MODEL_GROUP
from livegen.errors import ConfigError
from livegen.models.manifest import MANIFEST

log = logging.getLogger(__name__)

#: Without a systemd watchdog, a heartbeat older than this makes ``/healthz`` answer 503, seconds.
DEFAULT_STALE_S = 2.0
#: Seconds a client may take to send its request before its connection is closed.
REQUEST_TIMEOUT_S = 5.0
#: A connection that fails (a client that resets or vanishes) is logged at most this often, seconds.
CONNECTION_LOG_INTERVAL_S = 60.0
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


# ---- what is measured ----------------------------------------------------------------------


def _zero() -> int:
    return 0


@dataclass(frozen=True, slots=True)
class Counters:
    """Where ``/metrics`` reads each counter: one function per counter, each reading a plain int
    attribute of the object that counts (the health server's thread; no lock). 0 for a counter
    nothing in this jam keeps."""

    late_steps: Callable[[], int] = _zero  # notes skipped because the model planned them after their time
    input_dropped: Callable[[], int] = _zero  # performed messages dropped (a flood, a full inbox)
    reconnects: Callable[[], int] = _zero  # MIDI ports or servers opened again after they went away
    port_losses: Callable[[], int] = _zero  # MIDI ports that went away (their program, device or JACK server)
    restarts: Callable[[], int] = _zero  # inference workers started again after a crash or a hang
    skipped_steps: Callable[[], int] = _zero  # model steps skipped: over a budget, or not finite
    write_errors: Callable[[], int] = _zero  # writes of the recording (MIDI parts, takes, the WAV) that failed


@dataclass(frozen=True, slots=True)
class ModelIdentity:
    """A model package's name, version and checksum (the sha256 of its manifest)."""

    name: str
    version: str
    sha256: str


def model_identity(path: Path) -> ModelIdentity:
    """The identity of the package at ``path`` (a folder or a .zip): its manifest's sha256.

    The manifest lists the sha256 of every other file of the package, which loading
    verifies, so its own checksum pins the whole package. Setup, or the health
    server's thread after a model swap (a few kilobytes read once, then cached).
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if Path(n).name == MANIFEST]
            if len(names) != 1:
                raise ConfigError(f"{path}: a zipped package holds exactly one {MANIFEST}, found {len(names)}")
            data = archive.read(names[0])
    else:
        data = (path / MANIFEST).read_bytes()
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        table = {}
    checksum = hashlib.sha256(data).hexdigest()
    return ModelIdentity(str(table.get("name", path.name)), str(table.get("version", "")), checksum)


def resident_bytes() -> int | None:
    """The process's resident memory now (Linux ``/proc/self/statm``), or None where there is none."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peak_resident_bytes() -> int | None:
    """The process's largest resident memory so far (``getrusage``), or None where there is none."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, KiB elsewhere


class Vitals:
    """What ``/healthz`` and ``/metrics`` report, read from plain attributes of the running jam.

    Context: any thread (the health server's); reads only.

    ``scheduler`` gives the heartbeat (in ``clock``'s time), the sends and the notes
    sounding; ``synth`` (a :class:`~livegen.io.synth_live.LiveSynth`, if one plays) its
    buffer underflows; ``counters`` where each counter is read. ``model`` is the identity of the
    model the jam started with; ``model_source`` the conductor, whose ``model`` names the model
    playing now (a model swapped in is looked up and hashed once).
    """

    def __init__(
        self,
        scheduler: Scheduler,
        *,
        counters: Counters | None = None,
        synth: Any = None,
        model: ModelIdentity | None = None,
        model_source: Planner | None = None,
        stale_after_s: float = DEFAULT_STALE_S,
        clock: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        self.scheduler = scheduler
        self.counters = counters if counters is not None else Counters()
        self.synth = synth
        self.model = model
        self.model_source = model_source
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.started_at = time.time()
        self.stopping = False  # the jam is winding down: /healthz says so
        self._identities: dict[str, ModelIdentity] = {model.name: model} if model is not None else {}

    # ---- readings ---------------------------------------------------------------------

    def heartbeat_age_s(self) -> float | None:
        """Seconds since the scheduler's loop last turned; None before it started."""
        beat = self.scheduler.heartbeat_ns
        if beat <= 0:
            return None
        return max(0.0, (self.clock() - beat) / 1e9)

    def health(self) -> tuple[bool, str]:
        """(healthy, the reason): the answer of ``/healthz``."""
        if self.stopping:
            return False, "stopping: the jam is ending"
        age = self.heartbeat_age_s()
        if age is None:
            return False, "starting: the scheduler has not started yet"
        if age >= self.stale_after_s:
            return False, (
                f"stuck: the scheduler's loop has not turned for {age:.3f} s (limit {self.stale_after_s:g} s)"
            )
        return True, "ok"

    def xruns(self) -> int:
        """The live synth's output underflows (0 without one)."""
        stats = getattr(self.synth, "stats", None)
        return int(stats().underflows) if stats is not None else 0  # a snapshot of the synth's plain counters

    def sounding(self) -> dict[str, int]:
        """Notes sounding now, per output group (``model``: livegen's notes, ``echo``: the performer's)."""
        tracker, groups = self.scheduler.tracker, len(self.scheduler.groups)
        return {
            label: len(tracker.sounding(group)) if group < groups else 0
            for label, group in (("model", MODEL_GROUP), ("echo", ECHO_GROUP))
        }

    def current_model(self) -> ModelIdentity | None:
        """The model playing now (looked up once per name after a swap; unknown: sha256 ``unknown``)."""
        name = self.model_source.model if self.model_source is not None else None
        if not isinstance(name, str) or not name:
            return self.model
        identity = self._identities.get(name)
        if identity is None:
            try:
                from livegen.models.registry import resolve_package

                identity = model_identity(resolve_package(name))
            except Exception as err:  # a model we cannot read back: say so in the label, keep serving
                log.warning("health: model %s: no checksum (%s)", name, err)
                identity = ModelIdentity(name, "", "unknown")
            self._identities[name] = identity
        return identity

    # ---- the exposition ---------------------------------------------------------------

    def exposition(self) -> str:
        """Every metric in the Prometheus text format 0.0.4 (``livegen_`` names, units in the names)."""
        stats = self.scheduler.stats
        out = _Exposition()
        age = self.heartbeat_age_s()
        out.family(
            "livegen_scheduler_heartbeat_age_seconds",
            "gauge",
            "Seconds since the scheduler's real-time loop last turned (it turns at least every 0.25 s); "
            "NaN before it starts.",
            [({}, float("nan") if age is None else age)],
        )
        healthy, _ = self.health()
        out.family("livegen_healthy", "gauge", "1 when /healthz answers 200, else 0.", [({}, int(healthy))])
        out.family(
            "livegen_scheduler_realtime",
            "gauge",
            "1 when the scheduler thread got SCHED_FIFO real-time priority, else 0.",
            [({}, int(stats.realtime))],
        )
        out.family("livegen_sent_messages_total", "counter", "MIDI messages the scheduler sent.", [({}, stats.sent)])
        out.family(
            "livegen_late_sends_total",
            "counter",
            "Messages the scheduler sent more than 1 ms after their deadline.",
            [({}, stats.late)],
        )
        out.family(
            "livegen_stale_dropped_total",
            "counter",
            "Note-ons and clock pulses not sent: over 200 ms past their deadline (the process was held up).",
            [({}, stats.stale)],
        )
        out.family(
            "livegen_max_late_send_seconds",
            "gauge",
            "The latest send so far, seconds after its deadline.",
            [({}, stats.max_late_ns / 1e9)],
        )
        out.family(
            "livegen_late_steps_total",
            "counter",
            "Model notes skipped because inference planned them after their time.",
            [({}, self.counters.late_steps())],
        )
        out.family(
            "livegen_input_dropped_total",
            "counter",
            "Performed MIDI messages dropped: beyond a human rate (a flood) or into a full inbox.",
            [({}, self.counters.input_dropped())],
        )
        out.family(
            "livegen_xruns_total",
            "counter",
            "Audio buffers that ran dry (the built-in synth's output underflows).",
            [({}, self.xruns())],
        )
        out.family(
            "livegen_reconnects_total",
            "counter",
            "MIDI ports or servers opened again after they went away.",
            [({}, self.counters.reconnects())],
        )
        out.family(
            "livegen_port_losses_total",
            "counter",
            "MIDI ports that went away: the program or device they connect to, or their JACK server.",
            [({}, self.counters.port_losses())],
        )
        out.family(
            "livegen_worker_restarts_total",
            "counter",
            "Inference workers started again after a crash or a hang.",
            [({}, self.counters.restarts())],
        )
        out.family(
            "livegen_skipped_steps_total",
            "counter",
            "Model steps skipped: a run over its time or memory budget, ended by a stop, or with NaN or "
            "infinity in its outputs.",
            [({}, self.counters.skipped_steps())],
        )
        out.family(
            "livegen_recording_write_errors_total",
            "counter",
            "Writes of the recording that failed (an autosave, a part, a take, the WAV; a full disk): "
            "the MIDI not written stays in memory and is tried again, the WAV stops.",
            [({}, self.counters.write_errors())],
        )
        errors = sum(o.errors for group in self.scheduler.groups for o in group)
        out.family(
            "livegen_send_errors_total",
            "counter",
            "Messages an output refused (a port or server that went away).",
            [({}, errors)],
        )
        out.family(
            "livegen_sounding_notes",
            "gauge",
            "Notes sounding now, per output group: model (livegen's) and echo (the performer's).",
            [({"group": label}, count) for label, count in self.sounding().items()],
        )
        rss, peak = resident_bytes(), peak_resident_bytes()
        if rss is not None:
            out.family("livegen_resident_memory_bytes", "gauge", "Resident memory of the process now.", [({}, rss)])
        if peak is not None:
            out.family("livegen_peak_resident_memory_bytes", "gauge", "Largest resident memory so far.", [({}, peak)])
        out.family(
            "livegen_start_time_seconds",
            "gauge",
            "When the jam started, seconds since the Unix epoch (a change means a restart).",
            [({}, round(self.started_at, 3))],
        )
        model = self.current_model()
        if model is not None:
            out.family(
                "livegen_model_info",
                "gauge",
                "The model playing: its name, version and the sha256 of its package manifest (which pins every file).",
                [({"name": model.name, "version": model.version, "sha256": model.sha256}, 1)],
            )
        return out.text()


class _Exposition:
    """Builds the text format: ``# HELP`` and ``# TYPE`` before each family's samples."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        self._lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
            self._lines.append(f"{name}{{{label_text}}} {_number(value)}" if labels else f"{name} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


# ---- the server ------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer on an IPv4 or IPv6 loopback address, without a reverse DNS lookup.

    A request that fails outside the handler's answer (a client that resets or drops its
    connection) is logged as one line, at most once per :data:`CONNECTION_LOG_INTERVAL_S`
    with a count of those not shown, instead of socketserver's traceback on stderr.
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], vitals: Vitals) -> None:
        self.vitals = vitals
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._failures = threading.Lock()
        self._failed_since_logged = 0
        self._logged_at: float | None = None
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:  # a request thread
        err = sys.exc_info()[1]
        now = time.monotonic()
        with self._failures:
            if self._logged_at is not None and now - self._logged_at < CONNECTION_LOG_INTERVAL_S:
                self._failed_since_logged += 1
                return
            self._logged_at, unshown, self._failed_since_logged = now, self._failed_since_logged, 0
        more = f" ({unshown} more since the last such line)" if unshown else ""
        log.warning("health endpoint: a connection from %s ended early: %r%s", client_address[0], err, more)

    def server_close(self) -> None:
        super().server_close()
        with self._failures:
            unshown, self._failed_since_logged = self._failed_since_logged, 0
        if unshown:
            log.warning("health endpoint: %d more connection(s) ended early", unshown)

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks socket.getfqdn(), a DNS lookup that can hang for
        # seconds on an installation with no network; the name is not needed here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class _Handler(BaseHTTPRequestHandler):
    """One request (a health server request thread): GET or HEAD of /healthz or /metrics."""

    server: _Server
    timeout = REQUEST_TIMEOUT_S
    server_version = "livegen"
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        path = urlsplit(self.path).path
        vitals = self.server.vitals
        try:
            if path == "/healthz":
                healthy, reason = vitals.health()
                status, kind, text = (200 if healthy else 503), "text/plain; charset=utf-8", reason + "\n"
            elif path == "/metrics":
                status, kind, text = 200, PROMETHEUS_CONTENT_TYPE, vitals.exposition()
            else:
                status, kind = 404, "text/plain; charset=utf-8"
                text = f"not found: {path}; livegen serves /healthz and /metrics\n"
        except Exception as err:  # a reading failed: answer, never take the server down
            log.exception("health endpoint: %s failed", path)
            status, kind, text = 500, "text/plain; charset=utf-8", f"error: {err!r}\n"
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("health endpoint: %s %s", self.address_string(), format % args)


class HealthServer:
    """The HTTP endpoint over :class:`Vitals`, on ``host:port`` (port 0: an ephemeral port, for tests)."""

    def __init__(self, vitals: Vitals, *, host: str = DEFAULT_HOST, port: int = 0) -> None:
        check_health_address(host, port)
        address = loopback_address(host)
        assert address is not None
        try:
            self._server = _Server((address, port), vitals)
        except OSError as err:
            raise ConfigError(
                f"--health-port {port}: cannot listen on {address}:{port} ({err.strerror or err}); "
                "choose a free port, or 0 for no health endpoint"
            ) from err
        self.vitals = vitals
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Serve on the ``livegen-health`` thread (setup)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.5}, name="livegen-health", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port (setup, on the way out)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(2.0)
            self._thread = None
        self._server.server_close()


# ---- a jam's supervision -----------------------------------------------------------------------


@dataclass(slots=True)
class Supervision:
    """What :func:`supervise` set up: the readings, the endpoint (if any) and the systemd supervisor."""

    vitals: Vitals
    server: HealthServer | None
    supervisor: Supervisor

    def stopping(self) -> None:
        """The jam is winding down (control thread, before the scheduler stops): STOPPING=1, and
        ``/healthz`` answers 503 ``stopping``."""
        self.vitals.stopping = True
        self.supervisor.stopping()


@contextmanager
def supervise(
    scheduler: Scheduler,
    *,
    host: str = DEFAULT_HOST,
    port: int = 0,
    counters: Counters | None = None,
    synth: Any = None,
    model: ModelIdentity | None = None,
    model_source: Planner | None = None,
    status: str = "",
) -> Iterator[Supervision]:
    """Health endpoint (when ``port`` is not 0) and systemd notifications around a jam (setup).

    Enter before the scheduler starts: the port is bound now (a taken port fails before
    anything plays), READY=1 goes out at the scheduler's first heartbeat. Call
    :meth:`Supervision.stopping` before stopping the scheduler; leaving the block closes
    everything.
    """
    interval = watchdog_interval_ns()
    stale = interval / 2e9 if interval else DEFAULT_STALE_S
    vitals = Vitals(
        scheduler,
        counters=counters,
        synth=synth,
        model=model,
        model_source=model_source,
        stale_after_s=stale,
    )
    server = HealthServer(vitals, host=host, port=port) if port else None
    supervisor = Supervisor(scheduler, notifier=Notifier(), interval_ns=interval or 0, status=status)
    try:
        if server is not None:
            server.start()
            log.info("health endpoint: %s/healthz and %s/metrics", server.url, server.url)
        supervisor.start()
        yield Supervision(vitals, server, supervisor)
    finally:
        vitals.stopping = True
        supervisor.close()
        if server is not None:
            server.close()
