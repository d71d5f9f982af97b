"""The ``midirnn`` family (seed 000 §4.1, seed 003 §2A) as a ``step`` generator.

Context: control (the planner's thread).

The graph reads the note just played as ``[pitch / pitch_scale, step, duration]``
in beats and predicts the next note's pitch logits, step and duration. Times are
snapped to the manifest's grid; the step is at least one grid step, since this
family plays a single line. Times fed in are clamped to the manifest's
``beats_max``, the clip the model was trained with.
"""

from __future__ import annotations

from typing import cast

import numpy as np

from livegen.models.package import ModelPackage
from livegen.models.sampling import SamplingParams, sample_logits
from livegen.models.step import StepEvent, StreamingGraph
from livegen.music.time import PPQN, quantize


class MidiRnnGenerator:
    """LSTM next-note model over (pitch, step, duration)."""

    def __init__(self, package: ModelPackage) -> None:
        self.package = package
        rep = package.manifest.representation
        self._pitch_scale = float(rep.get("pitch_scale", 128.0))
        self._grid = int(rep.get("grid", 0))
        self.pitch_min = int(rep.get("pitch_min", 0))
        self.pitch_max = int(rep.get("pitch_max", 127))
        # Training clipped times to this many beats; a long pause must not feed the model 60 beats.
        self._beats_max = float(rep.get("beats_max", 1e9))
        self._graph = StreamingGraph(package)
        self._note = np.zeros((1, 3), dtype=np.float32)
        self._outputs: dict[str, np.ndarray] | None = None
        self._fed = 0
        self._mask_key: SamplingParams | None = None
        self._mask = np.ones(128, dtype=bool)

    @property
    def fed(self) -> int:
        return self._fed

    def reset(self) -> None:
        self._graph.reset()
        self._outputs = None
        self._fed = 0

    def feed(self, event: StepEvent) -> None:
        note = np.empty((1, 3), dtype=np.float32)
        note[0, 0] = event.pitch / self._pitch_scale
        note[0, 1] = min(event.step / PPQN, self._beats_max)
        note[0, 2] = min(event.duration / PPQN, self._beats_max)
        self._outputs = self._graph.run({"note": note})
        self._fed += 1

    def _pitch_mask(self, params: SamplingParams) -> np.ndarray:
        if params != self._mask_key:
            mask = params.pitch_mask()
            model_range = np.zeros(128, dtype=bool)
            model_range[self.pitch_min : self.pitch_max + 1] = True
            self._mask = mask & model_range if (mask & model_range).any() else mask
            self._mask_key = params
        return self._mask

    def _ticks(self, beats: float, minimum: int) -> int:
        ticks = round(max(0.0, beats) * PPQN)
        return max(minimum, quantize(ticks, self._grid))

    def sample(self, params: SamplingParams, rng: np.random.Generator) -> StepEvent:
        if self._outputs is None:
            raise RuntimeError("sample() needs at least one fed event")
        out = self._outputs
        pitch = sample_logits(out["pitch_logits"][0], params, rng, self._pitch_mask(params))
        grid = max(self._grid, 1)
        step = self._ticks(float(out["step"][0, 0]), grid)
        duration = self._ticks(float(out["duration"][0, 0]), grid)
        return StepEvent(pitch=pitch, step=step, duration=duration)

    def snapshot(self) -> object:
        return (dict(self._graph.state), self._outputs, self._fed)

    def restore(self, snapshot: object) -> None:
        state, outputs, fed = cast(tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None, int], snapshot)
        self._graph.state = dict(state)
        self._outputs = outputs
        self._fed = fed
