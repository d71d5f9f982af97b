"""``imagegan``: the piano-roll images, the host's pixel draw, the manifest checks, and a tiny model end to end.

Context: setup (tests of the training-only ``export`` package; needs the ``train`` extra). A tiny GAN trains
two epochs on chorale-like pieces the tests write, exports with the parity check, and plays in
call-and-response, accompaniment and autonomous play.
"""

from __future__ import annotations

import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tomli_w

torch = pytest.importorskip("torch", reason="training tests need the train extra: pip install -e '.[train]'")

from export.imagegan.model import RECIPES, Discriminator, Generator, ImageGanConfig  # noqa: E402
from export.imagegan.package import export_imagegan, imagegan_departures  # noqa: E402
from export.imagegan.train import (  # noqa: E402
    ImageGanOptions,
    image_statistics,
    texture_figures,
    train_imagegan,
    tune_images,
    tune_notes,
)
from livegen.engine.callresponse import CallResponseSettings  # noqa: E402
from livegen.engine.render import render_call_response  # noqa: E402
from livegen.errors import PackageError  # noqa: E402
from livegen.models.frames import RollNote  # noqa: E402
from livegen.models.imagegan import ImageGanGenerator, draw_pixels  # noqa: E402
from livegen.models.package import load_package  # noqa: E402
from livegen.models.registry import load_generator  # noqa: E402
from livegen.models.sampling import SamplingParams  # noqa: E402
from livegen.music.corpus import Tune  # noqa: E402
from livegen.music.midifile import read_midi, write_midi  # noqa: E402
from livegen.music.time import TempoMap  # noqa: E402
from tests.families import voices  # noqa: E402
from tests.liveplay import accompanies_and_replans  # noqa: E402

pytestmark = pytest.mark.slow


def _tune(rows: list[tuple[int, float, float]]) -> Tune:
    pitch, onset, duration = zip(*rows, strict=True)
    return Tune(
        "t",
        np.asarray(pitch, dtype=np.int16),
        np.asarray(onset, dtype=np.float32),
        np.asarray(duration, dtype=np.float32),
    )


# ---- data ------------------------------------------------------------------------------


def test_tune_notes_are_16ths_from_the_first_onset() -> None:
    tune = _tune([(60, 1.0, 1.0), (64, 1.5, 0.5), (67, 3.0, 2.0)])
    assert tune_notes(tune) == [RollNote(0, 4, 60), RollNote(2, 2, 64), RollNote(8, 8, 67)]


def test_images_are_windows_of_the_roll_on_the_stride_without_empty_ones() -> None:
    # 60 for 4 beats from 0; 64 on beat 2 for a beat; 100 is above the range (36..83); a rest; 62 on beat 8
    tune = _tune([(60, 0.0, 4.0), (64, 2.0, 1.0), (100, 2.0, 1.0), (62, 8.0, 1.0)])
    config = ImageGanConfig(window=16, keys=48, pitch_min=36, stride=8)
    images = tune_images(tune, config)
    # frames 0..35: windows at 0, 8, 16 (24 would end past 36); the one at 16 (frames 16..31) is silent
    assert images.shape == (2, 16, 48) and images.dtype == np.uint8
    first = np.zeros((16, 48), dtype=np.uint8)
    first[0:16, 60 - 36] = 1
    first[8:12, 64 - 36] = 1
    assert (images[0] == first).all()
    second = np.zeros((16, 48), dtype=np.uint8)
    second[0:8, 60 - 36] = 1
    second[0:4, 64 - 36] = 1
    assert (images[1] == second).all()


def test_image_statistics_count_runs_as_notes() -> None:
    image = np.zeros((1, 16, 8), dtype=np.uint8)
    image[0, 0:4, 2] = 1  # a quarter
    image[0, 5, 2] = 1  # a 16th on the same key
    image[0, 0:16, 7] = 1  # a whole note
    stats = image_statistics(image, 60, max_hold=8)  # the whole note is cut into two halves
    assert stats["notes_per_beat"] == pytest.approx(4 / 4)
    assert stats["keys_per_frame"] == pytest.approx(21 / 16)
    assert stats["note_frames"] == pytest.approx((4 + 1 + 8 + 8) / 4)
    assert stats["sixteenth_share"] == pytest.approx(1 / 4)


def test_texture_figures_count_differing_pixels_and_onsets_on_beats() -> None:
    images = np.zeros((2, 8, 4), dtype=np.uint8)
    images[0, 0:8, 0] = 1  # one onset, on beat (frame 0)
    images[1, 0:2, 0] = 1  # onset on frame 0 ...
    images[1, 6:8, 0] = 1  # ... and frame 6 (off the beat); differs from image 0 in frames 2..5 of key 0
    images[1, 4, 3] = 1  # onset on frame 4 (a beat); differs in one more pixel
    figures = texture_figures(images)
    assert figures["diversity"] == pytest.approx(5 / 32)
    assert figures["onbeat_share"] == pytest.approx(3 / 4)
    assert texture_figures(np.stack([images[0], images[0]]))["diversity"] == 0.0


