"""Export of ``crnngan``: the generator graph, its parity, the manifest and the model card.

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
from export.crnngan.model import NAME, CrnnGanConfig, Generator, GeneratorGraph, draw_noise, generator_from_checkpoint
from export.crnngan.train import tunes_monophonic
from export.seed import write_seed
from livegen.models.crnngan import FEATURES
from livegen.music.time import SIXTEENTH

log = logging.getLogger(__name__)


def parity(model: Generator, path: Path, seed: int = 0) -> float:
    """Largest |onnxruntime - PyTorch float64| of the generated phrases, for a batch of 1 and of 8."""
    graph = session(path)
    exact = Generator(model.config).double().eval()
    exact.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    c = model.config
    rng = torch.Generator().manual_seed(seed)
    worst = 0.0
    with torch.no_grad():
        for batch, scale in ((1, 1.0), (8, 1.0), (8, 2.0)):
            noise = draw_noise((batch, c.window, c.noise), rng) * scale
            (notes,) = graph.run(["notes"], {"noise": noise.numpy().astype(np.float32)})
            reference = exact(noise.double()).numpy()
            worst = max(worst, float(np.abs(notes - reference).max()))
    return worst if np.isfinite(worst) else float("inf")


def export_crnngan(checkpoint_path: Path, out: Path, *, name: str | None = None, version: str = "1.0.0") -> Path:
    checkpoint = read_checkpoint(checkpoint_path, NAME)
    model = generator_from_checkpoint(checkpoint, checkpoint_path)
    c = model.config
    name = name or out.name
    provenance = checkpoint["provenance"]
    standard = checkpoint["standard"]

    def build(staging: Path) -> tuple[dict[str, Any], str]:
        batch = torch.export.Dim("batch")
        export_graph(
            GeneratorGraph(model),
            (torch.zeros(2, c.window, c.noise),),
            staging / "generator.onnx",
            inputs=["noise"],
            outputs=["notes"],
            dynamic={"noise": {0: batch}},
        )
        diff = parity(model, staging / "generator.onnx")
        log.info("parity: max |onnxruntime - torch float64| = %.3g", diff)
        check_parity(diff, str(staging))
        pitch_min, pitch_max = int(provenance["pitch_min"]), int(provenance["pitch_max"])
        held_out = sample_tunes(checkpoint["held_out_sample"])
        seed_tune = write_seed(staging / "seed.mid", held_out, pitch_min, pitch_max)
        # A checkpoint written before training recorded it: the held-out sample tells.
        monophonic = bool(provenance.get("monophonic", tunes_monophonic(held_out)))
        metrics = {**checkpoint["metrics"], "parity_max_abs_diff": diff}
        training = checkpoint["training"]
        manifest: dict[str, Any] = {
            "schema": 1,
            "name": name,
            "family": NAME,
            "kind": "block",
            "version": version,
            "description": (
                f"C-RNN-GAN: LSTM generator ({c.layers} x {c.hidden}) of {c.window}-note phrases laid into "
                f"{c.block_frames // 16}-bar blocks, trained on {provenance['data']}; unconditional, the host keeps "
                "the best-fitting of several phrases."
            ),
            "seed_phrase": "seed.mid",
            "representation": {
                "grid": SIXTEENTH,
                "block_frames": c.block_frames,
                "notes": c.window,
                "noise": c.noise,
                "features": list(FEATURES),
                "feature_mean": [float(v) for v in standard["mean"]],
                "feature_scale": [float(v) for v in standard["scale"]],
                "max_hold": c.max_hold,
                "monophonic": monophonic,
                "pitch_min": pitch_min,
                "pitch_max": pitch_max,
            },
            "graphs": {
                "generator": {
                    "file": "generator.onnx",
                    "inputs": [tensor("noise", ["batch", c.window, c.noise])],
                    "outputs": [tensor("notes", ["batch", c.window, 4])],
                }
            },
            "parameters": {
                "temperature": {"default": 1.0, "min": 0.05, "max": 4.0},
                "top_p": {"default": 0.95, "min": 0.05, "max": 1.0},
            },
            "training": {
                "data": provenance["data"],
                "corpus_fingerprint": provenance["corpus_fingerprint"],
                "tunes_train": provenance["tunes_train"],
                "tunes_validation": provenance["tunes_validation"],
                "tunes_held_out": provenance["tunes_held_out"],
                "phrases_train": provenance["phrases_train"],
                "split": "by tune (sha256 of the tune name): 80% train, 10% validation, 10% held-out",
                "hidden": c.hidden,
                "layers": c.layers,
                "notes": c.window,
                "noise": c.noise,
                "batch_size": c.batch_size,
                "optimizer": (
                    f"{'SGD' if c.optimizer == 'sgd' else 'Adam (beta1 0.5)'} lr {c.learning_rate:g}, "
                    f"L2 {c.weight_decay:g}, gradient norm clipped at {c.grad_clip:g}"
                ),
                "loss": (
                    "pretraining: squared error of the next event; adversarial: discriminator binary cross-entropy, "
                    f"generator feature matching; discriminator frozen while its loss < {c.freeze_ratio:g} x the "
                    "generator's -log D(G(z))"
                ),
                "pretrain_epochs": training["pretrain_epochs_run"],
                "epochs": training["epochs_run"],
                "batches_per_epoch": c.batches_per_epoch,
                "best_epoch": training["best_epoch"],
                "max_epochs": training["max_epochs"],
                "patience": training["patience"],
                "training_seconds": round(float(training["total_seconds"]), 1),
                "threads": training["threads"],
                "seed": provenance["seed"],
                "seed_tune": seed_tune,
                "torch": provenance["torch_version"],
            },
            "metrics": {k: float(v) for k, v in metrics.items()},
        }
        return manifest, crnngan_card(name, checkpoint, metrics, monophonic)

    return write_package(out, name, build)


def crnngan_card(name: str, checkpoint: Mapping[str, Any], m: Mapping[str, float], monophonic: bool) -> str:
    c = CrnnGanConfig.from_dict(checkpoint["config"])
    p, t = checkpoint["provenance"], checkpoint["training"]
    bars = c.block_frames // 16
    rows = [
        ("pretraining: validation squared error (standardised, full length)", f"{m['pretrain_best_val_mse']:.4f}"),
        ("held-out next-event squared error", f"{m['held_out_next_event_mse']:.4f}"),
        ("last epoch: discriminator loss", f"{m['final_d_loss']:.3f}"),
        ("last epoch: generator loss `-log D(G(z))`", f"{m['final_g_loss']:.3f}"),
        ("last epoch: feature matching loss", f"{m['final_fm_loss']:.4f}"),
        ("held-out: discriminator accuracy on real phrases", f"{m['held_out_d_accuracy_real']:.3f}"),
        ("held-out: discriminator accuracy on generated phrases", f"{m['held_out_d_accuracy_fake']:.3f}"),
        (
            "validation distance of generated to real phrases: after pretraining / best epoch",
            f"{m['pretrained_val_distance']:.4f} / {m['best_val_distance']:.4f}",
        ),
        ("held-out: distance of generated to real phrases", f"{m['held_out_distance']:.4f}"),
        (
            "notes per beat in a block: generated / held-out",
            f"{m['generated_notes_per_beat']:.2f} / {m['held_out_notes_per_beat']:.2f}",
        ),
        ("mean pitch: generated / held-out", f"{m['generated_mean_pitch']:.1f} / {m['held_out_mean_pitch']:.1f}"),
        (
            "pitch classes per block: generated / held-out",
            f"{m['generated_pitch_classes_per_block']:.2f} / {m['held_out_pitch_classes_per_block']:.2f}",
        ),
    ]
    line = (
        " The training tunes are single lines (no two notes start together), so the package says"
        " `monophonic = true`: a note starting on the same 16th as the one before moves to the next 16th, and"
        " each note ends where the next begins (the generator's steps are continuous; rounding alone would"
        " make chords of the short ones)."
        if monophonic
        else ""
    )
    table = "\n".join(f"| {label} | {value} |" for label, value in rows)
    optimizer = (
        f"SGD, learning rate {c.learning_rate:g} (the seed's)"
        if c.optimizer == "sgd"
        else f"Adam, learning rate {c.learning_rate:g}, instead of the seed's SGD"
    )
    dynamics = (
        "music21's folk tunes have no dynamics, so every note has velocity 90 and the generator learns a constant"
        if str(p["data"]).startswith("corpus:")
        else "velocities are read from the MIDI files"
    )
    return render_card(
        name,
        """\
