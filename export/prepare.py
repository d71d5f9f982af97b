"""``python -m export prepare``: convert a folder tree of MIDI files into a prepared cache, in parallel.

Context: setup (a command-line step before training; needs the ``train`` extra for symusic).

A collection the size of MAESTRO (1,300 performances) or the Lakh MIDI set (170,000
files) is parsed once, by worker processes, with symusic (a C++ MIDI parser made for
datasets; the project's own mido reader is pure Python and, measured on the test
corpus, tens of times slower). Each file's notes become rows of a few ``.npy`` arrays
that training memory-maps (:data:`livegen.music.corpus.CACHE_ARRAYS`; the format and its
reader live in :mod:`livegen.music.corpus`, so the host reads a cache without torch).

- A file that cannot be read or parsed is listed with its reason in the cache's
  :data:`REPORT` and in the manifest, and skipped; nothing aborts the run.
- Re-running converts only files that are new or changed (size and modification time
  differ and so does the content's sha256); the rest are copied from the previous
  arrays. Files removed from the source leave the cache.
- A change of parser version converts everything again.
- Writes are crash-safe: the arrays of each run carry a generation number in their
  names and the manifest, written last through a temporary file and an atomic rename,
  names the generation it describes; the previous generation's files are removed only
  then. An interrupted run (Ctrl-C, SIGTERM) saves the files it finished, so that the
  next run converts only the rest.

Notes are read as :func:`livegen.music.corpus.load_corpus` reads a MIDI file: every
track and channel merged, times rescaled to 480 ticks per beat with the same rounding,
sorted by onset and then highest pitch first. Two differences from the mido reader,
both symusic's: a note still sounding when its track ends is dropped (the mido reader
closes it at the track's end), and a file's parts are its (track, channel) pairs
(the mido reader's multi-track view groups by channel alone).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from export.errors import ExportError
from livegen.music.corpus import (
    CACHE_ARRAYS,
    CACHE_FORMAT,
    CACHE_MANIFEST,
    CACHE_VERSION,
    MIN_NOTES,
    CorpusError,
    open_cache,
)
from livegen.music.time import PPQN

log = logging.getLogger(__name__)

#: The human-readable list of files that were skipped, and why (also in the manifest's entries).
REPORT = "prepare-report.txt"
MIDI_SUFFIXES = (".mid", ".midi")
#: Files per task sent to a worker: enough to amortise the inter-process hand-off of small files.
CHUNK_FILES = 32
#: ... or this many bytes, so that a few large performances are spread over the workers.
CHUNK_BYTES = 2 << 20


def parser_version() -> str:
    """What converted a cache's files: a cache made by another parser version is converted again."""
    import symusic

    return f"symusic {getattr(symusic, '__version__', '?')}; livegen-notes 1"


# ---- one file (worker process) ------------------------------------------------------------


