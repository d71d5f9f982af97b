"""Corpora: the folk tunes, Bach chorales and four-voice works music21 ships, or a folder of the user's MIDI files.

Context: setup. Used by training (``export/``) and by ``livegen evaluate`` for
reference sets. music21 is imported only when a ``corpus:`` set is converted
(it comes with the ``train`` and ``eval`` extras); MIDI folders need only mido.

A corpus is converted once into a cache of note arrays, one per tune, and split
into training, validation and held-out sets *by tune*, so that no tune leaks
from training into evaluation. The cache is a single ``.npz`` under
``$XDG_CACHE_HOME/livegen`` (or ``~/.cache/livegen``).

A large MIDI collection is converted once by ``python -m export prepare`` into a
*prepared cache*: a folder of memory-mapped ``.npy`` note arrays and a versioned
manifest (:data:`CACHE_MANIFEST`). Every function here that takes a MIDI folder
also takes such a folder and reads it without parsing MIDI again (numpy only: the
host's ``livegen evaluate`` reads it too). The format is defined here, beside its
reader; the writer is :mod:`export.prepare`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from livegen.errors import LivegenError
from livegen.music.midifile import read_midi

log = logging.getLogger(__name__)

#: music21 corpus folders that hold monophonic folk tunes in ABC notation.
FOLK_COLLECTIONS = ("essenFolksong", "oneills1850", "ryansMammoth")

_TUNE_START = re.compile(r"^X:", re.MULTILINE)


class CorpusError(LivegenError, ValueError):
    """A corpus specification or folder that cannot be read."""


@dataclass(frozen=True, slots=True)
class Tune:
    """One melody: onsets, pitches and durations in quarter notes (beats)."""

    name: str
    pitch: np.ndarray  # int16 [n]
    onset: np.ndarray  # float32 [n], beats from the tune's start
    duration: np.ndarray  # float32 [n], beats
    #: uint8 [n] MIDI velocities where the source kept them (a prepared cache), else None.
    velocity: np.ndarray | None = None
    #: Length of a bar in beats (quarter notes), from the source's first time signature (4 without one).
    bar_beats: float = 4.0
    #: Onset of the first full bar in beats (the length of a pickup bar; 0 without one).
    downbeat: float = 0.0

    def __len__(self) -> int:
        return int(self.pitch.shape[0])


@dataclass(frozen=True, slots=True)
class Split:
    train: list[Tune]
    validation: list[Tune]
    held_out: list[Tune]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "livegen"


def _music21_corpus_root() -> Path:
    import music21

    return Path(music21.__file__).parent / "corpus"


def _abc_tunes(collections: Sequence[str]) -> Iterator[tuple[str, str]]:
    """Yield (name, abc text) for every tune of the named music21 collections."""
    root = _music21_corpus_root()
    for collection in collections:
        folder = root / collection
        if not folder.is_dir():
            raise CorpusError(f"music21 corpus folder {folder} is missing; reinstall music21")
        for path in sorted(folder.rglob("*.abc")):
            text = path.read_text(encoding="utf-8", errors="replace")
            starts = [m.start() for m in _TUNE_START.finditer(text)]
            for i, start in enumerate(starts):
                end = starts[i + 1] if i + 1 < len(starts) else len(text)
                rel = path.relative_to(root)
                yield f"{rel}#{i}", text[start:end]


def _tune_from_music21(name: str, parse: Callable[[], Any], *, melody_only: bool) -> Tune | None:
    """Notes of a music21 score in beats (worker process); None when it has fewer than 8.

    ``melody_only`` keeps the top note of each chord (one line); otherwise every pitch.
    Grace notes (no duration) are dropped.
    """
    from music21 import chord, note

    try:
        score = parse()
        bar_beats, downbeat = _metre(score)
        flat = score.stripTies().flatten().notes
    except Exception as err:  # music21 raises many unrelated types on odd files
        log.debug("skipping %s: %s", name, err)
        return None
    rows: list[tuple[int, float, float]] = []
    for element in flat:
        length = float(element.duration.quarterLength)
        if length <= 0:
            continue
        if isinstance(element, note.Note):
            rows.append((element.pitch.midi, float(element.offset), length))
        elif isinstance(element, chord.Chord):
            pitches = [max(p.midi for p in element.pitches)] if melody_only else [p.midi for p in element.pitches]
            rows.extend((pitch, float(element.offset), length) for pitch in pitches)
    if len(rows) < 8:
        return None
    rows.sort(key=lambda r: (r[1], -r[0]))
    arr = np.asarray(rows, dtype=np.float64)
    return Tune(
        name=name,
        pitch=arr[:, 0].astype(np.int16),
        onset=arr[:, 1].astype(np.float32),
        duration=arr[:, 2].astype(np.float32),
        bar_beats=bar_beats,
        downbeat=downbeat,
    )


def _metre(score: Any) -> tuple[float, float]:
    """(bar length, first downbeat) in beats of a music21 score: its first time signature, its pickup bar."""
    from music21 import meter, stream

    signature = next(iter(score.recurse().getElementsByClass(meter.TimeSignature)), None)
    bar_beats = float(signature.barDuration.quarterLength) if signature is not None else 4.0
    first = next(iter(score.recurse().getElementsByClass(stream.Measure)), None)
    downbeat = 0.0
    if first is not None and float(first.paddingLeft) > 0:
        downbeat = float(first.duration.quarterLength)
    return bar_beats, downbeat


def _tune_from_abc(item: tuple[str, str]) -> Tune | None:
    """One ABC tune, its melody (worker process)."""
    from music21 import converter

    name, text = item
    return _tune_from_music21(name, lambda: converter.parse(text, format="abc"), melody_only=True)


def _bach_chorales() -> list[Path]:
    """The four-part chorales (``bwv*.mxl``) of music21's Bach folder."""
    folder = _music21_corpus_root() / "bach"
    if not folder.is_dir():
        raise CorpusError(f"music21 corpus folder {folder} is missing; reinstall music21")
    return sorted(folder.glob("bwv*.mxl"))


