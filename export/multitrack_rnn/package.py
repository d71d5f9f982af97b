"""Export of ``multitrack-rnn``: the step graph, its parity, the manifest and the model card.

Context: setup (export; imports torch, never imported by the host).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.card import render_card
from export.common import check_parity, export_graph, read_checkpoint, sample_tunes, session, tensor, write_package
from export.errors import ExportError
from export.frames import VOICE_PROGRAMS
from export.multitrack_rnn.model import NAME, MultiTrackConfig, MultiTrackRnn, StepGraph, model_from_checkpoint
from export.seed import write_seed
from livegen.music.time import SIXTEENTH

log = logging.getLogger(__name__)


#: The package's default temperature. ``livegen evaluate --split validation --seeds 16 --bars 4`` on corpus:bach:
#: inter-onset-interval overlap 0.000 at temperature 1 (four voices drawn independently change on almost every
#: 16th: the seed's "cluttered" independent sampling) and 0.594 at 0.5 (repeating the seed: 0.894).
DEFAULT_TEMPERATURE = 0.5


def parity(model: MultiTrackRnn, path: Path, sequences: Sequence[np.ndarray]) -> float:
    """Largest |onnxruntime - PyTorch float64| of the logits and state, run frame by frame as the host does."""
    graph = session(path)
    exact = MultiTrackRnn(model.config).double().eval()
    exact.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    length = min(len(s) for s in sequences)
    runs = [s[None] for s in sequences] + [np.stack([s[:length] for s in sequences])]
    worst = 0.0
    hidden = model.config.hidden
    with torch.no_grad():
        for frames in runs:
            logits_ref, (h_ref, c_ref) = exact(torch.from_numpy(frames).double())
            h = np.zeros((1, frames.shape[0], hidden), dtype=np.float32)
            c = np.zeros_like(h)
            for t in range(frames.shape[1]):
                logits, h, c = graph.run(
                    ["logits", "h_out", "c_out"], {"frame": frames[:, t].astype(np.float32), "h": h, "c": c}
                )
                worst = max(worst, float(np.abs(logits - logits_ref[:, t].numpy()).max()))
            worst = max(worst, float(np.abs(h - h_ref.numpy()).max()))
            worst = max(worst, float((np.abs(c - c_ref.numpy()) / np.maximum(1.0, np.abs(c_ref.numpy()))).max()))
    return worst if np.isfinite(worst) else float("inf")


def export_multitrack(checkpoint_path: Path, out: Path, *, name: str | None = None, version: str = "1.0.0") -> Path:
    checkpoint = read_checkpoint(checkpoint_path, NAME)
    model = model_from_checkpoint(checkpoint, checkpoint_path)
    c = model.config
    name = name or out.name
    sequences = [np.asarray(f, dtype=np.float32) for f in checkpoint["held_out_frames"] if len(f) >= 8]
    if not sequences:
        raise ExportError(f"{checkpoint_path}: the checkpoint holds no held-out piece for the parity check")
    provenance = checkpoint["provenance"]
    names = list(provenance["track_names"])
    centers = list(provenance["track_centers"])

    def build(staging: Path) -> tuple[dict[str, Any], str]:
        batch = torch.export.Dim("batch")
        export_graph(
            StepGraph(model),
            (torch.zeros(2, c.width), torch.zeros(1, 2, c.hidden), torch.zeros(1, 2, c.hidden)),
            staging / "model.onnx",
            inputs=["frame", "h", "c"],
            outputs=["logits", "h_out", "c_out"],
            dynamic={"frame": {0: batch}, "h": {1: batch}, "c": {1: batch}},
        )
        diff = parity(model, staging / "model.onnx", sequences)
        log.info("parity: %d pieces alone and batched: max |onnxruntime - torch float64| = %.3g", len(sequences), diff)
        check_parity(diff, str(staging))
        sample = sample_tunes(checkpoint["held_out_sample"])
        seed_tune = write_seed(staging / "seed.mid", sample, c.pitch_min, c.pitch_min + c.keys - 1)
        metrics = {**checkpoint["metrics"], "parity_max_abs_diff": diff}
        tracks = [
            {
                "name": track,
                "channel": k,
                "program": VOICE_PROGRAMS.get(track, 0),
                "center": round(float(center), 2),
            }
            for k, (track, center) in enumerate(zip(names, centers, strict=True))
        ]
        state = [1, "batch", c.hidden]
        manifest: dict[str, Any] = {
            "schema": 1,
            "name": name,
            "family": NAME,
            "kind": "frame",
            "version": version,
            "description": (
                f"LSTM({c.hidden}) over {c.tracks} flattened tracks ({', '.join(names)}) in 16ths, "
                f"trained on {provenance['data']}; one MIDI channel per track."
            ),
            "seed_phrase": "seed.mid",
            "representation": {
                "grid": SIXTEENTH,
                "pitch_min": c.pitch_min,
                "keys": c.keys,
                "window": c.window,
                "max_hold": c.max_hold,
                "max_silence": c.max_silence,
                **({"onset_profile": provenance["onset_profile"]} if "onset_profile" in provenance else {}),
                "tracks": tracks,
            },
            "graphs": {
                "step": {
                    "file": "model.onnx",
                    "inputs": [tensor("frame", ["batch", c.width]), tensor("h", state), tensor("c", state)],
                    "outputs": [
                        tensor("logits", ["batch", c.tracks, c.keys + 1]),
                        tensor("h_out", state),
                        tensor("c_out", state),
                    ],
                    "state": [{"input": "h", "output": "h_out"}, {"input": "c", "output": "c_out"}],
                }
            },
            "parameters": {
                "temperature": {"default": DEFAULT_TEMPERATURE, "min": 0.05, "max": 4.0},
                "top_p": {"default": 0.95, "min": 0.05, "max": 1.0},
            },
            "training": {
                "data": provenance["data"],
                "tracks": ", ".join(names),
                "corpus_fingerprint": provenance["corpus_fingerprint"],
                "pieces_train": provenance["pieces_train"],
                "pieces_validation": provenance["pieces_validation"],
                "pieces_held_out": provenance["pieces_held_out"],
                "split": "by piece (sha256 of the name): 80% train, 10% validation, 10% held-out",
                "hidden": c.hidden,
                "window": c.window,
                "epochs": checkpoint["training"]["epochs_run"],
                "best_epoch": checkpoint["training"]["best_epoch"],
                "training_seconds": round(float(checkpoint["training"]["training_seconds"]), 1),
                "threads": checkpoint["training"]["threads"],
                "seed_tune": seed_tune,
                "torch": provenance["torch_version"],
            },
            "metrics": {k: float(v) for k, v in metrics.items()},
        }
        return manifest, multitrack_card(name, checkpoint, metrics, tracks)

    return write_package(out, name, build)


def multitrack_card(
    name: str, checkpoint: Mapping[str, Any], m: Mapping[str, float], tracks: list[dict[str, Any]]
) -> str:
    c = MultiTrackConfig.from_dict(checkpoint["config"])
    p, t = checkpoint["provenance"], checkpoint["training"]
    rows = "\n".join(f"| {tr['name']} | {tr['channel'] + 1} | {tr['program']} | {tr['center']:.1f} |" for tr in tracks)
    voices = (
        "the four voices of the Bach chorales (soprano, alto, tenor, bass) are the four tracks"
        if p["data"] == "corpus:bach"
        else f"each MIDI file's {c.tracks} busiest channels, highest first, are the tracks"
    )
    return render_card(
        name,
        """\
