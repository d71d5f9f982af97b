"""Held-out negative log-likelihood of a model beside an n-gram's, in the model's own units.

Context: setup (offline analysis).

The model runs through its package's ONNX graphs, teacher-forced: fed the true held-out
music, encoded by the adapter's own functions exactly as training encoded it. Each
family is scored in the units of its training loss where that is a likelihood:

- ``midirnn``: per note, the cross-entropy of ``pitch_logits`` (a softmax over 128
  pitches) for the next note's pitch, the graph fed every note before it. Only the
  pitch: the step and duration heads are trained with weight 0.1 (or as regressions).
- ``token-lstm``: per token, the cross-entropy over its vocabulary, chords mapped to
  their nearest token as training maps them.
- ``deep-musician``: per 16th frame, the Bernoulli NLL of the 88 keys summed, each
  key's probability the sigmoid of the decoder's logit. As the model is trained and
  played, the encoder reads the true roll before each block of ``decode_frames``
  frames (empty frames before the piece, as training pads it) and the decoder runs the
  block fed its own sigmoid output; it never reads the true frames inside a block. Its
  training loss (focal) is not a likelihood; this is that of the distribution it outputs.
- ``multitrack-rnn``: per 16th frame, the cross-entropy of every track's softmax over a
  rest and its keys, summed over tracks, the graph streaming the true frames from a
  zero state.

The n-gram (:class:`~livegen.eval.ngram.NGram`, order 3, Witten-Bell) is fitted on the
training tunes encoded the same way: pitches, token indices, the tuple of sounding keys
of each frame, the tuple of each track's class. Both sides score the same units: every
unit of a tune but its first (the model must be fed one to predict), given all before.

*Events never seen in training.* The model gives every possible event a probability
of its own. The n-gram's order-0 model is a proper base distribution over the same
space (uniform over the 128 pitches or the vocabulary; each key independently at its
training rate for a roll; each track independently at its class rates), interpolated
Witten-Bell with the unigram, so an unseen event costs the n-gram its escape weight
times the base's probability. NGram's fallback floor (half the rarest seen token's
probability) is not used: it gives unseen events mass no seen event pays for, and a new
eight-key chord the same price as a new single note.

Cost is bounded: held-out tunes in the order given until :data:`MAX_UNITS` units.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence, Sized
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from livegen.errors import ConfigError
from livegen.eval.ngram import ORDER, Base, IndependentKeys, IndependentSlots, NGram, Uniform
from livegen.models.contract import Contract, Whole
from livegen.models.deepmusician import DeepMusicianGenerator, tune_roll
from livegen.models.frames import sigmoid
from livegen.models.midirnn import tune_features
from livegen.models.multitrack import MultiTrackGenerator, piece_frames
from livegen.models.package import ModelPackage
from livegen.models.tokenlstm import LOGITS, TOKEN_INPUT, TokenLstmGenerator, tune_tokens
from livegen.music.corpus import MultiTune, Tune, load_parts

#: Units scored at most: whole held-out tunes are taken in order until this many.
MAX_UNITS = 20_000
#: Streams run side by side through a step graph, and contexts through an encoder: each run stays far
#: inside a model run's time budget (:data:`livegen.models.budget.RUN_BUDGET_S`).
BATCH = 64
ENCODER_BATCH = 16

T = TypeVar("T")
S = TypeVar("S", bound=Sized)


@dataclass(frozen=True, slots=True)
class Likelihood:
    """Mean NLL in nats per ``unit`` of the model and of an n-gram fitted on the same training split."""

    model: float
    ngram: float
    unit: str
    count: int


def held_out_nll(package: ModelPackage, train: Sequence[Tune], held_out: Sequence[Tune]) -> Likelihood | None:
    """The model's and an n-gram's held-out NLL (see the module docstring); None for a model without a
    likelihood (the ``block`` kind)."""
    manifest = package.manifest
    if manifest.kind == "block":
        return None
    family = manifest.family
    if family == "midirnn":
        return midirnn_nll(package, train, held_out)
    if family == "token-lstm":
        return token_lstm_nll(package, train, held_out)
    if family == "deep-musician":
        return deep_musician_nll(package, train, held_out)
    if family == "multitrack-rnn":
        data = str(manifest.training.get("data", ""))
        tracks = len(MultiTrackGenerator(package).tracks)
        pieces = {p.name: p for p in load_parts(data, tracks=tracks)}
        return multitrack_nll(
            package,
            [pieces[t.name] for t in train if t.name in pieces],
            [pieces[t.name] for t in held_out if t.name in pieces],
        )
    raise ConfigError(
        f"model {package.name}: no held-out likelihood for family {family!r} ({manifest.kind} kind); "
        "scored: midirnn, token-lstm, deep-musician, multitrack-rnn"
    )


def midirnn_nll(package: ModelPackage, train: Sequence[Tune], held_out: Sequence[Tune]) -> Likelihood:
    rep = package.manifest.representation
    beats_max = float(rep.get("beats_max", 1e9))
    pitch_scale = float(rep.get("pitch_scale", 128.0))
    tunes = bounded(held_out, lambda t: t, "note")
    logits = run_streams(
        package, "step", "note", [tune_features(t, beats_max, pitch_scale) for t in tunes], "pitch_logits"
    )
    model = categorical_nll([out[:-1] for out in logits], [t.pitch[1:].astype(np.int64) for t in tunes])
    held = [[int(p) for p in t.pitch] for t in tunes]
    ngram = ngram_nll([[int(p) for p in t.pitch] for t in train], held, Uniform(128))
    return Likelihood(model, ngram, "note (its pitch only)", scored(held))


def token_lstm_nll(package: ModelPackage, train: Sequence[Tune], held_out: Sequence[Tune]) -> Likelihood:
    vocabulary = TokenLstmGenerator(package).vocabulary
    held = bounded(held_out, lambda t: tune_tokens(t, vocabulary), "token")
    logits = run_streams(package, "step", TOKEN_INPUT, held, LOGITS)
    model = categorical_nll([out[:-1] for out in logits], [tokens[1:] for tokens in held])
    train_tokens = [tune_tokens(t, vocabulary).tolist() for t in train]
    ngram = ngram_nll(train_tokens, [tokens.tolist() for tokens in held], Uniform(len(vocabulary)))
    return Likelihood(model, ngram, f"token (of {len(vocabulary)})", scored(held))


def deep_musician_nll(package: ModelPackage, train: Sequence[Tune], held_out: Sequence[Tune]) -> Likelihood:
    generator = DeepMusicianGenerator(package)
    keys, window = generator.keys, generator.window
    block = int(Contract(fields=(Whole("decode_frames"),)).values(package)["decode_frames"])
    rolls = bounded(held_out, lambda t: tune_roll(t, generator.pitch_min, keys), "frame")
    contexts, targets = [], []
    for roll in rolls:
        padded = np.concatenate([np.zeros((window, keys), dtype=np.float32), roll])
        for start in range(1, len(roll), block):
            contexts.append(padded[start : start + window])
            targets.append(roll[start : start + block])
    total = 0.0
    for i in range(0, len(contexts), ENCODER_BATCH):
        logits = decode_blocks(package, np.stack(contexts[i : i + ENCODER_BATCH]), block)
        for row, target in zip(logits, targets[i : i + ENCODER_BATCH], strict=True):
            frames = row[: len(target)].astype(np.float64)
            total += float((np.logaddexp(0.0, frames) - target * frames).sum())
    held = [frame_tokens(roll) for roll in rolls]
    train_frames = [frame_tokens(tune_roll(t, generator.pitch_min, keys)) for t in train]
    base = IndependentKeys.fit((f for frames in train_frames for f in frames), keys)
    count = scored(held)
    return Likelihood(total / count, ngram_nll(train_frames, held, base), f"16th frame ({keys} keys)", count)


def multitrack_nll(package: ModelPackage, train: Sequence[MultiTune], held_out: Sequence[MultiTune]) -> Likelihood:
    """:func:`held_out_nll` of a ``multitrack-rnn`` package on pieces of separate tracks."""
    generator = MultiTrackGenerator(package)
    tracks, keys = len(generator.tracks), generator.keys

    def frames_of(piece: MultiTune) -> np.ndarray:
        return piece_frames(piece, tracks, generator.pitch_min, keys)

    frames = bounded(held_out, frames_of, "frame")
    classes = [f.reshape(len(f), tracks, keys + 1).argmax(-1) for f in frames]
    logits = run_streams(package, "step", "frame", frames, "logits")
    per_track = categorical_nll(
        [out[:-1].reshape(-1, keys + 1) for out in logits], [c[1:].reshape(-1) for c in classes]
    )
    held = [[tuple(int(k) for k in row) for row in c] for c in classes]
    train_tokens = []
    for piece in train:
        train_classes = frames_of(piece).reshape(-1, tracks, keys + 1).argmax(-1)
        train_tokens.append([tuple(int(k) for k in row) for row in train_classes])
    base = IndependentSlots.fit((f for seq in train_tokens for f in seq), tracks, keys + 1)
    unit = f"16th frame ({tracks} tracks of a rest or {keys} keys)"
    return Likelihood(per_track * tracks, ngram_nll(train_tokens, held, base), unit, scored(held))


# ---- shared ------------------------------------------------------------------------


def bounded(items: Sequence[T], encode: Callable[[T], S], unit: str) -> list[S]:
    """The encodings of ``items`` in order (those with at least two units) until :data:`MAX_UNITS` units."""
    out: list[S] = []
    units = 0
    for item in items:
        if units >= MAX_UNITS:
            break
        encoded = encode(item)
        if len(encoded) >= 2:
            out.append(encoded)
            units += len(encoded) - 1
    if not out:
        raise ConfigError(f"{len(items)} held-out tunes: none has the two {unit}s a likelihood needs (one to feed)")
    return out


def scored(sequences: Sequence[Sized]) -> int:
    """Units scored in ``sequences``: all but each one's first."""
    return sum(len(s) - 1 for s in sequences)


