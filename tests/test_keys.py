"""Key estimation on scales and well-known openings, the sliding-window tracker, transposition."""

from __future__ import annotations

import pytest

from livegen.models.sampling import parse_key
from livegen.music.events import Note
from livegen.music.keys import (
    Key,
    KeyTracker,
    estimate_key,
    key_correlations,
    pitch_class_histogram,
    transpose_interval,
)

Q = 480  # ticks per quarter note
MAJOR = (0, 2, 4, 5, 7, 9, 11, 12)
HARMONIC_MINOR = (0, 2, 3, 5, 7, 8, 11, 12)


def melody(steps: list[tuple[int, float]], start: int = 0) -> list[Note]:
    """Notes from (pitch, beats) one after another."""
    notes = []
    t = start
    for pitch, beats in steps:
        notes.append(Note(pitch, 80, t, int(beats * Q)))
        t += int(beats * Q)
    return notes


def tune(text: str) -> list[tuple[int, float]]:
    """(pitch, beats) from words like ``67:2`` (a pitch and its beats) or ``60`` (one beat)."""
    steps = []
    for word in text.split():
        pitch, _, beats = word.partition(":")
        steps.append((int(pitch), float(beats or 1)))
    return steps


def scale(root: int, steps: tuple[int, ...]) -> list[Note]:
    """An ascending scale from MIDI note 60 + root; the tonics are held for two beats."""
    return melody([(60 + root + s, 2.0 if s in (0, 12) else 1.0) for s in steps])


@pytest.mark.parametrize("root", range(12))
def test_major_scales(root: int) -> None:
    assert estimate_key(scale(root, MAJOR)) == Key(root, "major")


@pytest.mark.parametrize("root", range(12))
def test_harmonic_minor_scales(root: int) -> None:
    assert estimate_key(scale(root, HARMONIC_MINOR)) == Key(root, "minor")


TWINKLE = tune("60 60 67 67 69 69 67:2 65 65 64 64 62 62 60:2")
FUR_ELISE = tune(
    "76:0.5 75:0.5 76:0.5 75:0.5 76:0.5 71:0.5 74:0.5 72:0.5 69:1.5 60:0.5 64:0.5 69:0.5 71:1.5 "
    "64:0.5 68:0.5 71:0.5 72:1.5 64:0.5 76:0.5 75:0.5 76:0.5 75:0.5 76:0.5 71:0.5 74:0.5 72:0.5 "
    "69:1.5"
)
ODE_TO_JOY = tune(
    "66 66 67 69 69 67 66 64 62 62 64 66 66:1.5 64:0.5 64:2 66 66 67 69 69 67 66 64 62 62 64 66 64:1.5 62:0.5 62:2"
)
GREENSLEEVES = tune("69 72:2 74 76:1.5 77:0.5 76 74:2 71 67:1.5 69:0.5 71 72:2 69 69:1.5 68:0.5 69 71:2 68 64:2")
AMAZING_GRACE = tune("62 67:2 71:0.5 67:0.5 71:2 69 67:2 64 62:2 62 67:2 71:0.5 67:0.5 71:2 69 74:3")
HAPPY_BIRTHDAY = tune(
    "62:0.75 62:0.25 64 62 67 66:2 62:0.75 62:0.25 64 62 69 67:2 62:0.75 62:0.25 74 71 67 66 64 "
    "72:0.75 72:0.25 71 67 69 67:2"
)


def bach_prelude_in_c() -> list[Note]:
    """BWV 846, bars 1-4: C, Dm7/C, G7/B, C, each figure played twice."""
    figures = [(60, 64, 67, 72, 76), (60, 62, 69, 74, 77), (59, 62, 67, 74, 77), (60, 64, 67, 72, 76)]
    steps = []
    for a, b, c, d, e in figures:
        steps += [(p, 0.5) for p in (a, b, c, d, e, c, d, e) * 2]
    return melody(steps)


