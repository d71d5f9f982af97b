"""``livegen learn``: the preset update (comments kept, replace, create), the wait for a
moving control, the command's errors, and the whole command on a real JACK server."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

import pytest

from livegen.cli import main
from livegen.engine.controls import Binding, parse_controls
from livegen.engine.learn import Learned, check_preset, update_controls, wait_for_control, write_binding
from livegen.errors import ConfigError, LivegenError
from livegen.io.base import InputCallback, MemoryInput
from tests.jackutil import Peer

PRESET = """\
# My jam: a comment at the top stays.
[jam]
model = "folk-lstm"  # the model
bars = 4

[controls]
# knobs on my controller
top-p = 22   # the big knob
density = 23

[extra]
note = "kept"
"""


def test_binding_is_added_with_every_comment_and_table_kept() -> None:
    text, binding, replaced = update_controls(PRESET, "temperature", 21, 1)
    assert text == PRESET.replace("density = 23\n", "density = 23\ntemperature = 21\n")
    assert binding == Binding("temperature", 21)
    assert replaced == ()


def test_rebinding_a_parameter_replaces_it_in_place() -> None:
    text, _, replaced = update_controls(PRESET, "top_p", 30, 1)
    assert text == PRESET.replace("top-p = 22   # the big knob", "top-p = 30   # the big knob")
    assert replaced == ()


def test_a_cc_bound_to_another_parameter_moves_to_the_new_one() -> None:
    text, binding, replaced = update_controls(PRESET, "temperature", 22, 1)
    assert replaced == ("top-p",)
    assert binding == Binding("temperature", 22)
    assert text == PRESET.replace("top-p = 22   # the big knob\n", "").replace(
        "density = 23\n", "density = 23\ntemperature = 22\n"
    )
    assert parse_controls(tomllib.loads(text)["controls"], "x").bindings == {
        "density": Binding("density", 23),
        "temperature": Binding("temperature", 22),
    }


def test_a_controls_table_is_created_after_the_other_tables() -> None:
    before = "# mine\n[jam]\nbars = 8  # long answers\n"
    text, _, _ = update_controls(before, "panic", 64, 1)
    assert text == before + "\n[controls]\npanic = 64\n"
    assert update_controls("", "panic", 64, 1)[0] == "[controls]\npanic = 64\n"


@pytest.mark.parametrize(
    ("table", "channel", "written"),
    [
        ("", 1, "temperature = 21"),  # no map channel, channel 1: plain, counts on any channel
        ("", 2, "temperature = {cc = 21, channel = 2}"),
        ("channel = 2\n", 2, "temperature = 21"),  # the map's channel
        ("channel = 2\n", 1, "temperature = {cc = 21, channel = 1}"),
    ],
)
def test_channel_is_written_only_when_it_differs_from_the_map(table: str, channel: int, written: str) -> None:
    text, _, _ = update_controls(f"[controls]\n{table}", "temperature", 21, channel)
    assert text == f"[controls]\n{table}{written}\n"
    assert tomllib.loads(text)["controls"]["temperature"] == tomllib.loads(written)["temperature"]


def test_a_binding_on_another_channel_of_the_same_cc_is_kept() -> None:
    before = "[controls]\ntop-p = { cc = 21, channel = 3 }\n"
    text, _, replaced = update_controls(before, "temperature", 21, 2)
    assert replaced == ()
    assert text == before + "temperature = {cc = 21, channel = 2}\n"
    # but a plain binding (any channel) overlaps every channel
    text, _, replaced = update_controls(before, "temperature", 21, 1)
    assert replaced == ("top-p",)
    assert text == "[controls]\ntemperature = 21\n"


def test_write_binding_creates_the_file_and_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "new" / "mine.toml"
    learned = write_binding(path, "record", 45, 1)
    assert path.read_text() == "[controls]\nrecord = 45\n"
    assert learned == Learned(Binding("record", 45), 1, (), path, True)
    assert learned.describe() == f"record = CC 45 (channel 1) in {path} (new file)"


def test_write_binding_replaces_the_file_and_says_what_was_unbound(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(PRESET)
    learned = write_binding(path, "response-bars", 23, 1)
    assert learned.replaced == ("density",)
    assert not learned.created
    assert learned.describe() == (
        f"response-bars = CC 23 (channel 1) in {path}; CC 23 was bound to density, which is now unbound"
    )
    assert "response-bars = 23" in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["mine.toml"]  # no temporary file left


def test_unknown_parameter_lists_the_accepted_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        check_preset(tmp_path / "p.toml", "tempo")
    assert str(caught.value) == (
        "learn: parameter 'tempo' is unknown; accepted: temperature, top-p, density, response-bars, mode, model, "
        "panic, record"
    )


def test_preset_must_be_a_toml_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--preset default: expected a \.toml file"):
        check_preset(Path("default"), "temperature")
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(ConfigError, match="is not a file"):
        check_preset(tmp_path / "dir.toml", "temperature")


def test_an_invalid_controls_table_is_reported_before_listening(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("[controls]\ntemperature = 300\n")
    with pytest.raises(ConfigError, match=r"p\.toml: field 'controls\.temperature': expected a CC number 0-119"):
        check_preset(path, "top-p")
    path.write_text("[controls\n")
    with pytest.raises(ConfigError, match="not a readable TOML preset"):
        check_preset(path, "top-p")


def test_learning_model_needs_the_models_list(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    with pytest.raises(ConfigError, match=r"learning 'model' needs the list of models"):
        check_preset(path, "model")
    path.write_text('[controls]\nmodels = ["a", "b"]\n')
    check_preset(path, "model")
    assert update_controls(path.read_text(), "model", 5, 1)[0] == '[controls]\nmodels = ["a", "b"]\nmodel = 5\n'


# --- waiting for a control --------------------------------------------------------------


class ScriptedInput(MemoryInput):
    """Delivers its script as soon as a callback is set (as if played at once)."""

    def __init__(self, script: Sequence[Sequence[int]]) -> None:
        super().__init__("scripted")
        self.script = script

    def set_callback(self, callback: InputCallback) -> None:
        super().set_callback(callback)
        for message in self.script:
            self.inject(message)


def test_the_first_cc_that_changes_value_wins() -> None:
    script = [
        (0x90, 60, 100),  # notes are ignored
        (0xF8,),  # clock
        (0xB0, 21, 10),
        (0xB0, 22, 5),
        (0xB0, 21, 10),  # the same value again: not a move
        (0xB0, 123, 0),  # all notes off: a channel mode message
        (0xB0, 123, 1),
        (0x80, 60, 0),
        (0xB0, 21, 40),
        (0xB0, 22, 6),
    ]
    assert wait_for_control(ScriptedInput(script), timeout=1.0) == (21, 1)


def test_channels_are_told_apart() -> None:
    script = [(0xB1, 7, 5), (0xB2, 7, 9), (0xB2, 7, 9), (0xB1, 7, 6)]
    assert wait_for_control(ScriptedInput(script), timeout=1.0) == (7, 2)


def test_nothing_moving_times_out_with_a_message() -> None:
    with pytest.raises(LivegenError) as caught:
        wait_for_control(ScriptedInput([(0xB0, 21, 10), (0x90, 60, 100)]), timeout=0.2)
    assert str(caught.value) == (
        "learn: no control moved on MIDI input 'scripted' within 0.2 s (turn a knob, move a fader or press a "
        "button that sends CCs 0-119; notes and clock are ignored)"
    )


def test_command_reports_an_unknown_parameter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["learn", "tempo", "--preset", str(tmp_path / "p.toml")]) == 2
    assert "livegen: error: learn: parameter 'tempo' is unknown; accepted: temperature" in capsys.readouterr().err
    assert not (tmp_path / "p.toml").exists()


# --- on a real JACK server --------------------------------------------------------------


@pytest.mark.jack
@pytest.mark.slow
def test_learn_binds_the_cc_a_jack_client_moves(jack_server: str, tmp_path: Path) -> None:
    preset = tmp_path / "mine.toml"
    preset.write_text("# my preset\n[jam]\nbars = 2  # short answers\n")
    peer = Peer("send", "--name", "knobs")
    learner: subprocess.Popen[str] | None = None
    try:
        assert peer.expect("ready", timeout=30)["port"] == "knobs:knobs"
        learner = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "livegen",
                "learn",
                "temperature",
                "--preset",
                str(preset),
                "--midi-api",
                "jack",
                "--in",
                "knobs",
                "--timeout",
                "30",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=dict(os.environ),
        )
        assert learner.stdout is not None
        listening = learner.stdout.readline()
        assert listening.startswith("livegen: move the control for temperature on 'knobs:knobs"), (
            listening + learner.stderr.read() if learner.stderr else ""
        )
        peer.send([0x90, 60, 100])  # a note first: ignored
        peer.send([0xB0, 21, 10])
        peer.send([0xB0, 21, 40])
        out, err = learner.communicate(timeout=30)
    finally:
        if learner is not None and learner.poll() is None:
            learner.kill()
            learner.wait(5)
        peer.stop()
    assert learner.returncode == 0, err
    assert out == f"livegen: bound temperature = CC 21 (channel 1) in {preset}\n"
    assert preset.read_text() == "# my preset\n[jam]\nbars = 2  # short answers\n\n[controls]\ntemperature = 21\n"
