"""``multitrack-cnn``: the data conversion, the adapter's manifest checks and block playing, and a tiny
model trained, exported and played end to end.

Context: setup (tests of the training-only ``export`` package; needs the ``train`` extra). The adapter
tests use a hand-written graph, ``logits = 20 * roll``: a model that predicts the next block to be the
block before, so what the host plays can be computed by hand. The end-to-end tests train one epoch of a
tiny CNN on four-voice pieces the tests write, export it with the parity check, and play it in
call-and-response, accompaniment and autonomous play.
"""

from __future__ import annotations

import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import tomli_w
from onnx import TensorProto, helper, numpy_helper

torch = pytest.importorskip("torch", reason="training tests need the train extra: pip install -e '.[train]'")

from export.errors import ExportError  # noqa: E402
from export.multitrack_cnn.model import MultiTrackCnn, MultiTrackCnnConfig  # noqa: E402
from export.multitrack_cnn.train import make_blocks, piece_roll, transpose_classes  # noqa: E402
from livegen.errors import PackageError  # noqa: E402
from livegen.models.frames import ANY_TRACK, RollNote  # noqa: E402
from livegen.models.multitrackcnn import (  # noqa: E402
    MultiTrackCnnGenerator,
    context_roll,
    draw_lines,
    lines_to_notes,
)
from livegen.models.package import load_package, sha256_of  # noqa: E402
from livegen.models.registry import load_generator  # noqa: E402
from livegen.models.sampling import SamplingParams  # noqa: E402
from livegen.models.step import StepEvent  # noqa: E402
from livegen.music.corpus import MultiTune, Tune  # noqa: E402
from livegen.music.midifile import read_midi  # noqa: E402
from livegen.music.time import PPQN  # noqa: E402

pytestmark = pytest.mark.slow

CENTERS = (70.8, 65.2, 59.5, 51.1)
TRACKS = [
    {"name": name, "channel": k, "program": 68 + k, "center": center}
    for k, (name, center) in enumerate(zip(("soprano", "alto", "tenor", "bass"), CENTERS, strict=True))
]


# ---- data conversion ---------------------------------------------------------------------------


def _tune(pitch: list[int], onset: list[float], duration: list[float]) -> Tune:
    return Tune("t", np.array(pitch, dtype=np.int16), np.array(onset, np.float32), np.array(duration, np.float32))


def test_a_piece_becomes_one_one_hot_line_per_track_with_a_rest_class() -> None:
    # two tracks; beats are 4 frames; the piece starts at its first onset (beat 1)
    piece = MultiTune("p", (_tune([60, 62], [1.0, 2.0], [1.0, 0.5]), _tune([48], [1.5], [1.0])))
    config = MultiTrackCnnConfig(tracks=2, pitch_min=48, keys=15, window=2)
    roll = piece_roll(piece, config)
    assert roll.shape == (2, 6, 16)  # tracks, frames (to the last note's end, beat 3 = frame 6), rest + 15 keys
    assert (roll.sum(-1) == 1).all()  # one class per track and frame
    assert roll[0].argmax(-1).tolist() == [13, 13, 13, 13, 15, 15]  # 60 = 1 + 12, then 62 for half a beat
    assert roll[1].argmax(-1).tolist() == [0, 0, 1, 1, 1, 1]  # rest, then 48 from beat 1.5 for a beat


def test_blocks_pair_a_context_with_the_block_after_it() -> None:
    piece = MultiTune("p", (_tune([60, 62, 64], [0.0, 0.5, 1.0], [0.5, 0.5, 0.5]),))
    config = MultiTrackCnnConfig(tracks=1, pitch_min=60, keys=5, window=2, stride=1)
    blocks = make_blocks([piece], config)
    # classes per frame: 60 60 62 62 64 64 -> 1 1 3 3 5 5; windows of 2 + 2 frames start at 0, 1, 2
    assert len(blocks) == 3
    assert blocks.inputs.argmax(-1)[:, 0].tolist() == [[1, 1], [1, 3], [3, 3]]
    assert blocks.targets[:, 0].tolist() == [[3, 3], [3, 5], [5, 5]]
    assert len(make_blocks([piece], MultiTrackCnnConfig(tracks=1, pitch_min=60, keys=5, window=2, stride=2))) == 2