def _tune_from_score(path: Path) -> Tune | None:
    """All parts of one score merged into one note stream (worker process)."""
    from music21 import converter

    return _tune_from_music21(path.name, lambda: converter.parse(str(path)), melody_only=False)


#: The voices of a four-part chorale, top to bottom, as music21 names its parts.
SATB = ("soprano", "alto", "tenor", "bass")


@dataclass(frozen=True, slots=True)
class MultiTune:
    """One piece as several tracks (voices or instruments), each a :class:`Tune` on the same time line."""

    name: str
    tracks: tuple[Tune, ...]

    def __len__(self) -> int:
        return sum(len(t) for t in self.tracks)


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


def _parse_parts(path: Path) -> list[Any] | None:
    """The parts of the score at ``path`` (worker process); None when music21 cannot read it."""
    from music21 import converter

    try:
        return list(getattr(converter.parse(str(path)), "parts", []))
    except Exception as err:  # music21 raises many unrelated types on odd files
        log.debug("skipping %s: %s", path, err)
        return None


def _satb_parts(parts: Sequence[Any]) -> list[Any] | None:
    """The parts whose names contain soprano, alto, tenor and bass, in that order; None if one is missing."""
    found = [next((p for p in parts if voice in str(p.partName or p.id or "").lower()), None) for voice in SATB]
    return None if any(p is None for p in found) else found


def _tracks(name: str, parts: Sequence[Any]) -> MultiTune | None:
    """``parts`` as the tracks of the piece ``name``, each one line; None when one has fewer than 8 notes."""
    tracks = []
    for k, part in enumerate(parts):
        label = SATB[k] if len(parts) == len(SATB) else str(k + 1)
        tune = _tune_from_music21(f"{name}#{label}", _constant(part), melody_only=True)
        if tune is None:
            return None
        tracks.append(tune)
    return MultiTune(name, tuple(tracks))


def _voices_from_score(path: Path) -> MultiTune | None:
    """The soprano, alto, tenor and bass parts of one chorale (worker process); None when one is missing.

    Parts are matched by name (a part whose name contains "soprano", and so on); a chorale
    with an extra instrumental part keeps its four voices. The piece is named like
    :func:`_tune_from_score` names it, so :func:`split_by_tune` splits both the same way.
    """
    parts = _parse_parts(path)
    voices = _satb_parts(parts) if parts is not None else None
    return _tracks(path.name, voices) if voices is not None else None


#: Folders of music21's corpus that corpus:four-voice leaves out: demonstrations and exercises, not repertoire.
_NOT_REPERTOIRE = ("demos", "theoryExercises")
#: Score formats corpus:four-voice reads (music21 parses each); ABC files are the folk collections' melodies.
_SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn")


