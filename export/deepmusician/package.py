"""Export of ``deep-musician``: the encoder and decoder graphs, their parity, the manifest and the model card.

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
from export.deepmusician.model import (
    KEYS,
    NAME,
    PITCH_MIN,
    DecoderGraph,
    DeepMusician,
    DeepMusicianConfig,
    EncoderGraph,
    model_from_checkpoint,
)
from export.errors import ExportError
from export.seed import write_seed
from livegen.models.deepmusician import tune_roll
from livegen.music.time import SIXTEENTH

log = logging.getLogger(__name__)


def parity(model: DeepMusician, encoder_path: Path, decoder_path: Path, rolls: Sequence[np.ndarray]) -> float:
    """Largest |onnxruntime - PyTorch float64| over the encoder's state and every decoder step's logits and state.

    Each context runs alone and all together as one batch; the decoder is fed the
    reference's own sigmoid outputs (what it was fed in training), with onnxruntime's
    state carried from step to step as the host carries it, for twice ``decode_frames`` steps.
    """
    encoder, decoder = session(encoder_path), session(decoder_path)
    exact = DeepMusician(model.config).double().eval()
    exact.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    steps = 2 * model.config.decode_frames
    batches = [r[None] for r in rolls] + [np.stack(rolls)]
    worst = 0.0
    with torch.no_grad():
        for roll in batches:
            x = torch.from_numpy(roll).double()
            h_ref = exact.encode(x)
            (h,) = encoder.run(["h"], {"roll": roll.astype(np.float32)})
            worst = max(worst, float(np.abs(h - h_ref.numpy()).max()))
            frame_ref = x.new_zeros(x.shape[0], KEYS)
            for _ in range(steps):
                logits_ref, h_ref = exact.step(frame_ref, h_ref)
                logits, h = decoder.run(["logits", "h_out"], {"frame": frame_ref.float().numpy(), "h": h})
                worst = max(worst, float(np.abs(logits - logits_ref.numpy()).max()))
                worst = max(worst, float(np.abs(h - h_ref.numpy()).max()))
                frame_ref = torch.sigmoid(logits_ref)
    return worst if np.isfinite(worst) else float("inf")


def export_deep_musician(checkpoint_path: Path, out: Path, *, name: str | None = None, version: str = "1.0.0") -> Path:
    """Export the encoder and one decoder step as two graphs, check parity, write the package ``out``."""
    checkpoint = read_checkpoint(checkpoint_path, NAME)
    model = model_from_checkpoint(checkpoint, checkpoint_path)
    c = model.config
    name = name or out.name
    sample = sample_tunes(checkpoint["held_out_sample"])
    rolls = []
    for tune in sample:
        roll = tune_roll(tune, PITCH_MIN, KEYS)
        padded = np.concatenate([np.zeros((c.window, KEYS), dtype=np.float32), roll])
        rolls.append(padded[len(padded) // 2 - c.window // 2 :][: c.window])
    rolls = [r for r in rolls if len(r) == c.window]
    if not rolls:
        raise ExportError(f"{checkpoint_path}: the checkpoint holds no held-out piece for the parity check")

    def build(staging: Path) -> tuple[dict[str, Any], str]:
        batch, frames = torch.export.Dim("batch"), torch.export.Dim("frames")
        export_graph(
            EncoderGraph(model),
            (torch.zeros(2, c.window, KEYS),),
            staging / "encoder.onnx",
            inputs=["roll"],
            outputs=["h"],
            dynamic={"roll": {0: batch, 1: frames}},
        )
        export_graph(
            DecoderGraph(model),
            (torch.zeros(2, KEYS), torch.zeros(c.layers, 2, c.hidden)),
            staging / "decoder.onnx",
            inputs=["frame", "h"],
            outputs=["logits", "h_out"],
            dynamic={"frame": {0: batch}, "h": {1: batch}},
        )
        diff = parity(model, staging / "encoder.onnx", staging / "decoder.onnx", rolls)
        log.info("parity: %d contexts alone and batched: max |onnxruntime - torch float64| = %.3g", len(rolls), diff)
        check_parity(diff, str(staging))
        provenance = checkpoint["provenance"]
        seed_tune = write_seed(staging / "seed.mid", sample, PITCH_MIN, PITCH_MIN + KEYS - 1)
        metrics = {**checkpoint["metrics"], "parity_max_abs_diff": diff}
        temperature = 1.0  # the focal scores read back as chances are the model's own
        h = [c.layers, "batch", c.hidden]
        manifest: dict[str, Any] = {
            "schema": 1,
            "name": name,
            "family": NAME,
            "kind": "frame",
            "version": version,
            "description": (
                f"GRU encoder-decoder ({c.layers} x {c.hidden}) over the 88-key piano roll in 16ths, focal loss, "
                f"trained on {provenance['data']}."
            ),
            "seed_phrase": "seed.mid",
            "representation": {
                "grid": SIXTEENTH,
                "pitch_min": PITCH_MIN,
                "keys": KEYS,
                "window": c.window,
                "decode_frames": c.decode_frames,
                "polyphony": c.polyphony,
                "max_hold": c.max_hold,
                "max_silence": c.max_silence,
                "focal_alpha": c.alpha,
                "focal_gamma": c.gamma,
                **({"onset_profile": provenance["onset_profile"]} if "onset_profile" in provenance else {}),
                "redraw": float(checkpoint["training"].get("redraw", 0.0)),
            },
            "graphs": {
                "encoder": {
                    "file": "encoder.onnx",
                    "inputs": [tensor("roll", ["batch", "frames", KEYS])],
                    "outputs": [tensor("h", h)],
                },
                "decoder": {
                    "file": "decoder.onnx",
                    "inputs": [tensor("frame", ["batch", KEYS]), tensor("h", h)],
                    "outputs": [tensor("logits", ["batch", KEYS]), tensor("h_out", h)],
                    "state": [{"input": "h", "output": "h_out"}],
                },
            },
            "parameters": {
                "temperature": {"default": temperature, "min": 0.05, "max": 4.0},
                "top_p": {"default": 0.95, "min": 0.05, "max": 1.0},
            },
            "training": {
                "data": provenance["data"],
                "corpus_fingerprint": provenance["corpus_fingerprint"],
                "pieces_train": provenance["pieces_train"],
                "pieces_validation": provenance["pieces_validation"],
                "pieces_held_out": provenance["pieces_held_out"],
                "split": "by piece (sha256 of the name): 80% train, 10% validation, 10% held-out",
                "loss": f"focal (alpha {c.alpha:g}, gamma {c.gamma:g})",
                "hidden": c.hidden,
                "layers": c.layers,
                "window": c.window,
                "decode_frames": c.decode_frames,
                "epochs": checkpoint["training"]["epochs_run"],
                "best_epoch": checkpoint["training"]["best_epoch"],
                "training_seconds": round(float(checkpoint["training"]["training_seconds"]), 1),
                "threads": checkpoint["training"]["threads"],
                "seed_tune": seed_tune,
                "torch": provenance["torch_version"],
            },
            "metrics": {k: float(v) for k, v in metrics.items()},
        }
        return manifest, deep_musician_card(name, checkpoint, metrics, temperature)

    return write_package(out, name, build)


#: Focal loss settings tried on corpus:bach (seed 0, windows every 32 frames, otherwise the defaults), at the best
#: validation epoch: alpha, gamma, epochs, notes per beat of the thresholded decoder output, keys sounding per
#: frame, notes per beat the host's sampler plays (temperature 1), validation frame F1. The real continuations:
#: 3.907 notes per beat, 3.94 keys sounding per frame. (0.5, 0) is plain cross-entropy halved: the seed's empty rolls.
BACH_FOCAL_GRID: tuple[tuple[float, float, int, float, float, float | None, float], ...] = (
    (0.5, 0.0, 6, 0.000, 0.00, None, 0.000),
    (0.75, 2.0, 8, 1.258, 4.57, 1.796, 0.332),
    (0.9, 2.0, 8, 3.792, 14.49, 0.504, 0.340),
)


BACH_REAL_DENSITY = (3.907, 3.94)


def deep_musician_card(
    name: str, checkpoint: Mapping[str, Any], metrics: Mapping[str, float], temperature: float
) -> str:
    c = DeepMusicianConfig.from_dict(checkpoint["config"])
    p, t, m = checkpoint["provenance"], checkpoint["training"], metrics
    grid = ""
    if BACH_FOCAL_GRID and p["data"] == "corpus:bach":
        rows = "\n".join(
            f"| {a:g} | {g:g} | {e} | {d:.3f} | {k:.2f} | {'-' if s is None else f'{s:.3f}'} | {f1:.3f} |"
            for a, g, e, d, k, s, f1 in BACH_FOCAL_GRID
        )
        notes, keys = BACH_REAL_DENSITY
        grid = (
            "Focal loss settings tried (seed 0, windows every 32 frames, otherwise these settings), measured on\n"
            "the validation pieces at the best epoch: the density of what the decoder generates, as notes per beat\n"
            "(thresholded at 0.5), as keys sounding per frame (the seed's 'notes played per time step') and as\n"
            "notes per beat the host's sampler plays; the real continuations have\n"
            f"{notes:.3f} notes per beat and {keys:.2f} keys sounding per frame.\n\n"
            "| alpha | gamma | epochs | notes per beat (threshold) | keys per frame | notes per beat (host) "
            "| frame F1 |\n|---:|---:|---:|---:|---:|---:|---:|\n"
            f"{rows}\n\n"
            "alpha 0.5, gamma 0 is cross-entropy (halved): the seed's failure, empty rolls, reproduced. alpha 0.9\n"
            "matches the real notes per beat only by holding 14-15 keys at once: the host's polyphony limit then\n"
            "fills with held keys and it plays 0.5 notes per beat. alpha 0.75, gamma 2 sounds about as many keys\n"
            "per frame as the chorales and gives the host the most notes to play, so it is the bundled choice;\n"
            "its notes are still held longer than the chorales hold them (fewer notes per beat than real).\n\n"
        )
    sampled = ", ".join(
        f"{k.removeprefix('val_sampled_density_r')}: {v:.3f}" for k, v in m.items() if k.startswith("val_sampled_")
    )
    return render_card(
        name,
        f"""\
