"""Model hot-swap: a step generator whose model can be replaced mid-performance.

Context: control (the planner's thread). :class:`SwappableGenerator` stands in
for the model a planner drives. It remembers the last events fed since the last
reset, so :meth:`SwappableGenerator.swap` can prime the new model with the same
context and the planner carries on without knowing a swap happened. Snapshots
carry that context too: restoring a snapshot taken before a swap rebuilds the
state in the new model by replaying it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from livegen.models.sampling import SamplingParams
from livegen.models.step import StepEvent, StepGenerator

#: Events of context a swapped-in model is primed with.
CONTEXT_EVENTS = 32


@dataclass(frozen=True, slots=True)
class _Snapshot:
    owner: int  # which model the inner snapshot belongs to (its swap count)
    inner: object
    context: tuple[StepEvent, ...]
    fed: int


class SwappableGenerator:
    """A :class:`StepGenerator` over a model that :meth:`swap` replaces."""

    def __init__(self, generator: StepGenerator, name: str = "") -> None:
        self.current = generator
        self.name = name
        self.swaps = 0
        self._context: tuple[StepEvent, ...] = ()
        self._fed = 0

    def swap(self, generator: StepGenerator, name: str = "") -> None:
        """Continue with ``generator``, primed with the recent context."""
        generator.reset()
        for event in self._context:
            generator.feed(event)
        self.current = generator
        self.name = name
        self.swaps += 1

    # ---- StepGenerator ------------------------------------------------------------

    def reset(self) -> None:
        self.current.reset()
        self._context = ()
        self._fed = 0

    def feed(self, event: StepEvent) -> None:
        self.current.feed(event)
        self._context = (*self._context[-(CONTEXT_EVENTS - 1) :], event)
        self._fed += 1

    def sample(self, params: SamplingParams, rng: np.random.Generator) -> StepEvent:
        return self.current.sample(params, rng)

    def snapshot(self) -> object:
        return _Snapshot(self.swaps, self.current.snapshot(), self._context, self._fed)

    def restore(self, snapshot: object) -> None:
        assert isinstance(snapshot, _Snapshot)
        if snapshot.owner == self.swaps:
            self.current.restore(snapshot.inner)
        else:  # taken before a swap: rebuild the state in the model now playing
            self.current.reset()
            for event in snapshot.context:
                self.current.feed(event)
        self._context = snapshot.context
        self._fed = snapshot.fed

    @property
    def one_line(self) -> bool:
        return self.current.one_line

    @property
    def velocities(self) -> bool:
        return self.current.velocities

    @property
    def fed(self) -> int:
        return self._fed

    @property
    def programs(self) -> dict[int, int] | None:
        """A multi-track model's GM program per channel (None for a single-part model)."""
        return self.current.programs
