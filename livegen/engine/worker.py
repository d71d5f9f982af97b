"""Inference in a child process: the planner, and so every model, runs in a supervised worker.

Context: :class:`PlannerWorker` is the parent's side and runs on the control thread
(:meth:`PlannerWorker.post` on any thread); :func:`_serve` is the worker process's
main thread and :func:`_beat` a thread of the worker.

The parent keeps what must never stop: the ports, the clock, the scheduler and its
note tracker, the recorder. The worker builds the planner (the conductor over the
model) and answers the planner's calls, which the parent sends over a pipe: a
performed message, time moving on, silence. Its answers (commits, withdrawals) come
back as the same :mod:`~livegen.engine.planner` actions, so to the engine a worker is
just another :class:`~livegen.engine.planner.Planner`. The parent never waits on the
worker for more than :data:`REPLY_WAIT_S`: time is sent at most once per answer, so
a slow model lags (and its late notes are skipped by the engine) without the clock
or the scheduler ever waiting.

Supervision, checked on every control step:

- **Killed** (the pipe closes, the process is gone) or **hung** (a stopped or wedged
  process: its heartbeat, written every :data:`HEARTBEAT_S` by a thread of the
  worker, is older than ``hang_after_s``): the worker's line is withdrawn at once
  (:data:`~livegen.engine.scheduler.ALL_GENERATIONS`): what it had sounding gets its
  note-off, what it had committed ahead is dropped. The process is killed and a new
  one started; it hears the recent performance (both tracks) as its seed and plays
  on from the next step it answers.
- A worker that raises reports the error and exits; that is a crash too. A worker
  that cannot start (a broken package) raises the error to the caller at
  :meth:`PlannerWorker.start`, as loading in-process would.
- **Back-off.** The first restart is immediate; each further failure in a row waits
  twice as long (``restart_backoff_s``, doubling up to :data:`MAX_BACKOFF_S`), and after
  ``max_failures`` failures in a row the worker is not started again (:attr:`PlannerWorker.gave_up`,
  logged): the clock, the scheduler and the recording go on without the model. A worker
  that has answered for :data:`STABLE_AFTER_S` ends the run of failures.

The worker is started with ``spawn`` (a fresh interpreter: the parent already runs
onnxruntime's and the audio library's threads, which ``fork`` would not carry), with
``PYTHONSAFEPATH`` set: its ``python -c`` bootstrap (and the resource tracker's) does
not put the working directory on ``sys.path``, so no module there is imported. A
package the worker extracts that its kill leaves behind is removed when it is dropped.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import Synchronized
from typing import Any, Protocol

from livegen.engine.controls import ControlChange
from livegen.engine.planner import Action, Planner, PlannerReport, Withdraw
from livegen.engine.scheduler import ALL_GENERATIONS
from livegen.errors import LivegenError
from livegen.models.package import remove_orphaned_extractions
from livegen.models.step import StepEvent
from livegen.music.events import MidiEvent

log = logging.getLogger(__name__)

#: How often the worker's heartbeat thread writes its time, seconds.
HEARTBEAT_S = 0.005
#: A heartbeat older than this means the worker is stopped or wedged, seconds.
HANG_AFTER_S = 0.05
#: An answer outstanding this long means the worker is wedged even if its heartbeat beats.
STUCK_AFTER_S = 5.0
#: The longest the control thread waits for an answer to a performed note or a silence.
REPLY_WAIT_S = 0.05
#: The longest a worker may take to load its model and answer "ready", seconds.
START_TIMEOUT_S = 60.0
#: The wait before the second restart in a row, seconds; each further one waits twice as long.
RESTART_BACKOFF_S = 0.5
#: The longest wait before a restart, seconds.
MAX_BACKOFF_S = 30.0
#: Failures in a row after which the worker is not started again.
MAX_FAILURES = 6
#: A worker that has answered this long ends a run of failures, seconds.
STABLE_AFTER_S = 30.0


class PlannerBuilder(Protocol):
    """Builds the planner inside the worker; picklable (a module-level function or a partial of one).

    ``seed``: notes to hear first instead of the configured seed (a restarted worker
    hears the recent performance), or None.
    """

    def __call__(self, seed: list[StepEvent] | None) -> Planner: ...


class WorkerFailed(LivegenError):
    """The worker could not start (its error names the model or the package)."""


# ---- the worker process ----------------------------------------------------------------


def _beat(heartbeat: Synchronized[float]) -> None:
    """Worker thread: write the time every :data:`HEARTBEAT_S` while the process runs."""
    while True:
        heartbeat.value = time.monotonic()
        time.sleep(HEARTBEAT_S)


def _serve(
    conn: Connection, heartbeat: Synchronized[float], build: PlannerBuilder, seed: list[StepEvent] | None
) -> None:
    """The worker process's main thread: build the planner, then answer the parent's calls in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    threading.Thread(target=_beat, args=(heartbeat,), name="livegen-worker-heartbeat", daemon=True).start()
    try:
        planner = build(seed)
    except LivegenError as err:
        conn.send(("failed", str(err)))
        return
    except Exception as err:  # a broken package: the parent reports it by name
        conn.send(("failed", f"the model could not be loaded in the inference worker ({err!r})"))
        return
    programs = planner.programs
    conn.send(("ready", planner.responses, planner.busy, dict(programs) if programs else None))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return  # the parent is gone
        kind = message[0]
        try:
            actions: list[Action] = []
            if kind == "input":
                actions = planner.on_input(message[2])
            elif kind == "advance":
                actions = planner.advance(message[2])
            elif kind == "silence":
                actions = planner.silence()
            elif kind == "resume":
                actions = planner.resume(message[2])
            elif kind == "replan":
                planner.replan()
            elif kind == "post":
                planner.post(message[2])
            elif kind == "stop":
                conn.send(("stopped", planner.report()))
                return
        except Exception as err:
            log.exception("inference worker: %s failed", kind)
            conn.send(("crashed", repr(err)))
            return
        conn.send(
            (
                "done",
                message[1],
                actions,
                planner.responses,
                planner.busy,
                planner.model,
                planner.skipped_steps,
            )
        )
        if kind == "advance":
            try:  # after the reply: the parent commits while the worker samples on
                planner.plan_ahead(message[2])
            except Exception as err:
                log.exception("inference worker: planning ahead failed")
                conn.send(("crashed", repr(err)))
                return


