"""Export of ``midirnn``: the streaming step graph, its parity check against PyTorch, the manifest and the model card.

Context: setup (export; imports torch, never imported by the host).

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

The package is assembled in a staging folder (:func:`export.common.write_package`):
graph, seed phrase, model card and ``livegen.toml`` (format: ``docs/model-package.md``),
verified by the host's own loader before it replaces the destination.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnxruntime as ort
import torch

from export import common
from export.card import percent, render_card
from export.common import (
    CARD,
    OPSET,
    PARITY_TOLERANCE,
    check_interface,
    check_target,
    export_graph,
    load_checkpoint,
    run_table,
    sample_tunes,
    tensor,
    write_package,
)
from export.common import session as open_session
from export.errors import ExportError
from export.midirnn.model import (
    CLASS_QUANTUM,
    NAME,
    PITCH_SCALE,
    MidiRnn,
    MidiRnnConfig,
    MidiRnnStep,
    TimeClasses,
    model_from_checkpoint,
)
from export.seed import SEED, SEED_BEATS, SEED_BPM, write_seed
from livegen.models.midirnn import tune_features
from livegen.music.time import SIXTEENTH

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


GRAPH = "model.onnx"


def _time_classes(checkpoint: Mapping[str, Any]) -> TimeClasses | None:
    """The checkpoint's duration classes, or None for the seed's regression heads."""
    config = MidiRnnConfig.from_dict(checkpoint["config"])
    table = checkpoint.get("time_classes")
    if config.time_head != "classes" or not table:
        return None
    return TimeClasses.from_dict(table)


def build_manifest(
    *,
    name: str,
    version: str,
    description: str,
    checkpoint: Mapping[str, Any],
    metrics: Mapping[str, float],
    files: Mapping[str, str],
) -> dict[str, Any]:
    """The ``livegen.toml`` table for a ``midirnn`` package (see ``docs/model-package.md``)."""
    config = MidiRnnConfig.from_dict(checkpoint["config"])
    provenance = checkpoint["provenance"]
    training_info = checkpoint["training"]
    hidden = config.hidden
    classes = _time_classes(checkpoint)
    if classes is None:
        loss = "cross-entropy (pitch) + MSE with positive pressure (step, duration)"
        outputs = [tensor("step", ["batch", 1]), tensor("duration", ["batch", 1])]
    else:
        loss = "cross-entropy (pitch, step classes, duration classes)"
        outputs = [
            tensor("step_logits", ["batch", len(classes.step)]),
            tensor("duration_logits", ["batch", len(classes.duration)]),
        ]
    training: dict[str, Any] = {
        **run_table(provenance, training_info, "notes_train"),
        "hidden": hidden,
        "pitch_embedding": config.pitch_embedding,
        "window": config.window,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "grad_clip": config.grad_clip,
        "time_head": config.time_head,
        "loss": loss,
        "loss_weights": f"pitch {config.pitch_weight}, step {config.step_weight}, duration {config.duration_weight}",
        "torch_version": provenance["torch_version"],
        "exported": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if provenance.get("limit") is not None:
        training["limit"] = provenance["limit"]
    representation: dict[str, Any] = {
        "time_unit": "beat",
        "pitch_min": int(provenance["pitch_min"]),
        "pitch_max": int(provenance["pitch_max"]),
        "pitch_scale": PITCH_SCALE,
        "grid": SIXTEENTH,
        "beats_max": float(config.beats_max),
        "time_head": config.time_head,
    }
    parameters: dict[str, dict[str, float]] = {
        "temperature": {"default": 1.0, "min": 0.05, "max": 4.0},
        "top_p": {"default": 0.95, "min": 0.05, "max": 1.0},
    }
    if classes is not None:
        # The step and duration are drawn at this temperature, not the performer's (see the model card).
        parameters["time_temperature"] = {"default": 1.0, "min": 0.05, "max": 4.0}
        representation["step_classes"] = list(classes.step)
        representation["duration_classes"] = list(classes.duration)
        for head in ("step", "duration"):
            training[f"{head}_class_coverage"] = round(float(provenance[f"{head}_class_coverage"]), 6)
    return {
        "schema": 1,
        "name": name,
        "family": NAME,
        "kind": "step",
        "version": version,
        "description": description,
        "seed_phrase": SEED,
        "representation": representation,
        "graphs": {
            "step": {
                "file": GRAPH,
                "inputs": [
                    tensor("note", ["batch", 3]),
                    tensor("h", [1, "batch", hidden]),
                    tensor("c", [1, "batch", hidden]),
                ],
                "outputs": [
                    tensor("pitch_logits", ["batch", 128]),
                    *outputs,
                    tensor("h_out", [1, "batch", hidden]),
                    tensor("c_out", [1, "batch", hidden]),
                ],
                "state": [{"input": "h", "output": "h_out"}, {"input": "c", "output": "c_out"}],
            }
        },
        "parameters": parameters,
        "training": training,
        "metrics": {key: float(value) for key, value in metrics.items()},
        "files": dict(files),
    }


def model_card(
    *,
    name: str,
    description: str,
    checkpoint: Mapping[str, Any],
    metrics: Mapping[str, float],
    seed_tune: str,
    stream: tuple[int, float],
) -> str:
    """The package's README.md: data, split, training, held-out figures, parity, seed differences, limits.

    ``stream`` is (notes, largest |c|) of one unbroken stream, from :func:`stream_cell_max`.
    """
    config = MidiRnnConfig.from_dict(checkpoint["config"])
    p = checkpoint["provenance"]
    t = checkpoint["training"]
    m = metrics
    data = p["data"]
    if data == "corpus:folk":
        source = (
            "the monophonic folk tunes music21 ships in ABC notation (Essen folksong collection, "
            "O'Neill's *Music of Ireland* (1850), Ryan's *Mammoth Collection*)"
        )
    else:
        source = f"the MIDI files in `{data}` (all tracks merged)"
    history = "\n".join(
        f"| {int(h['epoch'])} | {h['learning_rate']:.2g} | {h['train_loss']:.4f} | {h['val_loss']:.4f} | "
        f"{h['val_pitch_ce']:.3f} | {h['val_step']:.4f} | {h['val_duration']:.4f} |"
        for h in checkpoint["history"]
    )
    minutes = float(t["training_seconds"]) / 60
    weight_note = _weight_note(config, data)
    classes = _time_classes(checkpoint)
    time_loss = "" if classes is None else " CE"
    return render_card(
        name,
        f"""\
{description}

