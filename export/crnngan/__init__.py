"""The ``crnngan`` family (seed 003, C-RNN-GAN): a recurrent GAN over note events, played as ``block`` phrases.

Context: setup (training and export; imports torch, never imported by the host).
"""

from __future__ import annotations

from export.crnngan.model import NAME, CrnnGanConfig
from export.crnngan.package import crnngan_card, export_crnngan
from export.crnngan.train import CrnnGanOptions, train_crnngan
from export.family import Family

FAMILY = Family(
    NAME,
    options=CrnnGanOptions,
    config=CrnnGanConfig,
    train=train_crnngan,
    export=export_crnngan,
    card=crnngan_card,
)
