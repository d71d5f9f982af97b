"""The ``midirnn`` family: an LSTM over notes as (pitch, step, duration), after seed 000 §4.1 / 003 §2A.

Context: setup (training and export; imports torch, never imported by the host).

The model follows TensorFlow's "Generate music with an RNN" tutorial that both
seeds use: one LSTM of 128 units reads notes as ``[pitch / 128, step, duration]``
and three dense heads predict the next note's pitch logits (128 classes), step and
duration. The loss is sparse cross-entropy for the pitch and, for step and
duration, the mean squared error plus the tutorial's positive pressure
``10 * mean(relu(-prediction))``.

What differs from the seed, and why:

- The pitch loss is weighted 1.0, not the tutorial's 0.05 (step and duration
  keep 1.0). The tutorial's weight balances a pitch cross-entropy near 4 against
  step/duration errors in seconds on piano performances; on folk melodies in
  beats it leaves pitch under-fitted while duration over-fits. Measured on
  ``corpus:folk`` (seed 0, same split, window 64, otherwise these defaults),
  held-out pitch accuracy / duration MAE: 0.05 -> 22.8% / 0.201 beats,
  0.25 -> 24.6% / 0.204, 1.0 -> 25.8% / 0.219. A 0.02-beat duration error is far
  below the host's sixteenth-note grid; three points of pitch accuracy are not.

- Times are in beats (quarter notes), not seconds, so that tempo belongs to the
  host's clock and a phrase trained at one tempo plays at any other.
- The loss is taken at *every* position of a window (next-note prediction after
  1, 2, ..., W notes of context) instead of only after the last of W notes. The
  host runs the LSTM as a stream from a zero state, so it needs good predictions
  after any number of notes; this also gives W times more targets per window.
- Windows are cut inside each tune (never across two tunes); short tunes and
  tune ends are padded and masked out of the loss.
- Step and duration are clipped to :data:`BEATS_MAX` beats, so a long rest or an
  ABC tune's final held note does not dominate the squared error; the manifest
  tells the host to clamp its inputs the same way.

An option of the family, not the seed's design: ``time_head = "classes"``
(``--time-head classes``) predicts step and duration as logits over a fixed
vocabulary of durations in beats (:class:`TimeClasses`, derived from the training
data by :func:`time_classes`) with cross-entropy, instead of the seed's regression
heads. The MSE-optimal regression output is the conditional *mean*: where the
next step could be an eighth or a quarter it predicts about 0.75 beats, which the
host snaps to a dotted eighth. Measured with ``livegen evaluate`` on the bundled
regression model (corpus:folk, rng seed 0): 41% of its inter-onset intervals are
dotted values the real continuations use 5% of the time, and its IOI-histogram
overlap (0.771) loses to repeating the seed (0.858). A categorical head gives the
host a distribution to sample: an eighth or a quarter, never their mean. The
input note stays ``[pitch / 128, step, duration]`` in beats, so feeding is the same
for both heads; only the outputs and the loss differ.

Another option, ``pitch_embedding`` (``--pitch-embedding N``): the LSTM reads the pitch
as a learned vector of N values instead of the number ``pitch / 128``. The step graph's
input is unchanged; the graph rounds ``pitch / 128`` back to a MIDI pitch and looks
the vector up, so the host feeds any midirnn package the same way. Measured on
``corpus:folk`` with the classes head (seed 0; validation pitch CE, held-out pitch
accuracy, ``livegen evaluate`` overlaps for pitch classes / intervals / inter-onset
intervals, mean over rng seeds 0-19): scalar input 2.119, 25.6%, 0.822 / 0.726 /
0.963; a vector of 32 -> 1.636, 42.8%, 0.911 / 0.850 / 0.925 (repeating the seed:
0.768 / 0.741 / 0.858). With one number for the pitch, neighbouring pitches are 1/128
apart and the LSTM must learn to tell a semitone from a fifth out of that.

The step and duration cross-entropies are weighted :data:`CLASS_TIME_WEIGHT`
(0.1) against the pitch's 1.0 (:meth:`MidiRnnConfig.for_time_head`). At 1, 1, 1
the sum would be the negative log-likelihood of the next note, but the time heads
share the LSTM with the pitch and cost it: measured on ``corpus:folk`` (seed 0,
otherwise these defaults; validation pitch CE, held-out pitch / duration accuracy,
and ``livegen evaluate`` overlaps for pitch classes / inter-onset intervals, mean
over rng seeds 0-19): weight 1 -> 2.211, 24.0% / 76.9%, 0.785 / 0.958;
0.5 -> 2.167, 24.3% / 76.0%, 0.793 / 0.957; 0.25 -> 2.176, 24.5% / 75.0%,
0.810 / 0.950; 0.1 -> 2.119, 25.6% / 70.9%, 0.822 / 0.963 (the regression heads:
2.131, 25.8%, 0.856 / 0.786). A lower weight trades duration likelihood, which
the generated rhythms do not show (their overlap stays 0.95-0.96), for pitch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.common import ConfigRecord
from export.errors import ExportError
from livegen.models.midirnn import tune_features
from livegen.music.corpus import Tune

NAME = "midirnn"


#: Size of the pitch vocabulary (MIDI 0-127) and the divisor of the pitch input.
VOCAB = 128


PITCH_SCALE = float(VOCAB)


#: Steps and durations are clipped to this many beats (two bars of 4/4).
BEATS_MAX = 8.0


#: The step and duration heads: the seed's regression, or logits over duration classes.
TIME_HEADS = ("regression", "classes")


#: Loss weight of the step and duration cross-entropies with ``time_head = "classes"`` (pitch: 1.0).
CLASS_TIME_WEIGHT = 0.1


#: Class values are multiples of this many beats (20 ticks at PPQN 480): the common grid of
#: 32nd notes (1/8 beat) and 16th-note triplets (1/6 beat), coarse enough that unquantised
#: MIDI performances still fall into a few classes.
CLASS_QUANTUM = 1.0 / 24.0


@dataclass(frozen=True, slots=True)
class MidiRnnConfig(ConfigRecord):
    """Architecture and training hyper-parameters; stored in the checkpoint and the manifest."""

    hidden: int = 128
    window: int = 64
    batch_size: int = 64
    learning_rate: float = 0.005
    #: Halve the learning rate after this many epochs without a better validation loss.
    lr_patience: int = 2
    lr_factor: float = 0.5
    lr_min: float = 1e-4
    grad_clip: float = 1.0
    pitch_weight: float = 1.0
    step_weight: float = 1.0
    duration_weight: float = 1.0
    pressure: float = 10.0
    beats_max: float = BEATS_MAX
    #: ``regression`` (the seed's) or ``classes`` (see the module docstring).
    time_head: str = "regression"
    #: ``classes``: keep the most frequent values until they cover this share of training targets...
    class_coverage: float = 0.995
    #: ... or until there are this many classes per head.
    max_time_classes: int = 64
    #: 0: the seed's input, the pitch as one number ``pitch / 128``. N > 0: the graph rounds that
    #: number back to a MIDI pitch and looks up a learned vector of N values (see :class:`MidiRnn`);
    #: the step graph's input is the same ``[pitch / 128, step, duration]`` either way.
    pitch_embedding: int = 0

    @classmethod
    def for_time_head(cls, time_head: str, **changes: Any) -> MidiRnnConfig:
        """The defaults for ``time_head``: with ``classes`` the step and duration losses weigh
        :data:`CLASS_TIME_WEIGHT`; ``changes`` override any field."""
        weights = {"step_weight": CLASS_TIME_WEIGHT, "duration_weight": CLASS_TIME_WEIGHT}
        return cls(**{"time_head": time_head, **(weights if time_head == "classes" else {}), **changes})


@dataclass(frozen=True, slots=True)
class TimeClasses:
    """The categorical time head's vocabularies: step and duration values in beats, ascending."""

    step: tuple[float, ...]
    duration: tuple[float, ...]

    def to_dict(self) -> dict[str, list[float]]:
        return {"step": list(self.step), "duration": list(self.duration)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Sequence[float]]) -> TimeClasses:
        return cls(tuple(float(v) for v in values["step"]), tuple(float(v) for v in values["duration"]))


