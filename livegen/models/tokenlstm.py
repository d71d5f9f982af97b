"""The ``token-lstm`` family (seed 001) as a ``step`` generator: note and chord tokens.

Context: control (the planner's thread); the manifest checks in the constructor run at setup.
The tokenisation helpers (:func:`token_name`, :func:`parse_token`, :func:`group_chords`,
:class:`Vocabulary`, :func:`tune_tokens`) are pure and also used by the exporter and the
held-out likelihood, so that training, evaluation and the host cut notes into tokens by one rule.

**Tokens.** As in seed 001 (music21 notes and chords as strings), a token is the set
of pitches that start together: a single note is its pitch name with octave (``"C4"``
is MIDI 60, sharps only: the pitches come from MIDI numbers, which carry no spelling)
and a chord its pitches from low to high joined by dots (``"C3.G3.E4.C5"``). Unlike
the seed's ``normalOrder`` chords (pitch classes only) a chord keeps its octaves, so
the host can play it as voiced. The vocabulary is the package manifest's
``representation.tokens``, most frequent training token first.

**Chords.** Successive notes whose onsets are less than :data:`CHORD_TICKS` apart (a
64th note; each measured from the previous note) fold into one token: notes with
``step`` 0, as the planners feed a chord, and a performer's chord played a few
milliseconds apart alike. Training cuts its corpus by the same rule
(:func:`group_chords`).

**Nearest token.** A pitch set that is not in the vocabulary (a performer's chord, a
note out of the training range) is played to the model as the *nearest* token: the
one with the smallest symmetric chamfer distance in semitones,
``d(A, B) = sum over a in A of min over b in B |a - b| + sum over b in B of min over a in A |a - b|``.
It is 0 only for the same set; it counts each voice's move to the nearest voice of the
other chord, so C4-E4-G4 is 4 from C4-E4-A4 (G->A and back) but 51 from C3-E3-G3 (each
voice to the nearest voice an octave down and back), and a lone note is nearer to the same note alone than to
any chord containing it. Ties go to the token earlier in the vocabulary (the more
frequent in training). The exporter maps the training tokens outside the vocabulary
the same way, so the model hears at play what it was trained on.

**Timing.** Tokens carry no durations (as in the seed, which placed them a fixed
offset apart): every token starts ``representation.step_beats`` after the previous one
and sounds ``representation.duration_beats``; a chord token comes out as one event
per pitch, the first with that step and the others with step 0. :meth:`sample`
draws a token once and returns its notes one per call as the planner feeds them
back; the notes not yet fed are part of the snapshot.

**Sampling.** Temperature and top-p act on the token distribution; the pitch range
and scale mask out every token with a pitch outside them. When that leaves no token,
tokens with at least one allowed pitch are drawn and only their allowed pitches
played; when none has one, the most likely token is played unmasked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from livegen.errors import PackageError
from livegen.models.manifest import MANIFEST
from livegen.models.package import ModelPackage, zero_feeds
from livegen.models.sampling import PITCH_NAMES, SamplingParams, sample_logits
from livegen.models.step import StepEvent
from livegen.music.time import PPQN

if TYPE_CHECKING:
    from livegen.io.corpus import Tune

FAMILY = "token-lstm"
#: Notes whose onsets are closer than this (ticks, from the previous note's onset) form one chord token.
CHORD_TICKS = PPQN // 16
#: The graph's tensors (see ``docs/model-package.md``).
TOKEN_INPUT, CONTEXT, LOGITS = "token", "context", "logits"
_PART = re.compile(r"^([A-G]#?)(-?\d+)$")


def token_name(pitches: Iterable[int]) -> str:
    """``(48, 55, 64)`` -> ``"C3.G3.E4"``: the pitches, low to high, as names with octaves (C4 = 60)."""
    ordered = sorted(set(int(p) for p in pitches))
    if not ordered:
        raise ValueError("a token holds at least one pitch")
    return ".".join(f"{PITCH_NAMES[p % 12]}{p // 12 - 1}" for p in ordered)


def parse_token(name: str) -> tuple[int, ...]:
    """``"C3.G3.E4"`` -> ``(48, 55, 64)``; raises ValueError for anything :func:`token_name` does not write."""
    pitches = []
    for part in name.split("."):
        match = _PART.match(part)
        if match is None:
            raise ValueError(f"token {name!r}: {part!r} is not a pitch name with octave such as C4 or F#3")
        pitch = PITCH_NAMES.index(match.group(1)) + 12 * (int(match.group(2)) + 1)
        if not 0 <= pitch <= 127:
            raise ValueError(f"token {name!r}: {part!r} is outside MIDI 0-127")
        pitches.append(pitch)
    if pitches != sorted(set(pitches)):
        raise ValueError(f"token {name!r}: pitches must be distinct and from low to high")
    return tuple(pitches)


def group_chords(onsets: Sequence[int], pitches: Sequence[int]) -> list[tuple[int, tuple[int, ...]]]:
    """Notes in onset order -> ``(onset of the chord, its sorted distinct pitches)`` per token.

    A note joins the current chord when its onset is less than :data:`CHORD_TICKS`
    after the previous note's (the rule the host applies to ``step``).
    """
    groups: list[tuple[int, tuple[int, ...]]] = []
    current: list[int] = []
    start = previous = 0
    for onset, pitch in zip(onsets, pitches, strict=True):
        if current and onset - previous < CHORD_TICKS:
            current.append(int(pitch))
        else:
            if current:
                groups.append((start, tuple(sorted(set(current)))))
            current, start = [int(pitch)], int(onset)
        previous = int(onset)
    if current:
        groups.append((start, tuple(sorted(set(current)))))
    return groups


def tune_chords(tune: Tune) -> list[tuple[int, tuple[int, ...]]]:
    """(onset in ticks, pitches) of each token of ``tune``, by the host's chord rule (:func:`group_chords`)."""
    order = np.lexsort((tune.pitch, tune.onset))
    onsets = [round(float(tune.onset[i]) * PPQN) for i in order]
    return group_chords(onsets, [int(tune.pitch[i]) for i in order])


