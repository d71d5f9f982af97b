"""A planner never stands still: the densest setting and a model of endless chord notes both move on."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from livegen.engine.accompany import AccompanyPlanner, AccompanySettings
from livegen.engine.callresponse import CallResponsePlanner, CallResponseSettings
from livegen.engine.live import MAX_CHORD, LiveParams
from livegen.engine.planner import Commit
from livegen.models.step import StepEvent
from livegen.music.events import decode_message
from livegen.music.time import PPQN, SIXTEENTH
from tests.fakes import ScriptedGenerator


def note_ons(actions) -> list[int]:
    return [e.tick for a in actions if isinstance(a, Commit) for e in a.events if e.is_note_on]


def accompany(script: list[StepEvent], density: float) -> list[int]:
    planner = AccompanyPlanner(
        ScriptedGenerator(script), LiveParams(density=density), np.random.default_rng(0), AccompanySettings()
    )
    planner.on_input(decode_message(0, (0x90, 60, 100)))
    planner.on_input(decode_message(PPQN, (0x80, 60, 0)))
    actions = []
    for tick in range(0, 8 * PPQN, 10):
        actions += planner.advance(tick)
    return note_ons(actions)


def test_sixteenths_at_density_4_advance_one_grid_step_each() -> None:
    ons = accompany([StepEvent(64, SIXTEENTH, SIXTEENTH)], density=4.0)
    assert len(ons) >= 8
    assert all(b - a == SIXTEENTH for a, b in pairwise(ons))  # the grid is the floor


@pytest.mark.parametrize("mode", ["accompany", "call-response"])
def test_endless_chord_notes_move_on_after_max_chord(mode: str) -> None:
    script = [StepEvent(60 + i, 0, PPQN) for i in range(5)]
    if mode == "accompany":
        ons = accompany(script, density=1.0)
    else:
        planner = CallResponsePlanner(
            ScriptedGenerator(script), LiveParams(response_bars=1), np.random.default_rng(0),
            CallResponseSettings(silence_beats=1),
        )  # fmt: skip
        actions = planner.on_input(decode_message(0, (0x90, 60, 100))) + planner.on_input(
            decode_message(PPQN, (0x80, 60, 0))
        )
        for tick in range(0, 8 * PPQN, 10):
            actions += planner.advance(tick)
        ons = note_ons(actions)
    assert len(ons) > MAX_CHORD
    per_onset = {t: ons.count(t) for t in ons}
    assert max(per_onset.values()) <= MAX_CHORD and len(per_onset) >= 2