def _scale(ticks: np.ndarray, tpq: int) -> np.ndarray:
    """Ticks at ``tpq`` per beat as ticks at PPQN 480, rounded as :func:`livegen.music.midifile.read_midi` rounds."""
    return (ticks.astype(np.int64) * PPQN + tpq // 2) // tpq


def convert_bytes(data: bytes) -> dict[str, np.ndarray]:
    """The note arrays (:data:`~livegen.music.corpus.CACHE_ARRAYS`) of one MIDI file's bytes, sorted like a tune.

    Raises whatever symusic raises for a file it cannot parse, and :class:`ValueError`
    for a time division that is not ticks per beat.
    """
    import symusic

    score: Any = symusic.Score.from_midi(data)  # typed Any: symusic's type hints give the factory, not ScoreTick
    tpq = int(score.ticks_per_quarter)
    if tpq <= 0:
        raise ValueError(f"time division {tpq}: expected ticks per quarter note")
    columns: dict[str, list[np.ndarray]] = {"time": [], "duration": [], "pitch": [], "velocity": [], "part": []}
    for index, track in enumerate(score.tracks):
        notes = track.notes.numpy()
        count = len(notes["pitch"])
        if not count:
            continue
        for key in ("time", "duration", "pitch", "velocity"):
            columns[key].append(np.asarray(notes[key]))
        columns["part"].append(np.full(count, index, dtype=np.uint16))
    if not columns["pitch"]:
        return {name: np.zeros(0, dtype=dtype) for name, dtype in CACHE_ARRAYS.items()}
    time_ = np.concatenate(columns["time"]).astype(np.int64)
    start = _scale(time_, tpq)
    end = _scale(time_ + np.concatenate(columns["duration"]).astype(np.int64), tpq)
    pitch = np.concatenate(columns["pitch"]).astype(np.int16)
    part = np.concatenate(columns["part"])
    order = np.lexsort((part, -pitch, start))  # by onset, highest pitch first (as load_corpus sorts)
    return {
        "pitch": pitch[order],
        "onset": (start[order] / PPQN).astype(np.float32),
        "duration": ((end - start)[order] / PPQN).astype(np.float32),
        "velocity": np.concatenate(columns["velocity"]).astype(np.uint8)[order],
        "part": part[order],
    }


def convert_file(path: str, known_sha256: str | None = None) -> dict[str, Any]:
    """One file's entry: ``status`` ok (with its ``arrays``), failed (with its ``reason``) or unchanged
    (its content's sha256 is ``known_sha256``: the previous arrays still hold it)."""
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        return {"status": "failed", "reason": "a directory, not a MIDI file"}
    except OSError as err:
        return {"status": "failed", "reason": f"cannot be read ({err.strerror or err})"}
    digest = hashlib.sha256(data).hexdigest()
    if digest == known_sha256:
        return {"status": "unchanged", "sha256": digest}
    if not data:
        return {"status": "failed", "reason": "empty (0 bytes)", "sha256": digest}
    try:
        arrays = convert_bytes(data)
    except Exception as err:  # symusic raises RuntimeError, ValueError and others on broken files
        reason = " ".join(str(err).split()) or type(err).__name__
        return {"status": "failed", "reason": f"not a readable MIDI file ({reason})", "sha256": digest}
    return {"status": "ok", "sha256": digest, "arrays": arrays, "parts": len(np.unique(arrays["part"]))}


def _convert_chunk(items: Sequence[tuple[str, str, str | None]]) -> list[tuple[str, dict[str, Any]]]:
    """Worker task: (name, result) of each (name, path, known sha256)."""
    return [(name, convert_file(path, known)) for name, path, known in items]


# ---- the folder and the previous cache ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Found:
    """One candidate file of the source tree."""

    name: str  # path inside the source, with forward slashes
    path: Path
    size: int
    mtime_ns: int
    is_dir: bool


def find_midi(root: Path) -> list[Found]:
    """Every ``.mid``/``.midi`` entry under ``root`` (directories with such a name too, to be reported), by name."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for entry in [*dirs, *files]:
            if not entry.lower().endswith(MIDI_SUFFIXES):
                continue
            path = Path(folder) / entry
            try:
                stat = path.stat()
            except OSError:  # a dangling link: reported by convert_file
                found.append(Found(path.relative_to(root).as_posix(), path, -1, -1, False))
                continue
            is_dir = entry in dirs
            found.append(Found(path.relative_to(root).as_posix(), path, stat.st_size, stat.st_mtime_ns, is_dir))
    found.sort(key=lambda f: f.name)
    return found


def _previous(out: Path, parser: str) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """The entries (by name) and arrays of the cache already in ``out``; empty when there is none or it was
    made by another parser. A foreign or damaged cache is an error: it is never overwritten silently."""
    if not (out / CACHE_MANIFEST).is_file():
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ExportError(
                f"--out {out}: exists and is not a prepared cache (no {CACHE_MANIFEST}); "
                "expected a new or empty folder, or a cache written by `python -m export prepare`"
            )
        return {}, {}
    try:
        manifest, arrays = open_cache(out)
    except CorpusError as err:
        raise ExportError(f"{err}; or remove the folder to start afresh") from err
    if manifest.get("parser") != parser:
        log.info("the cache was made by %s; converting every file again with %s", manifest.get("parser"), parser)
        return {}, {}
    entries = {e["path"]: e for e in manifest["files"] if isinstance(e, dict) and isinstance(e.get("path"), str)}
    return entries, arrays


# ---- the run ------------------------------------------------------------------------------------


@dataclass(slots=True)
class PrepareReport:
    """What a run of :func:`prepare` did."""

    out: Path
    files: int = 0  # candidate entries found
    converted: int = 0  # parsed in this run (ok or failed)
    reused: int = 0  # unchanged since the previous run
    notes: int = 0
    usable: int = 0  # files with at least MIN_NOTES notes
    failed: list[tuple[str, str]] = field(default_factory=list)
    few_notes: list[tuple[str, int]] = field(default_factory=list)
    seconds: float = 0.0  # the conversion, wall time
    interrupted: bool = False

    @property
    def files_per_second(self) -> float:
        return self.converted / self.seconds if self.seconds > 0 else 0.0


def _chunks(items: Sequence[tuple[str, str, str | None]], sizes: dict[str, int]) -> Iterator[list]:
    chunk: list[tuple[str, str, str | None]] = []
    size = 0
    for item in items:
        chunk.append(item)
        size += max(sizes[item[0]], 0)
        if len(chunk) >= CHUNK_FILES or size >= CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    )


def _run_pool(
    items: list[tuple[str, str, str | None]], sizes: dict[str, int], jobs: int, results: dict[str, dict[str, Any]]
) -> None:
    """Convert ``items`` in ``jobs`` worker processes into ``results`` (by name), with a progress bar.

    A worker that dies (a parser crash) breaks the pool and every task in flight: those files are then
    converted one at a time in a single worker, so that a file that kills its worker again is reported
    as failed and the others are converted.
    """
    started = time.perf_counter()
    with _bar() as bar:
        task = bar.add_task("converting MIDI", total=len(items), rate="")

        def advance(count: int) -> None:
            rate = len(results) / max(time.perf_counter() - started, 1e-9)
            bar.update(task, advance=count, rate=f"{rate:.0f} files/s")

        lost: list[tuple[str, str, str | None]] = []
        pool = ProcessPoolExecutor(max_workers=jobs)
        try:
            futures: dict[Future, list] = {pool.submit(_convert_chunk, c): c for c in _chunks(items, sizes)}
            while futures:
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in done:
                    chunk = futures.pop(future)
                    try:
                        results.update(future.result())
                    except BrokenProcessPool:
                        lost.extend(chunk)
                        continue
                    advance(len(chunk))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if lost:
            log.warning("a worker process died; converting its %d files again one at a time", len(lost))
        pool = ProcessPoolExecutor(max_workers=1)
        try:
            for item in lost:
                try:
                    results.update(pool.submit(_convert_chunk, [item]).result())
                except BrokenProcessPool:
                    results[item[0]] = {"status": "failed", "reason": "the MIDI parser crashed on it"}
                    pool.shutdown(wait=True)
                    pool = ProcessPoolExecutor(max_workers=1)
                advance(1)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _run_serial(items: list[tuple[str, str, str | None]], results: dict[str, dict[str, Any]]) -> None:
    started = time.perf_counter()
    with _bar() as bar:
        task = bar.add_task("converting MIDI", total=len(items), rate="")
        for name, path, known in items:
            results[name] = convert_file(path, known)
            rate = len(results) / max(time.perf_counter() - started, 1e-9)
            bar.update(task, advance=1, rate=f"{rate:.0f} files/s")


class _Terminated(Exception):
    """SIGTERM during a run: save what was converted, then stop."""


def prepare(data: Path, out: Path, *, jobs: int | None = None) -> PrepareReport:
    """Convert the MIDI files under ``data`` into the prepared cache ``out`` (see the module docstring)."""
    if not data.is_dir():
        raise ExportError(f"--data {data}: not a folder; expected a folder tree of .mid or .midi files")
    jobs = jobs or os.cpu_count() or 1
    if jobs < 1:
        raise ExportError(f"--jobs {jobs}: expected at least 1 worker process")
    parser = parser_version()
    previous, old_arrays = _previous(out, parser)
    found = find_midi(data)
    if not found:
        raise ExportError(f"--data {data}: holds no .mid or .midi files")
    report = PrepareReport(out=out, files=len(found))
    results: dict[str, dict[str, Any]] = {}
    todo: list[tuple[str, str, str | None]] = []
    for f in found:
        old = previous.get(f.name)
        if f.is_dir:
            results[f.name] = {"status": "failed", "reason": "a directory, not a MIDI file"}
        elif old is not None and old.get("size") == f.size and old.get("mtime_ns") == f.mtime_ns:
            results[f.name] = {"status": "unchanged", "sha256": old.get("sha256")}
        else:
            todo.append((f.name, str(f.path), old.get("sha256") if old else None))
    log.info(
        "%s: %d MIDI files, %d new or changed; converting with %d worker process%s",
        data,
        len(found),
        len(todo),
        jobs,
        "es" if jobs > 1 else "",
    )
    started = time.perf_counter()
    previous_handler = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: object) -> None:
        raise _Terminated

    in_main = _in_main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, on_term)
    try:
        if todo:
            sizes = {f.name: f.size for f in found}
            if jobs == 1 or len(todo) < 2:
                _run_serial(todo, results)
            else:
                _run_pool(todo, sizes, jobs, results)
    except (KeyboardInterrupt, _Terminated):
        report.interrupted = True
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous_handler)
    report.seconds = time.perf_counter() - started
    report.converted = sum(1 for name, _, _ in todo if name in results and results[name]["status"] != "unchanged")
    _commit(out, found, results, previous, old_arrays, parser, report)
    if report.interrupted:
        raise ExportError(
            f"interrupted: {len(results)} of {len(found)} files done and saved in {out}; "
            "run the same command again to convert the rest"
        )
    return report


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _commit(
    out: Path,
    found: Sequence[Found],
    results: dict[str, dict[str, Any]],
    previous: dict[str, dict[str, Any]],
    old_arrays: dict[str, np.ndarray],
    parser: str,
    report: PrepareReport,
) -> None:
    """Write the arrays of a new generation, then the manifest naming them, then remove the old generation."""
    entries: list[dict[str, Any]] = []
    sources: list[tuple[str, Any]] = []  # ("old", (offset, count)) or ("new", arrays)
    total = 0
    for f in found:
        result = results.get(f.name)
        if result is None:
            continue  # not reached before an interruption
        entry: dict[str, Any] = {"path": f.name, "size": f.size, "mtime_ns": f.mtime_ns}
        if result["status"] == "unchanged":
            old = previous[f.name]
            entry |= {k: v for k, v in old.items() if k not in ("path", "size", "mtime_ns", "offset")}
            if old.get("status") == "ok":
                sources.append(("old", (int(old["offset"]), int(old["notes"]))))
        elif result["status"] == "ok":
            count = len(result["arrays"]["pitch"])
            entry |= {"status": "ok", "sha256": result["sha256"], "notes": count, "parts": result["parts"]}
            sources.append(("new", result["arrays"]))
        else:
            entry |= {"status": "failed", "reason": result["reason"]}
            if "sha256" in result:
                entry["sha256"] = result["sha256"]
        if entry.get("status") == "ok":
            entry["offset"] = total
            total += int(entry["notes"])
            if entry["notes"] < MIN_NOTES:
                report.few_notes.append((f.name, int(entry["notes"])))
            else:
                report.usable += 1
        else:
            report.failed.append((f.name, str(entry.get("reason", "unknown"))))
        entries.append(entry)
    report.notes = total
    report.reused = sum(1 for r in results.values() if r["status"] == "unchanged")

    out.mkdir(parents=True, exist_ok=True)
    old_manifest = out / CACHE_MANIFEST
    generation = 1
    old_files: dict[str, str] = {}
    if old_manifest.is_file():
        try:
            known = json.loads(old_manifest.read_text(encoding="utf-8"))
            generation = int(known.get("generation", 0)) + 1
            old_files = {name: str(known["arrays"][name]["file"]) for name in CACHE_ARRAYS}
        except (ValueError, OSError, KeyError, TypeError):
            generation = 1
    # Nothing new and the old rows in the same order: keep the old arrays, rewrite only the manifest.
    unchanged = bool(old_arrays) and all(kind == "old" for kind, _ in sources)
    unchanged = unchanged and [s[0] for _, s in sources] == [e["offset"] for e in entries if e.get("status") == "ok"]
    unchanged = unchanged and total == len(old_arrays["pitch"])
    if unchanged and old_files:
        generation -= 1
    files = old_files if unchanged and old_files else {name: f"{name}-{generation:06d}.npy" for name in CACHE_ARRAYS}
    for name, dtype in CACHE_ARRAYS.items():
        path = out / files[name]
        if unchanged and old_files:
            continue
        if total == 0:
            np.save(path, np.zeros(0, dtype=dtype))
            continue
        array = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=(total,))
        row = 0
        for kind, source in sources:
            if kind == "old":
                offset, count = source
                array[row : row + count] = old_arrays[name][offset : offset + count]
            else:
                count = len(source[name])
                array[row : row + count] = source[name]
            row += count
        array.flush()
        del array
    manifest = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "generation": generation,
        "parser": parser,
        "notes": total,
        "arrays": {name: {"file": files[name], "dtype": dtype} for name, dtype in CACHE_ARRAYS.items()},
        "files": entries,
    }
    tmp = out / f".{CACHE_MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=0) + "\n", encoding="utf-8")
    os.replace(tmp, out / CACHE_MANIFEST)
    keep = set(files.values())
    for stale in out.glob("*-*.npy"):
        if stale.name not in keep and stale.name.split("-")[0] in CACHE_ARRAYS:
            stale.unlink(missing_ok=True)
    _write_report(out / REPORT, report)


def _write_report(path: Path, report: PrepareReport) -> None:
    lines = [
        f"{report.files} MIDI files; {report.usable} usable (at least {MIN_NOTES} notes), "
        f"{len(report.few_notes)} with fewer notes, {len(report.failed)} skipped; {report.notes} notes in all",
        "",
    ]
    if report.failed:
        lines += ["Skipped (not converted):", *(f"  {name}: {reason}" for name, reason in report.failed), ""]
    if report.few_notes:
        lines += [
            f"Converted, but too short to train on (fewer than {MIN_NOTES} notes):",
            *(f"  {name}: {count} notes" for name, count in report.few_notes),
            "",
        ]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, path)


def log_report(report: PrepareReport, shown: int = 10) -> None:
    """The run's summary and the first ``shown`` skipped files (all of them are in the report file)."""
    log.info(
        "%s: %d files, %d converted in %.1f s (%.0f files/s), %d unchanged; %d usable, %d notes",
        report.out,
        report.files,
        report.converted,
        report.seconds,
        report.files_per_second,
        report.reused,
        report.usable,
        report.notes,
    )
    if report.failed:
        log.warning("%d files skipped (listed in %s):", len(report.failed), report.out / REPORT)
        for name, reason in report.failed[:shown]:
            log.warning("  %s: %s", name, reason)
        if len(report.failed) > shown:
            log.warning("  ... and %d more", len(report.failed) - shown)
