"""A live jam: the bundled or chosen model answering a keyboard or the seed phrase.

Context: setup (opening the model, ports, synth), then the control loop on the
calling thread; the scheduler, the synth and the seed phrase have their own
threads. Nothing recorded is lost on the way out: whatever ends the jam (its
natural end, Ctrl-C, SIGTERM, an error after the start) the scheduler silences
what sounds and the MIDI file is written before the error is reported.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from livegen.engine.callresponse import CallResponsePlanner, CallResponseSettings
from livegen.engine.clock import InternalClock
from livegen.engine.scheduler import Scheduler, Sent
from livegen.engine.session import ECHO_GROUP, MODEL_GROUP, MODEL_TRACK, PERFORMER_TRACK, Engine
from livegen.errors import ConfigError, LivegenError
from livegen.io.base import MidiInput, MidiOutput
from livegen.io.phrase import PhraseInput
from livegen.io.recorder import MidiRecorder
from livegen.models.package import ModelPackage, load_package
from livegen.models.registry import DEFAULT_MODEL, generator_class, resolve_package
from livegen.models.sampling import SamplingParams, parse_key
from livegen.models.step import StepGenerator
from livegen.music.events import PROGRAM_CHANGE, notes_to_events
from livegen.music.midifile import Song, read_midi
from livegen.music.time import PPQN, TempoMap

log = logging.getLogger(__name__)

MODES = ("call-response",)


@dataclass(frozen=True, slots=True)
class JamConfig:
    """Everything ``livegen jam`` can be told (command line or preset)."""

    model: str = DEFAULT_MODEL
    mode: str = "call-response"
    input: str | None = None  # a port name; None: the first keyboard found, else the seed phrase
    outputs: tuple[str, ...] | None = None  # port names, "synth", "none"; None: livegen port + synth
    midi_api: str | None = None
    tempo: float | None = None
    record: Path | None = None
    seed_file: Path | None = None
    bars: int = 4
    silence_beats: float = 2.0
    temperature: float | None = None
    top_p: float | None = None
    rng_seed: int | None = None
    key: str | None = None  # e.g. "D dorian": sampled pitches stay in this scale
    pitch_range: str | None = None  # e.g. "55-84": sampled pitches stay in this range
    soundfont: str | None = None
    audio_device: str | None = None
    out_dir: Path = Path("out")
    model_channel: int = 0
    echo_channel: int = 1
    model_program: int = 0
    echo_program: int = 0
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"--mode {self.mode!r}: this version plays {', '.join(MODES)}")
        if self.tempo is not None and not 20 <= self.tempo <= 400:
            raise ConfigError(f"--tempo {self.tempo}: expected 20 to 400 BPM")


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


def load_generator(model: str) -> tuple[ModelPackage, StepGenerator]:
    package = load_package(resolve_package(model))
    if package.manifest.kind != "step":
        raise ConfigError(f"model {model!r} is of kind {package.manifest.kind!r}; this version plays step models")
    generator: StepGenerator = generator_class(package.manifest.family)(package)
    return package, generator


def sampling_params(
    package: ModelPackage,
    temperature: float | None,
    top_p: float | None,
    *,
    key: str | None = None,
    pitch_range: str | None = None,
) -> SamplingParams:
    """Sampling parameters: the package's defaults, overridden by what the performer gave."""
    specs = package.manifest.parameters
    values: dict[str, float] = {}
    for name, given in (("temperature", temperature), ("top_p", top_p)):
        spec = specs.get(name)
        if given is None:
            values[name] = spec.default if spec else float(getattr(SamplingParams(), name))
        elif spec and not spec.min <= given <= spec.max:
            raise ConfigError(f"--{name.replace('_', '-')} {given}: {package.name} accepts {spec.min} to {spec.max}")
        else:
            values[name] = given
    root, scale = parse_key(key) if key else (0, "chromatic")
    low, high = parse_pitch_range(pitch_range) if pitch_range else (0, 127)
    return SamplingParams(
        temperature=values["temperature"], top_p=values["top_p"], pitch_min=low, pitch_max=high, scale=scale, root=root
    )


