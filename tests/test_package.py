"""Model package loading and verification: a good package plays, a bad one is refused by name."""

from __future__ import annotations

import os
import re
import shutil
import zipfile

import numpy as np
import pytest

from livegen.errors import PackageError
from livegen.models.midirnn import MidiRnnGenerator
from livegen.models.package import load_package, sha256_of
from livegen.models.registry import bundled_packages
from livegen.models.sampling import SamplingParams
from livegen.models.step import StepEvent
from livegen.models.trial import verify_in_child
from tests.pkgfactory import write_package


@pytest.fixture
def package_dir(tmp_path):
    return write_package(tmp_path / "pkg")


def test_valid_package_loads_and_generates(package_dir):
    package = load_package(package_dir)
    assert package.name == "test-rnn"
    assert package.seed_phrase == package_dir / "seed.mid"
    gen = MidiRnnGenerator(package)
    gen.feed(StepEvent(60, 0, 240))
    rng = np.random.default_rng(1)
    events = []
    for _ in range(20):
        event = gen.sample(SamplingParams(), rng)
        gen.feed(event)
        events.append(event)
    assert all(48 <= e.pitch <= 84 for e in events)  # the manifest's pitch range
    assert all(e.step >= 120 and e.step % 120 == 0 for e in events)  # snapped to the 16th grid
    assert all(e.duration >= 120 and e.duration % 120 == 0 for e in events)


def test_same_seed_same_line_and_snapshot_restores(package_dir):
    gen = MidiRnnGenerator(load_package(package_dir))

    def line(seed):
        gen.reset()
        gen.feed(StepEvent(64, 0, 240))
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(16):
            e = gen.sample(SamplingParams(temperature=1.5), rng)
            gen.feed(e)
            out.append(e.pitch)
        return out

    assert line(3) == line(3)
    assert line(3) != line(4)
    gen.reset()
    gen.feed(StepEvent(64, 0, 240))
    snap = gen.snapshot()
    before = gen.sample(SamplingParams(temperature=0.05, top_p=1.0), np.random.default_rng(0))
    gen.feed(StepEvent(30, 480, 480))
    gen.restore(snap)
    assert gen.sample(SamplingParams(temperature=0.05, top_p=1.0), np.random.default_rng(0)) == before


def test_scale_mask_keeps_pitches_in_key(package_dir):
    gen = MidiRnnGenerator(load_package(package_dir))
    gen.feed(StepEvent(62, 0, 240))
    params = SamplingParams(temperature=3.0, top_p=1.0, scale="major", root=2)  # D major
    rng = np.random.default_rng(0)
    for _ in range(50):
        e = gen.sample(params, rng)
        gen.feed(e)
        assert (e.pitch - 2) % 12 in (0, 2, 4, 5, 7, 9, 11)


def test_changed_byte_in_model_is_a_checksum_error(package_dir):
    model = package_dir / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(PackageError, match=r"model\.onnx: checksum mismatch"):
        load_package(package_dir)


def test_wrong_tensor_name_names_the_field(tmp_path):
    def rename(table):
        table["graphs"]["step"]["inputs"][0]["name"] = "event"
        table["graphs"]["step"]["state"][0]["input"] = "h"

    folder = write_package(tmp_path / "p", mutate=rename)
    with pytest.raises(PackageError, match=r"graphs\.step\.inputs.*'event'.*'note'"):
        load_package(folder)


def test_wrong_fixed_dimension_is_refused(tmp_path):
    def widen(table):
        table["graphs"]["step"]["outputs"][0]["shape"] = ["batch", 88]

    folder = write_package(tmp_path / "p", mutate=widen)
    with pytest.raises(PackageError, match=r"'pitch_logits' has shape"):
        load_package(folder)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.pop("name"), r"field 'name'.*missing"),
        (lambda t: t.update(kind="stream"), r"field 'kind': expected one of step, frame, block"),
        (lambda t: t.update(family="nosuch"), r"field 'family'.*no generator adapter for 'nosuch'.*midirnn"),
        (lambda t: t.update(schema=9), r"field 'schema'"),
        (lambda t: t["parameters"]["temperature"].update(default=9.0), r"parameters\.temperature\.default"),
        (lambda t: t["files"].update({"../evil.onnx": "sha256:" + "0" * 64}), r"must be a plain path inside"),
        (lambda t: t["graphs"]["step"].update(file="other.onnx"), r"graphs\.step\.file.*listed in \[files\]"),
        (lambda t: t["files"].update({"README.md": "md5:abc"}), r"files\.README\.md"),
    ],
)
def test_manifest_mistakes_are_named(tmp_path, mutate, message):
    folder = write_package(tmp_path / "p", mutate=mutate)
    with pytest.raises(PackageError, match=message):
        load_package(folder)


