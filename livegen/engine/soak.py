"""The soak (the README's guarantee 7): does livegen play for a day without drifting, growing or sticking?

Context: setup and control. The accelerated soak drives the engine on the calling
thread; the real-time soak is a jam (:func:`~livegen.engine.jam.run_jam`), measured
through its ``on_sent`` hook on the control thread and by a sampling thread that only
reads ``/proc``.

Two ways to run it, with the same figures (``livegen soak``):

- **Accelerated** (default): the jam's own pieces, the engine, the autonomous planner
  under its conductor with the bundled model, the scheduler and the rolling recording,
  on a :class:`~livegen.engine.clock.ManualClock` moved as fast as inference allows
  (like :mod:`livegen.engine.render`). Each turn moves the clock to the next grid step
  or to the scheduler's next deadline, whichever comes first, so every message goes out
  exactly at its deadline. A visitor plays the seed phrase every ``visitor_minutes``
  (the planner yields, answers and takes over again). 24 simulated hours take about a
  minute and a half on the reference machine.
- **Real time** (``--realtime``): a real jam in autonomous mode (a preset's, the
  installation's for instance) for the given wall time, with its real clock, ports and
  synth (or the streamed WAV without a sound card).

What is measured, with bounded memory itself (counts and histograms, never the messages):

- *Beat drift*: every model note-on's deadline against the tempo's beat grid, exactly
  (``deadline - origin`` against ``tick * ns per beat / PPQN`` in integers), so the time
  of beat *k* at the end is still *k* beats; a drift shows as an error of 1 ns or more.
  The lateness of each send (``sent_ns - deadline_ns``; on the manual clock it must be
  0), as a histogram, whole and in the first and last tenth of the run.
- *Memory*: anonymous resident memory (``RssAnon`` in ``/proc/PID/status``, a worker
  process's included) every ``sample_minutes`` of (simulated) time, and its
  least-squares slope after the warm-up, in MB per (simulated) hour, which the verdict
  judges. Resident memory as a whole (``RSS``) is reported beside it but not judged: it
  also counts shared-library code paged in the first time a code path runs, which is no
  growth (0.4 MB of onnxruntime's and libc's code, paged in 38 and 45 minutes into two
  one-hour runs, made RSS step by 0.66 MB). The warm-up lasts until the recorder has
  written its first two parts and the first visitor has been answered: each raised the
  process's high-water mark once (by 0.55 and 0.30 MB with 15-minute parts), and a
  slope fitted across such a step reads it as growth. The interpreter's allocated
  blocks (``sys.getallocatedblocks``: live Python objects, whatever the allocator does
  with pages) rise and fall with each part the recorder holds, so their slope is
  taken at one point of that cycle, right after each part is written (n/a with fewer
  than two such points after the warm-up; from every sample when no part is written).
- *Stuck notes*: every note-on sent must meet its note-off (all notes off counts);
  a note sounding after the end, or longer than ``stuck_beats``, is stuck.
- *The recording*: the part files are read back; every note the model sent and every
  note performed must be in them (a note cut by a part boundary is joined again), with
  a checksum of the onsets and pitches of the model's notes.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from array import array
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mido
import numpy as np

from livegen.engine.clock import ManualClock
from livegen.engine.health import resident_bytes
from livegen.engine.jam import (
    JamConfig,
    live_params,
    make_conductor,
    part_ticks,
    run_jam,
    seed_events,
    seed_song,
)
from livegen.engine.scheduler import Scheduler, Sent
from livegen.engine.session import ECHO_GROUP, MODEL_GROUP, MODEL_TRACK, PERFORMER_TRACK, Engine
from livegen.errors import ConfigError
from livegen.io.recorder import RollingRecording
from livegen.models.package import read_package
from livegen.models.registry import DEFAULT_MODEL, load_generator, resolve_package
from livegen.music.events import CC_ALL_NOTES_OFF, CC_ALL_SOUND_OFF, CONTROL_CHANGE, decode_message
from livegen.music.held import HeldNotes
from livegen.music.time import PPQN, SIXTEENTH, TempoMap

#: Anonymous resident memory may grow at most this much per (simulated) hour after warm-up (guarantee 7).
MAX_SLOPE_MB_PER_HOUR = 1.0
#: A part is written within 8 bars of its end, and a visitor answered within a few bars of the
#: phrase: at 20 BPM, the slowest tempo, 8 bars of 4/4 last 96 s. The warm-up waits this long more.
SETTLE_MINUTES = 2.0
#: Lateness histogram: bins of this many ns, the last bin holding everything later.
LATE_BIN_NS = 10_000
LATE_BINS = 10_000  # up to 100 ms


@dataclass(frozen=True, slots=True)
class SoakSettings:
    """What ``livegen soak`` is told."""

    hours: float = 24.0
    model: str = DEFAULT_MODEL
    tempo: float | None = None  # BPM; None: the seed phrase's, as a jam
    sample_minutes: float | None = None  # memory sample period; None: 1/144 of the run
    warmup_hours: float | None = None  # None: see ``warmup``
    part_minutes: float = 15.0  # the recording's part length
    visitor_minutes: float = 30.0  # accelerated: a visitor plays the seed phrase this often; 0: never
    rng_seed: int = 0
    out_dir: Path = Path("out/soak")
    stuck_beats: float = 16.0  # a note sounding longer than this is stuck
    max_slope: float = MAX_SLOPE_MB_PER_HOUR

    def __post_init__(self) -> None:
        if not 0 < self.hours <= 24 * 365:
            raise ConfigError(f"--hours {self.hours}: expected more than 0 and at most a year")
        if self.sample_minutes is not None and not 0 < self.sample_minutes <= self.hours * 60:
            raise ConfigError(f"--sample-minutes {self.sample_minutes}: expected more than 0, within the run")
        if self.warmup_hours is not None and not 0 <= self.warmup_hours < self.hours:
            raise ConfigError(f"--warmup-hours {self.warmup_hours}: expected 0 or more, less than --hours")
        if not 0 < self.part_minutes <= 1440:
            raise ConfigError(f"--part-minutes {self.part_minutes}: expected more than 0 and at most 1440")
        if self.visitor_minutes < 0:
            raise ConfigError(f"--visitor-minutes {self.visitor_minutes}: expected 0 (none) or more")
        if self.tempo is not None and not 20 <= self.tempo <= 400:
            raise ConfigError(f"--tempo {self.tempo}: expected 20 to 400 BPM")

    @property
    def sample_ns(self) -> int:
        minutes = self.sample_minutes if self.sample_minutes is not None else self.hours * 60 / 144
        return max(1_000_000, round(minutes * 60e9))

    @property
    def warmup(self) -> float:
        """Hours left out of the slopes: ``warmup_hours``, else a fifth of the run (at most an hour) and
        at least until the first two parts are written and the first visitor answered (each within
        :data:`SETTLE_MINUTES` of its time), but at most three fifths of the run."""
        if self.warmup_hours is not None:
            return self.warmup_hours
        first_cycles = (max(2 * self.part_minutes, self.visitor_minutes) + SETTLE_MINUTES) / 60
        return max(min(1.0, self.hours / 5), min(first_cycles, 0.6 * self.hours))


# ---- measuring what was sent ------------------------------------------------------------


class _Histogram:
    """Lateness in :data:`LATE_BIN_NS` bins (fixed memory), with the exact maximum."""

    def __init__(self) -> None:
        self.bins = array("q", bytes(8 * LATE_BINS))
        self.n = 0
        self.max_ns = 0

    def add(self, late_ns: int) -> None:
        index = late_ns // LATE_BIN_NS if late_ns > 0 else 0
        self.bins[index if index < LATE_BINS else LATE_BINS - 1] += 1
        self.n += 1
        if late_ns > self.max_ns:
            self.max_ns = late_ns

    def percentile_ms(self, q: float) -> float | None:
        """The upper edge of the bin holding the ``q`` quantile, ms (None: nothing counted)."""
        if not self.n:
            return None
        rank = max(1, round(q * self.n))
        seen = 0
        for index, count in enumerate(self.bins):
            seen += count
            if seen >= rank:
                edge = (index + 1) * LATE_BIN_NS if index < LATE_BINS - 1 else self.max_ns
                return round(min(edge, self.max_ns) / 1e6, 3)
        return round(self.max_ns / 1e6, 3)


class SoakMeter:
    """Counts what the scheduler sent: the beat grid, lateness, notes and what still sounds.

    Context: control (the engine's ``on_sent`` hook). Memory: counters, three histograms,
    the notes sounding now; never the messages themselves.

    ``origin_ns`` is the deadline of tick 0 (the clock's start); None: taken from the
    first model note-on (a real-time jam, whose clock is made inside it). ``span_ns`` is
    the run's expected length, for the first and last tenth.
    """

    def __init__(
        self,
        tempo: TempoMap,
        *,
        origin_ns: int | None,
        span_ns: int,
        stuck_beats: float = 16.0,
        grid: int = SIXTEENTH,
    ) -> None:
        if len(tempo.changes) != 1:
            raise ConfigError("the soak measures a steady tempo (one tempo for the whole run)")
        self._ns_per_beat = tempo.changes[0][1] * 1000
        self._stuck_ns = round(stuck_beats * self._ns_per_beat)
        self.origin_ns = origin_ns
        self._span = span_ns
        self._grid = grid
        self._start_ns: int | None = None  # the first send's time
        self.checked = 0  # model note-ons checked against the beat grid
        self.max_grid_error = 0  # in 1/PPQN ns (exact integers)
        self.off_grid = 0  # model note-ons not on the grid (16ths)
        self.last_onset: tuple[int, int] | None = None  # (tick, deadline) of the latest model note-on
        self.sent = 0
        self.note_ons = [0, 0, 0]
        self.note_offs = [0, 0, 0]
        self.late = _Histogram()
        self.late_first = _Histogram()
        self.late_last = _Histogram()
        self._sounding = [HeldNotes() for _ in range(ECHO_GROUP + 1)]  # per group, started at their send ns
        self.longest_ns = [0, 0, 0]
        self.longest_at: list[int | None] = [None, None, None]  # tick of the longest note's note-off
        self.too_long = [0, 0, 0]  # notes that sounded longer than ``stuck_beats``
        self.onset_sum = 0  # checksum of the model's note-ons (tick, channel, pitch), mod 2**64

    # control thread
    def on_sent(self, sent: Sent) -> None:
        self.sent += 1
        if self._start_ns is None:
            self._start_ns = sent.sent_ns
        late = sent.sent_ns - sent.deadline_ns
        self.late.add(late)
        elapsed = sent.sent_ns - self._start_ns
        if elapsed < self._span // 10:
            self.late_first.add(late)
        elif elapsed >= self._span - self._span // 10:
            self.late_last.add(late)
        group = sent.group
        event = decode_message(sent.sent_ns, sent.data)  # timed in nanoseconds: how long notes sound
        if event is None or group > ECHO_GROUP:
            return
        held = self._sounding[group]
        if event.is_note_on:
            self.note_ons[group] += 1
            held.observe(event)
            if group == MODEL_GROUP:
                self._on_grid(sent)
                self.onset_sum = (self.onset_sum + onset_key(sent.tick, *event.key)) & 0xFFFF_FFFF_FFFF_FFFF
        elif event.is_note_off:
            self.note_offs[group] += 1
            ended = held.observe(event)
            if ended is not None:
                self._ended(group, ended.start, sent)
        elif event.kind == CONTROL_CHANGE and event.data1 in (CC_ALL_NOTES_OFF, CC_ALL_SOUND_OFF):
            for ended in held.end_channel(event.tick, event.channel):
                self._ended(group, ended.start, sent)

    def _ended(self, group: int, started_ns: int, sent: Sent) -> None:
        length = sent.sent_ns - started_ns
        if length > self._stuck_ns:
            self.too_long[group] += 1
        if length > self.longest_ns[group]:
            self.longest_ns[group] = length
            self.longest_at[group] = sent.tick

    def _on_grid(self, sent: Sent) -> None:
        tick = sent.tick
        if self.origin_ns is None:  # the first model note-on fixes where tick 0 is
            self.origin_ns = sent.deadline_ns - -(-tick * self._ns_per_beat // PPQN)
        error = abs((sent.deadline_ns - self.origin_ns) * PPQN - tick * self._ns_per_beat)
        if error > self.max_grid_error:
            self.max_grid_error = error
        if tick % self._grid:
            self.off_grid += 1
        self.checked += 1
        self.last_onset = (tick, sent.deadline_ns)

    def sounding(self) -> list[tuple[int, int, int]]:
        """(group, channel, pitch) of every note sounding now, once per note-on."""
        return [(group, *key) for group, held in enumerate(self._sounding) for key in held.sounding()]

    def drift(self) -> dict[str, Any]:
        """The beat-grid and lateness figures."""
        last: dict[str, Any] | None = None
        if self.last_onset is not None and self.origin_ns is not None:
            tick, deadline = self.last_onset
            beat = tick // PPQN
            last = {
                "tick": tick,
                "beat": beat,
                "seconds": round((deadline - self.origin_ns) / 1e9, 6),
                "error_ns": round(((deadline - self.origin_ns) * PPQN - tick * self._ns_per_beat) / PPQN, 3),
            }
        return {
            "onsets_checked": self.checked,
            "max_grid_error_ns": round(self.max_grid_error / PPQN, 3),
            "off_grid_onsets": self.off_grid,
            "last_onset": last,
            "late_p50_ms": self.late.percentile_ms(0.5),
            "late_p99_ms": self.late.percentile_ms(0.99),
            "late_max_ms": round(self.late.max_ns / 1e6, 3),
            "late_p99_first_tenth_ms": self.late_first.percentile_ms(0.99),
            "late_p99_last_tenth_ms": self.late_last.percentile_ms(0.99),
            "late_over_1ms": sum(self.late.bins[1_000_000 // LATE_BIN_NS :]),
        }


def onset_key(tick: int, channel: int, pitch: int) -> int:
    """One note-on's term of the recording checksum (a fixed mix, the same in every process)."""
    x = (tick * 0x9E37_79B9_7F4A_7C15 + channel * 0xBF58_476D_1CE4_E5B9 + pitch * 0x94D0_49BB_1331_11EB) & (2**64 - 1)
    x ^= x >> 31
    return (x * 0xD6E8_FEB8_6659_FD93) & (2**64 - 1)


# ---- memory -----------------------------------------------------------------------------


def _read(path: str) -> str:
    """A /proc file's text. Not through pathlib: it interns every part of a path, and the
    meter must not churn the interpreter's table of interned strings it is measuring."""
    with open(path) as file:
        return file.read()


def _children() -> list[str]:
    """Process ids of this process's children (the inference worker); none where /proc cannot say."""
    pids: list[str] = []
    with contextlib.suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError, ValueError):
                pids += _read(f"/proc/self/task/{task}/children").split()
    return pids


def _children_rss() -> int:
    """Resident bytes of this process's children, 0 where /proc cannot say."""
    total = 0
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    for pid in _children():
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(_read(f"/proc/{pid}/statm").split()[1]) * page
    return total


def anonymous_bytes(pid: str = "self") -> int | None:
    """Anonymous resident memory of a process (``RssAnon``: what it allocated, not the files it maps)."""
    try:
        for line in _read(f"/proc/{pid}/status").splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (hours, value) points, or None with fewer than two hours apart."""
    if len(points) < 2 or points[-1][0] <= points[0][0]:
        return None
    return float(np.polyfit(np.array([p[0] for p in points]), np.array([p[1] for p in points], dtype=float), 1)[0])


@dataclass(slots=True)
class MemoryLog:
    """Samples of (hours, resident MB, allocated blocks, anonymous resident MB); the slopes after warm-up.

    ``at_parts`` holds (hours, allocated blocks) taken right after each part of the recording
    is written: one point of the cycle in which the recorder fills a part and lets it go.
    """

    samples: list[tuple[float, float, int, float]] = field(default_factory=list)
    at_parts: list[tuple[float, int]] = field(default_factory=list)

    def sample(self, hours: float) -> None:
        rss = (resident_bytes() or 0) + _children_rss()
        anon = (anonymous_bytes() or 0) + sum(anonymous_bytes(pid) or 0 for pid in _children())
        self.samples.append((round(hours, 4), round(rss / 1e6, 3), sys.getallocatedblocks(), round(anon / 1e6, 3)))

    def part_written(self, hours: float) -> None:
        self.at_parts.append((round(hours, 4), sys.getallocatedblocks()))

    def report(self, warmup: float) -> dict[str, Any]:
        after = [s for s in self.samples if s[0] >= warmup]
        anon_slope = rss_slope = blocks_slope = None
        if len(after) >= 3:
            anon_slope = _slope([(s[0], s[3]) for s in after])
            rss_slope = _slope([(s[0], s[1]) for s in after])
        if self.at_parts:  # parts were written: one point of their cycle (n/a with fewer than two)
            blocks = [(h, float(b)) for h, b in self.at_parts if h >= warmup]
        else:
            blocks = [(s[0], float(s[2])) for s in after] if len(after) >= 3 else []
        blocks_slope = _slope(blocks)
        rss = [s[1] for s in self.samples]
        anon = [s[3] for s in self.samples]
        return {
            "warmup_hours": round(warmup, 4),
            "samples_after_warmup": len(after),
            "anon_slope_mb_per_hour": None if anon_slope is None else round(anon_slope, 4),
            "rss_slope_mb_per_hour": None if rss_slope is None else round(rss_slope, 4),
            "blocks_slope_per_hour": None if blocks_slope is None else round(blocks_slope, 1),
            "blocks_sampled": "after each part" if self.at_parts else "every sample",
            "anon_start_mb": anon[0] if anon else None,
            "anon_after_warmup_mb": after[0][3] if after else None,
            "anon_end_mb": anon[-1] if anon else None,
            "rss_start_mb": rss[0] if rss else None,
            "rss_after_warmup_mb": after[0][1] if after else None,
            "rss_end_mb": rss[-1] if rss else None,
            "rss_max_mb": max(rss) if rss else None,
            "samples": [list(s) for s in self.samples],
            "at_parts": [list(p) for p in self.at_parts],
        }


# ---- the recording, read back -----------------------------------------------------------


def read_parts(paths: list[Path], part_ticks: int) -> dict[str, Any]:
    """Count the notes of a rolling recording's part files, read back with mido.

    Part *n* (from 0) starts ``n * part_ticks`` into the performance. Returns the
    note-ons per track and the checksum (:func:`onset_key`) of the model track's
    onsets at their ticks in the performance.
    """
    counts: dict[str, int] = defaultdict(int)
    checksum = 0
    for number, path in enumerate(paths):
        offset = number * part_ticks
        midi = mido.MidiFile(str(path))
        for track in midi.tracks:
            name = next((m.name for m in track if m.type == "track_name"), "")
            tick = 0
            for msg in track:
                tick += msg.time
                if msg.type == "note_on" and msg.velocity > 0:
                    counts[name] += 1
                    if name == MODEL_TRACK:
                        at = offset + tick * PPQN // midi.ticks_per_beat
                        checksum = (checksum + onset_key(at, msg.channel, msg.note)) & 0xFFFF_FFFF_FFFF_FFFF
    return {"notes": dict(counts), "model_checksum": checksum}


# ---- the accelerated soak ---------------------------------------------------------------


def run_accelerated(settings: SoakSettings, *, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Play ``settings.hours`` of autonomous mode on a manual clock, as fast as it goes; the report."""
    config = JamConfig(model=settings.model, mode="autonomous", rng_seed=settings.rng_seed, tempo=settings.tempo)
    package, generator = load_generator(config.model)
    live = live_params(config, package)
    song = seed_song(package, None)
    tempo = TempoMap.constant(settings.tempo) if settings.tempo else TempoMap((song.tempo.changes[0],))
    beats_per_bar = song.beats_per_bar
    rng = np.random.default_rng(settings.rng_seed)
    conductor = make_conductor(
        config, package, generator, live, rng, beats_per_bar=beats_per_bar, seed=seed_events(song.notes)
    )
    clock = ManualClock(tempo)
    scheduler = Scheduler([[], [], []], tick_of=clock.ns_to_tick, now_ns=clock.now_ns)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    ticks_per_part = part_ticks(settings.part_minutes, tempo)
    recorder = RollingRecording(
        (settings.out_dir / f"soak-{stamp}.mid").resolve(),
        tempo,
        part_ticks=ticks_per_part,
        beats_per_bar=beats_per_bar,
        tracks=(PERFORMER_TRACK, MODEL_TRACK),
    )
    span_ns = round(settings.hours * 3600e9)
    meter = SoakMeter(tempo, origin_ns=clock.start_ns, span_ns=span_ns, stuck_beats=settings.stuck_beats)
    engine = Engine(conductor, clock, scheduler, recorder, echo_channel=config.echo_channel, on_sent=meter.on_sent)
    visit = _phrase(song.notes)
    visit_every = round(settings.visitor_minutes * 60e9) if settings.visitor_minutes else 0
    step_ns = clock.tick_to_ns(SIXTEENTH) - clock.tick_to_ns(0)
    memory = MemoryLog()
    held_max = {"recorder_messages": 0, "scheduler_pending": 0, "sounding": 0}
    performed = visits = parts_seen = 0
    start, end = clock.start_ns, clock.start_ns + span_ns
    next_sample, next_report = start, start + 3600 * 10**9
    next_visit = start + visit_every if visit_every else None
    incoming: deque[tuple[int, tuple[int, ...]]] = deque()  # the visitor's messages, (t_ns, bytes)
    began = time.perf_counter()
    t = start
    with engine.live_gc():
        while t < end:
            clock.set_ns(t)
            if next_visit is not None and t >= next_visit:
                base = clock.tick_to_ns(-(-clock.ns_to_tick(t) // PPQN) * PPQN)  # on the next beat
                incoming.extend((base + clock.tick_to_ns(tick) - start, data) for tick, data in visit)
                next_visit += visit_every
                visits += 1
            while incoming and incoming[0][0] <= t:
                t_ns, data = incoming.popleft()
                engine.on_midi(data, t_ns)
                event = decode_message(0, data)
                performed += event is not None and event.is_note_on
            engine.step()
            scheduler.run_until(t)
            if len(recorder.parts) > parts_seen:
                parts_seen = len(recorder.parts)
                memory.part_written((t - start) / 3600e9)
            if t >= next_sample:
                memory.sample((t - start) / 3600e9)
                next_sample += settings.sample_ns
                held_max["recorder_messages"] = max(held_max["recorder_messages"], recorder.held)
                held_max["scheduler_pending"] = max(held_max["scheduler_pending"], scheduler.pending)
                held_max["sounding"] = max(held_max["sounding"], len(meter.sounding()))
            if progress is not None and t >= next_report:
                progress(
                    f"{(t - start) / 3600e9:.0f} simulated h in {time.perf_counter() - began:.0f} s: "
                    f"{meter.note_ons[MODEL_GROUP]} notes, {memory.samples[-1][1]:.1f} MB resident"
                )
                next_report += 3600 * 10**9
            following = t + step_ns
            deadline = scheduler.next_deadline_ns()
            if deadline is not None and deadline < following:
                following = deadline
            if incoming and incoming[0][0] < following:
                following = incoming[0][0]
            t = max(following, t + 1)
        clock.set_ns(end)
        memory.sample(span_ns / 3600e9)
        engine.finish()
    wall = time.perf_counter() - began
    final = recorder.write()
    parts = [*recorder.parts, final]
    readback = read_parts(parts, recorder.part_ticks)
    reseeds = conductor.report().reseeds
    report = _report(
        "accelerated",
        settings,
        tempo,
        meter,
        memory,
        wall_s=wall,
        hours=settings.hours,
        late_steps=engine.late_steps,
        performed=performed,
        recorded=readback,
        carried=dict(recorder.carried_by_track),
        parts=parts,
    )
    report["visits"] = visits
    report["reseeds"] = reseeds
    report["held_max"] = held_max
    report["held_end"] = {
        "recorder_messages": recorder.held,
        "engine_sent": len(engine.sent),
        "scheduler_pending": scheduler.pending,
    }
    report["tracker_sounding_end"] = [scheduler.tracker.sounding(g) for g in range(len(scheduler.groups))]
    return report


def _phrase(notes: Any) -> list[tuple[int, tuple[int, ...]]]:
    """The seed phrase as (tick from its first note, bytes), note-offs before note-ons at a tick."""
    from livegen.music.events import notes_to_events

    events = notes_to_events(notes)
    first = min((e.tick for e in events), default=0)
    return [(e.tick - first, tuple(e.bytes())) for e in events]


# ---- the real-time soak -----------------------------------------------------------------


def run_realtime(
    settings: SoakSettings, config: JamConfig, *, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """A real jam in autonomous mode for ``settings.hours`` of wall time, measured; the report.

    ``config`` is the jam's (a preset's); the mode, the length, the part length and the
    recording's name are the soak's. Ctrl-C or SIGTERM end it early, with the figures so far.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    config = replace(
        config,
        mode="autonomous",
        max_seconds=settings.hours * 3600,
        commands=False,
        part_minutes=settings.part_minutes,
        record=(settings.out_dir / f"soak-{stamp}.mid").resolve() if config.record is None else config.record,
    )
    package = read_package(resolve_package(config.model))
    song = seed_song(package, config.seed_file)
    tempo = TempoMap.constant(config.tempo) if config.tempo else TempoMap((song.tempo.changes[0],))
    span_ns = round(settings.hours * 3600e9)
    meter = SoakMeter(tempo, origin_ns=None, span_ns=span_ns, stuck_beats=settings.stuck_beats)
    memory = MemoryLog()
    began = time.perf_counter()
    done, playing = threading.Event(), threading.Event()

    def sent(message: Sent) -> None:  # the jam's control thread
        meter.on_sent(message)
        if not playing.is_set():
            playing.set()

    def sampler() -> None:  # its own thread: reads /proc and a counter, nothing the jam holds
        while not playing.wait(0.1):  # from the jam's first message (its model and worker loaded)
            if done.is_set():
                return
        first = time.perf_counter()
        next_report = 3600.0
        while True:
            elapsed = time.perf_counter() - first
            memory.sample(elapsed / 3600)
            if progress is not None and elapsed >= next_report:
                progress(f"{elapsed / 3600:.0f} h: {meter.note_ons[MODEL_GROUP]} notes, {memory.samples[-1][1]:.1f} MB")
                next_report += 3600.0
            if done.wait(settings.sample_ns / 1e9):
                return

    thread = threading.Thread(target=sampler, name="livegen-soak-memory", daemon=True)
    thread.start()
    try:
        result = run_jam(config, on_sent=sent)
    finally:
        done.set()
        thread.join(5)
    wall = time.perf_counter() - began  # no sample now: the jam and its worker have ended
    parts = result.parts or [result.midi_path]
    readback = read_parts(parts, part_ticks(config.part_minutes, tempo))
    report = _report(
        "realtime",
        settings,
        tempo,
        meter,
        memory,
        wall_s=wall,
        hours=wall / 3600,
        late_steps=result.late_steps,
        performed=result.notes_performed,
        recorded=readback,
        carried=result.carried,
        parts=parts,
    )
    if config.clock != "internal":
        report["drift"]["note"] = f"clock {config.clock}: the beat grid is the source's, not checked here"
    report["reseeds"] = result.reseeds
    report["worker_restarts"] = result.worker_restarts
    report["send_errors"] = result.send_errors
    report["outputs"] = result.outputs
    report["warnings"] = result.warnings
    report["wav"] = str(result.wav_path) if result.wav_path else None
    return report


# ---- the report -------------------------------------------------------------------------


def _report(
    mode: str,
    settings: SoakSettings,
    tempo: TempoMap,
    meter: SoakMeter,
    memory: MemoryLog,
    *,
    wall_s: float,
    hours: float,
    late_steps: int,
    performed: int,
    recorded: dict[str, Any],
    carried: dict[str, int],
    parts: list[Path],
) -> dict[str, Any]:
    beat_ns = tempo.changes[0][1] * 1000
    sounding = meter.sounding()
    stuck = len(sounding) + sum(meter.too_long[:2])
    drift = meter.drift()
    mem = memory.report(min(settings.warmup, max(0.0, hours - 1e-9)))
    generated = meter.note_ons[MODEL_GROUP]
    notes_in_parts = recorded["notes"]
    expected = {MODEL_TRACK: generated, PERFORMER_TRACK: performed}
    # a note held across a part's end is in both parts (begun again in the second): counted once
    checksum = None if carried.get(MODEL_TRACK) else recorded["model_checksum"] == meter.onset_sum
    complete = checksum is not False and all(
        notes_in_parts.get(t, 0) - carried.get(t, 0) == n for t, n in expected.items()
    )
    slope = mem["anon_slope_mb_per_hour"]
    verdict = {
        "drift": drift["max_grid_error_ns"] < 1 and (mode != "accelerated" or meter.late.max_ns == 0),
        "memory": slope is not None and slope < settings.max_slope,
        "stuck_notes": stuck == 0,
        "recording": complete,
    }
    return {
        "mode": mode,
        "model": settings.model,
        "tempo_bpm": round(tempo.initial_bpm, 3),
        "hours": round(hours, 4),
        "wall_s": round(wall_s, 2),
        "speed": round(hours * 3600 / wall_s, 1) if wall_s > 0 else None,
        "notes": {
            "generated": generated,
            "performed": performed,
            "echoed": meter.note_ons[ECHO_GROUP],
            "messages_sent": meter.sent,
        },
        "late_steps": late_steps,
        "drift": drift,
        "memory": mem,
        "stuck": {
            "stuck_notes": stuck,
            "sounding_at_end": [list(k) for k in sounding],
            "longer_than_stuck_beats": meter.too_long[:2],
            "stuck_beats": settings.stuck_beats,
            "longest_model_note_beats": round(meter.longest_ns[MODEL_GROUP] / beat_ns, 3),
            "longest_echo_note_beats": round(meter.longest_ns[ECHO_GROUP] / beat_ns, 3),
            "note_ons": meter.note_ons[:2],
            "note_offs": meter.note_offs[:2],
        },
        "recording": {
            "parts": [str(p) for p in parts],
            "notes_in_parts": notes_in_parts,
            "carried_across_parts": carried,
            "model_checksum_matches": checksum,
            "complete": complete,
        },
        "max_slope_mb_per_hour": settings.max_slope,
        "verdict": verdict,
        "ok": all(verdict.values()),
    }


def summary_lines(report: dict[str, Any]) -> Iterator[str]:
    """The report as the lines ``livegen soak`` prints."""
    d, m, s, r = report["drift"], report["memory"], report["stuck"], report["recording"]
    n = report["notes"]
    kind = "simulated " if report["mode"] == "accelerated" else ""
    yield (
        f"{report['mode']} soak: {report['hours']:g} {kind}h of {report['model']} at {report['tempo_bpm']:g} BPM "
        f"in {report['wall_s']:.1f} s of wall time"
    )
    yield (
        f"notes: {n['generated']} generated, {n['performed']} performed, {n['messages_sent']} messages sent; "
        f"late steps {report['late_steps']}"
    )
    last = d["last_onset"]
    where = (
        f"; last onset on beat {last['beat']} ({last['seconds']:.3f} s), off by {last['error_ns']} ns" if last else ""
    )
    yield (
        f"drift: {d['onsets_checked']} onsets against the beat grid, largest error {d['max_grid_error_ns']} ns{where}; "
        f"sends late p50 {d['late_p50_ms']} ms, p99 {d['late_p99_ms']} ms (first tenth {d['late_p99_first_tenth_ms']}, "
        f"last tenth {d['late_p99_last_tenth_ms']}), max {d['late_max_ms']} ms"
    )
    slope, rss_slope = m["anon_slope_mb_per_hour"], m["rss_slope_mb_per_hour"]
    yield (
        f"memory: anonymous {m['anon_start_mb']} MB at the start, {m['anon_after_warmup_mb']} MB after "
        f"{m['warmup_hours']:g} h warm-up, {m['anon_end_mb']} MB at the end; slope after warm-up "
        f"{'n/a' if slope is None else f'{slope:+.3f}'} MB per {kind}hour (limit {report['max_slope_mb_per_hour']:g}); "
        f"resident {m['rss_start_mb']} to {m['rss_end_mb']} MB ({'n/a' if rss_slope is None else f'{rss_slope:+.3f}'} "
        f"MB per {kind}hour); {m['blocks_slope_per_hour']} Python blocks per {kind}hour ({m['blocks_sampled']})"
    )
    yield (
        f"stuck notes: {s['stuck_notes']} (sounding at the end: {len(s['sounding_at_end'])}, longest model note "
        f"{s['longest_model_note_beats']} beats)"
    )
    yield (
        f"recording: {len(r['parts'])} part file(s), {r['notes_in_parts']} notes read back, "
        f"{'complete' if r['complete'] else 'INCOMPLETE'}"
    )
    failed = [k for k, ok in report["verdict"].items() if not ok]
    yield "verdict: ok" if not failed else f"verdict: FAILED ({', '.join(failed)})"
