"""The ``midigan`` family (seed 000 §4.2): a dense GAN over single notes (pitch, step, duration).

Context: setup (training and export; imports torch, never imported by the host).
"""

from __future__ import annotations

from export.family import Family
from export.midigan.model import NAME, RECIPES, MidiGanConfig
from export.midigan.package import export_midigan, midigan_card
from export.midigan.train import MidiGanOptions, train_midigan

FAMILY = Family(
    NAME,
    options=MidiGanOptions,
    config=MidiGanConfig,
    train=train_midigan,
    export=export_midigan,
    card=midigan_card,
    recipes=RECIPES,
)
