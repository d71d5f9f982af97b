"""Typed commands: a mistyped or out-of-range line is answered with what is accepted, and the jam goes on."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from livegen.engine.commands import CommandReader, parse_command
from livegen.engine.controls import ControlChange
from livegen.engine.live import LiveParams
from livegen.errors import ConfigError
from tests.pkgfactory import write_package

LIVE = LiveParams(temperature_range=(0.1, 2.0))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("mode jazz", "mode 'jazz': expected one of call-response, accompany, autonomous"),
        ("temperature 99", "temperature 99: expected 0.1 to 2 (what the model accepts)"),
        ("temperature nan", "temperature nan: expected 0.1 to 2"),
        ("top-p 0", "top-p 0: expected 0.05 to 1"),
        ("density 9", "density 9: expected 0.25 to 4 (a multiplier of notes per beat)"),
        ("bars 0", "bars 0: expected 1 to 256 bars"),
        ("bars 2.5", "bars '2.5': expected a whole number of bars"),
        ("temperature warm", "temperature 'warm': expected a number"),
        ("tempo 90", "command 'tempo 90' not understood; commands: mode"),
    ],
)
def test_a_bad_line_says_what_is_wrong_and_what_is_accepted(line, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        parse_command(line, LIVE)


def test_values_in_range_become_control_changes():
    assert parse_command("temperature 2", LIVE) == ControlChange("temperature", 2.0)
    assert parse_command("bars 8", LIVE) == ControlChange("response_bars", 8)
    assert parse_command("mode accompany", LIVE) == ControlChange("mode", "accompany")
    assert parse_command("  ", LIVE) is None


def test_the_reader_goes_on_after_a_bad_line(capsys):
    posted: list[ControlChange] = []
    quit_called: list[bool] = []
    lines = io.StringIO("mode jazz\ntemperature 99\ndensity 2\nquit\n")
    reader = CommandReader(posted.append, lambda: quit_called.append(True), LIVE, lines)
    reader.start()
    reader.join(5)
    assert posted == [ControlChange("density", 2.0)] and quit_called == [True]
    err = capsys.readouterr().err
    assert "livegen: mode 'jazz': expected one of" in err and "livegen: temperature 99: expected 0.1 to 2" in err


def test_a_jam_given_a_mistyped_mode_plays_on_to_its_summary(tmp_path):
    package = write_package(tmp_path / "pkg")
    proc = subprocess.run(
        [sys.executable, "-m", "livegen", "jam", "--model", str(package), "--mode", "autonomous",
         "--seed-file", str(package / "seed.mid"), "--out", "none", "--commands", "--max-seconds", "3",
         "--out-dir", str(tmp_path / "out")],
        input="mode jazz\ntemperature 99\ndensity 2\n", capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "mode 'jazz': expected one of call-response, accompany, autonomous" in proc.stderr
    assert "temperature 99: expected" in proc.stderr
    assert "live: density = 2" in proc.stdout  # the good line after the bad ones was applied
    assert "temperature" not in proc.stdout.split("live:", 1)[-1]  # 99 was not clamped to the maximum
    assert "MIDI recording" in proc.stdout
