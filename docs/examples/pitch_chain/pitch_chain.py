"""A worked example of a third-party model family: a chain of pitches, one note at a time.

The graph maps the pitch just heard to the logits of the next one: a first-order Markov
chain, counted from MIDI files and stored as a 128 x 128 table the graph looks up. Every
note lasts ``duration_beats`` and follows the last after ``step_beats``. It is as small
as a family can be and still be a real one: a package, an adapter with a contract, an
entry point. ``docs/model-package.md`` ("Writing a model family") walks through it, and
``tests/test_writing_a_family.py`` installs it the way pip would and plays it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import tomli_w
from onnx import TensorProto, helper, numpy_helper

from livegen.models.contract import ANY, Contract, Number, Tensor
from livegen.models.package import ModelPackage, sha256_of
from livegen.models.sampling import SamplingParams, sample_logits
from livegen.models.step import StepEvent
from livegen.music.events import Note
from livegen.music.midifile import write_midi
from livegen.music.time import PPQN


class PitchChain:
    """The adapter livegen makes for a ``pitch-chain`` package: the step-model methods, and its contract."""

    one_line = True  # the performer's notes join its chain (see StepGenerator.one_line)
    velocities = False  # a chain of pitches: the host gives its notes the performer's dynamics
    programs = None  # one part, on the jam's model channel

    contract = Contract(
        fields=(Number("step_beats", 0.125, 4.0, default=0.5), Number("duration_beats", 0.125, 4.0, default=0.5)),
        tensors=(Tensor("step", "pitch", (ANY,)), Tensor("step", "logits", (ANY, 128))),
    )

    def __init__(self, package: ModelPackage) -> None:
        values = self.contract.values(package)  # checked by livegen already: here they are read
        self.step = round(values["step_beats"] * PPQN)
        self.duration = round(values["duration_beats"] * PPQN)
        self.session = package.sessions["step"]
        self.last: int | None = None
        self._fed = 0

    @property
    def fed(self) -> int:
        return self._fed

    def reset(self) -> None:
        self.last, self._fed = None, 0

    def feed(self, event: StepEvent) -> None:
        self.last, self._fed = event.pitch, self._fed + 1

    def sample(self, params: SamplingParams, rng: np.random.Generator) -> StepEvent:
        (logits,) = self.session.run(["logits"], {"pitch": np.array([self.last or 60], dtype=np.int64)})
        pitch = sample_logits(logits[0], params, rng, params.pitch_mask())
        return StepEvent(pitch, self.step, self.duration)

    def snapshot(self) -> object:
        return (self.last, self._fed)

    def restore(self, snapshot: object) -> None:
        self.last, self._fed = snapshot  # type: ignore[misc]


def transition_logits(phrases: Sequence[Sequence[int]]) -> np.ndarray:
    """Log-probabilities [128, 128] of the next pitch after each pitch, add-one smoothed."""
    counts = np.ones((128, 128), dtype=np.float64)
    for pitches in phrases:
        for a, b in itertools.pairwise(pitches):
            counts[a, b] += 8.0
    return np.log(counts / counts.sum(axis=1, keepdims=True)).astype(np.float32)


def write_package(folder: Path, phrases: Sequence[Sequence[int]], *, step_beats: float = 0.5) -> Path:
    """Train (count) the chain on ``phrases`` of pitches and write it as a livegen package."""
    folder.mkdir(parents=True, exist_ok=True)
    table = numpy_helper.from_array(transition_logits(phrases), "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "pitch"], ["logits"], axis=0)],
        "pitch_chain",
        [helper.make_tensor_value_info("pitch", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 128])],
        [table],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))
    seed = [Note(p, 90, i * PPQN // 2, PPQN // 2) for i, p in enumerate(phrases[0][:8])]
    write_midi(folder / "seed.mid", {"seed": seed})
    (folder / "README.md").write_text("# pitch-chain\nA first-order chain of pitches (a worked example).\n")
    files = {n: sha256_of(folder / n) for n in ("model.onnx", "README.md", "seed.mid")}
    manifest = {
        "schema": 1,
        "name": "pitch-chain",
        "family": "pitch-chain",
        "kind": "step",
        "version": "0.1.0",
        "description": "a first-order chain of pitches",
        "seed_phrase": "seed.mid",
        "representation": {"step_beats": step_beats, "duration_beats": step_beats},
        "graphs": {
            "step": {
                "file": "model.onnx",
                "inputs": [{"name": "pitch", "shape": ["batch"], "dtype": "int64"}],
                "outputs": [{"name": "logits", "shape": ["batch", 128], "dtype": "float32"}],
            }
        },
        "parameters": {"temperature": {"default": 1.0, "min": 0.05, "max": 4.0}},
        "files": files,
    }
    (folder / "livegen.toml").write_text(tomli_w.dumps(manifest))
    return folder
