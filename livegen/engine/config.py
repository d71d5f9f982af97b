"""What ``livegen jam`` can be told: :class:`JamConfig`, each of its options declared once.

Context: setup. Every field declared with :func:`~livegen.engine.options.option` is a
command-line option, a preset key and, where it says ``live``, a typed command; its
bounds are the one range check all of them use (:mod:`livegen.engine.options`). The
module imports nothing that loads a model runtime, so ``livegen --help`` stays quick.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from livegen.engine.checks import TEMPO_BOUNDS, check_midi_name, check_rng_seed
from livegen.engine.controls import ControlMap
from livegen.engine.live import BARS_BOUNDS, DENSITY_BOUNDS
from livegen.engine.logfile import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, check_log_file
from livegen.engine.options import Bounds, check_bounds, option
from livegen.errors import ConfigError
from livegen.io.midi_api import MIDI_APIS
from livegen.io.synth_render import WAV_MAX_MINUTES
from livegen.models.registry import DEFAULT_MODEL

MODES = ("call-response", "accompany", "autonomous")
CLOCKS = ("internal", "midi", "link")
#: Where an autonomous jam reseeds from, and the mode it yields to when the performer plays.
RESEED_SOURCES = ("recent", "seed")
YIELD_MODES = ("call-response", "accompany")
#: ``input`` value that opens a virtual input port others (a DAW) connect to.
VIRTUAL_INPUT = "virtual"
#: The recordings folder, relative to the working directory (a preset's out-dir lies inside it).
RECORDINGS = Path("out")
#: The address the health endpoint binds by default.
DEFAULT_HOST = "127.0.0.1"
#: The ``--help`` section of the options an unattended installation uses.
SUPERVISION = "supervision (unattended installations; see the README)"

CANDIDATES_BOUNDS = Bounds(1, 64)
CHANNEL_BOUNDS = Bounds(0, 15, note=" (MIDI channels 1 to 16)")
PROGRAM_BOUNDS = Bounds(0, 127, note=" (General MIDI program numbers)")
LISTEN_BOUNDS = Bounds(0, 256, note=" beats")
SAME_PITCH_BOUNDS = Bounds(2, 1000, note=" notes")
BAR_REPEATS_BOUNDS = Bounds(2, 1000, note=" bars")
SILENCE_BARS_BOUNDS = Bounds(0, 64, low_open=True, note=" bars")
TAKEOVER_BOUNDS = Bounds(0, 1024, low_open=True, note=" beats")
#: The furthest a planner plans ahead, beats.
MAX_LOOKAHEAD_BEATS = 32


@dataclass(frozen=True, slots=True)
class JamConfig:
    """Everything ``livegen jam`` can be told: each field declared with :func:`option` is an
    option of the command line, a preset key and, where ``live`` says so, a typed command."""

    model: str = option(DEFAULT_MODEL, "--model", "bundled model name or package path")
    mode: str = option("call-response", "--mode", "how livegen plays with you", choices=MODES)
    input: str | None = option(
        None, "--in", "MIDI input port, or 'virtual' (default: first keyboard found)", metavar="PORT"
    )
    outputs: tuple[str, ...] | None = option(
        None, "--out", "outputs: port names, 'synth', 'none' (default: livegen synth)", metavar="PORT"
    )
    midi_api: str | None = option(None, "--midi-api", "MIDI backend", choices=MIDI_APIS)
    tempo: float | None = option(None, "--tempo", "BPM (default: the seed phrase's)", bounds=TEMPO_BOUNDS)
    record: Path | None = option(None, "--record", "where to write the MIDI recording", metavar="FILE.mid")
    seed_file: Path | None = option(
        None, "--seed-file", "phrase to perform when no keyboard is attached", metavar="F.mid"
    )
    bars: int = option(4, "--bars", "length of each answer in bars", bounds=BARS_BOUNDS, live="response_bars")
    silence_beats: float = option(2.0, "--silence", "beats of silence that end a phrase")
    temperature: float | None = option(
        None, "--temperature", "sampling temperature (the model's default if omitted)", live="temperature"
    )
    top_p: float | None = option(
        None, "--top-p", "nucleus sampling mass (the model's default if omitted)", live="top_p"
    )
    candidates: int | None = option(
        None,
        "--candidates",
        "block models that do not read the performer draw K blocks and keep the best fit (default 8)",
        bounds=CANDIDATES_BOUNDS,
        metavar="K",
    )
    rng_seed: int | None = option(None, "--rng-seed", "seed of the sampler's random generator")
    key: str | None = option(None, "--key", "keep generated pitches in a scale, e.g. 'D dorian', 'A minor', 'C'")
    pitch_range: str | None = option(None, "--pitch-range", "MIDI note range, e.g. 55-84", metavar="LOW-HIGH")
    velocity_range: str | None = option(
        None, "--velocity-range", "velocities of generated notes stay within, e.g. 40-110", metavar="LOW-HIGH"
    )
    soundfont: str | None = option(None, "--soundfont", "General MIDI .sf2 for the built-in synth")
    audio_device: str | None = option(None, "--audio-device", "audio output device name or index")
    out_dir: Path = option(RECORDINGS, "--out-dir", "folder for recordings")
    model_channel: int = option(0, None, "MIDI channel of the model's notes, 0 to 15", bounds=CHANNEL_BOUNDS)
    echo_channel: int = option(1, None, "MIDI channel the performer is echoed on", bounds=CHANNEL_BOUNDS)
    model_program: int = option(0, None, "General MIDI program of the model's part", bounds=PROGRAM_BOUNDS)
    echo_program: int = option(0, None, "General MIDI program of the performer's echo", bounds=PROGRAM_BOUNDS)
    max_seconds: float | None = option(
        None,
        "--max-seconds",
        "stop after this many seconds",
        bounds=Bounds(0, low_open=True, note=" seconds (leave it out to play until stopped)"),
    )
    # accompaniment and autonomous play
    lookahead_beats: float = option(4.0, "--lookahead", "beats planned ahead")
    commit_beats: float = option(2.0, "--commit", "beats ahead that are final in accompany")
    listen_beats: float = option(8.0, "--listen", "beats accompany listens before it plays", bounds=LISTEN_BOUNDS)
    follow_pace: bool = option(
        True, "--follow-pace", "accompany: start no more notes a bar than you lately did (at least one a beat)"
    )
    max_same_pitch: int = option(
        12, None, "autonomous: the most times one pitch is struck in a row", bounds=SAME_PITCH_BOUNDS
    )
    max_bar_repeats: int = option(
        4, None, "autonomous: the most times one bar repeats before a reseed", bounds=BAR_REPEATS_BOUNDS
    )
    silence_bars: float = option(
        2.0, None, "autonomous: bars of its own silence before a reseed", bounds=SILENCE_BARS_BOUNDS
    )
    reseed: str = option(
        "recent", "--reseed", "autonomous: reseed from its own output or the seed", choices=RESEED_SOURCES
    )
    yield_to: str = option("call-response", "--yield-to", "autonomous: mode when you play", choices=YIELD_MODES)
    takeover_beats: float = option(
        8.0,
        "--takeover",
        "autonomous: beats of your silence before it plays again; a note held longer counts as released",
        bounds=TAKEOVER_BOUNDS,
    )
    # clock and transport
    clock: str = option(
        "internal",
        "--clock",
        "internal, midi (follow MIDI clock and transport on --in or --clock-in) or link (Ableton Link)",
        choices=CLOCKS,
    )
    clock_input: str | None = option(None, "--clock-in", "port MIDI clock comes from (default --in)", metavar="PORT")
    clock_out: bool = option(
        False, "--clock-out", "send MIDI clock, Start/Stop and Song Position on the MIDI port outputs"
    )
    # live control
    density: float = option(1.0, "--density", "notes per beat multiplier", bounds=DENSITY_BOUNDS, live="density")
    transpose: str = option(
        "off", "--transpose", "off, follow (the performer's key) or semitones such as -3", toml=(str, int)
    )
    controls: ControlMap | None = None  # a preset's [controls] table
    commands: bool | None = option(
        None,
        "--commands",
        "read typed commands (mode, model, temperature, panic, take, quit) from stdin (default: on a terminal)",
    )
    autosave_seconds: float | None = option(
        None, "--autosave", "rewrite the recording every S s", bounds=Bounds(1, note=" second"), metavar="S"
    )
    # long runs: memory and disk stay bounded however long the jam plays
    part_minutes: float = option(
        15.0,
        "--part-minutes",
        "write the recording in parts of M minutes, NAME-part001.mid, ... (memory stays bounded)",
        bounds=Bounds(0, 1440, low_open=True, note=" (a day)"),
        metavar="M",
    )
    wav_minutes: float = option(
        60.0,
        "--wav-minutes",
        f"with no audio device, the synth's WAV stops after M minutes (at most {WAV_MAX_MINUTES})",
        bounds=Bounds(
            0, WAV_MAX_MINUTES, low_open=True, note=" (a WAV file holds at most about 6 hours of 48 kHz stereo)"
        ),
        metavar="M",
    )
    worker: bool = option(
        False, "--worker", "run the model in a supervised child process, restarted if it crashes or hangs"
    )
    # supervision: the loopback health endpoint and the rotating log file
    health_port: int = option(
        0,
        "--health-port",
        "serve /healthz and Prometheus /metrics on 127.0.0.1:PORT (0: no endpoint)",
        metavar="PORT",
        group=SUPERVISION,
    )
    health_host: str = option(
        DEFAULT_HOST,
        "--health-host",
        "the loopback address the endpoint listens on (nothing but loopback is accepted)",
        metavar="ADDR",
        group=SUPERVISION,
    )
    log_file: Path | None = option(
        None, "--log-file", "also log to FILE, rotated at --log-max-bytes", metavar="FILE", group=SUPERVISION
    )
    log_max_bytes: int = option(
        DEFAULT_MAX_BYTES,
        "--log-max-bytes",
        "size cap of the log file before it rotates",
        metavar="N",
        group=SUPERVISION,
    )
    log_backups: int = option(
        DEFAULT_BACKUPS, "--log-backups", "rotated log files kept", metavar="N", group=SUPERVISION
    )

    def __post_init__(self) -> None:
        check_bounds(self)
        check_horizons(self.lookahead_beats, self.commit_beats)
        if self.rng_seed is not None:
            check_rng_seed(self.rng_seed)
        if self.record is not None:
            check_midi_name(self.record, "--record", " (the synth's audio is written beside it as NAME.wav)")
        check_health_address(self.health_host, self.health_port)
        check_log_file(self.log_file, self.log_max_bytes, self.log_backups, out_dir=self.out_dir)
        parse_transpose(self.transpose)


def parse_transpose(text: str) -> int | None:
    """'off' -> 0, 'follow' -> None (follow the performer's key), '-3' -> -3 semitones."""
    if text == "off":
        return 0
    if text == "follow":
        return None
    try:
        semitones = int(text)
    except ValueError:
        semitones = 99
    if not -24 <= semitones <= 24:
        raise ConfigError(f"transpose {text!r}: expected off, follow or semitones from -24 to 24")
    return semitones


def check_horizons(lookahead_beats: float, commit_beats: float) -> None:
    """A line commits within what it plans, and plans at most :data:`MAX_LOOKAHEAD_BEATS` ahead."""
    if not 0 < commit_beats <= lookahead_beats <= MAX_LOOKAHEAD_BEATS:
        raise ConfigError(
            f"commit horizon {commit_beats} and lookahead {lookahead_beats} beats: expected "
            f"0 < commit <= lookahead <= {MAX_LOOKAHEAD_BEATS}"
        )


def check_health_address(host: str, port: int, *, option: str = "--health-port") -> None:
    """Refuse a port outside 0-65535 (0: no endpoint) and any host that is not a loopback address."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(
            f"{option} {port!r}: expected a TCP port from 1 to 65535 on the loopback interface, or 0 for no endpoint"
        )
    if loopback_address(host) is None:
        raise ConfigError(
            f"--health-host {host!r}: the health endpoint has no authentication and listens on the loopback "
            "interface only: 127.0.0.1 (the default), another 127.x.y.z address, ::1 or localhost; "
            "reach it from elsewhere through an SSH tunnel or an authenticating proxy"
        )


def loopback_address(host: str) -> str | None:
    """The loopback IP address ``host`` names, or None when it is not one."""
    if not isinstance(host, str):
        return None
    if host.strip().lower() == "localhost":
        return DEFAULT_HOST
    try:
        address = ipaddress.ip_address(host.strip().strip("[]"))
    except ValueError:
        return None
    return str(address) if address.is_loopback else None
