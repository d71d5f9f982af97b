"""The live synth through a real JACK server (dummy driver): the twin tells the truth.

The test starts its own ``jackd -d dummy`` under a unique name and stops it by PID.
PortAudio reads ``$JACK_DEFAULT_SERVER`` when it initialises (at ``import
sounddevice``), so the synth and the capture each run in a child process with that
variable set; they are separate JACK clients, so JACK runs the synth before the
capture in every cycle and the capture sees each block in the cycle it was made.

Timing: both children stamp every callback with ``perf_counter_ns()`` (one system-wide
monotonic clock). The capture's frame ``i`` is processed at ``c0 + i / rate`` (``c0``
from the earliest callbacks), and the synth's output of that cycle leaves the DAC
``output_latency_ns`` later, so the onset the capture hears corresponds to a DAC time
that must match the planned deadline.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.test_synth import _attack, detect_onsets

SR = 48_000
PERIOD = 128
REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.jack, pytest.mark.slow]

SYNTH = r"""
import json, sys, time
from livegen.io.synth import LiveSynth

synth = LiveSynth(reverb=False, chorus=False)
synth.start()
print("READY", json.dumps({"device": synth.device_name}), flush=True)
sys.stdin.readline()
time.sleep(0.2)  # let the graph settle after the connections
before = synth.stats()
now = time.perf_counter_ns()
deadline = now + 300_000_000
synth.schedule(deadline, [0x90, 72, 110])
synth.schedule(deadline + 200_000_000, [0x80, 72, 0])
# A held organ note, then a panic while it sounds: it must stop at once.
held = deadline + 600_000_000
synth.send_now([0xC1, 19])
synth.schedule(held, [0x91, 60, 100])
time.sleep((held - now) / 1e9 + 0.3)
panic_ns = time.perf_counter_ns()
synth.panic()
time.sleep(0.4)
report = {
    "deadline_ns": deadline,
    "held_ns": held,
    "panic_ns": panic_ns,
    "latency_ns": synth.output_latency_ns,
    "block_ns": synth.block_ns,
    "stats": synth.stats().__repr__(),
    "late": synth.stats().late,
    "underflows_before": before.underflows,
    "underflows": synth.stats().underflows - before.underflows,
    "callbacks": synth.stats().callbacks,
    "callback_errors": synth.stats().callback_errors,
}
synth.close()
print("REPORT", json.dumps(report), flush=True)
"""


def _jack_env(server: str) -> dict[str, str]:
    env = dict(os.environ)
    env["JACK_DEFAULT_SERVER"] = server
    env["JACK_NO_AUDIO_RESERVATION"] = "1"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def jack_server(tmp_path: Path) -> Iterator[str]:
    if shutil.which("jackd") is None or shutil.which("jack_connect") is None:
        pytest.skip("jackd / jack_connect not installed (Debian package jackd2)")
    # Short on purpose: jackd2 1.9.21's jack_lsp aborts (heap corruption) with a 24-character server name.
    name = f"lg-{os.getpid()}-{secrets.token_hex(3)}"
    log = (tmp_path / "jackd.log").open("w")
    proc = subprocess.Popen(
        ["jackd", "-n", name, "-d", "dummy", "-r", str(SR), "-p", str(PERIOD)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_jack_env(name),
    )
    try:
        ready = subprocess.run(
            ["jack_wait", "-s", name, "-w", "-t", "10"], env=_jack_env(name), capture_output=True, timeout=15
        )
        if ready.returncode != 0 or proc.poll() is not None:
            pytest.fail(f"jackd did not start: {(tmp_path / 'jackd.log').read_text()}")
        yield name
    finally:
        proc.terminate()  # only the jackd this fixture started
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def _child(program: list[str], args: list[str], server: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *program, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_jack_env(server),
        cwd=REPO,
    )


def _expect(proc: subprocess.Popen[str], word: str, timeout: float = 20.0) -> str:
    assert proc.stdout is not None
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        line = proc.stdout.readline()
        if line.startswith(word):
            return line[len(word) :].strip()
        if not line and proc.poll() is not None:
            break
    proc.kill()
    _, err = proc.communicate(timeout=5)
    pytest.fail(f"child did not say {word}: {err[-3000:]}")


def _ports(server: str) -> list[str]:
    out = subprocess.run(["jack_lsp", "-s", server], env=_jack_env(server), capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, f"jack_lsp failed: {out.stderr}"
    return out.stdout.splitlines()


def _connect(server: str, src: str, dst: str) -> None:
    subprocess.run(["jack_connect", "-s", server, src, dst], env=_jack_env(server), check=True, timeout=10)


def _measure(server: str, capture_file: Path) -> dict[str, Any]:
    """One run: capture child, synth child, connect synth -> capture, play, panic; the synth's report."""
    capture = _child(["-m", "benchmarks.jack_capture"], [str(capture_file), "4"], server)
    synth = None
    try:
        _expect(capture, "READY")
        capture_ports = [p for p in _ports(server) if p.endswith((":in_0", ":in_1"))]
        synth = _child(["-c", SYNTH], [], server)
        _expect(synth, "READY")
        synth_ports = [p for p in _ports(server) if p.endswith((":out_0", ":out_1"))]
        assert len(capture_ports) == 2 and len(synth_ports) == 2, _ports(server)
        for src, dst in zip(sorted(synth_ports), sorted(capture_ports), strict=True):
            _connect(server, src, dst)
        assert synth.stdin is not None
        synth.stdin.write("GO\n")
        synth.stdin.flush()
        report: dict[str, Any] = json.loads(_expect(synth, "REPORT"))
        synth.wait(timeout=10)
        assert capture.stdin is not None
        capture.stdin.write("STOP\n")
        capture.stdin.flush()
        _expect(capture, "DONE")
        capture.wait(timeout=10)
        return report
    finally:
        for proc in (synth, capture):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)


