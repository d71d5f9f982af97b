"""Export of ``midigan``: the generator graph, its parity, the manifest and the model card.

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
from export.midigan.model import NAME, Generator, MidiGanConfig, model_from_checkpoint
from export.seed import write_seed
from livegen.models.midigan import ATTRIBUTES, GRAPH
from livegen.music.time import SIXTEENTH

log = logging.getLogger(__name__)


FILE = "generator.onnx"


#: The package's default temperature (the scale of the noise). ``livegen evaluate --split validation --seeds 32
#: --bars 8`` on the bundled corpus:folk model, MGEval overlap of pitch classes / melodic intervals / inter-onset
#: intervals: 0.121 / 0.384 / 0.230 at 0.5, 0.266 / 0.337 / 0.270 at 1, 0.294 / 0.309 / 0.096 at 1.5,
#: 0.224 / 0.139 / 0.102 at 2 (random notes: 0.537 / 0.573 / 0.105). 1, the seed's noise, is kept.
DEFAULT_TEMPERATURE = 1.0


#: The same figures for the card: (temperature, pitch classes, melodic intervals, inter-onset intervals),
#: measured on the data whose fingerprint is :data:`TEMPERATURES_MEASURED_ON`; a card for other data
#: does not show them.
TEMPERATURES_MEASURED_ON = "8c2ffeb7d45e30ac"


VALIDATION_TEMPERATURES = (
    (0.5, 0.121, 0.384, 0.230),
    (1.0, 0.266, 0.337, 0.270),
    (1.5, 0.294, 0.309, 0.096),
    (2.0, 0.224, 0.139, 0.102),
)


def parity(model: Generator, path: Path, config: MidiGanConfig, seed: int = 0) -> float:
    """Largest |onnxruntime - PyTorch float64| of the generator's notes: single rows and a batch of 256, at noise
    scales 0.5, 1 and 2 (the host's temperatures)."""
    graph = session(path)
    latent = config.latent
    exact = Generator(config).double().eval()
    exact.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in model.state_dict().items()})
    rng = np.random.default_rng(seed)
    worst = 0.0
    with torch.no_grad():
        for scale in (0.5, 1.0, 2.0):
            z = rng.standard_normal((256, latent)) * scale
            for batch in (z[:1], z[1:2], z):
                (notes,) = graph.run(["notes"], {"z": batch.astype(np.float32)})
                reference = exact(torch.from_numpy(batch.astype(np.float32).astype(np.float64))).numpy()
                worst = max(worst, float(np.abs(notes - reference).max()))
    return worst if np.isfinite(worst) else float("inf")


