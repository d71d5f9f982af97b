"""The quality gate's figures on hand-made answers: a drone, a silence, a collapse, wrong keys."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
import tomlkit

from livegen.cli import main
from livegen.errors import PackageError
from livegen.eval import failure
from livegen.eval.gate import RULES, Check, Figure, GateOptions, GateResult, failure_checks
from livegen.eval.gate_report import record_gate
from livegen.eval.ngram import NGram, slices
from livegen.eval.stream import NoteStream
from livegen.models.manifest import MANIFEST, parse_manifest
from livegen.models.package import load_package
from livegen.models.registry import experimental_warning, gate_text, resolve_package
from livegen.music.events import Note
from livegen.music.time import PPQN

BAR = 4 * PPQN
C_MAJOR = (0, "major")


def notes(*rows: tuple[int, int, int]) -> list[Note]:
    return [Note(pitch=p, velocity=80, start=s, duration=d) for p, s, d in rows]


def stream(ns: list[Note], bars: int = 4, beats: int = 4) -> NoteStream:
    return NoteStream.from_notes(ns, beats_per_bar=beats, length=bars * beats * PPQN)


def scale_line(bars: int) -> list[Note]:
    pitches = [60, 62, 64, 65, 67, 69, 71, 72]
    return notes(*[(pitches[(i * 3 + i // 4) % 8], i * PPQN, PPQN) for i in range(bars * 4)])


def drone(bars: int) -> list[Note]:
    return notes(*[(p, b * BAR, BAR) for b in range(bars) for p in (60, 64, 67, 72)])


def test_a_drone_restruck_every_bar_is_one_long_run_of_identical_bars() -> None:
    s = stream(drone(8), bars=8)
    assert failure.identical_bar_run(s) == 8
    assert failure.distinct_bars(s) == pytest.approx(1 / 8)
    assert failure.groove(s) == 1.0
    moving = stream(scale_line(8), bars=8)
    assert failure.identical_bar_run(moving) == 1
    assert failure.distinct_bars(moving) == 1.0


def test_silence_is_empty_beats_and_empty_bars_are_identical() -> None:
    s = stream(notes((60, 0, PPQN)), bars=4)
    figures = failure.answer_figures(s, C_MAJOR)
    assert figures["empty_beats"] == pytest.approx(15 / 16)
    assert figures["identical_bar_run"] == 3  # bars 2-4 are the same (empty) bar
    assert figures["notes_per_beat"] == pytest.approx(1 / 16)


def test_key_repeats_and_top_line() -> None:
    s = stream(
        notes((60, 0, PPQN), (61, PPQN, PPQN), (61, 2 * PPQN, PPQN), (72, 3 * PPQN, PPQN), (48, 3 * PPQN, PPQN)), bars=1
    )
    figures = failure.answer_figures(s, C_MAJOR)
    assert figures["in_key"] == pytest.approx(3 / 5)
    assert figures["repeated_pitch"] == pytest.approx(1 / 3)  # top line 60 61 61 72
    assert figures["top_line_interval"] == pytest.approx((1 + 0 + 11) / 3)


def test_cross_phrase_overlap_sees_a_collapse() -> None:
    collapsed = [stream(drone(4)) for _ in range(4)]
    assert failure.cross_phrase_overlaps(collapsed) == pytest.approx(np.ones(4))
    varied = [stream(notes(*[(60 + k + i % 3, i * PPQN, PPQN) for i in range(16)])) for k in range(0, 40, 10)]
    assert failure.cross_phrase_overlaps(varied).max() == 0.0


def test_groove_counts_changed_onset_positions() -> None:
    # bar 1: onsets on every beat; bar 2: on beats 1 and 3 only -> 2 of 16 positions differ
    s = stream(notes(*[(60, i * PPQN, PPQN) for i in range(4)], (60, BAR, PPQN), (60, BAR + 2 * PPQN, PPQN)), bars=2)
    assert failure.groove(s) == pytest.approx(1 - 2 / 16)


def test_a_three_four_bar_is_three_beats() -> None:
    waltz = notes(*[(60 + (i % 3), i * PPQN, PPQN) for i in range(12)])
    s = stream(waltz, bars=4, beats=3)
    assert failure.identical_bar_run(s) == 4  # the same three notes every bar
    assert failure.bar_contents(s)[0] == frozenset({(0, 60), (4, 61), (8, 62)})


def test_checks_hold_a_drone_to_the_truths_band() -> None:
    rng = np.random.default_rng(0)
    model = {name: failure.answer_figures(stream(drone(8), bars=8), C_MAJOR)[name] for name in failure.ANSWER_FIGURES}
    truth = {
        name: failure.answer_figures(stream(scale_line(8), bars=8), C_MAJOR)[name] for name in failure.ANSWER_FIGURES
    }
    figures = {n: (Figure.of(np.array([model[n]]), rng), Figure.of(np.array([truth[n]]), rng)) for n in model}
    checks = {c.name: c for c in failure_checks("accompany", figures)}
    assert not checks["identical_bar_run"].passed
    assert not checks["distinct_bars"].passed
    assert not checks["repeated_pitch"].passed  # the drone's top line repeats 72 every bar
    assert checks["in_key"].passed
    assert "cross_phrase_overlap" not in checks  # only judged on answers
    assert set(checks) == set(RULES) - {"cross_phrase_overlap"}


def test_ngram_learns_a_tune_and_continues_it() -> None:
    tune = notes(*[(60 + (i % 5), i * PPQN // 2, PPQN // 2) for i in range(64)])
    model = NGram.fit_notes([tune])
    assert model.nll([slices(tune)]) < 0.1
    shuffled = list(tune)
    np.random.default_rng(1).shuffle(shuffled)
    reordered = [
        Note(pitch=n.pitch, velocity=80, start=i * PPQN // 2, duration=PPQN // 2) for i, n in enumerate(shuffled)
    ]
    assert model.nll([slices(reordered)]) > 1.0
    answer = model.continue_(tune[:8], 2 * BAR, np.random.default_rng(0))
    assert answer[0].pitch == 63  # after ... 60 61 62 comes 63
    # interpolation keeps some mass on the unigram, so a stray note may come; the cycle's steps dominate
    steps = [(b.pitch - 60) == (a.pitch - 60 + 1) % 5 for a, b in itertools.pairwise(answer)]
    assert len(answer) == 16 and sum(steps) >= 12
    assert [n.start for n in answer] == [i * PPQN // 2 for i in range(16)]


def test_ngram_interpolation_is_a_distribution() -> None:
    model = NGram.fit([[1, 2, 3, 1, 2, 4], [2, 3, 3]], order=3)
    for history in ([], [1], [1, 2], [9, 9]):
        p = model.distribution([model.index[h] for h in history if h in model.index])
        assert p.sum() == pytest.approx(1.0)
        assert (p > 0).all()


def _result(passed: bool) -> GateResult:
    checks = [
        Check("identical_bar_run", "call-response", 1.2, (1.0, 1.4), "<= truth+1", 1.1, True),
        Check("in_key", "accompany", 0.5 if not passed else 0.9, (0.4, 0.6), ">= truth-0.07", 0.95, passed),
    ]
    return GateResult("m", GateOptions("m"), 16, "src", {}, {}, None, checks)


def test_a_recorded_failure_marks_the_package_experimental(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "folk-copy"
    shutil.copytree(resolve_package("folk-lstm"), folder)
    record_gate(folder, _result(passed=False))
    gate = parse_manifest(folder / MANIFEST).gate
    assert gate is not None and gate.experimental
    assert (gate.passed, gate.checks, gate.failed) == (1, 2, ("in_key (accompany)",))
    load_package(folder)  # checksums still hold: the card's was renewed, the manifest is not among [files]
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert "## Quality gate" in card and "**experimental**: 1 of 2 checks passed" in card
    assert "| in key | accomp | 0.50 | 0.40-0.60 | 0.95 | >= truth-0.07 | **FAIL** |" in card
    assert experimental_warning(str(folder)) == (
        f"{folder} is experimental: it failed the quality gate (EXPERIMENTAL 1/2); its model card says how"
    )
    record_gate(folder, _result(passed=True))
    assert experimental_warning(str(folder)) is None
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert card.count("## Quality gate") == 1 and "**passed**: all 2 checks" in card  # the section is replaced
    assert card.index("## Quality gate") > card.index("## Evaluation")  # the card's own sections stay
    load_package(folder)
    assert gate_text(parse_manifest(folder / MANIFEST).gate) == "passed 2/2"


def test_a_gate_table_with_a_wrong_status_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "pkg"
    shutil.copytree(resolve_package("folk-lstm"), folder)
    manifest = folder / MANIFEST
    document = tomlkit.parse(manifest.read_text(encoding="utf-8"))
    document["gate"] = {"status": "great", "passed": 1, "checks": 2}  # the bundled package has its own
    manifest.write_text(tomlkit.dumps(document), encoding="utf-8")
    with pytest.raises(PackageError, match=r"gate.*status.*passed or experimental"):
        parse_manifest(manifest)


def test_models_list_has_a_header_and_marks_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["model", "family", "kind", "version", "quality"]
    assert any(line.startswith("* folk-lstm ") for line in lines)
