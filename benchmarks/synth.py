"""Item 3: the built-in synth's onset error, offline (in samples) and through real-time JACK.

Context: setup (a benchmark; the real-time part runs in child processes).

Onsets are found in the audio: the first frame above -40 dBFS after 20 ms below
-54 dBFS. The SoundFont's attack delays that crossing by a fixed amount per note, which
is measured on the note rendered alone (on a 64-frame boundary) and removed.

- Offline (``render_offline``, the code a jam without a sound card uses): notes at
  planned frames chosen off and on fluidsynth's 64-frame grid. Reported: the error
  against the plan (fluidsynth starts a voice at its next internal 64-frame block, so
  0..63 frames is expected) and against that exact expectation (0 expected).
- Real time: a capture client and a ``LiveSynth`` (PortAudio on a private JACK server,
  dummy driver, 128 frames at 48 kHz) in two processes, synth -> capture connected;
  the synth schedules notes at absolute ``perf_counter_ns`` deadlines; the capture
  stamps each callback, which maps captured frames to wall time; with the synth's
  output latency added, the onset heard is compared with the deadline. At most one
  audio block (128 frames) is the target, on top of fluidsynth's 64-frame grid.

    python -m benchmarks.synth [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import JACK_PERIOD, JACK_RATE, JackServer, loadavg

SR = 48_000
FLUID_BLOCK = 64
PITCH, VELOCITY = 72, 110
NOTE_NS = 150_000_000


def detect_onsets(audio: np.ndarray, threshold: float = 1e-2, quiet: float = 2e-3) -> list[int]:
    env = np.abs(audio).max(axis=1)
    guard, window, refractory = 480, 960, 4800
    found: list[int] = []
    next_allowed = 0
    for crossing in np.flatnonzero(env > threshold):
        i = int(crossing)
        if i < next_allowed or i < guard + window:
            continue
        if env[i - guard - window : i - guard].max() < quiet:
            found.append(i)
            next_allowed = i + refractory
    return found


def frame_to_ns(frame: int) -> int:
    return (frame * 1_000_000_000 + SR // 2) // SR


def grid(frame: int) -> int:
    return -(-frame // FLUID_BLOCK) * FLUID_BLOCK


def attack_frames() -> int:
    from livegen.io.synth_render import render_offline

    start = 4_800
    audio = render_offline(
        [(frame_to_ns(start), [0x90, PITCH, VELOCITY]), (frame_to_ns(start) + NOTE_NS, [0x80, PITCH, 0])],
        tail_s=0.3,
        reverb=False,
        chorus=False,
    )
    (onset,) = detect_onsets(audio)
    return onset - start


def offline(notes: int = 40) -> dict[str, Any]:
    from livegen.io.synth_render import render_offline

    attack = attack_frames()
    rng = np.random.default_rng(0)
    plan = [4_800 + k * 28_800 + int(rng.integers(0, 64)) for k in range(notes)]  # 0.6 s apart, any phase
    events: list[tuple[int, list[int]]] = []
    for frame in plan:
        events += [(frame_to_ns(frame), [0x90, PITCH, VELOCITY]), (frame_to_ns(frame) + NOTE_NS, [0x80, PITCH, 0])]
    audio = render_offline(events, tail_s=0.5, reverb=False, chorus=False)
    onsets = detect_onsets(audio)
    if len(onsets) != len(plan):
        return {"error": f"heard {len(onsets)} onsets for {len(plan)} notes"}
    vs_plan = [o - attack - f for o, f in zip(onsets, plan, strict=True)]
    vs_exact = [o - attack - grid(f) for o, f in zip(onsets, plan, strict=True)]
    return {
        "notes": len(plan),
        "attack_frames_removed": attack,
        "error_vs_plan_frames": {"min": min(vs_plan), "max": max(vs_plan), "mean": round(float(np.mean(vs_plan)), 2)},
        "error_vs_fluidsynth_grid_frames": {"min": min(vs_exact), "max": max(vs_exact)},
        "exact": all(v == 0 for v in vs_exact),
    }


SYNTH = r"""
import json, sys, time
from livegen.io.synth import LiveSynth

notes = int(sys.argv[1])
synth = LiveSynth(reverb=False, chorus=False)
synth.start()
print("READY", json.dumps({"device": synth.device_name}), flush=True)
sys.stdin.readline()
time.sleep(0.2)
before = synth.stats()
first = time.perf_counter_ns() + 300_000_000
deadlines = [first + k * 600_000_000 + k * 1_700_000 for k in range(notes)]  # drifting phase against the blocks
for d in deadlines:
    synth.schedule(d, [0x90, 72, 110])
    synth.schedule(d + 150_000_000, [0x80, 72, 0])
