"""The ``multitrack-cnn`` family (seed 004's CNN) as a ``block`` generator.

Context: control (the planner's thread); the manifest checks in the constructor run at setup.

Seed 004 maps the last 20 time steps of a multi-track piano roll (instruments x time x
pitch) to the next 20 with a symmetric 2D CNN, so every instrument's next bar is
predicted from all instruments at once ("dependent instrument sampling"). Here the
tracks are those of ``multitrack-rnn`` (``representation.tracks``: a name, a MIDI
channel, a GM program and the track's mean training pitch), each one line: per track
and frame a one-hot over ``keys + 1`` classes (class 0 = rest, class ``1 + k`` = pitch
``pitch_min + k``).

The graph contract (one graph, ``block``)::

    roll   float32 [batch, tracks, context_frames, keys + 1]   the one-hot frames before the block
    logits float32 [batch, tracks, block_frames, keys + 1]     per track and frame, the next block's classes

The CNN is not autoregressive: every frame of the block is a distribution given the
context only, and the roll has no onset flag. The host plays it as one line per track
(:func:`draw_lines`), frame by frame, from the model's distribution at the live
temperature and top-p among the classes the live range and scale allow:

- **Moving with the model.** A line keeps its class while the model keeps giving it at
  least the weight it had, and moves, where the model's weight grew, as far as the
  distribution moved from the frame before (the maximal coupling of consecutive
  frames: every frame's class is then distributed as the model says). Holding a pitch
  while the model gives it some fixed share would make a held chord a fixed point (the
  next bar, read from the held one, holds it again); drawing every frame independently would
  change a voice almost every 16th (the clutter seed 004 reports for its independently
  sampled RNN).
- **Drawn afresh on the beat.** Minimal motion is the least the model allows, not what
  the music does, so a share ``representation.redraw`` of a line's frames is drawn
  afresh from the frame's distribution (also exact for every frame). Both the
  coupling's moves and the fresh draws are weighted by the frame's place in the beat
  (``representation.onset_profile``, the training roll's share of onsets on each 16th
  of a beat, mean 1): the model reads no beat, and moves spread evenly over the 16ths
  would put most onsets off the beat. The exporter chooses ``redraw`` by the density
  played from validation contexts.

The family is conditioned (:attr:`~livegen.models.block.BlockGenerator.conditioned`):
``previous`` holds the notes of the ``context_frames`` before the block, the
performer's included; each performed note is given the free track whose ``center`` is
nearest (:func:`~livegen.models.multitrack.assign_tracks`), so a melody played high is
heard as the top voice. The graph is deterministic given the context, so one run serves
every candidate asked for; only the draws differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np

from livegen.errors import PackageError
from livegen.models.block import BlockGenerator, notes_of_block
from livegen.models.contract import Contract, Number, Whole
from livegen.models.frames import RollNote, onset_profile
from livegen.models.manifest import MANIFEST
from livegen.models.multitrack import assign_tracks, read_tracks, tracks_to_frames
from livegen.models.package import ModelPackage
from livegen.models.sampling import SamplingParams
from livegen.music.time import PPQN

#: The graph's role in ``[graphs]``.
ROLE = "block"


def context_roll(
    previous: Sequence[RollNote], centers: Sequence[float], frames: int, pitch_min: int, keys: int
) -> np.ndarray:
    """The graph's ``roll`` float32 [tracks, frames, keys + 1] of the ``frames`` before a block.

    ``previous`` has onsets relative to the block's start (negative); performed notes
    (:data:`~livegen.models.frames.ANY_TRACK`) are given tracks first.
    """
    tracks = len(centers)
    notes = assign_tracks(previous, centers)
    flat = tracks_to_frames(notes, -frames, frames, tracks, pitch_min, keys)
    return np.ascontiguousarray(flat.reshape(frames, tracks, keys + 1).transpose(1, 0, 2))


def line_distribution(logits: np.ndarray, params: SamplingParams, mask: np.ndarray) -> np.ndarray:
    """The distribution a line's class is drawn from: ``softmax(logits / temperature)`` over the
    classes ``mask`` allows (all of them if it allows none), cut to the smallest set of classes
    whose probability reaches ``top_p``, in float64."""
    x = logits.astype(np.float64) / params.temperature
    if mask.any():
        x = np.where(mask, x, -np.inf)
    probs = np.exp(x - x.max())
    probs /= probs.sum()
    if params.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        kept = order[: int(np.searchsorted(np.cumsum(probs[order]), params.top_p) + 1)]
        cut = np.zeros_like(probs)
        cut[kept] = probs[kept]
        probs = cut / cut.sum()
    return cast(np.ndarray, probs)


def draw_lines(
    logits: np.ndarray,
    last: Sequence[int],
    params: SamplingParams,
    rng: np.random.Generator,
    mask: np.ndarray,
    *,
    metre: Sequence[float] | None = None,
    redraw: float = 0.0,
) -> np.ndarray:
    """One line per track: classes int64 [tracks, frames] drawn from ``logits`` [tracks, frames, classes].

    Frame ``f`` of a track, with ``p_f`` its :func:`line_distribution` and ``w = metre[f]``
    (1 when ``metre`` is None): with probability ``min(1, redraw * w)`` the class is drawn
    from ``p_f``; otherwise the class ``c`` of frame ``f - 1`` moves with probability
    ``min(1, (1 - min(1, p_f(c) / p_{f-1}(c))) * w)`` to a class drawn from
    ``max(p_f - p_{f-1}, 0)``, where the model's weight grew, and stays otherwise. Before
    the first frame the line is ``last[t]`` for sure (the context's last class). With
    ``w`` 1 every frame's class is distributed as ``p_f``.
    """
    tracks, frames, classes = logits.shape
    weights = np.ones(frames) if metre is None else np.asarray(metre, dtype=np.float64)
    out = np.zeros((tracks, frames), dtype=np.int64)
    for t in range(tracks):
        prev = int(last[t])
        before = np.zeros(classes)
        if 0 <= prev < classes:
            before[prev] = 1.0
        for f in range(frames):
            probs = line_distribution(logits[t, f], params, mask)
            w = weights[f]
            if rng.random() < min(1.0, redraw * w):
                choice = int(rng.choice(classes, p=probs))
            else:
                stay = min(1.0, probs[prev] / before[prev]) if 0 <= prev < classes and before[prev] > 0 else 0.0
                if rng.random() >= min(1.0, (1.0 - stay) * w):
                    choice = prev
                else:
                    grown = np.maximum(probs - before, 0.0)
                    total = grown.sum()
                    choice = int(rng.choice(classes, p=grown / total if total > 0 else probs))
            out[t, f] = choice
            prev, before = choice, probs
    return out


def lines_to_notes(classes: np.ndarray, pitch_min: int, keys: int) -> list[RollNote]:
    """The notes of per-track classes [tracks, frames] (0 = rest): a run of one pitch is one note."""
    notes: list[RollNote] = []
    tracks, frames = classes.shape
    for t in range(tracks):
        roll = np.zeros((frames, keys), dtype=np.float32)
        sounding = classes[t] > 0
        roll[np.flatnonzero(sounding), classes[t][sounding] - 1] = 1.0
        notes.extend(notes_of_block(roll, pitch_min, track=t))
    notes.sort(key=lambda n: (n.onset, -n.pitch, n.track))
    return notes


class MultiTrackCnnGenerator(BlockGenerator):
    """Seed 004's symmetric CNN over a multi-track roll: the next block from the block before.

    Its tensors' shapes follow the track list (tracks, frames, keys and a rest), checked here.
    """

    contract = Contract(
        fields=(
            Whole("pitch_min", minimum=0),
            Whole("keys"),
            Whole("context_frames"),
            Whole("block_frames"),
            Whole("max_hold"),
            Whole("grid"),
            Number("redraw", 0.0, 1.0, default=0.0, meaning=" (the share of a line's frames drawn afresh)"),
        ),
        key_range=True,
    )

    def __init__(self, package: ModelPackage) -> None:
        self.package = package
        path = package.folder / MANIFEST
        values = self.contract.values(package)
        self.pitch_min, self.keys = values["pitch_min"], values["keys"]
        self.tracks = read_tracks(package)
        graph = package.manifest.graphs.get(ROLE)
        if graph is None:
            raise PackageError(f"{path}: a {package.manifest.family} package needs [graphs.{ROLE}]")
        width = self.keys + 1
        for tensors, name, frames_field in (
            (graph.inputs, "roll", "context_frames"),
            (graph.outputs, "logits", "block_frames"),
        ):
            spec = next((s for s in tensors if s.name == name), None)
            if spec is None:
                raise PackageError(f"{path}: [graphs.{ROLE}] needs a tensor named {name!r}")
            expected = (len(self.tracks), values[frames_field], width)
            if len(spec.shape) != 4 or tuple(spec.shape[1:]) != expected:
                raise PackageError(
                    f"{path}: field 'representation': {len(self.tracks)} tracks, {frames_field} = "
                    f"{values[frames_field]} and {self.keys} keys need graph tensor {name!r} of shape "
                    f"[batch, {', '.join(map(str, expected))}], the manifest says {list(spec.shape)}"
                )
        self._session = package.sessions[ROLE]
        self._init_block(
            block_frames=values["block_frames"],
            context_frames=values["context_frames"],
            conditioned=True,
            max_hold=values["max_hold"],
            grid=values["grid"],
        )
        self.channels = {t: track.channel for t, track in enumerate(self.tracks)}
        self._centers = [t.center for t in self.tracks]
        self._mask_key: SamplingParams | None = None
        self._mask = np.ones(width, dtype=bool)
        self.redraw = values["redraw"]
        profile = onset_profile(package, PPQN // self.grid)
        self._metre = None if profile is None else [profile[f % len(profile)] for f in range(self.block_frames)]

    def _placed(self, notes: Sequence[RollNote]) -> Sequence[RollNote]:
        return assign_tracks(notes, self._centers)

    @property
    def programs(self) -> dict[int, int]:
        """MIDI channel -> GM program of each track."""
        return {t.channel: t.program for t in self.tracks}

    def _class_mask(self, params: SamplingParams) -> np.ndarray:
        """Classes the live range and scale allow: the rest always, the pitches inside them (all if none is)."""
        if params != self._mask_key:
            mask = np.ones(self.keys + 1, dtype=bool)
            keys = params.pitch_mask()[self.pitch_min : self.pitch_min + self.keys]
            if keys.any():
                mask[1:] = keys
            self._mask = mask
            self._mask_key = params
        return self._mask

    def _propose(
        self, previous: Sequence[RollNote], count: int, params: SamplingParams, rng: np.random.Generator
    ) -> list[list[RollNote]]:
        roll = context_roll(previous, self._centers, self.context_frames, self.pitch_min, self.keys)
        (logits,) = self._session.run(["logits"], {"roll": roll[None]})
        last = roll[:, -1].argmax(-1)
        mask = self._class_mask(params)
        return [
            lines_to_notes(
                draw_lines(logits[0], last, params, rng, mask, metre=self._metre, redraw=self.redraw),
                self.pitch_min,
                self.keys,
            )
            for _ in range(count)
        ]
