"""The scheduler: sends each committed MIDI message at its absolute deadline.

Context: :meth:`Scheduler.run` is the real-time thread; ``submit``,
``withdraw``, ``retime``, ``send_now``, ``stop`` and ``drain_sent`` are for the
control side and only enqueue or read.

The thread blocks on its inbox until shortly before the next deadline (so new
work wakes it at once), then spins the last ``spin_ns`` to hit the deadline.
Deadlines are absolute ``perf_counter_ns()`` values from the clock; nothing is
chained from a previous sleep. Everything due by then goes out in one burst
(chords, many voices on one grid point) before the inbox is looked at again.

Where the operating system allows it (Linux with ``CAP_SYS_NICE`` or an rtprio limit,
as audio users usually have), the thread asks for ``SCHED_FIFO`` at ``rt_priority``
(below JACK's own real-time threads), so that a busy machine does not delay its
wake-up; otherwise it stays an ordinary thread and :attr:`SchedulerStats.realtime`
says so. The issue-7 benchmarks measured why (``benchmarks/engineering.py``).
The thread does no logging and no I/O except the send; it counts lateness and send
errors for the control side to read.

A message more than ``stale_ns`` past its deadline when the thread reaches it (the
process was stopped, or starved for that long) is not played late. A note-on is
dropped (and a note-off for a note that does not sound is not sent). MIDI clock pulses
are dropped and the receivers re-synchronised: Stop at once, then every pulse is
dropped until one on a sixteenth is on time (:data:`ON_TIME_NS`), which Song Position
and Continue precede, so that a slave resumes at the right place instead of racing
through a burst of pulses.
Offline drivers (:meth:`Scheduler.run_until`) move their clock to each deadline and drop
nothing.
Sent messages go to a bounded log that the control side drains for the recorder,
so the MIDI file holds what was actually sent (a withdrawn note is not in it, a
cut note is cut).
"""

from __future__ import annotations

import heapq
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from livegen.engine.clock import MIDI_CLOCK, MIDI_CONTINUE, MIDI_START, MIDI_STOP, TICKS_PER_SPP
from livegen.engine.clockout import MAX_SPP, song_position
from livegen.engine.tracker import NoteTracker
from livegen.io.base import MidiOutput

