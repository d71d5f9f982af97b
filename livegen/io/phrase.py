"""Plays a recorded phrase into livegen as if a performer were playing it live.

Context: the phrase runs on its own thread, which delivers each message at its
absolute deadline to the input callback, exactly like a keyboard's backend
thread would. Used when no MIDI keyboard is attached.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from livegen.io.base import MidiInput
from livegen.music.events import MidiEvent


class PhraseInput(MidiInput):
    """A MIDI input that performs ``events`` (ticks) on a clock's wall deadlines."""

    def __init__(self, events: list[MidiEvent], tick_to_ns: Callable[[int], int], name: str = "seed phrase") -> None:
        super().__init__()
        self.name = name
        self.events = sorted(events)
        self._tick_to_ns = tick_to_ns
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.finished = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="livegen-phrase", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for event in self.events:
            deadline = self._tick_to_ns(event.tick)
            while True:
                remaining = deadline - time.perf_counter_ns()
                if remaining <= 0:
                    break
                if self._stop.wait(min(remaining, 50_000_000) / 1e9):
                    return
            self._deliver(tuple(event.bytes()), time.perf_counter_ns())
        self.finished.set()

    def _close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