def test_transposing_moves_pitches_and_rests_those_moved_out_of_range() -> None:
    classes = torch.tensor([0, 1, 5, 47])  # rest, the lowest key, key 4, the highest of 47
    assert transpose_classes(classes, 2, 47).tolist() == [0, 3, 7, 0]
    assert transpose_classes(classes, -1, 47).tolist() == [0, 0, 4, 46]
    assert transpose_classes(classes, 0, 47).tolist() == [0, 1, 5, 47]


def test_the_context_gives_performed_notes_the_nearest_free_track() -> None:
    previous = [
        RollNote(-4, 4, 72, ANY_TRACK),  # nearest the soprano
        RollNote(-4, 4, 50, ANY_TRACK),  # nearest the bass
        RollNote(-2, 2, 60, 2),  # the model's tenor
    ]
    roll = context_roll(previous, CENTERS, 4, 48, 30)
    assert roll.shape == (4, 4, 31)
    classes = roll.argmax(-1)
    assert classes.tolist() == [[25, 25, 25, 25], [0, 0, 0, 0], [0, 0, 13, 13], [3, 3, 3, 3]]


def test_every_frame_of_a_line_is_distributed_as_the_model_says() -> None:
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.1, 0.4], [0.2, 0.2, 0.6], [0.7, 0.2, 0.1]])
    logits = np.log(probs)[None]
    mask = np.ones(3, dtype=bool)
    rng = np.random.default_rng(1)
    params = SamplingParams(top_p=1.0)
    for redraw in (0.0, 0.5):
        lines = np.stack([draw_lines(logits, [2], params, rng, mask, redraw=redraw)[0] for _ in range(4000)])
        shares = np.stack([np.bincount(lines[:, f], minlength=3) / 4000 for f in range(4)])
        assert shares == pytest.approx(probs, abs=0.03)
    cold = SamplingParams(temperature=0.5, top_p=1.0)
    lines = np.stack([draw_lines(logits, [2], cold, rng, mask)[0] for _ in range(4000)])
    shares = np.stack([np.bincount(lines[:, f], minlength=3) / 4000 for f in range(4)])
    assert shares == pytest.approx(probs**2 / (probs**2).sum(-1, keepdims=True), abs=0.03)  # at the temperature


def test_a_line_moves_only_as_far_as_the_model_moved_and_a_held_chord_is_no_fixed_point() -> None:
    rng = np.random.default_rng(0)
    params = SamplingParams(top_p=1.0)
    mask = np.ones(4, dtype=bool)
    steady = np.log(np.tile([0.05, 0.5, 0.25, 0.2], (1, 16, 1)))  # the held class 1 at 0.5 in every frame
    lines = np.stack([draw_lines(steady, [1], params, rng, mask)[0] for _ in range(2000)])
    assert np.mean(lines[:, 0] == 1) == pytest.approx(0.5, abs=0.04)  # the bar before is kept as often as p says
    assert (lines[:, 1:] == lines[:, :1]).all()  # and the line then holds: the model did not move
    on_the_beat = [1.0, 0.0, 0.0, 0.0] * 4
    lines = np.stack([draw_lines(steady, [1], params, rng, mask, metre=on_the_beat, redraw=0.5)[0] for _ in range(500)])
    moves = lines[:, 1:] != lines[:, :-1]
    assert moves[:, 3::4].any() and not np.delete(moves, np.s_[3::4], axis=1).any()  # moves land on beats


def test_the_live_mask_rules_out_a_class_even_when_it_is_held_or_likeliest() -> None:
    logits = np.zeros((2, 3, 4))
    logits[0, :, 2] = 1.0
    logits[1, :, 3] = 8.0
    masked = np.array([True, True, False, False])
    lines = draw_lines(logits, [2, 3], SamplingParams(), np.random.default_rng(0), masked, redraw=0.3)
    assert set(lines.ravel()) <= {0, 1}


def test_lines_become_notes_per_track() -> None:
    classes = np.array([[1, 1, 0, 3], [0, 2, 2, 2]])
    notes = lines_to_notes(classes, 60, 5)
    assert notes == [RollNote(0, 2, 60, 0), RollNote(1, 3, 61, 1), RollNote(3, 1, 62, 0)]


@pytest.mark.parametrize("window", [16, 20])
def test_the_cnn_is_four_convolutions_and_the_transposed_path_back_without_dense_layers(window: int) -> None:
    config = MultiTrackCnnConfig(window=window, hidden=8)
    model = MultiTrackCnn(config)
    kinds = [type(m).__name__ for m in model.modules() if not isinstance(m, MultiTrackCnn | torch.nn.ModuleList)]
    assert kinds == ["Conv2d"] * 4 + ["ConvTranspose2d"] * 4
    roll = torch.zeros(3, 4, window, 48)
    assert model(roll).shape == (3, 4, window, 48)
    # all tracks are read together: a note in one track changes the prediction for every track
    changed = roll.clone()
    changed[0, 3, -1, 5] = 1.0
    diff = (model(changed) - model(roll))[0].abs().amax(dim=(1, 2))
    assert (diff > 0).all()


