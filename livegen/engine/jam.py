"""A live jam: the bundled or chosen model answering, accompanying or playing on its own.

Context: setup (opening the model, ports, synth), then the control loop on the
calling thread; the scheduler, the synth, the seed phrase, a model loading in the
background and the typed-command reader have their own threads. Nothing recorded
is lost on the way out: whatever ends the jam (its natural end, Ctrl-C, SIGTERM,
an error after the start) the scheduler silences what sounds and the MIDI file
is written before the error is reported; ``autosave_seconds`` also rewrites it
periodically for installations that run for days.

A jam that runs for days holds bounded memory: the recording is written in
parts of ``part_minutes`` (:class:`~livegen.io.recorder.RollingRecording`), and without
an audio device the synth renders to its WAV as the jam goes
(:class:`~livegen.io.synth_render.WavStream`), for at most ``wav_minutes``. A jam shorter
than one part writes the same single MIDI file and WAV as ever.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from livegen.engine.accompany import AccompanyPlanner, AccompanySettings
from livegen.engine.admission import InputAdmission
from livegen.engine.autonomous import AutonomousPlanner, AutonomousSettings
from livegen.engine.callresponse import CallResponsePlanner, CallResponseSettings
from livegen.engine.clock import Clock, InternalClock, MidiClockFollower
from livegen.engine.clockout import ClockMaster
from livegen.engine.commands import CommandReader
from livegen.engine.conductor import Conductor
from livegen.engine.config import CANDIDATES_BOUNDS, MODES, VIRTUAL_INPUT, JamConfig, parse_transpose
from livegen.engine.health import Counters, Supervision, model_identity, supervise
from livegen.engine.keyfollow import KeyFollower
from livegen.engine.live import TEMPERATURE_RANGE, TOP_P_RANGE, Generations, LiveParams, check_live
from livegen.engine.planner import Planner
from livegen.engine.scheduler import Scheduler, Sent
from livegen.engine.session import ECHO_GROUP, MODEL_GROUP, MODEL_TRACK, PERFORMER_TRACK, Engine
from livegen.engine.swap import SwappableGenerator
from livegen.engine.worker import PlannerWorker
from livegen.errors import ConfigError, LivegenError
from livegen.io.base import MidiInput, MidiOutput
from livegen.io.destination import check_destination, fallback_folders, prepare_destination
from livegen.io.phrase import PhraseInput
from livegen.io.recorder import MidiRecorder, RollingRecording
from livegen.io.synth_render import WavStream
from livegen.models.budget import stop_runs_on
from livegen.models.package import ModelPackage, read_package
from livegen.models.registry import is_bundled, load_generator, resolve_package
from livegen.models.sampling import DEFAULT_CANDIDATES, SamplingParams, parse_key
from livegen.models.step import StepEvent, StepGenerator, step_events
from livegen.models.trial import start_verification
from livegen.music.events import PROGRAM_CHANGE, Note, notes_to_events
from livegen.music.midifile import Song, read_midi
from livegen.music.time import PPQN, TempoMap

if TYPE_CHECKING:
    from livegen.io.reconnect import PortKeeper
    from livegen.io.synth import LiveSynth

log = logging.getLogger(__name__)


def accompany_settings(config: JamConfig, beats_per_bar: int) -> AccompanySettings:
    return AccompanySettings(
        lookahead_beats=config.lookahead_beats,
        commit_beats=config.commit_beats,
        listen_beats=config.listen_beats,
        beats_per_bar=beats_per_bar,
        channel=config.model_channel,
        follow_key=config.key is None,
        follow_pace=config.follow_pace,
    )


def autonomous_settings(config: JamConfig, beats_per_bar: int) -> AutonomousSettings:
    return AutonomousSettings(
        lookahead_beats=config.lookahead_beats,
        commit_beats=config.commit_beats,
        beats_per_bar=beats_per_bar,
        channel=config.model_channel,
        max_same_pitch=config.max_same_pitch,
        max_bar_repeats=config.max_bar_repeats,
        silence_bars=config.silence_bars,
        reseed=config.reseed,
        yield_to=config.yield_to,
        takeover_beats=config.takeover_beats,
    )


@dataclass(slots=True)
class JamResult:
    midi_path: Path
    wav_path: Path | None
    notes_performed: int
    notes_generated: int
    responses: int
    input_name: str
    outputs: list[str]
    warnings: list[str] = field(default_factory=list)
    late: int = 0
    max_late_ms: float = 0.0
    replan_ms: list[float] = field(default_factory=list)  # performed note-on -> new plan, per note
    takes: list[Path] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)  # live controls applied, in order
    reseeds: int = 0
    tempo_bpm: float = 0.0  # the clock's tempo at the end (a followed clock's estimate)
    send_errors: int = 0  # messages a port refused (a vanished port or server); the recording has them
    late_steps: int = 0  # notes skipped because the model planned them after their time
    input_dropped: int = 0  # performed messages dropped: a flood beyond a human rate, or a full inbox
    stale: int = 0  # note-ons and clock pulses dropped for being far past their time (the process stalled)
    resyncs: int = 0  # times clock receivers were stopped and given a song position again after a stall
    worker_restarts: int = 0  # inference workers started again after a crash or a hang
    skipped_steps: int = 0  # model steps skipped: a run over its time or memory budget, or not finite
    port_losses: int = 0  # MIDI ports that went away (their program, device or JACK server)
    reconnects: int = 0  # MIDI ports that played again after going away
    parts: list[Path] = field(default_factory=list)  # every part of a recording longer than one part, in order
    carried: dict[str, int] = field(default_factory=dict)  # per track: notes held across a part's end, begun again
    write_errors: int = 0  # writes of the recording or the WAV that failed (a full disk), each counted


def sampling_ranges(package: ModelPackage) -> dict[str, tuple[float, float]]:
    """What ``temperature`` and ``top_p`` may be: the package's ranges, else livegen's."""
    specs = package.manifest.parameters
    return {
        name: (specs[name].min, specs[name].max) if name in specs else default
        for name, default in (("temperature", TEMPERATURE_RANGE), ("top_p", TOP_P_RANGE))
    }


def sampling_params(
    package: ModelPackage,
    temperature: float | None,
    top_p: float | None,
    *,
    key: str | None = None,
    pitch_range: str | None = None,
    candidates: int | None = None,
) -> SamplingParams:
    """Sampling parameters: the package's defaults, overridden by what the performer gave."""
    specs = package.manifest.parameters
    ranges = sampling_ranges(package)
    values: dict[str, float] = {}
    for name, given in (("temperature", temperature), ("top_p", top_p)):
        spec = specs.get(name)
        if given is None:
            values[name] = spec.default if spec else float(getattr(SamplingParams(), name))
        else:
            values[name] = check_live(name, given, ranges[name], f"--{name.replace('_', '-')}")
    root, scale = parse_key(key) if key else (0, "chromatic")
    low, high = parse_pitch_range(pitch_range) if pitch_range else (0, 127)
    if candidates is not None:
        CANDIDATES_BOUNDS.check(candidates, "--candidates")
    return SamplingParams(
        temperature=values["temperature"],
        top_p=values["top_p"],
        pitch_min=low,
        pitch_max=high,
        scale=scale,
        root=root,
        candidates=DEFAULT_CANDIDATES if candidates is None else candidates,
    )


