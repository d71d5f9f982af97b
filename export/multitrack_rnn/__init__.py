"""The ``multitrack-rnn`` family (seed 004's baseline): an RNN over flattened multi-track frames.

Context: setup (training and export; imports torch, never imported by the host).
"""

from __future__ import annotations

from export.family import Family
from export.multitrack_rnn.model import NAME, MultiTrackConfig
from export.multitrack_rnn.package import export_multitrack, multitrack_card
from export.multitrack_rnn.train import MultiTrackOptions, train_multitrack

FAMILY = Family(
    NAME,
    options=MultiTrackOptions,
    config=MultiTrackConfig,
    train=train_multitrack,
    export=export_multitrack,
    card=multitrack_card,
)
