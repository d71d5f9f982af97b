"""The ``deep-musician`` family (seed 002): a GRU encoder-decoder over an 88-key piano roll, focal loss.

Context: setup (training and export; imports torch, never imported by the host).
"""

from __future__ import annotations

from export.deepmusician.model import NAME, DeepMusicianConfig
from export.deepmusician.package import deep_musician_card, export_deep_musician
from export.deepmusician.train import DeepMusicianOptions, train_deep_musician
from export.family import SIZES, Family

FAMILY = Family(
    NAME,
    options=DeepMusicianOptions,
    config=DeepMusicianConfig,
    train=train_deep_musician,
    export=export_deep_musician,
    card=deep_musician_card,
    flags={**SIZES, "alpha": "alpha", "gamma": "gamma", "stride": "stride"},
)
