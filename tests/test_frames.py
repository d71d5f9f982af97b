"""The ``frame`` host: rolls and notes, held-note continuation, the polyphony limit, the note buffer, snapshots.

Context: tests (no model files: a scripted family stands in for the graphs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from livegen.models.frames import (
    ANY_TRACK,
    FrameGenerator,
    FrameTracker,
    RollNote,
    draw_keys,
    frame_of,
    key_distribution,
    note_frames,
    notes_to_roll,
    roll_to_notes,
)
from livegen.models.multitrack import assign_tracks, tracks_to_frames
from livegen.models.sampling import SamplingParams
from livegen.models.step import StepEvent

SHARP = SamplingParams(temperature=0.05, top_p=1.0)  # as good as the threshold logit > 0


def test_ticks_to_frames_round_to_the_nearest_16th_and_a_note_lasts_at_least_one() -> None:
    assert [frame_of(t) for t in (0, 59, 60, 179, 180)] == [0, 0, 1, 1, 2]
    assert note_frames(0, 480) == (0, 4)
    assert note_frames(100, 30) == (1, 1)  # ends in its own frame: still one frame
    assert note_frames(230, 250) == (2, 2)  # 230 -> frame 2, 480 -> frame 4


def test_notes_to_roll_marks_every_sounding_frame() -> None:
    notes = [RollNote(0, 2, 60), RollNote(1, 1, 62), RollNote(2, 5, 99)]  # 99 is outside the 4 keys
    roll = notes_to_roll(notes, start=0, length=3, pitch_min=60, keys=4)
    assert roll.tolist() == [[1, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    assert notes_to_roll(notes, start=1, length=1, pitch_min=60, keys=4).tolist() == [[1, 0, 1, 0]]


def test_roll_to_notes_holds_runs_and_cuts_them_at_the_cap() -> None:
    roll = np.zeros((5, 3), dtype=np.float32)
    roll[0:3, 0] = 1  # a held note of 3 frames
    roll[4, 0] = 1  # struck again after a gap
    roll[1, 2] = 1
    assert roll_to_notes(roll, 60) == [RollNote(0, 3, 60), RollNote(1, 1, 62), RollNote(4, 1, 60)]
    assert roll_to_notes(roll, 60, max_hold=2) == [
        RollNote(0, 2, 60),
        RollNote(1, 1, 62),
        RollNote(2, 1, 60),
        RollNote(4, 1, 60),
    ]
    # and back: the roll of those notes is the roll
    assert np.array_equal(notes_to_roll(roll_to_notes(roll, 60), 0, 5, 60, 3), roll)


def test_tracker_continues_a_slot_sounding_the_same_pitch_and_ends_it_otherwise() -> None:
    tracker = FrameTracker(max_hold=16)
    tracker, ended = tracker.advance(0, {0: 60, 1: 64}, {0: 0, 1: 1})
    assert ended == []
    tracker, ended = tracker.advance(1, {0: 60, 1: 65}, {1: 1})  # track 1 changes pitch
    assert ended == [RollNote(0, 1, 64, 1)]
    tracker, ended = tracker.advance(2, {}, {})
    assert sorted(ended, key=lambda n: n.pitch) == [RollNote(0, 2, 60, 0), RollNote(1, 1, 65, 1)]
    inherited = FrameTracker().inherit([(67, RollNote(0, 8, 67))])
    inherited, ended = inherited.advance(3, {}, {})
    assert ended == []  # a context note is never handed out again


def test_key_distribution_tempers_masks_and_cuts_to_top_p() -> None:
    probs = np.array([0.5, 0.75, 0.2, 0.05])
    everything = np.ones(4, dtype=bool)
    assert key_distribution(probs, SamplingParams(top_p=1.0), everything) == pytest.approx(probs)
    cold = key_distribution(probs, SamplingParams(temperature=0.5, top_p=1.0), everything)
    assert cold == pytest.approx([0.5, 0.9, 1 / 17, 1 / 362], abs=1e-3)  # the odds squared
    no_one = everything.copy()
    no_one[1] = False
    assert key_distribution(probs, SamplingParams(top_p=1.0), no_one)[1] == 0.0
    assert np.flatnonzero(key_distribution(probs, SamplingParams(top_p=0.5), everything)).tolist() == [1]
    assert np.flatnonzero(key_distribution(probs, SamplingParams(top_p=0.6), everything)).tolist() == [0, 1]


def test_draw_keys_keeps_every_frame_distributed_as_the_model_says() -> None:
    frames = [np.array([0.5, 0.75]), np.array([0.2, 0.75]), np.array([0.6, 0.1])]
    rng = np.random.default_rng(1)
    counts = np.zeros((len(frames), 2))
    for _ in range(4000):
        before, sounding = np.zeros(2), []
        for f, probs in enumerate(frames):
            sounding = draw_keys(probs, before, sounding, rng, polyphony=2)
            counts[f, sounding] += 1
            before = probs
    assert counts / 4000 == pytest.approx(np.stack(frames), abs=0.03)


def test_a_key_moves_only_as_far_as_its_chance_moved() -> None:
    rng = np.random.default_rng(2)
    steady = np.array([0.5, 0.5, 0.5])
    held = [draw_keys(steady, steady, [0, 1], rng, polyphony=3) for _ in range(200)]
    assert all(keys == [0, 1] for keys in held)  # unchanged chances: nothing moves
    fresh = [draw_keys(steady, steady, [0, 1], rng, polyphony=3, redraw=1.0) for _ in range(2000)]
    assert np.mean([2 in keys for keys in fresh]) == pytest.approx(0.5, abs=0.04)  # drawn afresh: anything may
    on_the_beat = [draw_keys(steady, steady, [0, 1], rng, polyphony=3, redraw=0.25, metre=4.0) for _ in range(2000)]
    assert np.mean([2 in keys for keys in on_the_beat]) == pytest.approx(0.5, abs=0.04)
    off_the_beat = [draw_keys(steady, steady, [0, 1], rng, polyphony=3, redraw=0.25, metre=0.0) for _ in range(500)]
    assert all(keys == [0, 1] for keys in off_the_beat)


def test_four_held_keys_do_not_keep_a_likelier_new_key_from_sounding() -> None:
    probs = np.array([0.6, 0.6, 0.6, 0.6, 0.9, 0.01])  # four held keys the model keeps on at 0.6; a new one at 0.9
    rng = np.random.default_rng(0)
    frames = [draw_keys(probs, probs, [0, 1, 2, 3], rng, polyphony=4, redraw=0.5) for _ in range(2000)]
    sounded = [keys for keys in frames if 4 in keys]
    assert len(sounded) / len(frames) == pytest.approx(0.5 * 0.9, abs=0.04)  # drawn afresh in half the frames
    assert all(keys[0] == 4 and len(keys) <= 4 for keys in sounded)  # the likeliest sound first, within the cap


def test_assign_tracks_gives_each_performed_note_the_nearest_free_track() -> None:
    centers = [70.0, 64.0, 57.0, 48.0]
    notes = [
        RollNote(0, 4, 72, ANY_TRACK),
        RollNote(0, 4, 69, ANY_TRACK),
        RollNote(4, 2, 50, 3),
        RollNote(4, 2, 49, ANY_TRACK),
    ]
    assigned = assign_tracks(notes, centers)
    # 72 -> soprano; 69 is nearest the soprano too but it is busy: the alto; 49 wants the bass, busy: the tenor
    assert [(n.pitch, n.track) for n in assigned] == [(72, 0), (69, 1), (50, 3), (49, 2)]


def test_tracks_to_frames_is_one_hot_per_track_with_a_rest_class() -> None:
    frames = tracks_to_frames([RollNote(0, 2, 61, 0), RollNote(1, 1, 60, 1)], 0, 3, tracks=2, pitch_min=60, keys=2)
    assert frames.tolist() == [[0, 0, 1, 1, 0, 0], [0, 0, 1, 0, 1, 0], [1, 0, 0, 1, 0, 0]]


class Scripted(FrameGenerator):
    """A frame family that plays a script (absolute frame -> pitches) and counts its encodings."""

    def __init__(self, script: Mapping[int, Sequence[int]], *, max_silence: int = 32) -> None:
        super().__init__(window=8, max_hold=4, max_silence=max_silence)
        self.script = script
        self.encoded: list[tuple[int, tuple[int, ...]]] = []

    def _encode(self, notes: Sequence[RollNote], end: int) -> object:
        self.encoded.append((end, tuple(n.pitch for n in notes)))
        return end

    def _frame(self, state: object, held: Mapping[int, int], params: SamplingParams, rng: np.random.Generator):
        frame = int(state)  # type: ignore[call-overload]
        return frame + 1, {p: p for p in self.script.get(frame, ())}

    def _force(self, state: object, params: SamplingParams) -> dict[int, int]:
        return {72: 72}


def take(gen: FrameGenerator, count: int) -> list[StepEvent]:
    """Sample and feed back ``count`` notes, as a planner does."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        event = gen.sample(SHARP, rng)
        gen.feed(event)
        out.append(event)
    return out


