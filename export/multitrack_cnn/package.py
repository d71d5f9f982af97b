"""Export of ``multitrack-cnn``: the block graph, its parity, the manifest and the model card.

Context: setup (export; imports torch, never imported by the host).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.card import render_card
from export.common import check_parity, export_graph, read_checkpoint, sample_tunes, session, tensor, write_package
from export.errors import ExportError
from export.frames import VOICE_PROGRAMS
from export.multitrack_cnn.model import (
    DEFAULT_TEMPERATURE,
    LAYERS,
    NAME,
    MultiTrackCnn,
    MultiTrackCnnConfig,
    conv_size,
    model_from_checkpoint,
)
from export.multitrack_cnn.train import DENSITY_BLOCKS, Blocks, densities
from export.seed import write_seed
from livegen.models.multitrackcnn import ROLE
from livegen.music.time import SIXTEENTH

log = logging.getLogger(__name__)


#: What the card says of the defaults, for the data they were chosen on (the bundled package's corpus
#: fingerprint); a package trained on other data says they were not tuned on it.
TUNED_ON = "dd42bd03cf3c3b6e"


TUNING = (
    "The temperature was chosen on the validation pieces with `livegen evaluate --split validation`; the share "
    "drawn afresh is the one whose density from validation contexts is nearest the pieces' (the table below)."
)


def parity(model: MultiTrackCnn, path: Path, rolls: np.ndarray) -> float:
    """Largest |onnxruntime - PyTorch float64| of the logits, each roll alone and all of them batched."""
    graph = session(path)
    exact = MultiTrackCnn(model.config).double().eval()
    exact.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    worst = 0.0
    with torch.no_grad():
        for batch in [rolls[i : i + 1] for i in range(len(rolls))] + [rolls]:
            (logits,) = graph.run(["logits"], {"roll": batch.astype(np.float32)})
            reference = exact(torch.from_numpy(batch.astype(np.float64))).numpy()
            worst = max(worst, float(np.abs(logits - reference).max()))
    return worst if np.isfinite(worst) else float("inf")


def export_multitrack_cnn(checkpoint_path: Path, out: Path, *, name: str | None = None, version: str = "1.0.0") -> Path:
    checkpoint = read_checkpoint(checkpoint_path, NAME)
    model = model_from_checkpoint(checkpoint, checkpoint_path)
    c = model.config
    name = name or out.name
    rolls = np.asarray(checkpoint["held_out_blocks"], dtype=np.float32)
    if rolls.ndim != 4 or not len(rolls):
        raise ExportError(f"{checkpoint_path}: the checkpoint holds no held-out block for the parity check")
    provenance = checkpoint["provenance"]
    names = list(provenance["track_names"])
    centers = list(provenance["track_centers"])
    shape = ["batch", c.tracks, c.window, c.width]

    def build(staging: Path) -> tuple[dict[str, Any], str]:
        export_graph(
            model,
            (torch.zeros(2, c.tracks, c.window, c.width),),
            staging / "model.onnx",
            inputs=["roll"],
            outputs=["logits"],
            dynamic={"roll": {0: torch.export.Dim("batch")}},
        )
        diff = parity(model, staging / "model.onnx", rolls)
        log.info(
            "parity: %d held-out blocks alone and batched: max |onnxruntime - torch float64| = %.3g", len(rolls), diff
        )
        check_parity(diff, str(staging))
        sample = sample_tunes(checkpoint["held_out_sample"])
        seed_tune = write_seed(staging / "seed.mid", sample, c.pitch_min, c.pitch_min + c.keys - 1)
        sample_blocks = Blocks(checkpoint["density_blocks"]["inputs"], checkpoint["density_blocks"]["targets"])
        profile = provenance.get("onset_profile")
        metre = None if profile is None else [profile[f % len(profile)] / np.mean(profile) for f in range(c.window)]
        played, true_density = densities(model, sample_blocks, metre)
        redraw = min(played, key=lambda r: abs(played[r] - true_density))
        log.info(
            "redraw %g: %.2f notes per beat at temperature %g from true contexts (validation pieces: %.2f)",
            redraw,
            played[redraw],
            DEFAULT_TEMPERATURE,
            true_density,
        )
        metrics = {
            **checkpoint["metrics"],
            "val_density_notes_per_beat": played[redraw],
            "val_density_true_notes_per_beat": true_density,
            "parity_max_abs_diff": diff,
        }
        tracks = [
            {"name": track, "channel": k, "program": VOICE_PROGRAMS.get(track, 0), "center": round(float(center), 2)}
            for k, (track, center) in enumerate(zip(names, centers, strict=True))
        ]
        t = checkpoint["training"]
        manifest: dict[str, Any] = {
            "schema": 1,
            "name": name,
            "family": NAME,
            "kind": "block",
            "version": version,
            "description": (
                f"Symmetric 2D CNN ({LAYERS} convolutions, {LAYERS} transposed) from {c.window} 16ths of "
                f"{c.tracks} tracks ({', '.join(names)}) to the next {c.window}, trained on {provenance['data']}; "
                "one MIDI channel per track."
            ),
            "seed_phrase": "seed.mid",
            "representation": {
                "grid": SIXTEENTH,
                "pitch_min": c.pitch_min,
                "keys": c.keys,
                "context_frames": c.window,
                "block_frames": c.window,
                "max_hold": c.max_hold,
                **({} if profile is None else {"onset_profile": profile}),
                "redraw": redraw,
                "tracks": tracks,
            },
            "graphs": {
                ROLE: {
                    "file": "model.onnx",
                    "inputs": [tensor("roll", shape)],
                    "outputs": [tensor("logits", shape)],
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
                "blocks_train": provenance["blocks_train"],
                "window": c.window,
                "stride": c.stride,
                "transpose": c.transpose,
                "channels": ", ".join(map(str, c.channels)),
                "pitch_strides": c.pitch_strides,
                "parameters": provenance["parameters"],
                "loss": "cross-entropy per track and frame of the next block",
                "optimizer": f"Adam, learning rate {c.learning_rate:g}, gradient norm clipped at 1",
                "batch_size": c.batch_size,
                "epochs": t["epochs_run"],
                "best_epoch": t["best_epoch"],
                "training_seconds": round(float(t["training_seconds"]), 1),
                "threads": t["threads"],
                "seed_tune": seed_tune,
                "torch": provenance["torch_version"],
            },
            "metrics": {k: float(v) for k, v in metrics.items()},
        }
        return manifest, multitrack_cnn_card(name, checkpoint, metrics, tracks, redraw, played)

    return write_package(out, name, build)


def _middle(config: MultiTrackCnnConfig) -> str:
    """The size of the narrowest layer: frames by pitch cells."""
    frames, width = config.window, config.width
    for st, sw in config.strides:
        frames, width = conv_size(frames, config.kernel, st), conv_size(width, config.kernel, sw)
    return f"{frames} x {width}"


def multitrack_cnn_card(
    name: str,
    checkpoint: Mapping[str, Any],
    m: Mapping[str, float],
    tracks: list[dict[str, Any]],
    redraw: float,
    densities: Mapping[float, float],
) -> str:
    c = MultiTrackCnnConfig.from_dict(checkpoint["config"])
    p, t = checkpoint["provenance"], checkpoint["training"]
    tuning = (
        TUNING
        if p.get("corpus_fingerprint") == TUNED_ON
        else "The defaults were not tuned on this data: compare `livegen evaluate --split validation --temperature T`."
    )
    rows = "\n".join(f"| {tr['name']} | {tr['channel'] + 1} | {tr['program']} | {tr['center']:.1f} |" for tr in tracks)
    voices = (
        "the four voices of the Bach chorales (soprano, alto, tenor, bass) are the four tracks"
        if p["data"] == "corpus:bach"
        else f"each MIDI file's {c.tracks} busiest channels, highest first, are the tracks"
    )
    bar = "one 4/4 bar" if c.window == 16 else f"{c.window / 16:g} bars of 4/4"
    channels = " -> ".join(map(str, c.channels))
    augment = (
        f"Each training batch is transposed by a random shift of up to {c.transpose} semitones either way (pitches "
        "moved out of range rest), so the model is not bound to the chorales' few keys."
        if c.transpose
        else "The training blocks are not transposed (the chorales' own keys only)."
    )
    return render_card(
        name,
        f"""\
