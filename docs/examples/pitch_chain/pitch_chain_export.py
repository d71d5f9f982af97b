"""The example family's training side: ``python -m export train pitch-chain`` and ``python -m export onnx``.

A family's training code gives ``python -m export`` one :class:`~export.family.Family`,
named ``FAMILY`` in a module its distribution registers in the ``livegen.export_families``
entry-point group. Here "training" is counting the pitch transitions of the tunes in
``--data`` (a folder of MIDI files, a prepared cache or a ``corpus:`` name); the
checkpoint keeps the pitches, and exporting writes the package with
:func:`pitch_chain.write_package`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pitch_chain import write_package

from export.common import ConfigRecord, TrainingOptions, read_checkpoint, save_checkpoint
from export.errors import ExportError
from export.family import Family
from livegen.music.corpus import load_corpus

NAME = "pitch-chain"


@dataclass(frozen=True, slots=True)
class PitchChainConfig(ConfigRecord):
    #: Beats from one note to the next (and each note's length).
    step_beats: float = 0.5


@dataclass(frozen=True, slots=True)
class PitchChainOptions(TrainingOptions):
    config: PitchChainConfig = field(default_factory=PitchChainConfig)


def train(options: PitchChainOptions) -> Path:
    """Count: the checkpoint keeps every tune's pitches (the table is counted from them at export)."""
    options.check()
    tunes = load_corpus(options.data, limit=options.limit)
    phrases = [[int(p) for p in tune.pitch] for tune in tunes if len(tune) >= 2]
    if not phrases:
        raise ExportError(f"--data {options.data}: no tune of two notes or more to count transitions in")
    return save_checkpoint(options.out, NAME, config=options.config.to_dict(), phrases=phrases)


def export(checkpoint: Path, out: Path, /, *, name: str | None = None, version: str = "0.1.0") -> Path:
    """The package of a checkpoint (``name`` and ``version`` are the example's own: pitch-chain 0.1.0)."""
    saved = read_checkpoint(checkpoint, NAME)
    config = PitchChainConfig.from_dict(saved["config"])
    return write_package(out, saved["phrases"], step_beats=config.step_beats)


def card(**_: Any) -> str:
    return "# pitch-chain\nA first-order chain of pitches (a worked example).\n"


FAMILY = Family(
    name=NAME,
    options=PitchChainOptions,
    config=PitchChainConfig,
    train=train,
    export=export,
    card=card,
    flags={},  # it reads none of the train command's size options
)
