"""The log file: rotated at its size cap so the logs stay bounded, bad settings named, and a jam writes
its log and report there."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from livegen.cli import main
from livegen.engine.logfile import check_log_file, rotating_handler
from livegen.engine.preset import make_config
from livegen.errors import ConfigError


def test_logging_past_the_cap_rotates_and_the_total_stays_bounded(tmp_path):
    path = tmp_path / "livegen.log"
    handler = rotating_handler(path, max_bytes=4096, backups=2)
    logger = logging.getLogger("livegen.test-rotation")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        for i in range(2000):  # about 200 kB of records through a 4 kB cap
            logger.info("record %05d %s", i, "x" * 60)
    finally:
        logger.removeHandler(handler)
        handler.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["livegen.log", "livegen.log.1", "livegen.log.2"]
    sizes = [(tmp_path / name).stat().st_size for name in files]
    assert all(0 < size <= 4096 for size in sizes), sizes
    assert sum(sizes) <= 3 * 4096
    newest, oldest_kept = (tmp_path / "livegen.log").read_text(), (tmp_path / "livegen.log.2").read_text()
    assert "record 01999" in newest and "record 00000" not in oldest_kept
    first_kept = int(oldest_kept.split("record ")[1][:5])
    assert first_kept > 1900  # only the most recent records survive, in order
    assert "INFO livegen.test-rotation: record" in newest  # with time, level and logger


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"path": "missing/livegen.log"}, r"--log-file .*missing/livegen\.log: the folder .*missing does not exist"),
        ({"path": "."}, r"--log-file .*: is a folder; expected a file name such as"),
        ({"max_bytes": 100}, r"--log-max-bytes 100: expected a size cap of at least 1024 bytes"),
        ({"max_bytes": True}, r"--log-max-bytes True: expected a size cap"),
        ({"backups": 0}, r"--log-backups 0: expected 1 to 100 rotated files to keep"),
        ({"backups": 101}, r"--log-backups 101: expected 1 to 100"),
    ],
)
def test_bad_settings_say_what_is_accepted(tmp_path, kwargs, match):
    args = {"path": "livegen.log", "max_bytes": 5_000_000, "backups": 3, **kwargs}
    with pytest.raises(ConfigError, match=match):
        check_log_file(tmp_path / args["path"], args["max_bytes"], args["backups"])


def test_a_log_file_in_the_out_dir_creates_it_and_elsewhere_the_folder_must_exist(tmp_path):
    out_dir = tmp_path / "out" / "installation"
    check_log_file(out_dir / "livegen.log", 4096, 1, out_dir=out_dir)  # livegen creates the out-dir
    handler = rotating_handler(out_dir / "livegen.log", 4096, 1, out_dir=out_dir)
    handler.close()
    assert out_dir.is_dir()
    with pytest.raises(ConfigError, match="does not exist"):
        check_log_file(tmp_path / "elsewhere" / "livegen.log", 4096, 1, out_dir=out_dir)


def test_a_log_file_that_cannot_be_opened_is_a_clear_error(tmp_path):
    (tmp_path / "plain").write_text("x")
    with pytest.raises(ConfigError, match=r"--log-file .*plain/livegen\.log: .*plain is a file, not a folder"):
        check_log_file(tmp_path / "plain" / "livegen.log", 4096, 1)
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc here: no folder that refuses even root")
    # /proc exists and refuses new files to everyone, root included
    with pytest.raises(ConfigError, match=r"--log-file /proc/livegen-test\.log: cannot be opened for writing \("):
        rotating_handler(Path("/proc/livegen-test.log"))


def test_a_presets_log_file_is_inside_its_out_dir_and_mistakes_name_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out" / "gig" / "logs").mkdir(parents=True)
    preset = tmp_path / "p.toml"
    preset.write_text(
        '[jam]\nout-dir = "gig"\nlog-file = "logs/jam.log"\nlog-max-bytes = 2048\nlog-backups = 1\n', encoding="utf-8"
    )
    config = make_config(str(preset), {})
    log_file = tmp_path.resolve() / "out" / "gig" / "logs" / "jam.log"
    assert (config.log_file, config.log_max_bytes, config.log_backups) == (log_file, 2048, 1)
    preset.write_text('[jam]\nlog-file = "nowhere/jam.log"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"p\.toml: --log-file .*nowhere/jam\.log: the folder .* does not exist"):
        make_config(str(preset), {})


def test_the_installation_preset_logs_into_its_out_dir():
    config = make_config("installation", {})
    assert config.log_file == config.out_dir / "livegen.log"
    assert (config.log_max_bytes, config.log_backups) == (5_000_000, 3)


def test_the_cli_names_a_log_folder_that_does_not_exist(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "livegen", "jam", "--log-file", str(tmp_path / "no" / "such" / "x.log")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"--log-file {tmp_path}/no/such/x.log: the folder {tmp_path}/no/such does not exist" in proc.stderr


@pytest.mark.slow
def test_a_jam_writes_its_log_and_report_to_the_file_and_leaves_logging_as_it_was(tmp_path, capsys):
    root = logging.getLogger()
    before = (root.level, list(root.handlers), [h.level for h in root.handlers])
    log_file = tmp_path / "jam.log"
    code = main(
        ["jam", "--out", "none", "--mode", "autonomous", "--max-seconds", "1", "--no-worker",
         "--out-dir", str(tmp_path / "out"), "--log-file", str(log_file), "--log-max-bytes", "2048",
         "--log-backups", "1"]
    )  # fmt: skip
    assert code == 0
    text = log_file.read_text()
    assert "INFO livegen.report: jamming with folk-lstm (autonomous)" in text
    assert "INFO livegen.report: MIDI recording: " in text
    assert "livegen: jamming with folk-lstm" in capsys.readouterr().out
    assert (root.level, list(root.handlers), [h.level for h in root.handlers]) == before
    # a mistake that ends the jam is in the log too
    code = main(["jam", "--out", "none", "--model", "no-such-model", "--log-file", str(log_file)])
    assert code == 2
    assert "ERROR livegen.report: error: model 'no-such-model'" in log_file.read_text()


FORGED = "2030-01-01 00:00:00,000 ERROR livegen: FORGED"


def test_a_newline_in_a_preset_string_cannot_forge_a_log_record(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    preset = tmp_path / "p.toml"
    preset.write_text(
        f'[jam]\nmodel = "folk-lstm\\n{FORGED}\\u001b[2J"\nlog-file = "jam.log"\noutputs = ["none"]\n'
        "commands = false\n",
        encoding="utf-8",
    )
    assert main(["jam", "--preset", str(preset), "--max-seconds", "1"]) == 2  # no such model
    text = (tmp_path / "out" / "jam.log").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) == 2 and all(line.startswith(lines[0][:4]) and "FORGED" in line for line in lines), text
    assert not any(line.startswith(FORGED) for line in lines) and "\x1b" not in text
    assert f"jamming with folk-lstm\\n{FORGED}\\x1b[2J (call-response)" in lines[0]
    printed = capsys.readouterr()
    assert f"livegen: jamming with folk-lstm\\n{FORGED}\\x1b[2J" in printed.out
    assert FORGED not in printed.out.replace("\\n" + FORGED, "") and "\x1b" not in printed.out + printed.err


def test_every_record_of_the_log_file_starts_its_own_line_whatever_it_holds(tmp_path):
    handler = rotating_handler(tmp_path / "livegen.log", 4096, 1)
    logger = logging.getLogger("livegen.test-escape")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("model %s swapped", "evil\r\nFAKE\x1b]0;title\x07\u202e")
        try:
            raise ValueError(f"bad\n{FORGED}")
        except ValueError:
            logger.exception("step failed")
    finally:
        logger.removeHandler(handler)
        handler.close()
    lines = (tmp_path / "livegen.log").read_text(encoding="utf-8").splitlines()
    records = [line for line in lines if not line.startswith(" ")]
    assert len(records) == 2, lines  # a traceback's lines are indented under its record
    assert records[0].endswith("model evil\\r\\nFAKE\\x1b]0;title\\x07\\u202e swapped")
    assert records[1].endswith("step failed")
    assert lines[-2:] == ["    ValueError: bad", f"    {FORGED}"]  # under its record, never at the margin