A `crnngan` model (livegen `block` kind) after seed 003's C-RNN-GAN: a recurrent generator and a
bidirectional recurrent discriminator trained adversarially on sequences of note events.
""",
        {
            "Data": f"""\
`{p["data"]}`: {p["tunes_train"]} tunes for training, {p["tunes_validation"]} for validation and
{p["tunes_held_out"]} held out (split by tune name, so `livegen evaluate` seeds come from tunes the model
never saw). A training phrase is {c.window} consecutive notes starting at a whole beat of a tune (one every
{c.stride_beats} beat(s): {p["phrases_train"]} phrases). Each note is the seed's four values: **duration**,
**tone as a frequency** (Hz), **intensity** (velocity) and **time since the last note** (in beats; the
first note's is its distance from the phrase's beat); durations and steps are clipped at {c.beats_max:g}
beats, and every value is standardised with the training mean and deviation. Intensity: {dynamics}.
""",
            "Model and training: what is the seed's and what differs": f"""\
Kept from the seed:

- the generator is a unidirectional LSTM whose input at each step is a random vector concatenated with
  its own output at the previous step; a dense layer shared over time gives the four values;
- the discriminator is a bidirectional LSTM with a dense layer shared over time, one sigmoid per step,
  averaged over the sequence into its decision;
