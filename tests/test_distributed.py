"""Training under ``torchrun --nproc_per_node=2`` on the CPU (gloo), and resuming an interrupted run.

Context: setup (tests of the training-only ``export`` package; need the ``train`` extra).

The distributed runs write a digest of every rank's weights after every optimiser step
(``LIVEGEN_STEP_LOG``): both ranks must hold identical weights after each step while
training on different batches. The resume tests interrupt training mid-epoch (a signal,
a kill, or ``--stop-after-batches``) and require the continued run to end with exactly
the weights of an uninterrupted one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="training tests need the train extra: pip install -e '.[train]'")
pytest.importorskip("symusic", reason="prepare needs symusic (train extra)")

from export.__main__ import main  # noqa: E402
from export.common import load_checkpoint  # noqa: E402
from export.distributed import LAST, TrainingInterrupted, World, shard, shard_list  # noqa: E402
from export.prepare import prepare  # noqa: E402
from livegen.models.registry import load_generator  # noqa: E402
from tests.distributed_train import FAMILIES  # noqa: E402
from tests.liveplay import plays_on_its_own  # noqa: E402
from tests.test_prepare import write_corpus  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--epochs", "2", "--patience", "2", "--window", "16", "--batch-size", "4", "--hidden", "16"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared cache of 12 four-voice pieces (every family reads it: melodies merge the voices)."""
    folder = tmp_path_factory.mktemp("midi")
    write_corpus(folder, 12, voices=4)
    out = tmp_path_factory.mktemp("cache") / "cache"
    prepare(folder, out, jobs=2)
    return out


