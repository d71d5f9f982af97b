"""Items 1 and 2: onset error at the output port, from inside and from outside.

Context: setup (a benchmark). The real engine plays: the bundled ``folk-lstm`` model in
the autonomous planner (inference on the control thread, as in ``livegen jam``), an
internal clock at a dense tempo (1600 BPM: the tune's eighths and sixteenths become a
note every 9 to 19 ms, two MIDI events per note; density stays 1, see the note on
``LiveParams.scale_time`` in the report), the scheduler on its own thread sending to a
virtual JACK MIDI port ``livegen`` on a private JACK server (dummy driver, 48 kHz,
128 frames).

- Item 1 (inside): for every scheduled event, the scheduler's ``Sent`` record holds its
  planned deadline and the ``perf_counter_ns()`` just after ``send_message`` returned:
  the error is their difference. Run once idle, once under load: a process spinning on
  the last core and Python garbage (100 reference cycles per 2 ms iteration, the last 20 000
  kept alive) made on the control thread. Events the planner committed only after
  their deadline (a starved control thread) are counted apart, and the scheduler's own
  share (from the later of deadline and commit to the send) is reported too.
- Item 2 (outside): a separate process (:mod:`benchmarks.jackpeer`) with its own JACK
  client connected to ``livegen:livegen`` stamps each arriving message; the error is
  arrival minus the planned deadline. JACK moves MIDI once per period (2.67 ms at 128
  frames and 48 kHz), so this error includes up to a period of JACK's own buffering.

    python -m benchmarks.onset [--events N] [--quick] [--hog] [--peer]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import GarbageMaker, JackServer, cpu_hog, gc_counting, jack_env, loadavg, summary_ms

MODEL = "folk-lstm"
DEFAULT_TEMPO = 1600.0
DEFAULT_DENSITY = 1.0


@dataclass(frozen=True, slots=True)
class Tuning:
    """Interpreter and scheduler settings for one run (None: as livegen ships them)."""

    switch_interval_s: float | None = None
    gc_freeze: bool | None = None  # the Engine's freeze_gc (None: as shipped, on)
    gc_threshold0: int | str | None = "default"  # the Engine's gc_threshold0 (None: Python's 700)
    spin_ns: int | None = None
    rt_priority: int | str | None = "default"  # the scheduler thread's SCHED_FIFO priority; None: ordinary
    burst: bool | None = None
    control_nice: int | None = None  # nice value of the control thread during the run (None: unchanged)
    worker: bool | None = None  # the planner in an inference worker process, as ``jam --worker`` (None: off)

    def label(self) -> str:
        parts = [f"{k}={v}" for k, v in asdict(self).items() if v is not None and v != "default"]
        return ", ".join(parts) or "as shipped"


def autonomous_planner(density: float, seed: int, heard: Any = None) -> Any:
    """The benchmark's planner: ``folk-lstm`` playing on its own from its seed (in-process or in a worker)."""
    from livegen.engine.autonomous import AutonomousPlanner, AutonomousSettings
    from livegen.engine.jam import sampling_params, seed_events, seed_song
    from livegen.engine.live import LiveParams
    from livegen.models.registry import load_generator

    package, generator = load_generator(MODEL)
    song = seed_song(package, None)
    live = LiveParams(sampling=sampling_params(package, None, None), density=density)

    def no_inner() -> Any:
        raise RuntimeError("nobody performs in this benchmark")

    return AutonomousPlanner(
        generator, live, np.random.default_rng(seed), seed_events(song.notes), no_inner, AutonomousSettings()
    )