def test_notes_come_out_in_onset_order_with_held_notes_held_and_chords_at_step_zero() -> None:
    script = {1: [60, 64], 2: [60, 64], 3: [60], 5: [67], 6: [67, 69], 7: [67, 69], 8: [67, 69], 9: [67], 10: [67]}
    script |= {11: [64]}
    gen = Scripted(script)
    gen.feed(StepEvent(pitch=48, step=0, duration=120))
    assert take(gen, 5) == [
        StepEvent(64, step=120, duration=240),  # frames 1-2: one note, not two
        StepEvent(60, step=0, duration=360),  # frames 1-3, the same onset: step 0
        StepEvent(67, step=480, duration=480),  # frames 5-8: cut at 4 frames, silent while the model holds it
        StepEvent(69, step=120, duration=360),  # frames 6-8
        StepEvent(64, step=600, duration=120),  # frame 11
    ]
    assert gen.encoded == [(1, (48,))]  # one encoding: every note fed back was the one sampled


def test_a_key_the_model_keeps_on_past_max_hold_is_not_struck_again_until_it_is_released() -> None:
    script = {f: [60] for f in range(1, 11)} | {12: [60], 13: [60]}  # on for 10 frames, off, on again
    gen = Scripted(script)
    gen.feed(StepEvent(pitch=48, step=0, duration=120))
    assert take(gen, 2) == [
        StepEvent(60, step=120, duration=480),  # cut at max_hold = 4 frames, then silent while held
        StepEvent(60, step=11 * 120, duration=240),  # struck again only after the model released it
    ]