def parse_pitch_range(text: str) -> tuple[int, int]:
    """'55-84' -> (55, 84), MIDI note numbers."""
    low, sep, high = text.partition("-")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise ConfigError(f"pitch range {text!r}: expected LOW-HIGH in MIDI note numbers, e.g. 55-84")
    lo, hi = int(low), int(high)
    if not 0 <= lo <= hi <= 127:
        raise ConfigError(f"pitch range {text!r}: expected 0 <= LOW <= HIGH <= 127")
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
    from livegen.io import midi_ports

    api = config.midi_api or midi_ports.default_api()
    reason = midi_ports.probe_api(api)
    if reason is None:
        return api, None
    if config.midi_api is None and midi_ports.probe_api("jack") is None:
        warnings.append(f"MIDI API {api}: {reason}; using the running JACK server instead")
        return "jack", None
    return None, f"MIDI API {api}: {reason}"


def run_jam(config: JamConfig, *, stop: threading.Event | None = None, echo: bool = True) -> JamResult:
    """Play until the seed phrase has been answered, or until stopped with a keyboard."""
    from livegen.io import midi_ports
    from livegen.io.synth import audio_output_available

    stop = stop or threading.Event()
    warnings: list[str] = []
    package, generator = load_generator(config.model)
    params = sampling_params(package, config.temperature, config.top_p, key=config.key, pitch_range=config.pitch_range)
    song = seed_song(package, config.seed_file) if config.input is None or config.seed_file else None
    tempo = TempoMap.constant(config.tempo) if config.tempo else (song.tempo if song else TempoMap.constant(120))
    tempo = TempoMap((tempo.changes[0],))  # one steady tempo for the live clock
    settings = CallResponseSettings(
        silence_beats=config.silence_beats,
        response_bars=config.bars,
        beats_per_bar=song.beats_per_bar if song else 4,
        channel=config.model_channel,
    )
    rng = np.random.default_rng(config.rng_seed)
    planner = CallResponsePlanner(generator, params, rng, settings)

    wanted = config.outputs if config.outputs is not None else ("livegen", "synth")
    explicit_ports = config.outputs is not None and any(o not in ("synth", "none") for o in wanted)
    needs_midi = any(o not in ("synth", "none") for o in wanted) or config.input is not None
    api, midi_problem = _open_midi(config, warnings) if needs_midi else (None, None)
    if midi_problem and (explicit_ports or config.input is not None):
        raise ConfigError(midi_problem)
    if midi_problem:
        warnings.append(f"{midi_problem}; no virtual port 'livegen' this time (the MIDI file is still written)")

    with ExitStack() as stack:
        model_outputs: list[MidiOutput] = []
        echo_outputs: list[MidiOutput] = []
        output_names: list[str] = []
        for name in wanted:
            if name in ("synth", "none") or api is None:
                continue
            port = midi_ports.open_output(name, api=api, virtual=(name == "livegen"))
            stack.callback(port.close)
            model_outputs.append(port)
            output_names.append(f"MIDI port {port.name} ({api})")
        live_synth = None
        offline_synth = False
        if "synth" in wanted:
            from livegen.io.soundfont import find_soundfont

            find_soundfont(config.soundfont)  # a missing SoundFont fails now, not at the end
            if audio_output_available(config.audio_device):
                from livegen.io.synth import LiveSynth, SynthOutput

                live_synth = LiveSynth(soundfont=config.soundfont, device=config.audio_device)
                stack.callback(live_synth.close)
                live_synth.start()
                synth_out = SynthOutput(live_synth)
                model_outputs.append(synth_out)
                if echo:
                    echo_outputs.append(synth_out)
                output_names.append(f"built-in synth on {live_synth.device_name}")
            else:
                offline_synth = True
                if config.audio_device:
                    raise ConfigError(f"audio device {config.audio_device!r} is not available")
                warnings.append("no audio output device: the built-in synth renders to a WAV file instead")

        clock = InternalClock(tempo, start_ns=time.perf_counter_ns() + 300_000_000)
        scheduler = Scheduler([model_outputs, echo_outputs], tick_of=clock.ns_to_tick)
        recorder = MidiRecorder((PERFORMER_TRACK, MODEL_TRACK))
        echo_channel = config.echo_channel if echo and (echo_outputs or offline_synth) else None
        engine = Engine(planner, clock, scheduler, recorder, echo_channel=echo_channel, keep_sent=offline_synth)
        programs = {config.model_channel: config.model_program, config.echo_channel: config.echo_program}
        if live_synth is not None:
            for channel, program in programs.items():
                live_synth.send_now((PROGRAM_CHANGE | channel, program))

        source: MidiInput
        keyboard = None
        if config.input is not None:
            assert api is not None
            source = midi_ports.open_input(config.input, api=api, callback=engine.on_midi)
            stack.callback(source.close)
        else:
            keyboard = midi_ports.find_keyboard(api) if api else None
            if keyboard is not None:
                assert api is not None
                source = midi_ports.open_input(keyboard, api=api, callback=engine.on_midi)
                stack.callback(source.close)
            else:
                assert song is not None
                lead_in = PPQN  # one beat before the phrase
                events = notes_to_events(replace(n, start=n.start + lead_in) for n in song.notes)
                source = PhraseInput(events, clock.tick_to_ns)
                source.set_callback(engine.on_midi)
                stack.callback(source.close)
        # The scheduler and the audio callback need the GIL within a millisecond; Python's
        # default switch interval (5 ms) lets the control thread hold it longer than a block.
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(0.0005)
        stack.callback(sys.setswitchinterval, switch_interval)
        scheduler.start()
        if isinstance(source, PhraseInput):
            source.start()
        deadline = None if config.max_seconds is None else time.monotonic() + config.max_seconds

        def finished() -> bool:
            if stop.is_set() or (deadline is not None and time.monotonic() > deadline):
                return True
            if isinstance(source, PhraseInput):
                return source.finished.is_set() and planner.responses >= 1 and not planner.busy
            return False

        error: BaseException | None = None
        with _stop_on_signals(stop):
            try:
                engine.run(finished)
            except BaseException as err:  # keep what was recorded, then report
                error = err
            finally:
                engine.finish()
                if live_synth is not None:
                    time.sleep(0.3)  # let the release tails sound before the stream closes
        result = _write_files(config, engine, recorder, clock, tempo, settings.beats_per_bar, offline_synth)
        result.input_name = source.name
        result.outputs = output_names + ([f"built-in synth -> {result.wav_path}"] if offline_synth else [])
        result.warnings = warnings
        result.responses = planner.responses
        result.late = scheduler.stats.late
        result.max_late_ms = scheduler.stats.max_late_ns / 1e6
        if error is not None:
            if isinstance(error, LivegenError):
                raise error
            raise LivegenError(
                f"the jam stopped on an internal error ({error!r}); recorded so far: {result.midi_path}"
            ) from error
        return result


