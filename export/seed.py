"""The seed phrase a package ships: about two bars of a held-out piece, the host's opening call.

Context: setup (export; never imported by the host).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from export.errors import ExportError
from livegen.music.corpus import Tune
from livegen.music.events import Note
from livegen.music.midifile import write_midi
from livegen.music.time import TempoMap, beats_to_ticks

#: The seed phrase's file in a package, how many beats it takes and how it is played.
SEED = "seed.mid"
SEED_BEATS = 8.0
SEED_BPM = 120.0
SEED_VELOCITY = 80


def seed_phrase(tunes: Sequence[Tune], pitch_min: int, pitch_max: int) -> tuple[str, list[Note]]:
    """About two bars (8 beats) from the start of a held-out tune, to be played at 120 BPM.

    The first tune whose opening fits the model's pitch range and holds 8 to 16
    notes (a phrase, neither two long notes nor a blur); failing that, the opening
    with the most notes in range.
    """

    def phrase(tune: Tune) -> list[Note]:
        start = float(tune.onset[0])
        notes = []
        for pitch, onset, duration in zip(tune.pitch, tune.onset, tune.duration, strict=True):
            offset = float(onset) - start
            if offset >= SEED_BEATS:
                break
            notes.append(
                Note(
                    pitch=int(pitch),
                    velocity=SEED_VELOCITY,
                    start=beats_to_ticks(offset),
                    duration=max(1, beats_to_ticks(min(float(duration), SEED_BEATS))),
                )
            )
        return notes

    if not tunes:
        raise ExportError("the checkpoint holds no held-out tunes to take a seed phrase from")
    openings = [(tune.name, phrase(tune)) for tune in tunes]
    in_range = [(name, notes) for name, notes in openings if all(pitch_min <= n.pitch <= pitch_max for n in notes)]
    for name, notes in in_range:
        if 8 <= len(notes) <= 16:
            return name, notes
    return max(in_range or openings, key=lambda item: len(item[1]))


def write_seed(path: Path, tunes: Sequence[Tune], pitch_min: int, pitch_max: int) -> str:
    """The package's seed phrase (about two bars of a held-out piece); returns the piece's name."""
    name, notes = seed_phrase(tunes, pitch_min, pitch_max)
    write_midi(path, {"seed": notes}, tempo=TempoMap.constant(SEED_BPM))
    return name