def test_not_toml_and_missing_manifest(tmp_path, package_dir):
    (package_dir / "livegen.toml").write_text("name = [unclosed")
    with pytest.raises(PackageError, match="not valid TOML"):
        load_package(package_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PackageError, match="manifest is missing"):
        load_package(empty)
    with pytest.raises(PackageError, match="no model package there"):
        load_package(tmp_path / "nowhere")


def test_symlink_out_of_package_is_refused(tmp_path, package_dir):
    outside = tmp_path / "outside.md"
    outside.write_text("# secret")
    (package_dir / "README.md").unlink()
    os.symlink(outside, package_dir / "README.md")
    with pytest.raises(PackageError, match="outside the package folder"):
        load_package(package_dir)


def test_zipped_package_loads_and_unsafe_zip_is_refused(tmp_path, package_dir):
    archive = tmp_path / "pkg.zip"
    shutil.make_archive(str(archive.with_suffix("")), "zip", package_dir.parent, package_dir.name)
    assert load_package(archive).name == "test-rnn"
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../escape.txt", "x")
    with pytest.raises(PackageError, match="outside the package"):
        load_package(evil)


def test_graph_that_onnx_rejects(package_dir):
    (package_dir / "model.onnx").write_bytes(b"not a protobuf at all")
    text = (package_dir / "livegen.toml").read_text()
    digest = sha256_of(package_dir / "model.onnx")
    text = re.sub(r'"model.onnx" = "sha256:[0-9a-f]+"', f'"model.onnx" = "{digest}"', text)
    (package_dir / "livegen.toml").write_text(text)
    with pytest.raises(PackageError, match=r"model\.onnx: not a readable ONNX model"):
        load_package(package_dir)


def test_feed_clamps_long_pauses_to_the_trained_range(tmp_path):
    folder = write_package(tmp_path / "p", mutate=lambda t: t["representation"].update(beats_max=8.0))
    gen = MidiRnnGenerator(load_package(folder))
    gen.feed(StepEvent(60, 0, 240))
    snap = gen.snapshot()
    gen.feed(StepEvent(62, 30 * 480, 480))  # a 30-beat pause
    after_long = gen.sample(SamplingParams(temperature=0.05, top_p=1.0), np.random.default_rng(0))
    gen.restore(snap)
    gen.feed(StepEvent(62, 8 * 480, 480))
    after_clip = gen.sample(SamplingParams(temperature=0.05, top_p=1.0), np.random.default_rng(0))
    assert after_long == after_clip


def test_verify_in_child_passes_a_good_package_and_names_the_fault_of_a_bad_one(package_dir, tmp_path):
    verify_in_child(package_dir)  # no exception
    broken = write_package(tmp_path / "broken")
    data = bytearray((broken / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(PackageError, match=r"broken.*model\.onnx.*sha256"):
        verify_in_child(broken)
    package = load_package(package_dir, check_graphs=False)  # what a swap loads once the child said yes
    assert package.sessions


def test_every_family_livegen_ships_is_registered_as_an_entry_point_like_a_third_partys() -> None:
    import tomllib
    from importlib.metadata import entry_points
    from pathlib import Path

    from livegen.models.manifest import MANIFEST, parse_manifest
    from livegen.models.registry import bundled_packages, generator_class

    declared = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
    registered = declared["entry-points"]["livegen.generators"]
    shipped = {parse_manifest(folder / MANIFEST).family for folder in bundled_packages()}
    assert shipped <= set(registered), shipped - set(registered)  # the eight bundled families, declared once
    installed = {
        ep.name: ep.value for ep in entry_points(group="livegen.generators") if ep.dist and ep.dist.name == "livegen"
    }
    assert installed == registered  # the installed metadata is what pyproject.toml declares
    for family in shipped:
        module, _, attr = registered[family].partition(":")
        assert generator_class(family).__name__ == attr and generator_class(family).__module__ == module


def test_a_source_tree_that_is_not_installed_finds_its_families_in_its_pyproject(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from livegen.models import registry

    monkeypatch.setattr(registry, "entry_points", lambda group: [])  # no distribution metadata at all
    assert registry.generator_class("crnngan").__name__ == "CrnnGanGenerator"
    assert len(registry._families()) == 8


@pytest.mark.parametrize("folder", bundled_packages(), ids=lambda p: p.name)
def test_every_bundled_package_passes_every_check_and_its_trial(folder):
    # a jam opens a bundled package without onnx.checker and without the trial's child: this is where both run
    verify_in_child(folder)