def _kern_spines(path: Path) -> int:
    """The ``**kern`` spines (parts) a Humdrum file declares, read from its first exclusive-interpretation line."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.startswith("**"):
                return line.rstrip("\n").split("\t").count("**kern")
    return 0


def _four_voice_scores() -> list[Path]:
    """The scores corpus:four-voice converts: the Bach chorales, then every other score of music21's corpus.

    Left out unparsed: the Bach folder's other files (the same chorales in other
    formats), the folders of :data:`_NOT_REPERTOIRE`, a ``.krn`` or ``.xml`` beside an
    ``.mxl`` of the same name (one piece in two formats), and a Humdrum file that
    declares other than four parts. Which of the rest hold four voices is decided on
    parsing (:func:`_four_voices`).
    """
    root = _music21_corpus_root()
    scores: list[Path] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name in ("bach", *_NOT_REPERTOIRE):
            continue
        for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in _SCORE_SUFFIXES):
            if path.suffix.lower() != ".mxl" and path.with_suffix(".mxl").exists():
                continue
            if path.suffix.lower() == ".krn" and _kern_spines(path) != 4:
                continue
            scores.append(path)
    return _bach_chorales() + scores


def _four_voices(path: Path) -> MultiTune | None:
    """The four voices of one score, top to bottom (worker process); None when it has no four voices.

    A chorale (the Bach folder) gives its parts named soprano, alto, tenor and bass and is
    named as corpus:bach names it, so corpus:bach's held-out chorales are held out here
    too. Any other score gives its parts in score order when it has exactly four, else
    its parts named soprano, alto, tenor and bass (a hymn with a solo line and a piano);
    it is named by its path inside music21's corpus (``haydn/opus74no1/movement1.mxl``).
    """
    parts = _parse_parts(path)
    if parts is None:
        return None
    if path.parent.name == "bach":
        voices = _satb_parts(parts)
        name = path.name
    else:
        voices = parts if len(parts) == len(SATB) else _satb_parts(parts)
        name = path.relative_to(_music21_corpus_root()).as_posix()
    return _tracks(name, voices) if voices is not None else None


def _tune_from_midi(path: Path) -> Tune | None:
    """Read the notes of one MIDI file, all tracks merged, in beats."""
    song = read_midi(path)
    notes = sorted(song.notes, key=lambda n: (n.start, -n.pitch))
    if len(notes) < 8:
        return None
    ppq = song.ppqn
    return Tune(
        name=str(path),
        pitch=np.asarray([n.pitch for n in notes], dtype=np.int16),
        onset=np.asarray([n.start / ppq for n in notes], dtype=np.float32),
        duration=np.asarray([n.duration / ppq for n in notes], dtype=np.float32),
    )


def _save(path: Path, tunes: Sequence[Tune]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lengths = np.asarray([len(t) for t in tunes], dtype=np.int64)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")  # several training processes may convert at once
    np.savez_compressed(
        tmp,
        names=np.asarray([t.name for t in tunes]),
        lengths=lengths,
        pitch=np.concatenate([t.pitch for t in tunes]),
        onset=np.concatenate([t.onset for t in tunes]),
        duration=np.concatenate([t.duration for t in tunes]),
        bar_beats=np.asarray([t.bar_beats for t in tunes], dtype=np.float32),
        downbeat=np.asarray([t.downbeat for t in tunes], dtype=np.float32),
    )
    tmp.replace(path)


def _load(path: Path) -> list[Tune]:
    # Each ``data[key]`` decompresses the whole array again: read every array once,
    # or each tune would hold a view into its own full copy of the corpus.
    with np.load(path) as data:
        names, lengths = data["names"], data["lengths"]
        pitch, onset, duration = data["pitch"], data["onset"], data["duration"]
        bar_beats = data["bar_beats"] if "bar_beats" in data else np.full(len(names), 4.0)
        downbeat = data["downbeat"] if "downbeat" in data else np.zeros(len(names))
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [
        Tune(
            name=str(name),
            pitch=pitch[a:b],
            onset=onset[a:b],
            duration=duration[a:b],
            bar_beats=float(bar),
            downbeat=float(down),
        )
        for name, a, b, bar, down in zip(names, bounds[:-1], bounds[1:], bar_beats, downbeat, strict=True)
    ]


def _convert(items: list, worker, label: str, jobs: int) -> list[Tune]:
    tunes: list[Tune] = []
    with Progress(transient=False) as progress:
        task = progress.add_task(label, total=len(items))
        if jobs <= 1:
            results = map(worker, items)
            for tune in results:
                progress.advance(task)
                if tune is not None:
                    tunes.append(tune)
        else:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                for tune in pool.map(worker, items, chunksize=16):
                    progress.advance(task)
                    if tune is not None:
                        tunes.append(tune)
    return tunes


# ---- prepared caches (written by ``python -m export prepare``) ---------------------------

#: The manifest that makes a folder a prepared cache.
CACHE_MANIFEST = "livegen-cache.json"
CACHE_FORMAT = "livegen-midi-cache"
CACHE_VERSION = 1
#: The note arrays of a cache and their dtypes: one row per note, file after file, each file's
#: notes in the order :func:`load_corpus` gives a MIDI file's (by onset, highest pitch first).
#: ``onset`` and ``duration`` are in beats; ``part`` numbers the file's parts (a MIDI track's
#: notes on one channel, as symusic splits a file).
CACHE_ARRAYS = {"pitch": "int16", "onset": "float32", "duration": "float32", "velocity": "uint8", "part": "uint16"}
#: Fewest notes a tune (or each track of a piece) needs, for MIDI folders and caches alike.
MIN_NOTES = 8


def is_cache(folder: Path) -> bool:
    """Whether ``folder`` is a prepared cache (it holds :data:`CACHE_MANIFEST`)."""
    return (folder / CACHE_MANIFEST).is_file()


def read_cache_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of the prepared cache ``folder``, checked; :class:`CorpusError` naming the file otherwise."""
    path = folder / CACHE_MANIFEST
    again = "run `python -m export prepare --data MIDI_FOLDER --out CACHE` to rebuild it"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CorpusError(f"{path}: not a readable prepared-cache manifest ({err}); {again}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise CorpusError(
            f"{path}: field 'format' is {got!r}, expected {CACHE_FORMAT!r} (the manifest `python -m export prepare` "
            "writes); is this folder a livegen cache?"
        )
    if manifest.get("version") != CACHE_VERSION:
        raise CorpusError(
            f"{path}: cache version {manifest.get('version')!r}; this livegen reads version {CACHE_VERSION}: {again}"
        )
    arrays, files, notes = manifest.get("arrays"), manifest.get("files"), manifest.get("notes")
    if not isinstance(arrays, dict) or not isinstance(files, list) or not isinstance(notes, int) or notes < 0:
        raise CorpusError(
            f"{path}: expected the fields 'arrays' (a table), 'files' (a list) and 'notes' (a count); {again}"
        )
    for name in CACHE_ARRAYS:
        entry = arrays.get(name)
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or "/" in entry["file"]:
            raise CorpusError(f"{path}: field 'arrays.{name}' names no array file of this folder; {again}")
    return manifest


