"""The planner's message interface: what goes in (performer input, time) and what comes out.

Context: control. A planner is plain logic over musical ticks: it never reads a
clock and never touches a port, so the same planner runs live, in an offline
render and in a child process, and tests compare its output exactly.

Out come :class:`Commit` (events that are final: the scheduler will send them)
and :class:`Withdraw` (drop what is still pending of a generation and silence
what sounds of it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from livegen.engine.controls import ControlChange
from livegen.music.events import MidiEvent


@dataclass(frozen=True, slots=True)
class Commit:
    events: tuple[MidiEvent, ...]
    generation: int


@dataclass(frozen=True, slots=True)
class Withdraw:
    generation: int


@dataclass(frozen=True, slots=True)
class Panic:
    """Silence every output group now (the panic control)."""


@dataclass(frozen=True, slots=True)
class SaveTake:
    """Write what was recorded so far to a new MIDI file now; recording goes on (the record control)."""


Action = Commit | Withdraw | Panic | SaveTake


@dataclass(frozen=True, slots=True)
class PlannerReport:
    """What a planner tells the jam's report when the jam ends."""

    changes: tuple[str, ...] = ()  # live changes (controls, mode, model), in order
    reseeds: int = 0  # autonomous mode's reseeds


class Planner(Protocol):
    """A follow mode driving a generator; planners subclass it for the defaults of the optional members."""

    #: The model playing now, where the planner swaps models (the conductor); None otherwise.
    model: str | None = None
    #: Planner calls ended by a model run its time budget refused.
    skipped_steps: int = 0

    def on_input(self, event: MidiEvent) -> list[Action]:
        """Fold in one performed channel message (at the tick it arrived)."""

    def advance(self, now_tick: int) -> list[Action]:
        """Plan ahead of ``now_tick`` (called often: every few milliseconds live)."""

    def plan_ahead(self, now_tick: int) -> None:
        """Work that need not delay a commit (sampling beyond the commit horizon), called once the
        actions :meth:`advance` returned are applied. None by default."""
        return None

    def post(self, change: ControlChange) -> None:
        """Queue a control change for the control thread (any thread). Ignored by default: only the
        conductor has live controls."""
        return None

    def report(self) -> PlannerReport:
        """What the jam's report says of this planner."""
        return PlannerReport()

    @property
    def programs(self) -> dict[int, int] | None:
        """MIDI channel -> GM program of the model's tracks (a multi-track model's); None by default."""
        return None

    def silence(self) -> list[Action]:
        """Stop at once (panic, a mode switch, the transport stopping): drop plans, silence what sounds."""

    def resume(self, tick: int) -> list[Action]:
        """A followed transport started or continued at ``tick``: play from there without listening
        first (a DAW user hears the model from the first beat). Nothing by default: a mode that
        answers the performer waits for them."""
        return []

    def replan(self) -> None:
        """Sample afresh whatever is planned but not committed (after a model swap)."""

    @property
    def responses(self) -> int:
        """How many responses have played to their end."""

    @property
    def busy(self) -> bool:
        """True while a phrase is being heard or a response is planned or playing."""