def test_nearest_upsampling_has_no_period_in_time_and_transpose_does() -> None:
    torch.manual_seed(0)
    for upsampling, periodic in (("nearest", False), ("transpose", True)):
        generator = Generator(ImageGanConfig(upsampling=upsampling)).eval()
        x = torch.ones(1, generator.config.channels, generator.rows, generator.cols)  # the same in every row
        with torch.no_grad():
            y = generator.out(generator.up(x))[0, 0, 8:-8]  # frames away from the padded ends
        spread = float((y - y.mean(dim=0)).abs().max())
        assert (spread > 1e-4) == periodic, upsampling


def test_the_card_names_each_departure_from_the_seed() -> None:
    seed = ImageGanConfig()  # the defaults are the seed's recipe
    assert imagegan_departures(seed) == []
    lines = imagegan_departures(
        ImageGanConfig(
            upsampling="nearest",
            generator_dropout=0.0,
            real_label=0.9,
            noise_start=0.2,
            minibatch_std=True,
            d_learning_rate=1e-4,
        )
    )
    assert [line.split("**")[1].split(" ")[0] for line in lines] == [
        "Upsampling",
        "Dropout",
        "One-sided",
        "Instance",
        "Minibatch",
        "A",
    ]


def test_the_stable_recipe_keeps_the_seeds_networks_and_names_its_stabilisers() -> None:
    seed, stable = ImageGanConfig(), ImageGanConfig(**RECIPES["stable"])
    names = [line.split("**")[1] for line in imagegan_departures(stable)]
    assert [name.split(" ")[0] for name in names] == [
        "Upsampling",
        "Dropout",
        "Minibatch",
        "Binary",
        "Hinge",
        "Spectral",
        "Two",
    ]
    normed = [m for m in Discriminator(stable).modules() if torch.nn.utils.parametrize.is_parametrized(m)]
    assert [type(m).__name__ for m in normed] == ["ParametrizedConv2d", "ParametrizedConv2d", "ParametrizedLinear"]
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in Discriminator(seed).modules())
    # the same layers as the seed's, the discriminator's head reading one more channel (the batch's spread)
    widths = {k: tuple(v.shape) for k, v in Generator(seed).dense.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in Generator(stable).dense.state_dict().items()} == widths


def test_draw_pixels_thresholds_per_key_and_caps_polyphony() -> None:
    logits = np.array([[[2.0, -2.0, 0.5, 1.0], [2.0, 3.0, 0.5, -1.0]]])  # [1 block, 2 frames, 4 keys]
    # near temperature 0 every threshold below 1 reads as "logit above 0"
    on = draw_pixels(logits, 0.01, np.full((1, 4), 0.5), polyphony=4)
    assert on.tolist() == [[[True, False, True, True], [True, True, True, False]]]
    # at temperature 1: sigmoid(0.5) = 0.62, sigmoid(1) = 0.73; key 3's threshold 0.7 keeps only its 0.73
    on = draw_pixels(logits, 1.0, np.array([[0.5, 0.5, 0.7, 0.7]]), polyphony=4)
    assert on.tolist() == [[[True, False, False, True], [True, True, False, False]]]
    # two keys a frame at most: the highest logits of those on
    on = draw_pixels(logits, 0.01, np.full((1, 4), 0.5), polyphony=2)
    assert on.tolist() == [[[True, False, False, True], [True, True, False, False]]]


# ---- a tiny model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def package(tiny_packages: Callable[[str], Path]) -> Path:
    return tiny_packages("imagegan")


def test_the_stable_recipe_trains_exports_and_names_its_stabilisers(tmp_path: Path) -> None:
    folder = tmp_path / "pieces"
    folder.mkdir()
    rng = np.random.default_rng(6)
    for i in range(6):
        write_midi(folder / f"piece{i}.mid", {"voices": voices(rng, 40, starts=(15, 9, 2))})
    small = {"window": 32, "hidden": 32, "channels": 4, "filters": 8, "batch_size": 16, "stride": 4}
    config = ImageGanConfig(**{**RECIPES["stable"], **small})
    options = ImageGanOptions(data=str(folder), out=tmp_path / "run", epochs=1, seed=1, config=config)
    package = export_imagegan(train_imagegan(options), tmp_path / "stable-ig")
    training = _manifest(package)["training"]
    assert training["loss"].startswith("hinge") and "Spectral normalisation" in training["stabilisers"]
    card = (package / "README.md").read_text()
    assert "**Hinge loss**" in card and "**Binary fakes" in card and "binary cross-entropy;" not in card


def _manifest(package: Path) -> dict:
    return tomllib.loads((package / "livegen.toml").read_text())


