"""Tiny trained packages of the six exported families, and the music they learn from.

Context: test setup. :func:`build` trains a family for a few batches on a few generated pieces
and exports it; ``tests/conftest.py``'s ``tiny_packages`` builds each at most once per session,
for the family contract (``tests/test_family_contract.py``) and each family's own tests. The
export modules import torch, so they are imported by :func:`build` only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from livegen.music.events import Note
from livegen.music.midifile import write_midi
from livegen.music.time import PPQN

#: The families exported here (the step families folk-lstm and token-lstm have tests of their own).
FAMILIES = ("crnngan", "imagegan", "midigan", "multitrack-cnn", "deep-musician", "multitrack-rnn")

C_MAJOR = [48, 50, 52, 53, 55, 57, 59, 60, 62, 64, 65, 67, 69, 71, 72, 74, 76, 77, 79]
D_MAJOR = [62, 64, 66, 67, 69, 71, 73, 74, 76, 78, 79]


def melody(rng: np.random.Generator, beats: int) -> list[Note]:
    """A line stepping through C major (from C4) in eighths and quarters, accented on the beat."""
    scale, notes, index, tick = C_MAJOR[7:], [], 4, 0
    while tick < beats * PPQN:
        index = int(np.clip(index + rng.choice([-2, -1, 1, 2]), 0, len(scale) - 1))
        length = int(rng.choice([1, 1, 2])) * PPQN // 2
        velocity = 100 if tick % PPQN == 0 else 70
        notes.append(Note(scale[index], velocity, tick, length - PPQN // 16))
        tick += length
    return notes


def tune(rng: np.random.Generator, beats: int) -> list[Note]:
    """One line in D major: eighths and quarters, stepwise."""
    notes, index, tick = [], 5, 0
    while tick < beats * PPQN:
        index = int(np.clip(index + rng.choice([-2, -1, 1, 2]), 0, len(D_MAJOR) - 1))
        length = int(rng.choice([1, 1, 2])) * PPQN // 2
        notes.append(Note(D_MAJOR[index], 80, tick, length))
        tick += length
    return notes


def voices(rng: np.random.Generator, beats: int, starts: tuple[int, ...] = (15, 11, 7, 2)) -> list[Note]:
    """Voices (channels 0, 1, ..., high to low, starting on those degrees of C major) moving by step
    in quarters and halves."""
    notes = []
    for voice, start in enumerate(starts):
        index, tick = start, 0
        while tick < beats * PPQN:
            index = int(np.clip(index + rng.choice([-1, 0, 1]), 0, len(C_MAJOR) - 1))
            length = int(rng.choice([1, 1, 2])) * PPQN
            notes.append(Note(C_MAJOR[index], 80, tick, length - PPQN // 8, channel=voice))
            tick += length
    return notes


def four_voice_pieces(folder: Path) -> Path:
    """8 pieces of four voices, 48 beats each: what the frame families and multitrack-cnn learn."""
    rng = np.random.default_rng(3)
    for i in range(8):
        write_midi(folder / f"piece{i}.mid", {"voices": voices(rng, 48)})
    return folder


def d_major_tunes(folder: Path) -> Path:
    """10 single-line tunes of 32 beats in D major: what midigan learns."""
    rng = np.random.default_rng(5)
    for i in range(10):
        write_midi(folder / f"tune{i}.mid", {"tune": tune(rng, 32)})
    return folder


def build(family: str, data: Path, out: Path) -> Path:
    """Train ``family`` briefly on generated music written into ``data`` (an empty folder) and
    export it to ``out / "tiny-<family>"``; the package's folder."""
    if family == "crnngan":
        from export.crnngan.model import CrnnGanConfig
        from export.crnngan.package import export_crnngan
        from export.crnngan.train import CrnnGanOptions, train_crnngan

        rng = np.random.default_rng(5)
        for i in range(10):
            write_midi(data / f"tune{i}.mid", {"melody": melody(rng, 48)})
        config = CrnnGanConfig(
            hidden=8, window=8, noise=4, batch_size=8, pretrain_epochs=2, batches_per_epoch=3, min_epochs=1
        )
        options = CrnnGanOptions(data=str(data), out=out / "run", epochs=2, patience=1, config=config, threads=1)
        return export_crnngan(train_crnngan(options), out / "tiny-crnngan")
    if family == "imagegan":
        from export.imagegan.model import ImageGanConfig
        from export.imagegan.package import export_imagegan
        from export.imagegan.train import ImageGanOptions, train_imagegan

        rng = np.random.default_rng(5)
        for i in range(8):
            write_midi(data / f"piece{i}.mid", {"voices": voices(rng, 40, starts=(15, 9, 2))})
        config = ImageGanConfig(window=32, hidden=32, channels=4, filters=8, batch_size=16, stride=4)
        options = ImageGanOptions(data=str(data), out=out / "run", epochs=2, seed=1, config=config)
        return export_imagegan(train_imagegan(options), out / "tiny-ig")
    if family == "midigan":
        from export.midigan.model import MidiGanConfig
        from export.midigan.package import export_midigan
        from export.midigan.train import MidiGanOptions, train_midigan

        options = MidiGanOptions(
            data=str(d_major_tunes(data)),
            out=out / "run",
            epochs=3,
            patience=3,
            config=MidiGanConfig(hidden=32, batch_size=16),
        )
        return export_midigan(train_midigan(options), out / "tiny-gan")
    if family == "multitrack-cnn":
        from export.multitrack_cnn.model import MultiTrackCnnConfig
        from export.multitrack_cnn.package import export_multitrack_cnn
        from export.multitrack_cnn.train import MultiTrackCnnOptions, train_multitrack_cnn

        config = MultiTrackCnnConfig(hidden=4, batch_size=16, stride=4)
        options = MultiTrackCnnOptions(
            data=str(four_voice_pieces(data)), out=out / "run", epochs=1, patience=1, config=config
        )
        return export_multitrack_cnn(train_multitrack_cnn(options), out / "tiny-cnn")
    if family == "deep-musician":
        from export.deepmusician.model import DeepMusicianConfig
        from export.deepmusician.package import export_deep_musician
        from export.deepmusician.train import DeepMusicianOptions, train_deep_musician

        config = DeepMusicianConfig(hidden=16, classifier=16, window=16, decode_frames=8, stride=8, batch_size=8)
        options = DeepMusicianOptions(
            data=str(four_voice_pieces(data)), out=out / "run", epochs=1, patience=1, config=config
        )
        return export_deep_musician(train_deep_musician(options), out / "tiny-dm")
    if family == "multitrack-rnn":
        from export.multitrack_rnn.model import MultiTrackConfig
        from export.multitrack_rnn.package import export_multitrack
        from export.multitrack_rnn.train import MultiTrackOptions, train_multitrack

        config = MultiTrackConfig(hidden=16, window=16, batch_size=8)
        options = MultiTrackOptions(
            data=str(four_voice_pieces(data)), out=out / "run", epochs=1, patience=1, config=config
        )
        return export_multitrack(train_multitrack(options), out / "tiny-mt")
    raise ValueError(f"no tiny package for family {family!r}: expected one of {', '.join(FAMILIES)}")