def class_vocabulary(values: np.ndarray, coverage: float, max_classes: int) -> tuple[tuple[float, ...], float]:
    """The most frequent values of ``values`` (beats), snapped to :data:`CLASS_QUANTUM`, covering ``coverage``.

    Values are taken in order of frequency (ties: the shorter first) until their
    share of ``values`` reaches ``coverage`` or there are ``max_classes`` of them.
    Returns the classes in ascending order and the share of ``values`` they hold
    exactly; the rest are mapped to the nearest class (:func:`nearest_class`).
    """
    if values.size == 0:
        raise ValueError("no training targets to derive duration classes from")
    quanta = np.maximum(np.rint(np.asarray(values, dtype=np.float64) / CLASS_QUANTUM), 1).astype(np.int64)
    unique, counts = np.unique(quanta, return_counts=True)
    order = np.lexsort((unique, -counts))  # most frequent first, then the shorter value
    cumulative = np.cumsum(counts[order]) / quanta.size
    keep = min(int(np.searchsorted(cumulative, coverage - 1e-12) + 1), max_classes, len(order))
    chosen = np.sort(unique[order[:keep]])
    return tuple(float(q * CLASS_QUANTUM) for q in chosen), float(cumulative[keep - 1])


def time_classes(tunes: Sequence[Tune], config: MidiRnnConfig) -> tuple[TimeClasses, dict[str, float]]:
    """Step and duration vocabularies from the training targets (every note but each tune's first).

    Returns the vocabularies and the share of training targets each holds exactly.
    """
    features = [tune_features(t, config.beats_max)[1:] for t in tunes if len(t) > 1]
    targets = np.concatenate(features) if features else np.zeros((0, 3), dtype=np.float32)
    step, step_share = class_vocabulary(targets[:, 1], config.class_coverage, config.max_time_classes)
    duration, duration_share = class_vocabulary(targets[:, 2], config.class_coverage, config.max_time_classes)
    return TimeClasses(step, duration), {"step_class_coverage": step_share, "duration_class_coverage": duration_share}


