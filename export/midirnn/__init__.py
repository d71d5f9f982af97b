"""The ``midirnn`` family (seeds 000 §4.1 and 003 §2A): an LSTM over notes as (pitch, step, duration).

Context: setup (training and export; imports torch, never imported by the host).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from export.errors import ExportError
from export.family import SIZES, Family
from export.midirnn.model import NAME, MidiRnnConfig
from export.midirnn.package import export_package, model_card
from export.midirnn.train import TrainOptions, train_midirnn


def _config(time_head: str, **fields: Any) -> MidiRnnConfig:
    embedding = fields.get("pitch_embedding")
    if embedding is not None and not 0 <= embedding <= 256:
        raise ExportError(f"--pitch-embedding {embedding}: expected a whole number from 0 to 256")
    return MidiRnnConfig.for_time_head(time_head, **fields)


def _train(options: TrainOptions) -> Path:
    return train_midirnn(options).checkpoint


FAMILY = Family(
    NAME,
    options=TrainOptions,
    config=MidiRnnConfig,
    train=_train,
    export=export_package,
    card=model_card,
    flags={**SIZES, "pitch_embedding": "pitch_embedding", "time_head": "time_head"},
    make_config=_config,
)