def open_cache(folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The manifest and the memory-mapped, read-only note arrays of the prepared cache ``folder``."""
    manifest = read_cache_manifest(folder)
    notes = manifest["notes"]
    arrays: dict[str, np.ndarray] = {}
    for name, dtype in CACHE_ARRAYS.items():
        path = folder / manifest["arrays"][name]["file"]
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False) if notes else np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise CorpusError(
                f"{path}: not a readable .npy array ({err}); the cache is damaged: run `python -m export prepare` again"
            ) from err
        if array.dtype != np.dtype(dtype) or array.shape != (notes,):
            raise CorpusError(
                f"{path}: holds {array.dtype}{list(array.shape)}, expected {dtype}[{notes}] as {CACHE_MANIFEST} says; "
                "the cache is damaged: run `python -m export prepare` again"
            )
        arrays[name] = array
    return manifest, arrays


def cached_files(manifest: dict[str, Any], folder: Path) -> list[tuple[str, int, int]]:
    """(name, first row, notes) of each file a cache converted, in path order."""
    out = []
    for i, entry in enumerate(manifest["files"]):
        if not isinstance(entry, dict) or entry.get("status") != "ok":
            continue
        name, offset, count = entry.get("path"), entry.get("offset"), entry.get("notes")
        if (
            not isinstance(name, str)
            or not isinstance(offset, int)
            or not isinstance(count, int)
            or not 0 <= offset <= offset + count <= manifest["notes"]
        ):
            raise CorpusError(
                f"{folder / CACHE_MANIFEST}: files[{i}] ({name!r}): expected a path and notes within the "
                f"{manifest['notes']} rows of the arrays; run `python -m export prepare` again"
            )
        out.append((name, offset, count))
    return out


def _cache_tunes(folder: Path, limit: int | None) -> list[Tune]:
    """The tunes of a prepared cache: views into its memory-mapped arrays, named by their path in the source."""
    manifest, arrays = open_cache(folder)
    files = cached_files(manifest, folder)
    pitch, onset, duration, velocity = (arrays[k] for k in ("pitch", "onset", "duration", "velocity"))
    tunes = []
    for name, a, n in files:
        if n < MIN_NOTES:
            continue
        b = a + n
        tunes.append(Tune(name, pitch[a:b], onset[a:b], duration[a:b], velocity[a:b]))
        if limit is not None and len(tunes) >= limit:
            break
    if not tunes:
        raise CorpusError(
            f"no usable tune in the prepared cache {folder}: {len(files)} files converted, none with at least "
            f"{MIN_NOTES} notes"
        )
    return tunes


def _cache_pieces(folder: Path, tracks: int, limit: int | None) -> list[MultiTune]:
    """The pieces of a prepared cache as ``tracks`` tracks each: a file's busiest parts, highest first
    (as :func:`_parts_from_midi` takes a file's busiest channels)."""
    manifest, arrays = open_cache(folder)
    pieces = []
    for name, a, n in cached_files(manifest, folder):
        part = np.asarray(arrays["part"][a : a + n])
        ids, counts = np.unique(part, return_counts=True)
        busiest = np.argsort(-counts, kind="stable")[:tracks]
        if len(busiest) < tracks or int(counts[busiest].min()) < MIN_NOTES:
            continue
        columns = {k: np.asarray(arrays[k][a : a + n]) for k in ("pitch", "onset", "duration", "velocity")}
        masks = [part == ids[i] for i in busiest]
        masks.sort(key=lambda m: -float(np.mean(columns["pitch"][m].astype(np.float64))))
        pitch, onset, duration, velocity = (columns[k] for k in ("pitch", "onset", "duration", "velocity"))
        out = tuple(Tune(f"{name}#{k}", pitch[m], onset[m], duration[m], velocity[m]) for k, m in enumerate(masks))
        pieces.append(MultiTune(name, out))
        if limit is not None and len(pieces) >= limit:
            break
    if not pieces:
        raise CorpusError(f"no piece in the prepared cache {folder} has {tracks} parts with at least {MIN_NOTES} notes")
    return pieces


#: The corpora music21 ships: cache stem, the items to convert, the worker, what they are.
_CORPORA: dict[str, tuple[str, Callable[[], list[Any]], Callable[[Any], Tune | None], str]] = {
    "corpus:folk": ("folk-v2", lambda: list(_abc_tunes(FOLK_COLLECTIONS)), _tune_from_abc, "folk tunes"),
    "corpus:bach": ("bach-v2", _bach_chorales, _tune_from_score, "Bach chorales"),
}


def merge_tracks(piece: MultiTune) -> Tune:
    """The tracks of ``piece`` as one tune named like it: notes by onset, highest first; its first track's metre."""
    tracks = piece.tracks
    pitch = np.concatenate([t.pitch for t in tracks])
    onset = np.concatenate([t.onset for t in tracks])
    duration = np.concatenate([t.duration for t in tracks])
    order = np.lexsort((-pitch.astype(np.int64), onset))
    first = tracks[0]
    return Tune(
        name=piece.name,
        pitch=pitch[order],
        onset=onset[order],
        duration=duration[order],
        bar_beats=first.bar_beats,
        downbeat=first.downbeat,
    )


def load_corpus(spec: str, *, limit: int | None = None, jobs: int | None = None) -> list[Tune]:
    """Load the tunes named by ``spec``: one of :data:`CORPUS_SPECS`, a folder of MIDI files or a prepared cache.

    ``corpus:four-voice`` is its pieces' four voices merged (:func:`load_parts` converts
    and caches them). The other corpora are converted once and cached; ``limit`` takes the first N tunes
    (converted without touching the full cache, for quick runs and tests). A prepared
    cache's tunes are named by their path inside the converted folder and are views of
    its memory-mapped arrays; ``limit`` takes its first N usable tunes.
    """
    jobs = jobs or max(1, (os.cpu_count() or 1))
    if spec in _MERGED_PARTS:
        return [merge_tracks(piece) for piece in load_parts(spec, limit=limit, jobs=jobs)]
    if spec in _CORPORA:
        stem, items_of, worker, label = _CORPORA[spec]
        cache = cache_dir() / (f"{stem}.npz" if limit is None else f"{stem}-first{limit}.npz")
        if cache.exists():
            return _load(cache)
        items = items_of()[:limit]
        tunes = _convert(items, worker, f"converting {label}", jobs)
        _save(cache, tunes)
        log.info("cached %d %s in %s", len(tunes), label, cache)
        return tunes
    if spec.startswith("corpus:"):
        raise CorpusError(f"unknown corpus {spec!r}; accepted: {', '.join(CORPUS_SPECS)} or a folder of MIDI files")
    folder = Path(spec)
    if not folder.is_dir():
        raise CorpusError(f"training data {spec!r} is neither one of {', '.join(CORPUS_SPECS)} nor a folder")
    if is_cache(folder):
        return _cache_tunes(folder, limit)
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".mid", ".midi"))
    if limit is not None:
        paths = paths[:limit]
    if not paths:
        raise CorpusError(
            f"folder {folder} holds no .mid or .midi files (nor the {CACHE_MANIFEST} of a cache written by "
            "`python -m export prepare`)"
        )
    tunes = []
    unreadable = short = 0
    for path in paths:
        try:
            tune = _tune_from_midi(path)
        except LivegenError as err:
            log.warning("skipping %s", err)
            unreadable += 1
            continue
        if tune is None:
            log.warning("skipping %s: fewer than 8 notes", path)
            short += 1
        else:
            tunes.append(tune)
    if not tunes:
        raise CorpusError(
            f"no usable MIDI file in {folder}: {unreadable} unreadable, {short} with fewer than 8 notes; "
            "training needs files with at least 8 notes each"
        )
    return tunes