def _write_files(
    config: JamConfig,
    engine: Engine,
    recorder: MidiRecorder,
    clock: InternalClock,
    tempo: TempoMap,
    beats_per_bar: int,
    offline_synth: bool,
) -> JamResult:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    midi_path = (config.record or config.out_dir / f"jam-{stamp}.mid").resolve()
    recorder.save(midi_path, tempo, beats_per_bar=beats_per_bar)
    wav_path = None
    if offline_synth:
        wav_path = midi_path.with_suffix(".wav")
        render_wav(
            engine.sent,
            clock.start_ns,
            wav_path,
            soundfont=config.soundfont,
            programs={config.model_channel: config.model_program, config.echo_channel: config.echo_program},
        )
    return JamResult(
        midi_path=midi_path,
        wav_path=wav_path,
        notes_performed=len(recorder.notes(PERFORMER_TRACK)),
        notes_generated=len(recorder.notes(MODEL_TRACK)),
        responses=0,
        input_name="",
        outputs=[],
    )


def render_wav(sent: list[Sent], start_ns: int, path: Path, *, soundfont: str | None, programs: dict[int, int]) -> Path:
    """Render what the scheduler sent (model and echo) through the built-in synth to ``path``."""
    from livegen.io.synth import render_offline, write_wav

    events: list[tuple[int, tuple[int, ...]]] = [(0, (PROGRAM_CHANGE | ch, p)) for ch, p in programs.items()]
    events += [(max(0, s.deadline_ns - start_ns), s.data) for s in sent if s.group in (MODEL_GROUP, ECHO_GROUP)]
    events.sort(key=lambda e: e[0])
    audio = render_offline(events, soundfont=soundfont)
    return write_wav(path, audio)
