"""Two continuations any model must beat, scored on the same seeds as the model.

Context: setup (offline analysis).

- **random notes**: one line of pitches drawn uniformly over the seed's own pitch range, with
  inter-onset intervals and lengths drawn from a fixed simple grid (:data:`IOI_CHOICES`);
  no key, no metre, no memory. It bounds the metrics from below: a feature where the model
  scores no better than this says nothing good about the model.
- **repeat the seed**: the seed phrase looped to fill the continuation. Real music from the
  same tune, but no development: it scores well on pitch and rhythm histograms and shows what
  a model that only copies would get.

Both return notes in ticks from the continuation's start (0), like the model's continuation
after the seed, so every system is measured over the same bars.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from livegen.music.events import Note
from livegen.music.time import PPQN

#: Inter-onset intervals of the random baseline, in ticks: a sixteenth to a half note.
IOI_CHOICES = (PPQN // 4, PPQN // 2, PPQN, PPQN * 3 // 2, PPQN * 2)
#: Note lengths of the random baseline, in ticks (a note never outlasts the next onset).
LENGTH_CHOICES = (PPQN // 4, PPQN // 2, PPQN, PPQN * 2)
VELOCITY = 80


def random_notes(seed: Sequence[Note], length: int, rng: np.random.Generator) -> list[Note]:
    """A random single line of ``length`` ticks over the seed's pitch range (60-72 for an empty seed)."""
    if length <= 0:
        return []
    pitches = [n.pitch for n in seed]
    low, high = (min(pitches), max(pitches)) if pitches else (60, 72)
    notes: list[Note] = []
    onset = 0
    while onset < length:
        ioi = int(rng.choice(IOI_CHOICES))
        duration = min(int(rng.choice(LENGTH_CHOICES)), ioi, length - onset)
        pitch = int(rng.integers(low, high + 1))
        notes.append(Note(pitch=pitch, velocity=VELOCITY, start=onset, duration=duration))
        onset += ioi
    return notes


def repeat_seed(seed: Sequence[Note], seed_length: int, length: int) -> list[Note]:
    """The seed (``seed_length`` ticks long, notes from 0) looped to fill ``length`` ticks."""
    if seed_length <= 0:
        raise ValueError(f"seed length {seed_length} ticks: expected more than 0")
    ordered = sorted(seed, key=lambda n: (n.start, n.pitch))
    notes: list[Note] = []
    offset = 0
    while offset < length and ordered:
        for n in ordered:
            start = offset + n.start
            if start >= length:
                break
            end = min(offset + min(n.end, seed_length), length)
            notes.append(Note(pitch=n.pitch, velocity=n.velocity, start=start, duration=max(0, end - start)))
        offset += seed_length
    return notes
