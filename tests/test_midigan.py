"""``midigan`` (seed 000 §4.2): the note data, the bar layout, the adapter's manifest checks, and a tiny
model end to end, from training on tunes the tests write to export, loading and live play.

Context: setup (tests of the training-only ``export`` package; needs the ``train`` extra).
"""

from __future__ import annotations

import itertools
import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w

torch = pytest.importorskip("torch", reason="training tests need the train extra: pip install -e '.[train]'")

from export.errors import ExportError  # noqa: E402
from export.midigan.model import MidiGanConfig  # noqa: E402
from export.midigan.train import (  # noqa: E402
    MidiGanOptions,
    Standard,
    quantise,
    total_variation,
    train_midigan,
    tune_notes,
    wasserstein,
)
from livegen.engine.callresponse import CallResponseSettings  # noqa: E402
from livegen.engine.render import render_call_response  # noqa: E402
from livegen.errors import PackageError  # noqa: E402
from livegen.models.frames import RollNote  # noqa: E402
from livegen.models.midigan import MidiGanGenerator, lay_block, to_frames, truncated_normal  # noqa: E402
from livegen.models.package import load_package  # noqa: E402
from livegen.models.registry import load_generator  # noqa: E402
from livegen.models.sampling import SamplingParams  # noqa: E402
from livegen.models.step import StepEvent  # noqa: E402
from livegen.music.corpus import Tune  # noqa: E402
from livegen.music.midifile import read_midi  # noqa: E402
from livegen.music.time import TempoMap  # noqa: E402
from tests.families import d_major_tunes  # noqa: E402

pytestmark = pytest.mark.slow


# ---- data conversion ---------------------------------------------------------------------


def test_tune_notes_are_pitch_step_duration_of_each_note_after_the_first() -> None:
    tune = Tune(
        "t",
        np.array([60, 62, 64, 65], dtype=np.int16),
        np.array([0.0, 0.5, 1.5, 9.5], dtype=np.float32),
        np.array([0.5, 1.0, 6.0, 0.25], dtype=np.float32),
    )
    notes = tune_notes(tune, beats_max=4.0)
    # steps 0.5, 1.0, 8.0 -> clipped to 4; durations 1.0, 6.0 -> 4, 0.25
    assert notes.tolist() == [[62, 0.5, 1.0], [64, 1.0, 4.0], [65, 4.0, 0.25]]
    assert tune_notes(Tune("one", tune.pitch[:1], tune.onset[:1], tune.duration[:1]), 4.0).shape == (0, 3)


def test_standardising_uses_the_training_mean_and_deviation_and_inverts() -> None:
    notes = np.array([[60.0, 0.5, 0.5], [64.0, 1.5, 0.5]])
    standard = Standard.of(notes)
    assert standard.mean.tolist() == [62.0, 1.0, 0.5]
    assert standard.std.tolist() == [2.0, 0.5, 1.0]  # a constant attribute keeps std 1, not 0
    assert standard.apply(notes).tolist() == [[-1.0, -1.0, 0.0], [1.0, 1.0, 0.0]]
    np.testing.assert_allclose(standard.invert(standard.apply(notes)), notes)


def test_every_training_note_lies_within_the_generators_tanh() -> None:
    rng = np.random.default_rng(0)
    # folk-like pitches: most near the middle, a few two octaves apart; steps with a long tail
    notes = np.stack([rng.normal(70, 5, 5000).round().clip(48, 93), rng.exponential(0.7, 5000).clip(0, 4)], 1)
    notes = np.concatenate([notes, notes[:, 1:]], 1)
    seeds = Standard.of(notes, tanh_fit=0.0).apply(notes)
    assert (np.abs(seeds) >= 1).any(axis=1).mean() > 0.3  # the seed's unit deviation: out of tanh's reach
    fitted = Standard.of(notes, tanh_fit=0.95)
    scaled = fitted.apply(notes)
    assert np.abs(scaled).max() == pytest.approx(0.95)
    np.testing.assert_allclose(fitted.invert(scaled), notes)
    low, high = fitted.invert(np.array([[-0.95] * 3, [0.95] * 3]))
    assert (low <= notes.min(0) + 1e-9).all() and (high >= notes.max(0) - 1e-9).all()


def test_quantise_rounds_pitch_and_times_to_sixteenths_of_at_least_one() -> None:
    generated = np.array([[61.6, 0.3, 0.1], [59.4, 0.375, 1.1], [130.0, -0.5, 4.0]])
    # 0.3 beats = 1.2 16ths -> 1; 0.375 = 1.5 -> 2 (halves up); 0.1 = 0.4 -> at least 1; 1.1 = 4.4 -> 4
    assert quantise(generated).tolist() == [[62, 1, 1], [59, 2, 4], [127, 1, 16]]
    assert to_frames(np.array([0.125, 0.5]), 4).tolist() == [1, 2]