- pretraining of the generator on next-event prediction with squared error ({t["pretrain_epochs_run"]}
  epochs; the seed: 6), with the seed's schedule of sequence lengths growing from short to {c.window};
- L2 regularisation of the weights of both networks ({c.weight_decay:g}; the seed gives no value), gradients
  clipped at norm {c.grad_clip:g} (Mogren's code);
- **feature matching**: the generator minimises the squared distance between the discriminator's mean
  last-layer LSTM output over real and over generated phrases;
- **freezing**: the discriminator is not updated on a batch where its loss is below {c.freeze_ratio:g} x the
  generator's `-log D(G(z))` (it was frozen on {100 * m["final_d_frozen_share"]:.0f}% of the last epoch's
  batches).

Scaled down for two CPU cores (the seed: 2 LSTM layers of 350 units in both networks, long sequences of
classical piano music, on a GPU):

- **{c.layers} layers of {c.hidden} units** in each network and phrases of **{c.window} notes**; noise of
  {c.noise} values per step, uniform in [-1, 1];
- **{optimizer}**. The seed's minibatch SGD at learning rate 0.1 is in the exporter
  (`CrnnGanConfig(optimizer="sgd", learning_rate=0.1)`), but in this budget it does not move the generator:
  in a trial on 1,500 training tunes, after the same pretraining and 10 adversarial epochs (500 batches), the SGD
  generator still played the pretrained average phrase (1.9 pitch classes per block against 5.1 in the
  tunes; the validation distance rose from 0.44 to 0.85), while Adam (learning rate 1e-3, beta1 0.5) brought
  the distance from 0.45 to 0.15 in 15 epochs. The seed trained for hundreds of epochs on a GPU;
- an adversarial epoch is {c.batches_per_epoch} batches of {c.batch_size} phrases, not a pass over the data;
  {t["epochs_run"]} epochs ran (at most {t["max_epochs"]}, stopping after {t["patience"]} without a lower
  validation distance, never before {c.min_epochs}); the generator kept is that of epoch {t["best_epoch"]},
  whose phrases were nearest the validation phrases (the mean 1-D earth mover's distance of the four
  standardised values and of the melodic interval);
- training took {t["total_seconds"] / 60:.1f} minutes on {t["threads"]} thread(s).
""",
            "How it plays": f"""\
The host draws `candidates` noise batches (uniform noise times the temperature) and runs the generator
once for all of them. Each phrase is laid from the start of a **{bars}-bar block** ({c.block_frames}
16ths): note k starts at the sum of the times since the last note up to k, rounded to the performer's grid
(quarters, eighths or 16ths: the coarsest holding 85% of their onsets of the last four bars; 16ths before
anyone played), lasts its duration rounded to 16ths (at least one, at most {c.max_hold}), and takes the
nearest MIDI pitch of its frequency that the key allows: the jam's `--key` when one is given, else the key
the performer plays in (the major or natural-minor scale holding most of their notes of the last four
bars); in a single line a pitch repeats only where the frequency stayed within half a semitone, so the
generator's contour survives the rounding. Notes from the block's end on are dropped.{line} The model is
unconditional: it never hears the performer. The host keeps
the phrase that best fits the last bar heard (pitch classes, register, density, and its share of notes in
the performer's key). Each block is a new phrase from new noise, so there is no continuity across blocks
beyond what the selection gives.
""",
            "Limits": """\
- **Pitch.** The generator outputs a continuous frequency with no notion of key; rounded to the nearest
  semitone alone, a phrase drifts through chromatic neighbours of the key. The host rounds each frequency
  to the nearest pitch of the performer's key instead, so the key is the host's, not the model's: before
  anyone has played there is no key and the notes are rounded to the nearest semitone.
- **Rhythm.** Steps and durations are continuous too. Rounded to 16ths, uneven values become
  syncopations the tunes rarely have; the host rounds onsets to the performer's grid instead, so, as with
  the key, the metre is the host's: where the performer plays 16ths the phrase's onsets scatter over them.
  Durations are the generator's, often shorter than the gap to the next note (staccato).
- **No memory across blocks.** Every block is a fresh phrase from fresh noise.
""",
            "Figures": f"""\
| | |
|---|---:|
{table}

The discriminator's figures are from the discriminator of the last epoch (the generator kept may be an
earlier one). Export parity: the largest difference between onnxruntime and PyTorch in float64 over the
generated phrases (standardised) is {m["parity_max_abs_diff"]:.2g} (accepted: 1e-4).
""",
        },
    )
