"""``crnngan`` (seed 003, C-RNN-GAN): data conversion, the seed's losses and rules, the adapter, end to end.

Context: setup (tests of the training-only ``export`` package; needs the ``train`` extra). The data
and rule tests use hand-computed cases; the end-to-end tests train a tiny GAN for seconds on melodies the
tests write, export it with the parity check and play it in call-and-response, accompaniment and
autonomous play.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training tests need the train extra: pip install -e '.[train]'")

from export.crnngan.model import CrnnGanConfig, Discriminator, Generator  # noqa: E402
from export.crnngan.train import (  # noqa: E402
    Standard,
    discriminator_loss,
    feature_matching_loss,
    freeze_discriminator,
    is_monophonic,
    pretrain_lengths,
    tune_velocities,
    tune_windows,
)
from livegen.errors import PackageError  # noqa: E402
from livegen.models.crnngan import (  # noqa: E402
    CrnnGanGenerator,
    frequency_of_pitch,
    phrase_notes,
    pitch_of_frequency,
)
from livegen.models.frames import RollNote  # noqa: E402
from livegen.models.package import ModelPackage, load_package  # noqa: E402
from livegen.models.registry import load_generator  # noqa: E402
from livegen.models.sampling import SamplingParams  # noqa: E402
from livegen.models.step import StepEvent  # noqa: E402
from livegen.music.corpus import Tune  # noqa: E402
from livegen.music.events import Note  # noqa: E402
from livegen.music.midifile import write_midi  # noqa: E402
from livegen.music.time import PPQN  # noqa: E402

pytestmark = pytest.mark.slow


# ---- data --------------------------------------------------------------------------------


def _tune(pitch: list[int], onset: list[float], duration: list[float]) -> Tune:
    return Tune(
        "hand",
        np.asarray(pitch, dtype=np.int16),
        np.asarray(onset, dtype=np.float32),
        np.asarray(duration, dtype=np.float32),
    )


def test_windows_start_on_whole_beats_and_carry_duration_frequency_velocity_and_step() -> None:
    tune = _tune([60, 62, 64, 65, 67, 69], [0.5, 1.0, 1.5, 2.5, 3.0, 4.0], [0.5, 0.5, 1.0, 0.5, 1.0, 1.0])
    velocity = np.array([80, 81, 82, 83, 84, 85])
    windows = tune_windows(tune, 3, stride_beats=1, velocities=velocity)
    # beat 1: notes 1-3, the first one's step is its distance from the beat (0); beat 2: notes 3-5 (from 2.5)
    f = frequency_of_pitch
    expected = np.array(
        [
            [[0.5, f(62), 81, 0.0], [1.0, f(64), 82, 0.5], [0.5, f(65), 83, 1.0]],
            [[0.5, f(65), 83, 0.5], [1.0, f(67), 84, 0.5], [1.0, f(69), 85, 1.0]],
        ]
    )
    np.testing.assert_allclose(windows, expected, rtol=1e-6)
    assert frequency_of_pitch(69) == pytest.approx(440.0) and frequency_of_pitch(81) == pytest.approx(880.0)


def test_windows_clip_steps_and_durations_and_skip_beats_inside_one_note() -> None:
    tune = _tune([60, 62, 64, 65], [0.0, 1.0, 8.0, 9.0], [1.0, 6.0, 1.0, 1.0])
    windows = tune_windows(tune, 2, stride_beats=1, beats_max=4.0, velocities=np.full(4, 90))
    # beats 0, 1 and 8 start a window; beats 2..7 fall inside the long note 1 (no note starts within a beat)
    assert windows.shape == (3, 2, 4)
    np.testing.assert_allclose(windows[1, :, 0], [4.0, 1.0])  # duration 6 clipped to 4
    np.testing.assert_allclose(windows[1, :, 3], [0.0, 4.0])  # step 7 clipped to 4
    np.testing.assert_allclose(windows[2, :, 3], [0.0, 1.0])
    np.testing.assert_allclose(windows[2, :, 1], frequency_of_pitch(np.array([64, 65])))
    assert tune_windows(tune, 5).shape == (0, 5, 4)


def test_velocities_come_from_the_midi_file(tmp_path: Path) -> None:
    path = tmp_path / "v.mid"
    write_midi(path, {"m": [Note(60 + i, 50 + 10 * i, i * PPQN, PPQN // 2) for i in range(8)]})
    tune = Tune(
        str(path), np.arange(60, 68, dtype=np.int16), np.arange(8, dtype=np.float32), np.full(8, 0.5, np.float32)
    )
    np.testing.assert_array_equal(tune_velocities(tune), 50 + 10 * np.arange(8))
    assert set(tune_velocities(_tune([60] * 8, list(range(8)), [1.0] * 8))) == {90.0}  # no dynamics: the default


def test_standardising_leaves_constant_features_unscaled() -> None:
    windows = np.array([[[1.0, 440.0, 90.0, 0.5]], [[3.0, 880.0, 90.0, 1.5]]])
    standard = Standard.of(windows)
    np.testing.assert_allclose(standard.mean, [2.0, 660.0, 90.0, 1.0])
    np.testing.assert_allclose(standard.scale, [1.0, 220.0, 1.0, 0.5])
    np.testing.assert_allclose(standard.invert(standard.apply(windows)), windows, rtol=1e-6)


def test_pitches_round_trip_through_frequencies() -> None:
    pitches = np.arange(128)
    np.testing.assert_array_equal(pitch_of_frequency(frequency_of_pitch(pitches)), pitches)
    assert int(pitch_of_frequency(440.0 * 2 ** (0.49 / 12))) == 69  # nearest semitone
    assert int(pitch_of_frequency(440.0 * 2 ** (0.51 / 12))) == 70
    assert int(pitch_of_frequency(-5.0)) == 0 and int(pitch_of_frequency(1e6)) == 127


def test_a_phrase_is_laid_from_the_block_start_by_its_steps() -> None:
    events = np.array(
        [
            # duration, frequency, velocity, step (beats)
            [0.5, 440.0, 90.0, 0.0],  # frame 0, 2 frames, A4
            [0.5, 466.2, 100.4, 0.5],  # frame 2 (0.5 beats), A#4
            [0.1, 261.63, 0.2, 0.5],  # frame 4, at least 1 frame, C4, velocity at least 1
            [8.0, 880.0, 200.0, -1.0],  # a negative step counts as 0: frame 4 again; held at most max_hold
            [1.0, 440.0, 64.0, 0.9],  # 1.9 beats: frame 7.6 -> 8, the block's end: dropped
        ]
    )
    assert phrase_notes(events, 8, 3) == [
        RollNote(0, 2, 69, 0, 90),
        RollNote(2, 2, 70, 0, 100),
        RollNote(4, 3, 81, 0, 127),
        RollNote(4, 1, 60, 0, 1),
    ]
    # the running sum is rounded, not each step: three steps of 0.1 beats land on frames 0, 1, 1
    drift = np.array([[0.25, 440.0, 90.0, 0.1]] * 3)
    assert [n.onset for n in phrase_notes(drift, 16, 16)] == [0, 1, 1]


def test_a_frequency_takes_the_nearest_pitch_the_key_allows() -> None:
    # A4 + 0.4 semitone, C#5 + 0.4 (rounded first it would be C#, which snaps to C; D is nearer), F#4 exactly
    # (a tie between F and G: the lower)
    frequencies = [440.0 * 2 ** (0.4 / 12), 440.0 * 2 ** (4.4 / 12), 440.0 * 2 ** (-3 / 12)]
    events = np.array([[0.5, f, 90.0, 0.5] for f in frequencies])
    assert [n.pitch for n in phrase_notes(events, 32, 16)] == [69, 73, 66]  # no key: the nearest semitone
    c_major = SamplingParams(scale="major").pitch_mask()
    assert [n.pitch for n in phrase_notes(events, 32, 16, allowed=c_major)] == [69, 74, 65]


def test_a_phrase_keeps_to_the_performers_grid() -> None:
    # steps 0.3, 0.2, 0.1, 0.9 beats: running sums 1.2, 2.0, 2.4, 6.0 16ths -> eighths 2, 2, 2, 6
    events = np.array([[1.0, 440.0, 90.0, s] for s in (0.3, 0.2, 0.1, 0.9)])
    assert [n.onset for n in phrase_notes(events, 32, 16, onset_grid=2)] == [2, 2, 2, 6]
    # one line: each an eighth after the one before at least, ending where the next starts
    laid = [(n.onset, n.frames) for n in phrase_notes(events, 32, 16, monophonic=True, onset_grid=2)]
    assert laid == [(2, 2), (4, 2), (6, 2), (8, 4)]


def test_a_monophonic_phrase_is_one_line() -> None:
    # steps 0, 0.1, 0.05, 1.0, 0: rounded onsets 0, 0, 1, 5, 5; durations 4, 2, 2, 8, 1 frames
    events = np.array([[d, 440.0, 90.0, s] for d, s in [(1.0, 0.0), (0.5, 0.1), (0.5, 0.05), (2.0, 1.0), (0.25, 0.0)]])
    assert [(n.onset, n.frames) for n in phrase_notes(events, 32, 16)] == [(0, 4), (0, 2), (1, 2), (5, 8), (5, 1)]
    # one line: each onset at least a 16th after the one before, each note ending by the next onset
    laid = [(n.onset, n.frames) for n in phrase_notes(events, 32, 16, monophonic=True)]
    assert laid == [(0, 1), (1, 1), (2, 2), (5, 1), (6, 1)]
    assert is_monophonic(np.array([[[1, 440, 90, 0.0], [1, 440, 90, 0.5]]]))
    assert not is_monophonic(np.array([[[1, 440, 90, 0.5], [1, 440, 90, 0.0]]]))  # a chord


# ---- the seed's model, losses and rules -------------------------------------------------


def test_the_generator_feeds_its_output_back_and_is_causal() -> None:
    torch.manual_seed(0)
    config = CrnnGanConfig(hidden=8, window=6, noise=3)
    generator = Generator(config).eval()
    noise = torch.rand(2, 6, 3) * 2 - 1
    changed = noise.clone()
    changed[:, 3] += 0.5
    with torch.no_grad():
        a, b = generator(noise), generator(changed)
        # teacher forcing with its own outputs as the previous events gives the free-running outputs
        forced = generator.teacher_forced(noise, a)
    assert a.shape == (2, 6, 4)
    torch.testing.assert_close(a[:, :3], b[:, :3])  # the noise of step 3 cannot change earlier steps
    assert not torch.allclose(a[:, 3:], b[:, 3:])
    torch.testing.assert_close(forced, a, atol=1e-6, rtol=1e-5)


def test_the_discriminator_averages_a_sigmoid_per_step_of_a_bidirectional_lstm() -> None:
    torch.manual_seed(0)
    discriminator = Discriminator(CrnnGanConfig(hidden=8)).eval()
    events = torch.randn(3, 5, 4)
    with torch.no_grad():
        decision, features = discriminator(events)
        per_step = torch.sigmoid(discriminator.decision(features))[..., 0]
    assert discriminator.lstm.bidirectional and features.shape == (3, 5, 16)
    torch.testing.assert_close(decision, per_step.mean(1))
    # bidirectional: the first step's features depend on the last event
    later = events.clone()
    later[:, -1] += 1.0
    with torch.no_grad():
        assert not torch.allclose(discriminator(later)[1][:, 0], features[:, 0])


def test_losses_and_the_freezing_rule_are_the_seeds() -> None:
    d_real, d_fake = torch.tensor([0.8, 0.5]), torch.tensor([0.2, 0.5])
    expected = (-np.log(0.8) - np.log(0.8) - np.log(0.5) - np.log(0.5)) / 2
    assert float(discriminator_loss(d_real, d_fake)) == pytest.approx(expected, rel=1e-6)
    real = torch.ones(2, 3, 4)
    fake = torch.zeros(2, 3, 4)
    fake[0] = 2.0  # the mean over batch and steps is 1: the features match on average
    assert float(feature_matching_loss(real, fake)) == pytest.approx(0.0)
    assert float(feature_matching_loss(real, torch.zeros(2, 3, 4))) == pytest.approx(1.0)
    assert freeze_discriminator(0.69, 1.0)  # below 70% of the generator's loss: D is frozen
    assert not freeze_discriminator(0.7, 1.0)
    assert not freeze_discriminator(1.4, 0.7)
    assert pretrain_lengths(20, 6) == [4, 7, 10, 14, 17, 20]
    assert pretrain_lengths(3, 2) == [3, 3]


# ---- end to end ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def package(tiny_packages: Callable[[str], Path]) -> Path:
    return tiny_packages("crnngan")


def _manifest(package: Path) -> dict[str, Any]:
    return tomllib.loads((package / "livegen.toml").read_text())


def test_package_is_a_block_generator_with_parity_and_the_gan_figures(package: Path) -> None:
    manifest = _manifest(package)
    assert manifest["kind"] == "block" and manifest["family"] == "crnngan"
    graph = manifest["graphs"]["generator"]
    assert graph["inputs"] == [{"name": "noise", "shape": ["batch", 8, 4], "dtype": "float32"}]
    assert graph["outputs"] == [{"name": "notes", "shape": ["batch", 8, 4], "dtype": "float32"}]
    rep = manifest["representation"]
    assert rep["features"] == ["duration", "frequency", "velocity", "step"] and rep["block_frames"] == 32
    assert rep["monophonic"] is True  # the melodies never start two notes together
    assert 70 < rep["feature_mean"][2] < 100 and rep["feature_scale"][2] > 1  # velocities read from the files
    metrics = manifest["metrics"]
    assert 0 <= metrics["parity_max_abs_diff"] <= 1e-4
    for key in ("final_d_loss", "final_g_loss", "held_out_d_accuracy_real", "held_out_d_accuracy_fake"):
        assert np.isfinite(metrics[key])
    assert np.isfinite(metrics["pretrain_best_val_mse"])
    assert "feature matching" in manifest["training"]["loss"]
    assert (package / "seed.mid").is_file() and "C-RNN-GAN" in (package / "README.md").read_text()


def test_candidates_are_one_batch_and_the_temperature_scales_the_noise(package: Path) -> None:
    _, generator = load_generator(str(package))
    assert isinstance(generator, CrnnGanGenerator) and not generator.conditioned
    fed: list[np.ndarray] = []
    generate = generator.generate

    def spy(noise: np.ndarray) -> np.ndarray:
        fed.append(noise)
        return generate(noise)

    generator.generate = spy  # type: ignore[method-assign]
    blocks = generator._propose([], 5, SamplingParams(), np.random.default_rng(0))
    assert [n.shape for n in fed] == [(5, 8, 4)] and len(blocks) == 5  # one call, the candidates as the batch
    assert all(0 <= n.onset < 32 and 1 <= n.frames <= 16 for block in blocks for n in block)
    assert 0.5 < np.abs(fed[0]).max() <= 1.0
    assert generator._propose([], 5, SamplingParams(), np.random.default_rng(0)) == blocks
    generator._propose([], 3, SamplingParams(temperature=0.05), np.random.default_rng(0))
    assert 0 < np.abs(fed[-1]).max() <= 0.05
    np.testing.assert_allclose(fed[-1], fed[0][:3] * 0.05)  # the same draw, scaled by the temperature


def _with_representation(package: ModelPackage, **changes: object) -> ModelPackage:
    rep = {**package.manifest.representation, **changes}
    return dataclasses.replace(package, manifest=dataclasses.replace(package.manifest, representation=rep))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"notes": 9}, "field 'representation.notes': expected 8 (the dimension 1 of graph 'generator' tensor "
                       "'noise'), got 9"),
        ({"noise": 5}, "field 'representation.noise': expected 4 (the dimension 2 of graph 'generator' tensor "
                       "'noise'), got 5"),
        ({"block_frames": 0}, "field 'representation.block_frames': expected an integer from 1 to 256, got 0"),
        ({"grid": "16th"}, "field 'representation.grid'"),
        ({"max_hold": True}, "field 'representation.max_hold'"),
        ({"features": ["pitch", "step"]}, "field 'representation.features': expected ['duration', 'frequency'"),
        ({"feature_scale": [1, 0, 1, 1]}, "field 'representation.feature_scale': expected a list of 4 numbers above 0"),
        ({"monophonic": "yes"}, "field 'representation.monophonic': expected true or false (true: lay the notes"),
        ({"feature_mean": [1.0, 2.0]}, "field 'representation.feature_mean': expected a list of 4 finite numbers"),
    ],
)  # fmt: skip
def test_adapter_names_the_field_the_value_and_what_is_accepted(
    package: Path, changes: dict[str, object], message: str
) -> None:
    loaded = load_package(package)
    CrnnGanGenerator(loaded)  # the package as written is accepted
    with pytest.raises(PackageError) as error:
        CrnnGanGenerator(_with_representation(loaded, **changes))
    assert message in str(error.value) and "livegen.toml" in str(error.value)


def test_without_a_scale_the_notes_keep_to_the_performers_key(package: Path) -> None:
    _, generator = load_generator(str(package))
    e_major = [64, 66, 68, 69, 71, 73, 75, 76]  # a key the training melodies (C major) are not in
    for i, pitch in enumerate(e_major):
        step, phase = (0 if i == 0 else PPQN // 2), i * PPQN // 2
        generator.feed(StepEvent(pitch=pitch, step=step, duration=PPQN // 2, bar_phase=phase))
    rng = np.random.default_rng(0)
    played = []
    for _ in range(24):
        event = generator.sample(SamplingParams(), rng)
        generator.feed(event)
        played.append(event.pitch)
    assert all(p % 12 in (4, 6, 8, 9, 11, 1, 3) for p in played), played
