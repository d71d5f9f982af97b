"""Autonomous play: exact reseeding on loops and silence, and yielding to a performer and taking over."""

from __future__ import annotations

import numpy as np
import pytest

from livegen.engine.autonomous import AutonomousPlanner, AutonomousSettings, Reseed
from livegen.engine.callresponse import CallResponsePlanner, CallResponseSettings
from livegen.engine.live import Generations, LiveParams
from livegen.engine.planner import Commit, Withdraw
from livegen.errors import ConfigError
from livegen.models.step import StepEvent
from livegen.music.events import decode_message
from tests.fakes import ScriptedGenerator

SEED = [StepEvent(60, 0, 240), StepEvent(62, 240, 240), StepEvent(64, 240, 240)]


def make(script, settings=None, live=None):
    gen = ScriptedGenerator(script)
    live = live or LiveParams(response_bars=1)
    generations = Generations()
    rng = np.random.default_rng(0)
    settings = settings or AutonomousSettings(max_same_pitch=4, max_bar_repeats=2, takeover_beats=4)

    def inner():
        return CallResponsePlanner(gen, live, rng, CallResponseSettings(silence_beats=1), generations)

    return gen, AutonomousPlanner(gen, live, rng, SEED, inner, settings, generations)


def commits(actions):
    return [a for a in actions if isinstance(a, Commit)]


def run(planner, start, stop, step=10):
    out = []
    for tick in range(start, stop, step):
        out += planner.advance(tick)
    return out


def test_starts_from_the_seed_on_the_next_beat():
    gen, planner = make([StepEvent(67, 480, 240), StepEvent(69, 480, 240)])
    ons = [(e.tick, e.data1) for a in commits(run(planner, 0, 1000)) for e in a.events if e.is_note_on]
    assert gen.fed_events[:3] == SEED  # heard, not played
    assert ons == [(480, 67), (960, 69), (1440, 67), (1920, 69)]


def test_one_pitch_repeated_is_a_loop_and_reseeds_from_the_seed():
    gen, planner = make([StepEvent(67, 480, 240)])
    actions = run(planner, 0, 2500)
    # four 67s committed (480..1920) make a loop; the line restarts on the next bar line
    assert planner.reseeds == [Reseed(3840, "same pitch", "seed")]
    assert gen.resets == 2  # the start and the reseed
    fed = gen.fed_events
    assert [i for i in range(len(fed) - 2) if fed[i : i + 3] == SEED][1:] != []  # the seed heard again
    ons = [e.tick for a in commits(actions) for e in a.events if e.is_note_on]
    assert ons == [480, 960, 1440, 1920]  # what was committed still plays; nothing before the bar line


def test_a_repeated_bar_is_a_loop():
    script = [StepEvent(60, 480, 240), StepEvent(64, 480, 240), StepEvent(67, 480, 240), StepEvent(72, 480, 240)]
    settings = AutonomousSettings(max_same_pitch=100, max_bar_repeats=2)
    _gen, planner = make(script, settings)
    run(planner, 0, 6000)
    # notes every beat from 480: bar 1 (1920-3839) and bar 2 (3840-5759) hold the same four notes
    assert planner.reseeds and planner.reseeds[0].reason == "repeated bar"
    assert planner.reseeds[0].tick % 1920 == 0


def test_silence_reseeds():
    _gen, planner = make([StepEvent(67, 480, 240), StepEvent(69, 4800, 240)])
    run(planner, 0, 3000)
    assert planner.reseeds[0].reason == "silence"


def test_recent_output_reseeds_when_it_was_varied():
    varied = [StepEvent(p, 240, 240) for p in (60, 62, 64, 65, 67, 69, 71, 72)] * 3
    script = varied + [StepEvent(50, 240, 240)] * 40
    settings = AutonomousSettings(max_same_pitch=12, max_bar_repeats=100)
    gen, planner = make(script, settings)
    run(planner, 0, 12000)
    first = planner.reseeds[0]
    assert (first.reason, first.source) == ("same pitch", "recent")
    assert gen.resets == 2


def test_yields_to_a_performer_and_takes_over_after_their_silence():
    _gen, planner = make([StepEvent(67, 480, 240), StepEvent(69, 480, 240)])
    first = commits(run(planner, 0, 2000))
    autonomous_generation = first[0].generation
    actions = planner.on_input(decode_message(2000, (0x90, 72, 100)))
    assert actions == [Withdraw(autonomous_generation)]
    assert planner.yielded
    planner.on_input(decode_message(2200, (0x80, 72, 0)))
    answer = commits(run(planner, 2200, 4680))
    # call-and-response: one beat of silence after 2200, then a one-bar answer on the grid
    assert answer and answer[0].events[0].tick == 2760 and answer[0].generation != autonomous_generation
    assert planner.yielded  # the answer ends at 4680 (the performer's 4 beats of silence ended at 4120)
    resumed = commits(run(planner, 4680, 8000))
    assert not planner.yielded and planner.responses == 1
    assert resumed[0].events[0].tick == 5280  # the beat after 4680 + half a beat
    assert resumed[0].generation not in (autonomous_generation, answer[0].generation)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reseed": "random"}, "reseed 'random': expected one of recent, seed"),
        ({"yield_to": "autonomous"}, "yield-to 'autonomous'"),
        ({"max_same_pitch": 1}, "max-same-pitch 1"),
        ({"silence_bars": 0}, "silence-bars 0"),
    ],
)
def test_settings_name_the_bad_value(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        AutonomousSettings(**kwargs)


def test_a_note_never_released_yields_only_for_the_takeover_time():
    _gen, planner = make([StepEvent(67, 480, 240), StepEvent(69, 480, 240)])
    autonomous_generation = commits(run(planner, 0, 2000))[0].generation
    planner.on_input(decode_message(2000, (0x90, 72, 100)))  # its note-off is lost
    later = commits(run(planner, 2000, 12000))
    assert not planner.yielded, "the model stayed silent behind a note that was never released"
    # held 4 beats (the takeover time): released at 3920; a one-beat pause, a bar's answer, the model again
    answer = [c for c in later if c.events[0].tick < 6360]
    assert answer[0].events[0].tick == 4440
    resumed = [c for c in later if c.generation not in (autonomous_generation, answer[0].generation)]
    assert resumed and planner.responses == 1
