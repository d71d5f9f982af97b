"""The n-gram baseline: what counting alone predicts, fitted on a model's own training split.

Context: setup (offline analysis).

Music is read as *onset slices*: at each distinct onset, the pitches that start there
(one for a melody, a chord for chorales), the class of the gap to the next onset and
the class of the top note's length (:data:`metrics.DURATION_CLASSES`, nearest on a log
scale). An order-``n`` model predicts the next slice from the ``n - 1`` before it,
interpolated down to a unigram with Witten-Bell smoothing (Witten & Bell 1991; as in
SRILM's ``-wbdiscount -interpolate``). Small deep models often fail to beat one.

For a likelihood the order-0 model matters: a token never seen in training (a new
voicing of a chord, a frame of a piano roll) must get a probability that the seen ones
give up. Fitted with a *base distribution* over every possible token (:class:`Uniform`
over a model's vocabulary, :class:`IndependentKeys` for piano-roll frames,
:class:`IndependentSlots` for one class per track), the unigram is itself Witten-Bell
interpolated with it, ``P0(w) = (c(w) + T b(w)) / (N + T)`` for ``N`` training tokens of
``T`` types, so the n-gram is a proper distribution over the base's whole space. Without
one, an unseen token costs a fixed floor that no seen token pays for.

Written by hand: the libraries that do this (nltk.lm, kenlm) work on word strings,
need a training pipeline of their own, and nltk.lm scores one word at a time in pure
Python; this needs the whole next-slice distribution at each step, which is one
numpy vector per order here.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np

from livegen.eval.metrics import DURATION_CLASSES
from livegen.music.events import Note
from livegen.music.time import PPQN

#: A slice: (pitches starting together, highest first; gap class; top note's length class).
Slice = tuple[tuple[int, ...], int, int]
VELOCITY = 80
#: Order of the gate's n-gram baseline.
ORDER = 3

_LOG_CLASSES = np.log(DURATION_CLASSES)


def duration_class(ticks: int) -> int:
    """Index of the nearest :data:`DURATION_CLASSES` value on a log scale."""
    return int(np.argmin(np.abs(_LOG_CLASSES - np.log(max(ticks, 1) / PPQN))))


def slices(notes: Sequence[Note]) -> list[Slice]:
    """``notes`` as onset slices; the last slice's gap is its top note's length."""
    by_onset: dict[int, list[Note]] = defaultdict(list)
    for n in notes:
        by_onset[n.start].append(n)
    onsets = sorted(by_onset)
    out = []
    for i, onset in enumerate(onsets):
        chord = sorted(by_onset[onset], key=lambda n: -n.pitch)
        gap = onsets[i + 1] - onset if i + 1 < len(onsets) else chord[0].duration
        out.append((tuple(n.pitch for n in chord), duration_class(gap), duration_class(chord[0].duration)))
    return out


class Base(Protocol):
    """An order-0 distribution over every possible token, seen in training or not."""

    def probability(self, token: Hashable) -> float: ...


@dataclass(frozen=True, slots=True)
class Uniform:
    """Every one of ``size`` tokens (a model's whole vocabulary) equally likely."""

    size: int

    def probability(self, token: Hashable) -> float:
        return 1.0 / self.size


@dataclass(frozen=True, slots=True)
class IndependentKeys:
    """Frames as tuples of the keys that sound: each key sounds independently, at its training rate."""

    #: log P(key sounds) - log P(key silent), per key
    log_ratio: np.ndarray
    #: log P(every key silent)
    log_silent: float

    @classmethod
    def fit(cls, frames: Iterable[Sequence[int]], keys: int) -> IndependentKeys:
        """Rates of ``keys`` keys in ``frames``, add-half smoothed (Krichevsky-Trofimov): none is 0 or 1."""
        counts = np.zeros(keys)
        n = 0
        for frame in frames:
            counts[list(frame)] += 1
            n += 1
        on = (counts + 0.5) / (n + 1.0)
        return cls(np.log(on) - np.log1p(-on), float(np.log1p(-on).sum()))

    def probability(self, token: Hashable) -> float:
        keys = list(cast(Sequence[int], token))
        return float(np.exp(self.log_silent + self.log_ratio[keys].sum()))


@dataclass(frozen=True, slots=True)
class IndependentSlots:
    """Tokens as tuples of one class per slot (a track's rest or pitch): each slot independently, at its rates."""

    #: log P(class) per slot, [slots, classes]
    log_p: np.ndarray

    @classmethod
    def fit(cls, tokens: Iterable[Sequence[int]], slots: int, classes: int) -> IndependentSlots:
        """Rates of each slot's ``classes`` classes in ``tokens``, add-half smoothed: none is 0."""
        counts = np.zeros((slots, classes))
        n = 0
        for token in tokens:
            counts[np.arange(slots), list(token)] += 1
            n += 1
        return cls(np.log((counts + 0.5) / (n + 0.5 * classes)))

    def probability(self, token: Hashable) -> float:
        classes = list(cast(Sequence[int], token))
        return float(np.exp(self.log_p[np.arange(len(classes)), classes].sum()))


@dataclass(slots=True)
class NGram:
    """An interpolated Witten-Bell n-gram over tokens (onset slices, pitches, a model's own tokens)."""

    order: int
    vocabulary: list[Hashable]
    index: dict[Hashable, int]
    #: per order k (1..order-1): context of k slice indices -> (next indices, counts)
    tables: list[dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]]]
    unigram: np.ndarray
    #: the order-0 model of tokens never seen in training, and the unigram's weight on it (T / (N + T))
    base: Base | None = None
    escape: float = 0.0

    @classmethod
    def fit_notes(cls, pieces: Iterable[Sequence[Note]], order: int = ORDER) -> NGram:
        """An n-gram over the onset slices of ``pieces``."""
        return cls.fit([slices(p) for p in pieces], order)

    @classmethod
    def fit(cls, sequences: Sequence[Sequence[Hashable]], order: int = ORDER, base: Base | None = None) -> NGram:
        """An n-gram over token ``sequences`` (tokens must sort: numbers, or tuples of them).

        Without ``base`` the unigram is add-one smoothed over the tokens seen; with it, Witten-Bell
        interpolated with ``base`` (see the module docstring).
        """
        if order < 1:
            raise ValueError(f"n-gram order {order}: expected 1 or more")
        vocabulary: list[Hashable] = sorted({s for seq in sequences for s in seq})  # type: ignore[type-var]
        if not vocabulary:
            raise ValueError("an n-gram needs at least one token to fit")
        index = {s: i for i, s in enumerate(vocabulary)}
        ids = [[index[s] for s in seq] for seq in sequences]
        counts = np.ones(len(vocabulary)) if base is None else np.zeros(len(vocabulary))  # add-one without a base
        for seq in ids:
            np.add.at(counts, seq, 1)
        raw: list[dict[tuple[int, ...], Counter[int]]] = [defaultdict(Counter) for _ in range(order - 1)]
        for seq in ids:
            for i, w in enumerate(seq):
                for k in range(1, order):
                    if i - k >= 0:
                        raw[k - 1][tuple(seq[i - k : i])][w] += 1
        tables = [
            {
                h: (np.fromiter(c.keys(), dtype=np.int64), np.fromiter(c.values(), dtype=np.float64))
                for h, c in t.items()
            }
            for t in raw
        ]
        if base is None:
            return cls(order, vocabulary, index, tables, counts / counts.sum())
        total, types = counts.sum(), len(vocabulary)
        prior = np.array([base.probability(s) for s in vocabulary])
        unigram = (counts + types * prior) / (total + types)
        return cls(order, vocabulary, index, tables, unigram, base, types / (total + types))

    def distribution(self, history: Sequence[int]) -> np.ndarray:
        """P(next slice | the last ``order - 1`` slice indices of ``history``), interpolated down to the unigram
        (with a base, what the tokens seen in training get; the rest is the base's)."""
        p = self.unigram
        for k in range(1, self.order):
            if len(history) < k:
                break
            entry = self.tables[k - 1].get(tuple(history[-k:]))
            if entry is None:
                continue
            nexts, counts = entry
            total, types = counts.sum(), len(nexts)
            p = p * (types / (total + types))
            p[nexts] += counts / (total + types)
        return p

    def encode(self, notes: Sequence[Note]) -> list[int]:
        """Slice indices of ``notes``; a slice never seen in training is left out of the history."""
        return [i for s in slices(notes) if (i := self.index.get(s)) is not None]

    def probability(self, history: Sequence[int], token: Hashable) -> float:
        """P(``token`` | ``history``): its entry of :meth:`distribution`, or for a token never seen in
        training the base's share (0 without a base). ``history`` holds -1 for unseen tokens."""
        i = self.index.get(token)
        p = 0.0 if i is None else float(self.unigram[i])
        escape = self.escape
        for k in range(1, self.order):
            if len(history) < k:
                break
            entry = self.tables[k - 1].get(tuple(history[-k:]))
            if entry is None:
                continue
            nexts, counts = entry
            total, types = float(counts.sum()), len(nexts)
            seen = float(counts[nexts == i].sum()) if i is not None else 0.0
            p = (p * types + seen) / (total + types)
            escape *= types / (total + types)
        if i is None and self.base is not None:
            return escape * self.base.probability(token)
        return p

    def nll(self, sequences: Iterable[Sequence[Hashable]], *, first: int = 0) -> float:
        """Mean negative log-likelihood (nats) per token of ``sequences``, each given the tokens before it.

        The first ``first`` tokens of each sequence are history only. A token never seen in training
        costs what the base gives it; without a base, half the rarest seen token's probability (a
        floor no seen token pays for). It breaks every context it is part of.
        """
        floor = float(-np.log(self.unigram.min() / 2))
        total, count = 0.0, 0
        for sequence in sequences:
            history: list[int] = []
            for position, s in enumerate(sequence):
                i = self.index.get(s)
                if position >= first:
                    floored = i is None and self.base is None
                    total += floor if floored else -float(np.log(self.probability(history, s)))
                    count += 1
                history.append(-1 if i is None else i)
        return total / count if count else float("nan")

    def continue_(self, seed: Sequence[Note], length: int, rng: np.random.Generator) -> list[Note]:
        """Sample slices after ``seed`` from tick 0 until ``length`` ticks are filled (notes cut at ``length``)."""
        history = self.encode(seed)
        notes: list[Note] = []
        onset = 0
        while onset < length:
            i = int(rng.choice(len(self.vocabulary), p=self.distribution(history)))
            history.append(i)
            pitches, gap, top_length = cast(Slice, self.vocabulary[i])
            gap_ticks = round(float(DURATION_CLASSES[gap]) * PPQN)
            duration = min(round(float(DURATION_CLASSES[top_length]) * PPQN), length - onset)
            notes.extend(Note(pitch=p, velocity=VELOCITY, start=onset, duration=duration) for p in pitches)
            onset += gap_ticks
        return notes