def parse_pitch_range(text: str) -> tuple[int, int]:
    """'55-84' -> (55, 84), MIDI note numbers."""
    return _parse_range(text, "pitch range", "MIDI note numbers, e.g. 55-84", lowest=0)


def parse_velocity_range(text: str) -> tuple[int, int]:
    """'40-110' -> (40, 110), MIDI velocities of generated notes."""
    return _parse_range(text, "--velocity-range", "MIDI velocities, e.g. 40-110", lowest=1)


def _parse_range(text: str, name: str, unit: str, *, lowest: int) -> tuple[int, int]:
    """'LOW-HIGH' -> (LOW, HIGH) within ``lowest``..127; a :class:`ConfigError` naming ``name`` otherwise."""
    low, sep, high = text.partition("-")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise ConfigError(f"{name} {text!r}: expected LOW-HIGH in {unit}")
    lo, hi = int(low), int(high)
    if not lowest <= lo <= hi <= 127:
        raise ConfigError(f"{name} {text!r}: expected {lowest} <= LOW <= HIGH <= 127")
    return lo, hi


def seed_song(package: ModelPackage, seed_file: Path | None) -> Song:
    path = seed_file or package.seed_phrase
    if path is None:
        raise ConfigError(f"model {package.name} carries no seed phrase; pass --seed-file F.mid")
    song = read_midi(path)
    if not song.notes:
        raise ConfigError(f"{path}: the seed phrase holds no notes")
    return song


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM end the jam cleanly (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: object) -> None:
        stop.set()

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _open_midi(config: JamConfig, warnings: list[str]) -> tuple[str | None, str | None]:
    """The MIDI API to use, or None with the reason when none works here."""
    from livegen.io import midi_api

    api = config.midi_api or midi_api.default_api()
    reason = midi_api.probe_api(api)
    if reason is None:
        return api, None
    if config.midi_api is None and midi_api.probe_api("jack") is None:
        warnings.append(f"MIDI API {api}: {reason}; using the running JACK server instead")
        return "jack", None
    return None, f"MIDI API {api}: {reason}"