def test_live_synth_onset_through_jack_is_on_time_and_panic_silences(jack_server: str, tmp_path: Path) -> None:
    # An underflow (xrun) re-anchors the synth's clock and spoils the timing figure. On a
    # loaded two-core machine a 2.7 ms period sometimes overruns; that is the machine, so
    # the measurement is repeated (at most five times, ~3 s each) until one run is clean
    # (no underflow in the synth's whole life).
    # Our callback is not the cause: it takes 0.15-0.3 ms of the 2.7 ms (max_callback_ns),
    # and PortAudio flags an xrun of any JACK client (the capture too) on every stream.
    reports = []
    for attempt in range(5):
        capture_file = tmp_path / f"capture-{attempt}.npz"
        report = _measure(jack_server, capture_file)
        reports.append(report)
        # Clean: no xrun at any time in the synth's life, not only during the note (an
        # xrun during warm-up re-anchors the clock and was seen to spoil the figure by 20 ms).
        if report["underflows"] == 0 and report["underflows_before"] == 0:
            break
    else:
        pytest.fail(f"every run had an underflow: {[r['stats'] for r in reports]}")

    assert report["callbacks"] > 100 and report["callback_errors"] == 0, report["stats"]
    assert report["late"] == 0, report["stats"]
    deadline_ns, held_ns, panic_ns, latency_ns = (
        int(report[k]) for k in ("deadline_ns", "held_ns", "panic_ns", "latency_ns")
    )

    data = np.load(capture_file)
    audio, marks = data["audio"], data["marks"]
    # Wall time of capture frame i: c0 + i / rate, with c0 from the earliest callbacks in
    # the half second before. Local, because under load the dummy driver's timeline can
    # slip (a late timer wake-up is not caught up), and a slip before then must not count.
    offsets = marks[:, 0] - marks[:, 1] * 1_000_000_000 // SR

    def wall(frame: int) -> int:
        near = (marks[:, 1] > frame - SR // 2) & (marks[:, 1] <= frame)
        return int(offsets[near].min()) + frame * 1_000_000_000 // SR

    onsets = detect_onsets(audio)
    assert onsets, "the capture heard nothing"
    onset = onsets[0]
    attack = _attack(72, 110, reverb=False, chorus=False)
    heard_dac_ns = wall(onset - attack) + latency_ns
    error_frames = (heard_dac_ns - deadline_ns) * SR / 1e9
    print(f"\nJACK onset error {error_frames:+.1f} frames (attack {attack} removed), attempt {attempt + 1}: {report}")
    # Allowed: fluidsynth's 64-frame grid (0..63 late) plus one JACK period either way for
    # the wall-clock stamps (callback wake-up jitter, the synth running before the capture).
    assert -PERIOD <= error_frames <= 64 + PERIOD, (onsets, report)

    # The held note sounds until the panic, and is silent a few periods after the panic.
    peaks = np.abs(audio[: len(audio) // PERIOD * PERIOD]).reshape(-1, PERIOD, 2).max(axis=(1, 2))

    def period_at(t_ns: int) -> int:
        guess = onset + (t_ns - deadline_ns) * SR // 1_000_000_000  # near enough to pick the window
        return int(guess + (t_ns - wall(guess)) * SR // 1_000_000_000) // PERIOD

    held = period_at(held_ns - latency_ns)
    panic = period_at(panic_ns)
    assert peaks[held + 20 : panic - 1].min() > 1e-3, "the held note should sound until the panic"
    assert peaks[panic + 4 :].max() < 1e-4, "the panic should silence everything within 4 periods"
