"""The ``midirnn`` family (seed 000 §4.1, seed 003 §2A) as a ``step`` generator.

Context: control (the planner's thread); the manifest checks in the constructor run at setup.
:func:`tune_features` (setup) is how training reads a tune, shared by the exporter and the
held-out likelihood.

The graph reads the note just played as ``[pitch / pitch_scale, step, duration]``
in beats and predicts the next note's pitch logits and its step and duration, in
one of two ways (the manifest's ``representation.time_head``):

- ``regression`` (the seed's design, and the default when the field is absent):
  outputs ``step`` and ``duration`` in beats, snapped to the manifest's grid.
- ``classes``: outputs ``step_logits`` and ``duration_logits`` over the values (in
  beats) listed in ``representation.step_classes`` and ``duration_classes``. A class
  is drawn like the pitch (the same top-p) and played as its value rounded to whole
  ticks, not snapped to the grid, so triplet classes stay triplets. The temperature
  is the pitch's unless the manifest declares ``parameters.time_temperature``: then
  the time classes are drawn at its default whatever the performer sets for the
  pitch (a rhythm distribution is calibrated at 1; see ``docs/model-package.md``).

Either way the step is at least one grid step, since this family plays a single
line. Times fed in are clamped to the manifest's ``beats_max``, the clip the model
was trained with.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, cast

import numpy as np

from livegen.errors import PackageError
from livegen.models.contract import ANY, Contract, Number, Tensor, Whole
from livegen.models.manifest import MANIFEST
from livegen.models.package import ModelPackage
from livegen.models.sampling import SamplingParams, sample_logits
from livegen.models.step import StepEvent, StreamingGraph
from livegen.music.time import PPQN, quantize

if TYPE_CHECKING:
    from livegen.music.corpus import Tune

TIME_HEADS = ("regression", "classes")
#: The longest step or duration the regression head may propose, beats.
MAX_BEATS = 64


def tune_features(tune: Tune, beats_max: float, pitch_scale: float = 128.0) -> np.ndarray:
    """The graph's input rows for ``tune`` as training reads it: ``[pitch / pitch_scale, step, duration]``
    float32 [n, 3], in beats clipped to ``beats_max``; ``step`` is the time since the previous onset (0 first)."""
    onset = tune.onset.astype(np.float64)
    step = np.diff(onset, prepend=onset[:1])
    features = np.empty((len(tune), 3), dtype=np.float32)
    features[:, 0] = tune.pitch.astype(np.float32) / pitch_scale
    features[:, 1] = np.clip(step, 0.0, beats_max)
    features[:, 2] = np.clip(tune.duration.astype(np.float64), 0.0, beats_max)
    return features


class MidiRnnGenerator:
    """LSTM next-note model over (pitch, step, duration).

    Its time head (regression outputs, or classes whose values the representation lists, one
    per logit) is checked here: which outputs the graph has decides which fields must exist.
    """

    one_line = True  # the performer's notes join its line
    velocities = False  # it predicts pitch, step and duration
    programs = None  # one part, on the jam's model channel

    contract = Contract(
        fields=(
            Number("pitch_scale", 1.0, 1e6, default=128.0),
            Whole("grid", minimum=0, maximum=PPQN * 4, default=0),
            Whole("pitch_min", minimum=0, maximum=127, default=0),
            Whole("pitch_max", minimum=0, maximum=127, default=127),
            Number("beats_max", 0.0, 1e9, default=1e9),
        ),
        tensors=(Tensor("step", "note", (ANY, 3)), Tensor("step", "pitch_logits", (ANY, 128))),
    )

    def __init__(self, package: ModelPackage) -> None:
        self.package = package
        rep = package.manifest.representation
        values = self.contract.values(package)
        self._pitch_scale = values["pitch_scale"]
        self._grid = values["grid"]
        self.pitch_min, self.pitch_max = values["pitch_min"], values["pitch_max"]
        # Training clipped times to this many beats; a long pause must not feed the model 60 beats.
        self._beats_max = values["beats_max"]
        self.time_head = str(rep.get("time_head", "regression"))
        if self.time_head not in TIME_HEADS:
            raise self._field_error("time_head", f"one of {', '.join(TIME_HEADS)}", rep.get("time_head"))
        minimum_step = max(self._grid, 1)
        # Each class's value in ticks, ready for the draw; empty with the regression head.
        self._step_ticks = self._class_ticks("step_classes", "step_logits", minimum_step)
        self._duration_ticks = self._class_ticks("duration_classes", "duration_logits", 1)
        self._step_any = np.ones(len(self._step_ticks), dtype=bool)
        self._duration_any = np.ones(len(self._duration_ticks), dtype=bool)
        spec = package.manifest.parameters.get("time_temperature")
        self._time_temperature = None if spec is None else spec.default
        self._time_key: SamplingParams | None = None
        self._time_params = SamplingParams()
        self._graph = StreamingGraph(package)
        self._outputs: dict[str, np.ndarray] | None = None
        self._fed = 0
        self._mask_key: SamplingParams | None = None
        self._mask = np.ones(128, dtype=bool)

    def _field_error(self, key: str, expected: str, got: object) -> PackageError:
        path = self.package.folder / MANIFEST
        return PackageError(f"{path}: field 'representation.{key}': expected {expected}, got {got!r}")

    def _class_ticks(self, key: str, output: str, minimum: int) -> np.ndarray:
        """The values of ``representation.<key>`` in ticks (at least ``minimum``), checked against the graph.

        Empty for the regression head, whose graph must have the ``step`` and ``duration`` outputs instead.
        """
        values = self.package.manifest.representation.get(key)
        sizes = {t.name: t.shape[-1] for t in self.package.manifest.graphs["step"].outputs if len(t.shape) == 2}
        if self.time_head == "regression":
            regression_output = output.removesuffix("_logits")
            if regression_output not in sizes:
                expected = f"'classes' (the graph has no {regression_output!r} output but {sorted(sizes)})"
                raise self._field_error("time_head", expected, self.time_head)
            if values is not None:
                raise self._field_error(key, "no class list with time_head 'regression'", values)
            return np.zeros(0, dtype=np.int64)
        size = sizes.get(output)
        if not isinstance(size, int):
            expected = f"'regression' (the graph has no [batch, K] output {output!r})"
            raise self._field_error("time_head", expected, self.time_head)
        expected = f"a list of {size} durations in beats above 0 (the size of graph output {output!r})"
        if not isinstance(values, list) or len(values) != size:
            raise self._field_error(key, expected, values)
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
                raise self._field_error(key, expected, values)
        return np.array([max(minimum, round(float(v) * PPQN)) for v in values], dtype=np.int64)

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

    def _time_sampling(self, params: SamplingParams) -> SamplingParams:
        """``params`` with the manifest's time temperature, if it declares one (cached per ``params``)."""
        if self._time_temperature is None:
            return params
        if params != self._time_key:
            self._time_params = replace(params, temperature=self._time_temperature)
            self._time_key = params
        return self._time_params

    def _ticks(self, beats: float, minimum: int) -> int:
        ticks = round(min(max(0.0, beats), MAX_BEATS) * PPQN)
        return max(minimum, quantize(ticks, self._grid))

    def sample(self, params: SamplingParams, rng: np.random.Generator) -> StepEvent:
        if self._outputs is None:
            raise RuntimeError("sample() needs at least one fed event")
        out = self._outputs
        pitch = sample_logits(out["pitch_logits"][0], params, rng, self._pitch_mask(params))
        if self.time_head == "classes":
            time = self._time_sampling(params)
            step_class = sample_logits(out["step_logits"][0], time, rng, self._step_any)
            duration_class = sample_logits(out["duration_logits"][0], time, rng, self._duration_any)
            step = int(self._step_ticks[step_class])
            return StepEvent(pitch=pitch, step=step, duration=int(self._duration_ticks[duration_class]))
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
