"""The ``token-lstm`` family (seed 001) as a ``step`` generator: note, chord and time-shift tokens.

Context: control (the planner's thread); the manifest checks in the constructor run at setup.
The tokenisation helpers (:func:`token_name`, :func:`parse_token`, :func:`group_chords`,
:func:`tune_tokens`, :class:`Vocabulary`) are pure and also used by the exporter and the
evaluation, so that training, the host and the likelihood cut notes into tokens by one rule.

**Tokens.** As in seed 001 (music21 notes and chords as strings), a token is the set
of pitches that start together: a single note is its pitch name with octave (``"C4"``
is MIDI 60, sharps only: the pitches come from MIDI numbers, which carry no spelling)
and a chord its pitches from low to high joined by dots (``"C3.G3.E4.C5"``). Unlike
the seed's ``normalOrder`` chords (pitch classes only) a chord keeps its octaves, so
the host can play it as voiced. The vocabulary is the package manifest's
``representation.tokens``, most frequent training token first.

**Time shifts.** A vocabulary may also hold *time-shift* tokens, ``+`` and a number of
beats (``"+1/2"``, ``"+1"``, ``"+3/2"``, ``"+1/3"``): the time from one chord's onset to
the next. A tune is then read as chord, shift, chord, shift, ... (:func:`tune_tokens`); a
gap longer than the longest shift is spelled with several (the longest first, at most
:data:`MAX_SHIFTS`), any other gap by the nearest shift. Without shift tokens (the
seed's way) every token starts ``representation.step_beats`` after the previous one and
sounds ``representation.duration_beats``.

**Chords.** Successive notes whose onsets are less than :data:`CHORD_TICKS` apart (a
64th note; each measured from the previous note) fold into one token: notes with
``step`` 0, as the planners feed a chord, and a performer's chord played a few
milliseconds apart alike. Training cuts its corpus by the same rule
(:func:`group_chords`).

**Nearest token.** A pitch set that is not in the vocabulary (a performer's chord, a
note out of the training range) is played to the model as the *nearest* chord token:
the one with the smallest symmetric chamfer distance in semitones,
``d(A, B) = sum over a in A of min over b in B |a - b| + sum over b in B of min over a in A |a - b|``.
It is 0 only for the same set; it counts each voice's move to the nearest voice of the
other chord, so C4-E4-G4 is 4 from C4-E4-A4 (G->A and back) but 51 from C3-E3-G3 (each
voice to the nearest voice an octave down and back), and a lone note is nearer to the same note alone than to
any chord containing it. Ties go to the token earlier in the vocabulary (the more
frequent in training). The exporter maps the training tokens outside the vocabulary
the same way, so the model hears at play what it was trained on.

**Playing.** A chord token comes out as one event per pitch, the first with the
token's step and the others with step 0; :meth:`TokenLstmGenerator.sample` draws a
token once and returns its notes one per call as the planner feeds them back (the
notes not yet fed are part of the snapshot). With time shifts, a draw is the shifts
before the chord (their sum is the step), the chord, and the shifts after it (their
sum is its duration: a chord sounds until the next starts); the shifts after it are
kept and are the next draw's step when the chord is fed back whole. A performed note
is heard as the shifts nearest its step, then its chord.

**Sampling.** Temperature and top-p act on the token distribution (shifts too); the
pitch range and scale mask out every chord token with a pitch outside them. When that
leaves no chord token, tokens with at least one allowed pitch are drawn and only their
allowed pitches played; when none has one, the most likely chord token is played unmasked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from livegen.errors import PackageError
from livegen.models.contract import ANY, Contract, Number, Tensor
from livegen.models.manifest import MANIFEST
from livegen.models.package import ModelPackage, zero_feeds
from livegen.models.sampling import PITCH_NAMES, SamplingParams, sample_logits
from livegen.models.step import StepEvent
from livegen.music.time import PPQN

if TYPE_CHECKING:
    from livegen.music.corpus import Tune

FAMILY = "token-lstm"
#: Notes whose onsets are closer than this (ticks, from the previous note's onset) form one chord token.
CHORD_TICKS = PPQN // 16
#: The graph's tensors (see ``docs/model-package.md``).
TOKEN_INPUT, CONTEXT, LOGITS = "token", "context", "logits"
_PART = re.compile(r"^([A-G]#?)(-?\d+)$")
_SHIFT = re.compile(r"^\+(\d+)(?:/(\d+))?$")
#: Time-shift tokens one gap is spelled with at most; a longer gap is heard as this many of the longest.
MAX_SHIFTS = 4


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


def shift_name(ticks: int) -> str:
    """``240`` -> ``"+1/2"``: a time shift of ``ticks`` named in beats, a whole number or a reduced fraction."""
    if ticks <= 0:
        raise ValueError(f"a time shift is longer than 0 ticks, got {ticks}")
    beats = Fraction(int(ticks), PPQN)
    return f"+{beats.numerator}" if beats.denominator == 1 else f"+{beats.numerator}/{beats.denominator}"


def parse_shift(name: str) -> int | None:
    """``"+1/2"`` -> 240 ticks; None for a name that is not a time shift; ValueError for a malformed one."""
    match = _SHIFT.match(name)
    if match is None:
        return None
    numerator, denominator = int(match.group(1)), int(match.group(2) or 1)
    ticks = Fraction(numerator, denominator) * PPQN if numerator and denominator else Fraction(0)
    if ticks <= 0 or ticks.denominator != 1 or shift_name(int(ticks)) != name:
        raise ValueError(
            f"token {name!r}: a time shift is + and a number of beats above 0 in lowest terms that is a whole "
            f"number of ticks ({PPQN} per beat), such as +1, +1/2 or +3/2"
        )
    return int(ticks)


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
    """The token list of a package: names, pitch sets and time shifts, exact and nearest lookup."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        shifts = {i: t for i, name in enumerate(self.names) if (t := parse_shift(name)) is not None}
        #: Each token's pitches; () for a time shift.
        self.pitches = tuple(() if i in shifts else parse_token(n) for i, n in enumerate(self.names))
        #: Each token's time shift in ticks; 0 for a note or chord.
        self.shift_ticks = np.array([shifts.get(i, 0) for i in range(len(self.names))], dtype=np.int64)
        self.is_shift = self.shift_ticks > 0
        self.is_chord = ~self.is_shift
        if not self.is_chord.any():
            raise ValueError("the vocabulary holds no note or chord token")
        self._index = {p: i for i, p in enumerate(self.pitches) if p}
        if len(self._index) != int(self.is_chord.sum()) or len(set(shifts.values())) != len(shifts):
            raise ValueError("the vocabulary lists a token twice")
        #: Shift tokens from the shortest, and their ticks.
        self._shifts = sorted((t, i) for i, t in shifts.items())
        width = max(len(p) for p in self.pitches)
        # Padded [V, width] pitches; padding repeats a token's lowest pitch, which leaves every min unchanged.
        # A time shift's row holds a chord token's pitches and is never valid: it is never a nearest chord.
        filler = next(p for p in self.pitches if p)
        self.padded = np.array(
            [(p or filler) + ((p or filler)[0],) * (width - len(p or filler)) for p in self.pitches], dtype=np.int64
        )
        self.valid = np.array([[i < len(p) for i in range(width)] for p in self.pitches], dtype=bool)
        self._nearest: dict[tuple[int, ...], int] = {}
        self._gaps: dict[int, tuple[int, ...]] = {}

    def __len__(self) -> int:
        return len(self.names)

    @property
    def timed(self) -> bool:
        """Whether the vocabulary holds time-shift tokens (see the module docstring)."""
        return bool(self._shifts)

    def index(self, pitches: Iterable[int]) -> int | None:
        """The token of exactly these pitches, or None."""
        return self._index.get(tuple(sorted(set(int(p) for p in pitches))))

    def distances(self, pitches: Sequence[int]) -> np.ndarray:
        """Chamfer distance from ``pitches`` to every chord token, [V]; a time shift's is the largest int64."""
        query = np.asarray(sorted(set(int(p) for p in pitches)), dtype=np.int64)
        d = np.abs(self.padded[:, :, None] - query[None, None, :])  # [V, width, n]
        token_to_query = np.where(self.valid, d.min(axis=2), 0).sum(axis=1)
        query_to_token = d.min(axis=1).sum(axis=1)  # padding repeats a real pitch: no effect on a min
        return cast(np.ndarray, np.where(self.is_shift, np.iinfo(np.int64).max, token_to_query + query_to_token))

    def nearest(self, pitches: Iterable[int]) -> int:
        """The chord token of these pitches, else the nearest (ties: the earlier token); cached."""
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

    def gap(self, ticks: int) -> tuple[int, ...]:
        """The time-shift tokens that spell a gap of ``ticks`` between onsets (see the module docstring); cached.

        Whole longest shifts while more than the longest remains (at most :data:`MAX_SHIFTS`),
        then the nearest shift to the rest (ties: the shorter), unless whole shifts were taken
        and the rest is nearer 0 than any shift. () without time shifts.
        """
        if not self._shifts:
            return ()
        cached = self._gaps.get(ticks)
        if cached is not None:
            return cached
        longest, longest_token = self._shifts[-1]
        tokens: list[int] = []
        rest = max(int(ticks), 1)
        while rest > longest and len(tokens) < MAX_SHIFTS:
            tokens.append(longest_token)
            rest -= longest
        if len(tokens) < MAX_SHIFTS:
            length, token = min(self._shifts, key=lambda shift: (abs(shift[0] - rest), shift[0]))
            if not tokens or abs(length - rest) < rest:
                tokens.append(token)
        gap = tuple(tokens)
        if len(self._gaps) < 65536:
            self._gaps[ticks] = gap
        return gap