def _run(args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """A command in its own process group, killed with all its children if it outlives ``timeout``."""
    process = subprocess.Popen(
        list(args),
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]


def _steps(prefix: Path, rank: int) -> list[list[str]]:
    """The step log of one rank: (phase, step, weights digest, batch digest) per optimiser step."""
    return [line.split() for line in Path(f"{prefix}.rank{rank}").read_text().splitlines()]


def _assert_ranks_in_step(prefix: Path) -> None:
    rank0, rank1 = _steps(prefix, 0), _steps(prefix, 1)
    assert len(rank0) == len(rank1) >= 4
    assert [r[:3] for r in rank0] == [r[:3] for r in rank1]  # identical weights after every step
    assert len({r[2] for r in rank0}) == len(rank0)  # ... and they change at every step
    assert all(a[3] != b[3] for a, b in zip(rank0, rank1, strict=True))  # from different batches


def _same_weights(a: Path, b: Path) -> None:
    first, second = load_checkpoint(a)["state_dict"], load_checkpoint(b)["state_dict"]
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_shards_are_distributed_samplers() -> None:
    """Each rank's share of an order is DistributedSampler's (padded by wrapping round), and together
    the ranks cover every index."""
    from torch.utils.data import DistributedSampler

    for n, size in ((10, 2), (11, 2), (7, 3), (2, 4)):
        order = torch.arange(n)
        shares = [shard(order, World(rank, size)).tolist() for rank in range(size)]
        dataset: Any = range(n)
        expected: list[list[int]] = [
            list(DistributedSampler(dataset, num_replicas=size, rank=r, shuffle=False)) for r in range(size)
        ]
        assert shares == expected
        assert set().union(*shares) == set(range(n))
        assert [shard_list(list(range(n)), World(r, size)) for r in range(size)] == expected
    assert torch.equal(shard(torch.arange(5), World()), torch.arange(5))


@pytest.fixture(scope="module")
def torchrun_midirnn(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """midirnn trained by two processes through the command line, and its package: (run folder, step log)."""
    root = tmp_path_factory.mktemp("torchrun")
    log = root / "steps"
    command = _torchrun("-m", "export", "train", "midirnn", "--data", str(cache), "--out", str(root / "run"), *TINY)
    done = _run([*command, "--package", str(root / "pkg" / "two-ranks")], {"LIVEGEN_STEP_LOG": str(log)})
    assert done.returncode == 0, done.stderr[-3000:]
    return root, log


def test_two_processes_hold_identical_weights_after_every_step_and_the_package_plays(
    torchrun_midirnn: tuple[Path, Path],
) -> None:
    root, log = torchrun_midirnn
    _assert_ranks_in_step(log)
    assert {p.name for p in (root / "run").iterdir()} == {"checkpoint.pt", LAST}  # written by rank 0 alone
    checkpoint = load_checkpoint(root / "run" / "checkpoint.pt")
    assert checkpoint["training"]["epochs_run"] == 2
    assert all(h["samples_per_second"] > 0 for h in checkpoint["history"])
    package = root / "pkg" / "two-ranks"
    plays_on_its_own(load_generator(str(package))[1], package)


def test_a_torchrun_stopped_mid_epoch_resumes_to_the_uninterrupted_result(
    cache: Path, torchrun_midirnn: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    command = _torchrun("-m", "export", "train", "midirnn", "--data", str(cache), "--out", str(out), *TINY)
    stopped = _run([*command, "--stop-after-batches", "3"])
    assert stopped.returncode != 0 and "resumable checkpoint written" in stopped.stderr
    saved = torch.load(out / LAST, weights_only=True)
    assert saved["world_size"] == 2 and saved["loop"]["epoch"] == 1 and saved["loop"]["batch"] == 3  # mid-epoch
    resumed = _run(command)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr + resumed.stdout
    _same_weights(torchrun_midirnn[0] / "run" / "checkpoint.pt", out / "checkpoint.pt")
    # one process does not continue what two began: the shards would not follow on
    torch.save(saved, out / LAST)
    assert main(["train", "midirnn", "--data", str(cache), "--out", str(out), *TINY]) == 1


@pytest.mark.parametrize("family", ["multitrack-cnn", "midigan", "imagegan", "crnngan"])
def test_every_training_loop_keeps_ranks_in_step(family: str, cache: Path, tmp_path: Path) -> None:
    """The frame families' loop (multitrack-cnn stands for deep-musician and multitrack-rnn) and each
    GAN loop, under torchrun from a prepared cache."""
    log = tmp_path / "steps"
    command = _torchrun("-m", "tests.distributed_train", family, str(cache), str(tmp_path / "run"))
    done = _run(command, {"LIVEGEN_STEP_LOG": str(log)})
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_ranks_in_step(log)
    assert (tmp_path / "run" / "checkpoint.pt").is_file()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_resumes_to_the_uninterrupted_result(family: str, cache: Path, tmp_path: Path) -> None:
    """Interrupted every 3 batches (mid-epoch, at epoch ends, between phases) until it finishes, a run ends
    with the weights, history and metrics of one that was never interrupted."""
    train = FAMILIES[family]
    train(data=str(cache), out=tmp_path / "whole")
    stops = 0
    from export.distributed import RunOptions

    while True:
        try:
            train(data=str(cache), out=tmp_path / "pieces", run=RunOptions(stop_after_batches=3))
            break
        except TrainingInterrupted as err:
            assert err.exit_code == 128 + signal.SIGTERM
            stops += 1
            assert stops < 100
    assert stops >= 1
    _same_weights(tmp_path / "whole" / "checkpoint.pt", tmp_path / "pieces" / "checkpoint.pt")
    whole, pieces = (
        load_checkpoint(tmp_path / "whole" / "checkpoint.pt"),
        load_checkpoint(tmp_path / "pieces" / "checkpoint.pt"),
    )
    drop = {"seconds", "samples_per_second"}
    assert [{k: v for k, v in h.items() if k not in drop} for h in whole["history"]] == [
        {k: v for k, v in h.items() if k not in drop} for h in pieces["history"]
    ]
    assert whole["metrics"] == pieces["metrics"]


MANY = ["--epochs", "30", "--patience", "30", "--window", "8", "--batch-size", "2", "--hidden", "16"]


@pytest.fixture(scope="module")
def uninterrupted(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "run"
    assert main(["train", "midirnn", "--data", str(cache), "--out", str(out), *MANY]) == 0
    return out / "checkpoint.pt"


def test_sigterm_writes_a_resumable_checkpoint(cache: Path, uninterrupted: Path, tmp_path: Path) -> None:
    """A real SIGTERM (as a cluster's scheduler sends one) in the middle of training."""
    out = tmp_path / "run"

    def terminate_once_training() -> None:
        deadline = time.monotonic() + 60
        while not (out / LAST).exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate_once_training, daemon=True)
    killer.start()
    code = main(["train", "midirnn", "--data", str(cache), "--out", str(out), *MANY, "--checkpoint-every", "1"])
    killer.join()
    assert code == 128 + signal.SIGTERM
    saved = torch.load(out / LAST, weights_only=True)
    assert not saved["loop"].get("finished") and saved["loop"]["epoch"] < 30
    assert not (out / "checkpoint.pt").exists()
    assert main(["train", "midirnn", "--data", str(cache), "--out", str(out), *MANY]) == 0
    _same_weights(uninterrupted, out / "checkpoint.pt")


def test_a_killed_run_continues_from_its_last_periodic_checkpoint(
    cache: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    """SIGKILL gives no chance to save: the run goes on from the last checkpoint written every 5 batches."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "export", "train", "midirnn", "--data", str(cache), "--out", str(out), *MANY]
    process = subprocess.Popen(
        [*command, "--checkpoint-every", "5"],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / LAST).exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.05)
        process.kill()
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not (out / "checkpoint.pt").exists()
    assert main(["train", "midirnn", "--data", str(cache), "--out", str(out), *MANY]) == 0
    _same_weights(uninterrupted, out / "checkpoint.pt")
