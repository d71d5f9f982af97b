"""``deep-musician``'s keys: focal scores read back as chances, and a model whose chances never change still moves.

Context: tests (no training: hand-written graphs stand in for the GRUs). The trained decoder's
outputs barely change from one frame to the next (a profile of the phrase's pitches); the
stand-in's never do: five keys with fixed chances, the rest silent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import tomli_w
from onnx import TensorProto, helper, numpy_helper

from livegen.models.deepmusician import focal_probability
from livegen.models.package import sha256_of
from livegen.models.registry import load_generator
from livegen.models.sampling import SamplingParams
from livegen.models.step import StepEvent
from livegen.music.time import PPQN

PITCH_MIN, KEYS, HIDDEN = 24, 80, 4
#: The stand-in's chance of each key: C E G held at 0.6 with D, and F at 0.9; the rest never sound.
CHANCES = {60: 0.6, 62: 0.6, 64: 0.6, 67: 0.6, 65: 0.9}


def _score(p: float) -> float:
    return float(np.log(p / (1 - p)))


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75])
@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0])
def test_a_focal_score_is_read_back_as_the_chance_whose_loss_it_minimises(alpha: float, gamma: float) -> None:
    scores = np.linspace(0.001, 0.999, 9999)
    for chance in (0.02, 0.1, 0.3, 0.5, 0.8):
        loss = -chance * alpha * (1 - scores) ** gamma * np.log(scores)
        loss -= (1 - chance) * (1 - alpha) * scores**gamma * np.log(1 - scores)
        best = scores[int(np.argmin(loss))]
        assert focal_probability(np.array([best]), alpha, gamma)[0] == pytest.approx(chance, abs=2e-3)


def _graphs() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    f = TensorProto.FLOAT
    logits = np.full(KEYS, -12.0, dtype=np.float32)
    for pitch, chance in CHANCES.items():
        logits[pitch - PITCH_MIN] = _score(chance)

    def model(nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: list[Any]) -> onnx.ModelProto:
        m = helper.make_model(helper.make_graph(nodes, "stand_in", inputs, outputs, inits))
        m.opset_import[0].version = 17
        m.ir_version = 8
        return m

    state = [1, "batch", HIDDEN]
    encoder = model(
        [
            helper.make_node("ReduceMean", ["roll"], ["mean"], axes=[1], keepdims=0),
            helper.make_node("MatMul", ["mean", "zero"], ["flat"]),
            helper.make_node("Unsqueeze", ["flat", "axis0"], ["h"]),
        ],
        [helper.make_tensor_value_info("roll", f, ["batch", "frames", KEYS])],
        [helper.make_tensor_value_info("h", f, state)],
        [
            numpy_helper.from_array(np.zeros((KEYS, HIDDEN), np.float32), "zero"),
            numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        ],
    )
    decoder = model(
        [
            helper.make_node("MatMul", ["frame", "zero"], ["none"]),
            helper.make_node("Add", ["none", "bias"], ["logits"]),
            helper.make_node("Identity", ["h"], ["h_out"]),
        ],
        [helper.make_tensor_value_info("frame", f, ["batch", KEYS]), helper.make_tensor_value_info("h", f, state)],
        [helper.make_tensor_value_info("logits", f, ["batch", KEYS]), helper.make_tensor_value_info("h_out", f, state)],
        [
            numpy_helper.from_array(np.zeros((KEYS, KEYS), np.float32), "zero"),
            numpy_helper.from_array(logits, "bias"),
        ],
    )
    return encoder, decoder


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("still-dm")
    encoder, decoder = _graphs()
    onnx.save(encoder, folder / "encoder.onnx")
    onnx.save(decoder, folder / "decoder.onnx")
    state = {"shape": [1, "batch", HIDDEN], "dtype": "float32"}
    manifest: dict[str, Any] = {
        "schema": 1,
        "name": "still-dm",
        "family": "deep-musician",
        "kind": "frame",
        "version": "1.0.0",
        "description": "five keys with chances that never change",
        "representation": {
            "grid": 120,
            "pitch_min": PITCH_MIN,
            "keys": KEYS,
            "window": 16,
            "decode_frames": 32,
            "polyphony": 4,
            "max_hold": 16,
            "max_silence": 32,
            "focal_alpha": 0.5,  # with gamma 0: plain cross-entropy, scores are chances
            "focal_gamma": 0.0,
            "onset_profile": [1.0, 0.0, 0.0, 0.0],  # onsets on the beat only
            "redraw": 0.5,
        },
        "graphs": {
            "encoder": {
                "file": "encoder.onnx",
                "inputs": [{"name": "roll", "shape": ["batch", "frames", KEYS], "dtype": "float32"}],
                "outputs": [{"name": "h", **state}],
            },
            "decoder": {
                "file": "decoder.onnx",
                "state": [{"input": "h", "output": "h_out"}],
                "inputs": [{"name": "frame", "shape": ["batch", KEYS], "dtype": "float32"}, {"name": "h", **state}],
                "outputs": [
                    {"name": "logits", "shape": ["batch", KEYS], "dtype": "float32"},
                    {"name": "h_out", **state},
                ],
            },
        },
        "parameters": {"temperature": {"default": 1.0, "min": 0.05, "max": 4.0}},
        "files": {name: sha256_of(folder / name) for name in ("encoder.onnx", "decoder.onnx")},
    }
    (folder / "livegen.toml").write_text(tomli_w.dumps(manifest))
    return folder


def test_a_model_whose_chances_never_change_plays_chords_that_move_on_the_beat(package: Path) -> None:
    _, generator = load_generator(str(package))
    for pitch in (60, 64, 67):  # a bar of C major, held
        generator.feed(StepEvent(pitch, 0, 4 * PPQN - 30, bar_phase=0))
    rng, clock, answer = np.random.default_rng(0), 0, []
    while clock < 5 * 4 * PPQN:
        event = generator.sample(SamplingParams(temperature=1.0, top_p=1.0), rng)
        generator.feed(event)
        clock += event.step
        answer.append((clock, event.pitch))
    bar = 4 * PPQN
    bars = [frozenset((t % bar, p) for t, p in answer if t // bar == b) for b in range(1, 5)]
    assert len(set(bars)) == 4  # no bar struck again as it was: the chords move
    assert all(t % PPQN == 0 for t, _ in answer)  # on the beat, as the onset profile says
    assert 65 in {p for _, p in answer}  # the likeliest key is not kept out by four held ones
    assert {p for _, p in answer} <= set(CHANCES)