def chamfer(a: Sequence[int], b: Sequence[int]) -> int:
    """The symmetric chamfer distance of two pitch sets in semitones (see the module docstring)."""
    x, y = np.asarray(a)[:, None], np.asarray(b)[None, :]
    d = np.abs(x - y)
    return int(d.min(axis=1).sum() + d.min(axis=0).sum())


class Vocabulary:
    """The token list of a package: names, pitch sets, exact and nearest lookup."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self.pitches = tuple(parse_token(n) for n in self.names)
        if not self.pitches:
            raise ValueError("the vocabulary is empty")
        self._index = {p: i for i, p in enumerate(self.pitches)}
        if len(self._index) != len(self.pitches):
            raise ValueError("the vocabulary lists a token twice")
        width = max(len(p) for p in self.pitches)
        # Padded [V, width] pitches; padding repeats a token's lowest pitch, which leaves every min unchanged.
        self.padded = np.array([p + (p[0],) * (width - len(p)) for p in self.pitches], dtype=np.int64)
        self.valid = np.array([[i < len(p) for i in range(width)] for p in self.pitches], dtype=bool)
        self._nearest: dict[tuple[int, ...], int] = {}

    def __len__(self) -> int:
        return len(self.names)

    def index(self, pitches: Iterable[int]) -> int | None:
        """The token of exactly these pitches, or None."""
        return self._index.get(tuple(sorted(set(int(p) for p in pitches))))

    def distances(self, pitches: Sequence[int]) -> np.ndarray:
        """Chamfer distance from ``pitches`` to every token, [V]."""
        query = np.asarray(sorted(set(int(p) for p in pitches)), dtype=np.int64)
        d = np.abs(self.padded[:, :, None] - query[None, None, :])  # [V, width, n]
        token_to_query = np.where(self.valid, d.min(axis=2), 0).sum(axis=1)
        query_to_token = d.min(axis=1).sum(axis=1)  # padding repeats a real pitch: no effect on a min
        return cast(np.ndarray, token_to_query + query_to_token)

    def nearest(self, pitches: Iterable[int]) -> int:
        """The token of these pitches, else the nearest (ties: the earlier token); cached."""
        key = tuple(sorted(set(int(p) for p in pitches)))
        if not key:
            raise ValueError("a token holds at least one pitch")
        found = self._index.get(key)
        if found is not None:
            return found
        cached = self._nearest.get(key)
        if cached is None:
            cached = int(np.argmin(self.distances(key)))  # argmin keeps the first of equal values
            if len(self._nearest) < 65536:
                self._nearest[key] = cached
        return cached


def tune_tokens(tune: Tune, vocabulary: Vocabulary) -> np.ndarray:
    """``tune`` as token indices, every pitch set mapped to its nearest token (int64 [n]), as training reads it."""
    return np.asarray([vocabulary.nearest(p) for _, p in tune_chords(tune)], dtype=np.int64)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    state: dict[str, np.ndarray]
    pending: tuple[int, ...]
    opened: tuple[dict[str, np.ndarray], np.ndarray] | None
    plan: tuple[StepEvent, ...]
    plan_started: bool
    fed: int


class TokenLstmGenerator:
    """Conv1D + 2 x LSTM next-token model over note and chord tokens (see the module docstring)."""

    def __init__(self, package: ModelPackage) -> None:
        self.package = package
        manifest = package.manifest
        rep = manifest.representation
        graph = manifest.graphs.get("step")
        if graph is None:
            raise PackageError(f"{package.folder / MANIFEST}: field 'graphs': expected a [graphs.step] table")
        sizes = {t.name: t.shape for t in graph.outputs}
        logits_shape = sizes.get(LOGITS)
        if logits_shape is None or not isinstance(logits_shape[-1], int):
            raise PackageError(
                f"{package.folder / MANIFEST}: field 'graphs.step.outputs': expected a [batch, V] output {LOGITS!r}"
            )
        size = logits_shape[-1]
        names = rep.get("tokens")
        expected = f"a list of {size} token names such as 'C4' or 'C3.G3.E4' (the size of graph output {LOGITS!r})"
        if not isinstance(names, list) or len(names) != size or not all(isinstance(n, str) for n in names):
            raise self._field_error("tokens", expected, names if not isinstance(names, list) else f"{len(names)} items")
        try:
            self.vocabulary = Vocabulary(names)
        except ValueError as err:
            raise self._field_error("tokens", f"{expected}; {err}", None) from err
        self.step_ticks = self._ticks("step_beats", 0.5, minimum=1)
        self.duration_ticks = self._ticks("duration_beats", self.step_ticks / PPQN, minimum=1)
        self._session = package.sessions["step"]
        self._outputs = [t.name for t in graph.outputs]
        self._pairs = graph.state
        self._initial = {name: arr for name, arr in zero_feeds(graph).items() if name != TOKEN_INPUT}
        self._state: dict[str, np.ndarray] = dict(self._initial)
        self._pending: tuple[int, ...] = ()
        self._opened: tuple[dict[str, np.ndarray], np.ndarray] | None = None
        self._plan: tuple[StepEvent, ...] = ()
        self._plan_started = False
        self._fed = 0
        self._mask_key: SamplingParams | None = None
        self._masks: tuple[np.ndarray, np.ndarray, np.ndarray] = (np.ones(0, bool),) * 3

    def _field_error(self, key: str, expected: str, got: object) -> PackageError:
        path = self.package.folder / MANIFEST
        got_text = "" if got is None else f", got {got!r}"
        return PackageError(f"{path}: field 'representation.{key}': expected {expected}{got_text}")

    def _ticks(self, key: str, default: float, *, minimum: int) -> int:
        value = self.package.manifest.representation.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 64:
            raise self._field_error(key, "a number of beats above 0 and at most 64", value)
        return max(minimum, round(float(value) * PPQN))

    # ---- state ----------------------------------------------------------------------

    @property
    def fed(self) -> int:
        return self._fed

    def reset(self) -> None:
        self._state = dict(self._initial)
        self._pending = ()
        self._opened = None
        self._plan = ()
        self._plan_started = False
        self._fed = 0

    def _run(self, state: dict[str, np.ndarray], token: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        feeds: dict[str, Any] = {**state, TOKEN_INPUT: np.array([token], dtype=np.int64)}
        values = dict(zip(self._outputs, self._session.run(self._outputs, feeds), strict=True))
        return {src: values[dst] for src, dst in self._pairs}, values[LOGITS][0]

    def _open(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The state and logits after the chord being fed (computed once, kept until it grows)."""
        if self._opened is None:
            self._opened = self._run(self._state, self.vocabulary.nearest(self._pending))
        return self._opened

    def feed(self, event: StepEvent) -> None:
        """Fold ``event`` into the chord being fed, or close that chord and open one.

        A note with ``step`` under :data:`CHORD_TICKS` joins the chord, except the first
        note of a token :meth:`sample` drew, which always opens one (after a planner's
        restart it is fed with step 0). The drawn token's other notes are returned by
        :meth:`sample` as long as they are fed back in order; any other note ends that.
        """
        following = bool(self._plan) and event.pitch == self._plan[0].pitch
        opens_plan = following and not self._plan_started
        if self._pending and event.step < CHORD_TICKS and not opens_plan:
            self._pending = (*self._pending, event.pitch)
        else:
            if self._pending:
                self._state = self._open()[0]
            self._pending = (event.pitch,)
        self._opened = None
        if following:
            self._plan = self._plan[1:]
            self._plan_started = bool(self._plan)
        else:
            self._plan, self._plan_started = (), False
        self._fed += 1

    # ---- sampling -------------------------------------------------------------------

    def _token_masks(self, params: SamplingParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tokens whose pitches are all allowed, tokens with any allowed pitch, allowed pitches), per params."""
        if params != self._mask_key:
            pitch_ok = params.pitch_mask()
            ok = pitch_ok[self.vocabulary.padded]  # padding repeats a real pitch
            every = np.asarray(ok.all(axis=1), dtype=bool)
            some = np.asarray((ok & self.vocabulary.valid).any(axis=1), dtype=bool)
            self._masks = (every, some, pitch_ok)
            self._mask_key = params
        return self._masks

    def sample(self, params: SamplingParams, rng: np.random.Generator) -> StepEvent:
        if self._fed == 0:
            raise RuntimeError("sample() needs at least one fed event")
        if self._plan and self._plan_started:
            return self._plan[0]
        logits = self._open()[1]
        every, some, pitch_ok = self._token_masks(params)
        mask = every if every.any() else some
        token = sample_logits(logits, params, rng, mask)
        pitches = self.vocabulary.pitches[token]
        if not every.any():
            pitches = tuple(p for p in pitches if pitch_ok[p]) or pitches
        self._plan = tuple(
            StepEvent(pitch=p, step=self.step_ticks if i == 0 else 0, duration=self.duration_ticks)
            for i, p in enumerate(pitches)
        )
        self._plan_started = False
        return self._plan[0]

    def snapshot(self) -> object:
        return _Snapshot(dict(self._state), self._pending, self._opened, self._plan, self._plan_started, self._fed)

    def restore(self, snapshot: object) -> None:
        snap = cast(_Snapshot, snapshot)
        self._state = dict(snap.state)
        self._pending = snap.pending
        self._opened = snap.opened
        self._plan = snap.plan
        self._plan_started = snap.plan_started
        self._fed = snap.fed