def toccata_in_d_minor() -> list[Note]:
    """BWV 565's opening: the mordent and descent twice (an octave apart), the diminished chord, D minor."""
    mordent = tune("69:0.25 67:0.25 69:2 67:0.25 65:0.25 64:0.25 62:0.25 61 62:2")
    notes = melody(mordent)
    notes += melody([(p - 12, beats) for p, beats in mordent], start=notes[-1].end)
    end = notes[-1].end
    notes += [Note(p, 80, end, 2 * Q) for p in (49, 52, 55, 58)]
    notes += [Note(p, 80, end + 2 * Q, 4 * Q) for p in (38, 50, 53, 57, 62)]
    return notes


@pytest.mark.parametrize(
    ("notes", "name"),
    [
        (melody(TWINKLE), "C major"),
        (bach_prelude_in_c(), "C major"),
        (melody(FUR_ELISE), "A minor"),
        (melody(GREENSLEEVES), "A minor"),
        (melody(ODE_TO_JOY), "D major"),
        (toccata_in_d_minor(), "D minor"),
        (melody(AMAZING_GRACE), "G major"),
        (melody(HAPPY_BIRTHDAY), "G major"),
    ],
    ids=[
        "twinkle",
        "bach-prelude-c",
        "fur-elise",
        "greensleeves",
        "ode-to-joy",
        "toccata",
        "amazing-grace",
        "happy-birthday",
    ],
)
def test_famous_openings(notes: list[Note], name: str) -> None:
    key = estimate_key(notes)
    assert key is not None
    assert key.name == name


def test_transposed_opening_follows_the_transposition() -> None:
    up_a_tone = [Note(n.pitch + 2, n.velocity, n.start, n.duration) for n in melody(FUR_ELISE)]
    assert estimate_key(up_a_tone) == Key(11, "minor")  # B minor


def test_no_notes_no_key() -> None:
    assert estimate_key([]) is None


def test_longer_notes_weigh_more() -> None:
    # E and G long, C short: E minor; the same pitches with C long: C major.
    assert estimate_key(melody([(64, 4), (67, 4), (71, 4), (60, 0.25)])) == Key(4, "minor")
    assert estimate_key(melody([(60, 8), (64, 1), (67, 2)])) == Key(0, "major")


def test_zero_duration_notes_count_once_each() -> None:
    notes = [Note(p, 80, 0, 0) for p in (60, 64, 67, 60)]
    assert pitch_class_histogram(notes) == [2, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0]
    assert estimate_key(notes) == Key(0, "major")


def test_correlations_are_pearson_against_the_rotated_profile() -> None:
    # A histogram equal to the C major profile correlates 1 with C major, and with
    # G major as the profile does with itself rotated by a fifth.
    profile = [6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88]
    correlations = key_correlations(profile)
    assert correlations[Key(0, "major")] == pytest.approx(1.0)
    rotated = profile[-7:] + profile[:-7]  # rating of pc is profile[pc - 7]
    assert key_correlations(rotated)[Key(7, "major")] == pytest.approx(1.0)
    assert all(-1.0 <= c <= 1.0 for c in correlations.values())


def test_flat_histogram_ties_go_to_c_major() -> None:
    assert estimate_key([Note(60 + pc, 80, 0, Q) for pc in range(12)]) == Key(0, "major")


@pytest.mark.parametrize(
    ("key", "name"),
    [
        (Key(0, "major"), "C major"),
        (Key(2, "minor"), "D minor"),
        (Key(10, "major"), "Bb major"),
        (Key(1, "minor"), "C# minor"),
        (Key(6, "major"), "F# major"),
        (Key(8, "minor"), "G# minor"),
        (Key(3, "major"), "Eb major"),
    ],
)
def test_names_read_back_through_the_key_option(key: Key, name: str) -> None:
    assert key.name == name
    assert str(key) == name
    assert parse_key(name) == (key.root, key.mode)


def test_key_values_are_checked() -> None:
    with pytest.raises(ValueError, match=r"key root 12: expected a pitch class 0\.\.11"):
        Key(12, "major")
    with pytest.raises(ValueError, match="key mode 'dorian': expected 'major' or 'minor'"):
        Key(0, "dorian")  # type: ignore[arg-type]


def test_relative_keys() -> None:
    assert Key(0, "major").relative == Key(9, "minor")
    assert Key(9, "minor").relative == Key(0, "major")
    assert Key(2, "minor").relative == Key(5, "major")


