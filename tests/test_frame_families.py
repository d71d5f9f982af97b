"""``deep-musician`` and ``multitrack-rnn`` end to end: a tiny model is trained, exported and played by the host.

Context: setup (tests of the training-only ``export`` package; needs the ``train`` extra). Each
family trains one epoch of a tiny configuration on four-voice pieces the tests write, exports
with the parity check, and plays in call-and-response, accompaniment and autonomous play.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training tests need the train extra: pip install -e '.[train]'")

from export.deepmusician import (  # noqa: E402
    DeepMusicianConfig,
    DeepMusicianOptions,
    export_deep_musician,
    focal_loss,
    train_deep_musician,
)
from export.multitrack import MultiTrackConfig, MultiTrackOptions, export_multitrack, train_multitrack  # noqa: E402
from livegen.engine.callresponse import CallResponseSettings  # noqa: E402
from livegen.engine.render import render_call_response  # noqa: E402
from livegen.models.registry import load_generator  # noqa: E402
from livegen.models.sampling import SamplingParams  # noqa: E402
from livegen.music.events import Note  # noqa: E402
from livegen.music.midifile import read_midi, write_midi  # noqa: E402
from livegen.music.time import PPQN, TempoMap  # noqa: E402
from tests.liveplay import accompanies_and_replans, plays_on_its_own  # noqa: E402

pytestmark = pytest.mark.slow

C_MAJOR = [48, 50, 52, 53, 55, 57, 59, 60, 62, 64, 65, 67, 69, 71, 72, 74, 76, 77, 79]


def _piece(rng: np.random.Generator, beats: int) -> list[Note]:
    """Four voices (channels 0-3, high to low) moving by step in quarters and halves."""
    notes = []
    for voice, start in enumerate((15, 11, 7, 2)):
        index, tick = start, 0
        while tick < beats * PPQN:
            index = int(np.clip(index + rng.choice([-1, 0, 1]), 0, len(C_MAJOR) - 1))
            length = int(rng.choice([1, 1, 2])) * PPQN
            notes.append(Note(C_MAJOR[index], 80, tick, length - PPQN // 8, channel=voice))
            tick += length
    return notes


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("voices")
    rng = np.random.default_rng(3)
    for i in range(8):
        write_midi(folder / f"piece{i}.mid", {"voices": _piece(rng, 48)})
    return folder


@pytest.fixture(scope="module")
def deep_musician(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dm")
    config = DeepMusicianConfig(hidden=16, classifier=16, window=16, decode_frames=8, stride=8, batch_size=8)
    options = DeepMusicianOptions(data=str(corpus), out=out / "run", epochs=1, patience=1, config=config)
    checkpoint = train_deep_musician(options)
    return export_deep_musician(checkpoint, out / "tiny-dm")


@pytest.fixture(scope="module")
def multitrack(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mt")
    config = MultiTrackConfig(hidden=16, window=16, batch_size=8)
    options = MultiTrackOptions(data=str(corpus), out=out / "run", epochs=1, patience=1, config=config)
    checkpoint = train_multitrack(options)
    return export_multitrack(checkpoint, out / "tiny-mt")


def test_focal_loss_is_cross_entropy_weighted_by_alpha_and_the_miss() -> None:
    logits = torch.tensor([0.0, 2.0])
    target = torch.tensor([1.0, 0.0])
    p = torch.sigmoid(logits)
    # sounding key: alpha (1 - p)^gamma (-log p); silent key: (1 - alpha) p^gamma (-log(1 - p))
    expected = (0.75 * (1 - p[0]) ** 2 * -torch.log(p[0]) + 0.25 * p[1] ** 2 * -torch.log(1 - p[1])) / 2
    assert float(focal_loss(logits, target, 0.75, 2.0)) == pytest.approx(float(expected), rel=1e-6)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert float(focal_loss(logits, target, 0.5, 0.0)) == pytest.approx(float(bce) / 2, rel=1e-6)


def _manifest(package: Path) -> dict:
    return tomllib.loads((package / "livegen.toml").read_text())


def test_deep_musician_package_has_two_graphs_and_parity(deep_musician: Path) -> None:
    manifest = _manifest(deep_musician)
    assert manifest["kind"] == "frame" and manifest["family"] == "deep-musician"
    assert set(manifest["graphs"]) == {"encoder", "decoder"}
    assert manifest["representation"]["keys"] == 88 and manifest["representation"]["pitch_min"] == 21
    assert 0 <= manifest["metrics"]["parity_max_abs_diff"] <= 1e-4
    assert "val_density_notes_per_beat" in manifest["metrics"]
    assert "focal" in manifest["training"]["loss"]


def test_multitrack_package_declares_a_channel_and_program_per_track(multitrack: Path) -> None:
    manifest = _manifest(multitrack)
    assert manifest["kind"] == "frame" and manifest["family"] == "multitrack-rnn"
    tracks = manifest["representation"]["tracks"]
    assert [t["channel"] for t in tracks] == [0, 1, 2, 3]
    assert [t["center"] for t in tracks] == sorted((t["center"] for t in tracks), reverse=True)
    assert 0 <= manifest["metrics"]["parity_max_abs_diff"] <= 1e-4
    _, generator = load_generator(str(multitrack))
    assert generator.programs == {t["channel"]: t["program"] for t in tracks}  # type: ignore[attr-defined]


@pytest.mark.parametrize("family", ["deep_musician", "multitrack"])
def test_answers_the_seed_phrase_in_call_and_response(family: str, request: pytest.FixtureRequest) -> None:
    package: Path = request.getfixturevalue(family)
    _, generator = load_generator(str(package))
    seed = read_midi(package / "seed.mid").notes
    settings = CallResponseSettings()
    performance = render_call_response(
        generator, seed, tempo=TempoMap.constant(120), params=SamplingParams(), rng_seed=0, settings=settings
    )
    start = max(n.end for n in seed)
    assert performance.model and all(n.start >= start for n in performance.model)
    assert all(n.start % 120 == 0 and n.duration % 120 == 0 for n in performance.model)  # on the 16th grid
    assert max(n.duration for n in performance.model) <= 16 * 120  # held at most 4 beats
    channels = {n.channel for n in performance.model}
    if family == "multitrack":
        assert channels <= {0, 1, 2, 3}
    else:
        assert channels == {settings.channel}
    # the same rng seed gives the same answer
    again = render_call_response(
        load_generator(str(package))[1], seed, tempo=TempoMap.constant(120), params=SamplingParams(), rng_seed=0,
        settings=settings,
    )  # fmt: skip
    assert again.model == performance.model


@pytest.mark.parametrize("family", ["deep_musician", "multitrack"])
def test_accompanies_and_replans_when_the_performer_plays(family: str, request: pytest.FixtureRequest) -> None:
    package: Path = request.getfixturevalue(family)
    accompanies_and_replans(load_generator(str(package))[1])


@pytest.mark.parametrize("family", ["deep_musician", "multitrack"])
def test_plays_on_its_own_from_the_seed(family: str, request: pytest.FixtureRequest) -> None:
    package: Path = request.getfixturevalue(family)
    plays_on_its_own(load_generator(str(package))[1], package)


def test_multitrack_trains_exports_and_plays_with_three_tracks(corpus: Path, tmp_path: Path) -> None:
    """The track count is the user's (``--tracks``): three of the four voices, not a fixed four."""
    config = MultiTrackConfig(tracks=3, hidden=16, window=16, batch_size=8)
    options = MultiTrackOptions(data=str(corpus), out=tmp_path / "run", epochs=1, patience=1, config=config)
    package = export_multitrack(train_multitrack(options), tmp_path / "tiny-mt3")
    manifest = _manifest(package)
    assert [t["channel"] for t in manifest["representation"]["tracks"]] == [0, 1, 2]
    assert manifest["metrics"]["val_density_true_notes_per_beat"] > 0
    _, generator = load_generator(str(package))
    plays_on_its_own(generator, package)