#: Corpora music21 ships, as several tracks per piece: cache stem, the items, the worker, what they are, the tracks.
_PartCorpus = tuple[str, Callable[[], list[Any]], Callable[[Any], MultiTune | None], str, tuple[str, ...]]
_PART_CORPORA: dict[str, _PartCorpus] = {
    "corpus:bach": ("bach-satb-v2", _bach_chorales, _voices_from_score, "Bach chorales, four voices", SATB),
    "corpus:four-voice": (
        "four-voice-v1",
        _four_voice_scores,
        _four_voices,
        "four-voice works",
        ("voice 1 (top)", "voice 2", "voice 3", "voice 4 (bottom)"),
    ),
}
#: Corpora whose merged tunes (:func:`load_corpus`) are their pieces' tracks merged (:func:`merge_tracks`).
_MERGED_PARTS = ("corpus:four-voice",)
#: Every ``corpus:`` spec :func:`load_corpus` accepts.
CORPUS_SPECS = tuple(dict.fromkeys([*_CORPORA, *_PART_CORPORA]))


def part_names(spec: str, tracks: int) -> tuple[str, ...]:
    """The names of the tracks :func:`load_parts` gives for ``spec`` (a corpus's voices, else channel order)."""
    if spec in _PART_CORPORA:
        return _PART_CORPORA[spec][4]
    return tuple(f"track {k + 1}" for k in range(tracks))


