"""Training of ``token-lstm``: the vocabulary of the training tokens, windows, the loss, the held-out figures,
the loop and the checkpoint.

Context: setup (training; imports torch, never imported by the host).
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from export.common import (
    TrainingOptions,
    batch_means,
    check_sizes,
    corpus_provenance,
    fit_windows,
    save_checkpoint,
    training_record,
    tune_sample,
)
from export.distributed import main_first, world
from export.errors import ExportError
from export.tokenlstm.model import TokenLstm, TokenLstmConfig
from livegen.models.tokenlstm import FAMILY as NAME
from livegen.models.tokenlstm import Vocabulary, shift_name, token_name, tune_chords, tune_tokens
from livegen.music.corpus import Tune, load_corpus, split_by_tune
from livegen.music.time import PPQN

log = logging.getLogger(__name__)


#: Held-out tunes kept in the checkpoint for the parity check and the seed phrase.
SAMPLE_TUNES = 8


#: A gap between onsets becomes a time-shift token when it is at least this share of the training gaps.
MIN_SHIFT_SHARE = 0.001


#: The longest time-shift token, in beats; longer gaps are spelled with several.
MAX_SHIFT_BEATS = 8


def shift_classes(tunes: Sequence[Tune]) -> list[int]:
    """The gaps between successive tokens of ``tunes`` kept as time-shift tokens, in ticks, shortest first.

    A gap is kept when it is at least :data:`MIN_SHIFT_SHARE` of all gaps and at most
    :data:`MAX_SHIFT_BEATS`; the most common gap is always kept.
    """
    gaps: Counter[int] = Counter()
    for tune in tunes:
        onsets = [onset for onset, _ in tune_chords(tune)]
        gaps.update(b - a for a, b in itertools.pairwise(onsets) if b > a)
    if not gaps:
        raise ExportError("the training tunes hold no two successive chords to measure a time shift from")
    total = sum(gaps.values())
    longest = MAX_SHIFT_BEATS * PPQN
    kept = {g for g, n in gaps.items() if n >= MIN_SHIFT_SHARE * total and g <= longest}
    kept.add(min(gaps.items(), key=lambda item: (-item[1], item[0]))[0])
    return sorted(kept)


def build_vocabulary(
    tunes: Sequence[Tune], max_vocab: int, *, time_shifts: bool = False
) -> tuple[Vocabulary, dict[str, float]]:
    """The ``max_vocab`` most frequent tokens of ``tunes`` (ties: by name), most frequent first.

    With ``time_shifts`` the time-shift tokens of :func:`shift_classes` are always kept and
    the chords fill the rest. Returns the vocabulary and what it covers: the distinct
    chords seen and the share of training chords it holds exactly.
    """
    counts = Counter(pitches for tune in tunes for _, pitches in tune_chords(tune))
    if not counts:
        raise ExportError("the training tunes hold no tokens")
    shifts = [shift_name(g) for g in shift_classes(tunes)] if time_shifts else []
    if len(shifts) >= max_vocab:
        raise ExportError(f"--vocab-size {max_vocab}: expected more than the {len(shifts)} time shifts it must hold")
    ranked = sorted(counts.items(), key=lambda item: (-item[1], token_name(item[0])))
    kept = ranked[: max_vocab - len(shifts)]
    total = sum(counts.values())
    coverage = {
        "distinct_tokens_train": float(len(counts)),
        "vocabulary_coverage_train": sum(c for _, c in kept) / total,
    }
    chords = [token_name(p) for p, _ in kept]
    if not shifts:
        return Vocabulary(chords), coverage
    # every token by how often training reads it (the shifts as tunes are spelled with them), most frequent first
    spelled = Vocabulary(shifts + chords)
    uses: Counter[int] = Counter()
    for tune in tunes:
        onsets = [onset for onset, _ in tune_chords(tune)]
        uses.update(t for a, b in itertools.pairwise(onsets) for t in spelled.gap(b - a))
    frequency = {name: float(uses[i]) for i, name in enumerate(shifts)}
    frequency |= {name: float(count) for name, (_, count) in zip(chords, kept, strict=True)}
    return Vocabulary(sorted(frequency, key=lambda name: (-frequency[name], name))), coverage


def step_beats(tunes: Sequence[Tune]) -> float:
    """The most common time between successive tokens of ``tunes``, in beats (ties: the shorter).

    The host plays tokens this far apart, as the seed played them a fixed 0.5 apart.
    """
    gaps: Counter[int] = Counter()
    for tune in tunes:
        onsets = [onset for onset, _ in tune_chords(tune)]
        gaps.update(b - a for a, b in itertools.pairwise(onsets) if b > a)
    if not gaps:
        return 0.5
    best = min(gaps.items(), key=lambda item: (-item[1], item[0]))[0]
    return best / PPQN


@dataclass(frozen=True, slots=True)
class Windows:
    """Training windows: token inputs, the next token at every position, and a mask."""

    inputs: torch.Tensor  # int64 [n, window]
    targets: torch.Tensor  # int64 [n, window]
    mask: torch.Tensor  # float32 [n, window]

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def take(self, index: torch.Tensor) -> Windows:
        return Windows(self.inputs[index], self.targets[index], self.mask[index])


def make_windows(sequences: Sequence[np.ndarray], window: int) -> Windows:
    """Cut each token sequence into windows of ``window`` inputs; consecutive windows start ``window`` apart.

    Every token but each sequence's first is a target exactly once; short tails are padded and masked.
    """
    inputs, targets, lengths = [], [], []
    for tokens in sequences:
        for start in range(0, len(tokens) - 1, window):
            end = min(start + window + 1, len(tokens))
            n = end - start - 1
            x = np.zeros(window, dtype=np.int64)
            y = np.zeros(window, dtype=np.int64)
            x[:n] = tokens[start : start + n]
            y[:n] = tokens[start + 1 : end]
            inputs.append(x)
            targets.append(y)
            lengths.append(n)
    if not inputs:
        empty = torch.zeros(0, window, dtype=torch.int64)
        return Windows(empty, empty, torch.zeros(0, window))
    mask = np.arange(window)[None, :] < np.asarray(lengths)[:, None]
    return Windows(
        torch.from_numpy(np.stack(inputs)),
        torch.from_numpy(np.stack(targets)),
        torch.from_numpy(mask.astype(np.float32)),
    )


def token_loss(model: TokenLstm, batch: Windows) -> torch.Tensor:
    logits, _ = model(batch.inputs)
    ce = F.cross_entropy(logits.reshape(-1, model.vocab), batch.targets.reshape(-1), reduction="none")
    mask = batch.mask.reshape(-1)
    return (ce * mask).sum() / mask.sum().clamp(min=1.0)


@dataclass(frozen=True, slots=True)
class TokenTrainOptions(TrainingOptions):
    """What ``python -m export train token-lstm`` was asked to do."""

    config: TokenLstmConfig = field(default_factory=TokenLstmConfig)
    min_delta: float = 1e-4

    def check(self) -> None:
        TrainingOptions.check(self)
        check_sizes(self.config.window, "tokens", self.config.hidden, self.config.batch_size)
        if not 2 <= self.config.max_vocab <= 100_000:
            raise ExportError(f"--vocab-size {self.config.max_vocab}: expected 2 to 100000 tokens")


def _mean_loss(model: TokenLstm, windows: Windows) -> float:
    """Mean loss over every unmasked target of ``windows`` (no gradient)."""
    model.eval()

    def measure(batch: Windows) -> tuple[float, dict[str, torch.Tensor]]:
        return float(batch.mask.sum()), {"loss": token_loss(model, batch)}

    return batch_means(windows, measure, 256)["loss"]


def evaluate_held_out(
    model: TokenLstm, held_out: Sequence[np.ndarray], train: Sequence[np.ndarray], vocabulary: Vocabulary
) -> dict[str, float]:
    """Next-token accuracy on held-out sequences, each one stream from a zero state, beside two baselines.

    Targets are every token but the first of each sequence, as mapped to the vocabulary.
    Baselines on the same targets: the most frequent training token, and repeat the last
    token. With time shifts the chords and the shifts are also scored apart, each beside
    its own baselines (the most frequent chord or shift, and the last chord or shift).
    """
    shift = vocabulary.is_shift
    train_all = np.concatenate(list(train))
    counts = np.bincount(train_all, minlength=len(vocabulary))
    most_frequent = int(counts.argmax())
    kinds = {"chord": ~shift, "shift": shift} if vocabulary.timed else {}
    frequent_of = {kind: int(np.where(mask, counts, -1).argmax()) for kind, mask in kinds.items()}
    sums: Counter[str] = Counter()
    nll = 0.0
    model.eval()
    with torch.no_grad():
        for tokens in held_out:
            if len(tokens) < 2:
                continue
            logits, _ = model(torch.from_numpy(tokens[None, :-1]))
            target = torch.from_numpy(tokens[1:])
            nll += float(F.cross_entropy(logits[0], target, reduction="sum"))
            hit = (logits[0].argmax(-1) == target).numpy()
            sums["hits"] += int(hit.sum())
            sums["frequent"] += int((tokens[1:] == most_frequent).sum())
            sums["repeat"] += int((tokens[1:] == tokens[:-1]).sum())
            sums["total"] += len(tokens) - 1
            for kind, mask in kinds.items():
                is_kind = mask[tokens[1:]]
                # the last token of this kind before each target (-1 before the first)
                last = np.where(mask[tokens], np.arange(len(tokens)), -1)
                last = np.maximum.accumulate(last)[:-1]
                previous = np.where(last >= 0, tokens[np.maximum(last, 0)], -1)
                sums[f"{kind}_hits"] += int((hit & is_kind).sum())
                sums[f"{kind}_frequent"] += int(((tokens[1:] == frequent_of[kind]) & is_kind).sum())
                sums[f"{kind}_repeat"] += int(((tokens[1:] == previous) & is_kind).sum())
                sums[f"{kind}_total"] += int(is_kind.sum())
    total = sums["total"]
    if total == 0:
        raise ExportError("the held-out tunes hold no next-token targets; use a larger corpus")
    out = {
        "held_out_token_accuracy": sums["hits"] / total,
        "held_out_token_cross_entropy": nll / total,
        "baseline_most_frequent_token_accuracy": sums["frequent"] / total,
        "baseline_repeat_last_token_accuracy": sums["repeat"] / total,
        "held_out_targets": float(total),
    }
    for kind in kinds:
        n = max(sums[f"{kind}_total"], 1)
        out |= {
            f"held_out_{kind}_accuracy": sums[f"{kind}_hits"] / n,
            f"baseline_most_frequent_{kind}_accuracy": sums[f"{kind}_frequent"] / n,
            f"baseline_repeat_last_{kind}_accuracy": sums[f"{kind}_repeat"] / n,
            f"held_out_{kind}_targets": float(sums[f"{kind}_total"]),
        }
    return out


def train_token_lstm(options: TokenTrainOptions) -> Path:
    """Train, early-stop, evaluate on held-out tunes and write ``checkpoint.pt`` into ``options.out``."""
    config = options.config
    started = options.begin()
    with main_first():  # rank 0 converts and caches a corpus: the other ranks read its cache
        tunes = load_corpus(options.data, limit=options.limit)
    split = split_by_tune(tunes)
    vocabulary, coverage = build_vocabulary(split.train, config.max_vocab, time_shifts=config.time_shifts)
    step = step_beats(split.train)
    train_seqs = [tune_tokens(t, vocabulary) for t in split.train]
    val_seqs = [tune_tokens(t, vocabulary) for t in split.validation]
    held_seqs = [tune_tokens(t, vocabulary) for t in split.held_out]
    held_exact = sum(vocabulary.index(p) is not None for t in split.held_out for _, p in tune_chords(t))
    held_count = sum(len(s) for s in held_seqs)
    held_chords = sum(len(tune_chords(t)) for t in split.held_out)
    coverage["vocabulary_coverage_held_out"] = held_exact / max(held_chords, 1)
    train_windows = make_windows(train_seqs, config.window)
    val_windows = make_windows(val_seqs, config.window)
    if len(train_windows) == 0 or len(val_windows) == 0:
        raise ExportError(f"{options.data}: the tunes are too short to make training and validation windows")
    log.info(
        "data %s: %d tunes (train %d, validation %d, held-out %d); %d training tokens in %d windows of %d; "
        "vocabulary %d tokens (%d time shifts) of %d distinct chords (%.1f%% of training chords exactly, the rest "
        "mapped to the nearest); most common step %.3g beats",
        options.data,
        len(tunes),
        len(split.train),
        len(split.validation),
        len(split.held_out),
        sum(len(s) for s in train_seqs),
        len(train_windows),
        config.window,
        len(vocabulary),
        int(vocabulary.is_shift.sum()),
        int(coverage["distinct_tokens_train"]),
        100 * coverage["vocabulary_coverage_train"],
        step,
    )
    torch.manual_seed(options.seed)
    model = TokenLstm(len(vocabulary), config)
    fitted = fit_windows(
        model,
        train_windows,
        lambda batch: token_loss(model, batch),
        lambda: (_mean_loss(model, val_windows), {}, ""),
        config,
        options,
        min_delta=options.min_delta,
    )
    if not world().main:  # rank 0 evaluates and writes the checkpoint
        return options.out / "checkpoint.pt"
    best_loss, best_epoch, history = fitted.best_loss, fitted.best_epoch, fitted.history
    metrics = {"best_val_loss": best_loss, **evaluate_held_out(model, held_seqs, train_seqs, vocabulary)}
    train_pitches = np.concatenate([t.pitch for t in split.train])
    provenance: dict[str, Any] = {
        **corpus_provenance(options.data, options.limit, options.seed, tunes, split),
        "tokens_train": int(sum(len(s) for s in train_seqs)),
        "tokens_validation": int(sum(len(s) for s in val_seqs)),
        "tokens_held_out": int(held_count),
        "notes_train": int(sum(len(t) for t in split.train)),
        "windows_train": len(train_windows),
        "pitch_min": int(train_pitches.min()),
        "pitch_max": int(train_pitches.max()),
        **coverage,
        "torch_version": str(torch.__version__),
    }
    if options.data == "corpus:four-voice":  # pieces per music21 folder; chorales are named without one
        provenance["collections"] = dict(Counter(t.name.split("/")[0] if "/" in t.name else "bach" for t in tunes))
    training = training_record(fitted, max_epochs=options.epochs, patience=options.patience, started=started)
    path = save_checkpoint(
        options.out,
        NAME,
        state_dict=fitted.state,
        config=config.to_dict(),
        tokens=list(vocabulary.names),
        step_beats=step,
        provenance=provenance,
        training=training,
        history=history,
        metrics=metrics,
        held_out_sample=tune_sample(split.held_out, SAMPLE_TUNES, None),
    )
    log.info(
        "best epoch %d of %d (validation %.4f); held-out token accuracy %.3f (most frequent %.3f, repeat last %.3f); "
        "checkpoint %s",
        best_epoch,
        len(history),
        best_loss,
        metrics["held_out_token_accuracy"],
        metrics["baseline_most_frequent_token_accuracy"],
        metrics["baseline_repeat_last_token_accuracy"],
        path,
    )
    return path