# ---- the parent's side -----------------------------------------------------------------


class PlannerWorker(Planner):
    """A :class:`~livegen.engine.planner.Planner` whose planner runs in a supervised child process."""

    def __init__(
        self,
        build: PlannerBuilder,
        *,
        recent: Callable[[], list[StepEvent]] | None = None,
        hang_after_s: float = HANG_AFTER_S,
        stuck_after_s: float = STUCK_AFTER_S,
        reply_wait_s: float = REPLY_WAIT_S,
        restart_backoff_s: float = RESTART_BACKOFF_S,
        max_failures: int = MAX_FAILURES,
        stable_after_s: float = STABLE_AFTER_S,
    ) -> None:
        self.build = build
        self.recent = recent  # what a restarted worker hears first (control thread)
        self.hang_after_s = hang_after_s
        self.stuck_after_s = stuck_after_s
        self.reply_wait_s = reply_wait_s
        self.restart_backoff_s = restart_backoff_s
        self.max_failures = max_failures
        self.stable_after_s = stable_after_s
        self.restarts = 0
        self.crashes = 0
        self.hangs = 0
        self.gave_up = False  # failed max_failures times in a row: not started again
        self.skipped_steps = 0  # steps the worker's model skipped (over its budget, not finite)
        self._skipped_before = 0  # skipped by the workers before the one playing now
        self.recovery_s: list[float] = []  # from each failure found to the new worker's first answer
        self._report = PlannerReport()  # the worker's planner's, once it stopped
        self._programs: dict[int, int] | None = None  # the model's tracks' GM programs, once ready
        self.model: str | None = None  # the name of the model playing (a swap happens in the worker)
        self._ctx = multiprocessing.get_context("spawn")
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._heartbeat: Synchronized[float] = self._ctx.Value("d", 0.0, lock=False)
        self._seq = 0
        self._outstanding: dict[int, float] = {}  # seq -> monotonic time sent
        self._advance_seq: int | None = None  # the time sent and not answered yet
        self._responses = 0
        self._busy = False
        self._posted: queue.SimpleQueue[ControlChange] = queue.SimpleQueue()
        self._launched: tuple[BaseProcess, Connection] | None = None  # started, not yet ready
        self._starting: tuple[BaseProcess, Connection, float] | None = None  # restarting after a failure
        self._failed_at: float | None = None
        self._failures_in_row = 0
        self._adopted_at: float | None = None  # when the worker playing now answered "ready"
        self._restart_at: float | None = None  # when the next worker starts (backing off)

    # ---- lifecycle (control thread) ---------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the worker and wait until its planner is built; a failure raises :class:`WorkerFailed`."""
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the worker process; it loads the model while the caller goes on (see :meth:`wait_ready`)."""
        if self._launched is None and self._process is None:
            self._launched = self._spawn(None)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Wait until the launched worker's planner is built; a failure raises :class:`WorkerFailed`."""
        if self._launched is None:
            return
        process, conn = self._launched
        self._launched = None
        self._adopt(process, conn, self._await_ready(process, conn, timeout))

    def _spawn(self, seed: list[StepEvent] | None) -> tuple[BaseProcess, Connection]:
        parent, child = self._ctx.Pipe()
        self._heartbeat.value = time.monotonic()
        process = self._ctx.Process(
            target=_serve, args=(child, self._heartbeat, self.build, seed), name="livegen-inference", daemon=True
        )
        with _safe_path():
            process.start()
        child.close()
        return process, parent

    def _await_ready(self, process: BaseProcess, conn: Connection, timeout: float) -> tuple[Any, ...]:
        if not conn.poll(timeout):
            _kill(process)
            raise WorkerFailed(f"the inference worker did not start within {timeout:g} s")
        try:
            reply = conn.recv()
        except EOFError:
            process.join(1.0)
            raise WorkerFailed(f"the inference worker exited while starting (exit code {process.exitcode})") from None
        if reply[0] == "failed":
            process.join(1.0)
            raise WorkerFailed(reply[1])
        return tuple(reply)

    def _adopt(self, process: BaseProcess, conn: Connection, ready: tuple[Any, ...]) -> None:
        self._process, self._conn = process, conn
        self._adopted_at = time.monotonic()
        self._responses, self._busy, self._programs = ready[1], ready[2], ready[3]
        self._outstanding.clear()
        self._advance_seq = None

    def close(self, timeout: float = 1.0) -> None:
        """Stop the worker within ``timeout`` (then it is killed), keeping its planner's report."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        self._restart_at = None
        for pending in (self._starting, self._launched):
            if pending is not None:
                _kill(pending[0])
                pending[1].close()
        self._starting = self._launched = None
        if process is None or conn is None:
            remove_orphaned_extractions()
            return
        deadline = time.monotonic() + timeout
        try:
            conn.send(("stop", self._next_seq()))
            while conn.poll(max(0.0, deadline - time.monotonic())):
                reply = conn.recv()
                if reply[0] == "stopped":
                    self._report = reply[1]
                    break
                if reply[0] == "done":
                    self._note_status(reply)
                else:
                    break
        except (EOFError, OSError):
            pass
        process.join(max(0.0, deadline - time.monotonic()))
        _kill(process)
        conn.close()
        remove_orphaned_extractions()

    @property
    def pid(self) -> int | None:
        """The worker's process id (None while it restarts)."""
        return None if self._process is None else self._process.pid

    # ---- any thread ---------------------------------------------------------------

    def post(self, change: ControlChange) -> None:
        """Queue a control change (typed commands); sent to the worker on the control thread."""
        self._posted.put(change)

    # ---- Planner --------------------------------------------------------------------

    @property
    def responses(self) -> int:
        return self._responses

    @property
    def busy(self) -> bool:
        return self._busy or self._process is None

    @property
    def programs(self) -> dict[int, int] | None:
        return self._programs

    def report(self) -> PlannerReport:
        """The worker's planner's report, as it sent it when stopped (:meth:`close`)."""
        return self._report

    def on_input(self, event: MidiEvent) -> list[Action]:
        actions = self._check()
        seq = self._send("input", event)
        return actions + self._collect(seq, self.reply_wait_s)

    def advance(self, now_tick: int) -> list[Action]:
        actions = self._check()
        while True:
            try:
                change = self._posted.get_nowait()
            except queue.Empty:
                break
            self._send("post", change)
        if self._advance_seq is None:
            self._advance_seq = self._send("advance", now_tick)
        return actions + self._collect(None, 0.0)

    def silence(self) -> list[Action]:
        actions = self._check()
        seq = self._send("silence")
        return actions + self._collect(seq, self.reply_wait_s)

    def resume(self, tick: int) -> list[Action]:
        actions = self._check()
        seq = self._send("resume", tick)
        return actions + self._collect(seq, self.reply_wait_s)

    def replan(self) -> None:
        self._send("replan")

    # ---- the pipe -------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _send(self, kind: str, *args: object) -> int | None:
        conn = self._conn
        if conn is None:
            return None
        seq = self._next_seq()
        try:
            conn.send((kind, seq, *args))
        except OSError:
            return None  # found dead at the next check
        self._outstanding[seq] = time.monotonic()
        return seq

    def _note_status(self, reply: tuple[Any, ...]) -> None:
        self._responses, self._busy = reply[3], reply[4]
        if reply[5] is not None:
            self.model = reply[5]
        self.skipped_steps = self._skipped_before + reply[6]

    def _collect(self, wanted: int | None, wait_s: float) -> list[Action]:
        """Every answer already here, waiting up to ``wait_s`` for the one to ``wanted``."""
        conn = self._conn
        actions: list[Action] = []
        if conn is None:
            return actions
        deadline = time.monotonic() + wait_s
        try:
            while True:
                waiting = wanted is not None and wanted in self._outstanding
                timeout = max(0.0, deadline - time.monotonic()) if waiting else 0.0
                if not conn.poll(timeout):
                    return actions
                reply = conn.recv()
                if reply[0] != "done":
                    said = reply[1] if len(reply) > 1 else reply[0]
                    return actions + self._failed(f"the inference worker stopped: {said}", crash=True)
                seq = reply[1]
                self._outstanding.pop(seq, None)
                if seq == self._advance_seq:
                    self._advance_seq = None
                actions.extend(reply[2])
                self._note_status(reply)
        except (EOFError, OSError):
            return actions + self._failed("the inference worker's pipe closed", crash=True)

    # ---- supervision ----------------------------------------------------------------

    def _check(self) -> list[Action]:
        """Find a dead or hung worker (then withdraw its line and start another); adopt one started."""
        if self._restart_at is not None and time.monotonic() >= self._restart_at:
            self._restart_at = None
            seed = self.recent() if self.recent is not None else None
            self._starting = (*self._spawn(seed or None), time.monotonic())
        if self._starting is not None:
            self._poll_restart()
            return []
        process = self._process
        if process is None:
            return []
        now = time.monotonic()
        if not process.is_alive():
            return self._failed(f"the inference worker died (exit code {process.exitcode})", crash=True)
        if now - self._heartbeat.value > self.hang_after_s:
            age = now - self._heartbeat.value
            return self._failed(f"the inference worker stopped answering (heartbeat {age:.3f} s old)")
        oldest = min(self._outstanding.values(), default=now)
        if now - oldest > self.stuck_after_s:
            return self._failed(f"the inference worker has not answered for {now - oldest:.1f} s")
        return []

    def _failed(self, why: str, *, crash: bool = False) -> list[Action]:
        """Drop the worker (killing what is left of it), start another after the back-off (or give
        up after ``max_failures`` in a row), and return the action that withdraws the dropped
        worker's line."""
        if crash:
            self.crashes += 1
        else:
            self.hangs += 1
        now = time.monotonic()
        if self._adopted_at is not None and now - self._adopted_at >= self.stable_after_s:
            self._failures_in_row = 0
        self._adopted_at = None
        self._failures_in_row += 1
        process, conn = self._process, self._conn
        self._process = self._conn = None
        self._outstanding.clear()
        self._advance_seq = None
        self._skipped_before = self.skipped_steps
        if process is not None:
            _kill(process)
        if conn is not None:
            conn.close()
        remove_orphaned_extractions()
        if self._failures_in_row >= self.max_failures:
            self.gave_up = True
            log.error(
                "%s; the inference worker failed %d times in a row and is not started again: "
                "the clock and the recording go on without the model",
                why,
                self._failures_in_row,
            )
            return [Withdraw(ALL_GENERATIONS)]
        delay = 0.0 if self._failures_in_row == 1 else self.restart_backoff_s * 2 ** (self._failures_in_row - 2)
        delay = min(delay, MAX_BACKOFF_S)
        log.warning("%s; starting another in %.1f s (failure %d in a row)", why, delay, self._failures_in_row)
        if self._failed_at is None:
            self._failed_at = now
        self._restart_at = now + delay
        return [Withdraw(ALL_GENERATIONS)]

    def _poll_restart(self) -> None:
        """Adopt the restarting worker once it is ready (never waits)."""
        assert self._starting is not None
        process, conn, started = self._starting
        try:
            ready = conn.poll(0)
        except (EOFError, OSError):
            ready = True
        if not ready:
            if time.monotonic() - started > START_TIMEOUT_S or not process.is_alive():
                self._starting = None
                _kill(process)
                conn.close()
                self._failed(f"the restarted inference worker did not start (exit code {process.exitcode})", crash=True)
            return
        self._starting = None
        try:
            reply = conn.recv()
        except (EOFError, OSError):
            reply = ("failed", f"exit code {process.exitcode}")
        if reply[0] != "ready":
            log.error("the inference worker could not restart: %s; the performance goes on without the model", reply[1])
            _kill(process)
            self.gave_up = True
            return
        self._adopt(process, conn, tuple(reply))
        self.restarts += 1
        if self._failed_at is not None:
            self.recovery_s.append(time.monotonic() - self._failed_at)
            self._failed_at = None
        log.warning("the inference worker is back (pid %d)", process.pid or 0)


@contextlib.contextmanager
def _safe_path() -> Iterator[None]:
    """``PYTHONSAFEPATH=1`` for the processes started in the block: their ``python -c`` does not
    put the working directory first on ``sys.path`` (Python 3.11+; ``-P``)."""
    before = os.environ.get("PYTHONSAFEPATH")
    os.environ["PYTHONSAFEPATH"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONSAFEPATH"]
        else:
            os.environ["PYTHONSAFEPATH"] = before


def _kill(process: BaseProcess) -> None:
    """End a worker for certain (a stopped process too: SIGKILL needs no cooperation)."""
    if process.pid is not None and process.exitcode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.join(1.0)
