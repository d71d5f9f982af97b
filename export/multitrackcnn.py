"""The ``multitrack-cnn`` family (seed 004): a symmetric 2D CNN from one block of a multi-track roll to the next.

Context: setup (training and export; imports torch, never imported by the host).

Seed 004 takes a ``5 x 20 x 128`` tensor (instruments x time steps x pitches), passes it
through four convolution layers and "deconvolutes" it back to its original size with
the transposed path, with no dense layers, and trains it to predict the next 20 time
steps; all instruments are predicted together ("dependent instrument sampling"). Here:

- **Tracks** are ``multitrack-rnn``'s (:mod:`export.multitrack_rnn`): the four voices of the
  Bach chorales (or a MIDI folder's busiest channels), each one line, one MIDI channel
  and GM program per track. A track's row of the roll is a one-hot over a rest and
  ``keys`` pitches (class 0 = rest), so the tracks are the CNN's input channels and the
  roll's pitch axis is ``keys + 1`` wide.
- **The network**: four ``Conv2d`` layers (kernel 3, ReLU; ``hidden``, 2, 4 and 8 times
  ``hidden`` channels; stride 2 over time in each, over pitch in the first
  ``pitch_strides``) and four ``ConvTranspose2d`` layers back to ``tracks x window x
  (keys + 1)``, each output padded so the sizes mirror the way down exactly. No dense
  layer. The seed gives neither strides nor sizes.
- **The loss**: the cross-entropy of each track's class in each frame of the next block
  (one line per track, as ``multitrack-rnn``); Adam with gradient clipping and early
  stopping on the validation loss (:func:`export.framecommon.fit`). Each training batch
  is transposed by a random shift of up to ``transpose`` semitones (not the seed's: the
  chorales' few keys would otherwise be all the model knows, and the performer plays
  in any key).
- **Blocks of 16 frames (16ths), not 20**: the seed's 20 steps were at 24 per beat, less
  than one beat, not a musical unit; livegen's blocks tile time from a bar line, and 16
  16ths are one 4/4 bar, so each block is a bar and every block joins the next on a bar
  line. ``--window 20`` trains the seed's 20 frames (1¼ bars) instead.

The model card says what else was scaled down.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from export.common import (
    ConfigRecord,
    TrainingOptions,
    check_parity,
    export_graph,
    fingerprint,
    read_checkpoint,
    sample_tunes,
    save_checkpoint,
    session,
    tensor,
    training_record,
    tune_sample,
    write_package,
)
from export.distributed import main_first, world
from export.errors import ExportError
from export.family import Family
from export.frames import FRAMES_PER_BEAT, VOICE_PROGRAMS, fit, merged_tune, onset_profile_of
from export.seed import write_seed
from livegen.models.multitrack import piece_notes, tracks_to_frames
from livegen.models.multitrackcnn import ROLE, draw_lines, lines_to_notes
from livegen.models.sampling import SamplingParams
from livegen.music.corpus import MultiTune, load_parts, part_names, split_pieces
from livegen.music.time import SIXTEENTH

log = logging.getLogger(__name__)

NAME = "multitrack-cnn"
#: The package's default temperature, chosen on the validation pieces (``livegen evaluate --split validation``).
DEFAULT_TEMPERATURE = 0.7
#: What the card says of the defaults, for the data they were chosen on (the bundled package's corpus
#: fingerprint); a package trained on other data says they were not tuned on it.
TUNED_ON = "dd42bd03cf3c3b6e"
TUNING = (
    "The temperature was chosen on the validation pieces with `livegen evaluate --split validation`; the share "
    "drawn afresh is the one whose density from validation contexts is nearest the pieces' (the table below)."
)
#: The ``redraw`` shares tried; the package's is the one whose density played from validation contexts is
#: nearest the pieces' own.
REDRAWS = (0.0, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
#: Validation blocks kept in the checkpoint to measure the density the host plays.
DENSITY_BLOCKS = 512
#: Convolution layers on the way down (and transposed ones on the way up): the seed's four.
LAYERS = 4


@dataclass(frozen=True, slots=True)
class MultiTrackCnnConfig(ConfigRecord):
    """``window``: frames of the context and of the predicted block; ``hidden``: channels of the first layer;
    ``stride``: frames between training blocks; ``transpose``: most semitones a training batch is shifted by."""

    tracks: int = 4
    pitch_min: int = 36
    keys: int = 47
    window: int = 16
    stride: int = 2
    hidden: int = 32
    kernel: int = 3
    batch_size: int = 64
    learning_rate: float = 1e-3
    transpose: int = 0
    pitch_strides: int = 2
    max_hold: int = 16

    def __post_init__(self) -> None:
        if not 2 <= self.window <= 64:
            raise ExportError(f"--window {self.window}: expected 2 to 64 frames (16 = one 4/4 bar of 16ths)")
        if not 4 <= self.hidden <= 256:
            raise ExportError(f"--hidden {self.hidden}: expected 4 to 256 channels in the first convolution layer")
        if self.batch_size < 1:
            raise ExportError(f"--batch-size {self.batch_size}: expected at least 1")
        if not 0 <= self.pitch_strides <= LAYERS:
            raise ExportError(f"pitch_strides {self.pitch_strides}: expected 0 to {LAYERS} layers")
        if not 0 <= self.transpose <= 12:
            raise ExportError(f"transpose {self.transpose}: expected 0 to 12 semitones")
        if self.stride < 1:
            raise ExportError(f"stride {self.stride}: expected at least 1 frame between training windows")

    @property
    def width(self) -> int:
        """Classes per track and frame: a rest and ``keys`` pitches."""
        return self.keys + 1

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(self.hidden * 2**i for i in range(LAYERS))

    @property
    def strides(self) -> tuple[tuple[int, int], ...]:
        """(time, pitch) stride of each layer: 2 over time; 2 over pitch in the first ``pitch_strides`` layers."""
        return tuple((2, 2 if i < self.pitch_strides else 1) for i in range(LAYERS))


def _down(size: int, kernel: int, stride: int) -> int:
    """A convolution's output size with padding ``kernel // 2``."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


