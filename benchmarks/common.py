"""What every benchmark shares: statistics, the machine's description, a private JACK
server, a CPU hog and a garbage maker.

Context: setup (benchmarks only; nothing here is imported by ``livegen``).

Benchmarks are not tests: each prints figures and returns a JSON-ready dict; nothing
here asserts a target. A private JACK server is started under a unique name with the
dummy driver and stopped by its PID, never by name.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
JACK_RATE = 48_000
JACK_PERIOD = 128


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0..1) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return float(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))])


def summary_ms(values_ns: Sequence[int]) -> dict[str, float]:
    """p50, p99 and maximum in milliseconds, and the count."""
    if not values_ns:
        return {"n": 0}
    ms = [v / 1e6 for v in values_ns]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 0.5), 4),
        "p99_ms": round(percentile(ms, 0.99), 4),
        "max_ms": round(max(ms), 4),
        "mean_ms": round(sum(ms) / len(ms), 4),
    }


def vitals() -> dict[str, int]:
    """This process's threads, open file descriptors and resident memory (KiB), from /proc."""
    with open("/proc/self/statm") as statm:
        rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return {
        "threads": len(os.listdir("/proc/self/task")),
        "fds": len(os.listdir("/proc/self/fd")),
        "rss_kib": rss // 1024,
    }


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict[str, Any]:
    """Where the figures came from: CPU, cores, load, Python and library versions."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "loadavg": loadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    with contextlib.suppress(ImportError):
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    return info


# --- a private JACK server ---------------------------------------------------------------


def _die_with_parent() -> None:
    """In a child before exec: end with the benchmark even if it is killed (Linux prctl)."""
    with contextlib.suppress(Exception):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class JackServer:
    """``jackd -n NAME -d dummy -r 48000 -p 128`` started here and stopped by its PID."""

    def __init__(self) -> None:
        # Short: jackd2 1.9.21's jack_lsp aborts with a 24-character server name.
        self.name = f"lgb-{os.getpid()}-{secrets.token_hex(2)}"
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="livegen-bench-jackd-", suffix=".log", delete=False)  # noqa: SIM115

    @staticmethod
    def available() -> str | None:
        """None if jackd and jack_wait are installed, else why not."""
        missing = [tool for tool in ("jackd", "jack_wait") if shutil.which(tool) is None]
        return f"{', '.join(missing)} not installed (Debian package jackd2)" if missing else None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["JACK_DEFAULT_SERVER"] = self.name
        env["JACK_NO_START_SERVER"] = "1"
        env["JACK_NO_AUDIO_RESERVATION"] = "1"
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def start(self, timeout: float = 15.0) -> None:
        self.process = subprocess.Popen(
            ["jackd", "-n", self.name, "-d", "dummy", "-r", str(JACK_RATE), "-p", str(JACK_PERIOD)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env(),
            preexec_fn=_die_with_parent,
        )
        ready = subprocess.run(
            ["jack_wait", "-s", self.name, "-w", "-t", str(int(timeout))],
            env=self.env(),
            capture_output=True,
            timeout=timeout + 5,
            check=False,
        )
        if ready.returncode != 0 or self.process.poll() is not None:
            self.stop()
            raise RuntimeError(f"jackd did not start: {Path(self._log.name).read_text()[-2000:]}")

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()  # only the jackd this object started
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.process = None
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)

    def __enter__(self) -> JackServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def jack_env(server: JackServer) -> Iterator[None]:
    """``JACK_DEFAULT_SERVER`` set for this process (libjack reads it whenever a client opens)."""
    saved = {k: os.environ.get(k) for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
    os.environ["JACK_DEFAULT_SERVER"] = server.name
    os.environ["JACK_NO_START_SERVER"] = "1"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --- load ------------------------------------------------------------------------------

_HOG = "import os\ntry:\n    os.sched_setaffinity(0, {%d})\nexcept OSError:\n    pass\nwhile True:\n    pass\n"


@contextlib.contextmanager
def cpu_hog(core: int | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A process spinning on ``core`` (default: the last core), ended by its PID."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    core = cores[-1] if core is None else core
    hog = subprocess.Popen([sys.executable, "-c", _HOG % core], stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    try:
        time.sleep(0.2)
        yield hog
    finally:
        hog.kill()
        hog.wait(5)


class GarbageMaker:
    """Python garbage made on the calling thread: reference cycles, some kept alive a while.

    ``tick()`` builds ``per_tick`` small dict-and-list cycles (collectable only by the
    cyclic GC) and keeps the last ``keep`` of them alive, so generation-2 collections
    have a live heap to traverse, as a long session's control thread does.
    """

    def __init__(self, per_tick: int = 400, keep: int = 50_000) -> None:
        self.per_tick = per_tick
        self._alive: deque[object] = deque(maxlen=keep)
        self.made = 0

    def tick(self) -> None:
        alive = self._alive
        for i in range(self.per_tick):
            node: dict[str, Any] = {"i": i, "items": [i, str(i)]}
            node["self"] = node  # a cycle: only the cyclic collector frees it
            alive.append(node)
        self.made += self.per_tick


@contextlib.contextmanager
def gc_counting() -> Iterator[dict[str, int]]:
    """Counts collections per generation while the block runs."""
    counts = {"gen0": 0, "gen1": 0, "gen2": 0}

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            counts[f"gen{info['generation']}"] += 1

    gc.callbacks.append(callback)
    try:
        yield counts
    finally:
        gc.callbacks.remove(callback)
