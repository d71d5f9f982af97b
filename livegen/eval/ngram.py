"""The n-gram baseline: what counting alone predicts, fitted on a model's own training split.

Context: setup (offline analysis).

Music is read as *onset slices*: at each distinct onset, the pitches that start there
(one for a melody, a chord for chorales), the class of the gap to the next onset and
the class of the top note's length (:data:`metrics.DURATION_CLASSES`, nearest on a log
scale). An order-``n`` model predicts the next slice from the ``n - 1`` before it,
interpolated down to a unigram with Witten-Bell smoothing (Witten & Bell 1991; as in
SRILM's ``-wbdiscount -interpolate``). Small deep models often fail to beat one.

Written by hand: the libraries that do this (nltk.lm, kenlm) work on word strings,
need a training pipeline of their own, and nltk.lm scores one word at a time in pure
Python; this needs the whole next-slice distribution at each step, which is one
numpy vector per order here.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import cast

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


@dataclass(slots=True)
class NGram:
    """An interpolated Witten-Bell n-gram over tokens (onset slices, pitches, a model's own tokens)."""

    order: int
    vocabulary: list[Hashable]
    index: dict[Hashable, int]
    #: per order k (1..order-1): context of k slice indices -> (next indices, counts)
    tables: list[dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]]]
    unigram: np.ndarray

    @classmethod
    def fit_notes(cls, pieces: Iterable[Sequence[Note]], order: int = ORDER) -> NGram:
        """An n-gram over the onset slices of ``pieces``."""
        return cls.fit([slices(p) for p in pieces], order)

    @classmethod
    def fit(cls, sequences: Sequence[Sequence[Hashable]], order: int = ORDER) -> NGram:
        """An n-gram over token ``sequences`` (tokens must sort: numbers, or tuples of them)."""
        if order < 1:
            raise ValueError(f"n-gram order {order}: expected 1 or more")
        vocabulary: list[Hashable] = sorted({s for seq in sequences for s in seq})  # type: ignore[type-var]
        if not vocabulary:
            raise ValueError("an n-gram needs at least one token to fit")
        index = {s: i for i, s in enumerate(vocabulary)}
        ids = [[index[s] for s in seq] for seq in sequences]
        counts = np.ones(len(vocabulary))  # add-one unigram: every slice of the vocabulary stays possible
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
        return cls(order, vocabulary, index, tables, counts / counts.sum())

    def distribution(self, history: Sequence[int]) -> np.ndarray:
        """P(next slice | the last ``order - 1`` slice indices of ``history``), interpolated down to the unigram."""
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

    def nll(self, sequences: Iterable[Sequence[Hashable]]) -> float:
        """Mean negative log-likelihood (nats) per token; a token never seen in training costs half the rarest's
        probability (its history skips it)."""
        floor = float(-np.log(self.unigram.min() / 2))
        total, count = 0.0, 0
        for sequence in sequences:
            history: list[int] = []
            for s in sequence:
                i = self.index.get(s)
                total += floor if i is None else float(-np.log(self.distribution(history)[i]))
                count += 1
                if i is not None:
                    history.append(i)
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
