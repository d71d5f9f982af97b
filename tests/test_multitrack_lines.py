"""``multitrack-rnn``'s lines on a model that copies its last frame: voices move, rests end, the accompanist joins.

Context: tests (no training: a hand-written graph stands in for the LSTM). The graph gives every
track's class in the frame it read a logit of log(108) and every other class 0, so a voice keeps its
class (pitch or rest) with probability 0.9 at temperature 1, like the trained model's copy of
the frame before, and changes to any other class alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import tomli_w
from onnx import TensorProto, helper, numpy_helper

from livegen.engine.accompany import AccompanySettings
from livegen.engine.render import render_accompany
from livegen.models.multitrack import MultiTrackGenerator, keep_or_change
from livegen.models.package import sha256_of
from livegen.models.registry import load_generator
from livegen.models.sampling import SamplingParams
from livegen.models.step import StepEvent
from livegen.music.events import Note
from livegen.music.time import PPQN, TempoMap

TRACKS, PITCH_MIN, KEYS, HIDDEN = 4, 60, 12, 8
CENTERS = (70.0, 67.0, 64.0, 61.0)
SHIPPED = SamplingParams(temperature=0.5, top_p=0.95)  # multitrack-rnn's package default


def _copy_graph() -> onnx.ModelProto:
    f = TensorProto.FLOAT
    width = TRACKS * (KEYS + 1)
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["frame", "scale"], ["scaled"]),
            helper.make_node("Reshape", ["scaled", "shape"], ["logits"]),
            helper.make_node("Identity", ["h"], ["h_out"]),
            helper.make_node("Identity", ["c"], ["c_out"]),
        ],
        "copy_frame",
        [
            helper.make_tensor_value_info("frame", f, ["batch", width]),
            helper.make_tensor_value_info("h", f, [1, "batch", HIDDEN]),
            helper.make_tensor_value_info("c", f, [1, "batch", HIDDEN]),
        ],
        [
            helper.make_tensor_value_info("logits", f, ["batch", TRACKS, KEYS + 1]),
            helper.make_tensor_value_info("h_out", f, [1, "batch", HIDDEN]),
            helper.make_tensor_value_info("c_out", f, [1, "batch", HIDDEN]),
        ],
        [
            numpy_helper.from_array(np.array(np.log(108.0), dtype=np.float32), "scale"),  # p = 108 / (108 + 12)
            numpy_helper.from_array(np.array([-1, TRACKS, KEYS + 1], dtype=np.int64), "shape"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_package(tmp_path_factory.mktemp("copy-rnn"))


def _write_package(folder: Path, onset_profile: list[float] | None = None) -> Path:
    onnx.save(_copy_graph(), folder / "model.onnx")
    width = TRACKS * (KEYS + 1)
    state = {"shape": [1, "batch", HIDDEN], "dtype": "float32"}
    manifest: dict[str, Any] = {
        "schema": 1,
        "name": "copy-rnn",
        "family": "multitrack-rnn",
        "kind": "frame",
        "version": "1.0.0",
        "description": "keeps each track's class with probability 0.9",
        "representation": {
            "grid": 120,
            "pitch_min": PITCH_MIN,
            "keys": KEYS,
            "window": 64,
            "max_hold": 16,
            "max_silence": 32,
            **({} if onset_profile is None else {"onset_profile": onset_profile}),
            "tracks": [
                {"name": f"voice{t}", "channel": t, "program": 68 + t, "center": c} for t, c in enumerate(CENTERS)
            ],
        },
        "graphs": {
            "step": {
                "file": "model.onnx",
                "state": [{"input": "h", "output": "h_out"}, {"input": "c", "output": "c_out"}],
                "inputs": [
                    {"name": "frame", "shape": ["batch", width], "dtype": "float32"},
                    {"name": "h", **state},
                    {"name": "c", **state},
                ],
                "outputs": [
                    {"name": "logits", "shape": ["batch", TRACKS, KEYS + 1], "dtype": "float32"},
                    {"name": "h_out", **state},
                    {"name": "c_out", **state},
                ],
            }
        },
        "parameters": {"temperature": {"default": 0.5, "min": 0.05, "max": 4.0}},
        "files": {"model.onnx": sha256_of(folder / "model.onnx")},
    }
    (folder / "livegen.toml").write_text(tomli_w.dumps(manifest))
    return folder


def _generator(package: Path) -> MultiTrackGenerator:
    _, generator = load_generator(str(package))
    assert isinstance(generator, MultiTrackGenerator)
    return generator


def _answer(generator: MultiTrackGenerator, count: int, last_onset: int) -> list[tuple[int, StepEvent]]:
    """(onset in ticks from the first fed note, event) of ``count`` notes sampled and fed back after a
    phrase whose last note started at ``last_onset``."""
    rng, clock, out = np.random.default_rng(0), last_onset, []
    for _ in range(count):
        event = generator.sample(SHIPPED, rng)
        generator.feed(event)
        clock += event.step
        out.append((clock, event))
    return out


def test_a_voice_keeps_its_class_with_the_models_own_probability_at_any_temperature() -> None:
    logits = np.array([0.0, np.log(9.0), 0.0, np.log(4.0)])  # p = [1, 9, 1, 4] / 15
    mask = np.ones(4, dtype=bool)
    rng = np.random.default_rng(0)
    for temperature in (0.2, 1.0):
        params = SamplingParams(temperature=temperature, top_p=1.0)
        draws = np.array([keep_or_change(logits, 1, params, rng, mask) for _ in range(4000)])
        assert np.mean(draws == 1) == pytest.approx(0.6, abs=0.03)
    cold = [keep_or_change(logits, 1, SamplingParams(temperature=0.2, top_p=1.0), rng, mask) for _ in range(2000)]
    moved = [c for c in cold if c != 1]
    assert np.mean(np.array(moved) == 3) > 0.95  # the temperature decides where a voice goes


def test_a_chord_held_in_the_phrase_moves_at_the_shipped_temperature(package: Path) -> None:
    generator = _generator(package)
    for pitch in (70, 67, 64, 61):  # a chord held for a bar, one voice each
        generator.feed(StepEvent(pitch, 0, 16 * 120))
    answer = _answer(generator, 16, 0)
    voice_of = {70: 0, 67: 1, 64: 2, 61: 3}  # the track each performed note was given
    echoes = [e.pitch for onset, e in answer if onset < 16 * 120 and voice_of.get(e.pitch) == e.channel]
    assert len(echoes) < 2  # a voice holding the performed chord does not strike it again a 16th later
    assert answer[-1][0] < 8 * 16 * 120  # 16 notes within 8 bars
    for channel in range(TRACKS):
        pitches = {e.pitch for _, e in answer if e.channel == channel}
        assert len(pitches) >= 2, f"voice {channel} held one pitch: {pitches}"


def test_with_an_onset_profile_the_voices_move_where_the_training_music_had_its_onsets(tmp_path: Path) -> None:
    generator = _generator(_write_package(tmp_path, [0.8, 0.0, 0.2, 0.0]))
    for pitch in (70, 67, 64, 61):
        generator.feed(StepEvent(pitch, 0, 16 * 120, bar_phase=0))
    answer = _answer(generator, 24, 0)
    assert all(onset % (PPQN // 2) == 0 for onset, _ in answer)  # on beats and their halves only
    assert sum(onset % PPQN == 0 for onset, _ in answer) > sum(onset % PPQN != 0 for onset, _ in answer)


def test_after_a_one_line_phrase_the_silent_voices_enter_within_two_bars(package: Path) -> None:
    generator = _generator(package)
    for i, pitch in enumerate((70, 71, 69, 70, 67, 69, 70, 71)):  # a melody in quarters: the top voice only
        generator.feed(StepEvent(pitch, 0 if i == 0 else PPQN, PPQN - 30))
    answer = _answer(generator, 16, 7 * PPQN)
    entered = {e.channel: onset for onset, e in reversed(answer)}
    end_of_phrase = 8 * PPQN
    assert set(entered) == {0, 1, 2, 3}
    assert max(entered.values()) - end_of_phrase < 8 * PPQN
    assert all(e.duration > 120 for _, e in answer[:4])  # a voice that enters is heard, not a forced 16th


def test_the_accompanist_joins_a_one_line_performer_when_its_listening_ends(package: Path) -> None:
    _, generator = load_generator(str(package))
    melody = [Note(70 + (i % 3) - 1, 90, i * PPQN, PPQN - 40) for i in range(24)]
    performance = render_accompany(
        generator,
        melody,
        tempo=TempoMap.constant(120),
        params=SHIPPED,
        rng_seed=3,
        settings=AccompanySettings(listen_beats=8),
        until=24 * PPQN,
        step_ticks=60,
    )
    onsets = sorted(n.start for n in performance.model)
    assert onsets and onsets[0] <= 9 * PPQN  # joins within a beat of the end of listening
    assert len(onsets) >= 16  # and keeps playing beside the performer: 16 beats left