def test_a_different_note_fed_re_encodes_the_played_roll_and_restore_undoes_it() -> None:
    gen = Scripted({1: [60], 2: [62], 3: [64], 4: [65]})
    gen.feed(StepEvent(pitch=48, step=0, duration=120))
    first = take(gen, 1)
    snap = gen.snapshot()
    nxt = gen.sample(SHARP, np.random.default_rng(0))
    assert nxt == StepEvent(62, step=120, duration=120)
    gen.feed(StepEvent(pitch=50, step=120, duration=120))  # the performer plays instead
    assert gen.fed == 3
    assert gen.sample(SHARP, np.random.default_rng(0)) == StepEvent(64, step=120, duration=120)
    assert gen.encoded == [(1, (48,)), (3, (48, 60, 50))]  # encoded again, up to and with the performed note
    gen.restore(snap)
    assert gen.fed == 2
    assert gen.sample(SHARP, np.random.default_rng(0)) == nxt  # the buffer came back with the snapshot
    assert len(gen.encoded) == 2
    assert first == [StepEvent(60, step=120, duration=120)]


def test_a_silent_model_is_made_to_play_after_max_silence_frames() -> None:
    gen = Scripted({}, max_silence=4)
    gen.feed(StepEvent(pitch=48, step=0, duration=120))
    assert take(gen, 1) == [StepEvent(72, step=4 * 120, duration=120)]


def test_sample_before_any_feed_is_an_error_and_reset_forgets() -> None:
    gen = Scripted({1: [60]})
    with pytest.raises(RuntimeError):
        gen.sample(SHARP, np.random.default_rng(0))
    gen.feed(StepEvent(pitch=48, step=0, duration=120))
    gen.reset()
    assert gen.fed == 0 and gen.snapshot() == ((), 0, 0, 0, None)
