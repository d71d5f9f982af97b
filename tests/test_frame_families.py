"""``deep-musician`` and ``multitrack-rnn`` end to end: a tiny model is trained, exported and played by the host.

Context: setup (tests of the training-only ``export`` package; needs the ``train`` extra). Each
family trains one epoch of a tiny configuration on four-voice pieces the tests write, exports
with the parity check, and plays in call-and-response, accompaniment and autonomous play.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="training tests need the train extra: pip install -e '.[train]'")

from export.deepmusician.train import focal_loss  # noqa: E402
from export.multitrack_rnn.model import MultiTrackConfig  # noqa: E402
from export.multitrack_rnn.package import export_multitrack  # noqa: E402
from export.multitrack_rnn.train import MultiTrackOptions, train_multitrack  # noqa: E402
from livegen.models.registry import load_generator  # noqa: E402
from tests.families import four_voice_pieces  # noqa: E402
from tests.liveplay import plays_on_its_own  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return four_voice_pieces(tmp_path_factory.mktemp("voices"))


@pytest.fixture(scope="module")
def deep_musician(tiny_packages: Callable[[str], Path]) -> Path:
    return tiny_packages("deep-musician")


@pytest.fixture(scope="module")
def multitrack(tiny_packages: Callable[[str], Path]) -> Path:
    return tiny_packages("multitrack-rnn")


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