def test_bad_sizes_are_refused_with_the_option_named() -> None:
    with pytest.raises(ExportError, match="--window 1"):
        MultiTrackCnnConfig(window=1)
    with pytest.raises(ExportError, match="--hidden 2"):
        MultiTrackCnnConfig(hidden=2)


# ---- the adapter, on a model that repeats the block before --------------------------------------


def _copy_graph(tracks: int, frames: int, width: int) -> onnx.ModelProto:
    f = TensorProto.FLOAT
    shape = ["batch", tracks, frames, width]
    graph = helper.make_graph(
        [helper.make_node("Mul", ["roll", "scale"], ["logits"])],
        "copy_block",
        [helper.make_tensor_value_info("roll", f, shape)],
        [helper.make_tensor_value_info("logits", f, shape)],
        [numpy_helper.from_array(np.array(20.0, dtype=np.float32), "scale")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _write_copy_package(folder: Path, edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    folder.mkdir(parents=True)
    keys, frames = 47, 16
    onnx.save(_copy_graph(4, frames, keys + 1), folder / "model.onnx")
    shape = ["batch", 4, frames, keys + 1]
    manifest: dict[str, Any] = {
        "schema": 1,
        "name": "copy-cnn",
        "family": "multitrack-cnn",
        "kind": "block",
        "version": "1.0.0",
        "description": "repeats the block before",
        "representation": {
            "grid": 120,
            "pitch_min": 36,
            "keys": keys,
            "context_frames": frames,
            "block_frames": frames,
            "max_hold": 16,
            "tracks": [dict(t) for t in TRACKS],
        },
        "graphs": {
            "block": {
                "file": "model.onnx",
                "inputs": [{"name": "roll", "shape": shape, "dtype": "float32"}],
                "outputs": [{"name": "logits", "shape": shape, "dtype": "float32"}],
            }
        },
        "parameters": {"temperature": {"default": 1.0, "min": 0.05, "max": 4.0}},
        "files": {"model.onnx": sha256_of(folder / "model.onnx")},
    }
    if edit is not None:
        edit(manifest)
    (folder / "livegen.toml").write_text(tomli_w.dumps(manifest))
    return folder


def _answer(generator: MultiTrackCnnGenerator, count: int) -> list[StepEvent]:
    params, rng, out = SamplingParams(), np.random.default_rng(0), []
    for _ in range(count):
        event = generator.sample(params, rng)
        out.append(event)
        generator.feed(event)
    return out


def test_the_next_bar_repeats_a_copying_models_context_on_the_tracks_the_performer_was_given(tmp_path: Path) -> None:
    generator = MultiTrackCnnGenerator(load_package(_write_copy_package(tmp_path / "copy")))
    assert generator.conditioned and generator.block_frames == 16 and generator.context_frames == 16
    assert generator.programs == {0: 68, 1: 69, 2: 70, 3: 71}
    for i, pitch in enumerate((72, 74, 76, 77)):  # a bar of quarters, high: the soprano's
        generator.feed(StepEvent(pitch, 0 if i == 0 else PPQN, PPQN, bar_phase=i * PPQN))
    answer = _answer(generator, 6)
    # the rest of the performer's bar is its block, made from the silence before it; then the bar repeats
    assert [(e.pitch, e.step, e.duration, e.channel) for e in answer] == [
        (72, PPQN, PPQN, 0),
        (74, PPQN, PPQN, 0),
        (76, PPQN, PPQN, 0),
        (77, PPQN, PPQN, 0),
        (72, PPQN, PPQN, 0),
        (74, PPQN, PPQN, 0),
    ]


def test_a_performed_chord_is_spread_over_the_tracks_and_held_a_bar(tmp_path: Path) -> None:
    generator = MultiTrackCnnGenerator(load_package(_write_copy_package(tmp_path / "copy")))
    for i, pitch in enumerate((72, 64, 57, 48)):
        generator.feed(StepEvent(pitch, 0, 16 * 120, bar_phase=0 if i == 0 else None))
    answer = _answer(generator, 4)
    assert sorted((e.pitch, e.channel, e.duration) for e in answer) == [
        (48, 3, 1920),
        (57, 2, 1920),
        (64, 1, 1920),
        (72, 0, 1920),
    ]
    assert answer[0].step == 16 * 120 and all(e.step == 0 for e in answer[1:])


def test_the_live_range_and_scale_limit_what_is_drawn(tmp_path: Path) -> None:
    generator = MultiTrackCnnGenerator(load_package(_write_copy_package(tmp_path / "copy")))
    generator.feed(StepEvent(72, 0, 16 * 120, bar_phase=0))
    generator.feed(StepEvent(66, 0, 16 * 120))  # F#: outside C major
    params = SamplingParams(pitch_min=40, pitch_max=70, scale="major")
    rng = np.random.default_rng(0)
    answer = []
    for _ in range(12):
        answer.append(generator.sample(params, rng))
        generator.feed(answer[-1])
    assert all(40 <= e.pitch <= 70 and e.pitch % 12 in (0, 2, 4, 5, 7, 9, 11) for e in answer)
    assert {e.channel for e in answer} >= {0, 1}  # the soprano's 72 and the alto's 66 were copied elsewhere


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def edit(manifest: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        table = manifest
        for key in parents:
            table = table[key]
        if value is None:
            del table[last]
        else:
            table[last] = value

    return edit


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("representation.keys", 48, r"field 'representation': 4 tracks, context_frames = 16 and 48 keys need graph "
         r"tensor 'roll' of shape \[batch, 4, 16, 49\]"),
        ("representation.block_frames", 20, r"block_frames = 20 .* tensor 'logits' of shape \[batch, 4, 20, 48\]"),
        ("representation.context_frames", 0, r"'representation.context_frames': expected an integer of at least 1"),
        ("representation.pitch_min", 100, r"field 'representation.keys': pitch_min \+ keys must be at most 128"),
        ("representation.redraw", 1.5, r"field 'representation.redraw': expected a number from 0 to 1"),
        ("representation.onset_profile", [1, 0], r"field 'representation.onset_profile': expected 4 numbers"),
        ("representation.tracks", [], r"field 'representation.tracks': expected a list of \{name, channel"),
        ("representation.tracks", [*TRACKS[:3], {**TRACKS[3], "channel": 0}], "expected one channel per track"),
        ("representation.tracks", [*TRACKS[:3], {**TRACKS[3], "program": 128}], r"'representation.tracks\[3\]'"),
        ("representation.grid", None, r"field 'representation.grid': expected an integer"),
    ],
)  # fmt: skip
def test_manifest_mistakes_name_the_field_and_what_is_accepted(
    tmp_path: Path, path: str, value: object, message: str
) -> None:
    package = load_package(_write_copy_package(tmp_path / "bad", _set(path, value)), check_family=False)
    with pytest.raises(PackageError, match=message) as err:
        MultiTrackCnnGenerator(package)
    assert "livegen.toml" in str(err.value)


# ---- end to end: tiny training, export, live playback -------------------------------------------


@pytest.fixture(scope="module")
def package(tiny_packages: Callable[[str], Path]) -> Path:
    return tiny_packages("multitrack-cnn")


def test_the_package_is_a_block_model_with_a_channel_and_program_per_track(package: Path) -> None:
    manifest = tomllib.loads((package / "livegen.toml").read_text())
    assert manifest["kind"] == "block" and manifest["family"] == "multitrack-cnn"
    representation = manifest["representation"]
    assert representation["context_frames"] == representation["block_frames"] == 16
    tracks = representation["tracks"]
    assert [t["channel"] for t in tracks] == [0, 1, 2, 3]
    assert [t["center"] for t in tracks] == sorted((t["center"] for t in tracks), reverse=True)
    assert 0 <= manifest["metrics"]["parity_max_abs_diff"] <= 1e-4
    assert manifest["metrics"]["val_density_notes_per_beat"] > 0
    assert set(manifest["graphs"]) == {"block"}
    _, generator = load_generator(str(package))
    assert isinstance(generator, MultiTrackCnnGenerator)
    assert generator.programs == {t["channel"]: t["program"] for t in tracks}
    assert len(read_midi(package / "seed.mid").notes) >= 4


def test_a_tampered_package_is_refused(package: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(package, tmp_path / "copy")
    text = (copy / "livegen.toml").read_text().replace("context_frames = 16", "context_frames = 8")
    (copy / "livegen.toml").write_text(text)
    with pytest.raises(PackageError, match="context_frames = 8"):
        load_generator(str(copy))
