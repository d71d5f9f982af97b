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
    choose_keys,
    frame_of,
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


def test_choose_keys_holds_above_the_threshold_and_limits_polyphony() -> None:
    logits = np.array([3.0, 2.0, -1.0, 4.0, 1.0, -5.0])
    everything = np.ones(6, dtype=bool)
    rng = np.random.default_rng(0)
    # held key 2 (p = 0.27) is released; held key 1 (p = 0.88) holds and comes first; then the likeliest new ones
    assert choose_keys(logits, [1, 2], SHARP, rng, everything, polyphony=3) == [1, 3, 0]
    assert choose_keys(logits, [], SHARP, rng, everything, polyphony=8) == [3, 0, 1, 4]
    # the mask keeps key 3 from starting; top-p keeps only the likeliest keys
    no_three = everything.copy()
    no_three[3] = False
    assert choose_keys(logits, [], SHARP, rng, no_three, polyphony=8) == [0, 1, 4]
    narrow = SamplingParams(temperature=0.05, top_p=0.3)
    assert choose_keys(logits, [], narrow, rng, everything, polyphony=8) == [3, 0]


def test_choose_keys_draws_each_key_with_its_tempered_probability() -> None:
    logits = np.array([0.0, np.log(3.0)])  # probabilities 0.5 and 0.75 at temperature 1
    rng = np.random.default_rng(1)
    draws = [
        choose_keys(logits, [], SamplingParams(top_p=1.0), rng, np.ones(2, bool), polyphony=2) for _ in range(4000)
    ]
    share = [np.mean([k in d for d in draws]) for k in (0, 1)]
    assert share == pytest.approx([0.5, 0.75], abs=0.03)


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
    script = {1: [60, 64], 2: [60, 64], 3: [60], 5: [67], 6: [67, 69], 7: [67, 69], 8: [67, 69], 9: [67, 69], 10: [67]}
    gen = Scripted(script)
    gen.feed(StepEvent(pitch=48, step=0, duration=120))
    assert take(gen, 5) == [
        StepEvent(64, step=120, duration=240),  # frames 1-2: one note, not two
        StepEvent(60, step=0, duration=360),  # frames 1-3, the same onset: step 0
        StepEvent(67, step=480, duration=480),  # frames 5-8: cut at 4 frames...
        StepEvent(69, step=120, duration=480),  # frames 6-9
        StepEvent(67, step=360, duration=240),  # ...and struck again at frame 9, held to 10
    ]
    assert gen.encoded == [(1, (48,))]  # one encoding: every note fed back was the one sampled


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
    assert gen.fed == 0 and gen.snapshot() == ((), 0, 0, None)
