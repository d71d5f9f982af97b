"""The health endpoint: /healthz follows the scheduler's heartbeat, /metrics is Prometheus text with the
values the engine holds, nothing but loopback is served, and a running jam answers on both."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from livegen.engine.health import (
    Counters,
    HealthServer,
    ModelIdentity,
    Vitals,
    check_health_address,
    model_identity,
    supervise,
)
from livegen.engine.preset import make_config
from livegen.engine.scheduler import Scheduler
from livegen.errors import ConfigError
from livegen.io.base import MemoryOutput
from livegen.models.registry import resolve_package
from tests.pkgfactory import write_package

S = 1_000_000_000
FOLK_MANIFEST = resolve_package("folk-lstm") / "livegen.toml"
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse the text format strictly: every sample's family has # HELP then # TYPE before it."""
    assert text.endswith("\n")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    helped, typed = set(), {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert name not in helped, f"two HELP lines for {name}"
            helped.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name in helped and name not in typed, line
            assert kind in ("counter", "gauge")
            typed[name] = kind
        else:
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name = match["name"]
            assert name in typed, f"{name} has no # TYPE before it"
            labels = tuple(LABEL.findall(match["labels"] or ""))
            samples[(name, labels)] = float(match["value"])
    for name, kind in typed.items():
        assert name.startswith("livegen_"), name
        if kind == "counter":
            assert name.endswith("_total"), name
    return samples


def fetch(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


# ---- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("port", [-1, 65536, 100000, True, "9742", 9742.0])
def test_bad_ports_are_refused_with_what_is_accepted(port):
    with pytest.raises(ConfigError, match=r"--health-port .*: expected a TCP port from 1 to 65535 .* or 0"):
        check_health_address("127.0.0.1", port)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.1", "example.com", "", "127.0.0.1.5"])
def test_hosts_other_than_loopback_are_refused(host):
    with pytest.raises(ConfigError, match=r"--health-host .*loopback interface only: 127\.0\.0\.1"):
        check_health_address(host, 9742)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost", "LOCALHOST"])
def test_loopback_hosts_are_accepted(host):
    check_health_address(host, 9742)


def test_preset_mistakes_name_the_file_and_the_field(tmp_path):
    preset = tmp_path / "p.toml"
    for text, match in [
        ("health-port = 70000", r"p\.toml: --health-port 70000: expected a TCP port"),
        ("health-port = '9742'", r"field 'jam.health-port': expected int, got '9742'"),
        ("health-host = '0.0.0.0'", r"p\.toml: --health-host '0\.0\.0\.0': the health endpoint has no authentication"),
    ]:
        preset.write_text(f"[jam]\n{text}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=match):
            make_config(str(preset), {})


def test_the_installation_preset_turns_the_endpoint_on_and_ordinary_jams_do_not():
    assert make_config("installation", {}).health_port == 9742
    assert make_config("jam", {}).health_port == 0 and make_config(None, {}).health_port == 0
    assert make_config("installation", {"health_port": 0}).health_port == 0


def test_a_port_in_use_is_a_clear_error():
    vitals = Vitals(Scheduler([], tick_of=lambda ns: 0))
    first = HealthServer(vitals, port=0)
    try:
        with pytest.raises(ConfigError, match=rf"--health-port {first.port}: cannot listen on 127\.0\.0\.1:"):
            HealthServer(vitals, port=first.port)
    finally:
        first.close()


def test_the_cli_refuses_a_non_loopback_host_before_loading_anything():
    proc = subprocess.run(
        [sys.executable, "-m", "livegen", "jam", "--health-port", "9742", "--health-host", "0.0.0.0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--health-host '0.0.0.0': the health endpoint has no authentication" in proc.stderr


# ---- the endpoint over fixed readings -----------------------------------------------------------


class FakeSynth:
    class _Stats:
        underflows = 5

    def stats(self):
        return self._Stats()


class EngineLike:
    late_steps = 3
    input_dropped = 11


class KeeperLike:
    reconnects = 4


class WorkerLike:
    restarts = 2


class ModelHolder:
    model = "folk-lstm"


@pytest.fixture
def rig():
    """A scheduler that never runs (its readings are set by hand), its vitals on a manual clock, and
    the endpoint on an ephemeral port."""
    port_out = MemoryOutput()
    port_out.errors = 6
    sched = Scheduler([[port_out], [MemoryOutput()], []], tick_of=lambda ns: 0, rt_priority=None)
    now = [1000 * S]
    engine, keeper, worker = EngineLike(), KeeperLike(), WorkerLike()
    counters = Counters(
        late_steps=lambda: engine.late_steps,
        input_dropped=lambda: engine.input_dropped,
        reconnects=lambda: keeper.reconnects,
        restarts=lambda: worker.restarts,
    )
    holder = ModelHolder()
    identity = model_identity(FOLK_MANIFEST.parent)
    vitals = Vitals(
        sched,
        counters=counters,
        synth=FakeSynth(),
        model=identity,
        model_source=holder,
        stale_after_s=2.0,
        clock=lambda: now[0],
    )
    server = HealthServer(vitals, port=0)
    server.start()
    yield sched, now, keeper, holder, vitals, server
    server.close()


def test_healthz_follows_the_heartbeat(rig):
    sched, now, _, _, vitals, server = rig
    assert fetch(server.url + "/healthz")[:2] == (503, "text/plain; charset=utf-8")
    assert "the scheduler has not started" in fetch(server.url + "/healthz")[2]
    sched.heartbeat_ns = now[0] - S // 2
    assert fetch(server.url + "/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
    now[0] += 3 * S
    status, _, body = fetch(server.url + "/healthz")
    assert status == 503 and "stuck: the scheduler's loop has not turned for 3.500 s (limit 2 s)" in body
    sched.heartbeat_ns = now[0]
    assert fetch(server.url + "/healthz")[0] == 200
    vitals.stopping = True
    assert fetch(server.url + "/healthz")[:1] == (503,) and "stopping" in fetch(server.url + "/healthz")[2]


def test_metrics_hold_what_the_engine_holds(rig):
    sched, now, keeper, _, _, server = rig
    sched.heartbeat_ns = now[0] - 250_000_000
    sched.stats.sent, sched.stats.late, sched.stats.max_late_ns, sched.stats.realtime = 120, 7, 3_500_000, True
    for data in [(0x90, 60, 100), (0x90, 64, 100), (0x91, 67, 90), (0x80, 60, 0)]:
        sched.tracker.observe(0, data)  # livegen: 64 and 67 still sound
    sched.tracker.observe(1, (0x91, 50, 80))  # the performer's echo: 50 sounds
    status, kind, text = fetch(server.url + "/metrics")
    assert status == 200 and kind == "text/plain; version=0.0.4; charset=utf-8"
    m = parse_metrics(text)
    assert m[("livegen_scheduler_heartbeat_age_seconds", ())] == pytest.approx(0.25)
    assert m[("livegen_healthy", ())] == 1 and m[("livegen_scheduler_realtime", ())] == 1
    assert m[("livegen_sent_messages_total", ())] == 120 and m[("livegen_late_sends_total", ())] == 7
    assert m[("livegen_max_late_send_seconds", ())] == pytest.approx(0.0035)
    assert m[("livegen_late_steps_total", ())] == 3
    assert m[("livegen_input_dropped_total", ())] == 11
    assert m[("livegen_xruns_total", ())] == 5  # the synth's underflows
    assert m[("livegen_port_losses_total", ())] == 0  # nothing in this jam counts them
    assert m[("livegen_reconnects_total", ())] == 4
    assert m[("livegen_worker_restarts_total", ())] == 2
    assert m[("livegen_send_errors_total", ())] == 6
    assert m[("livegen_sounding_notes", (("group", "model"),))] == 2
    assert m[("livegen_sounding_notes", (("group", "echo"),))] == 1
    with open("/proc/self/statm") as statm:
        rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    assert abs(m[("livegen_resident_memory_bytes", ())] - rss) < 64 * 2**20
    assert m[("livegen_peak_resident_memory_bytes", ())] >= 0.5 * rss
    assert abs(m[("livegen_start_time_seconds", ())] - time.time()) < 60
    sha = hashlib.sha256(FOLK_MANIFEST.read_bytes()).hexdigest()
    assert m[("livegen_model_info", (("name", "folk-lstm"), ("version", "1.2.0"), ("sha256", sha)))] == 1
    # the engine counts on: the next scrape says so
    keeper.reconnects += 1
    sched.stats.late += 1
    m = parse_metrics(fetch(server.url + "/metrics")[2])
    assert m[("livegen_reconnects_total", ())] == 5 and m[("livegen_late_sends_total", ())] == 8


def test_before_the_scheduler_starts_the_heartbeat_age_is_nan(rig):
    m = parse_metrics(fetch(rig[5].url + "/metrics")[2])
    assert math.isnan(m[("livegen_scheduler_heartbeat_age_seconds", ())]) and m[("livegen_healthy", ())] == 0


def test_unknown_paths_are_404_and_head_has_no_body(rig):
    server = rig[5]
    status, _, body = fetch(server.url + "/metrics/../admin")
    assert status == 404 and "livegen serves /healthz and /metrics" in body
    assert fetch(server.url + "/")[0] == 404
    assert fetch(server.url + "/healthz?verbose=1")[0] == 503  # a query does not change the path
    request = urllib.request.Request(server.url + "/metrics", method="HEAD")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200 and int(response.headers["Content-Length"]) > 100 and response.read() == b""


def test_a_swapped_model_is_hashed_once_and_an_unknown_one_says_so(rig, tmp_path):
    _, _, _, holder, vitals, server = rig
    package = write_package(tmp_path / "pkg")
    holder.model = str(package)
    m = parse_metrics(fetch(server.url + "/metrics")[2])
    sha = hashlib.sha256((package / "livegen.toml").read_bytes()).hexdigest()
    assert m[("livegen_model_info", (("name", "test-rnn"), ("version", "0.0.1"), ("sha256", sha)))] == 1
    holder.model = "no-such-model"
    m = parse_metrics(fetch(server.url + "/metrics")[2])
    assert m[("livegen_model_info", (("name", "no-such-model"), ("version", ""), ("sha256", "unknown")))] == 1
    assert set(vitals._identities) == {"folk-lstm", str(package), "no-such-model"}


def test_label_values_are_escaped(rig):
    _, _, _, _, vitals, server = rig
    vitals.model_source = None
    vitals.model = ModelIdentity('odd "name"\\', "1\n2", "0" * 64)
    text = fetch(server.url + "/metrics")[2]
    assert 'livegen_model_info{name="odd \\"name\\"\\\\",version="1\\n2",sha256="' + "0" * 64 + '"} 1' in text
    m = parse_metrics(text)
    assert any(name == "livegen_model_info" for name, _ in m)


def test_a_silent_client_delays_no_one(rig):
    server = rig[5]
    idle = socket.create_connection((server.host, server.port))  # connects and never sends a request
    try:
        started = time.monotonic()
        assert fetch(server.url + "/healthz")[0] == 503
        assert time.monotonic() - started < 1.0
    finally:
        idle.close()


def test_model_identity_of_a_folder_and_of_a_zip_is_the_manifest_checksum(tmp_path):
    package = write_package(tmp_path / "pkg")
    archive = tmp_path / "pkg.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in package.rglob("*"):
            zf.write(path, Path("pkg") / path.relative_to(package))
    sha = hashlib.sha256((package / "livegen.toml").read_bytes()).hexdigest()
    assert model_identity(package) == ModelIdentity("test-rnn", "0.0.1", sha)
    assert model_identity(archive) == ModelIdentity("test-rnn", "0.0.1", sha)


def test_supervise_without_a_port_serves_nothing_and_with_one_serves_until_closed(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    sched = Scheduler([], tick_of=lambda ns: 0)
    with supervise(sched, port=0) as quiet:
        assert quiet.server is None and quiet.vitals.stale_after_s == 2.0
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    monkeypatch.setenv("WATCHDOG_USEC", "6000000")
    with supervise(sched, port=port) as loud:
        assert loud.server is not None and loud.vitals.stale_after_s == 3.0  # half the watchdog interval
        assert fetch(f"http://127.0.0.1:{port}/healthz")[0] == 503
        loud.stopping()
        assert "stopping" in fetch(f"http://127.0.0.1:{port}/healthz")[2]
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


# ---- a running jam ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_a_running_jam_answers_healthz_and_metrics(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "livegen", "jam", "--out", "none", "--mode", "autonomous", "--max-seconds", "4",
         "--health-port", str(port), "--out-dir", str(tmp_path / "out")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, healthy = time.monotonic() + 60, None
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                healthy = fetch(url + "/healthz")
            except urllib.error.URLError:
                healthy = None  # not listening yet
            if healthy is not None and healthy[0] == 200:
                break
            time.sleep(0.05)
        assert healthy is not None and healthy[0] == 200 and healthy[2] == "ok\n", healthy
        time.sleep(1.0)  # let it play a little
        m = parse_metrics(fetch(url + "/metrics")[2])
    finally:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"health endpoint: http://127.0.0.1:{port}/healthz" in out
    assert 0 <= m[("livegen_scheduler_heartbeat_age_seconds", ())] < 1.0
    assert m[("livegen_healthy", ())] == 1
    assert m[("livegen_sent_messages_total", ())] > 0  # it plays, even with no outputs
    assert m[("livegen_late_steps_total", ())] >= 0 and m[("livegen_xruns_total", ())] == 0
    assert m[("livegen_sounding_notes", (("group", "echo"),))] == 0
    assert 20 * 2**20 < m[("livegen_resident_memory_bytes", ())] < 2**31
    sha = hashlib.sha256(FOLK_MANIFEST.read_bytes()).hexdigest()
    assert m[("livegen_model_info", (("name", "folk-lstm"), ("version", "1.2.0"), ("sha256", sha)))] == 1
    with pytest.raises(urllib.error.URLError):  # the port is released when the jam ends
        urllib.request.urlopen(url + "/healthz", timeout=2)


def test_aborted_connections_log_one_line_not_a_traceback(rig, capfd, caplog):
    server = rig[5]
    caplog.set_level(logging.INFO, logger="livegen.engine.health")
    for i in range(32):  # a slow-connection run: clients that reset mid-request
        client = socket.create_connection((server.host, server.port))
        client.sendall(b"GET /metrics HTTP/1.0\r\n" if i % 2 else b"GET /met")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # a reset, not a polite close
    assert fetch(server.url + "/healthz")[0] == 503  # still answering
    server.close()
    assert "Traceback" not in capfd.readouterr().err
    lines = [r for r in caplog.records if "connection" in r.getMessage()]
    assert lines and all(r.exc_info is None and "\n" not in r.getMessage() for r in lines)
    assert len(lines) <= 3  # rate-limited: the first, then a count of the rest
    assert "ended early" in lines[0].getMessage()
