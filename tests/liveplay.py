"""Live play of a model package through the planners on a manual clock: the checks every
model family's end-to-end test shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from livegen.engine.accompany import AccompanyPlanner, AccompanySettings
from livegen.engine.autonomous import AutonomousPlanner
from livegen.engine.callresponse import CallResponsePlanner, CallResponseSettings
from livegen.engine.jam import seed_events
from livegen.engine.live import LiveParams
from livegen.engine.planner import Commit
from livegen.models.step import StepGenerator
from livegen.music.events import decode_message
from livegen.music.midifile import read_midi
from livegen.music.time import PPQN


def note_ons(actions: list[Any]) -> list[tuple[int, int, int]]:
    """(tick, channel, pitch) of every committed note-on."""
    return [(e.tick, e.channel, e.data1) for a in actions if isinstance(a, Commit) for e in a.events if e.is_note_on]


def accompanies_and_replans(generator: StepGenerator, between: Any = None) -> tuple[list[Any], list[Any]]:
    """A performed note, 4 beats of accompaniment, another performed note, 8 more beats.

    Asserts the accompaniment starts after the listening window (2 beats) and that after
    the second note everything new starts from it; ``between()`` runs before the second
    note. Returns the actions before and after it.
    """
    planner = AccompanyPlanner(generator, LiveParams(), np.random.default_rng(0), AccompanySettings(listen_beats=2))
    planner.on_input(decode_message(0, (0x90, 64, 100)))
    planner.on_input(decode_message(240, (0x80, 64, 0)))
    actions: list[Any] = []
    for tick in range(0, 4 * PPQN, 10):  # a manual clock in 10-tick steps
        actions += planner.advance(tick)
    first = note_ons(actions)
    assert first and min(t for t, _, _ in first) >= 2 * PPQN
    if between is not None:
        between()
    # the performer plays again: the plan is re-made from its note
    planner.on_input(decode_message(4 * PPQN, (0x90, 67, 100)))
    planner.on_input(decode_message(4 * PPQN + 200, (0x80, 67, 0)))
    later: list[Any] = []
    for tick in range(4 * PPQN, 12 * PPQN, 10):
        later += planner.advance(tick)
    assert note_ons(later)
    assert all(t >= 4 * PPQN for t, _, _ in note_ons(later))
    return actions, later


def plays_on_its_own(generator: StepGenerator, package: Path) -> None:
    """Autonomous play from the package's seed: at least 4 notes, still playing after 8 beats."""
    seed = seed_events(read_midi(package / "seed.mid").notes)
    live = LiveParams()
    rng = np.random.default_rng(0)
    planner = AutonomousPlanner(
        generator, live, rng, seed, make_inner=lambda: CallResponsePlanner(generator, live, rng, CallResponseSettings())
    )
    actions: list[Any] = []
    for tick in range(0, 16 * PPQN, 10):
        actions += planner.advance(tick)
    onsets = note_ons(actions)
    assert len(onsets) >= 4 and max(t for t, _, _ in onsets) >= 8 * PPQN