def tune_tokens(tune: Tune, vocabulary: Vocabulary) -> np.ndarray:
    """``tune`` as token indices as training reads it (int64 [n]): every pitch set mapped to its nearest
    token and, with time shifts, the gap before each chord spelled by :meth:`Vocabulary.gap`."""
    tokens: list[int] = []
    previous: int | None = None
    for onset, pitches in tune_chords(tune):
        if previous is not None:
            tokens.extend(vocabulary.gap(onset - previous))
        tokens.append(vocabulary.nearest(pitches))
        previous = onset
    return np.asarray(tokens, dtype=np.int64)


_State = dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class _Gap:
    """Time-shift tokens drawn or fed, and the graph's state and logits after them."""

    tokens: tuple[int, ...]
    ticks: int
    state: _State
    logits: np.ndarray


@dataclass(frozen=True, slots=True)
class _Plan:
    """A drawn token: its notes still to be fed back, and with time shifts the gaps around it."""

    events: tuple[StepEvent, ...]
    token: int
    started: bool = False
    before: _Gap | None = None  # the shifts before the chord and the state after them
    after: tuple[_State, np.ndarray] | None = None  # the state and logits after the chord
    next: _Gap | None = None  # the shifts drawn after the chord (its duration)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    state: _State
    pending: tuple[int, ...]
    opened: tuple[_State, np.ndarray] | None
    plan: _Plan | None
    held: _Gap | None
    fed: int