A `multitrack-rnn` model (livegen `frame` kind), after the baseline of seed 004 (*multi-track music
generation*, the RNN beside its CNN): every time step, the tracks' piano rolls are flattened into one
vector and an RNN predicts the vector of the next step; each track is sampled independently.
""",
        {
            "Data and tracks": f"""\
`{p["data"]}`: {voices}. {p["pieces_train"]} pieces for training, {p["pieces_validation"]} for validation,
{p["pieces_held_out"]} held out, split by piece exactly as the merged `corpus:bach` is split, so
`livegen evaluate` seeds come from pieces the model never saw. Frames are 16th notes.

| track | MIDI channel | GM program | mean training pitch |
|---|---:|---:|---:|
{rows}

The performer plays one part: each performed note joins the free track whose mean pitch is nearest.
""",
            "What is the seed's and what differs": f"""\
Kept: flattened multi-track frames, an RNN predicting the next frame, independent sampling per track.

- **Four chorale voices, not LPD-5's five instruments**: the project ships music21's chorales; the card's
  figures are on them. Pitches {c.pitch_min}-{c.pitch_min + c.keys - 1} ({c.keys} keys) per track, not 128.
- **Each track is one line** (a one-hot over a rest and {c.keys} pitches, a softmax, cross-entropy per
  track): the seed found sampling several notes per instrument cluttered and kept one per instrument per
  step; here that is the model's output. A voice repeating a pitch on consecutive frames reads as one held
  note (a roll has no onsets).
- **LSTM({c.hidden}), one layer, windows of {c.window} frames** (the seed: an RNN of unstated size, 10
  steps, 100 epochs on a GPU): sized for two CPU cores; {t["epochs_run"]} epochs (best {t["best_epoch"]}),
  {t["training_seconds"]:.0f} s with {t["threads"]} threads. The loss is taken after every frame, so the
  host can stream the LSTM from a zero state.
""",
            "Held-out figures": f"""\
| next frame, per track | accuracy |
|---|---:|
| this model (its most likely class) | {m["held_out_accuracy"]:.3f} |
| baseline: repeat the last frame | {m["baseline_repeat_last_frame_accuracy"]:.3f} |
| this model, where the voice changes | {m["held_out_accuracy_where_changing"]:.3f} |

Cross-entropy per track and frame: {m["held_out_cross_entropy"]:.3f}. Density of what it plays
(sampled at temperature 1 after 2 bars of a validation piece, 4 bars): {m["val_density_notes_per_beat"]:.2f}
notes per beat, against {m["val_density_true_notes_per_beat"]:.2f} in the pieces.

The host samples each track at temperature {DEFAULT_TEMPERATURE:g} by default: at 1 the four independently drawn
voices change on almost every 16th (`livegen evaluate --split validation`: inter-onset-interval overlap 0.000
at 1, 0.594 at 0.5), the clutter the seed reports for independent sampling.

Export parity: the largest difference between onnxruntime (frame by frame) and PyTorch in float64 is
{m["parity_max_abs_diff"]:.2g} (accepted: 1e-4).
""",
        },
    )