#: A generation number that withdraws every pending message of a group (a crashed planner's).
ALL_GENERATIONS = -2
#: The longest the real-time loop waits without turning: :attr:`Scheduler.heartbeat_ns` is at
#: most this old while the loop runs (supervision reads it: ``livegen/engine/notify.py``), ns.
BEAT_NS = 250_000_000
#: A message this late when the real-time loop reaches it is stale (see the module docstring), ns.
STALE_NS = 200_000_000
#: After a stall, the clock resumes with the first pulse on a sixteenth no later than this, ns.
ON_TIME_NS = 5_000_000


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A message to send to every output of ``group`` at ``deadline_ns``."""

    deadline_ns: int
    tick: int
    data: tuple[int, ...]
    group: int = 0
    generation: int = 0


@dataclass(frozen=True, slots=True)
class Sent:
    """What the scheduler sent: musical tick, group, bytes, deadline and send time."""

    tick: int
    group: int
    data: tuple[int, ...]
    deadline_ns: int
    sent_ns: int


@dataclass(slots=True)
class SchedulerStats:
    sent: int = 0
    late: int = 0  # sent more than late_threshold_ns after the deadline
    max_late_ns: int = 0
    withdrawn: int = 0
    stale: int = 0  # note-ons and clock pulses dropped for being more than stale_ns late
    resyncs: int = 0  # times the clock's receivers were stopped and sent a new song position
    realtime: bool = False  # the thread runs with SCHED_FIFO


_ADD, _WITHDRAW, _NOW, _STOP, _RETIME = range(5)
_PULSE = (MIDI_CLOCK,)


class Scheduler:
    """Absolute-deadline sender over groups of outputs, with a note tracker per group."""

    def __init__(
        self,
        groups: Sequence[Sequence[MidiOutput]],
        *,
        tick_of: Callable[[int], int],
        now_ns: Callable[[], int] = time.perf_counter_ns,
        spin_ns: int = 300_000,
        late_threshold_ns: int = 1_000_000,
        rt_priority: int | None = 5,
        burst: bool = True,
        stale_ns: int = STALE_NS,
    ) -> None:
        self.groups = [list(g) for g in groups]
        self.tracker = NoteTracker(len(self.groups))
        self.stats = SchedulerStats()
        self._tick_of = tick_of
        self._now = now_ns
        self._spin_ns = spin_ns
        self._late_threshold_ns = late_threshold_ns
        self._inbox: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self._heap: list[tuple[int, int, Scheduled]] = []
        self._seq = 0
        self._sent: deque[Sent] = deque(maxlen=1 << 16)
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._rt_priority = rt_priority
        self._burst = burst
        self._stale_ns = stale_ns
        self._resync: set[int] = set()  # groups whose clock receivers wait for a song position
        #: ``now_ns()`` at the real-time loop's last turn (0: not started). One attribute store per
        #: turn, no lock: the supervision thread and the health endpoint only read it.
        self.heartbeat_ns = 0

    # ---- control side -------------------------------------------------------------

    def submit(self, events: Sequence[Scheduled]) -> None:
        """Commit ``events``: they will be sent at their deadlines."""
        if events:
            self._inbox.put((_ADD, tuple(events)))

    def now_ns(self) -> int:
        """The scheduler's time (the clock its deadlines are in); any thread."""
        return self._now()

    def withdraw(self, generation: int, group: int) -> None:
        """Drop pending messages of ``generation`` (:data:`ALL_GENERATIONS`: every pending message of
        ``group``) and release what sounds on ``group``, now."""
        self._inbox.put((_WITHDRAW, generation, group))

    def retime(self, tick_to_ns: Callable[[int], int]) -> None:
        """Recompute every pending deadline from its tick with ``tick_to_ns`` (a followed clock moved).

        Control side: only enqueues. The real-time thread applies it in order with
        submissions and withdrawals; what is due under the new mapping goes out at once.
        """
        self._inbox.put((_RETIME, tick_to_ns))

    def send_now(self, data: tuple[int, ...], group: int) -> None:
        self._inbox.put((_NOW, data, group))

    def drain_sent(self) -> list[Sent]:
        out = []
        while self._sent:
            out.append(self._sent.popleft())
        return out

    @property
    def pending(self) -> int:
        return len(self._heap)

    def next_deadline_ns(self) -> int | None:
        """The earliest pending deadline, or None: for offline drivers that call :meth:`run_until`
        themselves (no real-time thread), after it, to move a manual clock straight there."""
        return self._heap[0][0] if self._heap else None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run_thread, name="livegen-scheduler", daemon=True)
        self._thread.start()

    def stop(self, *, timeout: float = 2.0) -> None:
        """Drop everything pending, silence every group (note-offs, CC64/123/120) and end the thread."""
        self._inbox.put((_STOP,))
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        else:
            self.run_until(self._now())

    # ---- real-time side -----------------------------------------------------------

    def _send(self, item: Scheduled) -> None:
        self.tracker.observe(item.group, item.data)
        for output in self.groups[item.group]:
            output.send_at(item.data, item.deadline_ns)
        sent_ns = self._now()
        late = sent_ns - item.deadline_ns
        stats = self.stats
        stats.sent += 1
        if late > stats.max_late_ns:
            stats.max_late_ns = late
        if late > self._late_threshold_ns:
            stats.late += 1
        self._sent.append(Sent(item.tick, item.group, item.data, item.deadline_ns, sent_ns))

    def _send_due(self, item: Scheduled, now: int) -> None:
        """Real-time loop: send ``item``, unless it is stale or a clock pulse its group must not have yet."""
        data, group = item.data, item.group
        if data == _PULSE:
            late = now - item.deadline_ns
            if group in self._resync:
                if late > ON_TIME_NS or item.tick % TICKS_PER_SPP:
                    self.stats.stale += 1  # the receivers are stopped until a pulse on time on a sixteenth
                    return
                self._resync.discard(group)
                self.stats.resyncs += 1
                if 0 <= item.tick <= MAX_SPP * TICKS_PER_SPP:  # past the last one: continue where it is
                    self._send_system(group, song_position(item.tick), item.tick, now)
                self._send_system(group, (MIDI_CONTINUE,), item.tick, now)
            elif late > self._stale_ns:
                self.stats.stale += 1
                self._resync.add(group)
                self._send_system(group, (MIDI_STOP,), item.tick, now)
                return
        elif len(data) == 1 and data[0] in (MIDI_START, MIDI_STOP, MIDI_CONTINUE):
            self._resync.discard(group)  # the transport moved on its own: no song position owed
        elif len(data) == 3:
            kind = data[0] & 0xF0
            if kind == 0x90 and data[2]:
                if now - item.deadline_ns > self._stale_ns:
                    self.stats.stale += 1
                    return
            elif kind in (0x80, 0x90) and not self.tracker.sounds(group, data[0] & 0x0F, data[1]):
                return  # the note-off of a note-on dropped as stale (or already released): nothing sounds
        self._send(item)

    def _send_system(self, group: int, data: tuple[int, ...], tick: int, now: int) -> None:
        for output in self.groups[group]:
            output.send_at(data, now)
        self.stats.sent += 1
        self._sent.append(Sent(tick, group, data, now, now))

    def _release(self, group: int, now: int, *, reset_controllers: bool) -> None:
        tick = self._tick_of(now)
        for data in self.tracker.release(group, reset_controllers=reset_controllers):
            for output in self.groups[group]:
                output.send_at(data, now)
            self._sent.append(Sent(tick, group, data, now, now))

    def _handle(self, message: tuple) -> bool:
        """Apply one inbox message; False when the scheduler must stop."""
        op = message[0]
        if op == _ADD:
            for item in message[1]:
                self._seq += 1
                heapq.heappush(self._heap, (item.deadline_ns, self._seq, item))
        elif op == _WITHDRAW:
            _, generation, group = message
            if generation == ALL_GENERATIONS:
                kept = [entry for entry in self._heap if entry[2].group != group]
            else:
                kept = [entry for entry in self._heap if entry[2].generation != generation]
            self.stats.withdrawn += len(self._heap) - len(kept)
            heapq.heapify(kept)
            self._heap = kept
            self._release(group, self._now(), reset_controllers=False)
        elif op == _RETIME:
            tick_to_ns = message[1]
            heap = self._heap
            for k, (_, seq, item) in enumerate(heap):
                deadline = tick_to_ns(item.tick)
                heap[k] = (deadline, seq, replace(item, deadline_ns=deadline))
            heapq.heapify(heap)  # in place: run() holds a reference to this list
        elif op == _NOW:
            now = self._now()
            self._send(Scheduled(now, self._tick_of(now), message[1], message[2]))
        elif op == _STOP:
            self.stats.withdrawn += len(self._heap)
            self._heap.clear()
            now = self._now()
            for group in range(len(self.groups)):
                self._release(group, now, reset_controllers=True)
            self._stopped.set()
            return False
        return True

    def run_until(self, now_ns: int) -> bool:
        """Process the inbox and send everything due by ``now_ns`` (manual clocks, offline)."""
        while True:
            try:
                message = self._inbox.get_nowait()
            except queue.Empty:
                break
            if not self._handle(message):
                return False
        while self._heap and self._heap[0][0] <= now_ns:
            self._send(heapq.heappop(self._heap)[2])
        return True

    def _ask_realtime(self) -> None:
        """SCHED_FIFO for the calling thread, if allowed (on Linux, pid 0 is the calling thread)."""
        if self._rt_priority is None or not hasattr(os, "sched_setscheduler"):
            return
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self._rt_priority))
        except (OSError, ValueError):
            return  # not permitted here: an ordinary thread, as stats.realtime reports
        self.stats.realtime = True

    def _run_thread(self) -> None:
        """The thread :meth:`start` starts: real-time priority if allowed, then the loop."""
        self._ask_realtime()
        self.run()

    def run(self) -> None:
        """The real-time loop (runs on the scheduler thread until :meth:`stop`).

        Each turn stores its time in :attr:`heartbeat_ns`, and no wait is longer than
        :data:`BEAT_NS`, so an old heartbeat means a stuck loop, never an idle one.
        """
        inbox, now_ns, spin, burst, beat = self._inbox, self._now, self._spin_ns, self._burst, BEAT_NS
        while True:
            heap = self._heap
            now = now_ns()
            self.heartbeat_ns = now
            if heap:
                wait = heap[0][0] - spin - now
                if wait > 0:
                    try:
                        message = inbox.get(timeout=(wait if wait < beat else beat) / 1e9)
                    except queue.Empty:
                        if wait > beat:
                            continue  # woke to beat; the deadline is still ahead
                        message = None
                else:
                    try:
                        message = inbox.get_nowait()
                    except queue.Empty:
                        message = None
            else:
                try:
                    message = inbox.get(timeout=beat / 1e9)
                except queue.Empty:
                    continue  # idle: woke to beat
            if message is not None:
                if not self._handle(message):
                    return
                continue
            deadline = heap[0][0]
            now = now_ns()
            while now < deadline:
                now = now_ns()  # the last few hundred microseconds: spin, sleeping would overshoot
            self._send_due(heapq.heappop(heap)[2], now)
            if burst:  # the rest of what is due now, before the inbox
                now = now_ns()
                while heap and heap[0][0] <= now:
                    self._send_due(heapq.heappop(heap)[2], now)
