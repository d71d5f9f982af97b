"""Dynamics: how loud each generated note is, from how the performer plays.

Context: control thread (the planner that owns it). A planner tells :meth:`Dynamics.hear`
every performed note-on (and the seed's notes, which stand for the performer before
anyone plays) and asks :meth:`Dynamics.velocity` for each note it commits.

A generated note's velocity is the performer's *level* plus the performer's *accent* at
the note's place in the bar, plus the *phrase shape*, kept within the jam's velocity range:

- **Level**: the mean velocity of the performer's note-ons over the last
  :data:`WINDOW_BARS` bars, so a crescendo is followed as it happens.
- **Accent**: per sixteenth of the bar, how much louder or softer than the level the
  performer plays there over the window, shrunk toward a gentle default accent (a bar's
  downbeat +6, a beat +3, an off-beat sixteenth -3) with :data:`PRIOR_NOTES` notes' weight.
  A performer who plays flat at a place teaches flat there; where they have not played,
  the default holds, so a fixed-velocity keyboard still gets a pulse.
- **Phrase shape**: how much the performer's velocity rose or fell across their last
  phrase (a least-squares line through its note-ons, from its first to its last), which
  a call-and-response answer repeats across its own length, centred on the level: a
  swelling call gets a swelling answer, a fading one a fading answer.
- **The model's own velocities** (a family whose notes carry them: ``crnngan``) replace
  the accent: the model's deviation from its own running mean rides on the level.

Written by hand: a few running means; no library models a performer's dynamics.
"""

from __future__ import annotations

from collections import deque

from livegen.engine.live import LiveParams
from livegen.models.step import StepEvent
from livegen.music.time import PPQN

#: The level and the accents are measured over this many bars of playing.
WINDOW_BARS = 2
#: The default accent's weight, in performed notes, at each place in the bar.
PRIOR_NOTES = 1
#: The level before anything is heard.
DEFAULT_LEVEL = 90
#: A phrase's shape is fitted to at most its last this many notes (accompaniment and autonomous
#: play never end a phrase: what they hear stays bounded).
PHRASE_NOTES = 256
#: The phrase shape rises or falls by at most this much across an answer.
MAX_PHRASE_CHANGE = 30.0


def default_accent(position: int) -> float:
    """The gentle accent at ``position`` ticks into a bar."""
    if position == 0:
        return 6.0
    if position % PPQN == 0:
        return 3.0
    if position % (PPQN // 2) == 0:
        return 0.0
    return -3.0


class Dynamics:
    """The performer's dynamics, heard and lent to the model's notes (control thread).

    ``bar``: ticks per bar (bars start at tick 0). ``live.velocity_range``: the lowest and
    highest velocity a generated note may have.
    """

    def __init__(self, bar: int, live: LiveParams) -> None:
        self.bar = bar
        self.live = live
        self._heard: deque[tuple[int, int]] = deque()  # (tick, velocity) over the window
        self._own_mean: float | None = None
        self._phrase: deque[tuple[int, int]] = deque(maxlen=PHRASE_NOTES)  # the phrase being played
        self.phrase_change = 0.0  # the last finished phrase's rise (or fall), velocity

    # ---- hearing ------------------------------------------------------------------

    def hear(self, tick: int, velocity: int) -> None:
        """A performed note-on (or a seed note) at ``tick``."""
        heard = self._heard
        heard.append((tick, velocity))
        while heard and heard[0][0] <= tick - WINDOW_BARS * self.bar:
            heard.popleft()
        self._phrase.append((tick, velocity))

    def hear_seed(self, events: list[StepEvent]) -> None:
        """The seed's notes, from tick 0: they stand for the performer until the performer plays."""
        onset = 0
        for event in events:
            onset += event.step
            self.hear(onset, event.velocity)

    def end_phrase(self) -> None:
        """The performer's phrase ended (call-and-response answers now): keep its shape."""
        self.phrase_change = _change_across(list(self._phrase))
        self._phrase.clear()

    @property
    def level(self) -> float:
        """The performer's mean velocity over the window (:data:`DEFAULT_LEVEL` before any)."""
        if not self._heard:
            return float(DEFAULT_LEVEL)
        return sum(v for _, v in self._heard) / len(self._heard)

    def accent(self, position: int, level: float | None = None) -> float:
        """The performer's accent at ``position`` ticks into the bar, shrunk toward the default
        (``level``: :attr:`level`, when the caller has it)."""
        heard = self._heard
        if not heard:
            return default_accent(position)
        level = self.level if level is None else level
        place = position // (PPQN // 4)
        deviations = [v - level for t, v in heard if (t % self.bar) // (PPQN // 4) == place]
        prior = default_accent(position)
        return (sum(deviations) + PRIOR_NOTES * prior) / (len(deviations) + PRIOR_NOTES)

    # ---- lending ------------------------------------------------------------------

    def velocity(self, tick: int, *, own: int | None = None, answer: tuple[int, int] | None = None) -> int:
        """The velocity of a generated note at ``tick``.

        ``own``: the model's own velocity for it, if its family makes one. ``answer``:
        (start, length) in ticks of the answer the note belongs to, which repeats the last
        phrase's shape.
        """
        level = self.level
        if own is not None:
            mean = own if self._own_mean is None else self._own_mean
            self._own_mean = 0.95 * mean + 0.05 * own
            shape = own - mean
        else:
            shape = self.accent(tick % self.bar, level)
        if answer is not None:
            start, length = answer
            shape += self.phrase_change * (min(max((tick - start) / max(length, 1), 0.0), 1.0) - 0.5)
        low, high = self.live.velocity_range
        return max(low, min(high, round(level + shape)))


def _change_across(notes: list[tuple[int, int]]) -> float:
    """The rise of a least-squares line of velocity over time from the first note to the last,
    within :data:`MAX_PHRASE_CHANGE` either way (0 for fewer than three notes)."""
    if len(notes) < 3:
        return 0.0
    n = len(notes)
    mean_t = sum(t for t, _ in notes) / n
    mean_v = sum(v for _, v in notes) / n
    sxx = sum((t - mean_t) ** 2 for t, _ in notes)
    if sxx <= 0:
        return 0.0
    slope = sum((t - mean_t) * (v - mean_v) for t, v in notes) / sxx
    change = slope * (notes[-1][0] - notes[0][0])
    return max(-MAX_PHRASE_CHANGE, min(MAX_PHRASE_CHANGE, change))