def test_package_ships_the_generator_with_the_gan_figures(package: Path) -> None:
    manifest = _manifest(package)
    assert manifest["kind"] == "block" and manifest["family"] == "imagegan"
    assert set(manifest["graphs"]) == {"generator"}
    assert manifest["representation"]["block_frames"] == 32 and manifest["representation"]["latent"] == 10
    metrics = manifest["metrics"]
    assert 0 <= metrics["parity_max_abs_diff"] <= 1e-4
    for key in ("discriminator_loss", "generator_loss", "accuracy_real", "accuracy_fake"):
        assert np.isfinite(metrics[f"final_{key}"]) and np.isfinite(metrics[f"held_out_{key}"])
    assert 0 <= metrics["final_accuracy_real"] <= 1 and 0 <= metrics["held_out_accuracy_fake"] <= 1
    assert "| epoch | discriminator loss |" in (package / "README.md").read_text()
    assert (package / "seed.mid").is_file()


def _broken(package: Path, tmp_path: Path, **representation: object) -> Path:
    copy = tmp_path / "broken"
    shutil.copytree(package, copy)
    manifest = _manifest(copy)
    manifest["representation"].update(representation)
    for key, value in representation.items():
        if value is None:
            del manifest["representation"][key]
    (copy / "livegen.toml").write_text(tomli_w.dumps(manifest))
    return copy


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"block_frames": 24},
            "field 'representation.block_frames': expected an integer of at least 1 and a "
            "multiple of 16 (a whole number of 4/4 bars), got 24",
        ),
        (
            {"block_frames": 64},
            "field 'representation.block_frames': expected 32 (the dimension 1 of graph "
            "'generator' tensor 'logits'), got 64",
        ),
        (
            {"keys": 40},
            "field 'representation.keys': expected 48 (the dimension 2 of graph 'generator' tensor 'logits'), got 40",
        ),
        ({"latent": 12}, "field 'representation.latent': expected 10"),
        ({"polyphony": 0}, "field 'representation.polyphony': expected an integer of at least 1, got 0"),
        ({"pitch_min": 100}, "field 'representation.keys': pitch_min + keys must be at most 128"),
        ({"max_hold": None}, "field 'representation.max_hold': expected an integer of at least 1, got None"),
    ],
)
def test_the_adapter_names_a_wrong_representation_field(
    package: Path, tmp_path: Path, change: dict[str, object], message: str
) -> None:
    broken = _broken(package, tmp_path, **change)
    loaded = load_package(broken)
    with pytest.raises(PackageError) as err:
        ImageGanGenerator(loaded)
    assert message in str(err.value) and str(broken / "livegen.toml") in str(err.value)


def test_proposes_candidate_blocks_in_one_draw_deterministically(package: Path) -> None:
    _, generator = load_generator(str(package))
    assert isinstance(generator, ImageGanGenerator) and not generator.conditioned
    params = SamplingParams()
    blocks = generator._propose([], 6, params, np.random.default_rng(3))
    again = generator._propose([], 6, params, np.random.default_rng(3))
    assert len(blocks) == 6 and blocks == again
    notes = [n for b in blocks for n in b]
    assert notes and all(0 <= n.onset < 32 and n.onset + n.frames <= 32 for n in notes)
    assert all(36 <= n.pitch < 36 + 48 for n in notes)
    for block in blocks:  # at most 4 keys sound in a frame
        assert all(sum(n.onset <= f < n.onset + n.frames for n in block) <= 4 for f in range(32))


def test_temperature_scales_the_latent(package: Path) -> None:
    _, generator = load_generator(str(package))
    assert isinstance(generator, ImageGanGenerator)
    cold = generator._propose([], 8, SamplingParams(temperature=0.05), np.random.default_rng(0))
    hot = generator._propose([], 8, SamplingParams(temperature=2.0), np.random.default_rng(0))
    # near zero every candidate is nearly the generator's image of the mean latent, thresholded at 0.5

    def spread(blocks: list[list[RollNote]]) -> float:
        sets = [set(b) for b in blocks]
        pairs = [(a, b) for i, a in enumerate(sets) for b in sets[i + 1 :]]
        return float(np.mean([len(a ^ b) / max(1, len(a | b)) for a, b in pairs]))

    assert spread(cold) < spread(hot)


def test_the_chosen_candidate_fits_the_phrase_at_least_as_well_as_the_average(package: Path) -> None:
    _, generator = load_generator(str(package))
    seed = read_midi(package / "seed.mid").notes
    render_call_response(
        generator, seed, tempo=TempoMap.constant(120), params=SamplingParams(), rng_seed=0,
        settings=CallResponseSettings(),
    )  # fmt: skip
    assert isinstance(generator, ImageGanGenerator) and generator.fit.blocks >= 1
    assert generator.fit.chosen_mean >= generator.fit.candidates_mean


def test_a_performed_note_draws_a_new_block_to_fit_it(package: Path) -> None:
    _, generator = load_generator(str(package))
    blocks = []
    accompanies_and_replans(generator, between=lambda: blocks.append(generator.fit.blocks))  # type: ignore[attr-defined]
    assert generator.fit.blocks > blocks[0]  # type: ignore[attr-defined]  # a new block drawn to fit the performer