def _engine(port: Any, tempo: float, density: float, tuning: Tuning, seed: int) -> Any:
    from livegen.engine.clock import InternalClock
    from livegen.engine.scheduler import Scheduler
    from livegen.engine.session import MODEL_TRACK, PERFORMER_TRACK, Engine
    from livegen.engine.worker import PlannerWorker
    from livegen.io.recorder import MidiRecorder
    from livegen.music.time import TempoMap

    if tuning.worker:
        planner = PlannerWorker(partial(autonomous_planner, density, seed))
        planner.start()
    else:
        planner = autonomous_planner(density, seed)
    clock = InternalClock(TempoMap.constant(tempo), start_ns=time.perf_counter_ns() + 300_000_000)
    kwargs: dict[str, Any] = {}
    if tuning.spin_ns is not None:
        kwargs["spin_ns"] = tuning.spin_ns
    if tuning.rt_priority != "default":
        kwargs["rt_priority"] = tuning.rt_priority
    if tuning.burst is not None:
        kwargs["burst"] = tuning.burst
    scheduler = Scheduler([[port], [], []], tick_of=clock.ns_to_tick, **kwargs)
    engine_kwargs: dict[str, Any] = {} if tuning.gc_freeze is None else {"freeze_gc": tuning.gc_freeze}
    if tuning.gc_threshold0 != "default":
        engine_kwargs["gc_threshold0"] = tuning.gc_threshold0
    engine = Engine(
        planner, clock, scheduler, MidiRecorder((PERFORMER_TRACK, MODEL_TRACK)), keep_sent=True, **engine_kwargs
    )
    # When was each event committed? An event submitted after its deadline is the
    # planner's lateness (the control thread starved), not the scheduler's.
    submitted: dict[tuple[int, tuple[int, ...]], int] = {}
    submit = scheduler.submit

    def recording_submit(events: Any) -> None:
        now = time.perf_counter_ns()
        for e in events:
            submitted[(e.deadline_ns, e.data)] = now
        submit(events)

    scheduler.submit = recording_submit  # type: ignore[method-assign]
    engine.bench_submitted = submitted  # type: ignore[attr-defined]
    return engine


def _start_peer(server: JackServer, out: Path) -> subprocess.Popen[str]:
    peer = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.jackpeer", "--port", "livegen:livegen", "--out", str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=server.env(),
    )
    assert peer.stdout is not None
    line = peer.stdout.readline()
    if '"ready"' not in line:
        peer.kill()
        raise RuntimeError(f"the JACK peer did not start: {line.strip()}")
    return peer


def stop_peer(peer: subprocess.Popen[str], out: Path) -> list[list[int]]:
    """Stop a peer :func:`_start_peer` started; what it received, ``[t_ns, status, data...]`` each."""
    assert peer.stdin is not None and peer.stdout is not None
    peer.stdin.write("stop\n")
    peer.stdin.flush()
    peer.stdout.readline()
    peer.wait(10)
    received: list[list[int]] = json.loads(out.read_text())
    return received


