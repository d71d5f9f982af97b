"""The worked example of docs/model-package.md, "Writing a model family", run as a third party would.

The example (docs/examples/pitch_chain/) is installed the way pip installs a wheel: its
module and a dist-info folder with its entry points on the path, found by
``importlib.metadata`` like any installed distribution. Then livegen loads a package of
that family, checks it against the adapter's contract and plays it.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from livegen.engine.callresponse import CallResponseSettings
from livegen.engine.render import render_call_response
from livegen.errors import PackageError
from livegen.models import registry
from livegen.models.package import load_package
from livegen.models.registry import BUNDLED_DIR, make_generator
from livegen.models.sampling import SamplingParams
from livegen.models.trial import play_trial
from livegen.music.midifile import read_midi
from livegen.music.time import TempoMap

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "pitch_chain"


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The example installed into a site folder on the path; returns its module."""
    site = tmp_path / "site"
    site.mkdir()
    for module in EXAMPLE.glob("*.py"):
        shutil.copy(module, site)
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    info = site / f"pitch_chain-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    entry_points = "".join(
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in table.items())
        for group, table in project["entry-points"].items()
    )
    (info / "entry_points.txt").write_text(entry_points)
    monkeypatch.syspath_prepend(str(site))
    import pitch_chain

    yield pitch_chain
    monkeypatch.delitem(__import__("sys").modules, "pitch_chain")
    __import__("sys").modules.pop("pitch_chain_export", None)


def phrases() -> list[list[int]]:
    """The training data: the pitches of the bundled models' seed phrases."""
    seeds = sorted(BUNDLED_DIR.glob("*/seed.mid"))
    return [[n.pitch for n in read_midi(path).notes] for path in seeds]


def test_the_example_family_is_found_checked_and_plays(installed, tmp_path: Path) -> None:
    assert registry.generator_class("pitch-chain") is installed.PitchChain  # found through its entry point
    folder = installed.write_package(tmp_path / "pitch-chain", phrases())
    package = load_package(folder)
    play_trial(package)  # the trial a jam runs before it plays a package: the seed phrase, then 32 steps
    generator = make_generator(package)
    seed = read_midi(folder / "seed.mid").notes
    performance = render_call_response(
        generator,
        seed,
        tempo=TempoMap.constant(120),
        params=SamplingParams(),
        rng_seed=1,
        settings=CallResponseSettings(silence_beats=1),
        response_bars=2,
    )
    answer = performance.model
    assert len(answer) == 16  # two bars of eighths
    assert len({n.pitch for n in answer}) > 3 and all(0 <= n.pitch <= 127 for n in answer)
    assert np.all(np.diff([n.start for n in answer]) == 240)


def test_a_package_that_breaks_the_contract_is_refused_before_the_adapter_runs(installed, tmp_path: Path) -> None:
    folder = installed.write_package(tmp_path / "pitch-chain", phrases(), step_beats=0.5)
    manifest = tomllib.loads((folder / "livegen.toml").read_text(encoding="utf-8"))
    manifest["representation"]["step_beats"] = 8
    (folder / "livegen.toml").write_text(tomli_w.dumps(manifest))
    with pytest.raises(PackageError, match=r"field 'representation.step_beats': expected a number from 0.125 to 4"):
        make_generator(load_package(folder))


def test_an_adapter_without_a_contract_is_refused_by_name(installed, tmp_path: Path, monkeypatch) -> None:
    folder = installed.write_package(tmp_path / "pitch-chain", phrases())
    monkeypatch.delattr(installed.PitchChain, "contract")
    with pytest.raises(PackageError, match=r"adapter pitch_chain.PitchChain declares no contract"):
        make_generator(load_package(folder))


def test_the_example_family_trains_and_exports_through_python_m_export(installed, tmp_path: Path) -> None:
    pytest.importorskip("torch")  # the train extra: python -m export needs it
    from export.__main__ import main as export_main
    from export.family import families

    assert families()["pitch-chain"] == "pitch_chain_export"  # found through its entry point
    data = tmp_path / "midi"
    data.mkdir()
    for seed in sorted(BUNDLED_DIR.glob("*/seed.mid")):
        shutil.copy(seed, data / f"{seed.parent.name}.mid")
    assert export_main(["train", "pitch-chain", "--data", str(data), "--out", str(tmp_path / "run")]) == 0
    assert export_main(["onnx", str(tmp_path / "run" / "checkpoint.pt"), "--out", str(tmp_path / "pkg")]) == 0
    package = load_package(tmp_path / "pkg")
    assert package.manifest.family == "pitch-chain"
    play_trial(package)