def _parts_from_midi(path: Path, tracks: int) -> MultiTune | None:
    """A MIDI file's ``tracks`` busiest channels as tracks, ordered by mean pitch, highest first."""
    song = read_midi(path)
    by_channel: dict[int, list[Any]] = {}
    for n in song.notes:
        by_channel.setdefault(n.channel, []).append(n)
    busiest = sorted(by_channel.values(), key=len, reverse=True)[:tracks]
    if len(busiest) < tracks or any(len(notes) < 8 for notes in busiest):
        return None
    busiest.sort(key=lambda notes: -float(np.mean([n.pitch for n in notes])))
    ppq = song.ppqn
    out = []
    for k, notes in enumerate(busiest):
        notes = sorted(notes, key=lambda n: (n.start, -n.pitch))
        out.append(
            Tune(
                name=f"{path}#{k}",
                pitch=np.asarray([n.pitch for n in notes], dtype=np.int16),
                onset=np.asarray([n.start / ppq for n in notes], dtype=np.float32),
                duration=np.asarray([n.duration / ppq for n in notes], dtype=np.float32),
            )
        )
    return MultiTune(str(path), tuple(out))


def load_parts(spec: str, *, tracks: int = 4, limit: int | None = None, jobs: int | None = None) -> list[MultiTune]:
    """Pieces of ``spec`` as several tracks each: ``corpus:bach`` (its four voices), ``corpus:four-voice``
    (every four-voice work of music21's corpus, :func:`_four_voices`) or a MIDI folder.

    A MIDI file gives its ``tracks`` busiest channels, highest first; files with fewer are
    skipped. Pieces are named as :func:`load_corpus` names them, so :func:`split_pieces`
    holds out the same pieces as :func:`split_by_tune` does for ``load_corpus(spec)``.
    The music21 corpora are converted once and cached like :func:`load_corpus`'s.
    """
    jobs = jobs or max(1, (os.cpu_count() or 1))
    if spec in _PART_CORPORA:
        stem, items_of, worker, label, names = _PART_CORPORA[spec]
        cache = cache_dir() / (f"{stem}.npz" if limit is None else f"{stem}-first{limit}.npz")
        if cache.exists():
            flat = _load(cache)
        else:
            items = items_of()[:limit]
            pieces: list[MultiTune] = []
            with Progress(transient=False) as progress:
                task = progress.add_task(f"converting {label}", total=len(items))
                with ProcessPoolExecutor(max_workers=jobs) as pool:
                    for piece in pool.map(worker, items, chunksize=16):
                        progress.advance(task)
                        if piece is not None:
                            pieces.append(piece)
            flat = [track for piece in pieces for track in piece.tracks]
            _save(cache, flat)
            log.info("cached %d %s in %s", len(pieces), label, cache)
        width = len(names)
        return [
            MultiTune(flat[i].name.rpartition("#")[0], tuple(flat[i : i + width])) for i in range(0, len(flat), width)
        ]
    if spec.startswith("corpus:"):
        raise CorpusError(f"unknown corpus {spec!r} for tracks; accepted: {', '.join(_PART_CORPORA)} or a MIDI folder")
    folder = Path(spec)
    if not folder.is_dir():
        raise CorpusError(f"training data {spec!r} is neither {', '.join(_PART_CORPORA)} nor a folder")
    if is_cache(folder):
        return _cache_pieces(folder, tracks, limit)
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".mid", ".midi"))[:limit]
    pieces = []
    for path in paths:
        try:
            piece = _parts_from_midi(path, tracks)
        except LivegenError as err:
            log.warning("skipping %s", err)
            continue
        if piece is None:
            log.warning("skipping %s: fewer than %d channels with at least 8 notes", path, tracks)
        else:
            pieces.append(piece)
    if not pieces:
        raise CorpusError(f"no MIDI file in {folder} has {tracks} channels with at least 8 notes each")
    return pieces


