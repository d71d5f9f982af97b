"""The block host (livegen.models.block): bar alignment, joins, candidate selection, scores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from livegen.models.block import (
    BlockGenerator,
    fit_score,
    key_classes,
    notes_of_block,
    onset_grid,
    performer_key,
    snap_line,
    snap_pitch,
    snap_values,
)
from livegen.models.frames import ANY_TRACK, RollNote
from livegen.models.sampling import SamplingParams
from livegen.models.step import StepEvent
from livegen.music.keys import Key
from livegen.music.time import SIXTEENTH

G = SIXTEENTH  # ticks per frame


class FixedBlocks(BlockGenerator):
    """A family that proposes the same blocks every time, recording what it was given."""

    def __init__(
        self,
        blocks: list[list[RollNote]],
        *,
        conditioned: bool = False,
        block_frames: int = 16,
        key_snapping: bool = False,
    ) -> None:
        self._init_block(
            block_frames=block_frames, context_frames=block_frames, conditioned=conditioned, key_snapping=key_snapping
        )
        self.blocks = blocks
        self.asked: list[tuple[list[RollNote], int]] = []

    def _propose(
        self, previous: Sequence[RollNote], count: int, params: SamplingParams, rng: np.random.Generator
    ) -> list[list[RollNote]]:
        self.asked.append((list(previous), count))
        return [list(self.blocks[i % len(self.blocks)]) for i in range(count)]


def play(gen: BlockGenerator, n: int, params: SamplingParams | None = None) -> list[tuple[int, int, int]]:
    """Sample and feed back ``n`` notes: (onset tick from the first fed note, pitch, duration)."""
    params = params or SamplingParams()
    rng = np.random.default_rng(0)
    out, clock = [], 0
    for _ in range(n):
        event = gen.sample(params, rng)
        clock += event.step
        out.append((clock, event.pitch, event.duration))
        gen.feed(event)
    return out


def test_blocks_start_on_bar_lines_given_by_the_planner() -> None:
    gen = FixedBlocks([[RollNote(0, 4, 60), RollNote(8, 4, 64)]])
    # the performer's note 2 frames after a bar line, 4 frames long
    gen.feed(StepEvent(pitch=67, step=0, duration=4 * G, bar_phase=2 * G))
    notes = play(gen, 4)
    # the bar holding the performed note started 2 frames before it: the block's note on
    # frame 8 of that bar is 6 frames after the performed note; the next bar starts at 14
    assert notes == [(6 * G, 64, 4 * G), (14 * G, 60, 4 * G), (22 * G, 64, 4 * G), (30 * G, 60, 4 * G)]


def test_without_a_bar_phase_the_first_note_starts_a_bar() -> None:
    gen = FixedBlocks([[RollNote(0, 2, 60), RollNote(8, 2, 62)]])
    gen.feed(StepEvent(pitch=67, step=0, duration=G))
    assert play(gen, 3) == [(8 * G, 62, 2 * G), (16 * G, 60, 2 * G), (24 * G, 62, 2 * G)]


def test_a_note_across_the_bar_line_is_held_and_a_repeated_pitch_is_struck_again() -> None:
    params = SamplingParams(candidates=1)
    # the performer's note on the last 16th of a bar: blocks start one frame later
    repeated = FixedBlocks([[RollNote(0, 2, 62), RollNote(2, 2, 62), RollNote(12, 4, 60)]])
    repeated.feed(StepEvent(pitch=55, step=0, duration=G, bar_phase=15 * G))
    # 62 struck twice in a row stays two notes; 60 ends the bar and the next bar starts
    # with 62, so nothing is continued
    assert play(repeated, 4, params) == [(G, 62, 2 * G), (3 * G, 62, 2 * G), (13 * G, 60, 4 * G), (17 * G, 62, 2 * G)]

    joined = FixedBlocks([[RollNote(12, 4, 60), RollNote(0, 4, 60), RollNote(6, 2, 64)]])
    joined.feed(StepEvent(pitch=55, step=0, duration=G, bar_phase=15 * G))
    # 60 at the end of a bar and 60 at the start of the next: one note of 8 frames
    assert play(joined, 4, params) == [(G, 60, 4 * G), (7 * G, 64, 2 * G), (13 * G, 60, 8 * G), (23 * G, 64, 2 * G)]


def test_a_note_begun_before_the_performer_enters_on_the_next_beat() -> None:
    # the performer plays on the second 16th of a bar; the block's 60 sounds the whole bar
    gen = FixedBlocks([[RollNote(0, 12, 60), RollNote(8, 4, 64), RollNote(0, 3, 67)]])
    gen.feed(StepEvent(pitch=55, step=0, duration=G, bar_phase=G))
    # generation starts on frame 2: 60 comes in on the next beat (frame 4) with its last
    # 8 frames; 67 has 1 frame left there and is dropped; 64 starts as written
    assert play(gen, 2, SamplingParams(candidates=1)) == [(3 * G, 60, 8 * G), (7 * G, 64, 4 * G)]


def test_a_replan_inside_a_block_reuses_its_proposal() -> None:
    for conditioned in (True, False):
        gen = FixedBlocks([[RollNote(0, 4, 60), RollNote(8, 4, 64)], [RollNote(12, 4, 72)]], conditioned=conditioned)
        gen.feed(StepEvent(pitch=55, step=0, duration=G, bar_phase=0))
        before = gen.snapshot()
        play(gen, 1)
        gen.restore(before)
        gen.feed(StepEvent(pitch=57, step=5 * G, duration=G))  # the performer again, mid-bar
        play(gen, 1)
        first_bar = [count for previous, count in gen.asked if not previous]  # nothing before the first bar
        assert len(first_bar) == 1, conditioned
        gen.reset()
        gen.feed(StepEvent(pitch=55, step=0, duration=G, bar_phase=0))
        play(gen, 1)
        assert [previous for previous, _ in gen.asked].count([]) == 2, conditioned  # a reset forgets it


def test_unconditional_families_keep_the_candidate_that_fits_the_performer() -> None:
    high_c = [RollNote(0, 4, 72), RollNote(4, 4, 76), RollNote(8, 4, 79), RollNote(12, 4, 72)]
    low_fsharp = [RollNote(0, 8, 42), RollNote(8, 8, 46)]
    gen = FixedBlocks([low_fsharp, high_c])
    for i, pitch in enumerate((72, 76, 79, 76)):  # a C major arpeggio, high, in quarters
        gen.feed(StepEvent(pitch=pitch, step=0 if i == 0 else 4 * G, duration=4 * G, bar_phase=i * 4 * G))
    first = play(gen, 1, SamplingParams(candidates=4))
    assert first[0][1] == 72
    assert gen.asked[0][1] == 4
    assert gen.fit.blocks >= 1 and gen.fit.chosen_mean > gen.fit.candidates_mean


def test_conditioned_families_get_the_previous_bar_relative_to_the_block() -> None:
    gen = FixedBlocks([[RollNote(0, 4, 60)]], conditioned=True)
    gen.feed(StepEvent(pitch=64, step=0, duration=4 * G, bar_phase=0))
    gen.feed(StepEvent(pitch=67, step=15 * G, duration=G))  # the last 16th of the bar
    play(gen, 1, SamplingParams(candidates=8))
    previous, count = gen.asked[0]
    assert count == 1
    assert [(n.onset, n.frames, n.pitch, n.track) for n in previous] == [
        (-16, 4, 64, ANY_TRACK),
        (-1, 1, 67, ANY_TRACK),
    ]


def test_notes_move_into_the_live_range_and_scale() -> None:
    gen = FixedBlocks([[RollNote(0, 4, 61), RollNote(4, 4, 90)]])
    gen.feed(StepEvent(pitch=60, step=0, duration=G, bar_phase=15 * G))
    params = SamplingParams(pitch_min=48, pitch_max=84, scale="major", root=0, candidates=1)
    notes = play(gen, 2, params)
    assert [p for _, p, _ in notes] == [60, 84]


def test_snapshots_restore_the_bar_grid_and_the_generation() -> None:
    gen = FixedBlocks([[RollNote(0, 4, 60), RollNote(4, 4, 62), RollNote(8, 4, 64)]])
    gen.feed(StepEvent(pitch=55, step=0, duration=G, bar_phase=3 * G))
    snap = gen.snapshot()
    first = play(gen, 3)
    gen.restore(snap)
    assert play(gen, 3) == first


def test_fit_score_by_hand() -> None:
    heard = [RollNote(0, 4, 60), RollNote(4, 4, 64)]  # C, E: 4 frames each, mean 62, 2 onsets / 16
    same = [RollNote(0, 4, 72), RollNote(4, 4, 76)]  # same classes, an octave up (mean 74), same density
    # pitch classes 1, register 1 - 12/12 = 0, density 1 -> (2 + 0 + 1) / 4
    assert fit_score(same, heard, candidate_frames=16, heard_frames=16) == pytest.approx(0.75)
    other = [RollNote(0, 4, 61), RollNote(2, 4, 63), RollNote(4, 4, 61), RollNote(6, 4, 63)]  # C#, D#: mean 62
    # no shared class: 0; register 1; twice the onsets per frame: 1 - log2(2) = 0 -> 1/4
    assert fit_score(other, heard, candidate_frames=16, heard_frames=16) == pytest.approx(0.25)
    assert fit_score([], heard, candidate_frames=16, heard_frames=16) == 0.0
    assert fit_score(same, [], candidate_frames=16, heard_frames=16) == 0.0


def test_snap_pitch_and_notes_of_block() -> None:
    mask = np.zeros(128, dtype=bool)
    mask[[60, 64]] = True
    assert [snap_pitch(p, mask) for p in (60, 61, 62, 63, 70)] == [60, 60, 60, 64, 64]
    roll = np.zeros((8, 3), dtype=np.float32)
    roll[0:3, 0] = 1
    roll[5:8, 0] = 1
    roll[2, 2] = 1
    notes = notes_of_block(roll, 50, track=1)
    assert [(n.onset, n.frames, n.pitch, n.track) for n in notes] == [(0, 3, 50, 1), (2, 1, 52, 1), (5, 3, 50, 1)]


def test_a_silent_family_still_plays_a_note_rather_than_stall() -> None:
    gen = FixedBlocks([[]])
    gen.feed(StepEvent(pitch=65, step=0, duration=G))
    ((onset, pitch, _),) = play(gen, 1)
    assert pitch == 65 and onset > 0


def test_candidates_are_validated() -> None:
    from livegen.errors import ConfigError

    with pytest.raises(ConfigError, match="candidates 0: expected 1 to 64"):
        SamplingParams(candidates=0)


def test_candidates_are_scored_against_the_performers_last_bar_however_long_ago() -> None:
    high_c = [RollNote(0, 4, 72), RollNote(4, 4, 76), RollNote(8, 4, 79), RollNote(12, 4, 72)]
    low_fsharp = [RollNote(0, 8, 42), RollNote(8, 8, 46)]
    gen = FixedBlocks([low_fsharp, high_c])
    performed = (72, 76, 79, 76)
    for i, pitch in enumerate(performed):
        gen.feed(StepEvent(pitch=pitch, step=0 if i == 0 else 4 * G, duration=4 * G, bar_phase=i * 4 * G))
    notes = play(gen, 16, SamplingParams(candidates=2))  # four bars of the model's own notes
    assert notes[-1][0] >= 4 * 16 * G
    assert {p for _, p, _ in notes} == {72, 76, 79}  # every bar kept the block that fits the performer
    heard = gen._heard([], 10**6)
    assert [n.pitch for n in heard] == list(performed)
    gen.reset()
    assert gen._heard([], 0) == []


# ---- the performer's key -----------------------------------------------------------------

G_MAJOR_TUNE = (67, 71, 74, 72, 71, 69, 66, 67)  # G B D C B A F# G


def _perform(gen: BlockGenerator, pitches: Sequence[int]) -> None:
    for i, pitch in enumerate(pitches):
        gen.feed(StepEvent(pitch=pitch, step=0 if i == 0 else 2 * G, duration=2 * G, bar_phase=(2 * i % 16) * G))


def test_the_performers_key_is_the_scale_holding_most_of_their_notes() -> None:
    notes = [RollNote(2 * i, 2, p) for i, p in enumerate(G_MAJOR_TUNE)]
    key = performer_key(notes)
    assert key is not None and key_classes(key).tolist() == key_classes(Key(7, "major")).tolist()
    # a raised leading tone does not move A minor (8 of 9 notes in its scale) away from its notes
    a_minor = [RollNote(2 * i, 2, p) for i, p in enumerate((69, 72, 76, 74, 72, 71, 68, 69, 64))]
    assert performer_key(a_minor) in (Key(9, "minor"), Key(0, "major"))
    assert performer_key([]) is None


def test_continuous_pitches_snap_to_the_nearest_allowed_pitch() -> None:
    c_major = SamplingParams(scale="major").pitch_mask()
    # 61.4 is nearer D than C; rounding first (61) and then snapping would give C
    assert snap_values(np.array([61.4, 60.2, 65.5, 66.6, 130.0, -3.0]), c_major).tolist() == [62, 60, 65, 67, 127, 0]
    assert snap_values(np.array([61.6]), np.zeros(128, dtype=bool)).tolist() == [62]


def test_a_line_keeps_its_motion_when_it_snaps_to_a_key() -> None:
    c_major = SamplingParams(scale="major").pitch_mask()
    # 65.0 -> 65.3 is within half a semitone: a repeat; 66.8 -> 66.2 falls 0.6: a step down, not G again
    line = np.array([64.2, 65.0, 65.3, 66.8, 66.2, 66.0, 62.0])
    assert snap_values(line, c_major).tolist() == [64, 65, 65, 67, 67, 65, 62]
    assert snap_line(line, c_major).tolist() == [64, 65, 65, 67, 65, 65, 62]
    assert snap_line(np.array([64.0, 64.6]), c_major).tolist() == [64, 65]  # E then up: F, not E again


def test_the_performers_grid_is_the_coarsest_holding_their_onsets() -> None:
    assert onset_grid([0, 4, 8, 12, 16]) == 4
    assert onset_grid([0, 2, 4, 6, 10, 12, 14, 16, 20, 24]) == 2
    assert onset_grid([0, 2, 4, 6, 10, 12, 14, 16, 20, 23]) == 2  # one onset in ten off the eighths
    assert onset_grid([0, 3, 4, 6, 11, 12]) == 1
    assert onset_grid([0, 4]) == 1  # too few to tell


def test_the_models_own_notes_fed_back_are_not_the_performers() -> None:
    block = [RollNote(0, 2, 61), RollNote(2, 2, 65), RollNote(5, 1, 68)]
    gen = FixedBlocks([block], key_snapping=True)
    _perform(gen, G_MAJOR_TUNE)  # eighths in G major, 4 bars' worth of onsets on the eighth grid
    assert gen.onset_grid() == 2
    before = gen.snapshot()
    own = []
    rng = np.random.default_rng(0)
    for _ in range(3):
        event = gen.sample(SamplingParams(candidates=1), rng)
        gen.feed(event)
        own.append(event)
    # a planner folds a performed note in before the model's notes and feeds them back, without a channel
    gen.restore(before)
    gen.feed(StepEvent(pitch=67, step=G, duration=G))
    for i, event in enumerate(own):
        gen.feed(StepEvent(event.pitch, event.step - (G if i == 0 else 0), event.duration))
    assert [(n.onset, n.pitch) for n in gen._performer_key] == [
        *((2 * i, p) for i, p in enumerate(G_MAJOR_TUNE)),
        (15, 67),
    ]


def test_without_a_scale_a_continuous_pitch_family_plays_in_the_performers_key() -> None:
    # a block of chromatic pitches: C#, F, G#, A#, C, D#
    chromatic = [RollNote(2 * i, 2, p) for i, p in enumerate((61, 65, 68, 70, 72, 75))]
    snapping = FixedBlocks([chromatic], key_snapping=True)
    _perform(snapping, G_MAJOR_TUNE)
    played = [p for _, p, _ in play(snapping, 12, SamplingParams(candidates=1))]
    g_major = key_classes(Key(7, "major"))
    assert all(g_major[p % 12] for p in played), played
    assert all(abs(a - b) <= 1 for a, b in zip(played[:6], (61, 65, 68, 70, 72, 75), strict=True))
    # a family of discrete pitches keeps its own; a scale the performer sets wins over the estimate
    plain = FixedBlocks([chromatic])
    _perform(plain, G_MAJOR_TUNE)
    assert [p for _, p, _ in play(plain, 6, SamplingParams(candidates=1))] == [61, 65, 68, 70, 72, 75]
    set_scale = FixedBlocks([chromatic], key_snapping=True)
    _perform(set_scale, G_MAJOR_TUNE)
    params = SamplingParams(candidates=1, scale="major", root=5)  # F major
    assert all(key_classes(Key(5, "major"))[p % 12] for _, p, _ in play(set_scale, 6, params))


def test_candidates_in_the_performers_key_are_preferred() -> None:
    heard = [RollNote(2 * i, 2, p) for i, p in enumerate(G_MAJOR_TUNE)]
    # the performer's own bar with C# for C fits their pitch classes better than G B D arpeggios do,
    # but leaves their key
    out_of_key = [RollNote(2 * i, 2, p) for i, p in enumerate((67, 71, 74, 73, 71, 69, 66, 67))]
    in_key = [RollNote(2 * i, 2, p) for i, p in enumerate((67, 71, 74, 67, 71, 74, 67, 71))]
    key = key_classes(Key(7, "major"))

    def score(block: list[RollNote], key: np.ndarray | None) -> float:
        return fit_score(block, heard, candidate_frames=16, heard_frames=16, key=key)

    assert score(out_of_key, None) > score(in_key, None)
    assert score(in_key, key) > score(out_of_key, key)
    # by hand: every note in key, so the key part is 1 beside the other parts' 4 shares
    assert score(in_key, key) == pytest.approx((4 * score(in_key, None) + 2) / 6)
    gen = FixedBlocks([out_of_key, in_key])
    _perform(gen, G_MAJOR_TUNE)
    assert 73 not in [p for _, p, _ in play(gen, 8, SamplingParams(candidates=2))]