# --- tracker ----------------------------------------------------------------------------


def test_tracker_forgets_notes_that_ended_before_the_window() -> None:
    tracker = KeyTracker(window_ticks=8 * Q)
    assert tracker.key() is None
    c_major = melody(TWINKLE)  # 16 beats
    for note in c_major:
        tracker.observe(note)
    assert tracker.key() == Key(0, "major")
    # only notes ending after 16 - 8 = 8 beats stay: the last 8 beats of the tune (from beat 8)
    assert [n.start for n in tracker.notes] == [n.start for n in c_major if n.end > 8 * Q]
    eb_major = melody([(p + 3, b) for p, b in TWINKLE], start=c_major[-1].end)
    for note in eb_major:
        tracker.observe(note)
    assert tracker.key() == Key(3, "major")
    assert all(n.end > eb_major[-1].end - 8 * Q for n in tracker.notes)


def test_tracker_window_edge_is_exclusive_and_late_old_notes_are_ignored() -> None:
    tracker = KeyTracker(window_ticks=4 * Q)
    tracker.observe(Note(60, 80, 0, Q))  # ends at 1 beat
    tracker.observe(Note(64, 80, 4 * Q, Q))  # ends at 5 beats: 5 - 4 = 1, the first note's end is out
    assert [n.pitch for n in tracker.notes] == [64]
    tracker.observe(Note(67, 80, 0, Q // 2))  # reported late, ended long ago
    assert [n.pitch for n in tracker.notes] == [64]
    tracker.clear()
    assert tracker.key() is None


def test_tracker_needs_a_positive_window() -> None:
    with pytest.raises(ValueError, match="key window 0 ticks"):
        KeyTracker(0)


# --- transposition ----------------------------------------------------------------------

C, Db, D, Eb, E, F, Gb, G, Ab, A, Bb, B = range(12)


@pytest.mark.parametrize(
    ("source", "target", "semitones"),
    [
        # same mode: the tonic moves the shortest way, a tritone goes up
        (Key(C, "major"), Key(C, "major"), 0),
        (Key(C, "major"), Key(G, "major"), -5),
        (Key(C, "major"), Key(F, "major"), 5),
        (Key(C, "major"), Key(Gb, "major"), 6),
        (Key(Gb, "major"), Key(C, "major"), 6),
        (Key(C, "major"), Key(B, "major"), -1),
        (Key(B, "major"), Key(C, "major"), 1),
        (Key(A, "minor"), Key(D, "minor"), 5),
        (Key(D, "minor"), Key(A, "minor"), -5),
        (Key(E, "minor"), Key(Bb, "minor"), 6),
        # minor into major: onto the major key's relative minor
        (Key(A, "minor"), Key(C, "major"), 0),
        (Key(E, "minor"), Key(C, "major"), 5),  # onto A minor
        (Key(D, "minor"), Key(G, "major"), 2),  # onto E minor
        (Key(C, "minor"), Key(Eb, "major"), 0),
        (Key(B, "minor"), Key(C, "major"), -2),  # onto A minor
        # major into minor: onto the minor key's relative major
        (Key(C, "major"), Key(A, "minor"), 0),
        (Key(G, "major"), Key(E, "minor"), 0),
        (Key(D, "major"), Key(A, "minor"), -2),  # onto C major
        (Key(F, "major"), Key(B, "minor"), -3),  # onto D major
        (Key(C, "major"), Key(Eb, "minor"), 6),  # onto Gb major
    ],
)
def test_transpose_interval_table(source: Key, target: Key, semitones: int) -> None:
    assert transpose_interval(source, target) == semitones


def test_transposing_a_tune_by_the_interval_lands_in_the_target_key() -> None:
    for root in range(12):
        for mode in ("major", "minor"):
            target = Key(root, mode)  # type: ignore[arg-type]
            shift = transpose_interval(Key(A, "minor"), target)
            assert -5 <= shift <= 6
            moved = [Note(n.pitch + shift, n.velocity, n.start, n.duration) for n in melody(GREENSLEEVES)]
            expected = target if mode == "minor" else target.relative
            assert estimate_key(moved) == expected