class MultiTrackCnn(nn.Module):
    """Seed 004's symmetric CNN: roll [batch, tracks, window, keys + 1] -> logits of the same shape (the next block)."""

    def __init__(self, config: MultiTrackCnnConfig) -> None:
        super().__init__()
        self.config = config
        k, pad = config.kernel, config.kernel // 2
        strides = config.strides
        sizes = [(config.window, config.width)]
        for st, sw in strides:
            t, w = sizes[-1]
            sizes.append((_down(t, k, st), _down(w, k, sw)))
        widths = (config.tracks, *config.channels)
        self.down = nn.ModuleList(
            nn.Conv2d(widths[i], widths[i + 1], k, stride=strides[i], padding=pad) for i in range(LAYERS)
        )
        ups = []
        for i in reversed(range(LAYERS)):
            (t_in, w_in), (t_out, w_out) = sizes[i + 1], sizes[i]
            (st, sw) = strides[i]
            # a transposed convolution gives s (n - 1) - 2 pad + k; pad the output to the size on the way down
            extra = (t_out - (st * (t_in - 1) - 2 * pad + k), w_out - (sw * (w_in - 1) - 2 * pad + k))
            ups.append(
                nn.ConvTranspose2d(widths[i + 1], widths[i], k, stride=strides[i], padding=pad, output_padding=extra)
            )
        self.up = nn.ModuleList(ups)

    def forward(self, roll: torch.Tensor) -> torch.Tensor:
        x = roll
        for conv in self.down:
            x = F.relu(conv(x))
        for i, deconv in enumerate(self.up):
            x = deconv(x)
            if i < LAYERS - 1:
                x = F.relu(x)
        return x


# ---- data ----------------------------------------------------------------------------------


def piece_roll(piece: MultiTune, config: MultiTrackCnnConfig) -> np.ndarray:
    """A piece's one-hot roll float32 [tracks, frames, keys + 1] from its first onset (class 0 = rest)."""
    notes = piece_notes(piece)
    length = max(n.end for n in notes)
    flat = tracks_to_frames(notes, 0, length, config.tracks, config.pitch_min, config.keys)
    return np.ascontiguousarray(flat.reshape(length, config.tracks, config.width).transpose(1, 0, 2))