def test_distances() -> None:
    # histograms {1: .5, 2: .5} and {1: .75, 3: .25}: (0.25 + 0.5 + 0.25) / 2
    assert total_variation(np.array([1, 1, 2, 2]), np.array([1, 1, 1, 3])) == pytest.approx(0.5)
    assert total_variation(np.array([5, 6]), np.array([6, 5])) == 0.0
    assert wasserstein(np.array([[0.0], [1.0]]), np.array([[2.0], [1.0]])) == pytest.approx(1.0)


# ---- laying notes into a bar -------------------------------------------------------------


def test_lay_block_places_notes_one_after_another_from_the_bar_start() -> None:
    notes = lay_block([60, 62, 64, 65], [2, 3, 4, 20], [4, 1, 2, 2], last_onset=None, block_frames=16)
    # nothing heard: the first note on frame 0, then steps 3 and 4; 65 would start at 27, past the bar.
    # 60 lasts 4 but ends where 62 starts; the last note keeps its duration.
    assert notes == [RollNote(0, 3, 60), RollNote(3, 1, 62), RollNote(7, 2, 64)]


def test_lay_block_continues_the_rhythm_of_the_notes_before_the_bar() -> None:
    notes = lay_block([60, 62, 64, 65], [2, 3, 4, 20], [4, 1, 2, 2], last_onset=-3, block_frames=16)
    # 60 falls at -3 + 2 = -1, before the bar: skipped; 62 at 2, 64 at 6, 65 at 26: past it
    assert notes == [RollNote(2, 1, 62), RollNote(6, 2, 64)]
    full = lay_block([70] * 40, [1] * 40, [1] * 40, last_onset=-1, block_frames=16)
    assert [n.onset for n in full] == list(range(16))


def test_lay_block_keeps_to_the_performers_grid() -> None:
    # eighths (2 frames): steps 3, 1, 5, 2, 9 -> 4, 2, 6, 2, 10 (halves up); the first from -3: -3 + 4 = 1,
    # up to the grid: 2; then 4, 10, 12; 22 is past the bar. Each note ends where the next starts.
    notes = lay_block([60, 62, 64, 65, 67], [3, 1, 5, 2, 9], [8] * 5, last_onset=-3, block_frames=16, onset_grid=2)
    assert [(n.onset, n.frames, n.pitch) for n in notes] == [(2, 2, 60), (4, 6, 62), (10, 2, 64), (12, 8, 65)]


def test_truncated_noise_stays_in_the_central_mass() -> None:
    rng = np.random.default_rng(0)
    z = truncated_normal(rng, (200, 10), 0.5)
    assert np.abs(z).max() <= 0.6745 and np.abs(z).max() > 0.6
    assert np.abs(truncated_normal(rng, (200, 10), 1.0)).max() > 2.0


# ---- a tiny model end to end -------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return d_major_tunes(tmp_path_factory.mktemp("tunes"))


@pytest.fixture(scope="module")
def package(tiny_packages: Callable[[str], Path]) -> Path:
    return tiny_packages("midigan")


def _manifest(package: Path) -> dict[str, Any]:
    return tomllib.loads((package / "livegen.toml").read_text())


def test_package_is_a_block_model_with_the_generator_only(package: Path) -> None:
    manifest = _manifest(package)
    assert manifest["kind"] == "block" and manifest["family"] == "midigan"
    assert set(manifest["graphs"]) == {"generator"}
    assert sorted(p.name for p in package.iterdir()) == ["README.md", "generator.onnx", "livegen.toml", "seed.mid"]
    rep = manifest["representation"]
    assert rep["attributes"] == ["pitch", "step", "duration"] and rep["latent"] == 100
    # the standardisation of the written tunes: pitches of D major, steps of eighths and quarters
    assert 62 <= rep["mean"][0] <= 79 and 0.5 <= rep["mean"][1] <= 1.0
    assert 0 <= manifest["metrics"]["parity_max_abs_diff"] <= 1e-4
    for key in ("final_d_loss", "final_g_loss", "held_out_d_accuracy_real", "held_out_d_accuracy_fake"):
        assert np.isfinite(manifest["metrics"][key])
    assert "binary cross-entropy" in manifest["training"]["loss"]
    assert "musical structure" in (package / "README.md").read_text()


def test_the_package_plays_the_whole_training_range(package: Path) -> None:
    rep = _manifest(package)["representation"]
    _, generator = load_generator(str(package))
    assert isinstance(generator, MidiGanGenerator)
    reach = np.asarray(rep["mean"]) + np.asarray(rep["std"]) * np.asarray(rep["tanh_reach"])
    low = np.asarray(rep["mean"]) - np.asarray(rep["std"]) * np.asarray(rep["tanh_reach"])
    # tanh's ±1 is as far as the training notes went (the written tunes: D major from 62 to 79)
    assert low[0] <= 62.5 and reach[0] >= 78.5
    assert generator.scale.tolist() == pytest.approx((np.asarray(rep["std"]) * np.asarray(rep["tanh_reach"])).tolist())


