"""The ``step`` kind: one event at a time through a streaming graph with recurrent state.

Context: control (the planner's thread; never the scheduler's).

:class:`StreamingGraph` carries the state tensors named in the manifest from one
call to the next, so an adapter only says how an event becomes the graph's event
input and how the outputs become a proposal. A state is a tuple of arrays that
are never written in place: a snapshot costs nothing and can be restored when
planned events are withdrawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from livegen.models.manifest import GraphSpec
from livegen.models.package import ModelPackage, zero_feeds
from livegen.models.sampling import SamplingParams
from livegen.music.events import Note


@dataclass(frozen=True, slots=True)
class StepEvent:
    """A note as a step model sees it: pitch, ticks since the previous onset, duration in ticks.

    ``channel``: where a multi-track model wants the note (its track's channel); None
    leaves it to the planner's channel. Performed notes are fed with None.

    ``bar_phase``: ticks from the bar line before the note's onset to the onset, when the
    planner feeding it knows where bars fall (None otherwise). Models that think in bars
    (the ``block`` kind) align to it; the others ignore it. A generator's own proposals
    leave it None.
    """

    pitch: int
    step: int
    duration: int
    velocity: int = 90
    channel: int | None = None
    bar_phase: int | None = None


def step_events(notes: Sequence[Note]) -> list[StepEvent]:
    """A phrase as the events a step model hears (onset order, steps between onsets)."""
    events, previous = [], None
    for note in sorted(notes, key=lambda n: (n.start, n.pitch)):
        events.append(
            StepEvent(note.pitch, 0 if previous is None else note.start - previous, note.duration, note.velocity)
        )
        previous = note.start
    return events


class StepGenerator(Protocol):
    """What the planner needs from a ``step`` model."""

    def reset(self) -> None:
        """Forget all context (a new phrase)."""

    def feed(self, event: StepEvent) -> None:
        """Fold a performed or generated event into the state."""

    def sample(self, params: SamplingParams, rng: np.random.Generator) -> StepEvent:
        """Propose the next event from the state (at least one event must have been fed)."""

    def snapshot(self) -> object:
        """An opaque, immutable copy of the state."""

    def restore(self, snapshot: object) -> None:
        """Return to a state taken by :meth:`snapshot`."""

    @property
    def fed(self) -> int:
        """How many events the state holds since the last reset."""

    @property
    def one_line(self) -> bool:
        """Whether the model plays one line that the performer's notes join (the ``step`` kind),
        rather than voices of its own the performer's notes are placed beside."""

    @property
    def programs(self) -> dict[int, int] | None:
        """A multi-track model's GM program per MIDI channel, or None for a single-part model."""

    @property
    def velocities(self) -> bool:
        """Whether the velocities of its events are the model's own (its family generates them);
        otherwise the host gives its notes the performer's dynamics (``livegen/engine/dynamics.py``)."""


class StreamingGraph:
    """Runs one graph of a package step by step, carrying its declared state."""

    def __init__(self, package: ModelPackage, role: str = "step") -> None:
        self.spec: GraphSpec = package.manifest.graphs[role]
        self.session = package.sessions[role]
        self._output_names = [t.name for t in self.spec.outputs]
        self._initial = {name: arr for name, arr in zero_feeds(self.spec).items() if self._is_state(name)}
        self.state: dict[str, np.ndarray] = dict(self._initial)

    def _is_state(self, name: str) -> bool:
        return any(src == name for src, _ in self.spec.state)

    def reset(self) -> None:
        self.state = dict(self._initial)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One step: ``inputs`` plus the current state in, outputs out; the state advances."""
        feeds = {**self.state, **inputs}
        values = self.session.run(self._output_names, feeds)
        outputs = dict(zip(self._output_names, values, strict=True))
        self.state = {src: outputs[dst] for src, dst in self.spec.state}
        return outputs
