"""Item 8: start and footprint, from the ``livegen jam`` command to the first note, and
the jam's resident memory.

Context: setup (a benchmark; everything it measures runs in child processes).

- First note: a private JACK server (dummy driver) and a receiver in its own process
  (:mod:`benchmarks.jackpeer`, waiting for the port ``livegen:livegen``) are started
  first; then the clock is read and ``livegen jam --mode autonomous --midi-api jack
  --out livegen`` is started (the console script, a fresh interpreter). The figure is
  the receiver's stamp of the first note-on minus that reading: the whole cold start
  (interpreter, imports, package verification, the JACK client, the internal clock's
  300 ms lead-in) up to the note arriving at another program. Autonomous mode, because
  it plays at once; the other modes wait for a performer (or perform the seed phrase
  first, which only the built-in synth echoes).
- Memory: ``/proc/PID/status`` of the jam, polled every 20 ms: the peak ``VmHWM`` (the
  kernel's high-water mark of resident memory). Measured for that MIDI-port jam and for
  the default ``livegen jam`` with no sound card (call-and-response, the built-in synth
  rendering to a WAV file).
- Phases, in this process's own fresh child: import of the jam module and loading the
  bundled model (verification included), to say where the start time goes.

    python -m benchmarks.startup [--runs N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import JackServer, loadavg, percentile

PHASES = """
import json, time
t0 = time.perf_counter()
import livegen.engine.jam as jam
t1 = time.perf_counter()
jam.load_generator("folk-lstm")
t2 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "load_model_ms": (t2 - t1) * 1e3}))
"""


def _livegen() -> list[str]:
    script = Path(sys.executable).parent / "livegen"
    if script.exists():
        return [str(script)]
    found = shutil.which("livegen")
    return [found] if found else [sys.executable, "-m", "livegen"]


def _status_kb(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _watch(proc: subprocess.Popen[Any], timeout: float) -> tuple[int, dict[str, float]]:
    """Poll the process's peak resident memory (kB) until it exits, and the split of
    resident memory (anonymous, file-backed, shared memory such as JACK's, in MB) at the
    largest ``VmRSS`` seen."""
    peak = 0
    largest = 0
    split: dict[str, float] = {}
    give_up = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < give_up:
        hwm = _status_kb(proc.pid, "VmHWM")
        if hwm:
            peak = max(peak, hwm)
        rss = _status_kb(proc.pid, "VmRSS") or 0
        if rss > largest:
            largest = rss
            split = {
                f"{field}_mb": round((_status_kb(proc.pid, field) or 0) / 1024, 1)
                for field in ("RssAnon", "RssFile", "RssShmem")
            }
        time.sleep(0.02)
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    return peak, split


def first_note(server: JackServer, out_dir: Path, *, prelude: str | None = None) -> dict[str, Any]:
    """One cold start to the first note-on at a JACK receiver; the jam's peak RSS.

    ``prelude``: Python run before the command line in the jam's interpreter (to change a
    setting for a before/after comparison); the jam then starts as ``python -c``.
    """
    received = out_dir / "received.json"
    peer = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.jackpeer", "--port", "livegen:livegen", "--out", str(received)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=server.env(),
    )
    launcher = _livegen()
    if prelude is not None:
        launcher = [sys.executable, "-c", f"{prelude}\nimport sys\nfrom livegen.cli import main\nsys.exit(main())"]
    command = [
        *launcher,
        "jam",
        "--mode",
        "autonomous",
        "--midi-api",
        "jack",
        "--out",
        "livegen",
        "--max-seconds",
        "2.5",
        "--no-commands",
        "--out-dir",
        str(out_dir),
    ]
    try:
        time.sleep(0.3)  # the peer's interpreter and JACK client are up before the clock starts
        started = time.perf_counter_ns()
        jam = subprocess.Popen(command, env=server.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        peak_kb, split = _watch(jam, 60)
        output = jam.stdout.read() if jam.stdout else ""
        assert peer.stdout is not None and peer.stdin is not None
        ready = peer.stdout.readline()
        peer.stdin.write("stop\n")
        peer.stdin.flush()
        peer.stdout.readline()
        peer.wait(10)
        messages = json.loads(received.read_text()) if received.exists() else []
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.wait(5)
    ons = [m[0] for m in messages if len(m) >= 4 and m[1] & 0xF0 == 0x90 and m[3] > 0]
    result: dict[str, Any] = {"peak_rss_mb": round(peak_kb / 1024, 1), "rss_split": split, "exit": jam.returncode}
    if ons:
        result["first_note_s"] = round((ons[0] - started) / 1e9, 3)
    else:
        result["error"] = f"no note arrived; peer said {ready.strip()!r}; jam said {output[-500:]!r}"
    return result


def default_jam_memory(out_dir: Path) -> dict[str, Any]:
    """The plain ``livegen jam`` (no keyboard, no sound card: the synth renders a WAV)."""
    env = dict(os.environ)
    env.pop("JACK_DEFAULT_SERVER", None)
    env["JACK_NO_START_SERVER"] = "1"
    jam = subprocess.Popen(
        [*_livegen(), "jam", "--max-seconds", "4", "--no-commands", "--out-dir", str(out_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    peak_kb, split = _watch(jam, 90)
    output = jam.stdout.read() if jam.stdout else ""
    result: dict[str, Any] = {"peak_rss_mb": round(peak_kb / 1024, 1), "rss_split": split, "exit": jam.returncode}
    if jam.returncode != 0:
        result["output"] = output[-400:]
    return result


def phases() -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", PHASES], capture_output=True, text=True, timeout=120, check=False)
    try:
        return {k: round(v, 1) for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    except (ValueError, IndexError):
        return {"error": done.stderr[-300:]}  # type: ignore[dict-item]


def measure(runs: int = 5, *, quick: bool = False) -> dict[str, Any]:
    if quick:
        runs = 1
    out: dict[str, Any] = {"targets": {"first_note_s": 1.0, "rss_mb": 150.0}}
    with tempfile.TemporaryDirectory(prefix="livegen-bench-start-") as tmp:
        reason = JackServer.available()
        if reason:
            out["first_note"] = {"skipped": reason}
        else:
            starts = []
            with JackServer() as server:
                for k in range(runs):
                    run_dir = Path(tmp) / f"run{k}"
                    run_dir.mkdir()
                    starts.append(first_note(server, run_dir))
            times = [r["first_note_s"] for r in starts if "first_note_s" in r]
            out["first_note"] = {
                "runs": starts,
                "first_note_s_median": round(percentile(times, 0.5), 3) if times else None,
                "first_note_s_max": max(times) if times else None,
                "peak_rss_mb_max": max(r["peak_rss_mb"] for r in starts),
            }
        out["default_jam"] = default_jam_memory(Path(tmp))
    out["phases_ms"] = phases()
    out["loadavg"] = loadavg()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.runs, quick=args.quick), indent=2))


if __name__ == "__main__":
    main()
