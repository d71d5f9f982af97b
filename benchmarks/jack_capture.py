"""Record a JACK client's audio with the time each block arrived: the capture side of the synth's timing checks.

Context: its own process, started by ``benchmarks/synth.py`` and ``tests/test_synth_jack.py``
(``python -m benchmarks.jack_capture OUT SECONDS`` with ``JACK_DEFAULT_SERVER`` set). It opens a
two-channel sounddevice input, prints ``READY``, records until a line arrives on stdin (at most
``SECONDS``), saves ``audio`` (float32 [frames, 2]) and ``marks`` (int64 [blocks, 2]: the
``perf_counter_ns`` at each callback and the frame it starts at) to OUT (.npz), and prints ``DONE``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import sounddevice as sd

RATE = 48000


def main(out_path: str, seconds: float) -> None:
    frames_max = int(seconds * RATE)
    buf = np.zeros((frames_max, 2), dtype=np.float32)
    marks = np.zeros((frames_max // 64 + 64, 2), dtype=np.int64)
    state = [0, 0]  # frames captured, callbacks

    def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:  # JACK's process thread
        now = time.perf_counter_ns()
        pos, k = state
        n = max(0, min(frames, frames_max - pos))
        buf[pos : pos + n] = indata[:n]
        if k < len(marks):
            marks[k] = (now, pos)
        state[0] = pos + frames
        state[1] = k + 1

    with sd.InputStream(samplerate=RATE, channels=2, dtype="float32", callback=callback, latency="low"):
        print("READY", flush=True)
        sys.stdin.readline()
    pos, k = state
    np.savez(out_path, audio=buf[: min(pos, frames_max)], marks=marks[: min(k, len(marks))])
    print("DONE", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
