"""Training and export of ``midirnn`` end to end, on a tiny MIDI corpus the tests write themselves.

Context: setup (tests of the training-only ``export`` package; needs the ``train`` extra).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import tomllib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training tests need the train extra: pip install -e '.[train]'")
onnx = pytest.importorskip("onnx", reason="export tests need onnx (runtime dependency)")

from export.__main__ import main  # noqa: E402
from export.common import CHECKPOINT, PARITY_TOLERANCE, load_checkpoint  # noqa: E402
from export.midirnn.model import MidiRnn, MidiRnnConfig, TimeClasses, class_vocabulary, nearest_class  # noqa: E402
from export.midirnn.train import TrainOptions, train_midirnn  # noqa: E402
from livegen.music.corpus import CorpusError, load_corpus  # noqa: E402
from livegen.music.events import Note  # noqa: E402
from livegen.music.midifile import read_midi, write_midi  # noqa: E402
from livegen.music.time import PPQN  # noqa: E402

C_MAJOR = [60, 62, 64, 65, 67, 69, 71, 72, 74, 76, 77, 79]
TINY = ["--epochs", "2", "--patience", "1", "--window", "16", "--batch-size", "8"]


def _melody(rng: np.random.Generator, notes: int) -> list[Note]:
    """A stepwise random walk in C major with a few rhythms, one note at a time."""
    index = int(rng.integers(2, 8))
    tick = 0
    out = []
    for _ in range(notes):
        index = int(np.clip(index + rng.choice([-2, -1, -1, 0, 1, 1, 2]), 0, len(C_MAJOR) - 1))
        beats = float(rng.choice([0.5, 0.5, 1.0, 1.0, 1.5, 2.0]))
        length = round(beats * PPQN)
        out.append(Note(pitch=C_MAJOR[index], velocity=90, start=tick, duration=length - PPQN // 8))
        tick += length
    return out


def _write_corpus(folder: Path, count: int = 8) -> Path:
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        write_midi(folder / f"tune{i:02d}.mid", {"melody": _melody(rng, int(rng.integers(24, 48)))})
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_corpus(tmp_path_factory.mktemp("midi"))


@pytest.fixture(scope="module")
def trained(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Train a tiny midirnn through the CLI and export it right after: (checkpoint, package)."""
    root = tmp_path_factory.mktemp("run")
    package = root / "pkg" / "tiny-lstm"
    code = main(
        ["train", "midirnn", "--data", str(corpus), "--out", str(root / "run"), *TINY, "--package", str(package)]
    )
    assert code == 0
    return root / "run" / CHECKPOINT, package


def test_checkpoint_holds_weights_config_provenance_and_metrics(trained: tuple[Path, Path]) -> None:
    checkpoint = load_checkpoint(trained[0])
    assert checkpoint["family"] == "midirnn"
    assert checkpoint["config"]["window"] == 16 and checkpoint["config"]["hidden"] == 128
    assert checkpoint["provenance"]["tunes"] == 8
    assert checkpoint["provenance"]["pitch_min"] >= 60 and checkpoint["provenance"]["pitch_max"] <= 79
    assert 1 <= checkpoint["training"]["best_epoch"] <= checkpoint["training"]["epochs_run"] <= 2
    assert len(checkpoint["history"]) == checkpoint["training"]["epochs_run"]
    metrics = checkpoint["metrics"]
    for key in (
        "held_out_pitch_accuracy",
        "baseline_most_frequent_pitch_accuracy",
        "baseline_repeat_last_pitch_accuracy",
    ):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["held_out_step_mae_beats"] >= 0 and metrics["held_out_duration_mae_beats"] >= 0
    assert "lstm.weight_ih_l0" in checkpoint["state_dict"]


