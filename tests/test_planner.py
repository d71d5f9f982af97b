"""Call-and-response planning: exact events on musical ticks, with a scripted generator."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from livegen.engine.callresponse import CallResponsePlanner, CallResponseSettings
from livegen.engine.live import LiveParams
from livegen.engine.planner import Commit, Withdraw
from livegen.errors import ConfigError
from livegen.models.sampling import SamplingParams
from livegen.models.step import StepEvent
from livegen.music.events import decode_message, note_off, note_on
from tests.fakes import ScriptedGenerator

SCRIPT = [StepEvent(67, 240, 240), StepEvent(69, 480, 480)]
SETTINGS = CallResponseSettings(silence_beats=2, beats_per_bar=4, lookahead_beats=1)


def make(script=SCRIPT, settings=SETTINGS, response_bars=1):
    gen = ScriptedGenerator(script)
    live = LiveParams(sampling=SamplingParams(), response_bars=response_bars)
    return gen, CallResponsePlanner(gen, live, np.random.default_rng(0), settings)


def play_phrase(planner, notes):
    """notes: (pitch, start, end, velocity); returns actions from the inputs."""
    messages = []
    for pitch, start, end, vel in notes:
        messages.append((start, 1, (0x90, pitch, vel)))
        messages.append((end, 0, (0x80, pitch, 0)))
    actions = []
    for tick, _, data in sorted(messages):
        actions += planner.on_input(decode_message(tick, data))
    return actions


def run(planner, start, stop, step=10):
    actions = []
    for tick in range(start, stop, step):
        actions += [(tick, a) for a in planner.advance(tick)]
    return actions


def test_response_continues_phrase_after_silence_with_exact_events():
    gen, planner = make()
    assert play_phrase(planner, [(60, 0, 480, 80), (64, 480, 960, 100)]) == []
    actions = run(planner, 960, 5000)
    commits = [(tick, a) for tick, a in actions if isinstance(a, Commit)]
    # The response starts 2 beats after the last release (tick 1920) and is planned one beat ahead.
    assert commits[0][0] == 1920 - 480
    events = sorted(e for _, c in commits for e in c.events)
    # Velocities: the phrase's level (90) plus the accent at each place, the default (downbeat
    # +6, beat +3, eighth 0) shrunk toward what the performer played there with one note's
    # weight: the downbeat (80: -10) (-10 + 6) / 2 = -2, beat 2 (100: +10) (10 + 3) / 2 = +6.5.
    assert events == sorted(
        [
            note_on(1920, 0, 67, 88), note_off(2160, 0, 67),
            note_on(2400, 0, 69, 96), note_off(2880, 0, 69),
            note_on(2640, 0, 67, 90), note_off(2880, 0, 67),
            note_on(3120, 0, 69, 90), note_off(3600, 0, 69),
            note_on(3360, 0, 67, 93), note_off(3600, 0, 67),
        ]
    )  # fmt: skip
    assert all(c.generation == 1 for _, c in commits)
    # Every note is committed before its onset minus... at most one lookahead early.
    for tick, commit in commits:
        assert all(tick <= e.tick for e in commit.events if e.is_note_on)
        assert all(e.tick - tick <= 480 for e in commit.events if e.is_note_on)
    # The phrase was fed as played, then the model's own line, each note with its place in the bar.
    assert [replace(e, bar_phase=None) for e in gen.fed_events] == [
        StepEvent(60, 0, 480, 80),
        StepEvent(64, 480, 480, 100),
        *[SCRIPT[i % 2] for i in range(5)],
    ]
    onsets = [0, 480, *(e.tick for _, c in commits for e in c.events if e.is_note_on)]
    assert [e.bar_phase for e in gen.fed_events] == [t % (4 * 480) for t in onsets]
    assert planner.responses == 1 and not planner.busy


def test_response_never_passes_its_last_bar():
    _, planner = make(settings=CallResponseSettings(silence_beats=1, lookahead_beats=2), response_bars=2)
    play_phrase(planner, [(60, 0, 240, 90)])
    events = [e for _, a in run(planner, 240, 9000) if isinstance(a, Commit) for e in a.events]
    start = 240 + 480
    assert min(e.tick for e in events) == start
    assert max(e.tick for e in events) <= start + 2 * 4 * 480


def test_performer_interrupting_withdraws_response_and_starts_new_phrase():
    gen, planner = make()
    play_phrase(planner, [(60, 0, 480, 90)])
    run(planner, 480, 2000)
    assert planner.busy
    actions = planner.on_input(decode_message(2005, (0x90, 72, 90)))
    assert actions == [Withdraw(1)]
    assert gen.resets == 2  # the first phrase and this one
    planner.on_input(decode_message(2100, (0x80, 72, 0)))
    later = run(planner, 2100, 6000)
    generations = {a.generation for _, a in later if isinstance(a, Commit)}
    assert generations == {2}
    first = min(e.tick for _, a in later if isinstance(a, Commit) for e in a.events)
    assert first == 3120  # two beats after the new phrase's release (3060), on the next 16th


def test_held_note_delays_response_until_release():
    _, planner = make(settings=replace(SETTINGS, held_beats=16))  # held 4000 ticks, within the bound
    planner.on_input(decode_message(0, (0x90, 60, 90)))
    assert run(planner, 0, 4000) == []
    planner.on_input(decode_message(4000, (0x90, 60, 0)))  # note-on with velocity 0 is a release
    commits = [a for _, a in run(planner, 4000, 8000) if isinstance(a, Commit)]
    assert min(e.tick for c in commits for e in c.events) == 5040  # 4960 rounded up to the 16th grid


def test_chord_notes_are_fed_in_onset_order_once_complete():
    gen, planner = make()
    planner.on_input(decode_message(0, (0x90, 60, 90)))
    planner.on_input(decode_message(10, (0x90, 64, 90)))
    planner.on_input(decode_message(200, (0x80, 64, 0)))  # later onset ends first: waits for 60
    assert gen.fed_events == []
    planner.on_input(decode_message(400, (0x80, 60, 0)))
    assert [e.pitch for e in gen.fed_events] == [60, 64]
    assert [e.step for e in gen.fed_events] == [0, 10]


def test_no_response_without_a_phrase():
    _, planner = make()
    assert run(planner, 0, 10000) == []


def test_settings_reject_nonsense_with_clear_message():
    with pytest.raises(ConfigError, match="silence"):
        CallResponseSettings(silence_beats=0)
    with pytest.raises(ConfigError, match="beats per bar"):
        CallResponseSettings(beats_per_bar=0)


def test_a_note_never_released_counts_as_released_after_the_held_bound():
    # a keyboard that lost a note-off: the phrase ends held_beats (8) after the note-on
    gen, planner = make()
    planner.on_input(decode_message(0, (0x90, 60, 90)))
    commits = [a for _, a in run(planner, 0, 8000) if isinstance(a, Commit)]
    assert commits, "the model stayed silent behind a note that was never released"
    assert min(e.tick for c in commits for e in c.events) == 8 * 480 + 2 * 480  # released at 3840, 2 beats' silence
    assert gen.fed_events[0] == StepEvent(60, 0, 8 * 480, 90, bar_phase=0)
    planner.on_input(decode_message(8000, (0x80, 60, 0)))  # the lost note-off arriving after all changes nothing
    assert planner.responses == 1 and not planner.busy


class ParamsSeen(ScriptedGenerator):
    """Records the sampling parameters of every draw."""

    def __init__(self, script):
        super().__init__(script)
        self.seen: list[SamplingParams] = []

    def sample(self, params: SamplingParams, rng: np.random.Generator) -> StepEvent:
        self.seen.append(params)
        return super().sample(params, rng)


@pytest.mark.parametrize(
    ("follow", "sampling", "expected"),
    [
        (True, SamplingParams(), (2, "major")),  # the call's D major
        (False, SamplingParams(), (0, "chromatic")),
        (True, SamplingParams(root=9, scale="dorian"), (9, "dorian")),  # a chosen key wins
    ],
)
def test_the_answer_keeps_to_the_key_of_the_call(follow, sampling, expected):
    gen = ParamsSeen(SCRIPT)
    settings = replace(SETTINGS, follow_key=follow)
    planner = CallResponsePlanner(gen, LiveParams(sampling=sampling), np.random.default_rng(0), settings)
    scale = (62, 64, 66, 67, 69, 71, 73, 74)  # a D major scale
    play_phrase(planner, [(p, i * 240, i * 240 + 200, 90) for i, p in enumerate(scale)])
    run(planner, 1920, 5000)
    assert gen.seen and {(p.root, p.scale) for p in gen.seen} == {expected}
