"""Distributed training's figures: ``prepare`` files per second, and training samples per second with 1 and 2 processes.

Context: setup (a benchmark; needs the ``train`` extra). Not part of ``livegen bench``:
it trains, which takes minutes and says nothing about the live engine.

1. Writes a synthetic corpus into a temporary folder: ``--files`` four-voice MIDI files
   of 60 to 600 beats, 1% of them truncated and 1% garbage (so ``prepare`` meets broken
   files on every run).
2. ``prepare`` with 2 and 1 worker processes, the old folder read through mido for
   comparison, and ``prepare`` again with nothing changed.
3. ``train midirnn`` on the cache for 2 epochs: 1 process with 1 thread, 1 process with
   2 threads, and ``torchrun --nproc_per_node=2`` with 1 thread each; the rows of each
   round run one after the other, ``--rounds`` times, so that a busy moment of the
   machine falls on every configuration alike. A sample is one training window.

    python -m benchmarks.training [--files 2000] [--rounds 3] [--limit 1200] [--json out/training.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from livegen.music.events import Note
from livegen.music.midifile import write_midi
from livegen.music.time import PPQN

C_MAJOR = [48, 50, 52, 53, 55, 57, 59, 60, 62, 64, 65, 67, 69, 71, 72, 74, 76, 77, 79]


def piece(rng: np.random.Generator, beats: int, voices: int = 4) -> list[Note]:
    """``voices`` voices on channels 0.., high to low, stepping through C major in quarters and halves
    (also the pieces of ``tests/test_prepare.py``)."""
    notes = []
    for voice, start in enumerate((15, 11, 7, 2)[:voices]):
        index, tick = start, 0
        while tick < beats * PPQN:
            index = int(np.clip(index + rng.choice([-1, 0, 1]), 0, len(C_MAJOR) - 1))
            length = int(rng.choice([1, 1, 2])) * PPQN
            notes.append(Note(C_MAJOR[index], int(rng.integers(40, 110)), tick, length - PPQN // 8, channel=voice))
            tick += length
    return notes


def write_corpus(root: Path, files: int, seed: int = 0) -> None:
    """``files`` pieces in 20 subfolders; every 100th (+7) truncated, every 100th (+42) garbage."""
    rng = np.random.default_rng(seed)
    for i in range(files):
        folder = root / f"set{i % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"piece{i:05d}.mid"
        write_midi(path, {"voices": piece(rng, int(rng.integers(60, 600)))})
        if i % 100 == 7:
            path.write_bytes(path.read_bytes()[:40])
        if i % 100 == 42:
            path.write_bytes(bytes(rng.integers(0, 256, 300, dtype=np.uint8)))


def measure_prepare(source: Path, work: Path, rounds: int) -> list[dict[str, Any]]:
    from export.prepare import prepare
    from livegen.music.corpus import load_corpus

    files = sum(1 for _ in source.rglob("*.mid"))
    rows: list[dict[str, Any]] = []
    for round_ in range(rounds):
        for jobs in (2, 1):
            out = work / f"cache-jobs{jobs}"
            shutil.rmtree(out, ignore_errors=True)
            started = time.perf_counter()
            report = prepare(source, out, jobs=jobs)
            seconds = time.perf_counter() - started
            rows.append({"what": f"prepare --jobs {jobs}", "round": round_, "seconds": round(seconds, 2),
                         "files_per_s": round(files / seconds), "usable": report.usable,
                         "failed": len(report.failed)})  # fmt: skip
        started = time.perf_counter()
        tunes = load_corpus(str(source))
        seconds = time.perf_counter() - started
        rows.append({"what": "load_corpus(folder), mido", "round": round_, "seconds": round(seconds, 2),
                     "files_per_s": round(files / seconds), "usable": len(tunes)})  # fmt: skip
        started = time.perf_counter()
        prepare(source, work / "cache-jobs2", jobs=2)
        rows.append({"what": "prepare again, nothing changed", "round": round_,
                     "seconds": round(time.perf_counter() - started, 3)})  # fmt: skip
    return rows


def measure_training(cache: Path, work: Path, rounds: int, limit: int) -> list[dict[str, Any]]:
    import torch

    python = sys.executable
    base = ["train", "midirnn", "--data", str(cache), "--limit", str(limit), "--epochs", "2", "--patience", "5",
            "--fresh", "--batch-size", "64"]  # fmt: skip
    torchrun = [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    runs = {
        "1 process, 1 thread": ([python, "-m", "export", *base], "1"),
        "1 process, 2 threads": ([python, "-m", "export", *base], "2"),
        "torchrun, 2 processes x 1 thread": ([*torchrun, "-m", "export", *base], "1"),
    }
    rows: list[dict[str, Any]] = []
    for round_ in range(rounds):
        for name, (command, threads) in runs.items():
            out = work / f"train-{len(rows)}"
            result = subprocess.run([*command, "--out", str(out)], env={**os.environ, "OMP_NUM_THREADS": threads},
                                    capture_output=True, text=True)  # fmt: skip
            if result.returncode:
                raise SystemExit(f"{name}: training failed\n{result.stderr[-2000:]}")
            history = torch.load(out / "checkpoint.pt", weights_only=True)["history"]
            rows.append({"run": name, "round": round_,
                         "samples_per_s": [round(h["samples_per_second"]) for h in history]})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=2000, help="synthetic MIDI files (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every configuration (default 3)")
    parser.add_argument("--limit", type=int, default=1200, help="tunes to train on (default 1200)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="livegen-training-bench-") as tmp:
        work = Path(tmp)
        write_corpus(work / "midi", args.files)
        prepare_rows = measure_prepare(work / "midi", work, args.rounds)
        for row in prepare_rows:
            print(json.dumps(row), flush=True)
        train_rows = measure_training(work / "cache-jobs2", work, args.rounds, args.limit)
    summary = {
        run: statistics.median(max(r["samples_per_s"]) for r in train_rows if r["run"] == run)
        for run in dict.fromkeys(r["run"] for r in train_rows)
    }
    report = {"files": args.files, "prepare": prepare_rows, "training": train_rows,
              "median_best_epoch_samples_per_s": summary}  # fmt: skip
    print(json.dumps(summary, indent=1))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
        print(f"JSON report -> {args.json}")


if __name__ == "__main__":
    main()