def test_the_host_reads_tanh_reach(package: Path, tmp_path: Path) -> None:
    rep = _manifest(package)["representation"]
    wide = MidiGanGenerator(load_package(_mutated(package, tmp_path, tanh_reach=[3.0, 1.0, 1.0])))
    seed = dict(rep)
    seed.pop("tanh_reach")
    folder = tmp_path / "seed"
    shutil.copytree(package, folder)
    manifest = _manifest(folder)
    manifest["representation"] = seed
    (folder / "livegen.toml").write_bytes(tomli_w.dumps(manifest).encode())
    narrow = MidiGanGenerator(load_package(folder))  # no field: the seed's unit deviation
    a = wide.draw(500, SamplingParams(), np.random.default_rng(0))
    b = narrow.draw(500, SamplingParams(), np.random.default_rng(0))
    np.testing.assert_allclose(a[:, 0] - rep["mean"][0], 3.0 * (b[:, 0] - rep["mean"][0]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a[:, 1:], b[:, 1:])


def test_without_a_scale_the_notes_keep_to_the_performers_key(package: Path) -> None:
    _, generator = load_generator(str(package))
    assert isinstance(generator, MidiGanGenerator)
    f_major = [65, 67, 69, 70, 72, 74, 76, 77]  # a key the training tunes (D major) are not in
    for i, pitch in enumerate(f_major):
        generator.feed(StepEvent(pitch=pitch, step=0 if i == 0 else 2 * 120, duration=240, bar_phase=(i % 8) * 240))
    rng = np.random.default_rng(0)
    played = []
    for _ in range(24):
        event = generator.sample(SamplingParams(), rng)
        generator.feed(event)
        played.append(event.pitch)
    assert all(p % 12 in (5, 7, 9, 10, 0, 2, 4) for p in played), played


def test_window_is_refused(corpus: Path, tmp_path: Path) -> None:
    options = MidiGanOptions(data=str(corpus), out=tmp_path, config=MidiGanConfig(window=32))
    with pytest.raises(ExportError, match="--window"):
        train_midigan(options)


def _mutated(package: Path, tmp_path: Path, **representation: Any) -> Path:
    folder = tmp_path / "pkg"
    shutil.copytree(package, folder)
    manifest = _manifest(folder)
    manifest["representation"].update(representation)
    (folder / "livegen.toml").write_bytes(tomli_w.dumps(manifest).encode())
    return folder


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"attributes": ["step", "pitch", "duration"]}, "representation.attributes"),
        ({"mean": [70.0, 0.5]}, "representation.mean"),
        ({"std": [5.0, 0.0, 0.5]}, "representation.std"),
        ({"std": [5.0, "x", 0.5]}, "representation.std"),
        ({"latent": 64}, "representation.latent"),
        ({"block_frames": 0}, "representation.block_frames"),
        ({"grid": 7}, "representation.grid"),
        ({"notes_per_block": 1.5}, "representation.notes_per_block"),
        ({"time_unit": "tick"}, "representation.time_unit"),
    ],
)
def test_adapter_refuses_a_bad_representation(
    package: Path, tmp_path: Path, change: dict[str, Any], field: str
) -> None:
    folder = _mutated(package, tmp_path, **change)
    loaded = load_package(folder)
    with pytest.raises(PackageError, match=f"livegen.toml: field '{field}'") as err:
        MidiGanGenerator(loaded)
    assert str(folder) in str(err.value) and "expected" in str(err.value)


def test_candidates_are_drawn_in_one_batch_and_temperature_spreads_them(package: Path) -> None:
    _, generator = load_generator(str(package))
    assert isinstance(generator, MidiGanGenerator)
    calls = []
    real_run = generator._session.run
    generator._session = type("Spy", (), {"run": lambda self, o, f: calls.append(f["z"].shape) or real_run(o, f)})()
    blocks = generator._propose([], 8, SamplingParams(), np.random.default_rng(0))
    assert calls == [(8 * 32, 100)] and len(blocks) == 8
    for block in blocks:
        assert block and block[0].onset == 0 and all(0 <= n.onset < 16 and n.frames >= 1 for n in block)
        assert all(a.end <= b.onset for a, b in itertools.pairwise(block))  # one line
    again = generator._propose([], 8, SamplingParams(), np.random.default_rng(0))
    assert again == blocks
    cold = generator.draw(2000, SamplingParams(temperature=0.05), np.random.default_rng(1))
    hot = generator.draw(2000, SamplingParams(temperature=3.0), np.random.default_rng(1))
    assert cold[:, 0].std() < hot[:, 0].std()


def test_answers_the_seed_phrase_in_one_line(package: Path) -> None:
    _, generator = load_generator(str(package))
    seed = read_midi(package / "seed.mid").notes
    performance = render_call_response(
        generator, seed, tempo=TempoMap.constant(120), params=SamplingParams(), rng_seed=0,
        settings=CallResponseSettings(),
    )  # fmt: skip
    assert len(performance.model) >= 4
    ordered = sorted(performance.model, key=lambda n: n.start)
    assert all(a.end <= b.start for a, b in itertools.pairwise(ordered))  # one line