A `deep-musician` model (livegen `frame` kind), after seed 002 (Gabelberger, *Deep Musician*, 2023):
a GRU encoder reads the last {c.window} frames of an 88-key piano roll (one frame per 16th note) and
hands its hidden state to a GRU decoder that starts from an empty frame and is fed its own sigmoid
output, frame by frame; a classifier {c.hidden}-{c.classifier} (ReLU, dropout {c.classifier_dropout:g})-88 with a
sigmoid gives each key's probability of sounding. Trained with the focal loss.
""",
        {
            "Data": f"""\
`{p["data"]}`: {p["pieces_train"]} pieces for training, {p["pieces_validation"]} for validation and
{p["pieces_held_out"]} held out, split by piece (a hash of its name), every part of a chorale merged into one
roll. Training windows start every {c.stride} frames, including before a piece starts (padded with empty
frames): {p["windows_train"]} windows.
""",
            "What is the seed's and what was scaled down": f"""\
Kept: the 88-key roll on a 16th grid, the {c.window}-frame encoder window, 2-layer GRU encoder and decoder
of the same shape with dropout {c.dropout:g}, the empty start frame, feeding the decoder its own sigmoid output
(in training and when playing), the classifier's shape after the hidden state (256, ReLU, dropout 0.5, 88,
sigmoid), the focal loss with alpha and gamma as options, the density metric.

