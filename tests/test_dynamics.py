"""Dynamics of generated notes (:mod:`livegen.engine.dynamics`): level, accents, phrase shape, range."""

from __future__ import annotations

import numpy as np
import pytest

from livegen.engine.callresponse import CallResponsePlanner, CallResponseSettings
from livegen.engine.dynamics import Dynamics
from livegen.engine.jam import parse_velocity_range
from livegen.engine.live import LiveParams
from livegen.engine.planner import Commit
from livegen.errors import ConfigError
from livegen.models.step import StepEvent
from livegen.music.events import decode_message
from tests.fakes import ScriptedGenerator

BAR = 1920  # ticks of a 4/4 bar
SIXTEENTH = 120


def test_before_anything_is_heard_the_default_level_with_a_gentle_pulse():
    d = Dynamics(BAR, LiveParams())
    assert [d.velocity(t) for t in (0, 480, 240, 120)] == [96, 93, 90, 87]


def test_the_level_follows_the_performer_over_the_last_two_bars():
    d = Dynamics(BAR, LiveParams())
    for k in range(16):
        d.hear(k * 240, 40)  # two soft bars of eighths
    assert round(d.level) == 40
    for k in range(16, 32):
        d.hear(k * 240, 110)  # two loud bars: the soft ones leave the window
    assert round(d.level) == 110


def test_a_performer_who_accents_the_offbeats_teaches_the_model_to():
    d = Dynamics(BAR, LiveParams())
    for bar in range(2):
        for k in range(8):  # eighths: the off-beat ones loud
            d.hear(bar * BAR + k * 240, 100 if k % 2 else 60)
    on_beat, off_beat = d.velocity(2 * BAR + 480), d.velocity(2 * BAR + 720)
    assert off_beat - on_beat >= 25  # (the default alone would make the beat louder)


def test_an_answer_repeats_the_shape_of_the_call():
    d = Dynamics(BAR, LiveParams())
    for k in range(8):
        d.hear(k * 240, 50 + 8 * k)  # a crescendo over one bar: 50 to 106
    d.end_phrase()
    answer = (2 * BAR, 2 * BAR)
    start, end = d.velocity(2 * BAR + 240, answer=answer), d.velocity(4 * BAR - 240, answer=answer)
    assert end - start > 35  # rising as the call rose (56 across a fitted line, capped at 30 each side)
    for k in range(8):
        d.hear(10 * BAR + k * 240, 106 - 8 * k)  # then a diminuendo
    d.end_phrase()
    answer = (12 * BAR, 2 * BAR)
    assert d.velocity(14 * BAR - 240, answer=answer) < d.velocity(12 * BAR + 240, answer=answer) - 35


def test_the_range_holds_and_the_models_own_velocities_ride_on_the_level():
    live = LiveParams(velocity_range=(50, 70))
    d = Dynamics(BAR, live)
    for k in range(8):
        d.hear(k * 240, 90)
    assert d.velocity(BAR) == 70
    live.velocity_range = (1, 127)
    assert d.velocity(BAR, own=80) == 90  # its first note sets its own mean
    assert d.velocity(BAR + 240, own=100) == 90 + 20  # 20 over its mean: over the performer's level
    assert d.velocity(BAR + 480, own=60) < 90  # under its mean: under the level


@pytest.mark.parametrize("text", ["110", "0-90", "90-40", "a-b", "40-128"])
def test_a_wrong_velocity_range_is_refused_with_what_is_accepted(text):
    with pytest.raises(ConfigError, match=r"--velocity-range .*(LOW-HIGH|1 <= LOW <= HIGH <= 127)"):
        parse_velocity_range(text)


def _answer_velocities(call_velocity: int) -> list[int]:
    gen = ScriptedGenerator([StepEvent(60 + k, 240, 200) for k in range(4)])
    settings = CallResponseSettings(silence_beats=2, beats_per_bar=4, lookahead_beats=1)
    planner = CallResponsePlanner(gen, LiveParams(response_bars=1), np.random.default_rng(0), settings)
    for k in range(8):
        planner.on_input(decode_message(k * 240, (0x90, 60 + k, call_velocity)))
        planner.on_input(decode_message(k * 240 + 200, (0x80, 60 + k, 0)))
    commits = [a for tick in range(1800, 6000, 10) for a in planner.advance(tick) if isinstance(a, Commit)]
    return [e.data2 for c in commits for e in c.events if e.is_note_on]


def test_a_soft_call_gets_a_soft_answer_and_a_loud_one_a_loud_answer():
    soft, loud = _answer_velocities(40), _answer_velocities(115)
    assert soft and loud
    assert max(soft) < 55 and min(loud) > 100  # each around its call's level, with accents
    assert len(set(soft)) > 1  # not one velocity for every note


def test_what_it_keeps_stays_bounded_however_long_the_performer_plays_without_a_phrase_end():
    d = Dynamics(BAR, LiveParams())
    for k in range(20_000):  # accompaniment never ends a phrase
        d.hear(k * 120, 60 + k % 40)
    assert len(d._heard) <= 2 * BAR // 120 + 1 and len(d._phrase) <= 256
