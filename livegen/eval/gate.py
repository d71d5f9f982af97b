"""The quality gate: does a model's music hold up, answer by answer, against the real music?

Context: setup (offline; the model runs through the same offline engine as ``livegen render``).

``docs/evaluation.md`` ("The quality gate") defines every figure and threshold; the
thresholds below are the ones written there, and are never loosened to let a model pass.

1. **Phrases**: windows of the tunes of the held-out split of the model's training corpus,
   each in its own metre (bars of a whole number of beats; a pickup bar is dropped), evenly
   spread; seed = 2 bars, truth = the next ``bars``; a long tune gives a window every
   ``SEED_BARS`` bars (the 33 held-out chorales are too few for 64 phrases otherwise).
2. **Answers**: call-and-response (:func:`~livegen.eval.runner.model_continuations`) and
   accompany (:func:`~livegen.engine.render.render_accompany`: the performer plays seed
   and truth, the model joins on bar 3), ``rng_seeds`` draws each, at the package's
   defaults.
3. **Figures** (:mod:`livegen.eval.failure`) per answer and for the truth, averaged over
   draws per phrase, then over phrases with a bootstrap 95% interval.
4. **Baselines**: random notes and the n-gram (:mod:`livegen.eval.ngram`, fitted on the
   training split) answer the same seeds; MGEval overlaps of the three main distributions
   against the truths; the n-gram's held-out NLL beside the model's where it has one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from livegen.engine.checks import check_rng_seed
from livegen.errors import ConfigError
from livegen.eval import failure, metrics
from livegen.eval.baselines import random_notes
from livegen.eval.likelihood import Likelihood, held_out_nll
from livegen.eval.mgeval import as_matrix, compare
from livegen.eval.ngram import NGram
from livegen.eval.runner import (
    SEED_BARS,
    TEMPO_BPM,
    VELOCITY,
    Sample,
    _load,
    _pool,
    cut,
    model_continuations,
    spread,
    tune_notes,
)
from livegen.eval.stream import NoteStream
from livegen.models.budget import offline_budget
from livegen.music.corpus import Tune, split_by_tune
from livegen.music.events import Note
from livegen.music.time import PPQN, TempoMap, beats_to_ticks

MODES = ("call-response", "accompany")
#: The three main MGEval distributions.
MAIN_FEATURES = {
    "pitch_class_histogram": metrics.pitch_class_histogram,
    "interval_histogram": metrics.interval_histogram,
    "ioi_histogram": metrics.ioi_histogram,
}
BOOTSTRAP = 1000
#: Metres the gate measures: bars of 2 to 8 whole beats (2/4, 3/4, 4/4, 6/8, 2/2, 3/2, 12/8).
BAR_BEATS = (2, 3, 4, 5, 6, 7, 8)


@dataclass(frozen=True, slots=True)
class GateOptions:
    model: str
    seeds: int = 64
    rng_seeds: int = 3
    bars: int = 8
    rng_seed: int = 0
    modes: tuple[str, ...] = MODES
    #: A fixed phrase set (:func:`write_phrases`) instead of the corpus: the failure checks only, no
    #: corpus needed (the baselines and the likelihood need the training split). CI's quick gate.
    phrases: Path | None = None

    def __post_init__(self) -> None:
        if not 2 <= self.seeds <= 1000:
            raise ConfigError(f"--seeds {self.seeds}: expected 2 to 1000")
        if not 1 <= self.rng_seeds <= 20:
            raise ConfigError(f"--rng-seeds {self.rng_seeds}: expected 1 to 20")
        check_rng_seed(self.rng_seed)
        if not 2 <= self.bars <= 64:
            raise ConfigError(f"--bars {self.bars}: expected 2 to 64 for the gate (runs of bars need bars)")
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ConfigError(f"gate modes {', '.join(bad) or 'none'}: expected some of {', '.join(MODES)}")


@dataclass(frozen=True, slots=True)
class Figure:
    """A set's mean of one figure with its bootstrap 95% interval."""

    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, per_phrase: np.ndarray, rng: np.random.Generator) -> Figure:
        values = np.asarray(per_phrase, dtype=float)
        if not len(values):
            return cls(math.nan, math.nan, math.nan)
        means = values[rng.integers(0, len(values), (BOOTSTRAP, len(values)))].mean(axis=1)
        return cls(float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


@dataclass(frozen=True, slots=True)
class Check:
    """One gate check: its figure, the threshold it was held to, and whether it passed."""

    name: str
    mode: str
    figure: float
    interval: tuple[float, float] | None
    threshold: str  # as docs/evaluation.md writes it; "truth" is the true continuations' figure
    truth: float | None
    passed: bool


@dataclass(slots=True)
class GateResult:
    model: str
    options: GateOptions
    phrases: int
    seed_source: str
    #: mode -> figure name -> (model's Figure, truth's Figure)
    figures: dict[str, dict[str, tuple[Figure, Figure]]]
    #: system ("model", "random", "ngram") -> main feature -> overlap with the truths
    overlaps: dict[str, dict[str, float]]
    #: held-out NLL of the model and of an n-gram in the model's own units (None: no likelihood, e.g. a GAN)
    likelihood: Likelihood | None
    checks: list[Check]
    sampling: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    #: mode -> the first draw's answer to each phrase (the piano-roll sheet shows some)
    answers: dict[str, list[list[Note]]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


# ---- phrases -------------------------------------------------------------------------


def phrase_samples(tune: Tune, bars: int) -> list[Sample]:
    """The tune's phrases in its own metre: from its first downbeat, a window of ``SEED_BARS + bars`` bars every
    ``SEED_BARS`` bars; none when its bars are not whole beats."""
    if tune.bar_beats not in BAR_BEATS:
        return []
    beats_per_bar = int(tune.bar_beats)
    offset = beats_to_ticks(tune.downbeat)
    notes = [replace(n, start=n.start - offset) for n in tune_notes_from_zero(tune) if n.start >= offset]
    bar = beats_per_bar * PPQN
    seed_ticks, length = SEED_BARS * bar, bars * bar
    end = max((n.end for n in notes), default=0)
    out = []
    for start in range(0, end - seed_ticks - length + 1, seed_ticks):
        seed, truth = cut(notes, start, seed_ticks), cut(notes, start + seed_ticks, length)
        if len(seed) >= 3 and truth:
            out.append(Sample(f"{tune.name}@{start // bar}", tuple(seed), tuple(truth), beats_per_bar))
    return out


def tune_notes_from_zero(tune: Tune) -> list[Note]:
    """The tune's notes in ticks from its own time 0 (not from its first note, which may follow a rest)."""
    first = float(tune.onset[0]) if len(tune) else 0.0
    shift = beats_to_ticks(first)
    return [replace(n, start=n.start + shift) for n in tune_notes(tune)]


def gate_samples(tunes: Sequence[Tune], n: int, bars: int) -> list[Sample]:
    """``n`` phrases evenly spread over every phrase of ``tunes``."""
    return spread([s for t in tunes for s in phrase_samples(t, bars)], n)


def write_phrases(samples: Sequence[Sample], path: Path) -> Path:
    """Save ``samples`` as a phrase set: JSON, notes as [pitch, start, duration] in ticks."""

    def rows(ns: Sequence[Note]) -> list[list[int]]:
        return [[n.pitch, n.start, n.duration] for n in ns]

    data = [
        {"name": s.name, "beats_per_bar": s.beats_per_bar, "seed": rows(s.seed), "truth": rows(s.continuation)}
        for s in samples
    ]
    path.write_text(json.dumps(data, indent=0) + "\n", encoding="utf-8")
    return path


def read_phrases(path: Path) -> list[Sample]:
    """A phrase set written by :func:`write_phrases`."""

    def notes(rows: list[list[int]]) -> tuple[Note, ...]:
        return tuple(Note(pitch=p, velocity=VELOCITY, start=s, duration=d) for p, s, d in rows)

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [Sample(d["name"], notes(d["seed"]), notes(d["truth"]), int(d["beats_per_bar"])) for d in data]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(
            f"phrase set {path}: {err}; expected a file written by livegen.eval.gate.write_phrases"
        ) from err


# ---- answers -------------------------------------------------------------------------


def accompany_answers(
    generator: Any, params: Any, samples: Sequence[Sample], bars: int, rng_seed: int
) -> list[list[Note]]:
    """The model's notes over each truth's bars while the performer plays seed and truth."""
    from livegen.engine.accompany import AccompanySettings
    from livegen.engine.render import render_accompany

    out = []
    for index, sample in enumerate(samples):
        length = bars * sample.bar_ticks
        performed = list(sample.seed) + [replace(n, start=n.start + sample.seed_ticks) for n in sample.continuation]
        settings = AccompanySettings(
            listen_beats=SEED_BARS * sample.beats_per_bar,
            beats_per_bar=sample.beats_per_bar,
            channel=0,
            follow_key=True,  # as a jam with no --key accompanies
        )
        performance = render_accompany(
            generator,
            performed,
            tempo=TempoMap.constant(TEMPO_BPM),
            params=params,
            rng_seed=rng_seed + index,
            settings=settings,
            until=sample.seed_ticks + length,
            step_ticks=60,
        )
        out.append(cut(performance.model, sample.seed_ticks, length))
    return out


def ngram_answers(model: NGram, samples: Sequence[Sample], bars: int, rng_seed: int) -> list[list[Note]]:
    return [
        model.continue_(s.seed, bars * s.bar_ticks, np.random.default_rng([rng_seed, i, 3]))
        for i, s in enumerate(samples)
    ]


# ---- figures -------------------------------------------------------------------------


def _stream(notes: Sequence[Note], sample: Sample, bars: int) -> NoteStream:
    return NoteStream.from_notes(notes, beats_per_bar=sample.beats_per_bar, length=bars * sample.bar_ticks)


def phrase_keys(samples: Sequence[Sample]) -> list[failure.Key]:
    return [metrics.best_scale(NoteStream.from_notes(s.seed, beats_per_bar=s.beats_per_bar)) for s in samples]


def set_figures(
    draws: Sequence[Sequence[Sequence[Note]]], samples: Sequence[Sample], bars: int
) -> dict[str, np.ndarray]:
    """Figure name -> per-phrase value (mean over draws); ``draws`` is [draw][phrase] notes."""
    keys = phrase_keys(samples)
    per: dict[str, list[np.ndarray]] = {}
    for answers in draws:
        streams = [_stream(a, s, bars) for a, s in zip(answers, samples, strict=True)]
        rows = [failure.answer_figures(st, k) for st, k in zip(streams, keys, strict=True)]
        for name in failure.ANSWER_FIGURES:
            per.setdefault(name, []).append(np.array([r[name] for r in rows]))
        per.setdefault("cross_phrase_overlap", []).append(failure.cross_phrase_overlaps(streams))
    return {name: np.mean(values, axis=0) for name, values in per.items()}


def main_overlaps(
    answers: Sequence[Sequence[Note]], truths: Sequence[Sequence[Note]], samples, bars
) -> dict[str, float]:
    out = {}
    for name, feature in MAIN_FEATURES.items():
        a = as_matrix([feature(_stream(x, s, bars)) for x, s in zip(answers, samples, strict=True)])
        b = as_matrix([feature(_stream(x, s, bars)) for x, s in zip(truths, samples, strict=True)])
        out[name] = compare(a, b).overlap
    return out


# ---- checks --------------------------------------------------------------------------

_Rule = Callable[[float, float], bool]
#: figure -> (threshold as written in docs/evaluation.md, rule(model, truth)); the figure compared is
#: the model's own, except density and top-line motion, which compare the ratio model / truth.
RULES: dict[str, tuple[str, _Rule]] = {
    "identical_bar_run": ("<= truth+1", lambda m, t: m <= t + 1.0),
    "distinct_bars": (">= truth-0.2", lambda m, t: m >= t - 0.20),
    "cross_phrase_overlap": ("<= 2*truth", lambda m, t: m <= 2.0 * t),
    "notes_per_beat": ("/truth 0.65-1.35", lambda m, t: t > 0 and 0.65 <= m / t <= 1.35),
    "in_key": (">= truth-0.07", lambda m, t: m >= t - 0.07),
    "empty_beats": ("<= truth+0.05", lambda m, t: m <= t + 0.05),
    "repeated_pitch": ("truth +-0.15", lambda m, t: abs(m - t) <= 0.15),
    "top_line_interval": ("/truth 0.6-1.4", lambda m, t: t > 0 and 0.6 <= m / t <= 1.4),
    "groove": ("truth +-0.1", lambda m, t: abs(m - t) <= 0.10),
}


def failure_checks(mode: str, figures: dict[str, tuple[Figure, Figure]]) -> list[Check]:
    checks = []
    for name, (threshold, rule) in RULES.items():
        if name == "cross_phrase_overlap" and mode != "call-response":
            continue
        model, truth = figures[name]
        checks.append(
            Check(
                name=name,
                mode=mode,
                figure=model.mean,
                interval=(model.low, model.high),
                threshold=threshold,
                truth=truth.mean,
                passed=bool(rule(model.mean, truth.mean)),
            )
        )
    return checks


def baseline_check(overlaps: dict[str, dict[str, float]]) -> Check:
    won = [
        name
        for name in MAIN_FEATURES
        if overlaps["model"][name] > max(overlaps["random"][name], overlaps["ngram"][name])
    ]
    return Check(
        name="beats_baselines",
        mode="call-response",
        figure=float(len(won)),
        interval=None,
        threshold=">= 2 of 3 overlaps",
        truth=None,
        passed=len(won) >= 2,
    )


def likelihood_check(likelihood: Likelihood) -> Check:
    return Check(
        name="likelihood",
        mode="held-out",
        figure=likelihood.model,
        interval=None,
        threshold=f"< n-gram {likelihood.ngram:.4g}",
        truth=None,
        passed=likelihood.model < likelihood.ngram,
    )


# ---- the run -------------------------------------------------------------------------


def run_gate(options: GateOptions, progress: Callable[[str], None] | None = None) -> GateResult:
    """Run the gate described in the module docstring (model runs under the offline time budget)."""
    with offline_budget():
        return _run_gate(options, progress)


def _run_gate(options: GateOptions, progress: Callable[[str], None] | None) -> GateResult:
    from livegen.engine.jam import sampling_params
    from livegen.models.registry import load_generator

    say = progress or (lambda _: None)
    package, generator = load_generator(options.model)
    params = sampling_params(package, None, None)
    trained_on = str(package.manifest.training.get("data", ""))
    if trained_on not in ("corpus:folk", "corpus:bach", "corpus:four-voice"):
        raise ConfigError(
            f"model {package.name} was trained on {trained_on or 'unrecorded data'}; the gate needs "
            "corpus:folk, corpus:bach or corpus:four-voice to take held-out phrases from"
        )
    if options.phrases is not None:
        samples, seed_source = read_phrases(options.phrases)[: options.seeds], str(options.phrases)
    else:
        tunes = _load(trained_on)
        pool, seed_source = _pool(trained_on, tunes, trained_on)
        samples = gate_samples(pool, options.seeds, options.bars)
    warnings = []
    if len(samples) < options.seeds:
        warnings.append(f"{seed_source}: {len(samples)} usable phrases, fewer than --seeds {options.seeds}")
    if len(samples) < 2:
        raise ConfigError(f"{seed_source}: fewer than 2 phrases are {SEED_BARS + options.bars} bars long")
    bars = options.bars
    truths = [list(s.continuation) for s in samples]
    rng = np.random.default_rng([options.rng_seed, 7])
    truth_per = set_figures([truths], samples, bars)
    truth_fig = {name: Figure.of(v, rng) for name, v in truth_per.items()}

    figures: dict[str, dict[str, tuple[Figure, Figure]]] = {}
    checks: list[Check] = []
    shown: dict[str, list[list[Note]]] = {}
    for mode in options.modes:
        draws = []
        for draw in range(options.rng_seeds):
            say(f"{mode}: draw {draw + 1} of {options.rng_seeds} ({len(samples)} phrases)")
            seed = options.rng_seed + 1000 * draw
            if mode == "call-response":
                answers = model_continuations(generator, params, samples, bars, seed)
            else:
                answers = accompany_answers(generator, params, samples, bars, seed)
            draws.append(answers)
        shown[mode] = draws[0]
        per = set_figures(draws, samples, bars)
        figures[mode] = {name: (Figure.of(per[name], rng), truth_fig[name]) for name in per}
        checks.extend(failure_checks(mode, figures[mode]))
    overlaps: dict[str, dict[str, float]] = {}
    likelihood: Likelihood | None = None
    if options.phrases is not None:
        warnings.append("a fixed phrase set: failure checks only (no baselines, no likelihood)")
    else:
        parts = split_by_tune(tunes)
        say("baselines: the n-gram and random notes")
        ngram = NGram.fit_notes([tune_notes(t) for t in parts.train])
        ngram_set = ngram_answers(ngram, samples, bars, options.rng_seed)
        random_set = [
            random_notes(s.seed, bars * s.bar_ticks, np.random.default_rng([options.rng_seed, i, 1]))
            for i, s in enumerate(samples)
        ]
        answers = shown.get("call-response") or model_continuations(generator, params, samples, bars, options.rng_seed)
        overlaps = {
            "model": main_overlaps(answers, truths, samples, bars),
            "random": main_overlaps(random_set, truths, samples, bars),
            "ngram": main_overlaps(ngram_set, truths, samples, bars),
        }
        checks.append(baseline_check(overlaps))
        say("likelihood: the model and an n-gram in its own units on the held-out tunes")
        likelihood = held_out_nll(package, parts.train, parts.held_out)
        if likelihood is not None:
            checks.append(likelihood_check(likelihood))
    return GateResult(
        model=package.name,
        options=options,
        phrases=len(samples),
        seed_source=seed_source,
        figures=figures,
        overlaps=overlaps,
        likelihood=likelihood,
        checks=checks,
        sampling={"temperature": params.temperature, "top_p": params.top_p},
        warnings=warnings,
        samples=samples,
        answers=shown,
    )
