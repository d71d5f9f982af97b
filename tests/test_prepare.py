"""``python -m export prepare``: a folder tree of MIDI files, broken ones among them, into a prepared cache
that every corpus reader takes in place of the folder.

Context: setup (tests of the training-only ``export`` package; needs the ``train`` extra for symusic).
"""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="training tests need the train extra: pip install -e '.[train]'")
pytest.importorskip("symusic", reason="prepare needs symusic (train extra)")

import export.prepare as prepare_module
from benchmarks.training import piece as synthetic_piece
from export.__main__ import main
from export.errors import ExportError
from export.prepare import REPORT, prepare
from livegen.music.corpus import CACHE_MANIFEST, CorpusError, load_corpus, load_parts
from livegen.music.midifile import write_midi


def write_corpus(folder: Path, count: int = 8, *, seed: int = 3, voices: int = 2) -> list[str]:
    """``count`` pieces of ``voices`` voices, the last two in a subfolder; returns their names inside ``folder``."""
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        name = f"piece{i}.mid" if i < count - 2 else f"more/piece{i}.mid"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        write_midi(folder / name, {"voices": synthetic_piece(rng, int(rng.integers(12, 24)), voices)})
        names.append(name)
    return names


#: The broken entries and the words their reason must hold.
BROKEN = {
    "broken/truncated.mid": "not a readable MIDI file",
    "broken/garbage.mid": "not a readable MIDI file",
    "broken/empty.mid": "empty (0 bytes)",
    "broken/folder.mid": "a directory",
}


def write_broken(folder: Path, good: Path) -> None:
    (folder / "broken").mkdir(parents=True, exist_ok=True)
    (folder / "broken/truncated.mid").write_bytes(good.read_bytes()[:30])
    (folder / "broken/garbage.mid").write_bytes(bytes(np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8)))
    (folder / "broken/empty.mid").write_bytes(b"")
    (folder / "broken/folder.mid").mkdir()
    (folder / "notes.txt").write_text("not MIDI, not looked at")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "midi"
    write_corpus(folder)
    write_broken(folder, folder / "piece0.mid")
    return folder