def export_midigan(checkpoint_path: Path, out: Path, *, name: str | None = None, version: str = "1.0.0") -> Path:
    """Export the generator, check parity, write the package ``out``."""
    checkpoint = read_checkpoint(checkpoint_path, NAME)
    model = model_from_checkpoint(checkpoint, checkpoint_path)
    c = MidiGanConfig.from_dict(checkpoint["config"])
    name = name or out.name
    sample = sample_tunes(checkpoint["held_out_sample"])

    def build(staging: Path) -> tuple[dict[str, Any], str]:
        batch = torch.export.Dim("batch")
        export_graph(
            model,
            (torch.zeros(2, c.latent),),
            staging / FILE,
            inputs=["z"],
            outputs=["notes"],
            dynamic={"z": {0: batch}},
        )
        diff = parity(model, staging / FILE, c)
        log.info("parity: max |onnxruntime - torch float64| = %.3g", diff)
        check_parity(diff, str(staging))
        provenance = checkpoint["provenance"]
        seed_tune = write_seed(staging / "seed.mid", sample, provenance["pitch_min"], provenance["pitch_max"])
        metrics = {**checkpoint["metrics"], "parity_max_abs_diff": diff}
        t = checkpoint["training"]
        manifest: dict[str, Any] = {
            "schema": 1,
            "name": name,
            "family": NAME,
            "kind": "block",
            "version": version,
            "description": (
                f"Dense GAN of single notes (noise {c.latent} -> {'-'.join(map(str, c.widths))} -> pitch, step, "
                f"duration), laid one after another into bars; trained on {provenance['data']}."
            ),
            "seed_phrase": "seed.mid",
            "representation": {
                "grid": SIXTEENTH,
                "block_frames": c.block_frames,
                "context_frames": c.context_frames,
                "latent": c.latent,
                "notes_per_block": c.notes_per_block,
                "attributes": list(ATTRIBUTES),
                "time_unit": "beat",
                "mean": [float(v) for v in checkpoint["standard"]["mean"]],
                "std": [float(v) for v in checkpoint["standard"]["std"]],
                "tanh_reach": [float(v) for v in checkpoint["standard"].get("reach", [1.0] * len(ATTRIBUTES))],
                "beats_max": c.beats_max,
                "pitch_min": int(provenance["pitch_min"]),
                "pitch_max": int(provenance["pitch_max"]),
            },
            "graphs": {
                GRAPH: {
                    "file": FILE,
                    "inputs": [tensor("z", ["batch", c.latent])],
                    "outputs": [tensor("notes", ["batch", len(ATTRIBUTES)])],
                }
            },
            "parameters": {
                "temperature": {"default": DEFAULT_TEMPERATURE, "min": 0.05, "max": 4.0},
                "top_p": {"default": 1.0, "min": 0.05, "max": 1.0},
            },
            "training": {
                "data": provenance["data"],
                "corpus_fingerprint": provenance["corpus_fingerprint"],
                "tunes_train": provenance["tunes_train"],
                "tunes_validation": provenance["tunes_validation"],
                "tunes_held_out": provenance["tunes_held_out"],
                "notes_train": provenance["notes_train"],
                "split": "by tune (sha256 of the tune name): 80% train, 10% validation, 10% held-out",
                "loss": "binary cross-entropy (discriminator: real 1, generated 0; generator: generated 1)",
                "optimiser": (
                    f"Adam lr {c.learning_rate:g} (generator), {c.d_learning_rate or c.learning_rate:g} (discriminator)"
                ),
                "stabilisers": ", ".join(midigan_stabilisers(c)) or "none (the seed's recipe)",
                "batch_size": c.batch_size,
                "generator": (
                    f"{c.latent} -> {' -> '.join(map(str, c.widths))} (BN, LeakyReLU {c.leaky_slope:g}) -> 3 tanh"
                ),
                "discriminator": (
                    f"3 -> {' -> '.join(map(str, reversed(c.widths)))} (LeakyReLU {c.leaky_slope:g}, "
                    f"dropout {c.dropout:g}) -> 1 sigmoid"
                ),
                "epochs": t["epochs_run"],
                "best_epoch": t["best_epoch"],
                "max_epochs": t["max_epochs"],
                "patience": t["patience"],
                "training_seconds": round(float(t["training_seconds"]), 1),
                "threads": t["threads"],
                "seed": provenance["seed"],
                "seed_tune": seed_tune,
                "torch": provenance["torch_version"],
            },
            "metrics": {k: float(v) for k, v in metrics.items()},
        }
        if provenance.get("limit") is not None:
            manifest["training"]["limit"] = provenance["limit"]
        return manifest, midigan_card(name, checkpoint, metrics)

    return write_package(out, name, build)


def midigan_stabilisers(c: MidiGanConfig) -> list[str]:
    """Short names of the stabilisers a config uses (the manifest's ``training.stabilisers``)."""
    names = []
    if c.spectral_norm:
        names.append("spectral normalisation (discriminator)")
    if c.minibatch_std:
        names.append("minibatch standard deviation (discriminator)")
    if c.d_learning_rate and c.d_learning_rate != c.learning_rate:
        names.append(f"two timescales (discriminator lr {c.d_learning_rate:g}, generator {c.learning_rate:g})")
    return names


