"""Re-plan time of accompaniment: a performed note in, the new plan in place.

Runs the bundled model (or ``--model``) in an :class:`AccompanyPlanner` on a manual
timeline: a performer plays an eighth-note line for ``--notes`` notes while the planner
advances every 2 ms of musical time, and each note-on is timed from the call to
``on_input`` until the plan up to the commit horizon is rebuilt (the fold at the note's
place in time, the committed notes fed again, the notes due for commit sampled afresh). Beside it, in
the same run, one model step (feed and sample) as the unit: the ratio says how many
model steps a re-plan costs, which carries across machines better than milliseconds.

Item 4 of the suite (:func:`measure_reaction`, :func:`measure_all`): the same through the
whole :class:`~livegen.engine.session.Engine`, per bundled model: each performed note-on
is handed to ``Engine.on_midi`` stamped with ``perf_counter_ns()`` (as an input backend
does) and the engine's own instrument (``Engine.replan_ns``) reads the time from that
stamp to the end of the engine step that took it in, when the planner's commit has been
handed to the scheduler (the rest of the lookahead is sampled after that). The clock
is a manual one re-anchored at every note so that the note's real arrival time falls on
its musical tick; between notes the planner advances in 2 ms steps of musical time.

    python -m benchmarks.replan [--model NAME] [--notes N] [--all] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np

from benchmarks.common import percentile, summary_ms
from livegen.engine.accompany import AccompanyPlanner, AccompanySettings
from livegen.engine.clock import ManualClock
from livegen.engine.jam import sampling_params
from livegen.engine.live import LiveParams
from livegen.models.registry import load_generator
from livegen.models.step import StepEvent
from livegen.music.events import note_off, note_on
from livegen.music.time import PPQN

EIGHTH = PPQN // 2
STEP_TICKS = 2 * PPQN * 2 // 1000  # 2 ms of musical time at 120 BPM (960 ticks per second)


def measure(model: str, notes: int, seed: int = 0) -> dict[str, float]:
    package, generator = load_generator(model)
    live = LiveParams(sampling=sampling_params(package, None, None))
    rng = np.random.default_rng(seed)
    planner = AccompanyPlanner(generator, live, rng, AccompanySettings(listen_beats=0))
    scale = [60, 62, 64, 65, 67, 69, 71, 72]
    replan_ns: list[int] = []
    tick = 0
    for i in range(notes):
        pitch = scale[(i * 3) % len(scale)]
        started = time.perf_counter_ns()
        planner.on_input(note_on(tick, 0, pitch, 90))
        replan_ns.append(time.perf_counter_ns() - started)
        for t in range(tick, tick + EIGHTH, max(1, STEP_TICKS)):
            planner.advance(t)
            planner.plan_ahead(t)
            if t == tick + EIGHTH // 2:
                planner.on_input(note_off(t, 0, pitch))
        tick += EIGHTH
    step_ns = []
    generator.reset()
    generator.feed(StepEvent(60, 0, EIGHTH))
    for _ in range(500):
        started = time.perf_counter_ns()
        event = generator.sample(live.sampling, rng)
        generator.feed(event)
        step_ns.append(time.perf_counter_ns() - started)
    replan_ms = [ns / 1e6 for ns in replan_ns[8:]]  # the first notes warm up onnxruntime
    step_ms = statistics.median(step_ns) / 1e6
    return {
        "replan_p50_ms": percentile(replan_ms, 0.5),
        "replan_p99_ms": percentile(replan_ms, 0.99),
        "replan_max_ms": max(replan_ms),
        "model_step_p50_ms": step_ms,
        "replan_p50_in_model_steps": percentile(replan_ms, 0.5) / step_ms,
        "replan_p99_in_model_steps": percentile(replan_ms, 0.99) / step_ms,
        "notes": float(len(replan_ms)),
    }


class _AnchoredClock(ManualClock):
    """A manual clock whose timeline can be re-anchored so that real "now" is a given tick."""

    def anchor(self, tick: int) -> None:
        now = time.perf_counter_ns()
        self.start_ns = now - self.tempo.tick_to_ns(tick)
        self._now = now

    def set_ns(self, ns: int) -> None:
        self._now = ns


def measure_reaction(model: str, notes: int, seed: int = 0) -> dict[str, Any]:
    """Performer note-on in (stamped) -> the re-plan committed, through the Engine."""
    from livegen.engine.scheduler import Scheduler
    from livegen.engine.session import MODEL_TRACK, PERFORMER_TRACK, Engine
    from livegen.io.recorder import MidiRecorder
    from livegen.music.time import TempoMap

    package, generator = load_generator(model)
    live = LiveParams(sampling=sampling_params(package, None, None))
    planner = AccompanyPlanner(generator, live, np.random.default_rng(seed), AccompanySettings(listen_beats=0))
    tempo = TempoMap.constant(120)
    clock = _AnchoredClock(tempo, start_ns=0)
    scheduler = Scheduler([[], [], []], tick_of=clock.ns_to_tick)
    engine = Engine(planner, clock, scheduler, MidiRecorder((PERFORMER_TRACK, MODEL_TRACK)))
    scale = [60, 62, 64, 65, 67, 69, 71, 72]
    tick = 0
    for i in range(notes):
        pitch = scale[(i * 3) % len(scale)]
        clock.anchor(tick)
        engine.on_midi((0x90, pitch, 90), time.perf_counter_ns())
        engine.step()
        scheduler.run_until(clock.now_ns())
        for t in range(tick + STEP_TICKS, tick + EIGHTH, max(1, STEP_TICKS)):
            clock.set_tick(t)
            if t >= tick + EIGHTH // 2 and t - STEP_TICKS < tick + EIGHTH // 2:
                engine.on_midi((0x80, pitch, 0), clock.now_ns())
            engine.step()
            scheduler.run_until(clock.now_ns())
        tick += EIGHTH
    reaction = engine.replan_ns()[8:]  # the first notes warm up onnxruntime
    step_ns = []
    generator.reset()
    generator.feed(StepEvent(60, 0, EIGHTH))
    rng = np.random.default_rng(seed)
    for _ in range(200):
        started = time.perf_counter_ns()
        event = generator.sample(live.sampling, rng)
        generator.feed(event)
        step_ns.append(time.perf_counter_ns() - started)
    step_ms = statistics.median(step_ns) / 1e6
    out: dict[str, Any] = {
        "family": package.manifest.family,
        "kind": package.manifest.kind,
        **{f"reaction_{k}": v for k, v in summary_ms(reaction).items()},
        "model_step_p50_ms": round(step_ms, 4),
    }
    if reaction:
        out["reaction_p50_in_model_steps"] = round(percentile(reaction, 0.5) / 1e6 / step_ms, 2)
    return out


def measure_all(quick: bool = False, notes: int = 400) -> dict[str, Any]:
    """Item 4: reaction per bundled model (p50, p99); the target applies to ``step`` models."""
    from livegen.models.manifest import MANIFEST, parse_manifest
    from livegen.models.registry import bundled_packages

    notes = min(notes, 24) if quick else notes
    results: dict[str, Any] = {"notes_per_model": notes, "target_p99_ms_step_models": 2.0, "models": {}}
    for folder in bundled_packages():
        name = parse_manifest(folder / MANIFEST).name
        try:
            results["models"][name] = measure_reaction(name, notes)
        except Exception as err:  # one model failing must not hide the others
            results["models"][name] = {"error": f"{type(err).__name__}: {err}"}
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", default="folk-lstm")
    parser.add_argument("--notes", type=int, default=400)
    parser.add_argument("--all", action="store_true", help="item 4: reaction through the Engine, every bundled model")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.all:
        print(json.dumps(measure_all(args.quick, args.notes), indent=2))
        return
    result = measure(args.model, args.notes)
    print(f"accompaniment re-plan, {args.model}, {int(result['notes'])} performed notes:")
    print(
        f"  note -> new plan: p50 {result['replan_p50_ms']:.3f} ms, p99 {result['replan_p99_ms']:.3f} ms, "
        f"max {result['replan_max_ms']:.3f} ms"
    )
    print(
        f"  one model step {result['model_step_p50_ms']:.3f} ms; a re-plan is "
        f"{result['replan_p50_in_model_steps']:.1f} steps (p50), {result['replan_p99_in_model_steps']:.1f} (p99)"
    )


if __name__ == "__main__":
    main()
