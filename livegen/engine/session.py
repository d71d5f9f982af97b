"""The Engine: wires an input, a planner, the scheduler and the recorder around a clock.

Context: :meth:`Engine.on_midi` runs on an input backend's thread and only
timestamps and enqueues. Everything else runs on the control thread, which is
also where the planner (and so inference) runs; the scheduler has its own
real-time thread.
"""

from __future__ import annotations

import queue
from collections.abc import Callable

from livegen.engine.clock import InternalClock
from livegen.engine.planner import Action, Commit, Planner, Withdraw
from livegen.engine.scheduler import Scheduled, Scheduler, Sent
from livegen.io.recorder import MidiRecorder

#: Scheduler group of the model's outputs (the virtual port, the synth).
MODEL_GROUP = 0
#: Scheduler group that echoes the performer (the built-in synth only).
ECHO_GROUP = 1
PERFORMER_TRACK = "performer"
MODEL_TRACK = "livegen"


class Engine:
    """One performance: input in, planner in the middle, scheduler and recorder out."""

    def __init__(
        self,
        planner: Planner,
        clock: InternalClock,
        scheduler: Scheduler,
        recorder: MidiRecorder,
        *,
        echo_channel: int | None = None,
        keep_sent: bool = False,
        input_capacity: int = 4096,
    ) -> None:
        self.planner = planner
        self.clock = clock
        self.scheduler = scheduler
        self.recorder = recorder
        self.echo_channel = echo_channel
        self.keep_sent = keep_sent
        self.sent: list[Sent] = []
        self.input_overflow = 0
        self._inbox: queue.Queue[tuple[tuple[int, ...], int]] = queue.Queue(maxsize=input_capacity)

    # ---- input backend thread -----------------------------------------------------

    def on_midi(self, data: tuple[int, ...], t_ns: int) -> None:
        """Input callback: enqueue and return; never raises."""
        try:
            self._inbox.put_nowait((data, t_ns))
        except queue.Full:
            self.input_overflow += 1

    # ---- control thread -----------------------------------------------------------

    def _apply(self, actions: list[Action]) -> None:
        tick_to_ns = self.clock.tick_to_ns
        for action in actions:
            if isinstance(action, Commit):
                self.scheduler.submit(
                    [
                        Scheduled(tick_to_ns(e.tick), e.tick, tuple(e.bytes()), MODEL_GROUP, action.generation)
                        for e in action.events
                    ]
                )
            elif isinstance(action, Withdraw):
                self.scheduler.withdraw(action.generation, MODEL_GROUP)

    def _take_input(self, data: tuple[int, ...], t_ns: int) -> None:
        tick = self.clock.ns_to_tick(t_ns)
        self.recorder.record(PERFORMER_TRACK, tick, data)
        if self.echo_channel is not None and len(data) >= 2 and 0x80 <= data[0] < 0xF0:
            self.scheduler.send_now(((data[0] & 0xF0) | self.echo_channel, *data[1:]), ECHO_GROUP)
        self._apply(self.planner.on_input(tick, data))

    def collect_sent(self) -> None:
        """Move what the scheduler sent into the recorder (and the kept log)."""
        for sent in self.scheduler.drain_sent():
            if sent.group == MODEL_GROUP:
                self.recorder.record(MODEL_TRACK, sent.tick, sent.data)
            if self.keep_sent:
                self.sent.append(sent)

    def step(self, wait_s: float = 0.0) -> None:
        """One control iteration: fold in input (waiting up to ``wait_s`` for some), plan, record."""
        try:
            item = self._inbox.get(timeout=wait_s) if wait_s > 0 else self._inbox.get_nowait()
        except queue.Empty:
            pass
        else:
            self._take_input(*item)
            while True:
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                self._take_input(*item)
        self._apply(self.planner.advance(self.clock.now_tick()))
        self.collect_sent()

    def run(self, until: Callable[[], bool], *, period_s: float = 0.002) -> None:
        """Live loop: step every ``period_s`` (or at once on input) until ``until()`` is true."""
        while not until():
            self.step(period_s)

    def finish(self) -> None:
        """Stop the scheduler (silencing everything it played) and record the last sends."""
        self.scheduler.stop()
        self.collect_sent()