A `multitrack-cnn` model (livegen `block` kind), after the CNN of seed 004 (*Exploring Music Generation
Using Deep Learning*): a symmetric 2D CNN reads the last block of a multi-track piano roll, all tracks at
once, and predicts the next block; no dense layers. livegen asks it for a block ({c.window} 16ths, {bar})
ahead of the playhead and conditions it on the block before, the performer's notes included.
""",
        {
            "Data and tracks": f"""\
`{p["data"]}`: {voices}. {p["pieces_train"]} pieces for training, {p["pieces_validation"]} for validation,
{p["pieces_held_out"]} held out, split by piece exactly as `multitrack-rnn` and the merged `corpus:bach` are
split, so `livegen evaluate` seeds come from pieces the model never saw. Frames are 16th notes; training
pairs (a block and the block after it) start every {c.stride} frames: {p["blocks_train"]} pairs.

| track | MIDI channel | GM program | mean training pitch |
|---|---:|---:|---:|
{rows}

The performer plays one part: each performed note joins the free track whose mean pitch is nearest, and the
model reads it there in the next block's context.
""",
            "The model": f"""\
Input and output `[tracks = {c.tracks}, frames = {c.window}, classes = {c.width}]`: per track and frame a one-hot
over a rest and {c.keys} pitches ({c.pitch_min}-{c.pitch_min + c.keys - 1}); the tracks are the convolutions'
channels. Four `Conv2d` layers (kernel {c.kernel}, ReLU; {channels} channels; stride 2 over time in each layer
and over pitch in the first {c.pitch_strides}, so the middle is {_middle(c)} frames x pitch cells by
{c.channels[-1]} channels) and the transposed path back (four `ConvTranspose2d`, the last giving the logits),
the sizes mirrored exactly: {p["parameters"]} parameters. Loss: the cross-entropy of each track's class in each
frame of the next block; Adam, learning rate {c.learning_rate:g}, batches of {c.batch_size}, early stopping on
the validation loss. {augment}