def test_training_is_deterministic_given_the_seed(corpus: Path, tmp_path: Path) -> None:
    config = MidiRnnConfig(window=16, batch_size=8)
    runs = [
        train_midirnn(TrainOptions(data=str(corpus), out=tmp_path / name, epochs=1, seed=3, config=config))
        for name in ("a", "b")
    ]
    first, second = (load_checkpoint(r.checkpoint)["state_dict"] for r in runs)
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert runs[0].metrics == runs[1].metrics


def test_package_manifest_checksums_and_parity(corpus: Path, trained: tuple[Path, Path]) -> None:
    package = trained[1]
    assert sorted(p.name for p in package.iterdir()) == ["README.md", "livegen.toml", "model.onnx", "seed.mid"]
    manifest = tomllib.loads((package / "livegen.toml").read_text())
    assert manifest["name"] == "tiny-lstm"
    assert (manifest["family"], manifest["kind"], manifest["schema"]) == ("midirnn", "step", 1)
    assert manifest["seed_phrase"] == "seed.mid"
    rep = manifest["representation"]
    assert rep["time_unit"] == "beat" and rep["pitch_scale"] == 128.0 and rep["grid"] == 120
    assert 60 <= rep["pitch_min"] <= rep["pitch_max"] <= 79
    graph = manifest["graphs"]["step"]
    assert graph["file"] == "model.onnx"
    assert [t["name"] for t in graph["inputs"]] == ["note", "h", "c"]
    assert [t["name"] for t in graph["outputs"]] == ["pitch_logits", "step", "duration", "h_out", "c_out"]
    assert graph["inputs"][1]["shape"] == [1, "batch", 128]
    assert [t["shape"] for t in graph["outputs"][1:3]] == [["batch", 1], ["batch", 1]]
    assert rep["time_head"] == "regression" and "step_classes" not in rep and "duration_classes" not in rep
    assert set(manifest["parameters"]) == {"temperature", "top_p"}
    assert graph["state"] == [{"input": "h", "output": "h_out"}, {"input": "c", "output": "c_out"}]
    assert manifest["parameters"]["temperature"]["min"] <= manifest["parameters"]["temperature"]["default"]
    assert set(manifest["files"]) == {"model.onnx", "README.md", "seed.mid"}
    for name, digest in manifest["files"].items():
        assert digest == "sha256:" + hashlib.sha256((package / name).read_bytes()).hexdigest()
    metrics = manifest["metrics"]
    assert all(isinstance(v, float) for v in metrics.values())
    assert 0.0 <= metrics["parity_max_abs_diff"] <= PARITY_TOLERANCE
    assert manifest["training"]["data"] == str(corpus)
    training = manifest["training"]
    assert training["tunes_train"] + training["tunes_validation"] + training["tunes_held_out"] == 8
    assert 1 <= training["best_epoch"] <= training["epochs"] <= 2
    card = (package / "README.md").read_text()
    assert "repeat the last pitch" in card and "What differs from the seed" in card


def test_exported_graph_streams_like_pytorch_and_loads_in_the_host(trained: tuple[Path, Path]) -> None:
    from livegen.models.package import load_package

    checkpoint_path, package = trained
    loaded = load_package(package)
    session = loaded.sessions["step"]
    model = MidiRnn(128)
    model.load_state_dict(load_checkpoint(checkpoint_path)["state_dict"])
    model.eval()
    rng = np.random.default_rng(0)
    notes = np.stack(
        [rng.integers(60, 80, (3, 20)) / 128.0, rng.choice([0.5, 1.0], (3, 20)), np.full((3, 20), 0.4)], -1
    )
    notes = notes.astype(np.float32)
    with torch.no_grad():
        logits, _, _, _ = model(torch.from_numpy(notes))
    h = np.zeros((1, 3, 128), np.float32)
    c = np.zeros_like(h)
    for t in range(20):
        out, _, _, h, c = session.run(None, {"note": notes[:, t], "h": h, "c": c})
        np.testing.assert_allclose(out, logits[:, t].numpy(), atol=1e-4)