def run(
    server: JackServer,
    events: int,
    *,
    hog: bool = False,
    peer: bool = False,
    tuning: Tuning = Tuning(),
    tempo: float = DEFAULT_TEMPO,
    density: float = DEFAULT_DENSITY,
    seed: int = 0,
    timeout_s: float = 600.0,
    raw: bool = False,
) -> dict[str, Any]:
    """One run of ``events`` scheduled events; errors inside (and outside with ``peer``)."""
    from livegen.io import midi_output

    saved_interval = sys.getswitchinterval()
    saved_threshold = gc.get_threshold()
    with jack_env(server):
        port = midi_output.open_output("livegen", api="jack", virtual=True)
    peer_proc = None
    peer_file = Path(tempfile.mkstemp(prefix="livegen-bench-peer-", suffix=".json")[1])
    try:
        engine = _engine(port, tempo, density, tuning, seed)
        if peer:
            peer_proc = _start_peer(server, peer_file)
        # What run_jam does before it starts the scheduler.
        sys.setswitchinterval(0.0005 if tuning.switch_interval_s is None else tuning.switch_interval_s)
        garbage = GarbageMaker(per_tick=100, keep=20_000) if hog else None
        give_up = time.monotonic() + timeout_s

        def until() -> bool:
            if garbage is not None:
                garbage.tick()
            return len(engine.sent) >= events or time.monotonic() > give_up

        tid = threading.get_native_id()
        saved_nice = os.getpriority(os.PRIO_PROCESS, tid)
        if tuning.control_nice is not None:
            os.setpriority(os.PRIO_PROCESS, tid, tuning.control_nice)
        try:
            with cpu_hog() if hog else _nothing(), gc_counting() as collections:
                engine.scheduler.start()
                started = time.perf_counter()
                engine.run(until)
                engine.finish()
                close = getattr(engine.planner, "close", None)
                if close is not None:
                    close()
                elapsed = time.perf_counter() - started
        finally:
            if tuning.control_nice is not None:
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, tid, saved_nice)
    finally:
        sys.setswitchinterval(saved_interval)
        gc.set_threshold(*saved_threshold)
        port.close()
    sent = [s for s in engine.sent if s.group == 0]
    scheduled = [s for s in sent if s.sent_ns != s.deadline_ns]  # the stop's releases go out "now"
    inside = [s.sent_ns - s.deadline_ns for s in scheduled]
    submitted = engine.bench_submitted
    committed_late = [s for s in scheduled if submitted.get((s.deadline_ns, s.data), 0) > s.deadline_ns]
    # The scheduler's own share: from max(deadline, commit) to the send.
    own = [s.sent_ns - max(s.deadline_ns, submitted.get((s.deadline_ns, s.data), 0)) for s in scheduled]
    result: dict[str, Any] = {
        "events": len(inside),
        "seconds": round(elapsed, 2),
        "events_per_s": round(len(inside) / elapsed, 1) if elapsed else 0.0,
        "inside": summary_ms(inside),
        "late_over_1ms": sum(1 for v in inside if v > 1_000_000),
        "committed_after_deadline": len(committed_late),
        "late_steps": engine.late_steps,
        "inference": "worker process" if tuning.worker else "in-process",
        "scheduler_own": summary_ms(own),
        "gc_collections": collections,
        "scheduler_realtime": engine.scheduler.stats.realtime,
        "loadavg": loadavg(),
    }
    if raw:
        result["raw_ns"] = inside
    if peer_proc is not None:
        received = stop_peer(peer_proc, peer_file)
        pairs = match_in_order(sent, received)
        outside = [r[0] - s.deadline_ns for s, r in pairs if s.sent_ns != s.deadline_ns]
        result["outside"] = summary_ms(outside)
        result["outside"]["received"] = len(received)
        result["outside"]["sent"] = len(sent)
        result["outside"]["unmatched_sent"] = len(sent) - len(pairs)
        result["outside"]["jack_period_ms"] = round(128 / 48, 3)
    peer_file.unlink(missing_ok=True)
    if peer_proc is not None and peer_proc.poll() is None:
        peer_proc.kill()
    return result


def match_in_order(sent: list[Any], received: list[list[int]], window: int = 16) -> list[tuple[Any, list[int]]]:
    """Pair sent and received messages: JACK keeps one port's order, so walk both lists,
    pairing equal bytes and skipping a sent message not seen within ``window`` arrivals
    (one sent before the peer's connection was live, or lost)."""
    pairs = []
    j = 0
    for item in sent:
        want = list(item.data)
        for k in range(j, min(len(received), j + window)):
            if received[k][1:] == want:
                pairs.append((item, received[k]))
                j = k + 1
                break
    return pairs


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def measure(events: int = 10_000, *, quick: bool = False, hog: bool | None = None) -> dict[str, Any]:
    """Item 1: idle and under load (``hog`` None: both)."""
    if quick:
        events = min(events, 600)
    reason = JackServer.available()
    if reason:
        return {"skipped": reason}
    conditions = [False, True] if hog is None else [hog]
    out: dict[str, Any] = {"model": MODEL, "tempo_bpm": DEFAULT_TEMPO, "density": DEFAULT_DENSITY}
    with JackServer() as server:
        for loaded in conditions:
            out["hog" if loaded else "idle"] = run(server, events, hog=loaded)
    return out


def measure_outside(events: int = 4_000, *, quick: bool = False) -> dict[str, Any]:
    """Item 2: the same, seen from a separate process's JACK client (idle only)."""
    if quick:
        events = min(events, 400)
    reason = JackServer.available()
    if reason:
        return {"skipped": reason}
    with JackServer() as server:
        result = run(server, events, peer=True)
    return {"model": MODEL, "tempo_bpm": DEFAULT_TEMPO, "density": DEFAULT_DENSITY, **result}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--hog", action="store_true", help="only the loaded run")
    parser.add_argument("--peer", action="store_true", help="item 2: also stamp arrivals in a separate process")
    args = parser.parse_args(argv)
    if args.peer:
        result = measure_outside(args.events, quick=args.quick)
    else:
        result = measure(args.events, quick=args.quick, hog=True if args.hog else None)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
