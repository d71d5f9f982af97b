"""The ``multitrack-cnn`` family (seed 004): a symmetric 2D CNN from one block of a multi-track roll to the next.

Context: setup (training and export; imports torch, never imported by the host).
"""

from __future__ import annotations

from export.family import Family
from export.multitrack_cnn.model import NAME, MultiTrackCnnConfig
from export.multitrack_cnn.package import export_multitrack_cnn, multitrack_cnn_card
from export.multitrack_cnn.train import MultiTrackCnnOptions, train_multitrack_cnn

FAMILY = Family(
    NAME,
    options=MultiTrackCnnOptions,
    config=MultiTrackCnnConfig,
    train=train_multitrack_cnn,
    export=export_multitrack_cnn,
    card=multitrack_cnn_card,
)