@dataclass(frozen=True, slots=True)
class Blocks:
    inputs: torch.Tensor  # uint8 [n, tracks, window, keys + 1]: the context, one-hot
    targets: torch.Tensor  # int64 [n, tracks, window]: the next block's class per track and frame

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


def make_blocks(pieces: Sequence[MultiTune], config: MultiTrackCnnConfig, stride: int | None = None) -> Blocks:
    """(context, next block) pairs of ``window`` frames each, one every ``stride`` frames of each piece."""
    w, step = config.window, stride or config.stride
    xs, ys = [], []
    for piece in pieces:
        roll = piece_roll(piece, config)
        classes = roll.argmax(-1)
        for s in range(0, roll.shape[1] - 2 * w + 1, step):
            xs.append(roll[:, s : s + w].astype(np.uint8))
            ys.append(classes[:, s + w : s + 2 * w])
    if not xs:
        shape = (0, config.tracks, w)
        return Blocks(torch.zeros((*shape, config.width), dtype=torch.uint8), torch.zeros(shape, dtype=torch.int64))
    return Blocks(torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys).astype(np.int64)))


def transpose_classes(classes: torch.Tensor, shift: int, keys: int) -> torch.Tensor:
    """Classes (0 = rest, ``1 + k`` = key ``k``) moved ``shift`` semitones; a pitch moved out of range rests."""
    moved = classes + shift
    return torch.where((classes > 0) & (moved >= 1) & (moved <= keys), moved, torch.zeros_like(classes))


def block_loss(model: MultiTrackCnn, blocks: Blocks, index: torch.Tensor | slice, shift: int = 0) -> torch.Tensor:
    """Mean cross-entropy per track and frame of the next block, the blocks transposed by ``shift`` semitones."""
    c = model.config
    inputs, targets = blocks.inputs[index], blocks.targets[index]
    if shift:
        inputs = F.one_hot(transpose_classes(inputs.argmax(-1), shift, c.keys), c.width)
        targets = transpose_classes(targets, shift, c.keys)
    logits = model(inputs.float())
    return F.cross_entropy(logits.permute(0, 3, 1, 2), targets)


