"""What a performer turns while playing: the parameters every planner reads live.

Context: control (the planner's thread). One :class:`LiveParams` is shared by
the planners of a jam; a control change (a CC knob, a typed command) replaces a
value here and the next sampled note uses it. Nothing is copied into a planner
at construction, so a switch of mode keeps what the performer set.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import count

from livegen.engine.options import Bounds
from livegen.errors import ConfigError
from livegen.models.sampling import SamplingParams

#: Density multiplies notes per beat within these bounds.
DENSITY_BOUNDS = Bounds(0.25, 4.0, note=" (a multiplier of notes per beat)")
#: Response (and accompaniment tail) length bounds.
BARS_BOUNDS = Bounds(1, 256, note=" bars")
#: Sampling bounds for a model whose manifest gives none.
TEMPERATURE_RANGE = (0.05, 4.0)
TOP_P_RANGE = (0.05, 1.0)
DENSITY_RANGE = (DENSITY_BOUNDS.low, DENSITY_BOUNDS.high)
RESPONSE_BARS_RANGE = (BARS_BOUNDS.low, BARS_BOUNDS.high)
#: What each range counts, for messages.
_UNITS = {
    "temperature": " (what the model accepts)",
    "top_p": " (what the model accepts)",
    "density": DENSITY_BOUNDS.note,
    "response_bars": BARS_BOUNDS.note,
}


def check_live(name: str, value: float, accepted: tuple[float, float], option: str | None = None) -> float:
    """Refuse a live parameter's value outside ``accepted`` (nan included), naming ``option``.

    The command line, a preset and a typed command refuse a value with these words;
    ``option`` is how the user spelled the parameter (``--density``; default ``density``).
    """
    low, high = accepted
    return Bounds(low, high, note=_UNITS.get(name, "")).check(value, option or name.replace("_", "-"))


#: Notes a planner places at one onset before it moves on a step: a model proposing
#: chord notes (step 0) for ever must not hold the planner at one tick.
MAX_CHORD = 16


@dataclass(slots=True)
class LiveParams:
    """Sampling, density and length as they are now; ``transpose`` semitones applied to output."""

    sampling: SamplingParams = field(default_factory=SamplingParams)
    density: float = 1.0
    response_bars: int = 4
    transpose: int = 0  # semitones added to the model's pitches (and taken from the performer's it hears)
    velocity_range: tuple[int, int] = (1, 127)  # generated notes' velocities stay within (see engine/dynamics.py)
    temperature_range: tuple[float, float] = TEMPERATURE_RANGE
    top_p_range: tuple[float, float] = TOP_P_RANGE

    def __post_init__(self) -> None:
        self.set("density", self.density)
        self.set("response_bars", self.response_bars)

    def accepted(self, name: str) -> tuple[float, float]:
        """The range of a numeric parameter (the model's own for temperature and top_p)."""
        ranges = {
            "temperature": self.temperature_range,
            "top_p": self.top_p_range,
            "density": DENSITY_RANGE,
            "response_bars": RESPONSE_BARS_RANGE,
        }
        if name not in ranges:
            raise ConfigError(f"live parameter {name!r}: expected temperature, top_p, density or response_bars")
        return ranges[name]

    def check(self, name: str, value: float, option: str | None = None) -> float:
        """Refuse ``value`` outside the parameter's range (a typed command), as the command line does."""
        return check_live(name, value, self.accepted(name), option)

    def set(self, name: str, value: float) -> float:
        """Set one numeric parameter, clamped to its range (a knob's scale may pass it); returns the value set."""
        if name == "temperature":
            low, high = self.temperature_range
            value = min(high, max(low, float(value)))
            self.sampling = replace(self.sampling, temperature=value)
        elif name == "top_p":
            low, high = self.top_p_range
            value = min(high, max(low, float(value)))
            self.sampling = replace(self.sampling, top_p=value)
        elif name == "density":
            value = min(DENSITY_RANGE[1], max(DENSITY_RANGE[0], float(value)))
            self.density = value
        elif name == "response_bars":
            value = int(min(RESPONSE_BARS_RANGE[1], max(RESPONSE_BARS_RANGE[0], round(value))))
            self.response_bars = value
        else:
            raise ConfigError(f"live parameter {name!r}: expected temperature, top_p, density or response_bars")
        return value

    def to_model(self, pitch: int) -> int:
        """A performed pitch as the model hears it (in the model's own key)."""
        return min(127, max(0, pitch - self.transpose))

    def from_model(self, pitch: int) -> int:
        """A generated pitch as it sounds (in the performer's key)."""
        return min(127, max(0, pitch + self.transpose))

    def scale_time(self, ticks: int) -> int:
        """A generated step or duration at the current density (more notes per beat: shorter)."""
        return round(ticks / self.density) if self.density != 1.0 else ticks


class Generations:
    """Numbers for batches of committed events, unique across every planner of a jam."""

    def __init__(self) -> None:
        self._next = count(1)

    def new(self) -> int:
        return next(self._next)
