"""Presets: the shipped ones load as documented; every bad field names the file, the field, the value
and what is accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from livegen.engine.preset import PRESET_DIR, make_config
from livegen.errors import ConfigError


def test_shipped_presets_load_with_what_their_comments_promise():
    jam = make_config("jam", {})
    assert (jam.mode, jam.clock, jam.outputs) == ("call-response", "internal", ("livegen", "synth"))
    assert jam.controls is not None and jam.controls.bindings["panic"].cc == 26
    daw = make_config("daw", {})
    assert (daw.mode, daw.clock, daw.input, daw.outputs) == ("accompany", "midi", "virtual", ("livegen",))
    assert (daw.lookahead_beats, daw.commit_beats, daw.listen_beats) == (4.0, 2.0, 8.0)
    installation = make_config("installation", {})
    assert (installation.mode, installation.outputs, installation.yield_to) == (
        "autonomous",
        ("synth",),
        "call-response",
    )
    assert installation.autosave_seconds == 60 and installation.out_dir == Path("out/installation").resolve()
    assert sorted(p.stem for p in PRESET_DIR.glob("*.toml")) == ["daw", "default", "installation", "jam"]


def test_command_line_overrides_the_preset():
    config = make_config("daw", {"mode": "autonomous", "listen_beats": None})
    assert config.mode == "autonomous" and config.listen_beats == 8.0


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "p.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[jam]\nmood = 'happy'\n", r"field 'jam.mood' is unknown; accepted: .*autosave-seconds"),
        ("[jam]\nbars = 'four'\n", r"field 'jam.bars': expected int, got 'four'"),
        ("[jam]\nclock-out = 1\n", r"field 'jam.clock-out': expected bool, got 1"),
        ("[jam]\ntempo = true\n", r"field 'jam.tempo': expected int or float, got True"),
        ("[jam]\nmode = 'solo'\n", r"p.toml: --mode 'solo': expected one of call-response, accompany, autonomous"),
        ("[jam]\nclock = 'ptp'\n", r"--clock 'ptp': expected one of internal, midi, link"),
        ("[jam]\ndensity = 9\n", r"--density 9: expected 0.25 to 4"),
        ("[jam]\ncandidates = 0\n", r"--candidates 0: expected 1 to 64"),
        ("[jam]\ncandidates = 'many'\n", r"field 'jam.candidates': expected int, got 'many'"),
        ("[jam]\ntranspose = 'up'\n", r"transpose 'up': expected off, follow or semitones"),
        ("[jam]\ncommit-beats = 6\n", r"commit horizon 6 and lookahead 4.0 beats"),
        ("[jam]\nreseed = 'never'\n", r"reseed 'never': expected one of recent, seed"),
        ("[jam]\n[sound]\ngain = 1\n", r"unknown table\(s\) \['sound'\]"),
        ("[controls]\ntemperature = 200\n", r"controls.temperature"),
        ("[jam\n", r"not a readable TOML preset"),
    ],
)
def test_bad_fields_are_named_with_what_is_accepted(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        make_config(write(tmp_path, text), {})


def test_unknown_preset_lists_the_bundled_ones():
    with pytest.raises(
        ConfigError, match="preset 'gig': no such file; bundled presets: daw, default, installation, jam"
    ):
        make_config("gig", {})


# --- where a preset may write ------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working directory with livegen's recordings folder ``out/`` and a file outside it."""
    work = tmp_path / "work"
    (work / "out").mkdir(parents=True)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "passwd").write_text("root:x:0:0\n")
    monkeypatch.chdir(work)
    return work


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('record = "../../../x/passwd"', r"field 'jam.record': '\.\./\.\./\.\./x/passwd' leaves the jam's out-dir"),
        ('record = "../take.mid"', r"field 'jam.record': .* leaves the jam's out-dir"),
        ('record = "/tmp/take.mid"', r"field 'jam.record': '/tmp/take\.mid' is absolute; a preset names a file "
                                     r"inside the jam's out-dir, such as 'take\.mid'"),
        ('log-file = "/var/log/livegen.log"', r"field 'jam.log-file': '/var/log/livegen\.log' is absolute"),
        ('log_file = "../../evil.log"', r"field 'jam.log_file': '\.\./\.\./evil\.log' leaves the jam's out-dir"),
        ('out-dir = "/etc"', r"field 'jam.out-dir': '/etc' is absolute; a preset names a folder inside out/"),
        ('out-dir = "../elsewhere"', r"field 'jam.out-dir': '\.\./elsewhere' leaves out/ of the working directory"),
        ('out-dir = "gig"\nrecord = "../../x.mid"', r"field 'jam.record': .* leaves the jam's out-dir \(.*out/gig\)"),
    ],
)  # fmt: skip
def test_a_preset_writes_only_inside_its_out_dir(workdir, text, match):
    preset = workdir / "p.toml"
    preset.write_text(f"[jam]\n{text}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"p\.toml: {match}.*on the command line may name any path"):
        make_config(str(preset), {})
    assert (workdir.parent / "x" / "passwd").read_text() == "root:x:0:0\n"


def test_a_symlink_out_of_the_out_dir_is_refused_too(workdir):
    outside = workdir.parent / "x"
    (workdir / "out" / "link").symlink_to(outside, target_is_directory=True)
    (workdir / "out" / "take.mid").symlink_to(outside / "passwd")
    preset = workdir / "p.toml"
    for text in ('record = "link/passwd"', 'record = "take.mid"', 'log-file = "link/l.log"', 'out-dir = "link"'):
        preset.write_text(f"[jam]\n{text}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=r"p\.toml: field 'jam\.(record|log-file|out-dir)': .* leaves"):
            make_config(str(preset), {})


def test_preset_paths_resolve_inside_the_out_dir_and_the_command_line_names_any(workdir, tmp_path):
    preset = workdir / "p.toml"
    preset.write_text('[jam]\nrecord = "takes/a.mid"\nlog-file = "livegen.log"\n', encoding="utf-8")
    config = make_config(str(preset), {})
    out = (workdir / "out").resolve()
    assert (config.out_dir.resolve(), config.record, config.log_file) == (out, out / "takes/a.mid", out / "livegen.log")
    preset.write_text('[jam]\nout-dir = "gig"\nrecord = "a.mid"\nlog-file = "gig.log"\n', encoding="utf-8")
    config = make_config(str(preset), {})
    assert (config.out_dir, config.record, config.log_file) == (out / "gig", out / "gig/a.mid", out / "gig/gig.log")
    # the command line's --out-dir is the folder the preset's files go into; --record may be anywhere
    elsewhere = tmp_path / "elsewhere"
    config = make_config(str(preset), {"out_dir": elsewhere})
    assert (config.record, config.log_file) == (elsewhere.resolve() / "a.mid", elsewhere.resolve() / "gig.log")
    config = make_config(str(preset), {"record": tmp_path / "x" / "take.mid"})
    assert config.record == tmp_path / "x" / "take.mid"


# --- ranges ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("rng-seed = -1", r"--rng-seed -1: expected a whole number of 0 or more"),
        ("max-seconds = nan", r"--max-seconds nan: expected more than 0 seconds"),
        ("max-seconds = -3", r"--max-seconds -3: expected more than 0 seconds"),
        ("max-seconds = 0", r"--max-seconds 0: expected"),
        ("max-seconds = inf", r"--max-seconds inf: expected"),
        ("echo-channel = 32", r"echo-channel 32: expected 0 to 15 \(MIDI channels 1 to 16\)"),
        ("echo-channel = -1", r"echo-channel -1: expected 0 to 15"),
        ("model-program = 300", r"model-program 300: expected 0 to 127 \(General MIDI program numbers\)"),
        ("echo-program = -1", r"echo-program -1: expected 0 to 127 \(General MIDI program numbers\)"),
        ("tempo = 0", r"--tempo 0: expected 20 to 400 BPM"),
        ("record = 'take.wav'", r"--record .*take\.wav: expected a MIDI file name ending in \.mid or \.midi"),
    ],
)
def test_values_out_of_range_are_named(tmp_path, text, match):
    with pytest.raises(ConfigError, match=rf"p\.toml: {match}"):
        make_config(write(tmp_path, f"[jam]\n{text}\n"), {})


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"rng_seed": -1}, r"--rng-seed -1: expected a whole number of 0 or more"),
        ({"max_seconds": float("nan")}, r"--max-seconds nan: expected"),
        ({"max_seconds": -1.0}, r"--max-seconds -1: expected"),
    ],
)
def test_command_line_values_out_of_range_are_named(overrides, match):
    with pytest.raises(ConfigError, match=match):
        make_config(None, overrides)


def test_a_preset_nested_500_deep_is_a_named_error(tmp_path):
    text = "[jam]\nmodel = " + "[" * 500 + "]" * 500 + "\n"
    with pytest.raises(ConfigError, match=r"p\.toml: not a readable TOML preset \(.*nested too deeply"):
        make_config(write(tmp_path, text), {})