def split_pieces(pieces: Sequence[MultiTune]) -> tuple[list[MultiTune], list[MultiTune], list[MultiTune]]:
    """Training, validation and held-out pieces, split exactly as :func:`split_by_tune` splits tunes of those names."""
    stand_ins = [Tune(p.name, p.tracks[0].pitch, p.tracks[0].onset, p.tracks[0].duration) for p in pieces]
    split = split_by_tune(stand_ins)
    by_name = {p.name: p for p in pieces}
    return tuple([by_name[t.name] for t in part] for part in (split.train, split.validation, split.held_out))  # type: ignore[return-value]


def split_by_tune(tunes: Sequence[Tune], *, validation: float = 0.1, held_out: float = 0.1) -> Split:
    """Deterministic split by a hash of each tune's name (stable as the corpus grows)."""
    train, val, test = [], [], []
    for tune in tunes:
        h = int.from_bytes(hashlib.sha256(tune.name.encode()).digest()[:8], "big") / 2**64
        if h < held_out:
            test.append(tune)
        elif h < held_out + validation:
            val.append(tune)
        else:
            train.append(tune)
    if not train or not val or not test:
        # tiny corpora: fall back to positional split so that every part has a tune
        n = len(tunes)
        if n < 3:
            raise CorpusError(f"need at least 3 tunes to split, got {n}")
        k = max(1, round(n * held_out))
        v = max(1, round(n * validation))
        return Split(
            train=list(tunes[: n - k - v]), validation=list(tunes[n - k - v : n - k]), held_out=list(tunes[n - k :])
        )
    return Split(train=train, validation=val, held_out=test)