def open_port_output(name: str, api: str) -> MidiOutput:
    """Open the model's MIDI port output ``name`` (setup context).

    ``livegen`` is livegen's own virtual port, any other name an existing port. Before
    anything else is sent on it, what a jam killed on this port left sounding is
    silenced, and the port gets its crash journal (:func:`livegen.io.journal.guard_output`).
    """
    from livegen.io import midi_output
    from livegen.io.journal import guard_output

    port = midi_output.open_output(name, api=api, virtual=(name == "livegen"))
    try:
        guard_output(port)
    except BaseException:
        port.close()
        raise
    return port


def seed_events(notes: Sequence[Note]) -> list[StepEvent]:
    """A seed phrase as the events a step model hears (onset order, steps between onsets)."""
    return step_events(notes)


def live_params(config: JamConfig, package: ModelPackage) -> LiveParams:
    """The live parameters a jam starts from: the config's sampling over the package's defaults and ranges."""
    params = sampling_params(
        package,
        config.temperature,
        config.top_p,
        key=config.key,
        pitch_range=config.pitch_range,
        candidates=config.candidates,
    )
    ranges = sampling_ranges(package)
    return LiveParams(
        sampling=params,
        density=config.density,
        response_bars=config.bars,
        transpose=parse_transpose(config.transpose) or 0,
        velocity_range=parse_velocity_range(config.velocity_range) if config.velocity_range else (1, 127),
        temperature_range=ranges["temperature"],
        top_p_range=ranges["top_p"],
    )


def build_planner(
    config: JamConfig, beats_per_bar: int, seed: list[StepEvent], heard: list[StepEvent] | None = None
) -> Conductor:
    """The inference worker's planner: load the model and build the conductor (worker process, setup).

    ``heard``: a restarted worker's seed, the recent performance, instead of ``seed``. The jam
    has verified the package (:func:`run_jam`), so a restart loads it again at once.
    """
    package, generator = load_generator(config.model, verified=True)
    rng = np.random.default_rng(config.rng_seed)
    return make_conductor(
        config, package, generator, live_params(config, package), rng, beats_per_bar=beats_per_bar, seed=heard or seed
    )


def recent_seed(recorder: MidiRecorder, beats_per_bar: int, bars: int = 8) -> list[StepEvent]:
    """The last ``bars`` bars of the performance, both tracks, as a seed (control thread: a worker restarts)."""
    notes = [*recorder.notes(PERFORMER_TRACK), *recorder.notes(MODEL_TRACK)]
    if not notes:
        return []
    since = max(n.start for n in notes) - bars * beats_per_bar * PPQN
    return seed_events([n for n in notes if n.start >= since])


def make_conductor(
    config: JamConfig,
    package: ModelPackage,
    generator: StepGenerator,
    live: LiveParams,
    rng: np.random.Generator,
    *,
    beats_per_bar: int,
    seed: list[StepEvent],
) -> Conductor:
    """The conductor over every mode's planner, sharing one swappable model and the live parameters."""
    model = SwappableGenerator(generator, package.name)
    generations = Generations()

    def make_planner(mode: str) -> Planner:
        if mode == "call-response":
            settings = CallResponseSettings(
                silence_beats=config.silence_beats,
                beats_per_bar=beats_per_bar,
                channel=config.model_channel,
                held_beats=config.takeover_beats,
                follow_key=config.key is None,
            )
            return CallResponsePlanner(model, live, rng, settings, generations)
        if mode == "accompany":
            accompanying = accompany_settings(config, beats_per_bar)
            return AccompanyPlanner(model, live, rng, accompanying, generations, seed=seed)
        alone = autonomous_settings(config, beats_per_bar)
        return AutonomousPlanner(model, live, rng, seed, lambda: make_planner(alone.yield_to), alone, generations)

    def load(name: str) -> StepGenerator:  # a background thread
        return load_generator(name, checked_in_child=True)[1]

    follower = None
    if parse_transpose(config.transpose) is None:
        follower = KeyFollower(live, beats_per_bar=beats_per_bar)
    return Conductor(
        make_planner,
        config.mode,
        model,
        live,
        modes=MODES,
        load_model=load,
        controls=config.controls.handle if config.controls is not None else None,
        key_follower=follower,
    )


