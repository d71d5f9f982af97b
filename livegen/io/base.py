"""The fixed faces of MIDI outputs and inputs, and their in-memory twins.

Context: ``send`` runs on the real-time scheduler thread; input callbacks run on
the backend's thread. Everything else is setup.

Following mido, the public methods do the checking and subclasses implement only
``_send``/``_close``. A closed output drops messages and counts them instead of
raising on the real-time thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

#: Called on the backend's thread with the raw MIDI bytes and ``perf_counter_ns()``
#: of arrival. Implementations only timestamp and enqueue; they never raise.
InputCallback = Callable[[tuple[int, ...], int], None]


class MidiOutput:
    """Somewhere MIDI bytes go at the moment they are sent (a port, a fake).

    Real-time context: :meth:`send` does no logging and no allocation beyond the
    backend's own; errors are counted in :attr:`errors` for the control side.
    """

    name: str = "output"

    def __init__(self) -> None:
        self.closed = False
        self.errors = 0
        self.dropped = 0

    def send(self, data: Sequence[int]) -> None:
        if self.closed:
            self.dropped += 1
            return
        try:
            self._send(data)
        except Exception:
            self.errors += 1

    def send_at(self, data: Sequence[int], deadline_ns: int) -> None:
        """Send ``data`` that was due at ``deadline_ns``.

        A port sends at once (the scheduler calls this at the deadline); a
        timestamped output such as the built-in synth overrides it to place the
        message sample-accurately at its deadline instead.
        """
        self.send(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._close()

    def _send(self, data: Sequence[int]) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement _send")

    def _close(self) -> None:
        """Release the backend (default: nothing to release)."""


class MemoryOutput(MidiOutput):
    """Records ``(perf_counter_ns(), bytes)`` for every message sent (a test twin)."""

    def __init__(self, name: str = "memory", clock: Callable[[], int] = time.perf_counter_ns) -> None:
        super().__init__()
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self.messages: list[tuple[int, tuple[int, ...]]] = []

    def _send(self, data: Sequence[int]) -> None:
        with self._lock:
            self.messages.append((self._clock(), tuple(data)))

    def received(self) -> list[tuple[int, ...]]:
        with self._lock:
            return [m for _, m in self.messages]


class MidiInput:
    """A source of performed MIDI that calls one callback per message."""

    name: str = "input"

    def __init__(self) -> None:
        self._callback: InputCallback | None = None
        self.closed = False

    def set_callback(self, callback: InputCallback) -> None:
        self._callback = callback

    def _deliver(self, data: tuple[int, ...], t_ns: int) -> None:
        callback = self._callback
        if callback is not None:
            callback(data, t_ns)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._close()

    def _close(self) -> None:
        """Release the backend (default: nothing to release)."""


class MemoryInput(MidiInput):
    """An input fed by the test: :meth:`inject` delivers a message as if it arrived."""

    def __init__(self, name: str = "memory-in") -> None:
        super().__init__()
        self.name = name

    def inject(self, data: Sequence[int], t_ns: int | None = None) -> None:
        self._deliver(tuple(data), time.perf_counter_ns() if t_ns is None else t_ns)
