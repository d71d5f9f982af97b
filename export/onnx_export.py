"""ONNX export of the ``midirnn`` streaming step graph, and its parity check against PyTorch.

Context: setup (export only; imports torch, never imported by the host).

The host never re-runs a window: it feeds one note at a time and carries the
LSTM state. So the exported graph is the *step* graph (``note``, ``h``, ``c`` in;
``pitch_logits``, ``step``, ``duration``, ``h_out``, ``c_out`` out) with a dynamic
batch dimension, and the parity check compares what the host will do (run that
graph with onnxruntime step by step, feeding the state back) with what training
did (PyTorch running the whole sequence through ``nn.LSTM`` at once), on held-out
tunes, one at a time and as a batch. The neutone habit: convert, reload, check
the host-facing interface survived, compare outputs with the original.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from export.errors import ExportError, ParityError
from export.midirnn import MidiRnn, MidiRnnStep

log = logging.getLogger(__name__)

INPUTS = ("note", "h", "c")
OUTPUTS = ("pitch_logits", "step", "duration", "h_out", "c_out")
OPSET = 18
#: Largest |onnxruntime - PyTorch| accepted on any output of the parity check.
PARITY_TOLERANCE = 1e-4


def export_step_graph(model: MidiRnn, path: Path, *, opset: int = OPSET) -> None:
    """Write the one-note step graph of ``model`` to ``path`` (weights inside the file)."""
    step = MidiRnnStep(model).eval()
    hidden = model.hidden
    example = (torch.zeros(2, 3), torch.zeros(1, 2, hidden), torch.zeros(1, 2, hidden))
    batch = torch.export.Dim("batch")
    noise = io.StringIO()
    try:
        # The dynamo exporter reports each stage on stdout and warns that the three
        # inputs share one batch axis (they do, on purpose); keep the CLI quiet.
        with warnings.catch_warnings(), contextlib.redirect_stdout(noise):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                step,
                example,
                str(path),
                input_names=list(INPUTS),
                output_names=list(OUTPUTS),
                opset_version=opset,
                dynamo=True,
                dynamic_shapes={"note": {0: batch}, "h": {1: batch}, "c": {1: batch}},
                external_data=False,
                verbose=False,
            )
    except Exception as err:  # the exporter raises many internal types
        raise ExportError(f"{path}: torch.onnx.export failed ({type(err).__name__}: {err})") from err
    log.debug("exporter output: %s", noise.getvalue())
    onnx.checker.check_model(str(path), full_check=True)


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _check_interface(session: ort.InferenceSession, path: Path, hidden: int) -> None:
    """The reloaded graph has exactly the tensors the manifest will declare."""
    expected = {
        "note": ["batch", 3],
        "h": [1, "batch", hidden],
        "c": [1, "batch", hidden],
        "pitch_logits": ["batch", 128],
        "step": ["batch", 1],
        "duration": ["batch", 1],
        "h_out": [1, "batch", hidden],
        "c_out": [1, "batch", hidden],
    }
    actual = {a.name: a for a in [*session.get_inputs(), *session.get_outputs()]}
    if set(actual) != set(expected):
        raise ExportError(f"{path}: the exported graph has tensors {sorted(actual)}, expected {sorted(expected)}")
    for name, shape in expected.items():
        arg = actual[name]
        fixed = [d if isinstance(d, int) else None for d in shape]
        have = [d if isinstance(d, int) else None for d in arg.shape]
        if arg.type != "tensor(float)" or fixed != have:
            raise ExportError(f"{path}: tensor {name!r} is {arg.type}{arg.shape}, expected float32{shape}")


def _parity_run(model: MidiRnn, session: ort.InferenceSession, notes: np.ndarray) -> float:
    """Largest difference over every output at every step for ``notes`` [batch, time, 3]."""
    batch, length, _ = notes.shape
    with torch.no_grad():
        x = torch.from_numpy(notes)
        hs, (h_n, c_n) = model.lstm(x)
        logits, step, duration, _ = model(x)
    reference = {
        "pitch_logits": logits.numpy(),
        "step": step.numpy(),
        "duration": duration.numpy(),
        "h_out": hs.numpy(),
    }
    h = np.zeros((1, batch, model.hidden), dtype=np.float32)
    c = np.zeros_like(h)
    worst = 0.0
    for t in range(length):
        out = dict(zip(OUTPUTS, session.run(list(OUTPUTS), {"note": notes[:, t], "h": h, "c": c}), strict=True))
        for name in ("pitch_logits", "step", "duration"):
            worst = max(worst, float(np.abs(out[name] - reference[name][:, t]).max()))
        worst = max(worst, float(np.abs(out["h_out"][0] - reference["h_out"][:, t]).max()))
        h, c = out["h_out"], out["c_out"]
    worst = max(worst, float(np.abs(h - h_n.numpy()).max()), float(np.abs(c - c_n.numpy()).max()))
    if not np.isfinite(worst):
        return float("inf")
    return worst


def parity_max_abs_diff(model: MidiRnn, path: Path, sequences: Sequence[np.ndarray]) -> float:
    """Run the exported graph step by step over ``sequences`` (each [time, 3]) and compare with PyTorch.

    Each sequence runs alone (batch 1) over all its notes, then all of them
    together as one batch, cut to the shortest one's length (padding with made-up
    notes would test inputs the model never sees). Returns the largest absolute
    difference over every output of every step.
    """
    if not sequences:
        raise ExportError("the parity check needs at least one held-out sequence")
    session = _session(path)
    _check_interface(session, path, model.hidden)
    model.eval()
    worst = 0.0
    for seq in sequences:
        worst = max(worst, _parity_run(model, session, seq[None].astype(np.float32)))
    length = min(len(s) for s in sequences)
    stacked = np.stack([seq[:length] for seq in sequences]).astype(np.float32)
    worst = max(worst, _parity_run(model, session, stacked))
    log.info(
        "parity: %d sequences (%d notes) alone and batched: max |onnxruntime - torch| = %.3g",
        len(sequences),
        sum(len(s) for s in sequences),
        worst,
    )
    return worst


def check_parity(diff: float, path: Path, tolerance: float = PARITY_TOLERANCE) -> None:
    """Fail the export when the graph does not reproduce PyTorch within ``tolerance``."""
    if not diff <= tolerance:
        raise ParityError(
            f"{path}: parity check failed: the ONNX step graph differs from PyTorch by up to {diff:.3g} "
            f"(accepted: at most {tolerance:g}); the package was not written"
        )
