"""Writes a ``midirnn`` model package: manifest, step graph, model card and seed phrase.

Context: setup (export only; imports torch through the model, never imported by the host).

The package is assembled in a temporary folder beside the destination: the
graph is exported and checked for parity, the seed phrase, model card and
``livegen.toml`` (format: ``docs/model-package.md``) are written, the host's own
loader verifies the result, and only then does the folder replace the
destination. A failed export leaves the destination as it was.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
import torch

from export.errors import ExportError
from export.midirnn import FAMILY, PITCH_SCALE, MidiRnn, MidiRnnConfig, tune_features
from export.onnx_export import PARITY_TOLERANCE, check_parity, export_step_graph, parity_max_abs_diff
from export.train import load_checkpoint
from livegen.errors import PackageError
from livegen.io.corpus import Tune
from livegen.music.events import Note
from livegen.music.midifile import write_midi
from livegen.music.time import SIXTEENTH, TempoMap, beats_to_ticks

log = logging.getLogger(__name__)

MANIFEST = "livegen.toml"
GRAPH = "model.onnx"
CARD = "README.md"
SEED = "seed.mid"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]*$")
SEED_BEATS = 8.0
SEED_BPM = 120.0
SEED_VELOCITY = 80


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _tunes(sample: Sequence[Mapping[str, Any]]) -> list[Tune]:
    return [
        Tune(
            name=str(item["name"]),
            pitch=np.asarray(item["pitch"], dtype=np.int16),
            onset=np.asarray(item["onset"], dtype=np.float32),
            duration=np.asarray(item["duration"], dtype=np.float32),
        )
        for item in sample
    ]


def seed_phrase(tunes: Sequence[Tune], pitch_min: int, pitch_max: int) -> tuple[str, list[Note]]:
    """About two bars (8 beats) from the start of a held-out tune, to be played at 120 BPM.

    The first tune whose opening fits the model's pitch range and holds 8 to 16
    notes (a phrase, neither two long notes nor a blur); failing that, the opening
    with the most notes in range.
    """

    def phrase(tune: Tune) -> list[Note]:
        start = float(tune.onset[0])
        notes = []
        for pitch, onset, duration in zip(tune.pitch, tune.onset, tune.duration, strict=True):
            offset = float(onset) - start
            if offset >= SEED_BEATS:
                break
            notes.append(
                Note(
                    pitch=int(pitch),
                    velocity=SEED_VELOCITY,
                    start=beats_to_ticks(offset),
                    duration=max(1, beats_to_ticks(min(float(duration), SEED_BEATS))),
                )
            )
        return notes

    if not tunes:
        raise ExportError("the checkpoint holds no held-out tunes to take a seed phrase from")
    openings = [(tune.name, phrase(tune)) for tune in tunes]
    in_range = [(name, notes) for name, notes in openings if all(pitch_min <= n.pitch <= pitch_max for n in notes)]
    for name, notes in in_range:
        if 8 <= len(notes) <= 16:
            return name, notes
    return max(in_range or openings, key=lambda item: len(item[1]))


def _tensor(name: str, shape: list[int | str]) -> dict[str, Any]:
    return {"name": name, "shape": shape, "dtype": "float32"}


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
    training: dict[str, Any] = {
        "data": provenance["data"],
        "corpus_fingerprint": provenance["corpus_fingerprint"],
        "tunes_train": provenance["tunes_train"],
        "tunes_validation": provenance["tunes_validation"],
        "tunes_held_out": provenance["tunes_held_out"],
        "notes_train": provenance["notes_train"],
        "split": "by tune (sha256 of the tune name): 80% train, 10% validation, 10% held-out",
        "epochs": training_info["epochs_run"],
        "best_epoch": training_info["best_epoch"],
        "max_epochs": training_info["max_epochs"],
        "patience": training_info["patience"],
        "training_seconds": round(float(training_info["training_seconds"]), 1),
        "seed": provenance["seed"],
        "hidden": hidden,
        "window": config.window,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "grad_clip": config.grad_clip,
        "loss": "cross-entropy (pitch) + MSE with positive pressure (step, duration)",
        "loss_weights": f"pitch {config.pitch_weight}, step {config.step_weight}, duration {config.duration_weight}",
        "torch_version": provenance["torch_version"],
        "exported": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if provenance.get("limit") is not None:
        training["limit"] = provenance["limit"]
    return {
        "schema": 1,
        "name": name,
        "family": FAMILY,
        "kind": "step",
        "version": version,
        "description": description,
        "seed_phrase": SEED,
        "representation": {
            "time_unit": "beat",
            "pitch_min": int(provenance["pitch_min"]),
            "pitch_max": int(provenance["pitch_max"]),
            "pitch_scale": PITCH_SCALE,
            "grid": SIXTEENTH,
            "beats_max": float(config.beats_max),
        },
        "graphs": {
            "step": {
                "file": GRAPH,
                "inputs": [
                    _tensor("note", ["batch", 3]),
                    _tensor("h", [1, "batch", hidden]),
                    _tensor("c", [1, "batch", hidden]),
                ],
                "outputs": [
                    _tensor("pitch_logits", ["batch", 128]),
                    _tensor("step", ["batch", 1]),
                    _tensor("duration", ["batch", 1]),
                    _tensor("h_out", [1, "batch", hidden]),
                    _tensor("c_out", [1, "batch", hidden]),
                ],
                "state": [{"input": "h", "output": "h_out"}, {"input": "c", "output": "c_out"}],
            }
        },
        "parameters": {
            "temperature": {"default": 1.0, "min": 0.05, "max": 4.0},
            "top_p": {"default": 0.95, "min": 0.05, "max": 1.0},
        },
        "training": training,
        "metrics": {key: float(value) for key, value in metrics.items()},
        "files": dict(files),
    }


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


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
    return f"""# {name}

