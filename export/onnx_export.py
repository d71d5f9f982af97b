"""ONNX export of the ``midirnn`` streaming step graph, and its parity check against PyTorch.

Context: setup (export only; imports torch, never imported by the host).

The host never re-runs a window: it feeds one note at a time and carries the
LSTM state. So the exported graph is the *step* graph (``note``, ``h``, ``c`` in;
``pitch_logits``, ``step``, ``duration``, ``h_out``, ``c_out`` out, or with the
categorical time head ``step_logits`` and ``duration_logits`` in place of ``step``
and ``duration``) with a dynamic batch dimension, and the parity check compares
what the host will do (run that graph with onnxruntime step by step, feeding the
state back) with what training did (PyTorch running the whole sequence through
``nn.LSTM`` at once, in float64, so that the reference is the trained weights'
exact value rather than one more float32 rounding), on held-out tunes, one at a
time and as a batch. The neutone habit: convert, reload, check the host-facing
interface survived, compare outputs with the original.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnxruntime as ort
import torch

from export import common
from export.common import OPSET as OPSET
from export.common import PARITY_TOLERANCE as PARITY_TOLERANCE
from export.common import check_interface, export_graph
from export.common import session as open_session
from export.errors import ExportError
from export.midirnn import MidiRnn, MidiRnnStep

log = logging.getLogger(__name__)

INPUTS = ("note", "h", "c")


def export_step_graph(model: MidiRnn, path: Path, *, opset: int = OPSET) -> None:
    """Write the one-note step graph of ``model`` to ``path`` (weights inside the file)."""
    step = MidiRnnStep(model).eval()
    hidden = model.hidden
    example = (torch.zeros(2, 3), torch.zeros(1, 2, hidden), torch.zeros(1, 2, hidden))
    batch = torch.export.Dim("batch")
    export_graph(
        step,
        example,
        path,
        inputs=INPUTS,
        outputs=model.output_names,
        dynamic={"note": {0: batch}, "h": {1: batch}, "c": {1: batch}},
        opset=opset,
    )


def graph_shapes(model: MidiRnn) -> dict[str, list[int | str]]:
    """Every input and output of ``model``'s step graph and its shape, as the manifest declares them."""
    pitch, step, duration, h_out, c_out = model.output_names
    return {
        "note": ["batch", 3],
        "h": [1, "batch", model.hidden],
        "c": [1, "batch", model.hidden],
        pitch: ["batch", model.pitch.out_features],
        step: ["batch", model.step.out_features],
        duration: ["batch", model.duration.out_features],
        h_out: [1, "batch", model.hidden],
        c_out: [1, "batch", model.hidden],
    }


def _check_interface(session: ort.InferenceSession, path: Path, model: MidiRnn) -> None:
    """The reloaded graph has exactly the tensors the manifest will declare."""
    check_interface(session, path, {name: (shape, "float32") for name, shape in graph_shapes(model).items()})


class Parity(NamedTuple):
    """Largest absolute differences from PyTorch evaluating the same weights in float64."""

    #: The exported graph, run note by note in onnxruntime (the check).
    max_abs_diff: float
    #: PyTorch's own float32 run of the whole sequence (for scale: what float32 alone costs).
    torch_float32_max_abs_diff: float


def _deviation(name: str, value: np.ndarray, reference: np.ndarray) -> float:
    """Largest |value - reference|; for the final cell state ``c_n``, relative to its size where that exceeds 1.

    The cell state is not bounded like h: some units count notes (|c| > 100 after 120
    notes), where one float32 ulp is already 1e-5. Its effect on h and on the heads is
    compared absolutely at every step.
    """
    diff = np.abs(value - reference)
    if name == "c_n":
        diff = diff / np.maximum(1.0, np.abs(reference))
    return float(diff.max())


def _parity_run(
    model: MidiRnn, exact: MidiRnn, session: ort.InferenceSession, notes: np.ndarray
) -> tuple[float, float]:
    """Largest differences (onnxruntime, torch float32) from float64 over every output and step of ``notes``."""
    batch, length, _ = notes.shape
    names = model.output_names
    runs = []
    with torch.no_grad():
        for net, x in ((model, torch.from_numpy(notes)), (exact, torch.from_numpy(notes).double())):
            hs, (h_n, c_n) = net.lstm(net.lstm_input(x))
            heads = dict(zip(names[:3], (t.numpy() for t in net(x)[:3]), strict=True))
            runs.append({**heads, "h_out": hs.numpy(), "h_n": h_n.numpy(), "c_n": c_n.numpy()})
    float32, reference = runs
    torch_worst = max(_deviation(name, float32[name], reference[name]) for name in reference)
    h = np.zeros((1, batch, model.hidden), dtype=np.float32)
    c = np.zeros_like(h)
    worst = 0.0
    for t in range(length):
        out = dict(zip(names, session.run(list(names), {"note": notes[:, t], "h": h, "c": c}), strict=True))
        for name in names[:3]:
            worst = max(worst, _deviation(name, out[name], reference[name][:, t]))
        worst = max(worst, _deviation("h_out", out["h_out"][0], reference["h_out"][:, t]))
        h, c = out["h_out"], out["c_out"]
    worst = max(worst, _deviation("h_n", h, reference["h_n"]), _deviation("c_n", c, reference["c_n"]))
    return (worst if np.isfinite(worst) else float("inf")), torch_worst


def parity_max_abs_diff(model: MidiRnn, path: Path, sequences: Sequence[np.ndarray]) -> Parity:
    """Run the exported graph step by step over ``sequences`` (each [time, 3]) and compare with PyTorch.

    The reference is PyTorch running the whole sequence through ``nn.LSTM`` with
    the trained weights in float64, the model's exact value: in float32, PyTorch's
    fused LSTM drifts from it on long streams (a cell state past 100 after 120
    notes) as much as onnxruntime's does, so a float32 reference would charge
    its own rounding to the export. Every output is compared at every step, and
    the final state too: ``c_n``, which is unbounded, relative to its size where
    that exceeds 1 (:func:`_deviation`). Each sequence runs alone (batch 1) over
    all its notes, then all of them together as one batch, cut to the shortest
    one's length (padding with made-up notes would test inputs the model never
    sees).
    """
    if not sequences:
        raise ExportError("the parity check needs at least one held-out sequence")
    session = open_session(path)
    _check_interface(session, path, model)
    model.eval()
    exact = copy.deepcopy(model).double().eval()
    runs = [_parity_run(model, exact, session, seq[None].astype(np.float32)) for seq in sequences]
    length = min(len(s) for s in sequences)
    stacked = np.stack([seq[:length] for seq in sequences]).astype(np.float32)
    runs.append(_parity_run(model, exact, session, stacked))
    parity = Parity(max(r[0] for r in runs), max(r[1] for r in runs))
    log.info(
        "parity: %d sequences (%d notes) alone and batched: max |onnxruntime - torch float64| = %.3g "
        "(torch float32: %.3g)",
        len(sequences),
        sum(len(s) for s in sequences),
        parity.max_abs_diff,
        parity.torch_float32_max_abs_diff,
    )
    return parity


def check_parity(diff: float, path: Path, tolerance: float = PARITY_TOLERANCE) -> None:
    """Fail the export when the graph does not reproduce PyTorch within ``tolerance``."""
    common.check_parity(diff, path, tolerance, graphs="the ONNX step graph differs")
