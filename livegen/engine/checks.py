"""Checks of option values that more than one command reads (``jam``, ``render``, ``evaluate``).

Context: setup. Each check raises :class:`~livegen.errors.ConfigError` naming the option,
the value and what is accepted, so every command refuses a value with the same words.
"""

from __future__ import annotations

from pathlib import Path

from livegen.engine.options import Bounds
from livegen.errors import ConfigError

#: Tempi a jam or a render plays at, BPM.
TEMPO_MIN, TEMPO_MAX = 20, 400
TEMPO_BOUNDS = Bounds(TEMPO_MIN, TEMPO_MAX, note=" BPM")
#: Names a MIDI file may end in.
MIDI_SUFFIXES = (".mid", ".midi")


def check_tempo(tempo: float, option: str = "--tempo") -> None:
    """Refuse a tempo outside :data:`TEMPO_MIN` to :data:`TEMPO_MAX` BPM (nan included)."""
    TEMPO_BOUNDS.check(tempo, option)


def check_rng_seed(seed: int, option: str = "--rng-seed") -> None:
    """Refuse a seed numpy's generators cannot take (a negative one)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"{option} {seed}: expected a whole number of 0 or more")


def check_midi_name(path: Path, option: str, hint: str = "") -> None:
    """Refuse a MIDI destination whose name says it is something else (``take.wav``)."""
    if Path(path).suffix.lower() not in MIDI_SUFFIXES:
        raise ConfigError(f"{option} {path}: expected a MIDI file name ending in .mid or .midi{hint}")
