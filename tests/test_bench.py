"""The benchmark suite's smoke test: ``livegen bench`` runs and writes well-formed JSON.

Benchmarks are not tests: nothing here asserts a timing. It checks that the command
and the items' quick modes produce the report's keys, and that a wrong item name is a
one-line error with exit status 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import suite
from livegen.cli import main


def test_every_issue_item_is_in_the_suite() -> None:
    assert sorted(i.number for i in suite.ITEMS) == list(range(1, 11))
    assert [i.key for i in suite.select(["4,inference"])] == ["reaction", "inference"]


def test_an_unknown_item_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--only", "nine"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("livegen: error: --only: unknown benchmark item(s) nine") and "\n" not in err


def test_quick_reaction_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--only", "reaction", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {"machine", "items", "ran", "skipped", "not_selected", "table", "quick"} <= set(report)
    assert report["quick"] is True and report["ran"] == ["4:reaction"]
    assert {"cpu", "cores", "loadavg", "python"} <= set(report["machine"])
    models = report["items"]["4:reaction"]["models"]
    assert "folk-lstm" in models
    folk = models["folk-lstm"]
    assert folk["kind"] == "step" and folk["reaction_n"] > 0
    assert 0 < folk["reaction_p50_ms"] <= folk["reaction_p99_ms"] <= folk["reaction_max_ms"]
    assert any(row["figure"].startswith("reaction folk-lstm") for row in report["table"])
    assert "7:peer" in report["not_selected"]
    assert "ran: 4:reaction" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.jack
def test_quick_onset_reports_inside_errors() -> None:
    from benchmarks import onset

    result = onset.measure(quick=True, hog=False)
    if "skipped" in result:  # only without a usable jackd (the benchmark says which: not installed, will not start)
        pytest.skip(result["skipped"])
    idle = result["idle"]
    assert idle["events"] >= 600
    assert {"p50_ms", "p99_ms", "max_ms", "n"} <= set(idle["inside"])
    assert idle["inside"]["n"] == idle["events"]


@pytest.mark.slow
def test_whole_quick_suite(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert len(report["ran"]) + len(report["skipped"]) == len(suite.ITEMS)
