"""An evaluation run: seeds, continuations (model, random, repeat), features and MGEval.

Context: setup (offline; runs the model through the same offline engine as
``livegen render``, never on a real-time path).

The steps, each deterministic for a given ``rng_seed``:

1. **Seeds.** For ``--model``: held-out tunes of the corpus the package was trained on
   (``[training] data`` = ``corpus:folk`` or ``corpus:bach``, split by
   :func:`~livegen.music.corpus.split_by_tune` exactly as in training), else the tunes of
   ``--reference`` (its held-out split if it is the package's training folder, every tune
   otherwise: the model never saw them). Only tunes at least ``2 + bars`` bars long are
   eligible; ``seeds`` of them are taken evenly spread over the corpus order. Seed = the
   first 2 bars, true continuation = the next ``bars`` bars. Corpus tunes carry no metre:
   a bar is 4 beats. For ``--midi DIR``: each file's first 2 bars (of its own metre) are
   the seed and its next ``bars`` bars the continuation; shorter files are skipped.
2. **Continuations.** The model answers each seed with
   :func:`~livegen.engine.render.render_call_response` (``response_bars = bars``, the
   sampler seeded with ``rng_seed + index``). The seed's notes are cut to end
   :data:`ARTICULATION_GAP` ticks before its last bar line and the silence is set to
   what remains of the bar, so the answer starts exactly on bar 3, where the tune's own
   continuation starts. The baselines (:mod:`livegen.eval.baselines`) answer the same
   seeds.
3. **Reference set.** The true continuations, or with ``--reference`` the first ``bars``
   bars of ``seeds`` pieces of that corpus or folder (its held-out split if the model was
   trained on it).
4. **Features and MGEval.** Every feature of :mod:`livegen.eval.metrics` per sample,
   then :func:`livegen.eval.mgeval.compare` for each system against the reference, the
   reference's own split-half overlaps, the seed-000 chart (:mod:`livegen.eval.chart`) and
   the following rate (share of continuation notes whose pitch class the seed played).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from livegen.engine.checks import check_rng_seed
from livegen.errors import ConfigError, LivegenError
from livegen.eval import metrics
from livegen.eval.baselines import random_notes, repeat_seed
from livegen.eval.chart import Chart, evaluate_chart
from livegen.eval.mgeval import Comparison, as_matrix, compare, split_half_overlaps
from livegen.eval.stream import NoteStream
from livegen.models.budget import offline_budget
from livegen.music.corpus import Tune, load_corpus, split_by_tune
from livegen.music.events import Note
from livegen.music.time import PPQN, TempoMap, beats_to_ticks

log = logging.getLogger(__name__)

#: Bars of each seed phrase.
SEED_BARS = 2
#: Metre assumed for corpus tunes (they carry none).
BEATS_PER_BAR = 4
#: The model's copy of the seed stops this many ticks (a 32nd) before the seed's end, so the
#: call-and-response silence (which must be more than 0) ends exactly on the next bar line.
ARTICULATION_GAP = PPQN // 8
#: Tempo of the offline render (irrelevant to the notes: all times are in ticks).
TEMPO_BPM = 120.0
#: Velocity given to corpus notes (they carry none).
VELOCITY = 80
#: Split-half repeats of the reference set for its own overlaps.
SPLIT_HALF_REPEATS = 20

SYSTEMS = ("model", "random", "repeat")
CORPORA = ("corpus:folk", "corpus:bach", "corpus:four-voice")
#: Splits of a model's training corpus that evaluation may draw from (never "train").
SPLITS = ("held-out", "validation")


@dataclass(frozen=True, slots=True)
class EvalOptions:
    """What ``livegen evaluate`` was asked."""

    model: str | None = None
    midi: Path | None = None
    reference: str | None = None
    seeds: int = 32
    bars: int = 16
    rng_seed: int = 0
    temperature: float | None = None
    top_p: float | None = None
    candidates: int | None = None  # blocks an unconditional block model draws per block (default 8)
    split: str = "held-out"  # of the training corpus; "validation" is for tuning sampling defaults

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(f"--split {self.split}: expected one of {', '.join(SPLITS)}")
        if (self.model is None) == (self.midi is None):
            raise ConfigError("evaluate needs exactly one of --model NAME and --midi DIR")
        if not 2 <= self.seeds <= 1000:
            raise ConfigError(f"--seeds {self.seeds}: expected 2 to 1000 (MGEval needs pairs of samples)")
        check_rng_seed(self.rng_seed)
        if not 1 <= self.bars <= 256:
            raise ConfigError(f"--bars {self.bars}: expected 1 to 256")


@dataclass(frozen=True, slots=True)
class Sample:
    """A seed phrase and what followed it, notes in ticks from the seed's start and the continuation's."""

    name: str
    seed: tuple[Note, ...]
    continuation: tuple[Note, ...]
    beats_per_bar: int = BEATS_PER_BAR

    @property
    def bar_ticks(self) -> int:
        return self.beats_per_bar * PPQN

    @property
    def seed_ticks(self) -> int:
        return SEED_BARS * self.bar_ticks


@dataclass(slots=True)
class SystemResult:
    """One set of continuations (the model or a baseline) and how it compares with the reference."""

    key: str  # "model", "random" or "repeat"
    label: str
    continuations: list[list[Note]]
    features: dict[str, np.ndarray]  # feature -> [samples, values]
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    following_rate: float = float("nan")


@dataclass(slots=True)
class Evaluation:
    """Everything a report shows."""

    options: EvalOptions
    subject: str  # the model's name or the MIDI folder's
    seed_source: str
    reference_label: str
    samples: list[Sample]
    length: int  # ticks of every continuation
    systems: list[SystemResult]
    reference_notes: list[list[Note]]
    reference_features: dict[str, np.ndarray]
    reference_self: dict[str, np.ndarray]  # feature -> split-half overlaps
    reference_following_rate: float | None
    chart: Chart
    sampling: dict[str, float] = field(default_factory=dict)
    export_metrics: dict[str, float] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: A block model's candidate selection: candidates per block, blocks chosen, the mean fit
    #: score of the chosen block and of all candidates (empty for other models).
    selection: dict[str, float] = field(default_factory=dict)

    def system(self, key: str) -> SystemResult:
        return next(s for s in self.systems if s.key == key)


Progress = Callable[[int, int], None]


# ---- notes ---------------------------------------------------------------------------


def tune_notes(tune: Tune) -> list[Note]:
    """A corpus tune as notes in ticks, its first onset at 0."""
    first = float(tune.onset[0]) if len(tune) else 0.0
    return [
        Note(
            pitch=int(p),
            velocity=VELOCITY,
            start=beats_to_ticks(float(o) - first),
            duration=max(1, beats_to_ticks(float(d))),
        )
        for p, o, d in zip(tune.pitch, tune.onset, tune.duration, strict=True)
        if 0 <= int(p) <= 127
    ]


def cut(notes: Sequence[Note], start: int, length: int) -> list[Note]:
    """The notes starting in ``[start, start + length)``, moved to start at 0, ends clipped to ``length``."""
    out = []
    for n in notes:
        if start <= n.start < start + length:
            begin = n.start - start
            out.append(replace(n, start=begin, duration=min(n.end - start, length) - begin))
    return out


def split_sample(name: str, notes: Sequence[Note], bars: int, beats_per_bar: int = BEATS_PER_BAR) -> Sample | None:
    """Seed = the first 2 bars, continuation = the next ``bars``; None when the piece is shorter or a part is empty."""
    bar = beats_per_bar * PPQN
    seed_ticks, length = SEED_BARS * bar, bars * bar
    if max((n.end for n in notes), default=0) < seed_ticks + length:
        return None
    seed, continuation = cut(notes, 0, seed_ticks), cut(notes, seed_ticks, length)
    if not seed or not continuation:
        return None
    return Sample(name, tuple(seed), tuple(continuation), beats_per_bar)


def spread(items: Sequence[Any], n: int) -> list[Any]:
    """``n`` items evenly spread over ``items`` (all of them when there are no more than ``n``)."""
    if len(items) <= n:
        return list(items)
    return [items[(k * len(items)) // n] for k in range(n)]


def performed_seed(seed: Sequence[Note], seed_ticks: int) -> tuple[list[Note], float]:
    """The seed as the model hears it, and the silence (beats) that ends it on ``seed_ticks``.

    Notes are cut to end :data:`ARTICULATION_GAP` before ``seed_ticks`` (a note starting
    later than that is left out), so the silence is more than 0 and the call-and-response
    answer starts exactly at ``seed_ticks``.
    """
    stop = seed_ticks - ARTICULATION_GAP
    notes = [replace(n, duration=min(n.end, stop) - n.start) for n in seed if n.start < stop]
    if not notes:
        raise LivegenError("a seed phrase holds no note before its last 32nd")
    last = max(n.end for n in notes)
    return notes, (seed_ticks - last) / PPQN


# ---- sources -------------------------------------------------------------------------


def _load(spec: str) -> list[Tune]:
    try:
        return load_corpus(spec)
    except ImportError as err:
        raise LivegenError(
            f"{spec}: converting the corpus needs music21 ({err}); install the eval extra: pip install -e '.[eval]'"
        ) from err


def _same_source(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    if a.startswith("corpus:") or b.startswith("corpus:"):
        return a == b
    return Path(a).resolve() == Path(b).resolve()


def _pool(spec: str, tunes: list[Tune], trained_on: str | None, split: str = "held-out") -> tuple[list[Tune], str]:
    """The tunes the model never trained on: a split of its training data (held-out unless
    tuning on validation), else all of ``spec``."""
    if _same_source(spec, trained_on):
        parts = split_by_tune(tunes)
        return (parts.validation if split == "validation" else parts.held_out), f"{split} split of {spec}"
    return tunes, spec


def samples_from_tunes(tunes: Sequence[Tune], n: int, bars: int) -> list[Sample]:
    eligible = [s for t in tunes if (s := split_sample(t.name, tune_notes(t), bars)) is not None]
    return spread(eligible, n)


def samples_from_midi(folder: Path, n: int, bars: int) -> tuple[list[Sample], int]:
    """Samples of the MIDI files in ``folder`` (and how many files were too short)."""
    from livegen.music.midifile import read_midi

    if not folder.is_dir():
        raise ConfigError(f"--midi {folder}: not a folder of MIDI files")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".mid", ".midi"))
    if not paths:
        raise ConfigError(f"--midi {folder}: the folder holds no .mid or .midi files")
    samples, short = [], 0
    for path in paths:
        song = read_midi(path)
        sample = split_sample(str(path.relative_to(folder)), song.notes, bars, song.beats_per_bar)
        if sample is None:
            short += 1
        else:
            samples.append(sample)
    if not samples:
        raise ConfigError(
            f"--midi {folder}: no file has notes in its first {SEED_BARS} bars and {bars} more bars after them; "
            "lower --bars"
        )
    return spread(samples, n), short


def reference_pieces(tunes: Sequence[Tune], n: int, bars: int) -> list[list[Note]]:
    """The first ``bars`` bars of ``n`` pieces at least that long, evenly spread."""
    length = bars * BEATS_PER_BAR * PPQN
    eligible = []
    for tune in tunes:
        notes = tune_notes(tune)
        if max((x.end for x in notes), default=0) >= length:
            eligible.append(cut(notes, 0, length))
    return spread(eligible, n)


# ---- continuations -------------------------------------------------------------------


def model_continuations(
    generator: Any, params: Any, samples: Sequence[Sample], bars: int, rng_seed: int, progress: Progress | None = None
) -> list[list[Note]]:
    """The model's answer to each seed, in ticks from the answer's start (bar 3)."""
    from livegen.engine.callresponse import CallResponseSettings
    from livegen.engine.render import render_call_response

    tempo = TempoMap.constant(TEMPO_BPM)
    out = []
    for index, sample in enumerate(samples):
        notes, silence = performed_seed(sample.seed, sample.seed_ticks)
        # in the call's key, as a jam with no --key answers
        settings = CallResponseSettings(silence_beats=silence, beats_per_bar=sample.beats_per_bar, follow_key=True)
        performance = render_call_response(
            generator,
            notes,
            tempo=tempo,
            params=params,
            rng_seed=rng_seed + index,
            settings=settings,
            response_bars=bars,
            step_ticks=60,
        )
        answer = [n for n in performance.model if n.start >= sample.seed_ticks]
        out.append(cut(answer, sample.seed_ticks, bars * sample.bar_ticks))
        if progress is not None:
            progress(index + 1, len(samples))
    return out


def baseline_continuations(samples: Sequence[Sample], bars: int, rng_seed: int) -> dict[str, list[list[Note]]]:
    random_sets, repeat_sets = [], []
    for index, sample in enumerate(samples):
        length = bars * sample.bar_ticks
        rng = np.random.default_rng([rng_seed, index, 1])
        random_sets.append(random_notes(sample.seed, length, rng))
        repeat_sets.append(repeat_seed(sample.seed, sample.seed_ticks, length))
    return {"random": random_sets, "repeat": repeat_sets}


# ---- features ------------------------------------------------------------------------


def streams(notes: Sequence[Sequence[Note]], beats_per_bar: Sequence[int], length: int) -> list[NoteStream]:
    return [NoteStream.from_notes(n, beats_per_bar=b, length=length) for n, b in zip(notes, beats_per_bar, strict=True)]


def feature_table(items: Sequence[NoteStream]) -> dict[str, np.ndarray]:
    """Feature name -> [samples, values] for every scalar and histogram feature of :mod:`metrics`."""
    rows: dict[str, list[Any]] = {}
    for s in items:
        values: dict[str, Any] = {**metrics.scalar_features(s), **metrics.histogram_features(s)}
        for name, value in values.items():
            rows.setdefault(name, []).append(value)
    return {name: as_matrix(values) for name, values in rows.items()}


def mean_following_rate(samples: Sequence[Sample], continuations: Sequence[Sequence[Note]], length: int) -> float:
    """Mean share of continuation notes whose pitch class the seed played (anywhere in the seed)."""
    rates = []
    for sample, notes in zip(samples, continuations, strict=True):
        seed = NoteStream.from_notes(sample.seed, beats_per_bar=sample.beats_per_bar)
        shifted = [replace(n, start=n.start + sample.seed_ticks) for n in notes]
        answer = NoteStream.from_notes(shifted, beats_per_bar=sample.beats_per_bar)
        if len(answer):
            rates.append(metrics.following_rate(seed, answer, window_ticks=sample.seed_ticks + length))
    return float(np.mean(rates)) if rates else float("nan")


# ---- the run -------------------------------------------------------------------------


def run_evaluation(options: EvalOptions, progress: Progress | None = None) -> Evaluation:
    """Run the whole evaluation described in the module docstring (model runs under the offline time budget)."""
    with offline_budget():
        return _run_evaluation(options, progress)


def _run_evaluation(options: EvalOptions, progress: Progress | None) -> Evaluation:
    warnings: list[str] = []
    bars = options.bars
    trained_on: str | None = None
    sampling: dict[str, float] = {}
    export_metrics: dict[str, float] = {}
    training: dict[str, Any] = {}
    generator = params = None
    loaded: dict[str, list[Tune]] = {}

    def tunes_of(spec: str) -> list[Tune]:
        if spec not in loaded:
            loaded[spec] = _load(spec)
        return loaded[spec]

    if options.model is not None:
        from livegen.engine.jam import sampling_params
        from livegen.models.registry import load_generator

        package, generator = load_generator(options.model)
        subject = package.name
        params = sampling_params(package, options.temperature, options.top_p, candidates=options.candidates)
        sampling = {"temperature": params.temperature, "top_p": params.top_p}
        export_metrics = dict(package.manifest.metrics)
        training = dict(package.manifest.training)
        trained_on = str(training["data"]) if "data" in training else None
        if trained_on in CORPORA:
            seed_spec = trained_on
        elif options.reference is not None:
            seed_spec = options.reference
        else:
            raise ConfigError(
                f"model {subject} was trained on {trained_on or 'unrecorded data'}, not {' or '.join(CORPORA)}; "
                f"pass --reference {', '.join(CORPORA)} or a folder of MIDI files to take seeds from"
            )
        assert seed_spec is not None
        pool, seed_source = _pool(seed_spec, tunes_of(seed_spec), trained_on, options.split)
        samples = samples_from_tunes(pool, options.seeds, bars)
        if not samples:
            raise ConfigError(
                f"{seed_source}: no tune is {SEED_BARS + bars} bars long ({SEED_BARS} for the seed and --bars {bars}); "
                "lower --bars"
            )
    else:
        assert options.midi is not None
        if options.temperature is not None or options.top_p is not None or options.candidates is not None:
            raise ConfigError(
                "--temperature, --top-p and --candidates apply to --model only; --midi files are already generated"
            )
        subject = options.midi.name or str(options.midi)
        samples, short = samples_from_midi(options.midi, options.seeds, bars)
        seed_source = str(options.midi)
        if short:
            warnings.append(f"{short} file(s) of {options.midi} shorter than {SEED_BARS} + {bars} bars were skipped")
    if len(samples) < 2:
        raise ConfigError(f"{seed_source}: only {len(samples)} usable piece; MGEval needs at least 2 (lower --bars)")
    if len(samples) < options.seeds:
        warnings.append(f"{seed_source}: {len(samples)} usable pieces, fewer than --seeds {options.seeds}")

    length = bars * BEATS_PER_BAR * PPQN
    metres = [s.beats_per_bar for s in samples]
    if any(m != BEATS_PER_BAR for m in metres):
        length = bars * max(metres) * PPQN  # one length for every set; shorter bars leave the rest empty
        warnings.append("some seeds are not in 4/4: bars are counted in each file's metre")

    reference_spec = options.reference if options.reference is not None else (None if generator else "corpus:folk")
    reference_following: float | None = None
    if reference_spec is None:
        reference_notes = [list(s.continuation) for s in samples]
        reference_metres = metres
        reference_label = f"true continuations ({seed_source})"
    else:
        pool, ref_source = _pool(reference_spec, tunes_of(reference_spec), trained_on, options.split)
        reference_notes = reference_pieces(pool, options.seeds, bars)
        reference_metres = [BEATS_PER_BAR] * len(reference_notes)
        reference_label = f"first {bars} bars of {len(reference_notes)} pieces ({ref_source})"
        if len(reference_notes) < 2:
            raise ConfigError(f"{ref_source}: fewer than 2 pieces are {bars} bars long; lower --bars")
        if len(reference_notes) < options.seeds:
            warnings.append(f"{ref_source}: {len(reference_notes)} pieces of {bars} bars, fewer than --seeds")

    continuations: dict[str, list[list[Note]]] = {}
    if generator is not None:
        continuations["model"] = model_continuations(generator, params, samples, bars, options.rng_seed, progress)
    else:
        continuations["model"] = [list(s.continuation) for s in samples]
    continuations.update(baseline_continuations(samples, bars, options.rng_seed))
    selection: dict[str, float] = {}
    fit = getattr(generator, "fit", None)
    if fit is not None and fit.blocks and params is not None:
        selection = {
            "candidates": params.candidates,
            "blocks": fit.blocks,
            "chosen_fit": fit.chosen_mean,
            "candidate_fit": fit.candidates_mean,
        }

    labels = {"model": subject, "random": "random notes", "repeat": "repeat the seed"}
    reference_streams = streams(reference_notes, reference_metres, length)
    reference_features = feature_table(reference_streams)
    rng = np.random.default_rng([options.rng_seed, 2])
    reference_self = {
        name: split_half_overlaps(matrix, rng, SPLIT_HALF_REPEATS) for name, matrix in reference_features.items()
    }
    if reference_spec is None:
        reference_following = mean_following_rate(samples, reference_notes, length)

    systems = []
    system_streams: dict[str, list[NoteStream]] = {}
    for key in SYSTEMS:
        system_streams[key] = streams(continuations[key], metres, length)
        features = feature_table(system_streams[key])
        result = SystemResult(key=key, label=labels[key], continuations=continuations[key], features=features)
        result.comparisons = {name: compare(features[name], reference_features[name]) for name in features}
        result.following_rate = mean_following_rate(samples, continuations[key], length)
        systems.append(result)

    chart = evaluate_chart(
        {key: system_streams[key] for key in SYSTEMS},
        reference_streams,
        {s.key: s.comparisons for s in systems},
        reference_self,
    )
    return Evaluation(
        options=options,
        subject=subject,
        seed_source=seed_source,
        reference_label=reference_label,
        samples=samples,
        length=length,
        systems=systems,
        reference_notes=reference_notes,
        reference_features=reference_features,
        reference_self=reference_self,
        reference_following_rate=reference_following,
        chart=chart,
        sampling=sampling,
        export_metrics=export_metrics,
        training=training,
        warnings=warnings,
        selection=selection,
    )
