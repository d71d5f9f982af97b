"""The ``imagegan`` family (seed 000 §4.3) as a ``block`` generator.

Context: control (the planner's thread); the manifest checks in the constructor run at setup.

A convolutional GAN draws a block of the piano roll as an image. One graph,
``generator``: ``z`` [batch, latent] (a latent drawn from a normal distribution) ->
``logits`` [batch, block_frames, keys], a logit per pixel: frame ``t`` (a 16th) and
key ``k`` (pitch ``pitch_min + k``). Only the generator is shipped.

The model is unconditional (it reads nothing of what was played): the host
(:class:`~livegen.models.block.BlockGenerator`) asks for ``params.candidates`` blocks
and keeps the one that best fits the last bar heard. They are drawn in one ONNX call
(the batch dimension), every draw from the ``rng`` the host passes:

- the latents: ``z ~ N(0, temperature^2)`` per dimension (a low temperature keeps to
  the most typical images, the GAN "truncation" of the latent);
- the pixels: a pixel sounds when ``sigmoid(logit / temperature)`` is above a
  threshold drawn uniformly once per key and block, so a key's run of likely pixels
  becomes one held note rather than a flicker of independent draws; as the
  temperature falls this is the threshold at probability 0.5 the seed's image-to-MIDI
  step used;
- at most ``polyphony`` keys sound in a frame, the most probable;
- a run of sounding pixels in a key is one note (:func:`~livegen.models.block.notes_of_block`).

``representation``: ``grid`` (ticks per frame, a 16th), ``pitch_min``, ``keys``,
``block_frames`` (a whole number of 4/4 bars), ``latent``, ``polyphony``, ``max_hold``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from livegen.models.block import LISTEN_FRAMES, BlockGenerator, notes_of_block
from livegen.models.contract import ANY, Contract, Tensor, Whole
from livegen.models.frames import RollNote, sigmoid
from livegen.models.package import ModelPackage
from livegen.models.sampling import SamplingParams

ROLE = "generator"


def draw_pixels(logits: np.ndarray, temperature: float, thresholds: np.ndarray, polyphony: int) -> np.ndarray:
    """Boolean [batch, frames, keys]: the pixels that sound.

    ``thresholds`` [batch, keys] in [0, 1): a pixel sounds when ``sigmoid(logit / temperature)``
    is above its key's threshold; then at most ``polyphony`` per frame, the highest logits.
    """
    probabilities = sigmoid(logits.astype(np.float64) / temperature)
    on = probabilities > thresholds[:, None, :]
    if logits.shape[-1] > polyphony and bool(on.any()):
        ranked = np.where(on, logits.astype(np.float64), -np.inf)
        order = np.argsort(-ranked, axis=-1, kind="stable")[..., :polyphony]
        keep = np.zeros_like(on)
        np.put_along_axis(keep, order, True, axis=-1)
        on &= keep
    return on


class ImageGanGenerator(BlockGenerator):
    """An image GAN's generator: blocks of piano roll drawn from noise, the best fitting of several kept."""

    contract = Contract(
        fields=(
            Whole("grid"),
            Whole("pitch_min", minimum=0),
            Whole("keys"),
            Whole("block_frames", multiple=LISTEN_FRAMES, meaning=" (a whole number of 4/4 bars)"),
            Whole("latent"),
            Whole("polyphony"),
            Whole("max_hold"),
        ),
        tensors=(Tensor(ROLE, "z", (ANY, "latent")), Tensor(ROLE, "logits", (ANY, "block_frames", "keys"))),
        key_range=True,
    )

    def __init__(self, package: ModelPackage) -> None:
        self.package = package
        values = self.contract.values(package)
        self.pitch_min, self.keys = values["pitch_min"], values["keys"]
        self.latent, self.polyphony = values["latent"], values["polyphony"]
        frames = values["block_frames"]
        self._session = package.sessions[ROLE]
        self._init_block(
            block_frames=frames,
            context_frames=0,
            conditioned=False,
            max_hold=values["max_hold"],
            grid=values["grid"],
        )

    def _propose(
        self, previous: Sequence[RollNote], count: int, params: SamplingParams, rng: np.random.Generator
    ) -> list[list[RollNote]]:
        t = params.temperature
        z = (rng.standard_normal((count, self.latent)) * t).astype(np.float32)
        thresholds = rng.random((count, self.keys))
        (logits,) = self._session.run(["logits"], {"z": z})
        on = draw_pixels(np.asarray(logits), t, thresholds, self.polyphony)
        return [notes_of_block(block.astype(np.float32), self.pitch_min) for block in on]
