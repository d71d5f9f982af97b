"""Re-plan time of accompaniment: a performed note in, the new plan in place.

Runs the bundled model (or ``--model``) in an :class:`AccompanyPlanner` on a manual
timeline: a performer plays an eighth-note line for ``--notes`` notes while the planner
advances every 2 ms of musical time, and each note-on is timed from the call to
``on_input`` until the plan up to the lookahead is rebuilt (the fold at the note's
place in time, the committed notes fed again, the rest sampled afresh). Beside it, in
the same run, one model step (feed and sample) as the unit: the ratio says how many
model steps a re-plan costs, which carries across machines better than milliseconds.

    python -m benchmarks.replan [--model NAME] [--notes N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from livegen.engine.accompany import AccompanyPlanner, AccompanySettings
from livegen.engine.jam import load_generator, sampling_params
from livegen.engine.live import LiveParams
from livegen.models.step import StepEvent
from livegen.music.time import PPQN

EIGHTH = PPQN // 2
STEP_TICKS = 2 * PPQN * 2 // 1000  # 2 ms of musical time at 120 BPM (960 ticks per second)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


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
        planner.on_input(tick, (0x90, pitch, 90))
        replan_ns.append(time.perf_counter_ns() - started)
        for t in range(tick, tick + EIGHTH, max(1, STEP_TICKS)):
            planner.advance(t)
            if t == tick + EIGHTH // 2:
                planner.on_input(t, (0x80, pitch, 0))
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", default="folk-lstm")
    parser.add_argument("--notes", type=int, default=400)
    args = parser.parse_args(argv)
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