def test_seed_phrase_is_the_opening_of_a_held_out_tune(trained: tuple[Path, Path]) -> None:
    song = read_midi(trained[1] / "seed.mid")
    assert song.tempo.initial_bpm == pytest.approx(120.0)
    assert len(song.notes) >= 4
    assert max(n.start for n in song.notes) < 8 * PPQN
    pitches = [n.pitch for n in song.notes]
    starts = [n.start / PPQN for n in song.notes]
    held_out = load_checkpoint(trained[0])["held_out_sample"]
    assert any(
        tune["pitch"][: len(pitches)] == pitches
        and np.allclose(np.asarray(tune["onset"][: len(starts)]) - tune["onset"][0], starts, atol=1 / PPQN)
        for tune in held_out
    )


def test_export_fails_cleanly_when_parity_is_broken(
    trained: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A graph whose weights drift from PyTorch's is caught by the real parity run, and nothing is written."""
    from onnx import numpy_helper

    import export.midirnn.package

    real_export = export.midirnn.package.export_step_graph

    def drifting_export(model: object, path: Path) -> None:
        real_export(model, path)  # type: ignore[arg-type]
        graph = onnx.load(str(path))
        tensor = max(graph.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        values = numpy_helper.to_array(tensor) + np.float32(0.01)
        tensor.CopyFrom(numpy_helper.from_array(values.astype(np.float32), tensor.name))
        onnx.save(graph, str(path))

    monkeypatch.setattr(export.midirnn.package, "export_step_graph", drifting_export)
    out = tmp_path / "broken-lstm"
    code = main(["onnx", str(trained[0]), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert "parity check failed" in err and "at most 0.0001" in err
    assert "Traceback" not in err
    assert not out.exists()
    assert not any(p.name.startswith(".broken-lstm") for p in tmp_path.iterdir())


def test_unknown_family_lists_the_accepted_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "transformer", "--data", "corpus:folk", "--out", str(tmp_path)])
    assert code == 1
    assert "unknown model family 'transformer'; accepted: midirnn" in capsys.readouterr().err


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["onnx", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "pkg")])
    assert code == 1
    assert "no such checkpoint" in capsys.readouterr().err