def channel_programs(config: JamConfig, tracks: Mapping[int, int] | None) -> dict[int, int]:
    """GM program per channel: the model's, a multi-track model's own per track (``tracks``), the echo's."""
    return {config.model_channel: config.model_program, **(tracks or {}), config.echo_channel: config.echo_program}


def _fit_echo_channel(config: JamConfig, tracks: Mapping[int, int] | None, warnings: list[str]) -> JamConfig:
    """Move the performer's echo off a channel a multi-track model plays on (``tracks``: its programs)."""
    used = set(tracks or {}) | {config.model_channel}
    if config.echo_channel not in used:
        return config
    free = next(c for c in range(16) if c not in used and c != 9)  # 9 is General MIDI's drums
    warnings.append(f"the model plays on channel {config.echo_channel + 1}; your echo moves to channel {free + 1}")
    return replace(config, echo_channel=free)


def _make_clock(config: JamConfig, tempo: TempoMap) -> Clock:
    if config.clock == "midi":
        return MidiClockFollower(initial_bpm=tempo.initial_bpm)
    if config.clock == "link":
        from livegen.engine.link import LinkClock

        return LinkClock(bpm=tempo.initial_bpm)
    return InternalClock(tempo, start_ns=time.perf_counter_ns() + 300_000_000)


