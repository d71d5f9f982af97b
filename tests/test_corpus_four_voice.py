"""``corpus:four-voice``: the four-voice works music21 ships, as four tracks and merged.

Context: setup (tests). Reads a few real scores of music21's corpus (the eval extra).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from livegen.music import corpus
from livegen.music.corpus import CorpusError, load_corpus, load_parts, split_by_tune, split_pieces

music21 = pytest.importorskip(
    "music21", reason="the music21 corpus comes with the eval extra: pip install -e '.[eval]'"
)


def _score(name: str) -> Path:
    return corpus._music21_corpus_root() / name


def test_the_list_holds_four_part_works_of_every_collection_and_each_piece_once():
    names = {p.relative_to(corpus._music21_corpus_root()).as_posix() for p in corpus._four_voice_scores()}
    assert {"bach/bwv1.6.mxl", "palestrina/Kyrie_02.krn", "haydn/opus74no1/movement1.mxl"} <= names
    assert {"mozart/k458/movement1.mxl", "beethoven/opus59no1/movement1.mxl", "johnson_j_r/lift_every_voice.mxl"} <= (
        names
    )
    assert "palestrina/Agnus_01.krn" not in names  # five voices, known from its Humdrum header
    assert "beethoven/opus18no1/movement1.krn" not in names  # the same movement as its .mxl
    assert not any(n.startswith(("demos/", "theoryExercises/")) or n.endswith(".abc") for n in names)


def test_a_quartet_gives_its_four_parts_top_to_bottom_in_its_metre():
    piece = corpus._four_voices(_score("mozart/k80/movement2.mxl"))
    assert piece is not None and piece.name == "mozart/k80/movement2.mxl"
    means = [float(np.mean(t.pitch)) for t in piece.tracks]
    assert len(piece.tracks) == 4 and means == sorted(means, reverse=True)
    assert all(t.bar_beats == 4.0 for t in piece.tracks)


def test_a_hymn_with_solo_and_piano_gives_its_satb_voices_and_two_parts_give_nothing():
    piece = corpus._four_voices(_score("liliuokalani/aloha_oe.mxl"))
    assert piece is not None and [t.name.rpartition("#")[2] for t in piece.tracks] == list(corpus.SATB)
    assert corpus._four_voices(_score("handel/rinaldo/Lascia_chio_pianga.mxl")) is None


def test_merged_tunes_are_the_tracks_notes_and_split_like_the_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    pieces = load_parts("corpus:four-voice", limit=3, jobs=1)
    tunes = load_corpus("corpus:four-voice", limit=3, jobs=1)
    assert [p.name for p in pieces] == [t.name for t in tunes] == ["bwv1.6.mxl", "bwv10.7.mxl", "bwv101.7.mxl"]
    for piece, tune in zip(pieces, tunes, strict=True):
        assert len(tune) == len(piece)
        assert sorted(zip(tune.onset.tolist(), tune.pitch.tolist(), strict=True)) == sorted(
            (float(o), int(p)) for t in piece.tracks for o, p in zip(t.onset, t.pitch, strict=True)
        )
        assert np.all(np.diff(tune.onset) >= 0) and tune.bar_beats == piece.tracks[0].bar_beats
    split = split_by_tune(tunes)
    assert [[p.name for p in part] for part in split_pieces(pieces)] == [
        [t.name for t in part] for part in (split.train, split.validation, split.held_out)
    ]
    assert (tmp_path / "livegen" / "four-voice-v1-first3.npz").is_file()  # converted once, cached


def test_an_unknown_corpus_names_the_accepted_ones():
    with pytest.raises(CorpusError, match="corpus:folk, corpus:bach, corpus:four-voice"):
        load_corpus("corpus:four-voices")