def test_broken_midi_file_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = _write_corpus(tmp_path / "midi", count=3)
    (folder / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    with caplog.at_level(logging.WARNING, logger="export.corpus"):
        tunes = load_corpus(str(folder))
    assert len(tunes) == 3
    assert any("broken.mid" in r.getMessage() for r in caplog.records)


def test_folder_with_nothing_usable_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "midi"
    folder.mkdir()
    (folder / "broken.mid").write_bytes(b"not a midi file")
    write_midi(folder / "short.mid", {"m": [Note(60, 90, 0, 240)]})
    with pytest.raises(CorpusError, match="1 unreadable, 1 with fewer than 8 notes"):
        load_corpus(str(folder))
    code = main(["train", "midirnn", "--data", str(folder), "--out", str(tmp_path / "run")])
    assert code == 1
    assert "no usable MIDI file" in capsys.readouterr().err


def test_exported_package_plays_in_the_host(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from livegen.cli import main
    from livegen.engine.session import MODEL_TRACK

    _, package = trained
    out = tmp_path / "played.mid"
    code = main(["render", "--model", str(package), "--seed-file", str(package / "seed.mid"), "--bars", "2",
                 "--out", str(out), "--rng-seed", "5"])  # fmt: skip
    assert code == 0
    import mido

    tracks = {t.name: t for t in mido.MidiFile(out).tracks}
    assert sum(1 for m in tracks[MODEL_TRACK] if m.type == "note_on" and m.velocity > 0) > 0


# --- the categorical time head (--time-head classes) ---------------------------------------------------------


def test_class_vocabulary_keeps_the_frequent_values_and_maps_the_rest_to_the_nearest() -> None:
    values = np.array([0.5] * 600 + [0.25] * 300 + [1 / 3] * 96 + [0.3] * 2 + [5.0] * 2)
    classes, share = class_vocabulary(values, coverage=0.99, max_classes=64)
    # 0.3 snaps to 7/24 beat and 5.0 stays 5: each holds 0.2%, below what 99% coverage needs.
    assert classes == (0.25, 1 / 3, 0.5) and share == pytest.approx(0.996)
    assert nearest_class(torch.tensor([0.3, 5.0, 0.375, 0.26, 0.4]), classes).tolist() == [1, 2, 1, 0, 1]
    assert class_vocabulary(values, coverage=0.9, max_classes=64)[0] == (0.25, 0.5)
    assert class_vocabulary(values, coverage=1.0, max_classes=2)[0] == (0.25, 0.5)
    # Unquantised performances fall into classes of 1/24 beat rather than one class per tick.
    jittered = 0.5 + np.random.default_rng(0).uniform(-0.015, 0.015, 1000)
    assert class_vocabulary(jittered, coverage=0.995, max_classes=64)[0] == (0.5,)


@pytest.fixture(scope="module")
def trained_classes(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny midirnn with the categorical time head, trained and exported through the CLI."""
    root = tmp_path_factory.mktemp("run-classes")
    package = root / "pkg" / "tiny-classes"
    code = main(["train", "midirnn", "--data", str(corpus), "--out", str(root / "run"), *TINY,
                 "--time-head", "classes", "--package", str(package)])  # fmt: skip
    assert code == 0
    return root / "run" / CHECKPOINT, package


def test_classes_checkpoint_holds_the_vocabulary_and_class_figures(trained_classes: tuple[Path, Path]) -> None:
    checkpoint = load_checkpoint(trained_classes[0])
    assert checkpoint["config"]["time_head"] == "classes"
    assert (checkpoint["config"]["step_weight"], checkpoint["config"]["duration_weight"]) == (0.1, 0.1)
    # The test melodies step by 1/2, 1, 3/2 and 2 beats and hold each note 1/8 beat less.
    assert checkpoint["time_classes"] == {"step": [0.5, 1.0, 1.5, 2.0], "duration": [0.375, 0.875, 1.375, 1.875]}
    assert checkpoint["provenance"]["step_class_coverage"] == 1.0
    state = checkpoint["state_dict"]
    assert state["step.weight"].shape == (4, 128) and state["duration.weight"].shape == (4, 128)
    metrics = checkpoint["metrics"]
    for head in ("step", "duration"):
        for key in (f"held_out_{head}_accuracy", f"baseline_most_frequent_{head}_accuracy",
                    f"baseline_repeat_last_{head}_accuracy"):  # fmt: skip
            assert 0.0 <= metrics[key] <= 1.0
        # Errors come from the argmax class's value, so they are whole multiples of 1/2 beat here.
        assert metrics[f"held_out_{head}_mae_beats"] >= 0 and metrics[f"baseline_repeat_last_{head}_mae_beats"] >= 0
    history = checkpoint["history"][0]
    assert history["val_step"] > 0 and history["val_duration"] > 0  # cross-entropies, in nats


def test_classes_package_declares_the_classes_and_passes_parity(trained_classes: tuple[Path, Path]) -> None:
    checkpoint_path, package = trained_classes
    manifest = tomllib.loads((package / "livegen.toml").read_text())
    rep = manifest["representation"]
    assert rep["time_head"] == "classes"
    assert rep["step_classes"] == [0.5, 1.0, 1.5, 2.0] and rep["duration_classes"] == [0.375, 0.875, 1.375, 1.875]
    outputs = manifest["graphs"]["step"]["outputs"]
    assert [(t["name"], t["shape"]) for t in outputs[:3]] == [
        ("pitch_logits", ["batch", 128]),
        ("step_logits", ["batch", 4]),
        ("duration_logits", ["batch", 4]),
    ]
    assert manifest["training"]["time_head"] == "classes"
    assert manifest["parameters"]["time_temperature"] == {"default": 1.0, "min": 0.05, "max": 4.0}
    assert manifest["training"]["loss"] == "cross-entropy (pitch, step classes, duration classes)"
    assert 0.0 <= manifest["metrics"]["parity_max_abs_diff"] <= PARITY_TOLERANCE
    assert 0.0 <= manifest["metrics"]["held_out_step_accuracy"] <= 1.0
    card = (package / "README.md").read_text()
    assert "Step and duration are categorical (`--time-head classes`)" in card
    assert "0.771" in card and "0.858" in card  # the measured regression problem it answers
    assert "step: 1/2, 1, 3/2, 2\n" in card and "this model (its most likely class)" in card

    # The graph run note by note in onnxruntime gives the class logits PyTorch gives for the whole sequence.
    from livegen.models.package import load_package

    session = load_package(package).sessions["step"]
    classes = TimeClasses.from_dict(load_checkpoint(checkpoint_path)["time_classes"])
    model = MidiRnn(128, classes)
    model.load_state_dict(load_checkpoint(checkpoint_path)["state_dict"])
    model.eval()
    rng = np.random.default_rng(1)
    notes = np.stack(
        [rng.integers(60, 80, (3, 20)) / 128.0, rng.choice([0.5, 1.0, 1.5], (3, 20)), np.full((3, 20), 0.375)], -1
    ).astype(np.float32)
    with torch.no_grad():
        pitch, step, duration, _ = model(torch.from_numpy(notes))
    h = np.zeros((1, 3, 128), np.float32)
    c = np.zeros_like(h)
    for t in range(20):
        out = dict(zip(model.output_names, session.run(list(model.output_names), {"note": notes[:, t], "h": h, "c": c}),
                       strict=True))  # fmt: skip
        np.testing.assert_allclose(out["pitch_logits"], pitch[:, t].numpy(), atol=PARITY_TOLERANCE)
        np.testing.assert_allclose(out["step_logits"], step[:, t].numpy(), atol=PARITY_TOLERANCE)
        np.testing.assert_allclose(out["duration_logits"], duration[:, t].numpy(), atol=PARITY_TOLERANCE)
        h, c = out["h_out"], out["c_out"]


def test_classes_package_plays_only_class_values_in_the_host(
    trained_classes: tuple[Path, Path], tmp_path: Path
) -> None:
    from livegen.cli import main as livegen_main
    from livegen.engine.session import MODEL_TRACK

    _, package = trained_classes
    out = tmp_path / "played.mid"
    code = livegen_main(["render", "--model", str(package), "--seed-file", str(package / "seed.mid"),
                         "--bars", "4", "--out", str(out), "--rng-seed", "5"])  # fmt: skip
    assert code == 0
    import mido

    track = {t.name: t for t in mido.MidiFile(out).tracks}[MODEL_TRACK]
    onsets, tick = [], 0
    for message in track:
        tick += message.time
        if message.type == "note_on" and message.velocity > 0:
            onsets.append(tick)
    assert len(onsets) >= 3
    steps = {b - a for a, b in itertools.pairwise(onsets)}
    assert steps <= {240, 480, 720, 960}, steps


def test_classes_checkpoint_without_its_vocabulary_is_a_clear_error(
    trained_classes: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = load_checkpoint(trained_classes[0])
    checkpoint["time_classes"] = None
    broken = tmp_path / CHECKPOINT
    torch.save(checkpoint, broken)
    code = main(["onnx", str(broken), "--out", str(tmp_path / "pkg")])
    assert code == 1
    assert "time_head is 'classes' but the checkpoint holds no 'time_classes' vocabulary" in capsys.readouterr().err


def test_a_checkpoint_from_before_the_time_head_exports_as_regression(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    checkpoint = load_checkpoint(trained[0])
    for key in ("time_head", "class_coverage", "max_time_classes"):
        del checkpoint["config"][key]
    del checkpoint["time_classes"]
    old = tmp_path / CHECKPOINT
    torch.save(checkpoint, old)
    assert main(["onnx", str(old), "--out", str(tmp_path / "old-lstm")]) == 0
    manifest = tomllib.loads((tmp_path / "old-lstm" / "livegen.toml").read_text())
    assert manifest["representation"]["time_head"] == "regression"
    assert [t["name"] for t in manifest["graphs"]["step"]["outputs"]][1:3] == ["step", "duration"]


def test_unknown_time_head_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["train", "midirnn", "--data", "corpus:folk", "--out", str(tmp_path), "--time-head", "mixture"])
    assert "--time-head: invalid choice: 'mixture'" in capsys.readouterr().err


def test_pitch_embedding_reads_the_rounded_pitch_and_keeps_the_host_input() -> None:
    """``pitch / 128`` is rounded back to a MIDI pitch, so 60/128 and 60.4/128 read the same vector,
    61/128 another; out-of-range values clamp to 0 and 127; step and duration follow unchanged."""
    model = MidiRnn(16, pitch_embedding=4)
    notes = torch.tensor([[[60 / 128, 0.5, 1.0], [60.4 / 128, 0.25, 2.0], [61 / 128, 0.0, 0.5], [2.0, 1, 1]]])
    x = model.lstm_input(notes)
    assert x.shape == (1, 4, 6)
    assert model.lstm.input_size == 6
    assert model.embed is not None
    torch.testing.assert_close(x[0, 0, :4], model.embed.weight[60])
    torch.testing.assert_close(x[0, 1, :4], model.embed.weight[60])
    torch.testing.assert_close(x[0, 2, :4], model.embed.weight[61])
    torch.testing.assert_close(x[0, 3, :4], model.embed.weight[127])
    torch.testing.assert_close(x[0, :, 4:], notes[0, :, 1:])
    assert MidiRnn(16).lstm_input(notes) is notes  # the seed's input: the notes themselves


def test_pitch_embedding_trains_exports_with_parity_and_plays(corpus: Path, tmp_path: Path) -> None:
    from livegen.cli import main as livegen_main

    package = tmp_path / "pkg" / "tiny-embedded"
    code = main(["train", "midirnn", "--data", str(corpus), "--out", str(tmp_path / "run"), *TINY,
                 "--time-head", "classes", "--pitch-embedding", "8", "--package", str(package)])  # fmt: skip
    assert code == 0
    manifest = tomllib.loads((package / "livegen.toml").read_text())
    assert manifest["training"]["pitch_embedding"] == 8
    assert manifest["graphs"]["step"]["inputs"][0] == {"name": "note", "shape": ["batch", 3], "dtype": "float32"}
    assert 0.0 <= manifest["metrics"]["parity_max_abs_diff"] <= PARITY_TOLERANCE
    assert "The pitch is read as a learned vector** (`--pitch-embedding 8`)" in (package / "README.md").read_text()
    checkpoint = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert checkpoint["state_dict"]["embed.weight"].shape == (128, 8)
    out = tmp_path / "played.mid"
    code = livegen_main(["render", "--model", str(package), "--seed-file", str(package / "seed.mid"),
                         "--bars", "2", "--out", str(out), "--rng-seed", "1"])  # fmt: skip
    assert code == 0
    import mido

    from livegen.engine.session import MODEL_TRACK

    track = {t.name: t for t in mido.MidiFile(out).tracks}[MODEL_TRACK]
    assert sum(m.type == "note_on" and m.velocity > 0 for m in track) > 0  # the model answered


@pytest.mark.parametrize("size", ["-1", "257"])
def test_pitch_embedding_out_of_range_is_refused(size: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["train", "midirnn", "--data", "corpus:folk", "--out", str(tmp_path), "--pitch-embedding", size])
    assert code != 0
    assert f"--pitch-embedding {size}: expected a whole number from 0 to 256" in capsys.readouterr().err
