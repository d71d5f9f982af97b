"""The ``imagegan`` family (seed 000 §4.3): a convolutional GAN over piano-roll images, as a ``block`` model.

Context: setup (training and export; imports torch, never imported by the host).
"""

from __future__ import annotations

from export.family import Family
from export.imagegan.model import NAME, RECIPES, ImageGanConfig
from export.imagegan.package import export_imagegan, imagegan_card
from export.imagegan.train import ImageGanOptions, train_imagegan

FAMILY = Family(
    NAME,
    options=ImageGanOptions,
    config=ImageGanConfig,
    train=train_imagegan,
    export=export_imagegan,
    card=imagegan_card,
    recipes=RECIPES,
)
