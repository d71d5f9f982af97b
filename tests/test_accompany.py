"""Accompaniment planning: exact events on musical ticks, with a generator whose output shows what it heard."""

from __future__ import annotations

import numpy as np
import pytest

from livegen.engine.accompany import AccompanyPlanner, AccompanySettings
from livegen.engine.live import LiveParams
from livegen.engine.planner import Commit, Withdraw
from livegen.errors import ConfigError
from livegen.models.sampling import SamplingParams
from livegen.models.step import StepEvent
from livegen.music.events import decode_message
from tests.fakes import CountingGenerator, ScriptedGenerator

# lookahead 4 beats, commit 2 beats, listen 2 beats, 4/4, sixteenth grid; the model's own pace
# (an eighth a step) whatever the performer's: the pace rule has its own tests below
SETTINGS = AccompanySettings(listen_beats=2, follow_pace=False)


def make(live: LiveParams | None = None, settings: AccompanySettings = SETTINGS):
    gen = CountingGenerator()
    return gen, AccompanyPlanner(gen, live or LiveParams(), np.random.default_rng(0), settings)


def note_ons(actions):
    return [(e.tick, e.data1) for a in actions if isinstance(a, Commit) for e in a.events if e.is_note_on]


def advance(planner, tick):
    """What the engine does each step: advance (plan to the commit horizon and commit), then plan ahead."""
    actions = planner.advance(tick)
    planner.plan_ahead(tick)
    return actions


def run(planner, start, stop, step=10):
    actions = []
    for tick in range(start, stop, step):
        actions += advance(planner, tick)
    return actions


def test_listens_then_plays_on_the_grid_committing_two_beats_ahead():
    _, planner = make()
    planner.on_input(decode_message(0, (0x90, 60, 100)))
    planner.on_input(decode_message(240, (0x80, 60, 0)))
    committed_by = {}
    for tick in range(0, 1000, 10):
        for onset, pitch in note_ons(advance(planner, tick)):
            committed_by[(onset, pitch)] = tick
    # first note after the 2-beat listening window; each committed when it came within 2 beats
    assert committed_by == {(960, 49): 10, (1200, 50): 250, (1440, 51): 490, (1680, 52): 730, (1920, 53): 970}


def test_performed_note_replans_only_beyond_the_commit_horizon():
    gen, planner = make()
    planner.on_input(decode_message(0, (0x90, 60, 100)))
    planner.on_input(decode_message(240, (0x80, 60, 0)))
    before = note_ons(run(planner, 0, 1000))
    assert before == [(960, 49), (1200, 50), (1440, 51), (1680, 52), (1920, 53)]
    assert planner.on_input(decode_message(1000, (0x90, 72, 100))) == []  # nothing committed is ever withdrawn
    planner.on_input(decode_message(1100, (0x80, 72, 0)))
    after = run(planner, 1000, 2900)
    assert not any(isinstance(a, Withdraw) for a in after)
    # without the performed note the next would be 54 at 2160; the re-plan heard it, so 55
    assert note_ons(after) == [(t, 55 + i) for i, t in enumerate(range(2160, 2900 + 960, 240))]
    # the model heard the performed note at its place in time, then the committed notes again
    heard = [(e.pitch, e.step) for e in gen.fed_events]
    committed = [(60, 0), (49, 960), (50, 240), (51, 240), (52, 240), (53, 240)]
    planned = [(54, 240), (55, 240), (56, 240), (57, 240)]  # planned beyond the horizon, not committed
    assert heard[:10] == committed + planned
    assert heard[10:15] == [(72, 40), (50, 200), (51, 240), (52, 240), (53, 240)]


def test_stops_after_the_performer_falls_silent_for_the_response_length():
    _, planner = make(LiveParams(response_bars=1))
    planner.on_input(decode_message(0, (0x90, 60, 100)))
    planner.on_input(decode_message(240, (0x80, 60, 0)))
    events = [e for a in run(planner, 0, 6000) if isinstance(a, Commit) for e in a.events]
    # last activity 240 + 1 bar = 2160, rounded up to the bar line 3840
    assert [e.tick for e in events if e.is_note_on] == list(range(960, 3840, 240))
    assert max(e.tick for e in events) == 3840  # the last note is cut at the end
    assert planner.responses == 1 and not planner.busy


def test_rejoins_at_once_when_the_performer_plays_again():
    _, planner = make(LiveParams(response_bars=1))
    planner.on_input(decode_message(0, (0x90, 60, 100)))
    planner.on_input(decode_message(240, (0x80, 60, 0)))
    run(planner, 0, 6000)
    planner.on_input(decode_message(6000, (0x90, 64, 100)))
    planner.on_input(decode_message(6100, (0x80, 64, 0)))
    ons = note_ons(run(planner, 6000, 7000))
    assert ons[0] == (6240, 62)  # one model step after the performed note: no second listening window


