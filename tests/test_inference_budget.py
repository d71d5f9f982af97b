"""A model never wedges, kills or poisons a jam: its trial runs on the seed phrase within bounds,
every run keeps a time and a memory budget (a step over it is skipped and counted), SIGTERM
ends a jam at once with its recording, and NaN or infinity in any output of any family is
handled.

The hostile graphs are tests/pkgfactory.py's step graph with a trap sprung by the pitch fed:
a Loop of 2**62 iterations, a 4 GiB tensor, NaN logits or an infinite step.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
import pytest
from onnxruntime.capi.onnxruntime_inference_collection import InferenceSession

from livegen.engine.config import JamConfig
from livegen.engine.jam import JamResult, run_jam
from livegen.errors import InferenceSkipped, PackageError
from livegen.models.budget import BudgetedSession, stop_runs_on
from livegen.models.package import load_package
from livegen.models.registry import BUNDLED_DIR, make_generator
from livegen.models.sampling import SamplingParams
from livegen.models.step import StepEvent, StepGenerator
from livegen.models.trial import verify_in_child
from livegen.music.events import Note
from livegen.music.midifile import read_midi, write_midi
from livegen.music.time import PPQN
from tests.pkgfactory import TRAPS, trapped_graph, write_package

#: Sprung by the test package's seed phrase (pitches 60-67 are 0.47-0.52 of 128), never by zeros.
ON_THE_SEED = 0.3
#: Sprung only by a pitch above 96, which neither the seed phrase nor the package's range (48-84) holds.
ON_A_HIGH_NOTE = 0.75
HIGH = 110


def _high_phrase(path: Path) -> Path:
    write_midi(path, {"phrase": [Note(HIGH, 90, i * PPQN, PPQN // 2) for i in range(4)]})
    return path


@pytest.mark.parametrize("trap", TRAPS)
def test_models_verify_refuses_a_graph_that_goes_wrong_on_its_seed_phrase(tmp_path: Path, trap: str) -> None:
    """Zeros pass; the seed phrase springs the trap: ``livegen models verify`` refuses the package
    by name, within seconds, instead of passing it (a loop would then wedge the jam)."""
    package = write_package(tmp_path / trap, graph=trapped_graph(trap, ON_THE_SEED))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "livegen", "models", "verify", str(package)],
        capture_output=True,
        text=True,
        timeout=90,
    )
    elapsed = time.monotonic() - started
    assert done.returncode != 0, done.stdout
    expected = {
        "loop": "took longer than 0.5 s",
        "alloc": "needed more memory than livegen gives its models",
        "nan": "output 'pitch_logits' holds NaN or infinity",
        "inf-step": "output 'step' holds NaN or infinity",
    }[trap]
    assert "the trial on the seed phrase failed" in done.stderr and expected in done.stderr, done.stderr
    assert str(package) in done.stderr and "Traceback" not in done.stderr
    assert elapsed < 60


def test_a_jam_with_an_inference_worker_refuses_the_package_before_it_plays(tmp_path: Path) -> None:
    """With --worker the jam verifies the package itself (once: a restarted worker loads it at
    once) and refuses it by name before the clock starts."""
    package = write_package(tmp_path / "pkg", graph=trapped_graph("loop", ON_THE_SEED))
    record = tmp_path / "take.mid"
    config = JamConfig(model=str(package), mode="autonomous", outputs=("none",), record=record, worker=True)
    with pytest.raises(PackageError, match=r"the trial on the seed phrase failed: .* took longer than 0\.5 s"):
        run_jam(config)
    assert not record.exists()


def test_a_verification_that_runs_past_its_time_is_killed_and_named(tmp_path: Path) -> None:
    package = write_package(tmp_path / "slow", graph=trapped_graph("loop", ON_THE_SEED))
    started = time.monotonic()
    with pytest.raises(PackageError, match=r"verifying it took more than 0\.5 s"):
        verify_in_child(package, timeout=0.5)
    assert time.monotonic() - started < 10


def _jam_in_thread(config: JamConfig) -> tuple[threading.Thread, list[JamResult | BaseException]]:
    out: list[JamResult | BaseException] = []

    def play() -> None:
        try:
            out.append(run_jam(config))
        except BaseException as err:
            out.append(err)

    thread = threading.Thread(target=play, daemon=True)
    thread.start()
    return thread, out


@pytest.mark.parametrize("trap", ["loop", "alloc", "nan"])
def test_a_step_that_goes_wrong_during_a_jam_is_skipped_counted_and_the_jam_ends_on_time(
    tmp_path: Path, trap: str
) -> None:
    """The package passes its trial; the performer's high notes spring the trap on every note
    heard: each of those steps is skipped and counted, the jam stops at --max-seconds and
    writes its recording (a loop used to wedge it for good)."""
    package = write_package(tmp_path / "pkg", graph=trapped_graph(trap, ON_A_HIGH_NOTE))
    record = tmp_path / "take.mid"
    config = JamConfig(
        model=str(package),
        mode="call-response",
        seed_file=_high_phrase(tmp_path / "high.mid"),
        outputs=("none",),
        record=record,
        max_seconds=4,
        commands=False,
        out_dir=tmp_path,
    )
    thread, out = _jam_in_thread(config)
    thread.join(30)
    assert not thread.is_alive(), "the jam did not end within 30 s of a 4 s --max-seconds"
    result = out[0]
    assert isinstance(result, JamResult), result
    assert result.skipped_steps >= 4  # every high note the model heard
    assert [n.pitch for n in read_midi(record).notes] == [HIGH] * 4


def test_a_stop_ends_a_run_in_flight_at_once(tmp_path: Path) -> None:
    """Stopping the jam (Ctrl-C, SIGTERM, a typed quit) ends the run in flight and refuses the
    next ones, however long their budget: a jam waits for no model once it is stopping."""
    package = load_package(write_package(tmp_path / "pkg", graph=trapped_graph("loop", ON_A_HIGH_NOTE)))
    session = BudgetedSession(package.sessions["step"].session, "trapped", budget_s=600)
    zeros = np.zeros((1, 1, 16), dtype=np.float32)
    feeds = {"note": np.array([[HIGH / 128, 0.5, 0.5]], dtype=np.float32), "h": zeros, "c": zeros}
    stop = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            session.run(None, feeds)
        except BaseException as err:
            failures.append(err)

    with stop_runs_on(stop):
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive()  # in the Loop
        stopped = time.monotonic()
        stop.set()
        thread.join(10)
        took = time.monotonic() - stopped
        with pytest.raises(InferenceSkipped, match="not run, the performance is stopping"):
            session.run(None, feeds)
    assert not thread.is_alive() and took < 1.0, took
    assert isinstance(failures[0], InferenceSkipped) and "the performance is stopping" in str(failures[0])


def _lines(stream: IO[str], into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


def test_sigterm_ends_a_wedged_jam_within_two_seconds_with_its_recording(tmp_path: Path) -> None:
    """A jam whose model loops on every note it hears: SIGTERM, sent once the first step was
    skipped, ends it within 2 s with the recording written (it used to ignore SIGTERM for good)."""
    package = write_package(tmp_path / "pkg", graph=trapped_graph("loop", ON_A_HIGH_NOTE))
    record = tmp_path / "take.mid"
    args = ["--model", str(package), "--seed-file", str(_high_phrase(tmp_path / "high.mid")), "--out", "none"]
    jam = subprocess.Popen(
        [sys.executable, "-m", "livegen", "jam", *args, "--record", str(record), "--max-seconds", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    readers = [threading.Thread(target=_lines, args=(s, lines), daemon=True) for s in (jam.stdout, jam.stderr)]
    for reader in readers:
        reader.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while not any("took longer than 0.5 s" in line for line in seen):
            assert time.monotonic() < deadline and jam.poll() is None, "".join(seen)
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=1))
        sent = time.monotonic()
        jam.send_signal(signal.SIGTERM)
        jam.wait(30)
        took = time.monotonic() - sent
    finally:
        with contextlib.suppress(ProcessLookupError):
            jam.kill()
        jam.wait()
    for reader in readers:
        reader.join(5)
    while not lines.empty():
        seen.append(lines.get())
    assert jam.returncode == 0, "".join(seen)
    assert took < 2.0, f"SIGTERM took {took:.2f} s"
    assert read_midi(record).notes and {n.pitch for n in read_midi(record).notes} == {HIGH}
    assert any("model step(s) skipped" in line for line in seen), "".join(seen)


# ---- NaN and infinity in every output of every family ------------------------------------

#: The bundled packages (one per family) and midirnn's regression head (tests/pkgfactory.py).
FAMILIES = [*sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "livegen.toml").is_file()), "midirnn-regression"]
POISONS = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf, "+max": 3.0e38, "-max": -3.0e38}


def _poisoned(value: float, after: int) -> Callable[..., list[np.ndarray]]:
    """onnxruntime's run, with every float output filled with ``value`` after ``after`` runs."""
    real = InferenceSession.run
    runs = [0]

    def run(self: InferenceSession, *args: object, **kwargs: object) -> list[np.ndarray]:
        outputs = real(self, *args, **kwargs)  # type: ignore[arg-type]
        runs[0] += 1
        if runs[0] <= after:
            return outputs
        return [np.full_like(o, value) if isinstance(o, np.ndarray) and o.dtype.kind == "f" else o for o in outputs]

    return run


