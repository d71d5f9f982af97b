"""The systemd units in deploy/: notify type with a watchdog the scheduler's heartbeat can keep fed, a
restart policy, an ExecStart that runs a preset which exists, and no hardening that breaks audio."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from livegen.engine.notify import READY_POLL_S
from livegen.engine.preset import PRESET_DIR, make_config
from livegen.engine.scheduler import BEAT_NS

ROOT = Path(__file__).resolve().parents[1]
UNITS = {"system": ROOT / "deploy" / "livegen.service", "user": ROOT / "deploy" / "livegen-user.service"}


def read_unit(path: Path) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    unit.read_string(path.read_text(encoding="utf-8"))
    return unit


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min|ms)?", value.strip())
    assert match, f"not a time span: {value!r}"
    scale = {"s": 1, "sec": 1, None: 1, "min": 60, "ms": 0.001}[match[2]]
    return float(match[1]) * scale


@pytest.mark.parametrize("kind", sorted(UNITS))
def test_the_unit_is_notify_with_a_watchdog_and_restarts_on_failure(kind):
    service = read_unit(UNITS[kind])["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    watchdog = seconds(service["WatchdogSec"])
    # keep-alives go out while the heartbeat is younger than half the interval; the scheduler
    # beats every BEAT_NS, so half the interval must leave room for several beats
    assert watchdog / 2 >= 4 * BEAT_NS / 1e9 and watchdog / 4 > READY_POLL_S
    assert service["Restart"] == "on-failure" and seconds(service["RestartSec"]) >= 1
    assert seconds(service["TimeoutStopSec"]) >= 10  # time to write the recording on the way out


@pytest.mark.parametrize("kind", sorted(UNITS))
def test_exec_start_runs_the_venv_livegen_with_a_preset_that_exists(kind):
    service = read_unit(UNITS[kind])["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/.venv/bin/livegen") and argv[1] == "jam"
    assert argv[0].startswith(service["WorkingDirectory"])
    preset = argv[argv.index("--preset") + 1]
    assert (PRESET_DIR / f"{preset}.toml").is_file() or (ROOT / preset).is_file()
    config = make_config(preset, {})
    assert config.mode == "autonomous" and config.health_port > 0 and config.log_file is not None
    assert config.commands is False  # no terminal under systemd


def test_the_system_unit_runs_as_a_dedicated_audio_user_and_keeps_audio_and_realtime():
    unit = read_unit(UNITS["system"])
    service = unit["Service"]
    assert service["User"] == "livegen" and "audio" in service["SupplementaryGroups"].split()
    assert int(service["LimitRTPRIO"]) >= 5  # the scheduler asks SCHED_FIFO priority 5
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"].split() == [f"{service['WorkingDirectory']}/out"]  # where the preset writes
    for breaks_audio in ("PrivateDevices", "RestrictRealtime", "MemoryDenyWriteExecute", "DynamicUser"):
        assert breaks_audio not in service, breaks_audio
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    user = read_unit(UNITS["user"])
    assert "User" not in user["Service"] and user["Install"]["WantedBy"] == "default.target"


@pytest.mark.parametrize("kind", sorted(UNITS))
def test_systemd_accepts_every_line(kind, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (no systemd here); the other unit-file tests still ran")
    text = UNITS[kind].read_text(encoding="utf-8")
    # point the paths at this checkout, so verify can check the command exists
    text = text.replace("/opt/livegen", str(ROOT)).replace("%h/livegen", str(ROOT))
    if not (ROOT / ".venv" / "bin" / "livegen").exists():
        pytest.skip("ExecStart names .venv/bin/livegen, which `make setup` creates; this checkout was set up otherwise")
    copy = tmp_path / "livegen.service"
    copy.write_text(text, encoding="utf-8")
    proc = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (proc.stdout + proc.stderr).splitlines() if "livegen.service" in line]
    assert proc.returncode == 0 and complaints == [], proc.stdout + proc.stderr