def test_prepare_skips_broken_files_with_their_reason_and_keeps_the_rest(source: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert main(["prepare", "--data", str(source), "--out", str(cache), "--jobs", "2"]) == 0
    manifest = json.loads((cache / CACHE_MANIFEST).read_text())
    entries = {e["path"]: e for e in manifest["files"]}
    assert sorted(entries) == sorted(
        [*BROKEN, *(f"piece{i}.mid" for i in range(6)), "more/piece6.mid", "more/piece7.mid"]
    )
    report = (cache / REPORT).read_text()
    for name, reason in BROKEN.items():
        assert entries[name]["status"] == "failed" and reason in entries[name]["reason"]
        assert f"{name}: " in report and reason in report
    assert sum(e["status"] == "ok" for e in entries.values()) == 8
    assert "4 skipped" in report.splitlines()[0]


def test_a_cache_gives_the_tunes_and_parts_of_its_folder(source: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    report = prepare(source, cache, jobs=2)
    assert report.usable == 8 and report.converted == 11 and len(report.failed) == 4
    folder = {Path(t.name).relative_to(source).as_posix(): t for t in load_corpus(str(source))}
    cached = {t.name: t for t in load_corpus(str(cache))}
    assert sorted(cached) == sorted(folder)  # named by their path inside the source: a cache can move
    for name, tune in folder.items():
        for field in ("pitch", "onset", "duration"):
            mine, theirs = getattr(cached[name], field), getattr(tune, field)
            assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs), (name, field)
        assert isinstance(cached[name].pitch, np.memmap)  # read from the mapped arrays, not copied
        velocity = cached[name].velocity
        assert velocity is not None and int(velocity.min()) >= 40  # the velocities, kept for crnngan
    parts = {p.name: p for p in load_parts(str(cache), tracks=2)}
    folder_parts = {Path(p.name).relative_to(source).as_posix(): p for p in load_parts(str(source), tracks=2)}
    assert sorted(parts) == sorted(folder_parts)
    for name, piece in folder_parts.items():
        for mine, theirs in zip(parts[name].tracks, piece.tracks, strict=True):
            assert np.array_equal(mine.pitch, theirs.pitch) and np.array_equal(mine.onset, theirs.onset)
    assert len(load_corpus(str(cache), limit=3)) == 3


def test_running_again_converts_only_new_and_changed_files(source: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    prepare(source, cache, jobs=2)
    again = prepare(source, cache, jobs=2)
    assert again.converted == 0 and again.reused == 11
    rng = np.random.default_rng(99)
    write_midi(source / "piece1.mid", {"voices": synthetic_piece(rng, 16, 2)})  # changed
    write_midi(source / "more/new.mid", {"voices": synthetic_piece(rng, 16, 2)})  # new
    (source / "piece2.mid").unlink()  # removed
    stamp = (source / "piece3.mid").stat()
    os.utime(source / "piece3.mid", ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))  # touched, same content
    third = prepare(source, cache, jobs=2)
    assert third.converted == 2 and third.reused == 9
    names = {t.name for t in load_corpus(str(cache))}
    assert "more/new.mid" in names and "piece2.mid" not in names
    changed = next(t for t in load_corpus(str(cache)) if t.name == "piece1.mid")
    fresh = next(t for t in load_corpus(str(source)) if t.name.endswith("/piece1.mid"))
    assert np.array_equal(changed.pitch, fresh.pitch)
    assert len(list(cache.glob("pitch-*.npy"))) == 1  # the previous generation's arrays are gone


@pytest.mark.skipif(
    multiprocessing.get_start_method() != "fork",
    reason="the test makes a worker crash by patching the parser, which reaches the workers only "
    "when they are forked (Linux's default start method)",
)
def test_a_worker_that_dies_costs_only_its_file(source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A parser crash (a segfault in C++) kills a worker process: the run goes on and names the file."""
    real = prepare_module.convert_file

    def crashing(path: str, known: str | None = None) -> dict:
        if path.endswith("piece4.mid"):
            os._exit(3)
        return real(path, known)

    monkeypatch.setattr(prepare_module, "convert_file", crashing)  # the forked workers inherit it
    report = prepare(source, tmp_path / "cache", jobs=2)
    assert ("piece4.mid", "the MIDI parser crashed on it") in report.failed
    assert report.usable == 7


def test_a_corrupt_or_foreign_cache_is_a_clear_error(source: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    prepare(source, cache, jobs=1)
    manifest_path = cache / CACHE_MANIFEST
    manifest = json.loads(manifest_path.read_text())
    pitch = cache / manifest["arrays"]["pitch"]["file"]
    original = pitch.read_bytes()
    pitch.write_bytes(original[: len(original) // 2])
    with pytest.raises(CorpusError, match=rf"{pitch.name}: .*expected int16\[\d+\]|{pitch.name}: not a readable"):
        load_corpus(str(cache))
    pitch.write_bytes(original)
    manifest_path.write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(CorpusError, match=r"livegen-cache.json: cache version 99; this livegen reads version 1"):
        load_corpus(str(cache))
    manifest_path.write_text(json.dumps({**manifest, "format": "something-else"}))
    with pytest.raises(CorpusError, match=r"field 'format' is 'something-else', expected 'livegen-midi-cache'"):
        load_parts(str(cache), tracks=2)
    manifest_path.write_text("{not json")
    with pytest.raises(CorpusError, match=r"livegen-cache.json: not a readable prepared-cache manifest"):
        load_corpus(str(cache))
    # prepare refuses to write into a damaged cache or a folder that is not one
    with pytest.raises(ExportError, match="remove the folder to start afresh"):
        prepare(source, cache, jobs=1)
    with pytest.raises(ExportError, match="is not a prepared cache"):
        prepare(source, source / "more", jobs=1)
    assert main(["prepare", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c2")]) == 1


def test_every_family_trains_from_a_cache(source: Path, tmp_path: Path) -> None:
    """The same command with --data CACHE: midirnn through the CLI (the frame and GAN families'
    cache runs are in tests/test_distributed.py)."""
    cache = tmp_path / "cache"
    prepare(source, cache, jobs=2)
    run = ["--epochs", "1", "--window", "8", "--batch-size", "8", "--hidden", "16"]
    assert main(["train", "midirnn", "--data", str(cache), "--out", str(tmp_path / "run"), *run]) == 0
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