class TokenLstmGenerator:
    """Conv1D + 2 x LSTM next-token model over note, chord and time-shift tokens (see the module docstring).

    Its vocabulary (``representation.tokens``, one name per logit) is checked here.
    """

    one_line = True  # the performer's notes join its line
    velocities = False  # its tokens hold pitches and time
    programs = None  # one part, on the jam's model channel

    contract = Contract(
        fields=(
            Number("step_beats", 0.0, 64.0, default=0.5, low_open=True, meaning=" (beats)"),
            Number("duration_beats", 0.0, 64.0, low_open=True, optional=True, meaning=" (beats; default step_beats)"),
        ),
        tensors=(Tensor("step", TOKEN_INPUT, (ANY,)), Tensor("step", LOGITS, (ANY, ANY))),
    )

    def __init__(self, package: ModelPackage) -> None:
        self.package = package
        manifest = package.manifest
        rep = manifest.representation
        values = self.contract.values(package)
        graph = manifest.graphs["step"]
        size = next(t.shape[-1] for t in graph.outputs if t.name == LOGITS)
        if not isinstance(size, int):
            raise PackageError(
                f"{package.folder / MANIFEST}: [graphs.step] tensor {LOGITS!r}: expected a fixed vocabulary size "
                f"as its last dimension, the manifest says {size!r}"
            )
        names = rep.get("tokens")
        expected = (
            f"a list of {size} token names such as 'C4', 'C3.G3.E4' or the time shift '+1/2' "
            f"(the size of graph output {LOGITS!r})"
        )
        if not isinstance(names, list) or len(names) != size or not all(isinstance(n, str) for n in names):
            raise self._field_error("tokens", expected, names if not isinstance(names, list) else f"{len(names)} items")
        try:
            self.vocabulary = Vocabulary(names)
        except ValueError as err:
            raise self._field_error("tokens", f"{expected}; {err}", None) from err
        self.timed = self.vocabulary.timed
        self.step_ticks = max(1, round(values["step_beats"] * PPQN))
        duration_beats = values["duration_beats"]
        self.duration_ticks = self.step_ticks if duration_beats is None else max(1, round(duration_beats * PPQN))
        self._session = package.sessions["step"]
        self._outputs = [t.name for t in graph.outputs]
        self._pairs = graph.state
        self._initial = {name: arr for name, arr in zero_feeds(graph).items() if name != TOKEN_INPUT}
        self._state: _State = dict(self._initial)
        self._pending: tuple[int, ...] = ()
        self._opened: tuple[_State, np.ndarray] | None = None
        self._plan: _Plan | None = None
        self._held: _Gap | None = None
        self._fed = 0
        self._mask_key: SamplingParams | None = None
        self._masks: tuple[np.ndarray, np.ndarray, np.ndarray] = (np.ones(0, bool),) * 3

    def _field_error(self, key: str, expected: str, got: object) -> PackageError:
        path = self.package.folder / MANIFEST
        got_text = "" if got is None else f", got {got!r}"
        return PackageError(f"{path}: field 'representation.{key}': expected {expected}{got_text}")

    # ---- state ----------------------------------------------------------------------

    @property
    def fed(self) -> int:
        return self._fed

    def reset(self) -> None:
        self._state = dict(self._initial)
        self._pending = ()
        self._opened = None
        self._plan = None
        self._held = None
        self._fed = 0

    def _run(self, state: _State, token: int) -> tuple[_State, np.ndarray]:
        feeds: dict[str, Any] = {**state, TOKEN_INPUT: np.array([token], dtype=np.int64)}
        values = dict(zip(self._outputs, self._session.run(self._outputs, feeds), strict=True))
        return {src: values[dst] for src, dst in self._pairs}, values[LOGITS][0]

    def _open(self) -> tuple[_State, np.ndarray]:
        """The state and logits after the chord being fed (computed once, kept until it grows)."""
        if self._opened is None:
            self._opened = self._run(self._state, self.vocabulary.nearest(self._pending))
        return self._opened

    def _shifted(self, state: _State, tokens: Sequence[int]) -> _State:
        for token in tokens:
            state = self._run(state, token)[0]
        return state

    def feed(self, event: StepEvent) -> None:
        """Fold ``event`` into the chord being fed, or close that chord and open one.

        A note with ``step`` under :data:`CHORD_TICKS` joins the chord, except the first
        note of a token :meth:`sample` drew, which always opens one (after a planner's
        restart it is fed with step 0). The drawn token's other notes are returned by
        :meth:`sample` as long as they are fed back in order; any other note ends that.
        With time shifts, a note that opens a chord is preceded by the shifts of its step:
        those :meth:`sample` drew when it is the drawn token's first note at the drawn step
        (or step 0), else :meth:`Vocabulary.gap` of its step.
        """
        plan = self._plan
        following = plan is not None and event.pitch == plan.events[0].pitch
        opens_plan = following and plan is not None and not plan.started
        if self._pending and event.step < CHORD_TICKS and not opens_plan:
            self._pending = (*self._pending, event.pitch)
        else:
            if self._pending:
                drawn = plan.before if opens_plan and plan is not None else None
                if not self.timed:
                    self._state = self._open()[0]
                elif drawn is not None and event.step in (0, drawn.ticks):
                    self._state = drawn.state  # the shifts drawn (a planner's restart feeds step 0)
                else:
                    self._state = self._shifted(self._open()[0], self.vocabulary.gap(event.step))
                    if plan is not None:  # heard at another step: what was drawn after the chord no longer holds
                        plan = _Plan(plan.events, plan.token, plan.started)
            self._pending = (event.pitch,)
        self._opened = None
        self._held = None
        if following and plan is not None:
            rest = plan.events[1:]
            self._plan = _Plan(rest, plan.token, True, plan.before, plan.after, plan.next) if rest else None
            if not rest and plan.after is not None and self.vocabulary.nearest(self._pending) == plan.token:
                self._opened, self._held = plan.after, plan.next
        else:
            self._plan = None
        self._fed += 1

    # ---- sampling -------------------------------------------------------------------

    def _token_masks(self, params: SamplingParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(chord tokens whose pitches are all allowed, chord tokens with any allowed pitch, allowed pitches)."""
        if params != self._mask_key:
            pitch_ok = params.pitch_mask()
            ok = pitch_ok[self.vocabulary.padded]  # padding repeats a real pitch
            chord = self.vocabulary.is_chord
            every = np.asarray(ok.all(axis=1) & chord, dtype=bool)
            some = np.asarray((ok & self.vocabulary.valid).any(axis=1) & chord, dtype=bool)
            self._masks = (every, some, pitch_ok)
            self._mask_key = params
        return self._masks

    def _draw_gap(
        self, opened: tuple[_State, np.ndarray], chords: np.ndarray, params: SamplingParams, rng: np.random.Generator
    ) -> _Gap:
        """Time shifts drawn after a chord until the model would play a chord next (at most :data:`MAX_SHIFTS`)."""
        state, logits = opened
        shifts, tokens = self.vocabulary.is_shift, list[int]()
        chords = chords if chords.any() else self.vocabulary.is_chord
        while len(tokens) < MAX_SHIFTS:
            token = sample_logits(logits, params, rng, shifts | chords if tokens else shifts)
            if not shifts[token]:
                break
            tokens.append(token)
            state, logits = self._run(state, token)
        ticks = int(self.vocabulary.shift_ticks[tokens].sum()) if tokens else self.step_ticks
        return _Gap(tuple(tokens), ticks, state, logits)

    def _draw_chord(
        self, logits: np.ndarray, chords: np.ndarray, params: SamplingParams, rng: np.random.Generator
    ) -> int:
        """A chord token drawn within ``chords``; the most likely chord token when ``chords`` is empty."""
        if chords.any():
            return sample_logits(logits, params, rng, chords)
        return int(np.argmax(np.where(self.vocabulary.is_chord, logits, -np.inf)))

    def sample(self, params: SamplingParams, rng: np.random.Generator) -> StepEvent:
        if self._fed == 0:
            raise RuntimeError("sample() needs at least one fed event")
        if self._plan is not None and self._plan.started:
            return self._plan.events[0]
        every, some, pitch_ok = self._token_masks(params)
        chords = every if every.any() else some
        before: _Gap | None = None
        after: tuple[_State, np.ndarray] | None = None
        following: _Gap | None = None
        if self.timed:
            before = self._held if self._held is not None else self._draw_gap(self._open(), chords, params, rng)
            token = self._draw_chord(before.logits, chords, params, rng)
            after = self._run(before.state, token)
            following = self._draw_gap(after, chords, params, rng)
            step, duration = before.ticks, following.ticks
        else:
            token = self._draw_chord(self._open()[1], chords, params, rng)
            step, duration = self.step_ticks, self.duration_ticks
        pitches = self.vocabulary.pitches[token]
        if not every.any():
            pitches = tuple(p for p in pitches if pitch_ok[p]) or pitches
        events = tuple(StepEvent(pitch=p, step=step if i == 0 else 0, duration=duration) for i, p in enumerate(pitches))
        self._plan = _Plan(events, token, False, before, after, following)
        return events[0]

    def snapshot(self) -> object:
        return _Snapshot(dict(self._state), self._pending, self._opened, self._plan, self._held, self._fed)

    def restore(self, snapshot: object) -> None:
        snap = cast(_Snapshot, snapshot)
        self._state = dict(snap.state)
        self._pending = snap.pending
        self._opened = snap.opened
        self._plan = snap.plan
        self._held = snap.held
        self._fed = snap.fed
