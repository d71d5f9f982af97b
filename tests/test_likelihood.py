"""Held-out likelihood: the model's NLL in its own units beside an n-gram's on the same units."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from livegen.errors import ConfigError
from livegen.eval.likelihood import held_out_nll, multitrack_nll, run_streams
from livegen.eval.ngram import IndependentKeys, IndependentSlots, NGram, Uniform
from livegen.models.deepmusician import tune_roll
from livegen.models.midirnn import tune_features
from livegen.models.package import ModelPackage, load_package, read_package
from livegen.models.registry import resolve_package
from livegen.music.corpus import MultiTune, Tune


def tune(pitches: Sequence[int], *, step: float = 0.5, name: str = "t") -> Tune:
    n = len(pitches)
    return Tune(
        name=name,
        pitch=np.asarray(pitches, dtype=np.int16),
        onset=np.arange(n, dtype=np.float32) * step,
        duration=np.full(n, step, dtype=np.float32),
    )


class FakeSession:
    """A graph as a numpy function of its feeds (batch first), for cases whose NLL is known by hand."""

    def __init__(self, outputs: Sequence[str], compute: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]):
        self.outputs = list(outputs)
        self.compute = compute

    def run(self, names: Sequence[str] | None, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        values = self.compute(feeds)
        return [values[n] for n in (names or self.outputs)]


def with_sessions(name: str, **sessions: Any) -> ModelPackage:
    return dataclasses.replace(read_package(resolve_package(name)), sessions=sessions)


#: exp(A) / (exp(A) + 127) = 3/4: the fake models below give the pitch or class just fed 3/4.
A = math.log(3 * 127)


def test_midirnn_scores_each_next_pitch_given_the_notes_before_it() -> None:
    def step(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        fed = np.rint(feeds["note"][:, 0] * 128).astype(int)
        logits = np.zeros((len(fed), 128), dtype=np.float32)
        logits[np.arange(len(fed)), fed] = A  # repeat the pitch just fed, with probability 3/4
        zeros = np.zeros((len(fed), 13), dtype=np.float32)
        return {
            "pitch_logits": logits,
            "step_logits": zeros,
            "duration_logits": zeros[:, :12],
            "h_out": feeds["h"],
            "c_out": feeds["c"],
        }

    outputs = ["pitch_logits", "step_logits", "duration_logits", "h_out", "c_out"]
    package = with_sessions("folk-lstm", step=FakeSession(outputs, step))
    held = [tune([60, 60, 62, 62, 62]), tune([67, 65])]
    result = held_out_nll(package, [tune([60, 62, 64, 65, 67] * 4)], held)
    assert result is not None
    # targets: 60 60 | 62 62 62 after 60 60 62 62, and 65 after 67: three repeats (3/4), two moves (1/508)
    repeat, move = -math.log(3 / 4), -math.log(1 / (3 * 127 + 127))
    assert result.count == 5
    assert result.model == pytest.approx((3 * repeat + 2 * move) / 5, rel=1e-6)
    assert result.unit == "note (its pitch only)"


def test_token_lstm_scores_each_next_token_chords_folded_as_training_folds_them() -> None:
    package = read_package(resolve_package("token-lstm"))
    names = list(package.manifest.representation["tokens"])
    vocabulary, chord, half = len(names), names.index("D3.D4.F#4.A4"), names.index("+1/2")

    def step(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        fed = feeds["token"]
        logits = np.zeros((len(fed), vocabulary), dtype=np.float32)
        # after the chord a half-beat shift, after a shift the chord, each with probability 3/4
        logits[np.arange(len(fed)), np.where(fed == chord, half, chord)] = math.log(3 * (vocabulary - 1))
        return {"logits": logits, "context_out": feeds["context"], "h_out": feeds["h"], "c_out": feeds["c"]}

    package = dataclasses.replace(
        package, sessions={"step": FakeSession(["logits", "context_out", "h_out", "c_out"], step)}
    )
    notes = [50, 62, 66, 69]  # D3.D4.F#4.A4, struck as four notes, folded into its token
    held = Tune(
        name="chords",
        pitch=np.asarray([*notes, *notes, 62], dtype=np.int16),
        onset=np.asarray([0.0] * 4 + [0.5] * 4 + [1.0], dtype=np.float32),
        duration=np.full(9, 0.5, dtype=np.float32),
    )
    result = held_out_nll(package, [tune([62, 64, 62, 60] * 3)], [held])
    assert result is not None
    assert result.count == 4  # five tokens: the chord, +1/2, the chord again, +1/2, D4
    hit, miss = -math.log(3 / 4), -math.log(1 / (4 * (vocabulary - 1)))
    assert result.model == pytest.approx((3 * hit + miss) / 4, rel=1e-6)
    assert result.unit == f"token (of {vocabulary})"


def test_multitrack_scores_every_tracks_next_class_summed_per_frame() -> None:
    tracks, width = 4, 49

    def step(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        fed = feeds["frame"].reshape(-1, tracks, width)
        logits = np.where(fed > 0, np.float32(math.log(3 * 48)), np.float32(0.0))  # hold each track: 3/4
        return {"logits": logits, "h_out": feeds["h"], "c_out": feeds["c"]}

    package = with_sessions("multitrack-rnn", step=FakeSession(["logits", "h_out", "c_out"], step))
    # one piece of 4 beats: 16 frames; the soprano moves once (frame 8), the others hold; a rest nowhere
    voices = [tune([72, 74], step=2.0), tune([67], step=4.0), tune([60], step=4.0), tune([48], step=4.0)]
    piece = MultiTune("p", tuple(voices))
    result = multitrack_nll(package, [piece], [piece])
    hold, move = -math.log(3 / 4), -math.log(1 / (3 * 48 + 48))
    assert result.count == 15
    assert result.model == pytest.approx((15 * 4 * hold - hold + move) / 15, rel=1e-6)
    assert result.unit.startswith("16th frame (4 tracks")


def test_deep_musician_scores_the_88_keys_of_every_frame_as_bernoulli() -> None:
    keys = 88
    bias = np.linspace(-4.0, 2.0, keys).astype(np.float32)

    def encoder(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"h": np.zeros((2, len(feeds["roll"]), 192), dtype=np.float32)}

    def decoder(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"logits": np.tile(bias, (len(feeds["frame"]), 1)), "h_out": feeds["h"]}

    package = with_sessions(
        "deep-musician",
        encoder=FakeSession(["h"], encoder),
        decoder=FakeSession(["logits", "h_out"], decoder),
    )
    held = [tune([60, 64, 67, 72] * 10, step=0.75)]  # 30 beats: 120 frames, four blocks of 32 frames
    result = held_out_nll(package, [tune([60, 62, 64] * 8)], held)
    assert result is not None
    roll = tune_roll(held[0], 21, keys)[1:].astype(np.float64)
    expected = (np.logaddexp(0.0, bias) - roll * bias).sum(axis=1).mean()
    assert result.count == len(roll) == 119
    assert result.model == pytest.approx(expected, rel=1e-6)


def test_streams_run_side_by_side_give_what_each_gives_alone() -> None:
    package = load_package(resolve_package("folk-lstm"))
    tunes = [tune([60, 62, 64, 65, 67][:n] * 3) for n in (2, 5, 3)]
    features = [tune_features(t, 8.0) for t in tunes]
    together = run_streams(package, "step", "note", features, "pitch_logits")
    for alone_input, side_by_side in zip(features, together, strict=True):
        (alone,) = run_streams(package, "step", "note", [alone_input], "pitch_logits")
        assert alone.shape == side_by_side.shape == (len(alone_input), 128)
        np.testing.assert_allclose(side_by_side, alone, atol=1e-5)


def test_a_model_without_a_likelihood_gets_none() -> None:
    for name in ("multitrack-cnn", "imagegan", "midigan", "crnngan"):
        package = read_package(resolve_package(name))
        assert package.manifest.kind == "block"
        assert held_out_nll(package, [tune([60, 62, 64] * 4)], [tune([60, 62])]) is None


def test_ngram_scores_its_training_data_better_than_the_same_tokens_shuffled() -> None:
    rng = np.random.default_rng(0)
    melody = [60, 62, 64, 65, 67, 65, 64, 62] * 8
    shuffled = list(melody)
    rng.shuffle(shuffled)
    model = NGram.fit([melody], order=3, base=Uniform(128))
    assert model.nll([melody], first=1) < 0.2
    assert model.nll([shuffled], first=1) > 1.0


def test_ngram_with_a_base_spreads_exactly_all_its_mass_over_every_possible_token() -> None:
    three_keys = [tuple(k for k in range(3) if bits >> k & 1) for bits in range(8)]
    frames = [(0,), (0, 2), (0, 2), (), (1,), (0,), (0, 2)]  # (0, 1) and others never seen
    base = IndependentKeys.fit(frames, 3)
    assert sum(base.probability(f) for f in three_keys) == pytest.approx(1.0)
    model = NGram.fit([frames], order=3, base=base)
    index = model.index
    for history in ([], [index[(0,)]], [index[(0,)], index[(0, 2)]], [-1, index[()]]):
        assert sum(model.probability(history, f) for f in three_keys) == pytest.approx(1.0)
        for f in frames:
            assert model.probability(history, f) == pytest.approx(model.distribution(history)[index[f]])

    two_tracks = list(itertools.product(range(3), repeat=2))
    tracks = [(0, 1), (2, 1), (0, 0), (0, 1)]
    model = NGram.fit([tracks], order=3, base=IndependentSlots.fit(tracks, slots=2, classes=3))
    for history in ([], [model.index[(0, 1)]], [model.index[(0, 1)], model.index[(2, 1)]]):
        assert sum(model.probability(history, t) for t in two_tracks) == pytest.approx(1.0)


def test_held_out_tunes_too_short_to_score_are_named_not_divided_by_zero() -> None:
    package = read_package(resolve_package("folk-lstm"))
    with pytest.raises(ConfigError, match="2 held-out tunes: none has the two notes"):
        held_out_nll(package, [tune([60, 62, 64])], [tune([60]), tune([62])])