class Jam:
    """One jam, in the phases a stranger can follow: :meth:`prepare` (the recording's place, the
    model, the seed, the conductor), then within :meth:`run`: :meth:`_open_outputs` (ports, the
    synth), :meth:`_wait_for_model`, :meth:`_start_recording`, :meth:`_open_inputs`,
    :meth:`_supervise`, :meth:`_play`, and :meth:`_report` once everything is closed.

    Context: setup and the control loop, on the calling thread (see the module docstring).
    ``on_sent`` sees every message the scheduler sent, once, on the control thread
    (``livegen soak --realtime`` measures the jam through it); it must not keep them all.
    """

    def __init__(
        self,
        config: JamConfig,
        *,
        stop: threading.Event | None = None,
        echo: bool = True,
        on_sent: Callable[[Sent], None] | None = None,
    ) -> None:
        self.config = config
        self.stop = stop or threading.Event()
        self.echo = echo
        self.on_sent = on_sent
        self.warnings: list[str] = []
        self.model_outputs: list[MidiOutput] = []
        self.echo_outputs: list[MidiOutput] = []
        self.clock_outputs: list[MidiOutput] = []
        self.output_names: list[str] = []
        self.live_synth: LiveSynth | None = None
        self.offline_synth = False
        self.wav: WavStream | None = None
        self.wav_start_ns = 0
        self.takes: list[Path] = []
        self.source: MidiInput | None = None
        self.keeper: PortKeeper | None = None
        self.worker: PlannerWorker | None = None  # the conductor when it runs in an inference worker

    # ---- before anything opens ------------------------------------------------------

    def prepare(self) -> None:
        """Check where the recording goes, load the model (or start its verification), read the
        seed and build the conductor; open the MIDI API. Nothing sounds or opens a port yet."""
        config = self.config
        self.midi_path = (config.record or config.out_dir / f"jam-{time.strftime('%Y%m%d-%H%M%S')}.mid").resolve()
        if config.record:  # checked before anything plays
            prepare_destination(self.midi_path, option="--record")
        else:
            prepare_destination(self.midi_path, option="--out-dir", shown=self.midi_path.parent)
        generator: StepGenerator | None = None
        self.verification = None
        if config.worker:  # the worker loads the model; here the manifest is read and the package verified
            package = read_package(resolve_package(config.model))
            if not is_bundled(package.folder):
                self.verification = start_verification(package.folder)
        else:
            package, generator = load_generator(config.model)
        self.package = package
        self.live = live_params(config, package)  # checks the sampling options now, with a worker too
        self.autonomous = config.mode == "autonomous"
        self.wants_phrase = config.input is None and config.clock == "internal" and not self.autonomous
        wants_song = self.wants_phrase or self.autonomous or config.seed_file
        self.song = seed_song(package, config.seed_file) if wants_song else None
        song = self.song
        tempo = TempoMap.constant(config.tempo) if config.tempo else (song.tempo if song else TempoMap.constant(120))
        self.tempo = TempoMap((tempo.changes[0],))  # one steady tempo for the live clock
        self.beats_per_bar = song.beats_per_bar if song else 4
        seed = seed_events(song.notes) if song else []
        self.conductor: Planner
        if generator is None:
            # the worker loads the folder read here (a .zip is extracted once, and removed with it)
            worker_config = replace(config, model=str(package.folder))
            self.conductor = self.worker = PlannerWorker(
                partial(build_planner, worker_config, self.beats_per_bar, seed)
            )
        else:
            rng = np.random.default_rng(config.rng_seed)
            self.conductor = make_conductor(
                config, package, generator, self.live, rng, beats_per_bar=self.beats_per_bar, seed=seed
            )
        self.wanted = config.outputs if config.outputs is not None else ("livegen", "synth")
        explicit_ports = config.outputs is not None and any(o not in ("synth", "none") for o in self.wanted)
        needs_midi = (
            any(o not in ("synth", "none") for o in self.wanted) or config.input is not None or config.clock == "midi"
        )
        self.api, midi_problem = _open_midi(config, self.warnings) if needs_midi else (None, None)
        if midi_problem and (explicit_ports or config.input is not None or config.clock == "midi"):
            raise ConfigError(midi_problem)
        if midi_problem:
            self.warnings.append(
                f"{midi_problem}; no virtual port 'livegen' this time (the MIDI file is still written)"
            )
        if config.clock == "midi" and config.input is None and config.clock_input is None:
            self.config = replace(config, input=VIRTUAL_INPUT)  # a DAW sends its clock to livegen's own port

    # ---- the phases ---------------------------------------------------------------------

    def run(self) -> JamResult:
        """Play until the seed phrase has been answered (or accompanied), or until stopped; close
        everything, then report (an error after the start is raised once the files are written)."""
        self.prepare()
        with ExitStack() as stack:
            if self.verification is not None:
                stack.callback(self.verification.cancel)
            if self.worker is not None:
                self.worker.launch()  # the worker loads the model while the ports open
                stack.callback(self.worker.close)
            self._open_outputs(stack)
            self._wait_for_model()
            self._start_recording(stack)
            self._open_inputs(stack)
            supervision = self._supervise(stack)
            error = self._play(stack, supervision)
        return self._report(error)

    def _open_outputs(self, stack: ExitStack) -> None:
        """The MIDI port outputs and the built-in synth (live, or rendering to a WAV without a device)."""
        from livegen.io.synth import audio_output_available

        config, api = self.config, self.api
        for name in self.wanted:
            if name in ("synth", "none") or api is None:
                continue
            port = open_port_output(name, api)
            stack.callback(port.close)
            self.model_outputs.append(port)
            if config.clock_out:
                self.clock_outputs.append(port)
            self.output_names.append(f"MIDI port {port.name} ({api})")
        if config.clock_out and not self.clock_outputs:
            self.warnings.append("--clock-out: no MIDI port output, so no MIDI clock is sent")
        if "synth" in self.wanted:
            from livegen.io.soundfont import find_soundfont

            find_soundfont(config.soundfont)  # a missing SoundFont fails now, not at the end
            if audio_output_available(config.audio_device):
                from livegen.io.synth import LiveSynth, SynthOutput

                self.live_synth = live_synth = LiveSynth(soundfont=config.soundfont, device=config.audio_device)
                stack.callback(live_synth.close)
                live_synth.start()
                synth_out = SynthOutput(live_synth)
                self.model_outputs.append(synth_out)
                if self.echo:
                    self.echo_outputs.append(synth_out)
                self.output_names.append(f"built-in synth on {live_synth.device_name}")
            else:
                self.offline_synth = True
                if config.audio_device:
                    raise ConfigError(f"audio device {config.audio_device!r} is not available")
                self.warnings.append("no audio output device: the built-in synth renders to a WAV file instead")

    def _wait_for_model(self) -> None:
        """The verification passed and the worker's model is loaded: the performance begins with a model."""
        if self.verification is not None:
            self.verification.wait()  # the trial in its bounded child passed: the worker's model may play
        if self.worker is not None:
            self.worker.wait_ready()  # before the clock starts

    def _start_recording(self, stack: ExitStack) -> None:
        """The clock, the scheduler, the rolling recording, the WAV and the engine."""
        self.config = config = _fit_echo_channel(self.config, self.conductor.programs, self.warnings)
        programs = channel_programs(config, self.conductor.programs)
        self.clock = clock = _make_clock(config, self.tempo)
        stack.callback(clock.close)
        self.scheduler = Scheduler(
            [self.model_outputs, self.echo_outputs, self.clock_outputs], tick_of=clock.ns_to_tick
        )
        echo_channel = config.echo_channel if self.echo and (self.echo_outputs or self.offline_synth) else None
        self.recorder = recorder = RollingRecording(
            self.midi_path,
            self.tempo,
            part_ticks=part_ticks(config.part_minutes, self.tempo),
            beats_per_bar=self.beats_per_bar,
            tracks=(PERFORMER_TRACK, MODEL_TRACK),
        )
        self.wav_start_ns = clock.start_ns if isinstance(clock, InternalClock) else 0  # followed clocks: at the start
        if self.offline_synth:
            check_destination(self.midi_path.with_suffix(".wav"), option="the synth's WAV")
            self.wav = WavStream(
                self.midi_path.with_suffix(".wav"), soundfont=config.soundfont, max_seconds=config.wav_minutes * 60
            )
            stack.callback(self.wav.close)
            for channel, program in programs.items():
                self.wav.push(0, (PROGRAM_CHANGE | channel, program))
        self.engine = Engine(
            self.conductor,
            clock,
            self.scheduler,
            recorder,
            echo_channel=echo_channel,
            clock_out=ClockMaster() if self.clock_outputs else None,
            on_save_take=self._save_take,
            on_sent=self._sent if self.wav is not None or self.on_sent is not None else None,
            admission=InputAdmission(),
        )
        if self.worker is not None:
            self.worker.recent = partial(recent_seed, recorder, self.beats_per_bar)
        if self.live_synth is not None:
            for channel, program in programs.items():
                self.live_synth.send_now((PROGRAM_CHANGE | channel, program))

    def _sent(self, sent: Sent) -> None:
        """Control thread: each message the scheduler sent, once (to the WAV and ``on_sent``)."""
        if self.wav is not None and sent.group in (MODEL_GROUP, ECHO_GROUP):
            self.wav.push(sent.deadline_ns - self.wav_start_ns, sent.data)
        if self.on_sent is not None:
            self.on_sent(sent)

    def _save_take(self) -> None:
        """Control thread: the record control."""
        path = self.midi_path.with_name(f"{self.midi_path.stem}-take{len(self.takes) + 1}.mid")
        if self.recorder.save_copy(path) is not None:  # a take that cannot be written is logged and counted
            self.takes.append(path)

    def _open_inputs(self, stack: ExitStack) -> None:
        """The performer's input (a port, the first keyboard, or the seed phrase played as if performed),
        a separate clock input, and the keeper that opens again a port that went away."""
        from livegen.io import midi_api, midi_input

        config, api, engine = self.config, self.api, self.engine
        listens_to_clock = config.clock == "midi" and config.clock_input is None
        if config.input is not None:
            assert api is not None
            virtual = config.input == VIRTUAL_INPUT
            self.source = midi_input.open_input(
                None if virtual else config.input,
                api=api,
                callback=engine.on_midi,
                virtual=virtual,
                ignore_clock=not listens_to_clock,
            )
            stack.callback(self.source.close)
        elif not self.autonomous or config.seed_file is None:
            keyboard = midi_api.find_keyboard(api) if api else None
            if keyboard is not None:
                assert api is not None
                self.source = midi_input.open_input(keyboard, api=api, callback=engine.on_midi)
                stack.callback(self.source.close)
            elif self.wants_phrase:
                assert self.song is not None
                lead_in = PPQN  # one beat before the phrase
                events = notes_to_events(replace(n, start=n.start + lead_in) for n in self.song.notes)
                phrase = PhraseInput(events, self.clock.tick_to_ns)
                phrase.set_callback(engine.on_midi)
                stack.callback(phrase.close)
                self.source = phrase
        clock_source: MidiInput | None = None
        if config.clock == "midi" and config.clock_input is not None:
            assert api is not None
            clock_source = midi_input.open_input(
                config.clock_input, api=api, callback=engine.on_midi, ignore_clock=False
            )
            stack.callback(clock_source.close)
        # a port that goes away (a keyboard unplugged, a restarted JACK server) is counted and
        # opened again by the keeper's thread; it stops before the ports close
        if api is not None:
            from livegen.io.reconnect import PortKeeper

            self.keeper = PortKeeper(api)
            for watched in (*self.model_outputs, self.source, clock_source):
                self.keeper.add(watched)
            stack.enter_context(self.keeper)

    def _supervise(self, stack: ExitStack) -> Supervision:
        """The health endpoint (it binds now: a taken port fails before anything plays), systemd's
        READY=1 at the scheduler's first heartbeat, and the typed-command reader."""
        config, keeper, worker, wav = self.config, self.keeper, self.worker, self.wav
        engine, conductor, recorder = self.engine, self.conductor, self.recorder
        supervision = stack.enter_context(
            supervise(
                self.scheduler,
                host=config.health_host,
                port=config.health_port,
                counters=Counters(
                    late_steps=lambda: engine.late_steps,
                    input_dropped=lambda: engine.input_dropped,
                    reconnects=lambda: keeper.reconnects if keeper is not None else 0,
                    port_losses=lambda: keeper.port_losses if keeper is not None else 0,
                    restarts=lambda: worker.restarts if worker is not None else 0,
                    skipped_steps=lambda: conductor.skipped_steps,
                    write_errors=lambda: recorder.write_errors + (wav.write_errors if wav is not None else 0),
                ),
                synth=self.live_synth,
                model=model_identity(self.package.folder),
                model_source=conductor,
                status=f"playing {self.package.name} ({config.mode})",
            )
        )
        if config.commands or (config.commands is None and sys.stdin is not None and sys.stdin.isatty()):
            CommandReader(conductor.post, self.stop.set, self.live, modes=MODES).start()
        return supervision

    def _play(self, stack: ExitStack, supervision: Supervision) -> BaseException | None:
        """The control loop until the end; the error that ended it, if any (what was recorded is kept)."""
        config, engine, recorder, source, stop = self.config, self.engine, self.recorder, self.source, self.stop
        # The scheduler and the audio callback need the GIL within a millisecond; Python's
        # default switch interval (5 ms) lets the control thread hold it longer than a block.
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(0.0005)
        stack.callback(sys.setswitchinterval, switch_interval)
        started_ns = time.perf_counter_ns()
        if not isinstance(self.clock, InternalClock):
            self.wav_start_ns = started_ns  # the WAV's time 0 (_sent reads it)
        self.scheduler.start()
        if isinstance(source, PhraseInput):
            source.start()
        deadline = None if config.max_seconds is None else time.monotonic() + config.max_seconds
        autosave_every = config.autosave_seconds
        next_save = None if autosave_every is None else time.monotonic() + autosave_every

        def finished() -> bool:
            nonlocal next_save
            if next_save is not None and time.monotonic() >= next_save:
                assert autosave_every is not None
                engine.collect_sent()
                recorder.autosave()  # the part being played; on failure it stays in memory
                next_save = time.monotonic() + autosave_every
            if self.wav is not None:
                self.wav.render_until(time.perf_counter_ns() - self.wav_start_ns)
            if stop.is_set() or (deadline is not None and time.monotonic() > deadline):
                return True
            if isinstance(source, PhraseInput):
                return source.finished.is_set() and self.conductor.responses >= 1 and not self.conductor.busy
            return False

        error: BaseException | None = None
        with _stop_on_signals(stop), stop_runs_on(stop):
            try:
                engine.run(finished)
            except BaseException as err:  # keep what was recorded, then report
                error = err
            finally:
                supervision.stopping()  # STOPPING=1 before the scheduler stops: writing files is no hang
                engine.finish()
                if self.worker is not None:
                    self.worker.close()
                if self.live_synth is not None:
                    time.sleep(0.3)  # let the release tails sound before the stream closes
        return error

    def _report(self, error: BaseException | None) -> JamResult:
        """Write the files and say what happened; raise the error that ended the jam, if any."""
        config, wav, worker, conductor, scheduler = self.config, self.wav, self.worker, self.conductor, self.scheduler
        warnings = self.warnings
        result = _write_files(self.recorder, wav, warnings)
        if wav is not None and wav.failed:
            warnings.append(f"{wav.failed}; the MIDI recording holds the whole jam")
        if wav is not None and wav.capped:
            warnings.append(
                f"the WAV holds the first {config.wav_minutes:g} minutes (--wav-minutes); "
                "the MIDI recording holds the whole jam"
            )
        result.input_name = self.source.name if self.source is not None else "none (autonomous)"
        offline = [f"built-in synth -> {result.wav_path}"] if self.offline_synth else []
        result.outputs = self.output_names + offline
        result.warnings = warnings
        result.responses = conductor.responses
        result.late = scheduler.stats.late
        result.max_late_ms = scheduler.stats.max_late_ns / 1e6
        result.replan_ms = [ns / 1e6 for ns in self.engine.replan_ns()]
        result.takes = self.takes
        report = conductor.report()
        result.changes, result.reseeds = list(report.changes), report.reseeds
        if worker is not None:
            result.worker_restarts = worker.restarts
            if worker.gave_up:
                result.warnings.append(
                    f"the inference worker failed {worker.crashes + worker.hangs} time(s) and was not started "
                    "again; the clock and the recording went on without the model (the log says why)"
                )
        result.late_steps = self.engine.late_steps
        result.stale, result.resyncs = scheduler.stats.stale, scheduler.stats.resyncs
        result.input_dropped = self.engine.input_dropped
        result.skipped_steps = conductor.skipped_steps
        result.tempo_bpm = self.clock.tempo_bpm
        result.send_errors = sum(o.errors for group in scheduler.groups for o in group)
        if self.keeper is not None:
            result.port_losses, result.reconnects = self.keeper.port_losses, self.keeper.reconnects
        if error is not None:
            if isinstance(error, LivegenError):
                raise error
            raise LivegenError(
                f"the jam stopped on an internal error ({error!r}); recorded so far: {result.midi_path}"
            ) from error
        return result