{description}

Family `midirnn` (seeds 000 §4.1 and 003 §2A, after TensorFlow's "Generate music with an RNN"
tutorial), host kind `step`: the host feeds one note at a time and carries the LSTM state.

## Data

Trained on {source}: {p["tunes"]} tunes, {p["notes_train"] + p["notes_validation"] + p["notes_held_out"]} notes.
Split *by tune* (a hash of each tune's name, so no tune is in two parts):

| part | tunes | notes |
|---|---:|---:|
| training | {p["tunes_train"]} | {p["notes_train"]} |
| validation (early stopping) | {p["tunes_validation"]} | {p["notes_validation"]} |
| held-out (figures below) | {p["tunes_held_out"]} | {p["notes_held_out"]} |

Training pitches span MIDI {p["pitch_min"]}-{p["pitch_max"]} (`pitch_min`/`pitch_max`). Corpus
fingerprint `{p["corpus_fingerprint"]}`.

## Model and training

- LSTM({config.hidden}) over notes `[pitch / 128, step, duration]`; dense heads: pitch logits (128),
  step (1), duration (1).
- Loss: cross-entropy for pitch; MSE plus the tutorial's positive pressure `10 * mean(relu(-pred))` for
  step and duration; weights pitch {config.pitch_weight}, step {config.step_weight}, duration
  {config.duration_weight} (the tutorial's: 0.05, 1, 1).
- Adam, learning rate {config.learning_rate}, halved after {config.lr_patience} epochs without a better
  validation loss (down to {config.lr_min:g}); gradient norm clipped at {config.grad_clip}; batches of
  {config.batch_size} windows of {config.window} notes ({p["windows_train"]} training windows), shuffled
  with a generator seeded by `--seed {p["seed"]}`.
- Early stopping on validation loss (patience {t["patience"]}): {t["epochs_run"]} epochs run of at most
  {t["max_epochs"]}, best epoch {t["best_epoch"]} (validation loss {m["best_val_loss"]:.4f}); the best
  weights are the ones exported. Training took {minutes:.1f} min on {t["threads"]} CPU threads
  (torch {p["torch_version"]}).

| epoch | learning rate | train loss | validation loss | val pitch CE | val step | val duration |
|---:|---:|---:|---:|---:|---:|---:|
{history}

## Held-out figures

Each held-out tune runs as one stream from a zero state, as the host runs it; the prediction after
every note is scored against the next note ({int(m["held_out_targets"])} targets). Baselines are scored
on exactly the same targets.

| next pitch, top-1 accuracy | |
|---|---:|
| this model | **{_pct(m["held_out_pitch_accuracy"])}** |
| baseline: most frequent training pitch | {_pct(m["baseline_most_frequent_pitch_accuracy"])} |
| baseline: repeat the last pitch | {_pct(m["baseline_repeat_last_pitch_accuracy"])} |

| mean absolute error, beats | model | baseline: training median |
|---|---:|---:|
| step to the next note | {m["held_out_step_mae_beats"]:.3f} | {m["baseline_median_step_mae_beats"]:.3f} |
| duration of the next note | {m["held_out_duration_mae_beats"]:.3f} | {m["baseline_median_duration_mae_beats"]:.3f} |

ONNX parity: the exported step graph, run note by note in onnxruntime on held-out tunes (alone and
as one batch), differs from PyTorch running the whole sequence by at most
{m["parity_max_abs_diff"]:.2g} on any output (the export fails above {PARITY_TOLERANCE:g}).

## Seed phrase

`{SEED}`: the first {SEED_BEATS:g} beats (about two bars) of the held-out tune `{seed_tune}`, at
{SEED_BPM:g} BPM.

## What differs from the seed, and why

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
{weight_note}- **Early stopping** on a validation split instead of a fixed 50 epochs, with the learning rate
  halved when validation loss stalls (the tutorial keeps 0.005 throughout); gradient clipping for stability.
- **Step and duration clipped to {config.beats_max:g} beats** in training (about 0.03% of folk notes are
  longer); the host should clamp its inputs to `beats_max` the same way.

## Limits

- Monophonic: chords in the data were reduced to their top note; the model plays one line.
- It knows nothing of bars or metre beyond what steps imply, and has no velocity model: the host
  chooses velocities.
- Trained from zero states on windows of {config.window} notes. Longer streams run on, but some cell
  units count notes: fed the {stream[0]} held-out sample notes back to back without a reset, the largest
  |c| reached {stream[1]:.0f} (tanh saturates beyond about 3). The host should reset the state at
  phrase boundaries rather than run for hours unbroken.
- Pitch accuracy is top-1 against one reference tune; many other continuations are musically fine.
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
        text += (
            " Measured on\n  this corpus (held-out pitch accuracy / duration MAE in beats, by weight): "
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
            _, state = model.lstm(chunk, state)
            largest = max(largest, float(state[1].abs().max()))
    return int(notes.shape[1]), largest


def _check_destination(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out}: is a file; expected a folder for the model package")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ExportError(f"--out {out}: the folder is not empty and holds no {MANIFEST}; refusing to replace it")


def _verify(folder: Path) -> None:
    """Verify the written package with the host's own loader (schema, checksums, graph, trial run)."""
    try:
        from livegen.models.package import load_package
    except ImportError:
        log.warning("livegen.models.package.load_package is not available; skipped the host's verification")
        return
    try:
        load_package(folder)
    except PackageError as err:
        raise ExportError(f"the written package fails the host's verification: {err}") from err


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
    if checkpoint.get("family") != FAMILY:
        raise ExportError(
            f"{checkpoint_path}: family {checkpoint.get('family')!r} cannot be exported; accepted: {FAMILY}"
        )
    name = name or out.name
    if not NAME_PATTERN.match(name):
        raise ExportError(f"package name {name!r}: expected lowercase letters, digits and dashes (e.g. folk-lstm)")
    _check_destination(out)
    config = MidiRnnConfig.from_dict(checkpoint["config"])
    model = MidiRnn(config.hidden)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError) as err:
        raise ExportError(
            f"{checkpoint_path}: the weights do not fit a midirnn of {config.hidden} units ({err})"
        ) from err
    model.eval()
    provenance = checkpoint["provenance"]
    if description is None:
        data = "music21's folk tunes" if provenance["data"] == "corpus:folk" else provenance["data"]
        description = (
            f"LSTM({config.hidden}) next-note model trained on {data}: pitch, step and duration in beats, "
            "one note at a time."
        )
    sample = _tunes(checkpoint["held_out_sample"])
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out.parent))
    try:
        graph = staging / GRAPH
        export_step_graph(model, graph)
        sequences = [tune_features(t, config.beats_max) for t in sample]
        diff = parity_max_abs_diff(model, graph, sequences)
        check_parity(diff, graph, tolerance)
        metrics = {**checkpoint["metrics"], "parity_max_abs_diff": diff}
        seed_tune, notes = seed_phrase(sample, int(provenance["pitch_min"]), int(provenance["pitch_max"]))
        write_midi(staging / SEED, {"seed": notes}, tempo=TempoMap.constant(SEED_BPM))
        card = model_card(
            name=name,
            description=description,
            checkpoint=checkpoint,
            metrics=metrics,
            seed_tune=seed_tune,
            stream=stream_cell_max(model, sequences),
        )
        (staging / CARD).write_text(card, encoding="utf-8")
        files = {f: _sha256(staging / f) for f in (GRAPH, CARD, SEED)}
        manifest = build_manifest(
            name=name, version=version, description=description, checkpoint=checkpoint, metrics=metrics, files=files
        )
        (staging / MANIFEST).write_bytes(tomli_w.dumps(manifest).encode("utf-8"))
        _verify(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
        out.chmod(0o755)  # mkdtemp made it private; an installed package is read by every user
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    size = sum(f.stat().st_size for f in out.iterdir())
    log.info("wrote package %s (%d files, %.0f KB), parity %.3g", out, len(list(out.iterdir())), size / 1024, diff)
    return out
