"""The ``livegen`` command.

Context: setup. The only place that configures logging and turns a
:class:`~livegen.errors.LivegenError` into a one-line message and a non-zero exit
(no traceback for a user's mistake). Lines that may hold text from a file (the jam's
report, a manifest's fields, an error) are printed through
:func:`~livegen.printable.printable`, and every log handler formats with
:class:`~livegen.printable.PrintableFormatter`, so control characters are escaped.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livegen.errors import LivegenError
from livegen.printable import PrintableFormatter, printable

if TYPE_CHECKING:
    from livegen.engine.config import JamConfig

log = logging.getLogger("livegen")
#: The jam's report (the lines it prints): only a ``--log-file`` handler listens to it.
report = logging.getLogger("livegen.report")
report.propagate = False
report.setLevel(logging.INFO)
report.addHandler(logging.NullHandler())

EXIT_USER_ERROR = 2


def _print(line: str) -> None:
    """Print a line that may hold text from a file, its control characters escaped."""
    print(printable(line))


def _say(line: str) -> None:
    """Print a report line, and write it to the log file when there is one."""
    print(printable(line), flush=True)
    report.info(line.removeprefix("livegen: "))


@contextmanager
def _log_file(config: JamConfig, *, verbose: bool) -> Iterator[None]:
    """With ``config.log_file``: livegen's log (INFO and up, DEBUG with -v) and the jam's report also
    go to that file, rotated at ``log_max_bytes`` keeping ``log_backups`` old files; the console
    keeps its level. Errors that end the jam are written there too."""
    if config.log_file is None:
        yield
        return
    from livegen.engine.logfile import rotating_handler

    handler = rotating_handler(config.log_file, config.log_max_bytes, config.log_backups, out_dir=config.out_dir)
    handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    root = logging.getLogger()
    saved = root.level, [(h, h.level) for h in root.handlers]
    for console, level in saved[1]:
        if level == logging.NOTSET:
            console.setLevel(root.level)  # the console shows what it showed before
    root.setLevel(min(root.level, handler.level))
    root.addHandler(handler)
    report.addHandler(handler)
    try:
        yield
    except LivegenError as err:
        report.error("error: %s", err)
        raise
    except BaseException as err:
        report.error("stopped: %r", err)
        raise
    finally:
        report.removeHandler(handler)
        root.removeHandler(handler)
        root.setLevel(saved[0])
        for console, level in saved[1]:
            console.setLevel(level)
        handler.close()


#: The jam's options a render takes too.
RENDER_SAMPLING = ("temperature", "top_p", "rng_seed", "candidates", "key", "pitch_range")


def build_parser() -> argparse.ArgumentParser:
    from livegen.engine.config import JamConfig
    from livegen.engine.options import add_arguments

    parser = argparse.ArgumentParser(prog="livegen", description="A real-time generative music instrument.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    jam = sub.add_parser("jam", help="play live: livegen listens and answers")
    jam.add_argument("--preset", help="a preset name (presets/NAME.toml) or TOML file")
    add_arguments(jam, JamConfig)

    render = sub.add_parser("render", help="perform a seed phrase and the model's answer offline")
    render.add_argument("--model", default="folk-lstm")
    render.add_argument("--seed-file", type=Path, required=True, metavar="F.mid")
    render.add_argument("--bars", type=int, required=True)
    render.add_argument("--out", type=Path, required=True, metavar="O.mid")
    render.add_argument("--wav", type=Path, metavar="O.wav")
    render.add_argument("--tempo", type=float)
    render.add_argument("--silence", type=float, dest="silence_beats", default=2.0)
    render.add_argument("--soundfont")
    add_arguments(render, JamConfig, RENDER_SAMPLING)

    models = sub.add_parser("models", help="list, describe and verify model packages")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    msub.add_parser("list", help="the bundled models")
    info = msub.add_parser("info", help="a model's manifest and card summary")
    info.add_argument("name")
    verify = msub.add_parser("verify", help="run every package check")
    verify.add_argument("path")

    evaluate = sub.add_parser(
        "evaluate",
        help="score a model's (or a MIDI folder's) continuations against a reference set and two baselines",
        description="Generate continuations of held-out seed phrases and compare them with a reference set "
        "(MGEval overlap and KL per feature, the seed-000 chart) beside a random-notes and a repeat-the-seed "
        "baseline. See docs/evaluation.md.",
    )
    evaluate.add_argument("--model", help="bundled model name or package path")
    evaluate.add_argument(
        "--midi", type=Path, metavar="DIR", help="a folder of MIDI files: 2 bars of seed, then the continuation"
    )
    evaluate.add_argument(
        "--reference",
        metavar="SPEC",
        help="corpus:folk, corpus:bach or a MIDI folder "
        "(default: the seeds' own continuations; corpus:folk with --midi)",
    )
    evaluate.add_argument(
        "--gate",
        action="store_true",
        help="the quality gate: failure metrics per answer in call-and-response and accompany, three baselines, "
        "held-out likelihood; exits 1 when a check fails (docs/evaluation.md)",
    )
    evaluate.add_argument(
        "--seeds", type=int, metavar="N", help="seed phrases to continue (default 32; 64 with --gate)"
    )
    evaluate.add_argument("--bars", type=int, metavar="N", help="bars of each continuation (default 16; 8 with --gate)")
    evaluate.add_argument(
        "--rng-seeds",
        type=int,
        dest="rng_seeds",
        default=3,
        metavar="N",
        help="--gate: draws of every answer (default 3)",
    )
    evaluate.add_argument(
        "--record",
        action="store_true",
        help="--gate: write the result into the package's livegen.toml as [gate] (passed or experimental)",
    )
    evaluate.add_argument(
        "--rng-seed", type=int, dest="rng_seed", default=0, help="seed of every random draw (default 0)"
    )
    evaluate.add_argument(
        "--json", type=Path, dest="json_path", metavar="FILE", help="write the report as JSON to FILE"
    )
    evaluate.add_argument("--png", type=Path, metavar="FILE", help="the PNG sheet (default out/evaluate-NAME.png)")
    evaluate.add_argument("--temperature", type=float, help="sampling temperature (model's default if omitted)")
    evaluate.add_argument(
        "--top-p", type=float, dest="top_p", help="nucleus sampling mass (model's default if omitted)"
    )
    evaluate.add_argument(
        "--candidates",
        type=int,
        metavar="K",
        help="block models that do not read the performer: blocks drawn per block (default 8)",
    )
    evaluate.add_argument(
        "--split",
        choices=("held-out", "validation"),
        default="held-out",
        help="which unseen split of the model's training corpus gives seeds and reference: held-out (default) "
        "to report, validation to tune sampling defaults without looking at held-out",
    )

    learn = sub.add_parser(
        "learn",
        help="bind the next knob, fader or button you move to a jam parameter in a preset",
        description="Wait until a control (a MIDI CC) moves on the input port, then write PARAM = CC into the "
        "preset's [controls] table, keeping everything else in the file as it was.",
    )
    learn.add_argument(
        "param",
        metavar="PARAM",
        help="temperature, top-p, density, response-bars, mode, model, panic or record",
    )
    learn.add_argument("--preset", type=Path, required=True, metavar="FILE", help="the .toml preset to write into")
    learn.add_argument("--in", dest="input", metavar="PORT", help="MIDI input port (default: first keyboard found)")
    learn.add_argument("--midi-api", choices=["alsa", "jack", "coremidi", "winmm"], help="MIDI backend")
    learn.add_argument("--timeout", type=float, default=60.0, metavar="S", help="seconds to wait (default 60)")

    bench = sub.add_parser(
        "bench",
        help="measure latency, jitter, inference, capacity and start-up (the benchmarks/ suite)",
        description="Run the benchmark suite of a source checkout (benchmarks/): onset error at the port, "
        "reaction, inference against PyTorch, capacity, start-up and memory, the built-in synth, the view "
        "from a separate JACK client and the Notochord peer. Figures, not pass/fail.",
    )
    bench.add_argument("--quick", action="store_true", help="short runs, to check that everything works")
    bench.add_argument("--json", type=Path, dest="json_path", metavar="FILE", help="write every figure as JSON to FILE")
    bench.add_argument(
        "--only",
        action="append",
        metavar="ITEMS",
        help="items to run, by number or name, comma-separated: 1 onset, 2 outside, 3 synth, 4 reaction, "
        "5 inference, 6 capacity, 7 peer, 8 startup (default: all)",
    )

    soak = sub.add_parser(
        "soak",
        help="play autonomously for hours (simulated, or in real time) and check drift, memory and stuck notes",
        description="The soak test of an installation. By default an accelerated run: the engine, the "
        "autonomous planner, the scheduler and the recording on a simulated clock, as fast as inference goes "
        "(24 simulated hours take a few minutes). With --realtime, a real autonomous jam (its preset's ports or "
        "synth) for that wall time. Both print beat drift, the memory slope after warm-up, stuck notes "
        "and whether the recording holds every note; the exit status is 1 when a check fails.",
    )
    soak.add_argument("--hours", type=float, default=24.0, help="(simulated) hours to play (default 24)")
    soak.add_argument("--realtime", action="store_true", help="a real jam on the wall clock instead of a simulated one")
    soak.add_argument("--json", type=Path, dest="json_path", metavar="FILE", help="write every figure as JSON to FILE")
    soak.add_argument("--model", help="bundled model name or package path (default folk-lstm)")
    soak.add_argument("--preset", help="--realtime: the jam's preset (e.g. installation); its mode becomes autonomous")
    soak.add_argument("--tempo", type=float, help="BPM (default: the seed phrase's)")
    soak.add_argument("--out-dir", type=Path, dest="out_dir", default=Path("out/soak"), help="recordings (out/soak)")
    soak.add_argument(
        "--part-minutes", type=float, dest="part_minutes", default=15.0, metavar="M", help="recording parts (15)"
    )
    soak.add_argument(
        "--sample-minutes", type=float, dest="sample_minutes", metavar="M", help="memory sample period (run / 144)"
    )
    soak.add_argument(
        "--warmup-hours",
        type=float,
        dest="warmup_hours",
        metavar="H",
        help="left out of the slope (default: run / 5, at most 1, and at least until two parts are written "
        "and the first visitor answered)",
    )
    soak.add_argument(
        "--visitor-minutes",
        type=float,
        dest="visitor_minutes",
        default=30.0,
        metavar="M",
        help="accelerated: a visitor plays the seed phrase every M simulated minutes (default 30; 0: never)",
    )
    soak.add_argument(
        "--max-slope",
        type=float,
        dest="max_slope",
        default=1.0,
        metavar="MB",
        help="fail when anonymous resident memory grows faster than MB per hour after warm-up (default 1)",
    )
    soak.add_argument("--rng-seed", type=int, dest="rng_seed", default=0, help="accelerated: sampler seed (0)")

    sub.add_parser("ports", help="MIDI APIs and ports, audio devices")
    sub.add_parser("doctor", help="what works on this machine and what to install")
    return parser


def _cmd_jam(args: argparse.Namespace) -> int:
    from livegen.engine.config import JamConfig
    from livegen.engine.options import given
    from livegen.engine.preset import make_config

    overrides = given(args, JamConfig)
    config = make_config(args.preset, overrides)
    with _log_file(config, verbose=args.verbose):
        return _play(config)


def _play(config: JamConfig) -> int:
    """Run the jam and report it (on stdout and, with ``--log-file``, in the log)."""
    from livegen.engine.jam import run_jam
    from livegen.engine.scheduler import STALE_NS
    from livegen.models.registry import experimental_warning

    if config.health_port:
        host = f"[{config.health_host}]" if ":" in config.health_host else config.health_host
        _say(f"livegen: health endpoint: http://{host}:{config.health_port}/healthz and /metrics")
    _say(f"livegen: jamming with {config.model} ({config.mode}); Ctrl-C stops")
    if (experimental := experimental_warning(config.model)) is not None:
        _say(f"livegen: warning: {experimental}")
    if config.clock == "midi":
        source = config.clock_input or ("'livegen in'" if config.input in (None, "virtual") else config.input)
        _say(f"livegen: following MIDI clock on {source}: plays after the DAW's Start")
    result = run_jam(config)
    for warning in result.warnings:
        _say(f"livegen: note: {warning}")
    _say(f"livegen: input: {result.input_name}")
    for output in result.outputs:
        _say(f"livegen: output: {output}")
    _say(
        f"livegen: {result.notes_performed} notes performed, {result.notes_generated} generated "
        f"in {result.responses} answer(s); late sends: {result.late} (max {result.max_late_ms:.2f} ms)"
    )
    if result.replan_ms:
        ordered = sorted(result.replan_ms)
        p50, p99 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        _say(f"livegen: note to new plan: p50 {p50:.2f} ms, p99 {p99:.2f} ms over {len(ordered)} notes")
    if result.send_errors:
        _say(f"livegen: warning: {result.send_errors} message(s) could not be sent (a port or server went away)")
    if result.write_errors:
        _say(f"livegen: warning: {result.write_errors} write(s) of the recording failed and were tried again (see log)")
    if result.port_losses:
        _say(
            f"livegen: warning: MIDI ports went away {result.port_losses} time(s) and played again "
            f"{result.reconnects} time(s)"
        )
    if result.late_steps:
        _say(f"livegen: {result.late_steps} note(s) skipped: the model planned them after their time")
    if result.stale:
        resynced = f"; clock receivers re-synchronised {result.resyncs} time(s)" if result.resyncs else ""
        _say(
            f"livegen: warning: {result.stale} note(s) and clock pulse(s) not played: the process was held "
            f"up and they were over {STALE_NS // 1_000_000} ms past their time{resynced}"
        )
    if result.input_dropped:
        _say(
            f"livegen: {result.input_dropped} performed message(s) dropped: they came faster than "
            "hands play (a flood); the recording marks where"
        )
    if result.worker_restarts:
        _say(f"livegen: warning: the inference worker restarted {result.worker_restarts} time(s) after a crash or hang")
    if result.skipped_steps:
        _say(
            f"livegen: warning: {result.skipped_steps} model step(s) skipped: over the time or memory budget, "
            "or NaN in the model's outputs (the log says which)"
        )
    if config.clock != "internal":
        _say(f"livegen: clock: {config.clock}, tempo at the end {result.tempo_bpm:.2f} BPM")
    if result.reseeds:
        _say(f"livegen: reseeded {result.reseeds} time(s) out of a loop or silence")
    for change in result.changes:
        _say(f"livegen: live: {change}")
    for take in result.takes:
        _say(f"livegen: take: {take}")
    if result.parts:
        _say(f"livegen: MIDI recording: {len(result.parts)} parts, {result.parts[0]} to {result.parts[-1]}")
    else:
        _say(f"livegen: MIDI recording: {result.midi_path}")
    if result.wav_path:
        _say(f"livegen: audio: {result.wav_path}")
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    from livegen.engine.callresponse import CallResponseSettings
    from livegen.engine.checks import check_midi_name, check_rng_seed, check_tempo
    from livegen.engine.jam import render_wav, sampling_params
    from livegen.engine.render import render_call_response
    from livegen.engine.session import MODEL_TRACK, PERFORMER_TRACK
    from livegen.models.budget import offline_budget
    from livegen.models.registry import load_generator
    from livegen.music.midifile import read_midi, write_midi
    from livegen.music.time import TempoMap

    if args.bars < 1:
        raise LivegenError(f"--bars {args.bars}: expected 1 or more")
    if args.tempo is not None:
        check_tempo(args.tempo)
    if args.rng_seed is not None:
        check_rng_seed(args.rng_seed)
    check_midi_name(args.out, "--out", " (the audio goes to --wav O.wav)")
    if args.wav is not None and args.wav.suffix.lower() != ".wav":
        raise LivegenError(f"--wav {args.wav}: expected a WAV file name ending in .wav (the MIDI goes to --out)")
    song = read_midi(args.seed_file)
    if not song.notes:
        raise LivegenError(f"{args.seed_file}: the seed phrase holds no notes")
    if args.soundfont or args.wav:
        from livegen.io.soundfont import find_soundfont

        find_soundfont(args.soundfont)
    package, generator = load_generator(args.model)
    params = sampling_params(
        package, args.temperature, args.top_p, key=args.key, pitch_range=args.pitch_range, candidates=args.candidates
    )
    tempo = TempoMap.constant(args.tempo) if args.tempo is not None else TempoMap((song.tempo.changes[0],))
    settings = CallResponseSettings(
        silence_beats=args.silence_beats, beats_per_bar=song.beats_per_bar, follow_key=args.key is None
    )
    started = time.perf_counter()
    with offline_budget():  # a render is deterministic: no step is skipped for being slow
        performance = render_call_response(
            generator,
            song.notes,
            tempo=tempo,
            params=params,
            rng_seed=args.rng_seed if args.rng_seed is not None else 0,
            settings=settings,
            response_bars=args.bars,
        )
    elapsed = time.perf_counter() - started
    write_midi(
        args.out,
        {PERFORMER_TRACK: performance.performer, MODEL_TRACK: performance.model},
        tempo=tempo,
        beats_per_bar=song.beats_per_bar,
    )
    print(
        f"livegen: {len(performance.performer)} seed notes, {len(performance.model)} generated "
        f"in {elapsed * 1000:.0f} ms -> {args.out}"
    )
    if args.wav:
        render_wav(performance.sent, 0, args.wav, soundfont=args.soundfont, programs={0: 0, 1: 0})
        print(f"livegen: audio -> {args.wav}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from livegen.models.manifest import MANIFEST, parse_manifest
    from livegen.models.package import load_package
    from livegen.models.registry import DEFAULT_MODEL, bundled_packages, gate_text, resolve_package

    if args.models_command == "list":
        _print(f"  {'model':<16} {'family':<14} {'kind':<6} {'version':<8} {'quality gate':<18} description")
        for folder in bundled_packages():
            m = parse_manifest(folder / MANIFEST)
            mark = "*" if m.name == DEFAULT_MODEL else " "
            _print(
                f"{mark} {m.name:<16} {m.family:<14} {m.kind:<6} {m.version:<8} {gate_text(m.gate):<18} {m.description}"
            )
        _print("* the default model; the quality gate is `livegen evaluate --gate --model NAME` (docs/evaluation.md)")
        return 0
    if args.models_command == "info":
        package = load_package(resolve_package(args.name))
        m = package.manifest
        _print(f"{m.name} {m.version}: {m.description}")
        _print(f"  family {m.family}, kind {m.kind}, folder {package.folder}")
        for role, graph in m.graphs.items():
            ins = ", ".join(f"{t.name}{list(t.shape)}" for t in graph.inputs)
            outs = ", ".join(f"{t.name}{list(t.shape)}" for t in graph.outputs)
            _print(f"  graph {role} ({graph.file}): {ins} -> {outs}")
        for p in m.parameters.values():
            _print(f"  parameter {p.name}: default {p.default} (range {p.min} to {p.max})")
        _print(
            f"  quality gate: {gate_text(m.gate)}"
            + (f"; failed: {', '.join(m.gate.failed)}" if m.gate and m.gate.failed else "")
        )
        for key, value in m.metrics.items():
            _print(f"  metric {key}: {value:.6g}")
        for key, value in m.training.items():
            _print(f"  training {key}: {value}")
        return 0
    from livegen.models.package import read_package
    from livegen.models.trial import verify_in_child

    verify_in_child(Path(args.path))
    package = read_package(Path(args.path))
    _print(
        f"{package.folder}: {package.name} {package.manifest.version} verified (manifest, checksums, "
        "onnx.checker, tensor names and shapes, trial inference on zeros, the seed phrase played through "
        "its adapter within the time and memory budget)"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from livegen.eval.report import print_report, write_json
    from livegen.eval.runner import EvalOptions, run_evaluation
    from livegen.eval.sheet import draw_sheet, pyplot

    if args.gate:
        return _gate(args)
    options = EvalOptions(
        model=args.model,
        midi=args.midi,
        reference=args.reference,
        seeds=32 if args.seeds is None else args.seeds,
        bars=16 if args.bars is None else args.bars,
        rng_seed=args.rng_seed,
        temperature=args.temperature,
        top_p=args.top_p,
        candidates=args.candidates,
        split=args.split,
    )
    if args.json_path is not None and args.json_path.is_dir():
        raise LivegenError(f"--json {args.json_path}: is a folder; expected a file name such as out/eval.json")
    pyplot()  # a missing matplotlib fails now, not after the run
    console = Console()
    started = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("generating continuations", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        evaluation = run_evaluation(options, progress=advance)
    elapsed = time.perf_counter() - started
    print_report(evaluation, console)
    if args.json_path is not None:
        print(f"livegen: JSON report -> {write_json(evaluation, args.json_path).resolve()}")
    png = args.png or Path("out") / f"evaluate-{evaluation.subject}.png"
    print(f"livegen: PNG sheet -> {draw_sheet(evaluation, png).resolve()}")
    print(f"livegen: evaluated {len(evaluation.samples)} seeds in {elapsed:.1f} s")
    return 0


def _gate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from livegen.eval.gate import GateOptions, run_gate
    from livegen.eval.gate_report import print_gate, record_gate, write_gate_json
    from livegen.eval.gate_sheet import draw_gate_sheet
    from livegen.models.registry import resolve_package

    if args.model is None or args.midi is not None:
        raise LivegenError("evaluate --gate judges a model: give --model NAME (and no --midi)")
    unused = [
        flag
        for flag, value in (
            ("--reference", args.reference),
            ("--temperature", args.temperature),
            ("--top-p", args.top_p),
            ("--candidates", args.candidates),
        )
        if value is not None
    ]
    if unused or args.split != "held-out":
        raise LivegenError(
            "evaluate --gate judges a model at its shipped defaults on held-out phrases; "
            f"drop {', '.join(unused) or '--split'}"
        )
    options = GateOptions(
        model=args.model,
        seeds=64 if args.seeds is None else args.seeds,
        rng_seeds=args.rng_seeds,
        bars=8 if args.bars is None else args.bars,
        rng_seed=args.rng_seed,
    )
    if args.json_path is not None and args.json_path.is_dir():
        raise LivegenError(f"--json {args.json_path}: is a folder; expected a file name such as out/gate.json")
    console = Console()
    started = time.perf_counter()
    with console.status("quality gate") as status:
        result = run_gate(options, progress=lambda text: status.update(f"quality gate: {text}"))
    print_gate(result, console)
    if args.json_path is not None:
        print(f"livegen: JSON report -> {write_gate_json(result, args.json_path).resolve()}")
    png = args.png or Path("out") / f"gate-{result.model}.png"
    print(f"livegen: piano rolls -> {draw_gate_sheet(result, png).resolve()}")
    if args.record:
        print(f"livegen: gate recorded -> {record_gate(resolve_package(args.model), result).resolve()}")
    print(f"livegen: gate run in {time.perf_counter() - started:.1f} s")
    return 0 if result.passed else 1


def _cmd_learn(args: argparse.Namespace) -> int:
    from livegen.engine.learn import learn

    def listening(port: str) -> None:
        print(f"livegen: move the control for {args.param} on {port!r} (Ctrl-C stops)", flush=True)

    learned = learn(args.param, args.preset, args.input, args.midi_api, args.timeout, on_listening=listening)
    print(f"livegen: bound {learned.describe()}")
    return 0


def _import_suite() -> Any:
    """The benchmarks/ package of the source checkout this livegen runs from."""
    try:
        from benchmarks import suite
    except ImportError:
        checkout = Path(__file__).resolve().parent.parent
        if not (checkout / "benchmarks" / "suite.py").is_file():
            raise LivegenError(
                f"livegen bench runs the benchmarks/ folder of a source checkout; there is none in {checkout}"
            ) from None
        sys.path.insert(0, str(checkout))
        from benchmarks import suite
    return suite


def _cmd_bench(args: argparse.Namespace) -> int:
    suite = _import_suite()
    if args.json_path is not None and args.json_path.is_dir():
        raise LivegenError(f"--json {args.json_path}: is a folder; expected a file name such as out/bench.json")
    try:
        items = suite.select(args.only)
    except ValueError as err:
        raise LivegenError(f"--only: {err}") from err
    report = suite.run_all(items, quick=args.quick)
    suite.print_table(report)
    if args.json_path is not None:
        print(f"livegen: JSON report -> {suite.write_json(report, args.json_path).resolve()}")
    return 0


def _cmd_soak(args: argparse.Namespace) -> int:
    import json

    from livegen.engine.soak import SoakSettings, run_accelerated, run_realtime, summary_lines
    from livegen.models.registry import DEFAULT_MODEL

    if args.json_path is not None and args.json_path.is_dir():
        raise LivegenError(f"--json {args.json_path}: is a folder; expected a file name such as out/soak.json")
    if args.preset and not args.realtime:
        raise LivegenError("--preset: only a --realtime soak plays a preset; the accelerated soak plays --model")
    config = None
    if args.realtime:
        from livegen.engine.preset import make_config

        config = make_config(args.preset, {"model": args.model, "tempo": args.tempo})
    settings = SoakSettings(
        hours=args.hours,
        model=config.model if config is not None else args.model or DEFAULT_MODEL,
        tempo=args.tempo,
        sample_minutes=args.sample_minutes,
        warmup_hours=args.warmup_hours,
        part_minutes=args.part_minutes,
        visitor_minutes=args.visitor_minutes,
        rng_seed=args.rng_seed,
        out_dir=args.out_dir,
        max_slope=args.max_slope,
    )

    def progress(line: str) -> None:
        print(f"livegen: soak: {line}", flush=True)

    kind = "real-time" if args.realtime else "accelerated"
    unit = "hours" if args.realtime else "simulated hours"
    print(f"livegen: {kind} soak of {settings.model}, {settings.hours:g} {unit}; Ctrl-C stops", flush=True)
    if config is not None:
        report = run_realtime(settings, config, progress=progress)
    else:
        report = run_accelerated(settings, progress=progress)
    for warning in report.get("warnings", []):
        print(f"livegen: note: {warning}")
    for line in summary_lines(report):
        print(f"livegen: {line}")
    if args.json_path is not None:
        from livegen.music.atomic import write_atomically

        text = json.dumps(report, indent=1).encode()
        write_atomically(args.json_path, lambda out: out.write(text))
        print(f"livegen: JSON report -> {args.json_path.resolve()}")
    return 0 if report["ok"] else 1


def _cmd_ports(args: argparse.Namespace) -> int:
    from livegen.io import midi_api
    from livegen.io.synth import list_audio_devices

    for api in midi_api.compiled_apis():
        reason = midi_api.probe_api(api)
        if reason:
            print(f"MIDI {api}: unavailable: {reason}")
            continue
        inputs, outputs = midi_api.list_ports(api)
        print(f"MIDI {api}: inputs: {', '.join(inputs) or '(none)'}")
        print(f"MIDI {api}: outputs: {', '.join(outputs) or '(none)'}")
    try:
        devices = list_audio_devices()
    except LivegenError as err:
        print(f"audio: unavailable: {err}")
    else:
        print("audio outputs: " + (", ".join(str(d) for d in devices) or "(none)"))
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from livegen.doctor import run_checks

    problems = 0
    for check in run_checks():
        mark = "ok " if check.ok else "-- "
        print(f"{mark} {check.name}: {check.detail}")
        if not check.ok and check.fix:
            print(f"      fix: {check.fix}")
        problems += 0 if check.ok or not check.required else 1
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = logging.StreamHandler()
    console.setFormatter(PrintableFormatter("livegen: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[console])
    handlers = {
        "jam": _cmd_jam,
        "render": _cmd_render,
        "models": _cmd_models,
        "evaluate": _cmd_evaluate,
        "ports": _cmd_ports,
        "doctor": _cmd_doctor,
        "learn": _cmd_learn,
        "bench": _cmd_bench,
        "soak": _cmd_soak,
    }
    try:
        return handlers[args.command](args)
    except LivegenError as err:
        print(printable(f"livegen: error: {err}"), file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("livegen: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `livegen models info X | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
