"""``livegen evaluate``: seeds and continuations, baselines, the chart, the JSON report and the PNG sheet.

A random-weight ``midirnn`` package (tests/pkgfactory.py) and MIDI folders written here stand in
for the bundled model and the corpora, so nothing needs music21 or the corpus cache.
"""

from __future__ import annotations

import itertools
import json
import struct
import sys

import numpy as np
import pytest

from livegen.cli import main
from livegen.errors import LivegenError
from livegen.eval import runner
from livegen.eval.baselines import IOI_CHOICES, random_notes, repeat_seed
from livegen.eval.chart import judge, key_steadiness
from livegen.eval.mgeval import Comparison
from livegen.eval.report import round_sig
from livegen.eval.stream import NoteStream
from livegen.music.corpus import Tune
from livegen.music.events import Note
from livegen.music.midifile import write_midi
from tests.pkgfactory import write_package

BAR = 1920
SCALE = (60, 62, 64, 65, 67, 69, 71, 72)


def write_tunes(folder, count=8, bars=8, seed=0):
    """``count`` one-line tunes of ``bars`` 4/4 bars in C major with eighths, quarters and halves."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        notes, t = [], 0
        while t < bars * BAR:
            ioi = int(rng.choice([240, 480, 960]))
            notes.append(Note(int(rng.choice(SCALE)), 80, t, ioi - 20))
            t += ioi
        write_midi(folder / f"tune{i:02d}.mid", {"melody": notes})
    return folder


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    return {
        "package": write_package(root / "pkg"),
        "tunes": write_tunes(root / "tunes", count=8, bars=8, seed=1),
        "generated": write_tunes(root / "generated", count=6, bars=7, seed=2),
        "root": root,
    }


def evaluate(fixtures, name, *extra):
    out = fixtures["root"] / name
    code = main(
        [
            "evaluate", "--model", str(fixtures["package"]), "--reference", str(fixtures["tunes"]), "--seeds", "6",
            "--bars", "4", "--json", str(out.with_suffix(".json")), "--png", str(out.with_suffix(".png")),
            *extra,
        ]
    )  # fmt: skip
    assert code == 0
    return out.with_suffix(".json"), out.with_suffix(".png")


# ---- baselines -----------------------------------------------------------------------


SEED = (Note(64, 90, 0, 480), Note(67, 90, 960, 480), Note(60, 90, 1440, 480))


def test_random_notes_stay_in_the_seeds_range_on_the_grid_as_one_line():
    notes = random_notes(SEED, 4 * BAR, np.random.default_rng(0))
    assert notes[0].start == 0
    assert all(60 <= n.pitch <= 67 for n in notes)
    starts = [n.start for n in notes]
    assert all(b - a in IOI_CHOICES for a, b in itertools.pairwise(starts))
    assert all(a.end <= b.start for a, b in itertools.pairwise(notes)), "one line: no overlaps"
    assert notes[-1].start < 4 * BAR and notes[-1].end <= 4 * BAR
    assert len({n.pitch for n in notes}) > 3
    assert notes == random_notes(SEED, 4 * BAR, np.random.default_rng(0))
    assert notes != random_notes(SEED, 4 * BAR, np.random.default_rng(1))


def test_repeat_seed_loops_the_seed_to_fill_the_continuation():
    notes = repeat_seed(SEED, BAR, 2 * BAR + 1000)
    assert [(n.pitch, n.start, n.duration) for n in notes] == [
        (64, 0, 480), (67, 960, 480), (60, 1440, 480),
        (64, 1920, 480), (67, 2880, 480), (60, 3360, 480),
        (64, 3840, 480), (67, 4800, 40),  # the last copy is cut at the continuation's end
    ]  # fmt: skip


# ---- seeds and continuations ---------------------------------------------------------


def tune(name, beats, step=1.0):
    onsets = np.arange(0, beats, step, dtype=np.float32)
    pitch = (60 + np.arange(len(onsets)) % 12).astype(np.int16)
    return Tune(name, pitch, onsets, np.full(len(onsets), step, dtype=np.float32))


def test_seed_is_two_bars_and_the_continuation_the_next_bars():
    notes = runner.tune_notes(tune("t", 4 * 8, step=1.5))  # a note every 1.5 beats for 8 bars
    sample = runner.split_sample("t", notes, bars=4)
    assert sample is not None
    assert [n.start for n in sample.seed] == [0, 720, 1440, 2160, 2880, 3600]
    assert sample.seed[-1].end == 2 * BAR, "the note across the bar line is cut at the seed's end"
    # The continuation starts at bar 3 (tick 3840 of the tune): its first onset is 4320 - 3840.
    assert sample.continuation[0].start == 480
    assert max(n.end for n in sample.continuation) <= 4 * BAR
    assert all(n.start < 4 * BAR for n in sample.continuation)
    assert runner.split_sample("short", notes, bars=7) is None, "8 bars cannot hold 2 + 7"


def test_seeds_are_spread_over_the_eligible_tunes():
    tunes = [tune(f"t{i}", 4 * (6 if i % 2 else 3)) for i in range(12)]  # odd ones are 6 bars long
    samples = runner.samples_from_tunes(tunes, n=3, bars=4)
    assert [s.name for s in samples] == ["t1", "t5", "t9"]


def test_the_model_hears_the_seed_end_just_before_the_bar_line():
    seed = (Note(60, 80, 0, 1920), Note(62, 80, 1920, 1920))
    notes, silence = runner.performed_seed(seed, 2 * BAR)
    assert notes[-1].end == 2 * BAR - runner.ARTICULATION_GAP
    assert silence * 480 == runner.ARTICULATION_GAP


def test_model_continuation_starts_on_the_bar_after_the_seed(fixtures):
    from livegen.engine.jam import sampling_params
    from livegen.models.registry import load_generator

    package, generator = load_generator(str(fixtures["package"]))
    params = sampling_params(package, None, None)
    sample = runner.split_sample("t", runner.tune_notes(tune("t", 4 * 8, step=1.5)), bars=4)
    assert sample is not None
    (answer,) = runner.model_continuations(generator, params, [sample], bars=4, rng_seed=0)
    assert answer and answer[0].start == 0
    assert all(0 <= n.start < 4 * BAR and n.end <= 4 * BAR for n in answer)
    again = runner.model_continuations(generator, params, [sample], bars=4, rng_seed=0)[0]
    assert answer == again


# ---- chart ---------------------------------------------------------------------------


def stream(pitches, step=480, bars=8):
    notes = [Note(p, 80, i * step, step) for i, p in enumerate(pitches)]
    return NoteStream.from_notes(notes, length=bars * BAR)


def test_key_steadiness_drops_when_a_phrase_leaves_the_key():
    in_c = [60, 62, 64, 65, 67, 69, 71, 72] * 4
    assert key_steadiness(stream(in_c)) == 1.0
    wandering = in_c[:16] + [61, 63, 66, 68, 70, 61, 63, 66] * 2  # bars 5-8 on the black keys
    assert key_steadiness(stream(wandering)) < 0.5


def test_chart_thresholds_come_from_the_reference():
    ref = {"in_scale_rate": np.linspace(0.9, 1.0, 21), "average_pitch_interval": np.linspace(1.0, 3.0, 21)}
    ref |= {k: np.zeros(21) for k in ("empty_beat_ratio", "density_variation")}
    ref |= {"key_steadiness": np.ones(21), "polyphony": np.ones(21)}
    ref |= {k: np.ones(21) for k in ("pitch_classes_per_bar", "tonal_motion")}
    good = {k: np.full(5, float(np.median(v))) for k, v in ref.items()}
    comparisons = {"ioi_histogram": Comparison(0.9, 0.1, 1.0, 1.0)}
    self_overlaps = {"ioi_histogram": np.full(10, 0.85)}
    chart = judge(good, ref, comparisons, self_overlaps)
    assert {k: c.mark for k, c in chart.items()} == {
        "melody": "✓", "rhythm": "✓", "harmony": "N/A", "uniform mood": "✓"
    }  # fmt: skip
    leaps = good | {"average_pitch_interval": np.full(5, 3.5)}
    assert judge(leaps, ref, comparisons, self_overlaps)["melody"].mark == "✗"
    loose = {"ioi_histogram": Comparison(0.8, 0.1, 1.0, 1.0)}
    assert judge(good, ref, loose, self_overlaps)["rhythm"].mark == "✗"
    chords = good | {"polyphony": np.full(5, 3.0)}
    assert judge(chords, ref, comparisons, self_overlaps)["harmony"].mark == "✓"


# ---- the command ---------------------------------------------------------------------


def test_json_is_deterministic_for_an_rng_seed(fixtures, capsys):
    first, _ = evaluate(fixtures, "a", "--rng-seed", "3")
    again, _ = evaluate(fixtures, "b", "--rng-seed", "3")
    other, _ = evaluate(fixtures, "c", "--rng-seed", "4")
    out = capsys.readouterr().out
    assert f"JSON report -> {first.resolve()}" in out
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    report = json.loads(first.read_text())
    assert report["mode"] == "model" and report["subject"] == "test-rnn"
    assert len(report["samples"]) == 6
    for feature in ("pitch_class_histogram", "interval_histogram", "ioi_histogram"):
        row = report["features"][feature]
        assert set(row) == {"reference", "model", "random", "repeat"}
        assert 0 <= row["model"]["overlap"] <= 1 and row["model"]["kl"] >= 0
        assert len(row["reference"]["mean"]) == {"pitch_class_histogram": 12, "interval_histogram": 25}.get(
            feature, len(row["reference"]["mean"])
        )
    assert set(report["chart"]["model"]) == {"melody", "rhythm", "harmony", "uniform mood"}
    assert report["export_metrics"] == {"parity_max_abs_diff": 0.0}
    assert "timestamp" not in first.read_text() and "seconds" not in first.read_text()


def test_png_sheet_is_written_and_not_blank(fixtures):
    _, png = evaluate(fixtures, "sheet")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 1200 and height >= 900
    assert len(data) > 60_000, "a sheet of rolls and charts, not an empty canvas"


def test_midi_folder_is_scored_as_the_generated_set(fixtures, capsys):
    out = fixtures["root"] / "midi.json"
    code = main(
        [
            "evaluate", "--midi", str(fixtures["generated"]), "--reference", str(fixtures["tunes"]),
            "--bars", "4", "--json", str(out), "--png", str(fixtures["root"] / "midi.png"),
        ]
    )  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "midi" and report["subject"] == "generated"
    assert report["samples"] == [f"tune{i:02d}.mid" for i in range(6)]
    assert report["export_metrics"] == {}


def test_round_sig_keeps_six_significant_digits():
    assert round_sig(0.123456789) == 0.123457
    assert round_sig(123456.789) == 123457.0
    assert round_sig(float("nan")) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "folk-lstm", "--midi", "DIR"], "exactly one of --model NAME and --midi DIR"),
        ([], "exactly one of --model NAME and --midi DIR"),
        (["--midi", "EMPTY"], "holds no .mid or .midi files"),
        (["--midi", "TUNES", "--bars", "0"], "--bars 0: expected 1 to 256"),
        (["--midi", "TUNES", "--seeds", "1"], "--seeds 1: expected 2 to 1000"),
        (["--midi", "TUNES", "--bars", "40", "--reference", "TUNES"], "lower --bars"),
        (["--model", "PKG"], "pass --reference corpus:folk, corpus:bach, corpus:four-voice or a folder"),
        (["--model", "PKG", "--reference", "corpus:jazz"], "unknown corpus 'corpus:jazz'"),
        (["--midi", "TUNES", "--temperature", "0.5", "--reference", "TUNES"], "apply to --model only"),
    ],
)
def test_cli_errors_name_the_problem(fixtures, tmp_path, capsys, args, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    places = {
        "DIR": str(tmp_path),
        "EMPTY": str(empty),
        "TUNES": str(fixtures["tunes"]),
        "PKG": str(fixtures["package"]),
    }
    code = main(["evaluate", *[places.get(a, a) for a in args], "--png", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert not (tmp_path / "x.png").exists()


def test_missing_matplotlib_says_what_to_install(fixtures, monkeypatch, tmp_path):
    from livegen.eval.sheet import draw_sheet

    evaluation = runner.run_evaluation(
        runner.EvalOptions(midi=fixtures["generated"], reference=str(fixtures["tunes"]), bars=4)
    )
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(LivegenError, match=r"pip install -e '\.\[eval\]'"):
        draw_sheet(evaluation, tmp_path / "x.png")


def test_a_block_model_reports_its_candidate_selection(fixtures, tmp_path):
    import shutil

    from livegen.models.registry import resolve_package

    package = tmp_path / "midigan"
    shutil.copytree(resolve_package("midigan"), package)
    manifest = package / "livegen.toml"
    manifest.write_text(manifest.read_text().replace('data = "corpus:folk"', 'data = "a folder"'))
    reports = {}
    for k in ("8", "1"):
        out = tmp_path / f"k{k}.json"
        args = ["evaluate", "--model", str(package), "--reference", str(fixtures["tunes"]), "--seeds", "6"]
        assert (
            main([*args, "--bars", "4", "--candidates", k, "--json", str(out), "--png", str(out.with_suffix(".png"))])
            == 0
        )
        reports[k] = json.loads(out.read_text())
    selection = reports["8"]["selection"]
    assert selection["candidates"] == 8 and selection["blocks"] >= 6
    assert 0 <= selection["candidate_fit"] <= selection["chosen_fit"] <= 1
    assert reports["1"]["selection"] == {}  # one candidate: nothing chosen
