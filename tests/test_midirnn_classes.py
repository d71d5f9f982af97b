"""The ``midirnn`` adapter with a categorical time head: it plays only class values, and a wrong manifest is named."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from livegen.cli import main
from livegen.errors import PackageError
from livegen.models.midirnn import MidiRnnGenerator
from livegen.models.package import load_package
from livegen.models.sampling import SamplingParams
from livegen.models.step import StepEvent
from livegen.music.midifile import read_midi
from tests.pkgfactory import DURATION_CLASSES, STEP_CLASSES, write_package

#: The class values in ticks: the step is at least a 16th (so 1/8 would play as 120), no grid snapping.
STEP_TICKS = {max(120, round(v * 480)) for v in STEP_CLASSES}
DURATION_TICKS = {round(v * 480) for v in DURATION_CLASSES}


@pytest.fixture
def classes_dir(tmp_path):
    return write_package(tmp_path / "pkg", time_head="classes")


def line(gen: MidiRnnGenerator, params: SamplingParams, seed: int, notes: int = 200) -> list[StepEvent]:
    gen.reset()
    gen.feed(StepEvent(62, 0, 240))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(notes):
        event = gen.sample(params, rng)
        gen.feed(event)
        out.append(event)
    return out


def test_samples_only_class_values_and_keeps_triplets(classes_dir):
    gen = MidiRnnGenerator(load_package(classes_dir))
    assert gen.time_head == "classes"
    events = line(gen, SamplingParams(temperature=2.0, top_p=1.0), seed=0)
    steps = {e.step for e in events}
    durations = {e.duration for e in events}
    assert steps <= STEP_TICKS and durations <= DURATION_TICKS
    # A hot draw over 200 notes reaches most classes, including the triplet (160 ticks, off the 16th grid)
    # and the 32nd duration (60 ticks, below it): class values are played as they are, not snapped.
    assert 160 in steps and 60 in durations
    assert len(steps) >= len(STEP_TICKS) - 1 and len(durations) >= len(DURATION_TICKS) - 1
    assert all(48 <= e.pitch <= 84 for e in events)


def test_time_classes_follow_temperature_and_top_p(classes_dir):
    package = load_package(classes_dir)
    gen = MidiRnnGenerator(package)
    gen.feed(StepEvent(62, 0, 240))
    note = np.array([[62 / 128, 0.0, 0.5]], dtype=np.float32)
    zeros = np.zeros((1, 1, 16), dtype=np.float32)
    _, step_logits, duration_logits, _, _ = package.sessions["step"].run(None, {"note": note, "h": zeros, "c": zeros})
    expected = StepEvent(0, max(120, round(STEP_CLASSES[int(step_logits.argmax())] * 480)), 0)
    expected_duration = round(DURATION_CLASSES[int(duration_logits.argmax())] * 480)
    # top-p 0.05 keeps only the most likely class...
    for seed in range(5):
        event = gen.sample(SamplingParams(temperature=1.0, top_p=0.05), np.random.default_rng(seed))
        assert (event.step, event.duration) == (expected.step, expected_duration)

    # ... and the temperature spreads or narrows the draw as it does the pitch's.
    def spread(temperature: float) -> int:
        params = SamplingParams(temperature=temperature, top_p=1.0)
        return len({gen.sample(params, np.random.default_rng(s)).step for s in range(60)})

    assert spread(0.05) < spread(4.0) == len(STEP_TICKS)


def test_time_temperature_holds_the_rhythm_whatever_the_pitch_temperature(tmp_path):
    def time_temperature(table):
        table["parameters"]["time_temperature"] = {"default": 1.0, "min": 0.05, "max": 4.0}

    def rhythms(folder, temperature):
        gen = MidiRnnGenerator(load_package(folder))
        gen.feed(StepEvent(62, 0, 240))
        params = SamplingParams(temperature=temperature, top_p=1.0)
        # One draw each for pitch, step and duration: the same rng seed reaches the time draws in the same state.
        return [(e.step, e.duration) for e in (gen.sample(params, np.random.default_rng(s)) for s in range(30))]

    held = write_package(tmp_path / "held", time_head="classes", mutate=time_temperature)
    assert rhythms(held, 0.05) == rhythms(held, 4.0) == rhythms(held, 1.0)
    tied = write_package(tmp_path / "tied", time_head="classes")  # no time_temperature: the pitch's temperature
    assert rhythms(tied, 0.05) != rhythms(tied, 4.0)
    assert rhythms(tied, 1.0) == rhythms(held, 1.0)


def test_same_seed_same_rhythm(classes_dir):
    gen = MidiRnnGenerator(load_package(classes_dir))
    params = SamplingParams()
    assert line(gen, params, seed=3, notes=32) == line(gen, params, seed=3, notes=32)
    assert [e.step for e in line(gen, params, seed=3, notes=32)] != [e.step for e in line(gen, params, 4, 32)]


def test_render_plays_class_values(classes_dir, tmp_path):
    out = tmp_path / "o.mid"
    code = main(["render", "--model", str(classes_dir), "--seed-file", str(classes_dir / "seed.mid"),
                 "--bars", "4", "--out", str(out), "--rng-seed", "2"])  # fmt: skip
    assert code == 0
    song = read_midi(out)
    seed_end = 8 * 240
    answer = sorted((n for n in song.notes if n.start >= seed_end), key=lambda n: n.start)
    assert len(answer) >= 4
    onsets = [n.start for n in answer]
    assert {b - a for a, b in itertools.pairwise(onsets)} <= STEP_TICKS


def _pop_time_head(table):
    table["representation"].pop("time_head")


def _regression_with_classes(table):
    table["representation"].update(step_classes=[0.5, 1.0])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda t: t["representation"].pop("step_classes"),
            r"field 'representation\.step_classes': expected a list of 6 durations in beats above 0 "
            r"\(the size of graph output 'step_logits'\), got None",
        ),
        (
            lambda t: t["representation"].update(step_classes=[0.25, 0.5]),
            r"field 'representation\.step_classes': expected a list of 6 .*got \[0\.25, 0\.5\]",
        ),
        (
            lambda t: t["representation"].update(duration_classes=[]),
            r"field 'representation\.duration_classes': expected a list of 5 .*'duration_logits'",
        ),
        (
            lambda t: t["representation"].update(duration_classes=[0.125, 0.25, 0.0, 1.0, 1.5]),
            r"field 'representation\.duration_classes': expected .* above 0",
        ),
        (
            lambda t: t["representation"].update(step_classes=["1/4", 0.33, 0.5, 0.75, 1.0, 2.0]),
            r"field 'representation\.step_classes'",
        ),
        (
            lambda t: t["representation"].update(time_head="categorical"),
            r"field 'representation\.time_head': expected one of regression, classes, got 'categorical'",
        ),
        (
            _pop_time_head,
            r"field 'representation\.time_head': expected 'classes' \(the graph has no 'step' output",
        ),
    ],
)
def test_manifest_mistakes_are_named(tmp_path, mutate, message):
    folder = write_package(tmp_path / "p", time_head="classes", mutate=mutate)
    package = load_package(folder)  # the generic checks pass: these are the family's fields
    with pytest.raises(PackageError, match=message) as err:
        MidiRnnGenerator(package)
    assert str(folder / "livegen.toml") in str(err.value)


def test_regression_package_with_class_lists_is_refused(tmp_path):
    folder = write_package(tmp_path / "p", mutate=_regression_with_classes)
    with pytest.raises(PackageError, match=r"'representation\.step_classes': expected no class list"):
        MidiRnnGenerator(load_package(folder))


def test_classes_manifest_on_a_regression_graph_is_refused(tmp_path):
    def claim_classes(table):
        table["representation"].update(time_head="classes", step_classes=[0.5], duration_classes=[0.5])

    folder = write_package(tmp_path / "p", mutate=claim_classes)
    with pytest.raises(PackageError, match=r"'representation\.time_head': expected 'regression' .*'step_logits'"):
        MidiRnnGenerator(load_package(folder))


def test_render_names_the_field(tmp_path, capsys):
    folder = write_package(
        tmp_path / "p", time_head="classes", mutate=lambda t: t["representation"].pop("step_classes")
    )
    code = main(["render", "--model", str(folder), "--seed-file", str(folder / "seed.mid"), "--bars", "1",
                 "--out", str(tmp_path / "o.mid")])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0
    assert "representation.step_classes" in err and "Traceback" not in err
    assert not (tmp_path / "o.mid").exists()