The host plays the logits as one line per track, from the model's distribution in each frame at the live
temperature and top-p (default {DEFAULT_TEMPERATURE:g}): a line keeps its class while the model keeps giving it
at least the weight it had and moves, where the weight grew, as far as the distribution moved from the frame
before; a share {redraw:g} of its frames is drawn afresh. Both are weighted by the frame's place in the beat
(the training pieces' share of onsets on each 16th of a beat). The CNN predicts every frame of a block from
the context alone, so drawing each frame independently would change a voice almost every 16th, and holding a
pitch while the model gave it a fixed share made a held chord a fixed point. {tuning}
""",
            "What is the seed's and what differs": f"""\
Kept: the tracks as channels of one 2D CNN over (time x pitch), four convolutions and the transposed path
back, no dense layers, the next block predicted from the last one; all tracks predicted together (the seed's
"dependent instrument sampling").

- **Four chorale voices, not LPD-5's five instruments**: the project ships music21's chorales; the figures
  are on them. {c.keys} pitches per track, not 128.
- **Blocks of {c.window} 16ths, not 20 steps at 24 per beat**: the seed's 20 steps were less than one beat;
  livegen's blocks tile time from a bar line and a 4/4 bar is 16 16ths, so a block is a bar and blocks join
  on bar lines.
- **One line per track** (a softmax over a rest and the pitches, cross-entropy), not a multi-hot roll per
  instrument: the seed's own finding was that sampling several notes per instrument sounds cluttered. A
  voice repeating a pitch over consecutive frames reads as one held note (a roll has no onsets).
- **Sized for two CPU cores**: {channels} channels (the seed does not give its sizes), kernel {c.kernel};
  {t["epochs_run"]} epochs (best {t["best_epoch"]}; the seed: 100 on an M1 laptop), {t["training_seconds"]:.0f} s
  with {t["threads"]} thread(s). The seed's loss and optimiser are not stated; this uses the cross-entropy of
  `multitrack-rnn` and Adam. Trained with `python -m export train multitrack-cnn --data {p["data"]} --epochs
  {t["max_epochs"]} --patience {t["patience"]} --threads {t["threads"]}` (the default sizes; early stopping),
  {t["total_seconds"] / 60:.1f} minutes in all on a shared two-core machine.
""",
            "Held-out figures": f"""\
Every block of each held-out piece (one starting every beat), its true context in:

| next block, per track and frame | accuracy |
|---|---:|
| this model (its most likely class) | {m["held_out_accuracy"]:.3f} |
| baseline: hold the last context frame | {m["baseline_repeat_last_frame_accuracy"]:.3f} |
| this model, where the voice differs from the last context frame | {m["held_out_accuracy_where_changing"]:.3f} |
| this model, the block's first frame | {m["held_out_accuracy_first_frame"]:.3f} |
| this model, the block's last frame | {m["held_out_accuracy_last_frame"]:.3f} |

Cross-entropy per track and frame: {m["held_out_cross_entropy"]:.3f}. Density of what the host plays from a
validation context at the default temperature: {m["val_density_notes_per_beat"]:.2f} notes per beat, against
{m["val_density_true_notes_per_beat"]:.2f} in the pieces; at other shares drawn afresh (at most {DENSITY_BLOCKS}
validation blocks, each from its true context):

| redraw | {" | ".join(f"{h:g}" for h in densities)} |
|---|{"---:|" * len(densities)}
| notes per beat | {" | ".join(f"{d:.2f}" for d in densities.values())} |

Export parity: the largest difference between onnxruntime and PyTorch in float64 is
{m["parity_max_abs_diff"]:.2g} (accepted: 1e-4).
""",
        },
    )