Family `midirnn` (seeds 000 §4.1 and 003 §2A, after TensorFlow's "Generate music with an RNN"
tutorial), host kind `step`: the host feeds one note at a time and carries the LSTM state.
""",
        {
            "Data": f"""\
Trained on {source}: {p["tunes"]} tunes, {p["notes_train"] + p["notes_validation"] + p["notes_held_out"]} notes.
Split *by tune* (a hash of each tune's name, so no tune is in two parts):

| part | tunes | notes |
|---|---:|---:|
| training | {p["tunes_train"]} | {p["notes_train"]} |
| validation (early stopping) | {p["tunes_validation"]} | {p["notes_validation"]} |
| held-out (figures below) | {p["tunes_held_out"]} | {p["notes_held_out"]} |

Training pitches span MIDI {p["pitch_min"]}-{p["pitch_max"]} (`pitch_min`/`pitch_max`). Corpus
fingerprint `{p["corpus_fingerprint"]}`.
""",
            "Model and training": f"""\
{_heads_text(config, classes, p)}
- Adam, learning rate {config.learning_rate}, halved after {config.lr_patience} epochs without a better
  validation loss (down to {config.lr_min:g}); gradient norm clipped at {config.grad_clip}; batches of
  {config.batch_size} windows of {config.window} notes ({p["windows_train"]} training windows), shuffled
  with a generator seeded by `--seed {p["seed"]}`.
- Early stopping on validation loss (patience {t["patience"]}): {t["epochs_run"]} epochs run of at most
  {t["max_epochs"]}, best epoch {t["best_epoch"]} (validation loss {m["best_val_loss"]:.4f}); the best
  weights are the ones exported. Training took {minutes:.1f} min on {t["threads"]} CPU threads
  (torch {p["torch_version"]}).

{_time_weight_table(classes, data)}\
| epoch | learning rate | train loss | validation loss | val pitch CE | val step{time_loss} | val duration{time_loss} |
|---:|---:|---:|---:|---:|---:|---:|
{history}
""",
            "Held-out figures": f"""\
Each held-out tune runs as one stream from a zero state, as the host runs it; the prediction after
every note is scored against the next note ({int(m["held_out_targets"])} targets). Baselines are scored
on exactly the same targets.

| next pitch, top-1 accuracy | |
|---|---:|
| this model | **{percent(m["held_out_pitch_accuracy"])}** |
| baseline: most frequent training pitch | {percent(m["baseline_most_frequent_pitch_accuracy"])} |
| baseline: repeat the last pitch | {percent(m["baseline_repeat_last_pitch_accuracy"])} |

{_time_figures(m, classes)}

ONNX parity: the exported step graph, run note by note in onnxruntime on held-out tunes (alone and
as one batch), differs from PyTorch running the whole sequence with the same weights in float64 by at
most {m["parity_max_abs_diff"]:.2g} on any output at any step (the final cell state, which grows past 100 on
long streams, relative to its size; the export fails above {PARITY_TOLERANCE:g}). PyTorch's own float32 run
differs from that reference by up to {m["parity_torch_float32_max_abs_diff"]:.2g}.
""",
            "Seed phrase": f"""\
`{SEED}`: the first {SEED_BEATS:g} beats (about two bars) of the held-out tune `{seed_tune}`, at
{SEED_BPM:g} BPM.
""",
            "What differs from the seed, and why": f"""\
- **Step and duration are in beats, not seconds**, so tempo belongs to the host's clock: the model
  plays at whatever tempo the performer or the DAW sets.
- **Loss at every position of a window** instead of only after the last of 25/50 notes: the host runs
  the model as a stream from a zero state and samples after any number of notes, so it must predict
  well after 1, 2, ... notes; every note also becomes a target once per epoch. Windows are
  {config.window} notes (the median folk tune is about 56 notes, so most tunes fit one window) and are
  cut inside tunes, never across two.
- **Exported as a one-note step graph** with the LSTM state as explicit inputs and outputs, so the host
  never re-runs a window.
- **Data**: {"folk melodies" if data == "corpus:folk" else "the MIDI files above"} instead of MAESTRO piano
  performances; one melodic line, which is what a call-and-response partner plays.
{_time_head_note(classes, config)}{_pitch_input_note(config, data)}{weight_note}\
- **Early stopping** on a validation split instead of a fixed 50 epochs, with the learning rate
  halved when validation loss stalls (the tutorial keeps 0.005 throughout); gradient clipping for stability.
- **Step and duration clipped to {config.beats_max:g} beats** in training (about 0.03% of folk notes are
  longer); the host should clamp its inputs to `beats_max` the same way.{_clip_note(classes)}
""",
            "Limits": f"""\
- Monophonic: chords in the data were reduced to their top note; the model plays one line.
- It knows nothing of bars or metre beyond what steps imply, and has no velocity model: the host
  chooses velocities.
- Trained from zero states on windows of {config.window} notes. Longer streams run on, but some cell
  units count notes: fed the {stream[0]} held-out sample notes back to back without a reset, the largest
  |c| reached {stream[1]:.0f} (tanh saturates beyond about 3). The host should reset the state at
  phrase boundaries rather than run for hours unbroken.
- Pitch accuracy is top-1 against one reference tune; many other continuations are musically fine.
{_class_limits(classes, config)}
""",
        },
    )


def _beats(value: float) -> str:
    """A class value in beats as a fraction: 0.375 -> '3/8', 2.0 -> '2'."""
    return str(Fraction(value).limit_denominator(round(1 / CLASS_QUANTUM)))


def _input_text(config: MidiRnnConfig) -> str:
    """What the card says the LSTM reads."""
    if config.pitch_embedding <= 0:
        return f"LSTM({config.hidden}) over notes `[pitch / 128, step, duration]`"
    return (
        f"LSTM({config.hidden}) over notes `[pitch / 128, step, duration]`; inside the graph the pitch is rounded\n"
        f"  back to a MIDI pitch and read as a learned vector of {config.pitch_embedding} values (`--pitch-embedding`)"
    )


def _heads_text(config: MidiRnnConfig, classes: TimeClasses | None, provenance: Mapping[str, Any]) -> str:
    """The model card's bullets on the heads, the duration classes and the loss."""
    if classes is None:
        return f"""- {_input_text(config)}; dense heads: pitch logits (128),
  step (1), duration (1).
- Loss: cross-entropy for pitch; MSE plus the tutorial's positive pressure `10 * mean(relu(-pred))` for
  step and duration; weights pitch {config.pitch_weight}, step {config.step_weight}, duration
  {config.duration_weight} (the tutorial's: 0.05, 1, 1)."""
    quantum = round(1 / CLASS_QUANTUM)
    step_share = percent(float(provenance["step_class_coverage"]))
    duration_share = percent(float(provenance["duration_class_coverage"]))
    return f"""- {_input_text(config)}, step and duration in beats (the same
  input as the regression variant); dense heads: pitch logits (128), step logits ({len(classes.step)}) and
  duration logits ({len(classes.duration)}) over duration classes.
- Duration classes (`step_classes` and `duration_classes` in the manifest), in beats:
  - step: {", ".join(_beats(v) for v in classes.step)}
  - duration: {", ".join(_beats(v) for v in classes.duration)}

  Derived from the training targets: each value snapped to 1/{quantum} beat (the common grid of 32nd
  notes and 16th-note triplets), then the most frequent values kept until they hold at least
  {100 * config.class_coverage:g}% of the targets (at most {config.max_time_classes} classes per head). They hold
  {step_share} of training steps and {duration_share} of training durations exactly; any other value
  (quintuplets, grace notes, rests longer than the longest class) is mapped to the nearest class, in
  training and in the figures below.
- Loss: cross-entropy for pitch, step and duration, weights {config.pitch_weight:g}, {config.step_weight:g} and
  {config.duration_weight:g}. At 1, 1, 1 the sum would be the negative log-likelihood of the whole next note, but
  the time heads share the LSTM with the pitch and cost it pitch accuracy; the step is nearly given by the
  duration just fed (above 97% held-out accuracy at every weight tried), so a small weight keeps the
  rhythm and spares the pitch."""


#: The step/duration loss weight of the classes head on corpus:folk (seed 0, otherwise the defaults):
#: weight (None: the seed's regression heads), validation pitch CE at the best epoch, held-out pitch and
#: duration accuracy, and ``livegen evaluate`` overlaps (pitch classes, intervals, inter-onset intervals)
#: averaged over rng seeds 0-19. See the docstring of :mod:`export.midirnn`.
FOLK_TIME_WEIGHT_ABLATION: tuple[tuple[float | None, float, float, float | None, float, float, float], ...] = (
    (None, 2.131, 0.258, None, 0.856, 0.731, 0.786),
    (1.0, 2.211, 0.240, 0.769, 0.785, 0.714, 0.958),
    (0.5, 2.167, 0.243, 0.760, 0.793, 0.732, 0.957),
    (0.25, 2.176, 0.245, 0.750, 0.810, 0.720, 0.950),
    (0.1, 2.119, 0.256, 0.709, 0.822, 0.726, 0.963),
)


#: The repeat-the-seed baseline's overlaps in the same evaluation (pitch classes, intervals, inter-onset intervals).
FOLK_REPEAT_SEED_OVERLAPS = (0.768, 0.741, 0.858)


def _time_weight_table(classes: TimeClasses | None, data: str) -> str:
    """The model card's table of the time loss weights tried on corpus:folk, for a classes model trained on it."""
    if classes is None or data != "corpus:folk":
        return ""
    rows = "\n".join(
        f"| {'regression heads (the seed)' if w is None else f'{w:g}'} | {ce:.3f} | {percent(pitch)} | "
        f"{'-' if dur is None else percent(dur)} | {pc:.3f} | {iv:.3f} | {ioi:.3f} |"
        for w, ce, pitch, dur, pc, iv, ioi in FOLK_TIME_WEIGHT_ABLATION
    )
    pc, iv, ioi = FOLK_REPEAT_SEED_OVERLAPS
    return f"""The step/duration loss weight, measured on this corpus with the seed's pitch input `pitch / 128`
(seed 0, otherwise these settings; the overlaps are `livegen evaluate` means over rng seeds 0-19,
higher is better):

| step and duration weight | val pitch CE | held-out pitch accuracy | held-out duration accuracy | \
overlap: pitch classes | overlap: intervals | overlap: inter-onset intervals |
|---|---:|---:|---:|---:|---:|---:|
{rows}
| baseline: repeat the seed | | | | {pc:.3f} | {iv:.3f} | {ioi:.3f} |

"""


def _time_figures(m: Mapping[str, float], classes: TimeClasses | None) -> str:
    """The model card's held-out step and duration figures, beside their baselines."""
    if classes is None:
        return f"""| mean absolute error, beats | model | baseline: training median |
|---|---:|---:|
| step to the next note | {m["held_out_step_mae_beats"]:.3f} | {m["baseline_median_step_mae_beats"]:.3f} |
| duration of the next note | {m["held_out_duration_mae_beats"]:.3f} | {m["baseline_median_duration_mae_beats"]:.3f} |
""".rstrip("\n")
    rows = []
    for head, label in (("step", "step to the next note"), ("duration", "duration of the next note")):
        accuracy, mae = m[f"held_out_{head}_accuracy"], m[f"held_out_{head}_mae_beats"]
        repeat_accuracy = m[f"baseline_repeat_last_{head}_accuracy"]
        repeat_mae = m[f"baseline_repeat_last_{head}_mae_beats"]
        rows.append(
            f"""| {label} | accuracy | MAE, beats |
|---|---:|---:|
| this model (its most likely class) | **{percent(accuracy)}** | **{mae:.3f}** |
| baseline: the most frequent training class | {percent(m[f"baseline_most_frequent_{head}_accuracy"])} | - |
| baseline: the training median | - | {m[f"baseline_median_{head}_mae_beats"]:.3f} |
| baseline: repeat the last note's {head} | {percent(repeat_accuracy)} | {repeat_mae:.3f} |"""
        )
    return (
        "Step and duration: accuracy counts the model's most likely class against the class nearest the\n"
        "target; the error is that class's value against the target, in beats. The host does not play the\n"
        "most likely class but samples the distribution (see the evaluation), so these figures say how\n"
        "sharp the distribution is, not how the model sounds.\n\n" + "\n\n".join(rows)
    )


#: The seed's regression heads on corpus:folk, measured with ``livegen evaluate --model folk-lstm --rng-seed 0``
#: on the bundled regression package (folk-lstm 1.0.0): inter-onset-interval overlap of the model and of the
#: repeat-the-seed baseline, and the share of inter-onset intervals that are dotted values, played and real.
FOLK_REGRESSION_IOI = {"overlap": 0.771, "repeat_overlap": 0.858, "dotted_played": 0.41, "dotted_real": 0.05}


#: Inter-onset-interval overlap of the corpus:folk classes model (weight 0.1, seed 0) by sampling temperature,
#: ``livegen evaluate`` mean over rng seeds 0-5: at 1; time temperature tied to the pitch's at 0.8 and 1.2;
#: time temperature held at 1 with the pitch's at 0.8 and 1.2.
FOLK_TIME_TEMPERATURE_IOI = (0.967, 0.901, 0.909, 0.962, 0.962)


def _time_head_note(classes: TimeClasses | None, config: MidiRnnConfig) -> str:
    """The model card's line on the categorical time head, when the model has one."""
    if classes is None:
        return ""
    r = FOLK_REGRESSION_IOI
    t1, tied_lo, tied_hi, held_lo, held_hi = FOLK_TIME_TEMPERATURE_IOI
    return f"""- **Step and duration are categorical (`--time-head classes`), not the seed's regression heads.**
  The seed predicts them with an MSE loss, whose optimum is the conditional mean: where the next step
  could be an eighth or a quarter it predicts about 0.75 beats, which the host snaps to a dotted
  eighth. Measured with `livegen evaluate --rng-seed 0` on the regression model of this family trained
  on corpus:folk (the bundled `folk-lstm` 1.0.0): {r["dotted_played"]:.0%} of its inter-onset intervals were
  dotted eighths, quarters or halves, values the real continuations use {r["dotted_real"]:.0%} of the time,
  and its inter-onset-interval overlap ({r["overlap"]:.3f}) lost to repeating the seed
  ({r["repeat_overlap"]:.3f}). Here the step and duration heads give logits over the duration classes
  above and the host samples them as it samples the pitch, so it plays an eighth or a quarter, never
  their mean. The input note is the same `[pitch / 128, step, duration]` in beats; regression stays the
  family's default (`--time-head regression`). The step and duration cross-entropies weigh
  {config.step_weight:g} and {config.duration_weight:g} against the pitch's {config.pitch_weight:g} (see Model and
  training).
- **The host draws step and duration at their own temperature** (`parameters.time_temperature`, 1.0),
  not at the performer's: temperature reshapes a melody usefully, but the rhythm distribution is
  calibrated at 1. Measured on this family's classes model of corpus:folk (`livegen evaluate`, rng seeds
  0-5, inter-onset-interval overlap): {t1:.3f} at temperature 1; with the time temperature tied to the
  pitch's, {tied_lo:.3f} at 0.8 and {tied_hi:.3f} at 1.2; held at 1 while the pitch's is 0.8 and 1.2,
  {held_lo:.3f} and {held_hi:.3f}.
"""


#: The pitch input of the corpus:folk classes model (time weight 0.1, seed 0, otherwise the defaults):
#: ``--pitch-embedding`` (0: the seed's ``pitch / 128``), best epoch, validation pitch CE there, held-out
#: pitch accuracy, and ``livegen evaluate`` overlaps (pitch classes, intervals, inter-onset intervals)
#: averaged over rng seeds 0-19 (``python -m export evaluate PACKAGE --rng-seeds 20``).
FOLK_PITCH_INPUT_ABLATION: tuple[tuple[int, int, float, float, float, float, float], ...] = (
    (0, 58, 2.119, 0.256, 0.822, 0.726, 0.963),
    (32, 30, 1.636, 0.428, 0.911, 0.850, 0.925),
)


def _pitch_input_note(config: MidiRnnConfig, data: str) -> str:
    """The model card's line on the learned pitch vectors, when the model has them."""
    if config.pitch_embedding <= 0:
        return ""
    rows = "\n".join(
        f"  | {'`pitch / 128` (the seed)' if size == 0 else f'a learned vector of {size}'} | {epoch} | {ce:.3f} "
        f"| {percent(accuracy)} | {pc:.3f} | {iv:.3f} | {ioi:.3f} |"
        for size, epoch, ce, accuracy, pc, iv, ioi in FOLK_PITCH_INPUT_ABLATION
    )
    pc, iv, ioi = FOLK_REPEAT_SEED_OVERLAPS
    table = (
        f"""

  Measured on corpus:folk (classes head, time weight 0.1, seed 0, otherwise these settings; overlaps are
  `livegen evaluate` means over rng seeds 0-19):

  | pitch input | best epoch | val pitch CE | held-out pitch accuracy | overlap: pitch classes \
| overlap: intervals | overlap: inter-onset intervals |
  |---|---:|---:|---:|---:|---:|---:|
{rows}
  | baseline: repeat the seed | | | | {pc:.3f} | {iv:.3f} | {ioi:.3f} |"""
        if data == "corpus:folk"
        else ""
    )
    flag = f"--pitch-embedding {config.pitch_embedding}"
    return f"""- **The pitch is read as a learned vector** (`{flag}`), not as the seed's single number
  `pitch / 128`. The step graph's input stays `[pitch / 128, step, duration]`; the graph rounds the first
  value back to a MIDI pitch and looks up its vector, so the host feeds it exactly as before. A single
  number puts neighbouring pitches 1/128 apart, and the LSTM must learn to tell a semitone from a fifth
  out of that; with a vector per pitch it learns what each pitch does in a tune. With the scalar input
  the melodic intervals lost to repeating the seed.{table}
"""


def _clip_note(classes: TimeClasses | None) -> str:
    if classes is None:
        return ""
    return (
        f"\n  As targets they are then mapped to the nearest class: the longest step class is "
        f"{_beats(classes.step[-1])} beats\n  and the longest duration class {_beats(classes.duration[-1])} beats."
    )


def _class_limits(classes: TimeClasses | None, config: MidiRnnConfig) -> str:
    if classes is None:
        return ""
    short = [_beats(v) for v in classes.step if v < 0.25]
    floor = ""
    if short:
        some = "es" if len(short) > 1 else ""
        floor = (
            f"\n  The host plays no step shorter than its grid (a 16th): the step class{some} "
            f"{' and '.join(short)} play{'' if some else 's'} as 16ths."
        )
    rare = 100 * (1 - config.class_coverage)
    return f"""- Step and duration come only from the classes above: rhythms the training tunes use rarely (under
  about {rare:.1f}% of notes together) are never played.{floor}
- Step and duration of a note are drawn independently given the state; the next step then depends
  on the duration drawn, which is fed back.
"""


#: Held-out pitch accuracy and duration MAE by pitch loss weight, measured on corpus:folk (seed 0,
#: same split, window 64, otherwise the defaults); see the docstring of :mod:`export.midirnn`.
FOLK_PITCH_WEIGHT_ABLATION = ((0.05, 0.228, 0.201), (0.25, 0.246, 0.204), (1.0, 0.258, 0.219))


def _weight_note(config: MidiRnnConfig, data: str) -> str:
    """The model card's line on the pitch loss weight, when it is not the tutorial's."""
    if config.pitch_weight == 0.05:
        return ""
    text = (
        f"- **Pitch loss weight {config.pitch_weight:g} instead of the tutorial's 0.05.** The tutorial's weight\n"
        "  balances a pitch cross-entropy near 4 against step/duration errors in seconds on piano\n"
        "  performances; on melodies in beats it leaves pitch under-fitted while duration over-fits."
    )
    if data == "corpus:folk":
        runs = "; ".join(f"{w:g}: {100 * acc:.1f}% / {mae:.3f}" for w, acc, mae in FOLK_PITCH_WEIGHT_ABLATION)
        heads = " with the regression heads" if config.time_head == "classes" else ""
        text += (
            f" Measured on\n  this corpus{heads} (held-out pitch accuracy / duration MAE in beats, by weight): "
            f"{runs}.\n  A 0.02-beat duration error is far below the sixteenth-note grid; three points of pitch\n"
            "  accuracy are not."
        )
    return text + "\n"


def stream_cell_max(model: MidiRnn, sequences: Sequence[np.ndarray]) -> tuple[int, float]:
    """Feed ``sequences`` back to back as one stream from a zero state: (notes, largest |cell state|)."""
    notes = np.concatenate(list(sequences))[None].astype(np.float32)
    largest = 0.0
    with torch.no_grad():
        state = None
        for chunk in torch.from_numpy(notes).split(1, dim=1):
            _, state = model.lstm(model.lstm_input(chunk), state)
            largest = max(largest, float(state[1].abs().max()))
    return int(notes.shape[1]), largest


def export_package(
    checkpoint_path: Path,
    out: Path,
    *,
    name: str | None = None,
    version: str = "1.0.0",
    description: str | None = None,
    tolerance: float = PARITY_TOLERANCE,
) -> Path:
    """Export ``checkpoint_path`` as the package folder ``out``; returns ``out``.

    Raises :class:`~export.errors.ParityError` (and writes nothing) when the
    ONNX graph differs from PyTorch by more than ``tolerance``.
    """
    checkpoint = load_checkpoint(checkpoint_path)
    if checkpoint.get("family") != NAME:
        raise ExportError(
            f"{checkpoint_path}: family {checkpoint.get('family')!r} cannot be exported; accepted: {NAME}"
        )
    name = name or out.name
    check_target(name, out, " (e.g. folk-lstm)")
    config = MidiRnnConfig.from_dict(checkpoint["config"])
    model = model_from_checkpoint(checkpoint, checkpoint_path)
    provenance = checkpoint["provenance"]
    if description is None:
        data = "music21's folk tunes" if provenance["data"] == "corpus:folk" else provenance["data"]
        what = (
            "pitch, step and duration in beats"
            if model.time_classes is None
            else "pitch, and step and duration as classes of durations in beats"
        )
        description = f"LSTM({config.hidden}) next-note model trained on {data}: {what}, one note at a time."
    sample = sample_tunes(checkpoint["held_out_sample"])
    sequences = [tune_features(t, config.beats_max) for t in sample]

    def build(staging: Path) -> tuple[dict[str, Any], str]:
        graph = staging / GRAPH
        export_step_graph(model, graph)
        parity = parity_max_abs_diff(model, graph, sequences)
        diff = parity.max_abs_diff
        check_parity(diff, graph, tolerance)
        metrics = {
            **checkpoint["metrics"],
            "parity_max_abs_diff": diff,
            "parity_torch_float32_max_abs_diff": parity.torch_float32_max_abs_diff,
        }
        seed_tune = write_seed(staging / SEED, sample, int(provenance["pitch_min"]), int(provenance["pitch_max"]))
        card = model_card(
            name=name,
            description=description,
            checkpoint=checkpoint,
            metrics=metrics,
            seed_tune=seed_tune,
            stream=stream_cell_max(model, sequences),
        )
        manifest = build_manifest(
            name=name, version=version, description=description, checkpoint=checkpoint, metrics=metrics, files={}
        )
        return manifest, card

    write_package(out, name, build, example=" (e.g. folk-lstm)", files=(GRAPH, CARD, SEED))
    return out
