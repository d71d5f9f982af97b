"""Planners the inference-worker tests build inside the worker process (importable by ``spawn``).

Context: the worker process (setup, then its main thread).
"""

from __future__ import annotations

import time

import numpy as np

from livegen.engine.autonomous import AutonomousPlanner, AutonomousSettings
from livegen.engine.callresponse import CallResponsePlanner
from livegen.engine.live import LiveParams
from livegen.engine.planner import Planner
from livegen.models.sampling import SamplingParams
from livegen.models.step import StepEvent
from livegen.music.time import PPQN
from tests.fakes import ScriptedGenerator

#: Quarter-note steps, each note held a whole bar: four notes sound at any time.
CHORDS = [StepEvent(p, PPQN, 4 * PPQN) for p in (60, 64, 67, 72, 62, 65, 69, 74)]
#: Sixteenths, one at a time.
SIXTEENTHS = [StepEvent(p, PPQN // 4, PPQN // 4) for p in (60, 62, 64, 65, 67, 69, 71, 72)]


class SlowGenerator(ScriptedGenerator):
    """A scripted generator that takes ``delay_s`` for every note it samples."""

    def __init__(self, script: list[StepEvent], delay_s: float) -> None:
        super().__init__(script)
        self.delay_s = delay_s

    def sample(self, params: SamplingParams, rng: np.random.Generator) -> StepEvent:
        time.sleep(self.delay_s)
        return super().sample(params, rng)


class CrashingGenerator(ScriptedGenerator):
    """A scripted generator whose proposals fail after the first ``good`` (as an adapter given an
    infinite step once did: every worker it runs in crashes a moment after it starts)."""

    def __init__(self, script: list[StepEvent], good: int) -> None:
        super().__init__(script)
        self.good = good

    def sample(self, params: SamplingParams, rng: np.random.Generator) -> StepEvent:
        if self._index >= self.good:
            raise OverflowError("cannot convert float infinity to integer")
        return super().sample(params, rng)


def _autonomous(generator: ScriptedGenerator, seed: list[StepEvent] | None) -> Planner:
    live = LiveParams()
    rng = np.random.default_rng(0)
    settings = AutonomousSettings(max_same_pitch=1000, max_bar_repeats=1000, lookahead_beats=2, commit_beats=1)
    return AutonomousPlanner(
        generator,
        live,
        rng,
        seed or [StepEvent(60, 0, PPQN)],
        lambda: CallResponsePlanner(generator, live, rng),
        settings,
    )


def chords(seed: list[StepEvent] | None) -> Planner:
    """Autonomous play of overlapping whole-bar notes."""
    return _autonomous(ScriptedGenerator(CHORDS), seed)


def replays_seed(seed: list[StepEvent] | None) -> Planner:
    """Autonomous play of :data:`CHORDS` at first; a restarted worker plays the pitches it was seeded with."""
    script = [StepEvent(e.pitch, PPQN, PPQN) for e in seed] if seed else CHORDS
    return _autonomous(ScriptedGenerator(script), seed)


def slow_sixteenths(seed: list[StepEvent] | None) -> Planner:
    """Autonomous sixteenths from a generator that takes two sixteenths (at 120 BPM) per note."""
    return _autonomous(SlowGenerator(SIXTEENTHS, 0.25), seed)


def crashes(seed: list[StepEvent] | None) -> Planner:
    """Autonomous sixteenths from a generator that fails after four proposals, in every worker."""
    return _autonomous(CrashingGenerator(SIXTEENTHS, 4), seed)


def broken(seed: list[StepEvent] | None) -> Planner:
    """A planner that cannot be built: a broken model package, as the worker reports it."""
    from livegen.errors import PackageError

    raise PackageError("models/broken/livegen.toml: field 'kind': expected one of step, frame, block")


def accompanies(seed: list[StepEvent] | None) -> Planner:
    """An accompaniment of sixteenths with a seed of its own: it plays when a transport starts."""
    from livegen.engine.accompany import AccompanyPlanner

    return AccompanyPlanner(
        ScriptedGenerator(SIXTEENTHS), LiveParams(), np.random.default_rng(0), seed=[StepEvent(60, 0, PPQN)]
    )
