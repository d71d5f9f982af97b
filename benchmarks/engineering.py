"""The engine's timing work, each change measured before and after, side by side in one run.

Context: setup (a benchmark).

Each experiment runs its variants alternately, in rounds, in one process, so that a
change of load on a noisy machine hits every variant alike:

- ``switch_interval``: the interpreter's thread switch interval (how long the control
  thread may keep the GIL when the scheduler wants it): Python's 5 ms, 0.5 ms (what
  ``run_jam`` sets), 0.1 ms; item 1's run under load (hog + garbage).
- ``realtime``: the scheduler thread as an ordinary thread or with SCHED_FIFO; item 1's
  run idle and under load.
- ``gc``: ``gc.freeze()`` after setup, alone and with a generation-0 threshold of
  10 000 (fewer, larger young collections), against the defaults; item 1 under load.
- ``spin``: the scheduler's sleep-then-spin, spinning the last 0.3 ms (as shipped) or
  1 ms; item 1 under load.
- ``control_priority``: the control thread (planner, inference) at nice 0 or -10: the
  scheduler waits for the GIL whenever the control thread holds it, and a control thread
  preempted by other processes while holding it delays every send; item 1 under load.
- ``burst``: sending everything due in one burst or one message per loop; item 6's
  voices at a few counts, maximum lateness.
- ``burst_micro``: the scheduler alone, 128 messages due at one deadline to an output
  that does nothing: how late the last one goes out, burst against one per loop.
- ``jack_probe_reuse``: a jam's cold start (item 8's first note) with the JACK server
  probed twice (choosing the API, opening the port) or once (a good probe reused for
  2 s); alternating runs.
- ``onnxruntime``: session options for a folk-lstm and a token-lstm step: graph
  optimisation level (all, extended, basic, none), and the thread pool's spinning.

    python -m benchmarks.engineering [--quick] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np

from benchmarks.common import JackServer, jack_env, loadavg, summary_ms
from benchmarks.onset import Tuning, run


def _ab(variants: dict[str, Tuning], *, hog: bool, events: int, rounds: int) -> dict[str, Any]:
    raw: dict[str, list[int]] = {name: [] for name in variants}
    realtime: dict[str, bool] = {}
    late_commits: dict[str, int] = dict.fromkeys(variants, 0)
    with JackServer() as server:
        for _ in range(rounds):
            for name, tuning in variants.items():
                result = run(server, events, hog=hog, tuning=tuning, raw=True)
                raw[name] += result["raw_ns"]
                realtime[name] = result["scheduler_realtime"]
                late_commits[name] += result["committed_after_deadline"]
    out: dict[str, Any] = {"hog": hog, "rounds": rounds}
    for name, values in raw.items():
        out[name] = {**summary_ms(values), "over_1ms": sum(1 for v in values if v > 1_000_000)}
        out[name]["committed_after_deadline"] = late_commits[name]
        out[name]["scheduler_realtime"] = realtime[name]
    out["loadavg"] = loadavg()
    return out


def switch_interval(events: int, rounds: int) -> dict[str, Any]:
    variants = {
        "5ms (Python default)": Tuning(switch_interval_s=0.005),
        "0.5ms (run_jam)": Tuning(switch_interval_s=0.0005),
        "0.1ms": Tuning(switch_interval_s=0.0001),
    }
    return _ab(variants, hog=True, events=events, rounds=rounds)


def realtime(events: int, rounds: int) -> dict[str, Any]:
    variants = {"ordinary thread": Tuning(rt_priority=None), "SCHED_FIFO 5": Tuning(rt_priority=5)}
    return {
        "idle": _ab(variants, hog=False, events=events, rounds=rounds),
        "hog": _ab(variants, hog=True, events=events, rounds=rounds),
    }


def control_priority(events: int, rounds: int) -> dict[str, Any]:
    variants = {"control thread nice 0": Tuning(control_nice=None), "control thread nice -10": Tuning(control_nice=-10)}
    return _ab(variants, hog=True, events=events, rounds=rounds)


def gc_tuning(events: int, rounds: int) -> dict[str, Any]:
    variants = {
        "default gc": Tuning(gc_freeze=False, gc_threshold0=None),
        "gc.freeze": Tuning(gc_freeze=True, gc_threshold0=None),
        "gc.freeze + threshold0 10000 (shipped)": Tuning(gc_freeze=True, gc_threshold0=10_000),
    }
    return _ab(variants, hog=True, events=events, rounds=rounds)


def spin(events: int, rounds: int) -> dict[str, Any]:
    variants = {"spin 0.3ms (shipped)": Tuning(spin_ns=300_000), "spin 1ms": Tuning(spin_ns=1_000_000)}
    return _ab(variants, hog=True, events=events, rounds=rounds)


def inference_process(events: int, rounds: int) -> dict[str, Any]:
    variants = {"in-process (shipped default)": Tuning(worker=False), "worker process (--worker)": Tuning(worker=True)}
    return _ab(variants, hog=True, events=events, rounds=rounds)


def burst(seconds: float, counts: tuple[int, ...], rounds: int) -> dict[str, Any]:
    from benchmarks import capacity
    from livegen.io import midi_output

    out: dict[str, Any] = {}
    with JackServer() as server:
        with jack_env(server):
            port = midi_output.open_output("livegen", api="jack", virtual=True)
        try:
            for n in counts:
                row: dict[str, list[float]] = {"one per loop": [], "burst": []}
                for _ in range(rounds):
                    for name, flag in (("one per loop", False), ("burst", True)):
                        result = capacity.run(port, n, seconds, scheduler_kwargs={"burst": flag})
                        row[name].append(result.get("max_ms", float("nan")))
                out[f"{n} voices"] = {k: {"max_ms_per_round": v, "worst_ms": max(v)} for k, v in row.items()}
        finally:
            port.close()
    out["loadavg"] = loadavg()
    return out


def jack_probe_reuse(runs: int) -> dict[str, Any]:
    import tempfile
    from pathlib import Path

    from benchmarks.startup import first_note

    variants = {
        "probe twice (PROBE_REUSE_S = 0)": "import livegen.io.midi_api as m\nm.PROBE_REUSE_S = 0.0",
        "reuse a good probe (shipped)": "import livegen.io.midi_api as m",
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    with JackServer() as server, tempfile.TemporaryDirectory(prefix="livegen-bench-probe-") as tmp:
        for k in range(runs):
            for name, prelude in variants.items():
                run_dir = Path(tmp) / f"{k}-{len(times[name])}-{abs(hash(name))}"
                run_dir.mkdir()
                result = first_note(server, run_dir, prelude=prelude)
                if "first_note_s" in result:
                    times[name].append(result["first_note_s"])
    out: dict[str, Any] = {
        name: {"first_note_s": v, "median_s": round(statistics.median(v), 3) if v else None}
        for name, v in times.items()
    }
    out["loadavg"] = loadavg()
    return out


def burst_micro(events: int = 128, rounds: int = 40) -> dict[str, Any]:
    """The scheduler alone: ``events`` messages due at one deadline to an output that
    does nothing; the lateness of the last one, burst against one message per loop."""
    from livegen.engine.scheduler import Scheduled, Scheduler
    from livegen.io.base import MidiOutput

    class Null(MidiOutput):
        def _send(self, data: Any) -> None:
            pass

    last: dict[str, list[int]] = {"one per loop": [], "burst": []}
    for _ in range(rounds):
        for name, flag in (("one per loop", False), ("burst", True)):
            scheduler = Scheduler([[Null()]], tick_of=lambda ns: 0, burst=flag)
            scheduler.start()
            deadline = time.perf_counter_ns() + 20_000_000
            scheduler.submit([Scheduled(deadline, 0, (0x90, 60 + k % 24, 90)) for k in range(events)])
            time.sleep(0.04)
            sent = [s for s in scheduler.drain_sent() if s.deadline_ns == deadline]
            scheduler.stop()
            if len(sent) == events:
                last[name].append(max(s.sent_ns for s in sent) - deadline)
    out: dict[str, Any] = {"events_at_one_deadline": events, "rounds": rounds}
    for name, values in last.items():
        out[name] = {"last_event_late_ms": summary_ms(values)}
        if values:
            out[name]["per_event_us"] = round(statistics.median(values) / events / 1e3, 2)
    out["loadavg"] = loadavg()
    return out


def onnxruntime_options(steps: int, rounds: int) -> dict[str, Any]:
    import onnxruntime as ort

    from livegen.models.manifest import MANIFEST, parse_manifest
    from livegen.models.package import zero_feeds
    from livegen.models.registry import resolve_package

    levels = {
        "all (shipped default)": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }
    out: dict[str, Any] = {}
    for model in ("folk-lstm", "token-lstm"):
        folder = resolve_package(model)
        manifest = parse_manifest(folder / MANIFEST)
        graph = manifest.graphs["step"]
        feeds = zero_feeds(graph)
        if "note" in feeds:
            feeds["note"][:] = 0.5
        sessions = {}
        for name, level in levels.items():
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = level
            options.log_severity_level = 3
            sessions[name] = ort.InferenceSession(str(folder / graph.file), options, providers=["CPUExecutionProvider"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        sessions["all, no spinning"] = ort.InferenceSession(
            str(folder / graph.file), options, providers=["CPUExecutionProvider"]
        )
        times: dict[str, list[int]] = {name: [] for name in sessions}
        outputs = [t.name for t in graph.outputs]
        for session in sessions.values():
            for _ in range(20):
                session.run(outputs, feeds)
        for _ in range(rounds):
            for name, session in sessions.items():
                for _ in range(max(1, steps // rounds)):
                    started = time.perf_counter_ns()
                    session.run(outputs, feeds)
                    times[name].append(time.perf_counter_ns() - started)
        base = statistics.median(times["all (shipped default)"])
        out[model] = {
            name: {
                "p50_ms": round(statistics.median(v) / 1e6, 4),
                "p99_ms": round(float(np.percentile(v, 99)) / 1e6, 4),
                "vs_shipped": round(statistics.median(v) / base, 3),
            }
            for name, v in times.items()
        }
    out["loadavg"] = loadavg()
    return out


EXPERIMENTS = (
    "switch_interval",
    "realtime",
    "gc",
    "spin",
    "inference_process",
    "control_priority",
    "burst",
    "burst_micro",
    "onnxruntime",
    "jack_probe_reuse",
)


def measure(*, quick: bool = False, only: list[str] | None = None) -> dict[str, Any]:
    if JackServer.available():
        return {"skipped": JackServer.available()}
    events, rounds = (200, 1) if quick else (1500, 3)
    chosen = only or list(EXPERIMENTS)
    out: dict[str, Any] = {"quick": quick, "events_per_variant": events * rounds}
    for name in chosen:
        started = time.perf_counter()
        if name == "switch_interval":
            out[name] = switch_interval(events, rounds)
        elif name == "realtime":
            out[name] = realtime(events, rounds)
        elif name == "gc":
            out[name] = gc_tuning(events, rounds)
        elif name == "spin":
            out[name] = spin(events, rounds)
        elif name == "inference_process":
            out[name] = inference_process(events, rounds)
        elif name == "control_priority":
            out[name] = control_priority(events, rounds)
        elif name == "burst":
            out[name] = burst(1.5 if quick else 6.0, (8, 32) if quick else (16, 32, 64, 96), 1 if quick else 2)
        elif name == "burst_micro":
            out[name] = burst_micro(128, 10 if quick else 40)
        elif name == "jack_probe_reuse":
            out[name] = jack_probe_reuse(1 if quick else 4)
        elif name == "onnxruntime":
            out[name] = onnxruntime_options(400 if quick else 6000, 2 if quick else 6)
        else:
            out[name] = {"error": f"unknown experiment; expected one of {', '.join(EXPERIMENTS)}"}
        out[name]["elapsed_s"] = round(time.perf_counter() - started, 1)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="+", choices=EXPERIMENTS)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    result = measure(quick=args.quick, only=args.only)
    text = json.dumps(result, indent=2)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
