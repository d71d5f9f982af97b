"""One option table: a jam option declared once on JamConfig is a command-line option, a preset key,
a range check and (where live) a typed command, and all of them refuse a value with the same words."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest

from livegen.cli import build_parser
from livegen.engine.commands import parse_command
from livegen.engine.config import JamConfig
from livegen.engine.live import LiveParams
from livegen.engine.options import Bounds, add_arguments, check_bounds, declared, given, live_verbs, option
from livegen.engine.preset import make_config
from livegen.errors import ConfigError


def jam_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["jam", *argv])


def refusal(call) -> str:
    with pytest.raises(ConfigError) as caught:
        call()
    return str(caught.value)


@pytest.mark.parametrize(
    ("flag", "key", "verb", "value", "accepted"),
    [
        ("--density", "density", "density", "9", "9: expected 0.25 to 4 (a multiplier of notes per beat)"),
        ("--bars", "bars", "bars", "0", "0: expected 1 to 256 bars"),
    ],
)
def test_a_range_is_refused_with_the_same_words_everywhere(tmp_path, flag, key, verb, value, accepted):
    preset = tmp_path / "p.toml"
    preset.write_text(f"[jam]\n{key} = {value}\n", encoding="utf-8")
    from_command_line = refusal(lambda: make_config(None, given(jam_args(flag, value), JamConfig)))
    from_preset = refusal(lambda: make_config(str(preset), {}))
    typed = refusal(lambda: parse_command(f"{verb} {value}", LiveParams()))
    assert from_command_line == f"{flag} {accepted}"
    assert from_preset.endswith(f"{flag} {accepted} (in [jam] or on the command line)")
    assert typed == f"{verb} {accepted}"


def test_every_option_with_a_flag_is_on_the_command_line_with_its_default_in_the_help(capsys):
    parsed = vars(jam_args())
    flagged = [d for d in declared(JamConfig) if d.option.flag is not None]
    assert len(flagged) >= 40 and all(d.name in parsed and parsed[d.name] is None for d in flagged)
    with pytest.raises(SystemExit):
        jam_args("--help")
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--listen LISTEN_BEATS beats accompany listens before it plays (default 8)" in help_text
    assert "--worker, --no-worker" in help_text


def test_a_switch_a_preset_turns_on_is_turned_off_on_the_command_line(tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text("[jam]\nworker = true\nclock-out = true\n", encoding="utf-8")
    config = make_config(str(preset), given(jam_args("--no-worker", "--no-clock-out"), JamConfig))
    assert (config.worker, config.clock_out) == (False, False)
    assert make_config(str(preset), given(jam_args(), JamConfig)).worker is True


@dataclass(frozen=True)
class Toy:
    """A config class of two options, to show that declaring a field is all an option needs."""

    speed: float = option(1.0, "--speed", "how fast", bounds=Bounds(0, 2, low_open=True), live="speed")
    where: Path | None = option(None, "--where", "a folder", metavar="DIR")
    hidden: int = option(3, None, "a preset-only number", bounds=Bounds(1, 5))

    def __post_init__(self) -> None:
        check_bounds(self)


def test_a_new_field_declared_as_an_option_appears_everywhere():
    parser = argparse.ArgumentParser()
    add_arguments(parser, Toy)
    args = parser.parse_args(["--speed", "1.5", "--where", "x"])
    assert given(args, Toy) == {"speed": 1.5, "where": Path("x"), "hidden": None}
    assert "how fast (default 1)" in parser.format_help() and "--hidden" not in parser.format_help()
    assert set(live_verbs(Toy)) == {"speed"}
    assert refusal(lambda: Toy(speed=0)) == "--speed 0: expected more than 0 and at most 2"
    assert refusal(lambda: Toy(hidden=9)) == "hidden 9: expected 1 to 5"
    assert refusal(lambda: Toy(speed=float("nan"))) == "--speed nan: expected more than 0 and at most 2"
