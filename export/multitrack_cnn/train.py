"""Training of ``multitrack-cnn``: blocks of the tracks' rolls, the loss, the density figures, the loop and the
checkpoint.

Context: setup (training; imports torch, never imported by the host).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from export.common import TrainingOptions, fingerprint, save_checkpoint, split_provenance, training_record, tune_sample
from export.distributed import main_first, world
from export.errors import ExportError
from export.frames import FRAMES_PER_BEAT, fit, merged_tune, onset_profile_of
from export.multitrack_cnn.model import DEFAULT_TEMPERATURE, NAME, MultiTrackCnn, MultiTrackCnnConfig
from livegen.models.multitrack import piece_notes, tracks_to_frames
from livegen.models.multitrackcnn import draw_lines, lines_to_notes
from livegen.models.sampling import SamplingParams
from livegen.music.corpus import MultiTune, load_parts, part_names, split_pieces

log = logging.getLogger(__name__)


#: The ``redraw`` shares tried; the package's is the one whose density played from validation contexts is
#: nearest the pieces' own.
REDRAWS = (0.0, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)


#: Validation blocks kept in the checkpoint to measure the density the host plays.
DENSITY_BLOCKS = 512


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
        options,
        learning_rate=c.learning_rate,
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
            **split_provenance(
                options,
                fingerprint([p.name for p in pieces], [t.pitch for p in pieces for t in p.tracks]),
                "pieces",
                (train_p, val_p, held_p),
            ),
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