Scaled down to train on two CPU cores, shared with other jobs:

- **Hidden size {c.hidden}, not 512.** At 512 the encoder and decoder hold 5 million weights (20 MB of
  float32, over the size a bundled package should have) and an epoch of the chorales takes minutes on these
  cores; at {c.hidden} an epoch takes about {np.mean([h["seconds"] for h in checkpoint["history"]]):.0f} s.
- **The decoder runs {c.decode_frames} frames in training, not {c.window}.** Its loop is sequential in Python
  and a free-running decoder learns its first bars first. The host never lets it run further than that:
  after {c.decode_frames} generated frames it encodes the played roll again and restarts the decoder from the
  empty frame.
- {t["epochs_run"]} epochs (best: {t["best_epoch"]}), {t["training_seconds"]:.0f} s with {t["threads"]} threads.
""",
            "The focal loss and the density metric": f"""\
alpha = {c.alpha:g} (the weight of sounding keys), gamma = {c.gamma:g}. {grid}With these values the model's
generated density on the validation pieces is {m["val_density_notes_per_beat"]:.3f} notes per beat
against {m["val_density_true_notes_per_beat"]:.3f} in the real continuations (held-out:
{m["held_out_density_notes_per_beat"]:.3f} against {m["held_out_density_true_notes_per_beat"]:.3f}).

The host reads each key's focal score back as the chance whose focal loss it minimises, and plays each
key as a line that moves from one frame to the next only as far as its chance moved, a share of frames
drawn afresh, both weighted by the frame's place in the beat (the training pieces' share of onsets on each
16th); at most {c.polyphony} keys sound, the likeliest. The density it plays on the validation pieces, by
share drawn afresh: {sampled}; the package's share ({t.get("redraw", 0.0):g}) is the one closest to the real
density, at temperature {temperature:g}.
""",
            "Held-out figures": f"""\
| | this model | baseline: hold the last context frame |
|---|---:|---:|
| frame F1 (thresholded at 0.5) | {m["held_out_frame_f1"]:.3f} | {m["baseline_hold_last_frame_f1"]:.3f} |
| density, notes per beat (real {m["held_out_density_true_notes_per_beat"]:.3f}) \
| {m["held_out_density_notes_per_beat"]:.3f} | {m["baseline_hold_last_frame_density"]:.3f} |

Export parity: the largest difference between onnxruntime (encoder, then decoder step by step) and PyTorch
in float64 is {m["parity_max_abs_diff"]:.2g} (accepted: 1e-4).
""",
            "Limits": f"""\
- A roll has no onsets: a key struck again right after it sounded reads as one held note, in training
  and when playing. Notes are held at most {c.max_hold} frames (4 beats).
- The performer's velocity and timing within a 16th are not heard; notes are heard on the grid.
""",
        },
    )