def midigan_stabiliser_lines(c: MidiGanConfig) -> list[str]:
    """The card's lines on each stabiliser in use."""
    lines = []
    if c.spectral_norm:
        lines.append(
            "**Spectral normalisation** (Miyato et al. 2018) of every dense layer of the discriminator: each weight "
            "matrix divided by its largest singular value, so the discriminator cannot sharpen without bound and the "
            "generator keeps a gradient."
        )
    if c.minibatch_std:
        lines.append(
            "**Minibatch standard deviation** (Karras et al. 2018), a form of minibatch discrimination: the "
            "discriminator's last layer also reads how much the batch's notes differ (the mean standard deviation "
            "of its last hidden layer over the batch, real and generated batches apart), so a generator whose notes "
            "gather around a few values is told apart by that alone. One more input to the last layer; the "
            "discriminator is not shipped."
        )
    if c.d_learning_rate and c.d_learning_rate != c.learning_rate:
        lines.append(
            f"**Two timescales** (Heusel et al. 2017): Adam at {c.d_learning_rate:g} for the discriminator and "
            f"{c.learning_rate:g} for the generator (the seed: 1e-4 for both)."
        )
    return lines


def midigan_card(name: str, checkpoint: Mapping[str, Any], m: Mapping[str, float]) -> str:
    c = MidiGanConfig.from_dict(checkpoint["config"])
    p, t = checkpoint["provenance"], checkpoint["training"]
    mean, std = checkpoint["standard"]["mean"], checkpoint["standard"]["std"]
    reach = checkpoint["standard"].get("reach", [1.0] * len(ATTRIBUTES))
    widths = ", ".join(map(str, c.widths))
    seed_sizes = c.widths == (128, 256, 512)
    sizes = (
        "the seed's sizes"
        if seed_sizes
        else f"**scaled down** from the seed's 128, 256, 512 to {widths} (and the discriminator in reverse)"
    )
    history = checkpoint.get("history", [])
    rows = "\n".join(
        f"| {int(h['epoch'])} | {h['d_loss']:.3f} | {h['g_loss']:.3f} | {h['val_d_accuracy_real']:.3f} "
        f"| {h['val_d_accuracy_fake']:.3f} | {h['val_wasserstein']:.4f} |"
        for h in history
    )
    attribute_rows = "\n".join(
        f"| {a} | {m[f'held_out_{a}_mean']:.2f} ± {m[f'held_out_{a}_std']:.2f} "
        f"| {m[f'generated_{a}_mean']:.2f} ± {m[f'generated_{a}_std']:.2f} "
        f"| {m[f'held_out_{a}_tv']:.3f} | {m[f'baseline_training_notes_{a}_tv']:.3f} |"
        for a in ATTRIBUTES
    )
    per_epoch = int(p["notes_train"]) // c.batch_size
    temperatures = (
        f"default is {DEFAULT_TEMPERATURE:g}, the seed's noise (not tuned on this data: compare "
        "`livegen evaluate --split validation --temperature T`)"
    )
    if p.get("corpus_fingerprint") == TEMPERATURES_MEASURED_ON:
        temperatures = (
            f"default is {DEFAULT_TEMPERATURE:g}, the seed's noise; on the validation tunes of the bundled folk model "
            "(`livegen evaluate --split validation --seeds 32 --bars 8`), MGEval overlap of pitch classes, melodic "
            "intervals and inter-onset intervals: "
            + ", ".join(f"{pcs:.3f} / {iv:.3f} / {ioi:.3f} at {t:g}" for t, pcs, iv, ioi in VALIDATION_TEMPERATURES)
            + "; random notes 0.537 / 0.573 / 0.105"
        )
    lo = [mean[k] - reach[k] * std[k] for k in range(3)]
    hi = [mean[k] + reach[k] * std[k] for k in range(3)]
    if all(r == 1.0 for r in reach):
        tanh_text = f"""- **What `tanh` on standardised data means**: the generator cannot leave mean ± 1 standard
  deviation, i.e. pitches {lo[0]:.1f}-{hi[0]:.1f}, steps and durations up to {hi[1]:.2f} and {hi[2]:.2f} beats. Of the
  held-out notes, {100 * m["held_out_share_within_tanh_reach"]:.0f}% lie inside that box in all three
  attributes; the model cannot play the rest (lower and higher pitches, longer steps and durations).
  This is the seed's design, kept as it is."""
    else:
        tanh_text = f"""- **Standardised data scaled into `tanh`'s reach** (the seed standardises to unit deviation,
  which a `tanh` output cannot leave: its MidiGAN could only play within mean ± 1 deviation, e.g. MIDI 65-76 on
  these tunes): each standardised attribute is divided by {", ".join(f"{r:.2f}" for r in reach)} (pitch, step,
  duration; the package's `representation.tanh_reach`), so that the training notes' farthest value lands at
  `tanh` = ±{c.tanh_fit:g}. The generator's reach is pitches {lo[0]:.1f}-{hi[0]:.1f}, steps and durations up to
  {hi[1]:.2f} and {hi[2]:.2f} beats; {100 * m["held_out_share_within_tanh_reach"]:.0f}% of the held-out notes lie
  inside it in all three attributes."""
    stabilisers = "\n".join(f"- {line}" for line in midigan_stabiliser_lines(c))
    if stabilisers:
        stabilisers = "\nGAN stabilisers that keep the seed's networks and loss:\n\n" + stabilisers + "\n"
    return render_card(
        name,
        """\
A `midigan` model (livegen `block` kind) after MidiGAN, seed 000 §4.2 (*Comparing Different Neural
Network Architectures for Music Generation*): a GAN whose generator turns a noise vector into **one
note**, its pitch, step (beats since the previous note began) and duration.
""",
        {
            "Data": f"""\
`{p["data"]}`: {p["tunes_train"]} tunes for training, {p["tunes_validation"]} for validation,
{p["tunes_held_out"]} held out (split by a hash of the tune name, as for every livegen model, so
`livegen evaluate` seeds come from tunes the model never saw). Every note after a tune's first is one
sample, {p["notes_train"]} in all; step and duration are clipped to {c.beats_max:g} beats (one bar), then
each attribute is standardised with the training notes' mean and standard deviation (pitch
{mean[0]:.2f} ± {std[0]:.2f}, step {mean[1]:.3f} ± {std[1]:.3f} beats, duration {mean[2]:.3f} ± {std[2]:.3f}
beats; the package's `representation.mean` and `std`).
""",
            "Model and training: what is the seed's and what differs": f"""\
Kept: noise of {c.latent}; a generator of dense layers {widths}, each followed by batch normalisation and a
LeakyReLU, and a dense `tanh` output of the three standardised attributes; a discriminator of dense
layers {", ".join(map(str, reversed(c.widths)))}, each followed by dropout {c.dropout:g}, and a sigmoid
output; binary cross-entropy for both; Adam at {c.learning_rate:g} for both; batches of {c.batch_size}.
Layer sizes: {sizes}. Only the generator is shipped. What is scaled down for two CPU cores: only the
number of epochs (below), so that training fits about 20 minutes on one thread of a machine shared with
other jobs.

- **Not in the seed, chosen here**: LeakyReLU slope {c.leaky_slope:g} in both networks (the seed names no
  slope, and no activation for the discriminator's layers); the sigmoid sits inside the loss
  (`BCEWithLogits`, the same function computed stably).
- **Data**: music21's folk tunes instead of 5-10 MAESTRO piano files (the project's monophonic corpus; a
  GAN of independent notes has no way to place chords anyway).
- **Epochs and model selection**: {t["epochs_run"]} epochs ran (passes over the training notes, {per_epoch}
  batches each; the seed ran 25 or 50 over its 5 or 10 files), {t["training_seconds"]:.0f} s wall time
  ({t["total_seconds"]:.0f} s with loading and evaluation) on {t["threads"]} thread(s); the generator kept is
  epoch {t["best_epoch"]}'s, the one whose notes (drawn in inference mode, as exported) lie nearest the
  validation notes (mean 1-D Wasserstein distance over the three standardised attributes). The seed
  chose its models by listening.
{tanh_text}
{stabilisers}
| epoch | D loss | G loss | D accuracy, real validation notes | D accuracy, generated notes | validation Wasserstein |
|---:|---:|---:|---:|---:|---:|
{rows}

Final figures (epoch {t["epochs_run"]}, training-batch means): discriminator loss {m["final_d_loss"]:.3f},
generator loss {m["final_g_loss"]:.3f} (chance, a discriminator that cannot tell: 1.386 and 0.693). On held-out
notes the kept discriminator calls {100 * m["held_out_d_accuracy_real"]:.0f}% of real notes real and
{100 * m["held_out_d_accuracy_fake"]:.0f}% of generated notes fake (the seed reports these for ImageGAN;
50% / 50% would be a generator it cannot tell from the data).
""",
            "How the generated notes compare with held-out notes": f"""\
Attributes as the host plays them (pitch rounded, step and duration in 16ths, at least one). Total
variation distance of the histograms: 0 = the same, 1 = disjoint; the training notes' own distance to
the held-out notes is the ceiling for any model of independent notes.

| attribute | held-out (mean ± sd) | generated (mean ± sd) | generated vs held-out (TV) | training vs held-out (TV) |
|---|---:|---:|---:|---:|
{attribute_rows}

Generated pitches span {m["generated_pitch_min"]:.0f}-{m["generated_pitch_max"]:.0f}. Laid one after another, the
generated steps fill a bar with {m["generated_notes_per_bar"]:.1f} notes on average (held-out steps:
{m["held_out_notes_per_bar"]:.1f}).
""",
            "How livegen plays it: notes laid into bars, and what that means for musical structure": f"""\
The seed generated each note on its own from its own noise vector and strung them into a song; livegen
does the same one bar at a time. For a bar it draws {c.notes_per_block} notes per candidate (all candidates
in one call of the graph) and lays them one after another: the first its step after the last note heard
before the bar, each next one its step after the one before, on the 16th grid, until the bar is full; a
note ends where the next begins; steps are rounded to the performer's grid (quarters, eighths or 16ths,
the coarsest holding 85% of their recent onsets). Each generated pitch, a continuous number, becomes the
nearest pitch the key allows: the jam's `--key` when one is given, else the key the performer plays in
(the major or natural-minor scale holding most of their notes of the last four bars; before anyone has
played, the nearest semitone), a pitch repeating only where the numbers are within half a semitone. The
block host then draws `candidates` such bars (8 by default) and keeps the one whose
pitch classes, register and density best fit the bar just heard.

What this means musically:

- **No melody beyond the single note.** Consecutive pitches are independent draws, so the intervals are
  those of two random notes of the corpus's pitch distribution: no stepwise motion, no contour, no
  cadence. Pitch is one continuous number, so the generator has no notion of a scale: its pitches follow
  the corpus as a whole (all keys of the folk tunes pooled) as far as a smooth distribution can; the key
  its notes keep to is the host's rounding, not the model's.
- **Rhythm without metre.** Steps are drawn independently too, so onsets drift across the beat: there is
  no preference for downbeats, no repeated rhythmic figure, and the bar lines are where livegen cuts,
  not where the music articulates. The mix of step lengths is the corpus's as far as the generator
  learned it (the table above).
- **Structure comes only from the host.** Choosing among candidates the bar that best fits what was just
  heard pulls the pitch classes toward the performer's key and the register and density toward theirs,
  bar by bar; within a bar nothing connects the notes. Over several bars nothing repeats on purpose.

The Evaluation below scores whole continuations against what the held-out tunes really play. A model of
independent notes is not expected to match a tune's pitch classes and intervals: each tune keeps to one
key and moves mostly by step, while these notes come from all keys pooled and leap at random; random notes
over the seed's own range at least share the seed's register and spread. The seed found the same by ear:
"the notes still sounding rather random", "dissonant".

The temperature scales the noise: below 1 the notes gather at the generator's most common note, above 1
they spread to the edges of its range (never past `tanh`'s reach, above). The {temperatures}. Top-p truncates the
noise (each component redrawn until it lies in the central top-p of the normal distribution; the
package's default is 1, no truncation).

Export parity: the largest difference between onnxruntime and PyTorch in float64 over single noise vectors
and a batch of 256, at noise scales 0.5, 1 and 2, is {m["parity_max_abs_diff"]:.2g} (accepted: 1e-4).
""",
        },
    )
