"""Metrics on note streams against hand-computed cases, plus properties on random streams.

Ticks at PPQN 480: a quarter (one beat) is 480, a 4/4 bar 1920.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livegen.eval import metrics as m
from livegen.eval.stream import NoteStream
from livegen.music.events import Note
from livegen.music.time import PPQN

Q, BAR = PPQN, 4 * PPQN


def stream(notes: list[tuple[int, int, int]], *, tracks: list[int] | None = None, **kw: int) -> NoteStream:
    """From (pitch, start, end) triples."""
    return NoteStream.from_notes([Note(p, 90, a, b - a) for p, a, b in notes], tracks=tracks, **kw)


C_SCALE = stream([(p, i * Q, (i + 1) * Q) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72])])
EMPTY = NoteStream.from_notes([])


# --- per note stream -------------------------------------------------------------------


def test_c_major_scale_by_hand():
    s = C_SCALE  # C D E F G A B C, one quarter each: 8 beats, 2 bars
    assert m.pitch_range(s) == 12
    assert m.used_pitch_classes(s) == 7
    # C twice, D E F G A B once each, of 8 notes
    np.testing.assert_allclose(m.pitch_class_histogram(s), np.array([2, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1]) / 8)
    # -(2/8 log2 2/8 + 6 * 1/8 log2 1/8) = 0.5 + 6 * 0.375 = 2.75 bits (not log2 7: C counts twice)
    assert m.pitch_class_entropy(s) == pytest.approx(2.75)
    # seven steps C>D, D>E, E>F, F>G, G>A, A>B, B>C, each 1/7
    expected = np.zeros((12, 12))
    for a, b in [(0, 2), (2, 4), (4, 5), (5, 7), (7, 9), (9, 11), (11, 0)]:
        expected[a, b] = 1 / 7
    np.testing.assert_allclose(m.pitch_class_transitions(s), expected)
    np.testing.assert_array_equal(m.melody_line(s), [60, 62, 64, 65, 67, 69, 71, 72])
    assert m.average_pitch_interval(s) == pytest.approx(12 / 7)  # 2+2+1+2+2+2+1
    intervals = np.zeros(25)
    intervals[12 + 1], intervals[12 + 2] = 2 / 7, 5 / 7
    np.testing.assert_allclose(m.interval_histogram(s), intervals)
    quarter = np.zeros(11)
    quarter[6] = 1.0  # DURATION_CLASSES[6] == 1 beat
    np.testing.assert_allclose(m.ioi_histogram(s), quarter)
    np.testing.assert_allclose(m.note_length_histogram(s), quarter)
    assert m.polyphony(s) == 1.0
    # C major and A minor both hold all 8; C (the tonic) is played twice, A once
    assert m.best_scale(s) == (0, "major")
    assert m.in_scale_rate(s) == 1.0
    assert m.notes_per_beat(s) == 1.0
    assert m.empty_bar_count(s) == 0 and m.empty_bar_ratio(s) == 0.0
    assert m.pitch_classes_per_bar(s) == 4.0  # {C D E F}, {G A B C}
    assert m.qualified_note_ratio(s) == 1.0


def test_melody_line_takes_the_highest_note_of_each_onset():
    # C major triad, then D5, then B3 + G4, then E2 (27 semitones below G4)
    s = stream(
        [(60, 0, Q), (64, 0, Q), (67, 0, Q), (74, Q, 2 * Q), (59, 2 * Q, 3 * Q), (67, 2 * Q, 3 * Q), (40, 3 * Q, 4 * Q)]
    )
    backwards = NoteStream(s.pitch[::-1], s.start[::-1], s.end[::-1], s.track[::-1], 4, s.length)  # not sorted
    np.testing.assert_array_equal(m.melody_line(backwards), [67, 74, 67, 40])
    np.testing.assert_array_equal(m.melody_line(s), [67, 74, 67, 40])
    assert m.average_pitch_interval(s) == pytest.approx((7 + 7 + 27) / 3)
    expected = np.zeros(25)
    expected[12 + 7] = expected[12 - 7] = expected[0] = 1 / 3  # +7, -7, -27 clipped to -12
    np.testing.assert_allclose(m.interval_histogram(s), expected)
    transitions = np.zeros((12, 12))
    transitions[7, 2] = transitions[2, 7] = transitions[7, 4] = 1 / 3  # G>D, D>G, G>E
    np.testing.assert_allclose(m.pitch_class_transitions(s), transitions)


def test_ioi_bins_are_centred_on_played_values():
    # onsets: 0, +120 (16th), +160 (triplet 8th), +240 (8th), +480 (quarter; and a chord note on it),
    # +475 (a quarter played early), +1920 (whole), +1605 (3.34 beats: dotted half)
    onsets = [0, 120, 280, 520, 1000, 1000, 1475, 3395, 5000]
    s = stream([(60 + i, t, t + 60) for i, t in enumerate(onsets)])
    expected = np.zeros(11)
    for idx in (1, 2, 3, 6, 6, 10, 9):  # class indices of 1/4, 1/3, 1/2, 1, 1, 4, 3 beats
        expected[idx] += 1 / 7
    np.testing.assert_allclose(m.ioi_histogram(s), expected)
    assert len(m.IOI_BINS) == len(m.DURATION_CLASSES) + 1 and m.IOI_BINS[0] == 0 and np.isinf(m.IOI_BINS[-1])


def test_note_lengths_and_qualified_notes():
    # lengths 30 (64th), 60 (32nd exactly), 85 (just past the 32nd/16th edge 84.85), 470, 720, 10000 ticks
    lengths = [30, 60, 85, 470, 720, 10000]
    s = stream([(60, 0, n) for n in lengths])
    expected = np.zeros(11)
    for idx in (0, 0, 1, 6, 7, 10):
        expected[idx] += 1 / 6
    np.testing.assert_allclose(m.note_length_histogram(s), expected)
    assert m.qualified_note_ratio(s) == pytest.approx(5 / 6)  # all but the 30-tick note reach 60 ticks
    assert m.qualified_note_ratio(s, min_ticks=471) == pytest.approx(2 / 6)


def test_polyphony_is_time_weighted_over_sounding_time():
    # [0, 960) and [480, 960) overlap; [1920, 2400) alone; the gap 960..1920 does not count.
    # sounding: 480 ticks x1 + 480 ticks x2 + 480 ticks x1 = 1920 note-ticks over 1440 ticks = 4/3
    s = stream([(60, 0, 2 * Q), (64, Q, 2 * Q), (67, 4 * Q, 5 * Q)])
    assert m.polyphony(s) == pytest.approx(4 / 3)
    chord = stream([(60, 0, Q), (64, 0, Q), (67, 0, Q), (72, 0, Q)])
    assert m.polyphony(chord) == 4.0


def test_best_scale_ties():
    # A natural minor phrase A B C D E A A: C major, G major and A minor hold all 7 notes;
    # the tonic A is played 3 times, C once, G never -> A minor
    a_minor = stream([(p, i * Q, (i + 1) * Q) for i, p in enumerate([69, 71, 72, 74, 76, 69, 81])])
    assert m.best_scale(a_minor) == (9, "minor")
    # C and A once each: C major and A minor tie on notes, tonic and accidentals; major first
    assert m.best_scale(stream([(60, 0, Q), (69, Q, 2 * Q)])) == (0, "major")
    # F and G once each: F major, G minor, F minor hold both with the tonic played once; F major has fewest flats
    assert m.best_scale(stream([(65, 0, Q), (67, Q, 2 * Q)])) == (5, "major")
    # C C# D E F G: 5 of 6 in C major (tonic once, no accidentals) -> 5/6
    chromatic = stream([(p, i * Q, (i + 1) * Q) for i, p in enumerate([60, 61, 62, 64, 65, 67])])
    assert m.best_scale(chromatic) == (0, "major")
    assert m.in_scale_rate(chromatic) == pytest.approx(5 / 6)


def test_notes_per_beat_counts_the_whole_length():
    s = stream([(60, 0, Q), (62, Q, 2 * Q), (64, 2 * Q, 3 * Q)], length=2 * BAR)
    assert m.notes_per_beat(s) == pytest.approx(3 / 8)


def test_empty_streams_give_zeros():
    for s in (EMPTY, NoteStream(*(np.zeros(0, dtype=np.int64),) * 4)):
        values = m.scalar_features(s)
        assert all(math.isfinite(v) for v in values.values())
        assert all(v == 0.0 for k, v in values.items() if k != "empty_bar_ratio")
        for h in m.histogram_features(s).values():
            assert not h.any()
        assert m.best_scale(s) == (0, "major")
        assert m.tonal_distance(s, 0, 1) == 0.0
        assert m.following_rate(s, s) == 0.0
    assert m.empty_bar_ratio(EMPTY) == 1.0  # from_notes gives an empty stream one (empty) bar
    assert m.empty_bar_ratio(NoteStream(*(np.zeros(0, dtype=np.int64),) * 4)) == 0.0  # no bars at all


def test_feature_names():
    assert set(m.scalar_features(C_SCALE)) == {
        "pitch_range",
        "used_pitch_classes",
        "pitch_class_entropy",
        "average_pitch_interval",
        "polyphony",
        "in_scale_rate",
        "notes_per_beat",
        "empty_bar_ratio",
        "pitch_classes_per_bar",
        "qualified_note_ratio",
        "structure_repetition",
        "structure_variation",
        "structure_local",
        "structure_long_range",
        "structure_long_range_drop",
    }
    sizes = {k: v.shape for k, v in m.histogram_features(C_SCALE).items()}
    assert sizes == {
        "pitch_class_histogram": (12,),
        "pitch_class_transitions": (144,),
        "interval_histogram": (25,),
        "ioi_histogram": (11,),
        "note_length_histogram": (11,),
    }


# --- per bar ---------------------------------------------------------------------------


def test_empty_beats_and_bars_by_hand():
    # 4 bars = 16 beats.
    #   C [0, 480)        beat 0, bar 0
    #   E [1440, 2400)    held over the bar line at 1920: beats 3 and 4, bars 0 and 1
    #   G [3840, 4320)    starts exactly on bar 2's line: beat 8, bar 2 only
    #   B [5280, 5760)    ends exactly on bar 3's line: beat 11, bar 2 only (bar 3 stays empty)
    s = stream([(60, 0, Q), (64, 3 * Q, 5 * Q), (67, 8 * Q, 9 * Q), (71, 11 * Q, 12 * Q)], length=4 * BAR)
    assert m.empty_beat_count(s) == 16 - 5
    assert m.empty_beat_ratio(s) == pytest.approx(11 / 16)
    assert m.empty_bar_count(s) == 1  # the trailing bar 3
    assert m.empty_bar_ratio(s) == 0.25
    # bar 0 {C, E}, bar 1 {E} (held), bar 2 {G, B}; bar 3 is empty and left out
    assert m.pitch_classes_per_bar(s) == pytest.approx(5 / 3)
    np.testing.assert_array_equal(m.bar_pitch_classes(s).sum(axis=1), [2, 1, 2, 0])


def test_empty_counts_edge_cases():
    # trailing empty bars count; a last partial bar (2.5 bars) counts as a bar
    assert m.empty_bar_count(stream([(60, 0, 100)], length=8 * BAR)) == 7
    assert m.empty_bar_count(stream([(60, 0, 100)], length=5 * BAR // 2)) == 2
    # a zero-length note still fills its beat; a note past `length` is ignored
    s = stream([(60, 2 * Q, 2 * Q), (62, 9000, 9100)], length=BAR)
    assert m.empty_beat_count(s) == 3 and m.empty_bar_count(s) == 0
    # a whole note held from bar 0 through bar 2 fills all three; ending on 3 * BAR leaves bar 3 empty
    held = stream([(60, 0, 3 * BAR)], length=4 * BAR)
    assert m.empty_bar_count(held) == 1 and m.empty_beat_count(held) == 4


# Harte et al. 2006 centroid of a C major triad (C, E, G equally long):
#   fifths   angles 0, 14pi/3 = 2pi/3, 49pi/6 = pi/6: sin (0 + sqrt3/2 + 1/2)/3, cos (1 - 1/2 + sqrt3/2)/3
#   m. 3rds  angles 0, 6pi = 0, 21pi/2 = pi/2:       sin 1/3, cos 2/3
#   M. 3rds  angles 0, 8pi/3, 14pi/3 (= 2pi/3 twice): 0.5 * sin sqrt3/3 = sqrt3/6, 0.5 * cos 0 = 0
C_CENTROID = np.array([(1 + 3**0.5) / 6, (1 + 3**0.5) / 6, 1 / 3, 2 / 3, 3**0.5 / 6, 0])
# F# major is C major moved by 6 semitones: +7pi on the fifths circle and +9pi on the minor-thirds one
# flip the sign of the first four coordinates; +4pi on the major-thirds one changes nothing. So the distance
# is 2 * |first four| = 2 * sqrt(2 ((1 + sqrt3)/6)^2 + 1/9 + 4/9) = 2 * sqrt((7 + sqrt3) / 9).
C_TO_FSHARP = 2 / 3 * math.sqrt(7 + math.sqrt(3))  # about 1.970


def test_tonal_centroid_of_c_major():
    chroma = np.zeros(12)
    chroma[[0, 4, 7]] = 1
    np.testing.assert_allclose(m.tonal_centroid(chroma), C_CENTROID, atol=1e-12)


def test_tonal_distance_between_tracks():
    c, fsharp = [60, 64, 67], [66, 70, 73]
    same = stream([(p, 0, BAR) for p in c] * 2, tracks=[0, 0, 0, 1, 1, 1])
    assert m.tonal_distance(same, 0, 1) == pytest.approx(0.0, abs=1e-12)
    apart = stream([(p, 0, BAR) for p in c + fsharp], tracks=[0, 0, 0, 1, 1, 1])
    assert m.tonal_distance(apart, 0, 1) == pytest.approx(C_TO_FSHARP)
    assert m.tonal_distance(apart, 1, 0) == pytest.approx(C_TO_FSHARP)
    # bar 0 identical (0), bar 1 C vs F# (C_TO_FSHARP), bar 2 only track 0 sounds (left out) -> mean of two
    notes = [(p, 0, BAR) for p in c * 2] + [(p, BAR, 2 * BAR) for p in c + fsharp] + [(60, 2 * BAR, 3 * BAR)]
    s = stream(notes, tracks=[0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0])
    assert m.tonal_distance(s, 0, 1) == pytest.approx(C_TO_FSHARP / 2)
    # chroma is the time each pitch class sounds, normalised per bar: a C major chord in whole notes and
    # the same three notes as quarters (equal times) agree; a whole C under quarter E and G (4:1:1) does not
    arpeggio = [(p, i * Q, (i + 1) * Q) for i, p in enumerate(c)]
    agree = stream([(p, 0, BAR) for p in c] + arpeggio, tracks=[0] * 3 + [1] * 3)
    assert m.tonal_distance(agree, 0, 1) == pytest.approx(0.0, abs=1e-12)
    weighted = stream([(p, 0, BAR) for p in c] + [(60, 0, BAR), *arpeggio[1:]], tracks=[0] * 3 + [1] * 3)
    assert m.tonal_distance(weighted, 0, 1) > 0.1
    # tracks that never sound together, or a missing track
    assert m.tonal_distance(stream([(60, 0, Q), (64, BAR, BAR + Q)], tracks=[0, 1]), 0, 1) == 0.0
    assert m.tonal_distance(same, 0, 5) == 0.0


# --- structure -------------------------------------------------------------------------


def test_bar_vectors_by_hand():
    # bar 0: a whole note C (onset 1 at position 0, held 0.5 at 1..15)
    # bar 1: four quarter-note Cs (onsets 1 at 0, 4, 8, 12, held 0.5 between)
    s = stream([(60, 0, BAR)] + [(60, BAR + i * Q, BAR + (i + 1) * Q) for i in range(4)])
    v = m.bar_vectors(s).reshape(2, 16, 12)
    assert v[:, :, 1:].sum() == 0
    np.testing.assert_array_equal(v[0, :, 0], [1] + [0.5] * 15)
    np.testing.assert_array_equal(v[1, :, 0], [1, 0.5, 0.5, 0.5] * 4)
    # dot 1 + 12 * 0.25 + 3 * 0.5 = 5.5; norms sqrt(1 + 15/4) and sqrt(4 + 12/4)
    sim = m.bar_self_similarity(s)
    np.testing.assert_allclose(sim, [[1, 5.5 / math.sqrt(4.75 * 7)], [5.5 / math.sqrt(4.75 * 7), 1]])


def test_held_tail_and_silent_bars_in_self_similarity():
    # a C held over two bars, then a silent bar; onsets a 16th early round into the next position
    s = stream([(60, 0, 2 * BAR), (64, 4 * BAR - 30, 4 * BAR + Q)], length=5 * BAR)
    v = m.bar_vectors(s).reshape(5, 16, 12)
    np.testing.assert_array_equal(v[1, :, 0], [0.5] * 16)  # the tail
    assert v[4, 0, 4] == 1.0  # E rounded onto bar 4's downbeat
    assert v[3, 15, 4] == 0.5  # and sounding through bar 3's last sixteenth
    sim = m.bar_self_similarity(s)
    np.testing.assert_array_equal(np.diag(sim), [1, 1, 0, 1, 1])
    assert not sim[2].any() and not sim[:, 2].any()
    assert sim[0, 1] == pytest.approx((1 * 0.5 + 15 * 0.25) / (math.sqrt(4.75) * 2))


def _bars(patterns: list[list[int]]) -> NoteStream:
    """One bar per pattern of four quarter-note pitches."""
    notes = [(p, b * BAR + i * Q, b * BAR + (i + 1) * Q) for b, bar in enumerate(patterns) for i, p in enumerate(bar)]
    return stream(notes, length=len(patterns) * BAR)


def test_one_bar_repeated_sixteen_times():
    s = _bars([[60, 64, 67, 64]] * 16)
    np.testing.assert_allclose(m.bar_self_similarity(s), np.ones((16, 16)))
    assert m.structure(s) == pytest.approx(
        {"repetition": 15 / 16, "variation": 0.0, "local": 1.0, "long_range": 1.0, "long_range_drop": 0.0}
    )


def test_random_bars_do_not_repeat():
    rng = np.random.default_rng(2)
    notes = []
    for b in range(16):  # eight eighth notes of random pitch and random rests per bar
        for i in np.flatnonzero(rng.random(8) < 0.7):
            notes.append((int(rng.integers(48, 84)), b * BAR + int(i) * 240, b * BAR + (int(i) + 1) * 240))
    s = stream(notes, length=16 * BAR)
    st_ = m.structure(s)
    assert st_["repetition"] == 0.0
    assert st_["variation"] > 0.8
    repeated = m.structure(_bars([[60, 64, 67, 64]] * 16))
    assert st_["variation"] > repeated["variation"] and st_["repetition"] < repeated["repetition"]


def test_structure_that_changes_halfway_and_one_that_returns():
    # eight bars of A then eight of B (no shared pitch class): neighbours alike except at bar 8, far bars unlike
    s = _bars([[60] * 4] * 8 + [[62] * 4] * 8)
    st_ = m.structure(s)
    assert st_["repetition"] == pytest.approx(14 / 16)  # all but bars 0 and 8 repeat an earlier bar
    assert st_["local"] == pytest.approx(14 / 15)
    assert st_["long_range"] == 0.0  # each of the 36 pairs 8+ apart is A against B
    assert st_["long_range_drop"] == pytest.approx(14 / 15)
    assert st_["variation"] == pytest.approx(1 - 56 / 120)  # 2 * C(8, 2) alike pairs of C(16, 2)
    # eight different bars played twice: neighbours unlike, 8 of the 36 far pairs (8 apart) identical
    returning = _bars([[60 + k] * 4 for k in range(8)] * 2)
    st_ = m.structure(returning)
    assert st_["local"] == 0.0 and st_["long_range"] == pytest.approx(8 / 36)
    assert st_["long_range_drop"] == pytest.approx(-8 / 36)
    assert st_["repetition"] == pytest.approx(8 / 16)


def test_structure_of_few_bars():
    assert m.structure(_bars([[60] * 4])) == {
        "repetition": 0.0,
        "variation": 0.0,
        "local": 0.0,
        "long_range": 0.0,
        "long_range_drop": 0.0,
    }
    assert m.structure(_bars([[60] * 4, [60] * 4]))["long_range"] == 0.0  # no pairs 8 apart


# --- following -------------------------------------------------------------------------


def test_following_rate_by_hand():
    performer = stream([(60, 0, Q), (64, Q, 2 * Q), (67, 5 * Q, 6 * Q)])  # C [0,480) E [480,960) G [2400,2880)
    generated = stream(
        [
            (72, 2 * Q, 3 * Q),  # C at 960: the performer's C sounded within the last bar -> follows
            (64, Q, 2 * Q),  # E at 480: the performer's E starts at the same tick, not before -> no
            (60, 2500, 2600),  # C at 2500: the C ended at 480, before 2500 - 1920 = 580 -> no
            (67, 6 * Q, 7 * Q),  # G at 2880: the G started at 2400 -> follows
            (52, 2401, 2500),  # E at 2401: the E ended at 960, after 2401 - 1920 = 481 -> follows
            (62, 100, 200),  # D: never played -> no
        ]
    )
    assert m.following_rate(performer, generated) == pytest.approx(3 / 6)
    # with a one-beat window only the G at 2880 follows (the G sounds until 2880, after 2880 - 480)
    assert m.following_rate(performer, generated, window_ticks=Q) == pytest.approx(1 / 6)
    # a held performer note counts for as long as it sounds
    held = stream([(60, 0, 10 * BAR)])
    assert m.following_rate(held, stream([(48, 9 * BAR, 9 * BAR + Q)]), window_ticks=Q) == 1.0
    assert m.following_rate(EMPTY, generated) == 0.0
    with pytest.raises(ValueError, match="window_ticks"):
        m.following_rate(performer, generated, window_ticks=0)


# --- properties on random streams ------------------------------------------------------


@st.composite
def note_streams(draw: st.DrawFn) -> NoteStream:
    n = draw(st.integers(0, 30))
    beats = draw(st.integers(1, 7))
    ints = st.lists(st.integers(0, 12 * BAR), min_size=n, max_size=n)
    pitch = np.array(draw(st.lists(st.integers(0, 127), min_size=n, max_size=n)), dtype=np.int64)
    start = np.array(draw(ints), dtype=np.int64)
    dur = np.array(draw(st.lists(st.integers(0, 3 * BAR), min_size=n, max_size=n)), dtype=np.int64)
    track = np.array(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), dtype=np.int64)
    order = np.lexsort((pitch, start))
    pitch, start, end, track = pitch[order], start[order], start[order] + dur[order], track[order]
    bar = beats * PPQN
    default = max(bar, -(-int(end.max()) // bar) * bar) if n else bar  # as NoteStream.from_notes
    length = draw(st.one_of(st.just(default), st.integers(0, 16 * BAR)))
    return NoteStream(pitch, start, end, track, beats, length)


@settings(max_examples=150, deadline=None)
@given(s=note_streams())
def test_properties_on_random_streams(s: NoteStream):
    for name, h in m.histogram_features(s).items():
        assert np.all(np.isfinite(h)) and np.all(h >= 0), name
        assert h.sum() == pytest.approx(1.0) or h.sum() == 0.0, name
    values = m.scalar_features(s)
    assert all(math.isfinite(v) for v in values.values())
    for name in (
        "in_scale_rate",
        "empty_bar_ratio",
        "qualified_note_ratio",
        "structure_repetition",
        "structure_variation",
    ):
        assert 0.0 <= values[name] <= 1.0, name
    assert 0.0 <= values["pitch_class_entropy"] <= math.log2(12) + 1e-12
    assert values["polyphony"] == 0.0 or 1.0 - 1e-12 <= values["polyphony"] <= len(s)
    assert 0.0 <= values["pitch_classes_per_bar"] <= 12
    sim = m.bar_self_similarity(s)
    assert sim.shape == (s.bars, s.bars) and np.allclose(sim, sim.T) and np.all((sim >= 0) & (sim <= 1))
    for a, b in ((0, 1), (1, 2)):
        assert 0.0 <= m.tonal_distance(s, a, b) < 4.0
    perf, gen = s.select(s.track == 0), s.select(s.track != 0)
    assert 0.0 <= m.following_rate(perf, gen) <= 1.0


def _sounding_ticks(s: NoteStream) -> np.ndarray:
    """Brute force: number of notes sounding at every tick of [0, length) (zero-length notes: one tick)."""
    count = np.zeros(max(s.length, 0), dtype=int)
    for a, b in zip(s.start, np.maximum(s.end, s.start + 1), strict=True):
        count[max(a, 0) : max(min(b, s.length), 0)] += 1
    return count


@settings(max_examples=100, deadline=None)
@given(s=note_streams())
def test_empty_counts_and_polyphony_match_brute_force(s: NoteStream):
    count = _sounding_ticks(s)
    for unit, counted in ((PPQN, m.empty_beat_count(s)), (s.bar_ticks, m.empty_bar_count(s))):
        units = -(-s.length // unit)
        padded = np.zeros(units * unit, dtype=int)
        padded[: len(count)] = count
        assert counted == int((padded.reshape(units, unit).sum(axis=1) == 0).sum())
    # polyphony over the whole of every note (not clipped to length)
    inside = s.select(np.maximum(s.end, s.start + 1) <= s.length)
    sounding = _sounding_ticks(inside)
    expected = sounding[sounding > 0].mean() if (sounding > 0).any() else 0.0
    assert m.polyphony(inside) == pytest.approx(expected)


@settings(max_examples=60, deadline=None)
@given(s=note_streams(), shift=st.integers(-2, 2))
def test_octave_and_transposition_invariances(s: NoteStream, shift: int):
    up = NoteStream(s.pitch + 12 * shift, s.start, s.end, s.track, s.beats_per_bar, s.length)
    if len(s) and (up.pitch.min() < 0 or up.pitch.max() > 127):
        return
    np.testing.assert_allclose(m.pitch_class_histogram(up), m.pitch_class_histogram(s))
    np.testing.assert_allclose(m.bar_self_similarity(up), m.bar_self_similarity(s))
    assert m.interval_histogram(up).tolist() == m.interval_histogram(s).tolist()
    assert m.in_scale_rate(up) == m.in_scale_rate(s)
