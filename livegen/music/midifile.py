"""Reading and writing Standard MIDI Files with mido.

Context: setup and control (file I/O; never on the real-time path).

Reading merges all tracks into notes at livegen's resolution (:data:`PPQN`),
pairs note-ons with note-offs first-in first-out per channel and pitch, and
closes notes left open at the file's end. Every failure of the file itself is a
:class:`~livegen.errors.MidiFileError` naming the file.

mido holds every message of a file as an object, about 130 bytes of memory per
byte of file, so a file over :data:`MAX_MIDI_BYTES` is refused before it is read.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from io import BytesIO
from pathlib import Path

import mido

from livegen.errors import MidiFileError
from livegen.music.atomic import write_atomically
from livegen.music.events import MidiEvent, Note, decode_message
from livegen.music.held import pair_notes
from livegen.music.time import PPQN, TempoMap

#: The largest MIDI file livegen reads (1 MiB: over 100 000 notes; about 140 MB of memory while read).
MAX_MIDI_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Song:
    """The notes of a MIDI file at :data:`PPQN`, with its tempo map and metre."""

    notes: tuple[Note, ...]
    tempo: TempoMap = field(default_factory=TempoMap)
    beats_per_bar: int = 4
    ppqn: int = PPQN

    @property
    def end(self) -> int:
        return max((n.end for n in self.notes), default=0)


def _load(path: Path, max_bytes: int) -> mido.MidiFile:
    if not path.exists():
        raise MidiFileError(f"{path}: no such MIDI file")
    if path.is_dir():
        raise MidiFileError(f"{path}: is a folder, expected a .mid file")
    if not path.is_file():
        raise MidiFileError(f"{path}: not a regular file (a device or a pipe), expected a .mid file")
    too_big = f"expected a Standard MIDI File of at most {max_bytes} bytes ({max_bytes / 2**20:g} MiB)"
    if path.stat().st_size > max_bytes:
        raise MidiFileError(f"{path}: {path.stat().st_size} bytes is too large; {too_big}")
    try:
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)  # the file may have grown since stat()
    except OSError as err:
        raise MidiFileError(f"{path}: cannot read the MIDI file ({err.strerror or err})") from err
    if not data:
        raise MidiFileError(f"{path}: the file is empty (0 bytes), expected a Standard MIDI File")
    if len(data) > max_bytes:
        raise MidiFileError(f"{path}: more than {max_bytes} bytes is too large; {too_big}")
    try:
        return mido.MidiFile(file=BytesIO(data), clip=True)
    except Exception as err:  # mido raises OSError, EOFError, ValueError, KeyError, KeySignatureError and others
        reason = str(err) or type(err).__name__
        raise MidiFileError(
            f"{path}: not a readable Standard MIDI File ({reason}); expected an 'MThd' header "
            "followed by complete 'MTrk' chunks"
        ) from err


def read_midi(path: str | Path) -> Song:
    """Read ``path`` into a :class:`Song`; raises :class:`MidiFileError` if it is not one (or is too large)."""
    path = Path(path)
    mid = _load(path, MAX_MIDI_BYTES)
    if mid.type == 2:
        raise MidiFileError(f"{path}: MIDI file type 2 (independent sequences) is not supported; use type 0 or 1")
    src_ppq = mid.ticks_per_beat
    if not src_ppq or src_ppq <= 0:
        raise MidiFileError(f"{path}: SMPTE time division is not supported; expected ticks per quarter note")

    def scale(tick: int) -> int:
        return (tick * PPQN + src_ppq // 2) // src_ppq

    tempo_changes: dict[int, int] = {}
    beats_per_bar = 0
    timed: list[MidiEvent] = []
    end = 0  # the latest track end closes notes left open
    for track in mid.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "set_tempo":
                if msg.tempo <= 0:
                    raise MidiFileError(
                        f"{path}: a tempo of {msg.tempo} microseconds per quarter note at tick {tick}; "
                        "expected 1 to 16777215"
                    )
                tempo_changes.setdefault(scale(tick), msg.tempo)
            elif msg.type == "time_signature" and not beats_per_bar:
                beats_per_bar = max(1, round(msg.numerator * 4 / msg.denominator))
            elif msg.type in ("note_on", "note_off"):
                event = decode_message(tick, msg.bytes())
                if event is not None:
                    timed.append(event)
            end = max(end, tick)
    timed.sort(key=lambda e: e.tick)  # stable: each track keeps its order at equal ticks
    paired = pair_notes(timed, end=end)
    notes = [replace(n, start=scale(n.start), duration=scale(n.end) - scale(n.start)) for n in paired]
    notes.sort(key=lambda n: (n.start, n.pitch, n.channel))
    changes = sorted(tempo_changes.items())
    if not changes or changes[0][0] != 0:
        changes.insert(0, (0, changes[0][1] if changes else 500_000))
    return Song(notes=tuple(notes), tempo=TempoMap(tuple(changes)), beats_per_bar=beats_per_bar or 4)


class _NoteTrack:
    """A track's messages, made one at a time while mido writes them.

    mido writes a track by iterating it once, so a track need not be a list: a part of a
    long jam (some 15 000 messages) is written without a copy of its messages in memory
    (a list of them would take about 4 MB at once, and the process would keep that
    high-water mark). Note-offs come before note-ons at one tick, each kind in the order
    of ``notes``.
    """

    def __init__(self, head: list[mido.Message], notes: Sequence[Note]) -> None:
        self.head = head
        self.notes = notes

    def __iter__(self) -> Iterator[mido.Message]:
        yield from self.head
        ons = ((n.start, 1, n) for n in sorted(self.notes, key=lambda n: n.start))
        # a note struck and released on one tick (struck just as a jam stopped) lasts a tick:
        # its note-off would otherwise be written before it and the note lost on reading
        offs = ((max(n.end, n.start + 1), 0, n) for n in sorted(self.notes, key=lambda n: max(n.end, n.start + 1)))
        now = 0
        for tick, kind, n in heapq.merge(ons, offs, key=lambda item: (item[0], item[1])):
            data = (0x90 | n.channel, n.pitch, n.velocity) if kind else (0x80 | n.channel, n.pitch, 0)
            yield mido.Message.from_bytes(data, time=tick - now)
            now = tick


def write_midi(
    path: str | Path,
    tracks: Mapping[str, Sequence[Note]],
    *,
    tempo: TempoMap | None = None,
    beats_per_bar: int = 4,
    programs: Mapping[str, int] | None = None,
    markers: Sequence[tuple[int, str]] = (),
) -> Path:
    """Write a type-1 file: a tempo track, then one named track per entry of ``tracks``.

    ``programs`` maps a track name to a General MIDI program sent at its start; ``markers``
    are (tick, text) marker meta events, written in the tempo track.
    Written with :func:`~livegen.music.atomic.write_atomically`: a crash, a signal
    or a full disk at any moment leaves the previous file or the new one, never half
    of one (a jam's autosave rewrites its recording this way every few seconds).
    Context: the caller's (control or setup), never the real-time thread.
    """
    path = Path(path)
    tempo = tempo or TempoMap()
    mid = mido.MidiFile(type=1, ticks_per_beat=PPQN)
    meta = mido.MidiTrack()
    meta.append(mido.MetaMessage("time_signature", numerator=beats_per_bar, denominator=4, time=0))
    timeline = sorted(
        [(tick, 0, mido.MetaMessage("set_tempo", tempo=us)) for tick, us in tempo.changes]
        + [(max(0, tick), 1, mido.MetaMessage("marker", text=text)) for tick, text in markers],
        key=lambda item: (item[0], item[1]),
    )
    last = 0
    for tick, _, message in timeline:
        meta.append(message.copy(time=tick - last))
        last = tick
    mid.tracks.append(meta)
    for name, notes in tracks.items():
        head = [mido.MetaMessage("track_name", name=name, time=0)]
        if programs and name in programs:
            for ch in sorted({n.channel for n in notes}) or [0]:
                head.append(mido.Message("program_change", channel=ch, program=programs[name], time=0))
        mid.tracks.append(_NoteTrack(head, notes))
    try:
        write_atomically(path, lambda out: mid.save(file=out))
    except OSError as err:
        raise MidiFileError(f"{path}: cannot write the MIDI file ({err.strerror or err})") from err
    return path
