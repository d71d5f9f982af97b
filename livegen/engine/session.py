"""The Engine: wires an input, a planner, the scheduler and the recorder around a clock.

Context: :meth:`Engine.on_midi` runs on an input backend's thread and only
admits (:mod:`livegen.engine.admission`: a flood is cut to a human rate and counted),
timestamps and enqueues. Everything else runs on the control thread, which is
also where the planner (and so inference) runs; the scheduler has its own
real-time thread. A control step takes at most :data:`INPUTS_PER_STEP` performed
messages before it keeps time and plans, so input never holds back the clock's
pulses and the commits; a flood's start and end are logged and marked in the recording.

Raw bytes stay at the ports: the control thread decodes each performed message once
(:func:`~livegen.music.events.decode_message`, at its tick) and the recorder, the
planner, the key follower and the live controls take that :class:`MidiEvent`; what the
scheduler sent is decoded once, in :meth:`Engine.collect_sent`, for the recording.

The clock may be internal, followed (MIDI clock: its clock, start, stop,
continue and song-position messages go to it, not to the planner) or Ableton
Link. Whenever the clock's mapping from ticks to time changes, what is already
scheduled is retimed from its ticks, so notes stay on the source's beat grid.
While the transport is stopped the planner is not advanced. As clock master the
engine schedules clock pulses like notes, in their own output group.

For the live loop the heap built during setup (modules, the model, the ports) is
frozen out of the cyclic garbage collector (``gc.freeze``) and young collections are
spaced out (generation-0 threshold 10 000): a full collection of the setup's heap
held the GIL for about 55 ms on the reference machine, and the scheduler thread
cannot send while another thread holds the GIL (``benchmarks/engineering.py``).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import queue
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import replace

from livegen.engine.admission import InputAdmission
from livegen.engine.clock import TICKS_PER_SPP, Clock, MidiClockFollower
from livegen.engine.clockout import ClockMaster
from livegen.engine.planner import Action, Commit, Panic, Planner, SaveTake, Withdraw
from livegen.engine.scheduler import Scheduled, Scheduler, Sent
from livegen.io.recorder import MidiRecorder
from livegen.music.events import decode_message
from livegen.music.time import ceil_to_grid

#: Scheduler group of the model's outputs (the virtual port, the synth).
MODEL_GROUP = 0
#: Scheduler group that echoes the performer (the built-in synth only).
ECHO_GROUP = 1
#: Scheduler group of MIDI clock output (the MIDI ports only).
CLOCK_GROUP = 2
#: Status bytes of the clock and transport messages a followed clock consumes.
CLOCK_MESSAGES = frozenset((0xF8, 0xFA, 0xFB, 0xFC, 0xF2))
#: Generation no scheduled item has: withdrawing it only silences what sounds.
NO_GENERATION = -1
ALL_NOTES_OFF = 123
#: A note planned to start more than this long ago when its commit arrives is skipped, ns.
LATE_STEP_NS = 20_000_000
PERFORMER_TRACK = "performer"
MODEL_TRACK = "livegen"
#: Performed messages one control step takes before it keeps time and plans.
INPUTS_PER_STEP = 256
#: A flood is over once nothing was dropped for this long, ns.
FLOOD_OVER_NS = 1_000_000_000

log = logging.getLogger(__name__)


class Engine:
    """One performance: input in, planner in the middle, scheduler and recorder out."""

    def __init__(
        self,
        planner: Planner,
        clock: Clock,
        scheduler: Scheduler,
        recorder: MidiRecorder,
        *,
        echo_channel: int | None = None,
        keep_sent: bool = False,
        input_capacity: int = 4096,
        clock_out: ClockMaster | None = None,
        on_save_take: Callable[[], None] | None = None,
        replan_capacity: int = 65536,
        freeze_gc: bool = True,
        gc_threshold0: int | None = 10_000,
        on_sent: Callable[[Sent], None] | None = None,
        admission: InputAdmission | None = None,
    ) -> None:
        self.planner = planner
        self.clock = clock
        self.scheduler = scheduler
        self.recorder = recorder
        self.echo_channel = echo_channel
        self.keep_sent = keep_sent
        self.clock_out = clock_out
        self.on_save_take = on_save_take
        self.on_sent = on_sent
        self.sent: list[Sent] = []
        self.admission = admission  # None: every message is taken (offline, tests)
        self.input_overflow = 0  # messages lost to a full inbox
        self._dropped_seen = 0
        self._flood_since: int | None = None  # perf_counter_ns of the first drop of the flood going on
        self._last_drop_ns = 0
        self.late_steps = 0  # notes skipped because their plan arrived after their time
        self.transport: list[tuple[str, int]] = []  # (kind, tick) of each transport event followed
        self._inbox: queue.Queue[tuple[tuple[int, ...], int]] = queue.Queue(maxsize=input_capacity)
        self._clock_version = clock.version
        self._was_running = clock.running
        self._clock_started = False
        self._replan = array("q", bytes(8 * replan_capacity))
        self._replans = 0
        self._reacting: list[int] = []  # arrival stamps of this step's performed note-ons
        self.freeze_gc = freeze_gc
        self.gc_threshold0 = gc_threshold0

    # ---- input backend thread -----------------------------------------------------

    def on_midi(self, data: tuple[int, ...], t_ns: int) -> None:
        """Input callback: admit, enqueue and return; never raises."""
        if self.admission is not None and not self.admission.admit(data, t_ns):
            return
        try:
            self._inbox.put_nowait((data, t_ns))
        except queue.Full:
            self.input_overflow += 1

    @property
    def input_dropped(self) -> int:
        """Performed messages dropped: refused by the admission (a flood) or lost to a full inbox."""
        return self.input_overflow + (self.admission.dropped if self.admission is not None else 0)

    # ---- control thread -----------------------------------------------------------

    def _apply(self, actions: list[Action]) -> None:
        tick_to_ns = self.clock.tick_to_ns
        for action in actions:
            if isinstance(action, Commit):
                self.scheduler.submit(self._on_time(action, tick_to_ns))
            elif isinstance(action, Withdraw):
                self.scheduler.withdraw(action.generation, MODEL_GROUP)
            elif isinstance(action, Panic):
                for group in (MODEL_GROUP, ECHO_GROUP):
                    self.scheduler.withdraw(NO_GENERATION, group)  # note-offs for what livegen sounds
                    for channel in range(16):  # and all notes off, whatever else got stuck
                        self.scheduler.send_now((0xB0 | channel, ALL_NOTES_OFF, 0), group)
            elif isinstance(action, SaveTake):
                self.collect_sent()
                if self.on_save_take is not None:
                    self.on_save_take()

    def _on_time(self, commit: Commit, tick_to_ns: Callable[[int], int]) -> list[Scheduled]:
        """The commit's events as scheduled items, without the notes it is too late for.

        A note whose note-on reaches the engine more than :data:`LATE_STEP_NS` after its
        time (a generator that took longer than the music allowed) is skipped with its
        note-off and counted in :attr:`late_steps`: the step is lost, the clock and
        everything else keep their time. Other messages are sent, late or not.
        """
        late_after = self.scheduler.now_ns() - LATE_STEP_NS
        items: list[Scheduled] = []
        skipped: list[tuple[int, int]] = []  # (channel, pitch) of skipped note-ons
        for e in commit.events:
            deadline = tick_to_ns(e.tick)
            if e.is_note_on and deadline < late_after:
                skipped.append(e.key)
                self.late_steps += 1
                continue
            if e.is_note_off and e.key in skipped:
                skipped.remove(e.key)
                continue
            items.append(Scheduled(deadline, e.tick, tuple(e.bytes()), MODEL_GROUP, commit.generation))
        return items

    def _take_input(self, data: tuple[int, ...], t_ns: int) -> None:
        if data and data[0] in CLOCK_MESSAGES:
            if isinstance(self.clock, MidiClockFollower):
                self._follow(data, t_ns)
            return
        event = decode_message(self.clock.ns_to_tick(t_ns), data)
        if event is None:
            return  # system messages are neither music nor controls
        self.recorder.record(PERFORMER_TRACK, event)
        if self.echo_channel is not None:
            echoed = replace(event, status=event.kind | self.echo_channel)
            self.scheduler.send_now(tuple(echoed.bytes()), ECHO_GROUP)
        self._apply(self.planner.on_input(event))
        if event.is_note_on:
            self._reacting.append(t_ns)  # timed when this step's commit is with the scheduler

    def _reacted(self) -> None:
        """Time each note-on of this step from its arrival to the re-plan committed (control thread)."""
        now = time.perf_counter_ns()
        for t_ns in self._reacting:
            self._replan[self._replans % len(self._replan)] = now - t_ns
            self._replans += 1
        self._reacting.clear()

    def _follow(self, data: tuple[int, ...], t_ns: int) -> None:
        """A clock or transport message for the followed clock."""
        assert isinstance(self.clock, MidiClockFollower)
        event = self.clock.on_message(data, t_ns)
        if event is None:
            return
        self.transport.append((event.kind, event.tick))
        if event.kind in ("stop", "start", "position"):
            self._apply(self.planner.silence())
        if event.kind in ("start", "continue"):
            self._apply(self.planner.resume(event.tick))

    def _watch_flood(self) -> None:
        """Log and mark in the recording where dropping performed messages began and ended."""
        dropped = self.input_dropped
        now = time.perf_counter_ns()
        if dropped > self._dropped_seen:
            if self._flood_since is None:
                self._flood_since = now
                log.warning("input flood: performed messages beyond a human rate are dropped and counted")
                self.recorder.mark(self.clock.now_tick(), "livegen: input flood, performed messages dropped")
            self._dropped_seen = dropped
            self._last_drop_ns = now
        elif self._flood_since is not None and now - self._last_drop_ns >= FLOOD_OVER_NS:
            log.warning(
                "input flood over after %.1f s: %d performed messages dropped so far",
                (self._last_drop_ns - self._flood_since) / 1e9,
                dropped,
            )
            self.recorder.mark(self.clock.now_tick(), f"livegen: input flood over, {dropped} messages dropped so far")
            self._flood_since = None

    def replan_ns(self) -> list[int]:
        """Time from each performed note-on's arrival to the re-plan committed: the step's
        commit handed to the scheduler (the last ones)."""
        n = min(self._replans, len(self._replan))
        return list(self._replan[:n])

    def _keep_time(self) -> None:
        """Retime the scheduler when the clock's mapping moved; schedule clock output."""
        clock = self.clock
        clock.poll()  # a Link session moves on its own
        if clock.version != self._clock_version:
            self._clock_version = clock.version
            self.scheduler.retime(clock.tick_to_ns)
        running = clock.running
        if running != self._was_running:
            self._was_running = running
            if not running:
                self._apply(self.planner.silence())
        if self.clock_out is not None and running:
            now = clock.now_tick()
            if not self._clock_started:
                self._clock_started = True
                # the first whole sixteenth from now: a late first step (a slow start) must not
                # ask MIDI clock to start between sixteenths, which it cannot
                self._submit_clock(self.clock_out.start(ceil_to_grid(max(0, now), TICKS_PER_SPP)))
            self._submit_clock(self.clock_out.advance(now))

    def _submit_clock(self, items: list[tuple[int, tuple[int, ...]]]) -> None:
        tick_to_ns = self.clock.tick_to_ns
        self.scheduler.submit([Scheduled(tick_to_ns(tick), tick, data, CLOCK_GROUP) for tick, data in items])

    def collect_sent(self) -> None:
        """Move what the scheduler sent into the recorder (and to ``on_sent``, and the kept log).

        ``keep_sent`` keeps every message in :attr:`sent` (an offline render, a test): memory
        grows with the performance, so a long run passes ``on_sent`` instead, which sees each
        message once and keeps what it needs (the streamed WAV, the soak's meter).
        """
        on_sent = self.on_sent
        for sent in self.scheduler.drain_sent():
            if sent.group == MODEL_GROUP:
                event = decode_message(sent.tick, sent.data)
                if event is not None:
                    self.recorder.record(MODEL_TRACK, event)
            if on_sent is not None:
                on_sent(sent)
            if self.keep_sent:
                self.sent.append(sent)

    def step(self, wait_s: float = 0.0) -> None:
        """One control iteration: fold in input (waiting up to ``wait_s`` for some, taking at most
        :data:`INPUTS_PER_STEP`), keep time, plan, record."""
        try:
            item = self._inbox.get(timeout=wait_s) if wait_s > 0 else self._inbox.get_nowait()
        except queue.Empty:
            pass
        else:
            self._take_input(*item)
            for _ in range(INPUTS_PER_STEP - 1):
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                self._take_input(*item)
        self._watch_flood()
        self._keep_time()
        if self.clock.running:
            now = self.clock.now_tick()
            self._apply(self.planner.advance(now))
            if self._reacting:
                self._reacted()
            self.planner.plan_ahead(now)  # after the commit: sampling beyond it delays nobody
        elif self._reacting:
            self._reacted()
        self.collect_sent()
        self.recorder.keep_up(self.clock.now_tick())  # a rolling recording writes a part that has ended

    def run(self, until: Callable[[], bool], *, period_s: float = 0.002) -> None:
        """Live loop: step every ``period_s`` (or at once on input) until ``until()`` is true.

        With ``freeze_gc`` the setup's heap is frozen for the loop's duration, so the
        collector's full passes only walk what the performance allocates;
        ``gc_threshold0`` (None: Python's 700) spaces the young collections out, and with
        them the full ones, for the loop's duration.
        """
        with self.live_gc():
            while not until():
                self.step(period_s)

    @contextlib.contextmanager
    def live_gc(self) -> Iterator[None]:
        """The collector's settings for a live loop (``freeze_gc``, ``gc_threshold0``), for the block.

        :meth:`run` loops inside it; an offline driver of :meth:`step` (the accelerated soak,
        ``livegen/engine/soak.py``) does too, so that it measures the memory of the live loop.
        """
        with contextlib.ExitStack() as stack:
            if self.freeze_gc:
                stack.enter_context(_frozen_heap())
            if self.gc_threshold0 is not None:
                saved = gc.get_threshold()
                gc.set_threshold(self.gc_threshold0, *saved[1:])
                stack.callback(gc.set_threshold, *saved)
            yield

    def finish(self) -> None:
        """Stop the scheduler (silencing everything it played, and sending Stop as clock master)
        and record the last sends."""
        if self.clock_out is not None and self._clock_started:
            for _, data in self.clock_out.stop(self.clock.now_tick()):
                self.scheduler.send_now(data, CLOCK_GROUP)
        self.scheduler.stop()
        self.collect_sent()


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """Move every object alive into the collector's permanent generation, for the block.

    No ``gc.collect()`` first: a full collection takes tens of milliseconds that would
    delay the loop's first step past the clock's start; the little garbage frozen with
    the heap is released after.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