def nearest_class(values: torch.Tensor, classes: Sequence[float] | np.ndarray) -> torch.Tensor:
    """The index of the class nearest each of ``values`` (beats); a value halfway goes to the shorter class."""
    c = np.asarray(classes, dtype=np.float64)
    midpoints = torch.from_numpy(((c[:-1] + c[1:]) / 2).astype(np.float32))
    return torch.bucketize(values.to(torch.float32).contiguous(), midpoints)


class MidiRnn(nn.Module):
    """LSTM(hidden) over ``[pitch/128, step, duration]``; heads: pitch logits, step, duration.

    With ``time_classes`` the step and duration heads give logits over those classes
    ([..., K_step] and [..., K_dur]) instead of one value in beats each. With
    ``pitch_embedding`` N > 0 the pitch input ``pitch / 128`` is rounded back to a MIDI
    pitch inside the graph and replaced by a learned vector of N values, so the LSTM
    tells neighbouring pitches apart by what they do, not by a difference of 1/128.
    """

    def __init__(self, hidden: int = 128, time_classes: TimeClasses | None = None, pitch_embedding: int = 0) -> None:
        super().__init__()
        self.hidden = hidden
        self.time_classes = time_classes
        self.embed = nn.Embedding(VOCAB, pitch_embedding) if pitch_embedding > 0 else None
        width = 3 if self.embed is None else pitch_embedding + 2
        self.lstm = nn.LSTM(input_size=width, hidden_size=hidden, batch_first=True)
        self.pitch = nn.Linear(hidden, VOCAB)
        self.step = nn.Linear(hidden, 1 if time_classes is None else len(time_classes.step))
        self.duration = nn.Linear(hidden, 1 if time_classes is None else len(time_classes.duration))

    @property
    def time_head(self) -> str:
        return "regression" if self.time_classes is None else "classes"

    @property
    def output_names(self) -> tuple[str, str, str, str, str]:
        """The step graph's outputs, in the order :class:`MidiRnnStep` returns them."""
        if self.time_classes is None:
            return ("pitch_logits", "step", "duration", "h_out", "c_out")
        return ("pitch_logits", "step_logits", "duration_logits", "h_out", "c_out")

    def forward(
        self, notes: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Run a whole sequence ``notes`` [batch, time, 3] from ``state`` (zeros when None).

        Returns pitch logits [batch, time, 128], step and duration [batch, time, 1]
        (with time classes: their logits [batch, time, K]), each the prediction for
        the note *after* that position, and the final (h, c).
        """
        out, (h, c) = self.lstm(self.lstm_input(notes), state)
        return self.pitch(out), self.step(out), self.duration(out), (h, c)

    def lstm_input(self, notes: torch.Tensor) -> torch.Tensor:
        """What the LSTM reads for ``notes`` [..., 3]: the notes themselves, or with a pitch
        embedding the pitch's learned vector followed by step and duration."""
        if self.embed is None:
            return notes
        index = torch.clamp(torch.round(notes[..., 0] * PITCH_SCALE), 0, VOCAB - 1).to(torch.int64)
        return torch.cat([self.embed(index), notes[..., 1:]], dim=-1)


class MidiRnnStep(nn.Module):
    """One note in, one prediction out, with the LSTM state passed explicitly: the ONNX step graph."""

    def __init__(self, model: MidiRnn) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, note: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        out, (h_out, c_out) = self.model.lstm(self.model.lstm_input(note.unsqueeze(1)), (h, c))
        last = out[:, 0, :]
        return self.model.pitch(last), self.model.step(last), self.model.duration(last), h_out, c_out


def model_from_checkpoint(checkpoint: dict[str, Any], path: Path) -> MidiRnn:
    """The trained model of ``checkpoint`` (read from ``path``), in eval mode; clear errors for a mismatch."""
    config = MidiRnnConfig.from_dict(checkpoint["config"])
    vocabulary = None
    if config.time_head == "classes":
        table = checkpoint.get("time_classes")
        if not isinstance(table, dict) or not table.get("step") or not table.get("duration"):
            raise ExportError(f"{path}: time_head is 'classes' but the checkpoint holds no 'time_classes' vocabulary")
        vocabulary = TimeClasses.from_dict(table)
    elif config.time_head != "regression":
        raise ExportError(f"{path}: config time_head {config.time_head!r}: expected one of {', '.join(TIME_HEADS)}")
    model = MidiRnn(config.hidden, vocabulary, config.pitch_embedding)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError) as err:
        raise ExportError(
            f"{path}: the weights do not fit a midirnn of {config.hidden} units with a {config.time_head} "
            f"time head ({err})"
        ) from err
    return model.eval()