def evaluate_blocks(model: MultiTrackCnn, blocks: Blocks, batch: int = 512) -> dict[str, float]:
    """Held-out cross-entropy and accuracy (most likely class per track and frame), beside repeating the last
    context frame, overall, where the voice changes and in the block's first and last frames."""
    ce, hits, repeat, changes, change_hits, count = 0.0, 0, 0, 0, 0, 0
    first_hits, last_hits = 0, 0
    with torch.no_grad():
        for i in range(0, len(blocks), batch):
            index = slice(i, i + batch)
            x = blocks.inputs[index].float()
            y = blocks.targets[index]
            logits = model(x)
            ce += float(F.cross_entropy(logits.permute(0, 3, 1, 2), y, reduction="sum"))
            guess = logits.argmax(-1)
            last = x[:, :, -1].argmax(-1)[:, :, None].expand_as(y)
            right = guess == y
            hits += int(right.sum())
            repeat += int((last == y).sum())
            changed = last != y
            changes += int(changed.sum())
            change_hits += int((right & changed).sum())
            first_hits += int(right[:, :, 0].sum())
            last_hits += int(right[:, :, -1].sum())
            count += y.numel()
    n = max(count, 1)
    per_frame = max(count // max(blocks.targets.shape[2], 1), 1)
    return {
        "cross_entropy": ce / n,
        "accuracy": hits / n,
        "baseline_repeat_accuracy": repeat / n,
        "accuracy_where_changing": change_hits / max(changes, 1),
        "accuracy_first_frame": first_hits / per_frame,
        "accuracy_last_frame": last_hits / per_frame,
    }


def generated_density(
    model: MultiTrackCnn,
    blocks: Blocks,
    *,
    redraw: float,
    metre: Sequence[float] | None,
    temperature: float = DEFAULT_TEMPERATURE,
    seed: int = 0,
) -> float:
    """Notes per beat the host plays from each context (:func:`draw_lines` at ``temperature``)."""
    c = model.config
    rng = np.random.default_rng(seed)
    params = SamplingParams(temperature=temperature)
    mask = np.ones(c.width, dtype=bool)
    total = 0
    with torch.no_grad():
        logits = model(blocks.inputs.float()).numpy()
    last = blocks.inputs[:, :, -1].argmax(-1).numpy()
    for i in range(len(blocks)):
        classes = draw_lines(logits[i], last[i], params, rng, mask, metre=metre, redraw=redraw)
        total += len(lines_to_notes(classes, c.pitch_min, c.keys))
    return total / max(len(blocks) * c.window / FRAMES_PER_BEAT, 1e-9)


def densities(model: MultiTrackCnn, blocks: Blocks, metre: Sequence[float] | None) -> tuple[dict[float, float], float]:
    """The density played from the true contexts of ``blocks`` (at :data:`DEFAULT_TEMPERATURE`) at each share of
    :data:`REDRAWS`; the true density."""
    true = real_density(blocks, model.config)
    return {r: generated_density(model, blocks, redraw=r, metre=metre) for r in REDRAWS}, true


def real_density(blocks: Blocks, config: MultiTrackCnnConfig) -> float:
    """Notes per beat in the true next blocks (a note held from the context counts when it continues)."""
    total = 0
    for i in range(len(blocks)):
        total += len(lines_to_notes(blocks.targets[i].numpy(), config.pitch_min, config.keys))
    return total / max(len(blocks) * config.window / FRAMES_PER_BEAT, 1e-9)


# ---- training ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MultiTrackCnnOptions(TrainingOptions):
    epochs: int = 30
    patience: int = 4
    config: MultiTrackCnnConfig = field(default_factory=MultiTrackCnnConfig)


def train_multitrack_cnn(options: MultiTrackCnnOptions) -> Path:
    c = options.config
    started = options.begin()
    with main_first():  # rank 0 converts and caches a corpus: the other ranks read its cache
        pieces = load_parts(options.data, tracks=c.tracks, limit=options.limit)
    train_p, val_p, held_p = split_pieces(pieces)
    train = make_blocks(train_p, c)
    # validation and held-out: one block every beat, whatever the training stride
    val, held = make_blocks(val_p, c, FRAMES_PER_BEAT), make_blocks(held_p, c, FRAMES_PER_BEAT)
    log.info(
        "data %s: %d pieces of %d tracks (train %d, validation %d, held-out %d); %d training blocks of %d frames",
        options.data,
        len(pieces),
        c.tracks,
        len(train_p),
        len(val_p),
        len(held_p),
        len(train),
        c.window,
    )
    if not len(train) or not len(val) or not len(held):
        raise ExportError(
            f"{options.data}: too little music for blocks of {c.window} frames (training {len(train)}, validation "
            f"{len(val)}, held-out {len(held)} blocks); each split needs a piece of at least {2 * c.window} 16ths"
        )
    torch.manual_seed(options.seed)
    model = MultiTrackCnn(c)
    log.info("model: %d parameters", sum(p.numel() for p in model.parameters()))

    def batches(generator: torch.Generator) -> list[tuple[torch.Tensor, int]]:
        order = torch.randperm(len(train), generator=generator)
        shifts = torch.randint(-c.transpose, c.transpose + 1, (len(order),), generator=generator).tolist()
        return [(order[i : i + c.batch_size], shifts[i]) for i in range(0, len(train), c.batch_size)]

    def validate() -> dict[str, float]:
        return {"loss": evaluate_blocks(model, val)["cross_entropy"]}

    result = fit(
        model,
        batches,
        lambda batch: block_loss(model, train, *batch),
        validate,
        epochs=options.epochs,
        patience=options.patience,
        learning_rate=c.learning_rate,
        seed=options.seed,
        run=options.run,
        out=options.out,
    )
    if not world().main:  # rank 0 evaluates and writes the checkpoint
        return options.out / "checkpoint.pt"
    model.eval()
    figures = evaluate_blocks(model, held)
    metrics = {
        "best_val_loss": result.best_loss,
        "held_out_cross_entropy": figures["cross_entropy"],
        "held_out_accuracy": figures["accuracy"],
        "baseline_repeat_last_frame_accuracy": figures["baseline_repeat_accuracy"],
        "held_out_accuracy_where_changing": figures["accuracy_where_changing"],
        "held_out_accuracy_first_frame": figures["accuracy_first_frame"],
        "held_out_accuracy_last_frame": figures["accuracy_last_frame"],
    }
    log.info("best epoch %d; held-out %s", result.best_epoch, ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    names = part_names(options.data, c.tracks)
    centers = [
        float(np.mean(np.concatenate([p.tracks[k].pitch for p in train_p]).astype(np.float64))) for k in range(c.tracks)
    ]
    spread = held.inputs[:: max(1, len(held) // 16)][:16]
    density = slice(None, None, max(1, len(val) // DENSITY_BLOCKS))
    return save_checkpoint(
        options.out,
        NAME,
        state_dict=result.state,
        config=c.to_dict(),
        provenance={
            "data": options.data,
            "limit": options.limit,
            "seed": options.seed,
            "corpus_fingerprint": fingerprint([p.name for p in pieces], [t.pitch for p in pieces for t in p.tracks]),
            "pieces_train": len(train_p),
            "pieces_validation": len(val_p),
            "pieces_held_out": len(held_p),
            "onset_profile": onset_profile_of(t.onset for p in train_p for t in p.tracks),
            "blocks_train": len(train),
            "parameters": sum(p.numel() for p in model.parameters()),
            "track_names": list(names),
            "track_centers": centers,
            "torch_version": str(torch.__version__),
        },
        training=training_record(result, max_epochs=options.epochs, patience=options.patience, started=started),
        history=result.history,
        metrics=metrics,
        held_out_sample=tune_sample([merged_tune(p) for p in held_p]),
        held_out_blocks=spread.tolist(),
        # the density the host plays is measured at export, with the package's sampling defaults
        density_blocks={"inputs": val.inputs[density].clone(), "targets": val.targets[density].clone()},
    )


# ---- export --------------------------------------------------------------------------------


def model_from_checkpoint(checkpoint: Mapping[str, Any], path: Path) -> MultiTrackCnn:
    model = MultiTrackCnn(MultiTrackCnnConfig.from_dict(checkpoint["config"]))
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError) as err:
        raise ExportError(f"{path}: the weights do not fit a multitrack-cnn of this config ({err})") from err
    return model.eval()


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
        frames, width = _down(frames, config.kernel, st), _down(width, config.kernel, sw)
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
    return f"""# {name}

A `multitrack-cnn` model (livegen `block` kind), after the CNN of seed 004 (*Exploring Music Generation
Using Deep Learning*): a symmetric 2D CNN reads the last block of a multi-track piano roll, all tracks at
once, and predicts the next block; no dense layers. livegen asks it for a block ({c.window} 16ths, {bar})
ahead of the playhead and conditions it on the block before, the performer's notes included.

## Data and tracks

`{p["data"]}`: {voices}. {p["pieces_train"]} pieces for training, {p["pieces_validation"]} for validation,
{p["pieces_held_out"]} held out, split by piece exactly as `multitrack-rnn` and the merged `corpus:bach` are
split, so `livegen evaluate` seeds come from pieces the model never saw. Frames are 16th notes; training
pairs (a block and the block after it) start every {c.stride} frames: {p["blocks_train"]} pairs.

| track | MIDI channel | GM program | mean training pitch |
|---|---:|---:|---:|
{rows}

The performer plays one part: each performed note joins the free track whose mean pitch is nearest, and the
model reads it there in the next block's context.

## The model

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

## What is the seed's and what differs

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

## Held-out figures

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
"""


FAMILY = Family(
    NAME,
    options=MultiTrackCnnOptions,
    config=MultiTrackCnnConfig,
    train=train_multitrack_cnn,
    export=export_multitrack_cnn,
    card=multitrack_cnn_card,
)
