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

from livegen.errors import PackageError
from livegen.models.block import LISTEN_FRAMES, BlockGenerator, notes_of_block
from livegen.models.frames import RollNote, representation_ints, sigmoid
from livegen.models.manifest import MANIFEST
from livegen.models.package import ModelPackage
from livegen.models.sampling import SamplingParams

#: The integer representation fields, each at least 1 (``pitch_min`` at least 0).
INTEGER_FIELDS = ("grid", "pitch_min", "keys", "block_frames", "latent", "polyphony", "max_hold")
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

    def __init__(self, package: ModelPackage) -> None:
        self.package = package
        path = package.folder / MANIFEST
        values = representation_ints(package, INTEGER_FIELDS)
        self.pitch_min, self.keys = values["pitch_min"], values["keys"]
        self.latent, self.polyphony = values["latent"], values["polyphony"]
        frames = values["block_frames"]
        if frames % LISTEN_FRAMES:
            raise PackageError(
                f"{path}: field 'representation.block_frames': expected a whole number of 4/4 bars "
                f"(a multiple of {LISTEN_FRAMES} frames), got {frames}"
            )
        graph = package.manifest.graphs.get(ROLE)
        if graph is None:
            raise PackageError(f"{path}: an imagegan package needs [graphs.{ROLE}]")
        inputs = {spec.name: spec.shape for spec in graph.inputs}
        outputs = {spec.name: spec.shape for spec in graph.outputs}
        if "z" not in inputs or "logits" not in outputs:
            raise PackageError(
                f"{path}: [graphs.{ROLE}]: expected input 'z' and output 'logits', got inputs {sorted(inputs)} "
                f"and outputs {sorted(outputs)}"
            )
        if list(inputs["z"])[1:] != [self.latent]:
            raise PackageError(
                f"{path}: field 'representation.latent': expected {list(inputs['z'])[-1]!r} (the last dimension of "
                f"graph {ROLE!r} input 'z'), got {self.latent}"
            )
        if list(outputs["logits"])[1:] != [frames, self.keys]:
            raise PackageError(
                f"{path}: fields 'representation.block_frames' and 'representation.keys': expected "
                f"{list(outputs['logits'])[1:]} (graph {ROLE!r} output 'logits' [batch, frames, keys]), "
                f"got [{frames}, {self.keys}]"
            )
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
