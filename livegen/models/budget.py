"""A time and a memory budget for every model run, and a check of what it returns.

Context: any thread that runs a model (the control thread, the inference worker's main
thread, a model loading in the background); the watchdog is a daemon thread of its own.

- **Time.** Each run gets its own ``onnxruntime.RunOptions``. The watchdog sets its
  ``terminate`` flag once the run has taken :data:`RUN_BUDGET_S`, or at once when an event
  registered with :func:`stop_runs_on` is set (a jam that is stopping). onnxruntime checks
  the flag before every node, a Loop's iterations included, and the run fails. A run
  releases the GIL, so the watchdog (and the scheduler) go on while it runs.
- **Memory.** Every session livegen opens allocates from one arena shared through
  onnxruntime's environment (``session.use_env_allocators``), capped at
  :data:`MEMORY_BUDGET_BYTES`: an allocation beyond it fails the run, not the process.
- **Values.** A run with NaN or infinity in a float output is refused, so no adapter ever
  reads them (nor carries them on in a recurrent state).

A refused run raises :class:`~livegen.errors.InferenceSkipped` naming the graph and the
reason; the caller skips the step it was for and counts it. Written by hand:
onnxruntime provides the flag and the arena, not the watchdog.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from livegen.errors import InferenceSkipped

#: The longest one run may take, seconds: 50 times the slowest bundled model's run (9 ms).
RUN_BUDGET_S = 0.5
#: The longest one run may take offline (evaluation scores whole tunes in one run; nothing waits on
#: it but a loop that never ends must still end), seconds: see :func:`offline_budget`.
OFFLINE_BUDGET_S = 60.0
#: What all of livegen's sessions in one process may allocate together, bytes.
MEMORY_BUDGET_BYTES = 1 << 30
#: How often the watchdog looks at the runs in flight, seconds.
_POLL_S = 0.02
#: onnxruntime's FATAL level: a refused run is reported once, as InferenceSkipped, not also on stderr.
_QUIET = 4


class _Watchdog:
    """The daemon thread that ends runs over their budget, or all runs once a stop event is set."""

    def __init__(self) -> None:
        self._runs: dict[int, tuple[ort.RunOptions, float]] = {}
        self._stops: list[threading.Event] = []
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def stopping(self) -> bool:
        return any(event.is_set() for event in tuple(self._stops))

    def begin(self, options: ort.RunOptions, deadline: float) -> int:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._watch, name="livegen-run-watchdog", daemon=True)
                    self._thread.start()
        token = next(self._ids)
        self._runs[token] = (options, deadline)
        return token

    def end(self, token: int) -> None:
        self._runs.pop(token, None)

    @contextlib.contextmanager
    def stop_on(self, event: threading.Event) -> Iterator[None]:
        with self._lock:
            self._stops.append(event)
        try:
            yield
        finally:
            with self._lock:
                self._stops.remove(event)

    def _watch(self) -> None:
        while True:
            time.sleep(_POLL_S)
            runs = tuple(self._runs.values())
            if not runs:
                continue
            now, stopping = time.monotonic(), self.stopping()
            for options, deadline in runs:
                if stopping or now >= deadline:
                    options.terminate = True


_WATCHDOG = _Watchdog()
_ARENA_LOCK = threading.Lock()
_arena_registered = False


_offline = threading.local()


@contextlib.contextmanager
def offline_budget() -> Iterator[None]:
    """Within the block, runs started on this thread get :data:`OFFLINE_BUDGET_S`: an offline
    evaluation on a loaded machine is slow, not late."""
    before = getattr(_offline, "on", False)
    _offline.on = True
    try:
        yield
    finally:
        _offline.on = before


def stop_runs_on(event: threading.Event) -> contextlib.AbstractContextManager[None]:
    """Within the block, ``event`` being set ends every run in flight within :data:`_POLL_S`
    and refuses new ones (a jam that is stopping waits for no model)."""
    return _WATCHDOG.stop_on(event)


def use_memory_budget(options: ort.SessionOptions) -> None:
    """Make the sessions built with ``options`` allocate from the shared arena of
    :data:`MEMORY_BUDGET_BYTES` (registered with onnxruntime's environment once per process)."""
    global _arena_registered
    with _ARENA_LOCK:
        if not _arena_registered:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            # extend strategy 1 (kSameAsRequested): the arena grows by what is asked, never past max_mem
            config = ort.OrtArenaCfg({"max_mem": MEMORY_BUDGET_BYTES, "arena_extend_strategy": 1})
            ort.create_and_register_allocator(info, config)
            _arena_registered = True
    options.add_session_config_entry("session.use_env_allocators", "1")
    options.log_severity_level = _QUIET


class BudgetedSession:
    """An ``onnxruntime.InferenceSession`` whose :meth:`run` keeps to the budgets; ``name`` names it in errors."""

    def __init__(self, session: ort.InferenceSession, name: str, *, budget_s: float = RUN_BUDGET_S) -> None:
        self.session = session
        self.name = name
        self.budget_s = budget_s
        self._all_outputs = [o.name for o in session.get_outputs()]

    def get_inputs(self) -> list[ort.NodeArg]:
        return list(self.session.get_inputs())

    def get_outputs(self) -> list[ort.NodeArg]:
        return list(self.session.get_outputs())

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, Any]) -> list[np.ndarray]:
        """The outputs of one run; :class:`InferenceSkipped` when it is over budget, stopped,
        failed or not finite."""
        if _WATCHDOG.stopping():
            raise InferenceSkipped(f"{self.name}: not run, the performance is stopping")
        options = ort.RunOptions()
        options.log_severity_level = _QUIET
        budget = OFFLINE_BUDGET_S if getattr(_offline, "on", False) else self.budget_s
        token = _WATCHDOG.begin(options, time.monotonic() + budget)
        try:
            outputs = self.session.run(output_names, dict(feeds), options)
        except Exception as err:  # onnxruntime's Fail, RuntimeException, InvalidArgument...
            raise InferenceSkipped(f"{self.name}: {self._why(err, options)}") from err
        finally:
            _WATCHDOG.end(token)
        for name, value in zip(output_names or self._all_outputs, outputs, strict=True):
            if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value).all():
                raise InferenceSkipped(f"{self.name}: output {name!r} holds NaN or infinity; the step is skipped")
        return list(outputs)

    def _why(self, err: Exception, options: ort.RunOptions) -> str:
        if options.terminate:
            if _WATCHDOG.stopping():
                return "ended: the performance is stopping"
            budget = OFFLINE_BUDGET_S if getattr(_offline, "on", False) else self.budget_s
            return f"took longer than {budget:g} s (its time budget) and was ended"
        text = str(err)
        if isinstance(err, MemoryError) or "Failed to allocate" in text or "Available memory of" in text:
            return f"needed more memory than livegen gives its models ({MEMORY_BUDGET_BYTES >> 20} MiB) and was ended"
        return f"the run failed ({text.strip().splitlines()[-1] if text.strip() else type(err).__name__})"