def _play(generator: StepGenerator, seed: list[StepEvent], steps: int) -> tuple[list[StepEvent], int]:
    """Drive ``generator`` as a planner would, skipping a step whose run is refused: (proposals, skips)."""
    params, rng = SamplingParams(), np.random.default_rng(0)
    proposals, skipped = [], 0
    for event in seed:
        try:
            generator.feed(event)
        except InferenceSkipped:
            skipped += 1
    for _ in range(steps):
        if not generator.fed:
            break
        try:
            event = generator.sample(params, rng)
            proposals.append(event)
            generator.feed(event)
        except InferenceSkipped:
            skipped += 1
    return proposals, skipped


@pytest.mark.parametrize("poison", POISONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_nan_and_infinity_in_every_output_of_every_family(
    family: str, poison: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every float output of every graph turns to NaN, infinity or the largest float32 (from the
    first run, or after one): each run so poisoned is refused and its step skipped, and what
    the adapter still proposes is a playable note (a pitch, a step and a duration of at most
    64 beats); nothing else is raised."""
    package = load_package(write_package(tmp_path / family) if family == "midirnn-regression" else BUNDLED_DIR / family)
    generator = make_generator(package)
    song = read_midi(package.seed_phrase) if package.seed_phrase else None
    seed = [StepEvent(n.pitch, PPQN // 2 if i else 0, PPQN // 2) for i, n in enumerate(song.notes[:8])] if song else []
    seed = seed or [StepEvent(60 + i, PPQN // 2 if i else 0, PPQN // 2) for i in range(8)]
    for after in (0, 1):  # from the first run on, and after one clean run (a block model's first block)
        generator.reset()
        monkeypatch.setattr(InferenceSession, "run", _poisoned(POISONS[poison], after=after))
        proposals, skipped = _play(generator, seed, 24)
        for event in proposals:
            assert 0 <= event.pitch <= 127 and 0 <= event.step <= 64 * PPQN, event
            assert 1 <= event.duration <= 64 * PPQN, event
        if not np.isfinite(POISONS[poison]):
            assert skipped > 0