def test_density_transposition_and_velocity_are_live():
    live = LiveParams(density=2.0, transpose=3)
    gen, planner = make(live)
    planner.on_input(decode_message(0, (0x90, 60, 64)))
    planner.on_input(decode_message(240, (0x80, 60, 0)))
    events = [e for a in run(planner, 0, 1500) if isinstance(a, Commit) for e in a.events]
    ons = [(e.tick, e.data1, e.data2) for e in events if e.is_note_on]
    assert gen.fed_events[0].pitch == 57  # the model hears the performer in its own key
    # twice as dense, 3 up, at the performer's level (64) with the default accent: a beat +3, an
    # off-beat sixteenth -3, an eighth 0 (one performed note teaches little about accents)
    assert ons[:3] == [(960, 52, 67), (1080, 53, 61), (1200, 54, 64)]
    offs = [(e.tick, e.data1) for e in events if e.is_note_off]
    assert offs[0] == (1080, 52)  # durations halve too


def test_silence_withdraws_and_waits_for_the_performer():
    _, planner = make()
    planner.on_input(decode_message(0, (0x90, 60, 100)))
    run(planner, 0, 1200)
    assert planner.silence() == [Withdraw(1)]
    assert run(planner, 1200, 4000) == []
    assert not planner.busy


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"commit_beats": 5, "lookahead_beats": 4}, "commit horizon"),
        ({"commit_beats": 0}, "commit horizon"),
        ({"listen_beats": -1}, "--listen -1: expected 0 to 256 beats"),
        ({"channel": 16}, r"channel 16: expected 0 to 15 \(MIDI channels 1 to 16\)"),
    ],
)
def test_settings_name_the_bad_value(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        AccompanySettings(**kwargs)


def test_after_a_jump_back_in_song_position_the_line_starts_where_the_performer_plays():
    _, planner = make()
    planner.on_input(decode_message(0, (0x90, 60, 100)))
    planner.on_input(decode_message(240, (0x80, 60, 0)))
    run(planner, 0, 9000)  # committed far ahead of where the song will jump back to
    planner.silence()  # the transport stopped; it continues at tick 1920
    planner.on_input(decode_message(1920, (0x90, 64, 100)))
    planner.on_input(decode_message(2100, (0x80, 64, 0)))
    ons = note_ons(run(planner, 1920, 4000))
    assert ons[0][0] == 1920 + 960  # after the listening window from the new note, not after tick 9000


def test_a_performed_note_samples_only_to_the_commit_horizon_until_the_commit_is_out():
    """The performer waits for the fold and the notes about to be committed; the rest of the
    lookahead is sampled by plan_ahead, which the engine calls after handing over the commit."""
    gen, planner = make()
    planner.on_input(decode_message(0, (0x90, 60, 100)))
    planner.on_input(decode_message(240, (0x80, 60, 0)))
    run(planner, 0, 1000)
    planner.on_input(decode_message(1000, (0x90, 72, 100)))
    planned = [n.onset for n in planner.line.fed if not n.performer and not n.committed]
    # committed up to 1950 already; the next note (2160) lies beyond the commit horizon (1960)
    assert planned == []
    fed_before = len(gen.fed_events)
    assert note_ons(planner.advance(1000)) == []  # nothing is due yet
    assert len(gen.fed_events) == fed_before
    planner.plan_ahead(1000)
    planned = [n.onset for n in planner.line.fed if not n.performer and not n.committed]
    assert planned == [2160, 2400, 2640, 2880]  # the lookahead: 4 beats, onsets before 2920
    assert len(gen.fed_events) == fed_before + 4


class ParamsSeen(CountingGenerator):
    """Records the sampling parameters of every draw."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[SamplingParams] = []

    def sample(self, params: SamplingParams, rng: np.random.Generator) -> StepEvent:
        self.seen.append(params)
        return super().sample(params, rng)


@pytest.mark.parametrize(
    ("follow", "live", "expected"),
    [
        (True, LiveParams(), (2, "major")),  # the performer's D major
        (False, LiveParams(), (0, "chromatic")),
        (True, LiveParams(sampling=SamplingParams(root=9, scale="dorian")), (9, "dorian")),  # a chosen key wins
        (True, LiveParams(transpose=2), (0, "major")),  # heard in the model's own key, two semitones down
    ],
)
def test_the_accompaniment_samples_in_the_key_the_performer_plays(follow, live, expected):
    gen = ParamsSeen()
    planner = AccompanyPlanner(
        gen, live, np.random.default_rng(0), AccompanySettings(listen_beats=2, follow_key=follow)
    )
    for i, pitch in enumerate((62, 64, 66, 67, 69, 71, 73, 74)):  # a D major scale
        planner.on_input(decode_message(i * 240, (0x90, pitch, 100)))
        planner.on_input(decode_message(i * 240 + 200, (0x80, pitch, 0)))
    run(planner, 0, 3000)
    assert (gen.seen[-1].root, gen.seen[-1].scale) == expected


def test_a_note_before_the_songs_start_is_heard_for_the_key_without_error():
    gen = ParamsSeen()
    planner = AccompanyPlanner(gen, LiveParams(), np.random.default_rng(0), AccompanySettings(follow_key=True))
    planner.on_input(decode_message(-120, (0x90, 62, 100)))  # a DAW's count-in, before tick 0
    planner.on_input(decode_message(-10, (0x80, 62, 0)))
    assert planner.line.key is not None and planner.line.key.root == 2


def onsets_per_bar(actions, bar=4 * 480):
    counts: dict[int, int] = {}
    for onset in sorted({tick for tick, _ in note_ons(actions)}):
        counts[onset // bar] = counts.get(onset // bar, 0) + 1
    return counts


def perform(planner, onsets, length=120):
    actions = []
    tick = 0
    for onset in onsets:
        actions += run(planner, tick, onset)
        planner.on_input(decode_message(onset, (0x90, 60, 100)))
        planner.on_input(decode_message(onset + length, (0x80, 60, 0)))
        tick = onset
    return actions + run(planner, tick, tick + 2 * 4 * 480)


def test_the_accompaniment_keeps_the_performers_pace():
    _, planner = make(settings=AccompanySettings(listen_beats=2))
    # the performer plays six notes a bar for four bars; the model would play eight (an eighth a step)
    six_a_bar = [bar * 1920 + i * 320 for bar in range(4) for i in range(6)]
    counts = onsets_per_bar(perform(planner, six_a_bar))
    assert max(counts.values()) <= 6 and sum(counts.values()) >= 6 * 3
    _, unpaced = make()
    assert max(onsets_per_bar(perform(unpaced, six_a_bar)).values()) == 8


def test_under_a_sparse_performer_the_accompaniment_still_plays_a_note_a_beat():
    _, planner = make(settings=AccompanySettings(listen_beats=2))
    counts = onsets_per_bar(perform(planner, [0, 1920, 3840], length=1800))  # a whole note a bar
    # as many as a bar has beats (two a half bar), from the model's entry on beat 3 to its end
    assert counts == {0: 2, 1: 4, 2: 4, 3: 4, 4: 2}


def test_the_live_density_multiplies_the_pace():
    _, planner = make(LiveParams(density=2.0), settings=AccompanySettings(listen_beats=2))
    counts = onsets_per_bar(perform(planner, [0, 1920, 3840], length=1800))  # a whole note a bar
    assert counts[1] == counts[2] == 8  # twice the four a bar the pace allows at density 1


def test_the_performers_onsets_are_kept_for_the_pace_window_only():
    # a model with voices of its own asks no pace, and a long performance must not pile up onsets
    _, planner = make(settings=AccompanySettings(listen_beats=2, follow_pace=False))
    for i in range(2000):  # 2000 eighths: 250 bars
        planner.on_input(decode_message(i * 240, (0x90, 60, 100)))
        planner.on_input(decode_message(i * 240 + 100, (0x80, 60, 0)))
    assert len(planner._onsets) <= 2 * 8  # the last two bars' eighths


SEED = [StepEvent(60 + k % 5, 0 if k == 0 else 240, 200) for k in range(8)]


def test_a_started_transport_plays_from_the_seed_within_a_beat_with_no_one_playing():
    gen = CountingGenerator()
    planner = AccompanyPlanner(gen, LiveParams(), np.random.default_rng(0), SETTINGS, seed=SEED)
    assert planner.resume(0) == []
    ons = note_ons(run(planner, 0, 4 * 1920))
    assert ons and ons[0][0] <= 480  # within one beat of Start: no listening window
    assert ons[-1][0] >= 3 * 1920  # and on while the transport runs, with no performer at all
    assert gen.fed_events[: len(SEED)] == SEED  # from the seed


def test_after_a_stop_continue_plays_on_within_a_beat_from_what_it_heard():
    gen, planner = make()
    planner.on_input(decode_message(0, (0x90, 60, 100)))
    planner.on_input(decode_message(240, (0x80, 60, 0)))
    before = note_ons(run(planner, 0, 4000))
    assert before  # it joined after listening
    planner.silence()  # the DAW stopped
    fed = len(gen.fed_events)
    planner.resume(7680)  # and continued at bar 5
    after = note_ons(run(planner, 7680, 9600))
    assert after and 7680 < after[0][0] <= 7680 + 480
    assert len(gen.fed_events) > fed  # the same model state, fed on: not the seed again (it has none here)


@pytest.mark.parametrize("sixteenth", [33, 34])
def test_after_a_song_position_jump_an_eighth_note_line_stays_on_the_eighths(sixteenth):
    eighths = [StepEvent(60 + k, 240, 200) for k in range(8)]
    gen = ScriptedGenerator(eighths)
    planner = AccompanyPlanner(gen, LiveParams(), np.random.default_rng(0), SETTINGS, seed=eighths)
    planner.resume(0)
    run(planner, 0, 1920)
    planner.silence()  # the DAW stopped, jumped to a sixteenth (odd, or even) and continued
    at = sixteenth * 120
    planner.resume(at)
    ons = note_ons(run(planner, at, at + 2 * 1920))
    assert ons and all(tick % 240 == 0 for tick, _ in ons), ons[:6]
    assert ons[0][0] - at <= 480
