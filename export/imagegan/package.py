"""Export of ``imagegan``: the generator graph, its parity, the manifest and the model card.

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
from export.imagegan.model import BAR_FRAMES, NAME, Generator, ImageGanConfig, models_from_checkpoint, sample_images
from export.imagegan.train import TEMPERATURES, choose_temperature, make_images, texture_figures
from export.seed import write_seed
from livegen.music.time import SIXTEENTH

log = logging.getLogger(__name__)


def parity(generator: Generator, path: Path, latents: np.ndarray) -> float:
    """Largest |onnxruntime - PyTorch float64| / max(1, |PyTorch|) of the logits, each latent alone and all as one
    batch: relative where a logit is above 1 in size, since a trained generator's pixel logits run to tens (a
    float32 sum of hundreds of terms of that size is exact to about 1e-6 of it, not to 1e-6 absolute)."""
    graph = session(path)
    exact = Generator(generator.config).double().eval()
    exact.load_state_dict({k: v.double() for k, v in generator.state_dict().items()})
    worst = 0.0
    with torch.no_grad():
        for z in [latents[i : i + 1] for i in range(len(latents))] + [latents]:
            reference = exact(torch.from_numpy(z).double()).numpy()
            (logits,) = graph.run(["logits"], {"z": z.astype(np.float32)})
            worst = max(worst, float((np.abs(logits - reference) / np.maximum(1.0, np.abs(reference))).max()))
    return worst if np.isfinite(worst) else float("inf")


def export_imagegan(checkpoint_path: Path, out: Path, *, name: str | None = None, version: str = "1.0.0") -> Path:
    """Export the generator alone as one graph (``z`` -> ``logits``), check parity, write the package ``out``."""
    checkpoint = read_checkpoint(checkpoint_path, NAME)
    generator, _ = models_from_checkpoint(checkpoint, checkpoint_path)
    c = generator.config
    name = name or out.name
    latents = np.random.default_rng(0).standard_normal((16, c.latent)).astype(np.float32)
    latents[-1] *= 3.0  # far from the mean too

    def build(staging: Path) -> tuple[dict[str, Any], str]:
        export_graph(
            generator,
            (torch.zeros(2, c.latent),),
            staging / "generator.onnx",
            inputs=["z"],
            outputs=["logits"],
            dynamic={"z": {0: torch.export.Dim("batch")}},
        )
        diff = parity(generator, staging / "generator.onnx", latents)
        log.info(
            "parity: %d latents alone and batched: max relative |onnxruntime - torch float64| = %.3g",
            len(latents),
            diff,
        )
        check_parity(diff, str(staging))
        provenance = checkpoint["provenance"]
        sample = sample_tunes(checkpoint["held_out_sample"])
        seed_tune = write_seed(staging / "seed.mid", sample, c.pitch_min, c.pitch_min + c.keys - 1)
        temperature, sweep = choose_temperature(generator, float(checkpoint["metrics"]["held_out_true_notes_per_beat"]))
        log.info("default temperature %g (%s)", temperature, ", ".join(f"{k} {v:.3f}" for k, v in sweep.items()))
        drawn = sample_images(generator, 256, 1, temperature)
        held = make_images(sample, c).numpy()
        held = held[np.random.default_rng(0).permutation(len(held))]
        texture = {f"generated_{k}": v for k, v in texture_figures(drawn).items()}
        texture |= {f"held_out_sample_{k}": v for k, v in texture_figures(held).items()}
        metrics = {**checkpoint["metrics"], **sweep, **texture, "parity_max_abs_diff": diff}
        training = checkpoint["training"]
        manifest: dict[str, Any] = {
            "schema": 1,
            "name": name,
            "family": NAME,
            "kind": "block",
            "version": version,
            "description": (
                f"Convolutional GAN over piano-roll images ({c.window} 16ths x {c.keys} pitches) from a "
                f"{c.latent}-dimensional latent, trained on {provenance['data']}; the host keeps the best fitting "
                "of several drawn blocks."
            ),
            "seed_phrase": "seed.mid",
            "representation": {
                "grid": SIXTEENTH,
                "pitch_min": c.pitch_min,
                "keys": c.keys,
                "block_frames": c.window,
                "latent": c.latent,
                "polyphony": c.polyphony,
                "max_hold": c.max_hold,
            },
            "graphs": {
                "generator": {
                    "file": "generator.onnx",
                    "inputs": [tensor("z", ["batch", c.latent])],
                    "outputs": [tensor("logits", ["batch", c.window, c.keys])],
                }
            },
            "parameters": {"temperature": {"default": temperature, "min": 0.05, "max": 4.0}},
            "training": {
                "data": provenance["data"],
                "corpus_fingerprint": provenance["corpus_fingerprint"],
                "pieces_train": provenance["pieces_train"],
                "pieces_validation": provenance["pieces_validation"],
                "pieces_held_out": provenance["pieces_held_out"],
                "images_train": provenance["images_train"],
                "split": "by piece (sha256 of the name): 80% train, 10% validation, 10% held-out",
                "loss": (
                    f"binary cross-entropy (discriminator: real {c.real_label:g}, fake 0; generator: fake labelled 1)"
                    if c.loss == "bce"
                    else "hinge (discriminator: relu(1 - D(real)) + relu(1 + D(fake)); generator: -D(fake))"
                ),
                "optimizer": (
                    f"Adam, beta1 {c.beta1:g}, learning rate {c.learning_rate:g} (generator), "
                    f"{c.d_learning_rate or c.learning_rate:g} (discriminator)"
                ),
                "upsampling": c.upsampling,
                "stabilisers": "; ".join(line.split("**")[1] for line in imagegan_departures(c))
                or "none (the seed's recipe)",
                "real_label": c.real_label,
                "instance_noise": f"Gaussian, sd {c.noise_start:g} falling linearly to {c.noise_end:g}",
                "latent": c.latent,
                "dense": ", ".join(str(d) for d in c.dense),
                "batch_size": c.batch_size,
                "epochs": training["epochs_run"],
                "training_seconds": round(float(training["training_seconds"]), 1),
                "threads": training["threads"],
                "seed": provenance["seed"],
                "seed_tune": seed_tune,
                "torch": provenance["torch_version"],
            },
            "metrics": {k: float(v) for k, v in metrics.items()},
        }
        return manifest, imagegan_card(name, checkpoint, metrics, temperature)

    return write_package(out, name, build)


def imagegan_departures(c: ImageGanConfig) -> list[str]:
    """The card's lines on what the training does beyond the seed's recipe (none for the seed's settings)."""
    s = c.upsample
    lines = []
    if c.upsampling == "nearest":
        lines.append(
            f"**Upsampling then convolution instead of the transposed convolution** (Odena et al. 2016, "
            f"*Deconvolution and checkerboard artifacts*): the transposed convolution (kernel {2 * s}, stride {s}) "
            f"gives each output frame its taps by the frame's position mod {s}, and v1.0.0's images carried that "
            f"period: notes broken and struck again every {s}th 16th. Nearest-neighbour upsampling by {s} then a "
            f"{2 * s - 1} x {2 * s - 1} convolution treats every frame alike."
        )
    if c.generator_dropout != 0.2:
        lines.append(
            f"**Dropout {c.generator_dropout:g} in the generator, not the seed's 0.2** (the discriminator keeps "
            f"{c.dropout:g}): with dropout the generator learnt to draw its variety from the dropout masks and to "
            "ignore the latent (in training, one latent repeated gave fakes as different as many latents did); "
            "exported without dropout, as a generator is, it drew one image whatever the latent (v1.0.0, and a "
            "first try with the stabilisers below: two blocks differed in 0.2-0.5% of their pixels, real ones in 13%)."
        )
    if c.real_label < 1.0:
        lines.append(
            f"**One-sided label smoothing** (Salimans et al. 2016): the discriminator's target for real images is "
            f"{c.real_label:g}, not 1 (fakes stay 0), so it is not rewarded for ever more confident logits."
        )
    if c.noise_start > 0 or c.noise_end > 0:
        lines.append(
            f"**Instance noise** (Sønderby et al. 2016; Arjovsky and Bottou 2017): every image the discriminator "
            f"sees in training, real or fake, gets Gaussian noise of standard deviation {c.noise_start:g} at the "
            f"first step falling linearly to {c.noise_end:g} at the last; real images are 0/1 and fakes are "
            f"probabilities, which without noise the discriminator tells apart by their values alone."
        )
    if c.minibatch_std:
        lines.append(
            "**Minibatch standard deviation in the discriminator** (Karras et al. 2018, *Progressive growing of "
            "GANs*): before the seed's flattening, one more feature map holds how much the batch's images differ "
            "(the mean over features of their standard deviation, measured on the real and the fake half apart), so "
            "a generator that draws one image whatever the latent is told apart by that alone. It adds one input "
            "channel to the head; the discriminator is not shipped."
        )
    if c.binarise:
        lines.append(
            "**Binary fakes with a straight-through gradient** (Dong and Yang 2018, *Convolutional generative "
            "adversarial networks with binary neurons for polyphonic music generation*): the discriminator sees each "
            "fake drawn as the host draws it, a pixel on when its probability is above a threshold drawn per key and "
            "image, 0/1 like the real images; without this it tells real from fake by the values alone (real pixels "
            "are exactly 0 or 1, the seed's fakes probabilities). The generator's gradient passes through the draw "
            "to the logits as if the draw were the identity: through the sigmoid, a generator whose pixels are near 0 "
            "or 1 gets almost none (in a run that passed it through, the generator drew one image whatever the "
            "latent: two fakes differed in 1.1% of their pixels, two real images in 14%)."
        )
    if c.loss == "hinge":
        lines.append(
            "**Hinge loss** (Lim and Ye 2017; Miyato et al. 2018) in place of binary cross-entropy: the discriminator "
            "minimises relu(1 - D(real)) + relu(1 + D(fake)), so it stops pushing a logit once it is past the margin, "
            "and the generator minimises -D(fake). The training table's losses are these; the figures after training "
            "are the seed's (binary cross-entropy of the same logits), so they compare with its 0.691 / 0.592."
        )
    if c.spectral_norm:
        lines.append(
            "**Spectral normalisation of the discriminator** (Miyato et al. 2018): each convolution's and the dense "
            "layer's weights divided by their largest singular value, so the discriminator cannot sharpen without "
            "bound (the seed's 20-epoch run ended with a discriminator loss of 0) and the generator keeps a gradient."
        )
    if c.d_learning_rate and c.d_learning_rate > c.learning_rate:
        lines.append(
            f"**Two timescales** (Heusel et al. 2017): the discriminator learns at {c.d_learning_rate:g}, the "
            f"generator at {c.learning_rate:g}; with spectral normalisation bounding the discriminator, its faster "
            "steps track the generator instead of overpowering it."
        )
    elif c.d_learning_rate and c.d_learning_rate != c.learning_rate:
        lines.append(
            f"**A lower learning rate for the discriminator**: {c.d_learning_rate:g} (the generator keeps the "
            f"seed's {c.learning_rate:g}), so it does not run away from the generator."
        )
    return lines


def imagegan_card(name: str, checkpoint: Mapping[str, Any], m: Mapping[str, float], temperature: float) -> str:
    c = ImageGanConfig.from_dict(checkpoint["config"])
    p, t = checkpoint["provenance"], checkpoint["training"]
    d1, d2, d3 = c.dense
    bars = c.window // BAR_FRAMES
    data = (
        "the four-part Bach chorales music21 ships, all voices in one roll"
        if p["data"] == "corpus:bach"
        else f"`{p['data']}`, all tracks in one roll"
    )
    history = checkpoint.get("history") or []
    rows = "\n".join(
        f"| {int(h['epoch'])} | {h['discriminator_loss']:.3f} | {h['generator_loss']:.3f} | {h['accuracy_real']:.3f} "
        f"| {h['accuracy_fake']:.3f} |"
        for h in history
        if len(history) <= 15 or int(h["epoch"]) in {1, 2, 5, 10, 20, 30, 40, 60, 80, 100, len(history)}
    )
    minutes = float(t["training_seconds"]) / 60
    parameters = sum(w.numel() for w in Generator(c).parameters())
    s = c.upsample
    if c.upsampling == "transpose":
        grow_short = "a transposed convolution"
        grow_long = f"a transposed convolution ({c.filters} filters, kernel {2 * s}, stride {s})"
    else:
        grow_short = "an upsampling with a convolution (in place of the seed's transposed convolution)"
        grow_long = (
            f"a nearest-neighbour upsampling by {s} then a convolution ({c.filters} filters, {2 * s - 1} x {2 * s - 1})"
        )
    limits = imagegan_limits(m)
    g_dropout = (
        f" and dropout {c.generator_dropout:g}" if c.generator_dropout else " (the seed's dropout 0.2: see below)"
    )
    departures = "\n".join(f"- {line}" for line in imagegan_departures(c)) or "- none: the seed's recipe as it is."
    loss_kept = "binary cross-entropy;" if c.loss == "bce" else "(the loss: see below);"
    loss_text = (
        "The discriminator's loss is the mean of its cross-entropy on real images (label 1) and on fakes\n"
        "(label 0); the generator's loss is the cross-entropy of its fakes labelled real."
        if c.loss == "bce"
        else "The table's losses are the hinge losses trained on: the discriminator's is the mean of\n"
        "relu(1 - D(real)) and relu(1 + D(fake)), the generator's -D(fake). The figures after the table are\n"
        "the seed's binary cross-entropy of the same logits."
    )
    return render_card(
        name,
        f"""\
An `imagegan` model (livegen `block` kind), after the ImageGAN of seed 000 (*Comparing Different Neural
Network Architectures for Music Generation*, §4.3): a convolutional GAN that draws the piano roll as an
image, here a block of {bars} bars ({c.window} 16ths) by {c.keys} pitches ({c.pitch_min}-{c.pitch_min + c.keys - 1}).
Only the generator is shipped (`generator.onnx`: `z` [batch, {c.latent}] -> `logits` [batch, {c.window}, {c.keys}]).
""",
        {
            "Data": f"""\
`{p["data"]}`: {data}. {p["pieces_train"]} pieces for training, {p["pieces_validation"]} for validation,
{p["pieces_held_out"]} held out, split by piece (the same split as every corpus:bach model), so the seed
phrase and `livegen evaluate` come from pieces the model never saw. An image is {c.window} frames of a
piece's roll, one starting every {c.stride} frames from the piece's first note ({p["images_train"]} training
images; images with no note in the range are left out). The corpus keeps no bar lines and most chorales
open with a one-beat pickup, so these images mostly start a beat before a bar line: the model does not know
where its bars begin, and the host lays its blocks on the performer's bar lines anyway.

Why the chorales and not the folk tunes: the seed trained on classical piano music, and an image of a
roll is made for polyphony (chords are columns of pixels); the folk tunes are single lines, which an image
GAN whose pixels are drawn independently cannot keep to one note at a time.
""",
            "Model, and what is the seed's": f"""\
Kept from the seed: a {c.latent}-dimensional latent; four dense layers, {grow_short} and a
convolution in the generator, each followed by LeakyReLU 0.2{g_dropout} (the last convolution gives
the pixel logits); a discriminator of two blocks (16-channel convolution, dropout 0.2, LeakyReLU 0.2,
dropout 0.2), then flattening, batch normalisation, dropout and one dense output; {loss_kept}
Adam with learning rate {c.learning_rate:g} and beta1 {c.beta1:g} (the generator's; the discriminator's
below); a fixed number of epochs, the last one kept.

Departures from the seed's recipe, standard GAN stabilisers (the seed's own first run ended with the
discriminator winning outright, and so did this family's first package, v1.0.0, below):

{departures}

Scaled down or chosen here (the seed gives its widths only in a figure):

- **Images of {c.window} x {c.keys}, not 106 x 100**: {bars} bars of 16ths (the host's grid; the
  nearest whole number of bars to the seed's 100 steps) by four octaves (the chorales' range; notes
  outside it are left out of the images).
- **Dense layers of {d1}, {d2} and {d3} units, then {c.channels} x {c.window // s} x {c.keys // s}**,
  {grow_long} and a 3 x 3 convolution to one channel; the discriminator's convolutions have stride 2.
  Small enough that {t["epochs_run"]} epochs took {minutes:.1f} minutes with {t["threads"]} torch
  thread(s) on a two-core machine shared with other training jobs, and the generator has {parameters:,}
  parameters ({parameters * 4 / 1e6:.1f} MB).
- Batches of {c.batch_size}; each step trains the discriminator on a real batch and as many fakes, then
  the generator on fresh fakes (with binary cross-entropy, labelled real: the non-saturating loss the
  seed's Keras recipe uses).
""",
            "Training figures (as the seed reports them)": f"""\
{loss_text} "Accuracy on real" is
the share of real images the discriminator calls real, "on fake" the share of fakes it calls fake.
The seed reports, after 20 epochs, a discriminator loss of 0, a generator loss of 15.8 and 100% on both
(the discriminator won), and after 40 epochs 0.691, 0.592, 17% on real and 94% on fake.

| epoch | discriminator loss | generator loss | accuracy on real | accuracy on fake |
|---:|---:|---:|---:|---:|
{rows}

After training, both nets in evaluation mode (no dropout) on the {p["pieces_held_out"]} held-out pieces'
images and as many fresh fakes: discriminator loss {m["held_out_discriminator_loss"]:.3f}, generator loss
{m["held_out_generator_loss"]:.3f}, accuracy on real {m["held_out_accuracy_real"]:.3f}, on fake
{m["held_out_accuracy_fake"]:.3f}. These differ from the training epochs' figures because the
discriminator then judges with its running batch-normalisation statistics and without dropout, where in
training it normalised each batch of real and fake images by that batch's own statistics.

What the images hold (fakes drawn as the host draws them at temperature 1, see below, a run of pixels
in a key read as one note; against the held-out images):

| | generated | held-out |
|---|---:|---:|
| notes per beat | {m["generated_notes_per_beat"]:.2f} | {m["held_out_true_notes_per_beat"]:.2f} |
| keys sounding per frame | {m["generated_keys_per_frame"]:.2f} | {m["held_out_true_keys_per_frame"]:.2f} |
| mean note length (16ths) | {m["generated_note_frames"]:.2f} | {m["held_out_true_note_frames"]:.2f} |
| share of notes one 16th long | {m["generated_sixteenth_share"]:.2f} | {m["held_out_true_sixteenth_share"]:.2f} |
| share of note onsets on a beat * | {m["generated_onbeat_share"]:.2f} | {m["held_out_sample_onbeat_share"]:.2f} |
| pixels two images differ in * | {m["generated_diversity"]:.3f} | {m["held_out_sample_diversity"]:.3f} |

\\* At the default temperature ({temperature:g}), against the images of the sample of held-out pieces
the checkpoint keeps (8 pieces, the seed phrase's among them); the last row measures mode collapse: two
fakes from two latents should differ in about as many pixels as two real images do.

The package's default temperature is {temperature:g}: 1 unless 0.5 or 0.75 brings the drawn blocks nearer the
held-out density by more than 0.1 notes per beat (notes per beat:
{", ".join(f"{m[f'generated_t{t:g}_notes_per_beat']:.2f} at {t:g}" for t in TEMPERATURES)}; share of 16ths:
{", ".join(f"{m[f'generated_t{t:g}_sixteenth_share']:.2f}" for t in TEMPERATURES)}).

Export parity: the largest difference between onnxruntime and PyTorch in float64 over 16 latents, alone
and batched, is {m["parity_max_abs_diff"]:.2g} (accepted: 1e-4), relative to the logit where a logit is
larger than 1 (the pixel logits of a trained generator run to tens).
""",
            "How it plays": f"""\
The host (`livegen/models/imagegan.py`) makes one block of {bars} bars at a time, a lookahead before it
sounds, on the bar lines the planner gives. It draws `candidates` latents (8 by default, one ONNX call),
each `z ~ N(0, temperature^2)`; a pixel sounds when `sigmoid(logit / temperature)` is above a threshold
drawn once per key and block (so a note is not broken up by independent pixel draws; at a low
temperature this is the seed's threshold at 0.5); at most {c.polyphony} keys sound in a frame, the most
probable; a run of sounding pixels in a key is one note. Of the candidates, the host keeps the block
that best fits the last bar heard (pitch classes, register, density). The model is unconditional: it
follows the performer only through that choice, the key and range the performer sets, and the join at
the bar line (a note sounding across it is held, not struck again).
""",
            "Limits": f"""\
{limits}
- A block is a piece of texture, not a continuation: nothing carries a phrase from one block to the next
  but the choice of candidate; the chorales' cadences and voice leading are images to it, so voices may
  appear and vanish mid-phrase.
""",
        },
    )


def imagegan_limits(m: Mapping[str, float]) -> str:
    """The card's figures on what is still wrong with the drawn images (collapse, density, rhythm)."""
    diversity, real_diversity = m["generated_diversity"], m["held_out_sample_diversity"]
    density, real_density = m["generated_notes_per_beat"], m["held_out_true_notes_per_beat"]
    lines = [
        f"- **Mode collapse**: two drawn blocks differ in {diversity:.3f} of their pixels, two real ones in "
        f"{real_diversity:.3f} ({diversity / max(real_diversity, 1e-9):.0%} of the real variety; v1.0.0, which "
        "drew nearly one image whatever the latent, 0.005). "
        + (
            "The generator still covers only a part of the chorales' textures."
            if diversity < 0.5 * real_diversity
            else "Less collapsed than v1.0.0, but a GAN of this size covers fewer textures than the chorales hold."
        ),
        f"- **Density and rhythm**: {density:.2f} notes per beat against {real_density:.2f} in the held-out "
        f"chorales, {m['generated_sixteenth_share']:.0%} of notes one 16th long against "
        f"{m['held_out_true_sixteenth_share']:.0%}, {m['generated_onbeat_share']:.0%} of onsets on a beat against "
        f"{m['held_out_sample_onbeat_share']:.0%} (v1.0.0: 9.94 notes per beat, 66% 16ths, 40% on a beat).",
        f"- **The discriminator still tells fakes apart**: in evaluation mode it calls "
        f"{m['held_out_accuracy_fake']:.0%} of fakes fake and {m['held_out_accuracy_real']:.0%} of held-out images "
        "real; the generator has not converged to the chorales' distribution.",
    ]
    return "\n".join(lines)