def ngram_nll(train: Sequence[Sequence[Hashable]], held: Sequence[Sequence[Hashable]], base: Base) -> float:
    """Mean NLL of an order-:data:`ORDER` n-gram fitted on ``train`` over ``held``, each sequence's first token
    history only."""
    return NGram.fit(train, ORDER, base).nll(held, first=1)


def categorical_nll(logits: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> float:
    """Mean cross-entropy (nats) of rows of ``logits`` [n, K] against class indices ``targets`` [n]."""
    total, count = 0.0, 0
    for rows, target in zip(logits, targets, strict=True):
        rows = rows.astype(np.float64)
        log_z = np.logaddexp.reduce(rows, axis=-1)
        total += float((log_z - rows[np.arange(len(target)), target]).sum())
        count += len(target)
    return total / count


def zero_state(package: ModelPackage, role: str, batch: int) -> dict[str, np.ndarray]:
    """Zero state tensors of graph ``role`` for ``batch`` streams side by side."""
    graph = package.manifest.graphs[role]
    sources = {src for src, _ in graph.state}
    return {
        t.name: np.zeros([d if isinstance(d, int) else batch if d == "batch" else 1 for d in t.shape], np.float32)
        for t in graph.inputs
        if t.name in sources
    }


def run_streams(
    package: ModelPackage, role: str, input_name: str, sequences: Sequence[np.ndarray], output: str
) -> list[np.ndarray]:
    """Feed each of ``sequences`` ([n, ...] inputs, one per step) through the streaming graph ``role`` from a
    zero state; per sequence, ``output`` (batch first) after every step, [n, ...]. Sequences run side by side."""
    graph = package.manifest.graphs[role]
    session = package.sessions[role]
    names = [t.name for t in graph.outputs]
    results: list[np.ndarray] = [np.zeros(0) for _ in sequences]
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for chunk in (order[i : i + BATCH] for i in range(0, len(order), BATCH)):
        length = max(len(sequences[i]) for i in chunk)
        first = sequences[chunk[0]]
        inputs = np.zeros((len(chunk), length, *first.shape[1:]), dtype=first.dtype)
        for row, i in enumerate(chunk):
            inputs[row, : len(sequences[i])] = sequences[i]
        state = zero_state(package, role, len(chunk))
        steps = []
        for t in range(length):
            values = dict(zip(names, session.run(names, {**state, input_name: inputs[:, t]}), strict=True))
            state = {src: values[dst] for src, dst in graph.state}
            steps.append(values[output])
        stacked = np.stack(steps, axis=1)  # [batch, length, ...]
        for row, i in enumerate(chunk):
            results[i] = stacked[row, : len(sequences[i])]
    return results


def decode_blocks(package: ModelPackage, contexts: np.ndarray, steps: int) -> np.ndarray:
    """A deep-musician package's logits [batch, steps, keys] after each of ``contexts`` [batch, window, keys]:
    the encoder reads the context, the decoder starts from an empty frame and is fed its own sigmoid."""
    (h,) = package.sessions["encoder"].run(["h"], {"roll": contexts.astype(np.float32)})
    frame = np.zeros((len(contexts), contexts.shape[2]), dtype=np.float32)
    out = []
    for _ in range(steps):
        logits, h = package.sessions["decoder"].run(["logits", "h_out"], {"frame": frame, "h": h})
        out.append(logits)
        frame = sigmoid(logits).astype(np.float32)
    return np.stack(out, axis=1)


def frame_tokens(roll: np.ndarray) -> list[tuple[int, ...]]:
    """Each frame of a binary roll [frames, keys] as the tuple of its sounding keys."""
    return [tuple(int(k) for k in np.flatnonzero(row)) for row in roll]
