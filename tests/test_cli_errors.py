"""Bad input gives one clear line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.pkgfactory import write_package


def livegen(*args, cwd=None):
    proc = subprocess.run(
        [sys.executable, "-m", "livegen", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture
def package_dir(tmp_path):
    return write_package(tmp_path / "pkg")


def render_args(package_dir, seed, tmp_path, *extra):
    return ("render", "--model", str(package_dir), "--seed-file", str(seed), "--bars", "2",
            "--out", str(tmp_path / "o.mid"), *extra)  # fmt: skip


def test_empty_seed_file(tmp_path, package_dir):
    seed = tmp_path / "empty.mid"
    seed.write_bytes(b"")
    proc = livegen(*render_args(package_dir, seed, tmp_path))
    assert proc.returncode == 2
    assert re.search(r"empty\.mid: the file is empty \(0 bytes\)", proc.stderr)
    assert not (tmp_path / "o.mid").exists()


def test_truncated_seed_file(tmp_path, package_dir):
    good = (package_dir / "seed.mid").read_bytes()
    seed = tmp_path / "cut.mid"
    seed.write_bytes(good[: len(good) - 9])
    proc = livegen(*render_args(package_dir, seed, tmp_path))
    assert proc.returncode == 2
    assert "cut.mid: not a readable Standard MIDI File" in proc.stderr


def test_package_with_changed_byte(tmp_path, package_dir):
    model = package_dir / "model.onnx"
    data = bytearray(model.read_bytes())
    data[100] ^= 0xFF
    model.write_bytes(bytes(data))
    proc = livegen(*render_args(package_dir, package_dir / "seed.mid", tmp_path))
    assert proc.returncode == 2
    assert "model.onnx: checksum mismatch" in proc.stderr


def test_manifest_with_wrong_tensor_name(tmp_path):
    def rename(table):
        table["graphs"]["step"]["outputs"][1]["name"] = "delta"

    folder = write_package(tmp_path / "bad", mutate=rename)
    proc = livegen("models", "verify", str(folder))
    assert proc.returncode == 2
    assert "graphs.step.outputs" in proc.stderr and "'delta'" in proc.stderr


def test_missing_soundfont(tmp_path, package_dir):
    proc = livegen(*render_args(package_dir, package_dir / "seed.mid", tmp_path, "--wav", str(tmp_path / "o.wav"),
                                "--soundfont", str(tmp_path / "nope.sf2")))  # fmt: skip
    assert proc.returncode == 2
    assert "nope.sf2" in proc.stderr and "timgm6mb-soundfont" in proc.stderr


def test_unknown_model_name(tmp_path):
    proc = livegen("models", "info", "no-such-model")
    assert proc.returncode == 2
    assert "model 'no-such-model'" in proc.stderr and "bundled:" in proc.stderr


def test_bad_preset_field(tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text("[jam]\ntempo = 'fast'\n")
    proc = livegen("jam", "--preset", str(preset))
    assert proc.returncode == 2
    assert "field 'jam.tempo': expected int or float" in proc.stderr
    preset.write_text("[jam]\ntempi = 120\n")
    proc = livegen("jam", "--preset", str(preset))
    assert "field 'jam.tempi' is unknown" in proc.stderr


def test_the_host_never_imports_torch(tmp_path, package_dir):
    script = (
        "import sys, pkgutil, importlib, livegen\n"
        "from livegen.cli import main\n"
        f"code = main(['render', '--model', {str(package_dir)!r}, '--seed-file', {str(package_dir / 'seed.mid')!r},"
        f" '--bars', '1', '--out', {str(tmp_path / 'o.mid')!r}])\n"
        "for m in pkgutil.walk_packages(livegen.__path__, 'livegen.'):\n"
        "    if m.name != 'livegen.__main__':\n"
        "        importlib.import_module(m.name)\n"
        "print(code, 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split()[-2:] == ["0", "False"], proc.stderr


def test_pitch_range_and_key_mistakes(tmp_path, package_dir):
    proc = livegen(*render_args(package_dir, package_dir / "seed.mid", tmp_path, "--key", "H major"))
    assert proc.returncode == 2 and "key 'H major'" in proc.stderr
    proc = livegen(*render_args(package_dir, package_dir / "seed.mid", tmp_path, "--pitch-range", "80"))
    assert proc.returncode == 2 and "expected LOW-HIGH" in proc.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--tempo", "-5"), "--tempo -5: expected 20 to 400 BPM"),
        (("--tempo", "0"), "--tempo 0: expected 20 to 400 BPM"),
        (("--tempo", "5000"), "--tempo 5000: expected 20 to 400 BPM"),
        (("--tempo", "nan"), "--tempo nan: expected 20 to 400 BPM"),
        (("--rng-seed", "-1"), "--rng-seed -1: expected a whole number of 0 or more"),
        (("--out", "y.wav"), "--out y.wav: expected a MIDI file name ending in .mid or .midi (the audio goes to --wav"),
        (("--wav", "y.mid"), "--wav y.mid: expected a WAV file name ending in .wav"),
    ],
)
def test_render_refuses_values_out_of_range_and_writes_nothing(tmp_path, package_dir, extra, message):
    proc = livegen(*render_args(package_dir, package_dir / "seed.mid", tmp_path, *extra), cwd=tmp_path)
    assert proc.returncode == 2 and f"livegen: error: {message}" in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--rng-seed", "-1"), "--rng-seed -1: expected a whole number of 0 or more"),
        (("--max-seconds", "nan"), "--max-seconds nan: expected more than 0 seconds"),
        (("--max-seconds", "-2"), "--max-seconds -2: expected more than 0 seconds"),
        (("--record", "take.wav"), "--record take.wav: expected a MIDI file name ending in .mid or .midi"),
    ],
)
def test_jam_refuses_values_out_of_range_before_it_starts(tmp_path, extra, message):
    proc = livegen("jam", "--out", "none", "--no-commands", *extra, cwd=tmp_path)
    assert proc.returncode == 2 and f"livegen: error: {message}" in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_preset_cannot_replace_a_file_outside_its_out_dir(tmp_path):
    (tmp_path / "x").mkdir()
    victim = tmp_path / "x" / "passwd"
    victim.write_text("root:x:0:0\n")
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    (work / "p.toml").write_text('[jam]\nrecord = "../../../x/passwd"\nmax-seconds = 1\noutputs = ["none"]\n')
    proc = livegen("jam", "--preset", "p.toml", "--no-commands", cwd=work)
    assert proc.returncode == 2, proc.stderr
    assert "p.toml: field 'jam.record': '../../../x/passwd' leaves the jam's out-dir" in proc.stderr
    assert victim.read_text() == "root:x:0:0\n"


def test_models_info_and_verify_print_a_manifests_control_characters_escaped(tmp_path):
    def hostile(table):
        table["description"] = "tune\x1b[2J\n2030-01-01 ERROR forged"
        table["version"] = "1.0\x1b]0;pwned\x07"
        table.setdefault("training", {})["corpus"] = "folk\rOVERWRITTEN"

    folder = write_package(tmp_path / "pkg", mutate=hostile)
    for args in (("models", "info", str(folder)), ("models", "verify", str(folder))):
        proc = livegen(*args)
        assert proc.returncode == 0, proc.stderr
        assert not any(c in proc.stdout for c in "\x1b\x07\r"), proc.stdout
        assert "test-rnn 1.0\\x1b]0;pwned\\x07" in proc.stdout
    info = livegen("models", "info", str(folder)).stdout
    assert "test-rnn 1.0\\x1b]0;pwned\\x07: tune\\x1b[2J\\n2030-01-01 ERROR forged\n" in info
    assert "training corpus: folk\\rOVERWRITTEN\n" in info
    assert not any(line.startswith("2030") for line in info.splitlines())