time.sleep((deadlines[-1] - time.perf_counter_ns()) / 1e9 + 0.4)
after = synth.stats()
report = {"deadlines": deadlines, "latency_ns": synth.output_latency_ns, "block_ns": synth.block_ns,
          "late": after.late, "underflows": after.underflows - before.underflows,
          "underflows_before": before.underflows, "callbacks": after.callbacks}
synth.close()
print("REPORT", json.dumps(report), flush=True)
"""


def _expect(proc: subprocess.Popen[str], word: str, timeout: float = 30.0) -> str:
    assert proc.stdout is not None
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        line = proc.stdout.readline()
        if line.startswith(word):
            return line[len(word) :].strip()
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"child did not say {word}: {proc.stderr.read()[-1500:] if proc.stderr else ''}")


def _jack(server: JackServer, *args: str) -> list[str]:
    done = subprocess.run(list(args), env=server.env(), capture_output=True, text=True, timeout=10, check=True)
    return done.stdout.splitlines()


def realtime(server: JackServer, notes: int, folder: Path) -> dict[str, Any]:
    attack = attack_frames()
    capture_file = folder / "capture.npz"
    seconds = 1.5 + notes * 0.61

    def child(program: list[str], *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, *program, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=server.env(),
            cwd=Path(__file__).resolve().parent.parent,  # the checkout: python -m benchmarks.jack_capture
        )

    capture = child(["-m", "benchmarks.jack_capture"], str(capture_file), str(seconds))
    synth = None
    try:
        _expect(capture, "READY")
        capture_ports = sorted(
            p for p in _jack(server, "jack_lsp", "-s", server.name) if p.endswith((":in_0", ":in_1"))
        )
        synth = child(["-c", SYNTH], str(notes))
        _expect(synth, "READY")
        synth_ports = sorted(
            p for p in _jack(server, "jack_lsp", "-s", server.name) if p.endswith((":out_0", ":out_1"))
        )
        for src, dst in zip(synth_ports, capture_ports, strict=True):
            _jack(server, "jack_connect", "-s", server.name, src, dst)
        assert synth.stdin is not None and capture.stdin is not None
        synth.stdin.write("GO\n")
        synth.stdin.flush()
        report = json.loads(_expect(synth, "REPORT", timeout=seconds + 30))
        synth.wait(10)
        capture.stdin.write("STOP\n")
        capture.stdin.flush()
        _expect(capture, "DONE")
        capture.wait(10)
    finally:
        for proc in (synth, capture):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(5)
    data = np.load(capture_file)
    audio, marks = data["audio"], data["marks"]
    offsets = marks[:, 0] - marks[:, 1] * 1_000_000_000 // SR

    def wall(frame: int) -> int:
        near = (marks[:, 1] > frame - SR // 2) & (marks[:, 1] <= frame)
        return int(offsets[near].min()) + frame * 1_000_000_000 // SR

    onsets = detect_onsets(audio)
    latency = int(report["latency_ns"])
    heard = [wall(o - attack) + latency for o in onsets]
    errors = []
    for deadline in report["deadlines"]:
        nearest = min(heard, key=lambda h: abs(h - deadline), default=None)
        if nearest is not None and abs(nearest - deadline) < 100_000_000:
            errors.append((nearest - deadline) * SR / 1e9)
    return {
        "notes": notes,
        "heard": len(errors),
        "error_frames": {
            "min": round(min(errors), 1) if errors else None,
            "max": round(max(errors), 1) if errors else None,
            "median": round(float(np.median(errors)), 1) if errors else None,
            "max_abs": round(max(abs(e) for e in errors), 1) if errors else None,
        },
        "block_frames": JACK_PERIOD,
        "within_one_block_plus_fluid_grid": bool(errors) and all(-JACK_PERIOD <= e <= JACK_PERIOD + 64 for e in errors),
        "synth_late": report["late"],
        "underflows": report["underflows"] + report["underflows_before"],
        "output_latency_ms": round(latency / 1e6, 3),
        "samplerate": JACK_RATE,
    }


def measure(*, quick: bool = False) -> dict[str, Any]:
    try:
        from livegen.io.soundfont import find_soundfont

        find_soundfont(None)
        import fluidsynth  # noqa: F401
    except Exception as err:
        return {"skipped": f"built-in synth unavailable: {err}"}
    out: dict[str, Any] = {"offline": offline(8 if quick else 40)}
    reason = JackServer.available() or (None if shutil.which("jack_connect") else "jack_connect not installed")
    if reason:
        out["realtime_jack"] = {"skipped": reason}
    else:
        with JackServer() as server, tempfile.TemporaryDirectory(prefix="livegen-bench-synth-") as tmp:
            try:
                out["realtime_jack"] = realtime(server, 4 if quick else 20, Path(tmp))
            except Exception as err:
                out["realtime_jack"] = {"error": f"{type(err).__name__}: {err}"}
    out["loadavg"] = loadavg()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(measure(quick=args.quick), indent=2))


if __name__ == "__main__":
    main()