def run_jam(
    config: JamConfig,
    *,
    stop: threading.Event | None = None,
    echo: bool = True,
    on_sent: Callable[[Sent], None] | None = None,
) -> JamResult:
    """Play until the seed phrase has been answered (or accompanied), or until stopped (see :class:`Jam`)."""
    return Jam(config, stop=stop, echo=echo, on_sent=on_sent).run()


def part_ticks(minutes: float, tempo: TempoMap) -> int:
    """The ticks of ``minutes`` at ``tempo``'s first tempo (a recording's part length)."""
    return max(1, round(minutes * 60e9 * PPQN / (tempo.changes[0][1] * 1000)))


def _write_files(recorder: RollingRecording, wav: WavStream | None, warnings: list[str]) -> JamResult:
    """Write the part being played (to a fallback folder if it must: ``warnings`` says so) and
    finish the WAV (the jam's end)."""
    midi_path, problem = recorder.write_last(fallbacks=fallback_folders())
    if problem is not None:
        warnings.append(problem)
    wav_path = wav.close() if wav is not None else None
    return JamResult(
        midi_path=midi_path,
        wav_path=wav_path,
        notes_performed=recorder.note_count(PERFORMER_TRACK),
        notes_generated=recorder.note_count(MODEL_TRACK),
        responses=0,
        input_name="",
        outputs=[],
        parts=[*recorder.parts, midi_path] if recorder.parts else [],
        carried=dict(recorder.carried_by_track),
        write_errors=recorder.write_errors + (wav.write_errors if wav is not None else 0),
    )


def render_wav(sent: list[Sent], start_ns: int, path: Path, *, soundfont: str | None, programs: dict[int, int]) -> Path:
    """Render what the scheduler sent (model and echo) through the built-in synth to ``path``."""
    from livegen.io.synth import render_offline, write_wav

    events: list[tuple[int, tuple[int, ...]]] = [(0, (PROGRAM_CHANGE | ch, p)) for ch, p in programs.items()]
    events += [(max(0, s.deadline_ns - start_ns), s.data) for s in sent if s.group in (MODEL_GROUP, ECHO_GROUP)]
    events.sort(key=lambda e: e[0])
    audio = render_offline(events, soundfont=soundfont)
    return write_wav(path, audio)
