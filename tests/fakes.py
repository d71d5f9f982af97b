"""Test twins that are not devices: a scripted step generator."""

from __future__ import annotations

import numpy as np

from livegen.models.sampling import SamplingParams
from livegen.models.step import StepEvent


class ScriptedGenerator:
    """A step generator that proposes a fixed cycle of events and logs what it was fed."""

    one_line = True
    programs = None
    velocities = False

    def __init__(self, script: list[StepEvent]) -> None:
        self.script = script
        self.fed_events: list[StepEvent] = []
        self.resets = 0
        self._index = 0
        self._fed = 0

    @property
    def fed(self) -> int:
        return self._fed

    def reset(self) -> None:
        self.resets += 1
        self._index = 0
        self._fed = 0

    def feed(self, event: StepEvent) -> None:
        self.fed_events.append(event)
        self._fed += 1

    def sample(self, params: SamplingParams, rng: np.random.Generator) -> StepEvent:
        event = self.script[self._index % len(self.script)]
        self._index += 1
        return event

    def snapshot(self) -> object:
        return (self._index, self._fed)

    def restore(self, snapshot: object) -> None:
        self._index, self._fed = snapshot  # type: ignore[misc]


class CountingGenerator:
    """A step generator whose next pitch is ``base`` plus how many events it holds, so a
    folded-in note visibly changes everything sampled after it; steps and durations fixed."""

    one_line = True
    programs = None
    velocities = False

    def __init__(self, base: int = 48, step: int = 240, duration: int = 240) -> None:
        self.base, self.step, self.duration = base, step, duration
        self.fed_events: list[StepEvent] = []
        self.resets = 0
        self._fed = 0

    @property
    def fed(self) -> int:
        return self._fed

    def reset(self) -> None:
        self.resets += 1
        self._fed = 0

    def feed(self, event: StepEvent) -> None:
        self.fed_events.append(event)
        self._fed += 1

    def sample(self, params: SamplingParams, rng: np.random.Generator) -> StepEvent:
        return StepEvent(self.base + self._fed, self.step, self.duration)

    def snapshot(self) -> object:
        return self._fed

    def restore(self, snapshot: object) -> None:
        assert isinstance(snapshot, int)
        self._fed = snapshot
