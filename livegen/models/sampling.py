"""Choosing the next value from a model's distribution.

Context: control (the planner's thread). Pure numpy over small vectors; the
random generator is passed in so a render with a given seed is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from livegen.errors import ConfigError

if TYPE_CHECKING:
    from livegen.music.keys import Key

#: Scale steps in semitones above the root.
SCALES: dict[str, tuple[int, ...]] = {
    "chromatic": tuple(range(12)),
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "pentatonic": (0, 2, 4, 7, 9),
    "minor-pentatonic": (0, 3, 5, 7, 10),
    "blues": (0, 3, 5, 6, 7, 10),
}
#: Blocks an unconditional block model draws by default (see :attr:`SamplingParams.candidates`).
DEFAULT_CANDIDATES = 8
PITCH_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to draw from a model: temperature, nucleus (top-p), range and scale.

    ``candidates``: how many blocks an unconditional ``block`` model draws to keep the
    one that best fits what the performer just played (other models ignore it).
    """

    temperature: float = 1.0
    top_p: float = 0.95
    pitch_min: int = 0
    pitch_max: int = 127
    scale: str = "chromatic"
    root: int = 0  # pitch class of the scale's root, 0 = C
    candidates: int = DEFAULT_CANDIDATES

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"temperature {self.temperature}: expected a number above 0")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p {self.top_p}: expected a number in (0, 1]")
        if not 0 <= self.pitch_min <= self.pitch_max <= 127:
            raise ConfigError(f"pitch range {self.pitch_min}..{self.pitch_max}: expected 0 <= min <= max <= 127")
        if self.scale not in SCALES:
            raise ConfigError(f"scale {self.scale!r}: expected one of {', '.join(SCALES)}")
        if not 0 <= self.root <= 11:
            raise ConfigError(f"root {self.root}: expected a pitch class 0..11")
        if not 1 <= self.candidates <= 64:
            raise ConfigError(f"candidates {self.candidates}: expected 1 to 64")

    def following(self, key: Key | None) -> SamplingParams:
        """These parameters in ``key`` (a performer's followed key) while no scale is chosen."""
        if key is None or self.scale != "chromatic":
            return self
        return replace(self, root=key.root, scale=key.mode)

    def pitch_mask(self) -> np.ndarray:
        """Boolean [128]: the pitches this draw may produce."""
        mask = np.zeros(128, dtype=bool)
        mask[self.pitch_min : self.pitch_max + 1] = True
        allowed = np.zeros(12, dtype=bool)
        allowed[[(self.root + s) % 12 for s in SCALES[self.scale]]] = True
        return mask & np.tile(allowed, 11)[:128]


def parse_key(text: str) -> tuple[int, str]:
    """'D dorian', 'A minor', 'F#' -> (root pitch class, scale name)."""
    parts = text.strip().split()
    name = parts[0][:1].upper() + parts[0][1:] if parts else ""
    flats = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#"}
    name = flats.get(name, name)
    if name not in PITCH_NAMES:
        raise ConfigError(f"key {text!r}: expected a root such as C, F#, Bb followed by a scale ({', '.join(SCALES)})")
    scale = parts[1].lower() if len(parts) > 1 else "major"
    if scale not in SCALES:
        raise ConfigError(f"key {text!r}: unknown scale {scale!r}; expected one of {', '.join(SCALES)}")
    return PITCH_NAMES.index(name), scale


def sample_logits(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator, mask: np.ndarray) -> int:
    """Draw an index from ``logits`` with temperature and top-p, restricted to ``mask``.

    When the mask leaves nothing, the unmasked argmax is returned rather than failing
    mid-performance.
    """
    scaled = logits.astype(np.float64) / params.temperature
    scaled = np.where(mask, scaled, -np.inf)
    top = float(np.max(scaled))
    if not np.isfinite(top):
        return int(np.argmax(logits))
    probs = np.exp(scaled - top)
    probs /= probs.sum()
    if params.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        keep = int(np.searchsorted(cumulative, params.top_p) + 1)
        chosen = order[:keep]
        kept = probs[chosen] / probs[chosen].sum()
        return int(chosen[rng.choice(len(chosen), p=kept)])
    return int(rng.choice(len(probs), p=probs))
