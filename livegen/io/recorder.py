"""The MIDI recorder: what the performer played and what the model sent, on separate tracks.

Context: control (fed from the input queue and the scheduler's sent log, never
from a real-time thread); :meth:`MidiRecorder.save`, :meth:`RollingRecording.write` and a
part written by :meth:`RollingRecording.keep_up` are file I/O on that same thread.

A :class:`MidiRecorder` holds every message until it is written: right for a jam of
minutes. A jam that plays for days records into a :class:`RollingRecording`, which
writes the performance in consecutive *parts* of a fixed musical length (15 minutes
at the jam's tempo by default) and keeps only the part being played in memory, so its
memory does not grow with the length of the performance (the README's guarantee 7). How a
part ends, and why nothing is lost across the cut:

- Parts are cut on bar lines. A note belongs to the part in which it begins, with its
  whole length, even when its note-off comes after the cut.
- Part *n* is written, with :func:`~livegen.music.atomic.write_atomically`, once its
  last bar has passed by ``lag_ticks`` (a bar by default: the scheduler's last sends of
  that bar have been collected) and every note begun in it has ended, or at the latest
  ``hold_ticks`` after the cut (eight bars by default). A note still sounding then (a key
  held through the cut and long after it, a note whose note-off was lost) ends there at
  that moment, and the next part begins it again at the same moment with the same
  velocity; ``carried`` counts those. Either way both files are complete MIDI files with
  every note closed, and laid end to end (part *n* starts ``(n - 1) * part_ticks`` after
  part 1) they hold every note that was played.
- Each part file starts at its own first bar (tick 0 of the file is the cut), so a part
  opens in a DAW at bar 1.
- Until the first cut the recording is the single file it names (``jam-....mid``), exactly
  like a :class:`MidiRecorder`'s. At the first cut part 1 is written as
  ``NAME-part001.mid`` and that file is removed (after the part is on disk); the part being
  played is then ``NAME-part002.mid``, and so on.
- A part that cannot be written (a full disk) stays in memory and is tried again a bar
  later: a recording is never dropped to keep memory bounded. So does an autosave that
  fails (:meth:`RollingRecording.autosave`): tried again at the next one. Each failure is
  counted in ``write_errors`` (the health endpoint's
  ``livegen_recording_write_errors_total``); the log warns at the first, at most once a
  minute while they go on, and when a write succeeds again.
- The jam's last write (:meth:`RollingRecording.write_last`) is tried three times, a
  quarter of a second apart; then the recording goes to the first fallback folder that
  takes it (:func:`livegen.io.destination.fallback_folders`), and the jam says where.

What is held is one part and a few bars of the next, so memory follows the part length,
not the performance's. The part length also bounds the work of writing one: a 15-minute
part of a busy model (about 8 000 messages) takes about 0.15 s to write, an hour's four
times that, on the control thread (autosaves write the part being played, too). The
24-hour soak measured resident memory settling at about 102 MB within 3 hours with
15-minute parts, and at about 118 MB only after 12 hours with hour-long ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import partial
from pathlib import Path

from livegen.errors import LivegenError, MidiFileError
from livegen.music.events import MidiEvent, Note, note_on
from livegen.music.held import HeldNotes, pair_notes
from livegen.music.midifile import write_midi
from livegen.music.time import PPQN, TempoMap

log = logging.getLogger(__name__)

#: While writes keep failing, the log repeats its warning at most this often, seconds.
WARN_EVERY_S = 60.0
#: The jam's last write: tries where the recording belongs, and the seconds between them.
LAST_TRIES = 3
LAST_WAIT_S = 0.25


class MidiRecorder:
    """Collects channel messages per track at musical ticks and writes a type-1 file.

    ``start`` is the tick the held messages begin at: 0, or the cut a
    :class:`RollingRecording` made last. :meth:`save` writes that tick as the file's tick 0.
    """

    def __init__(self, tracks: tuple[str, ...] = ("performer", "livegen")) -> None:
        self.tracks = tracks
        self._messages: dict[str, list[MidiEvent]] = {t: [] for t in tracks}
        self._markers: list[tuple[int, str]] = []  # (tick, text): what the performance's file should say where
        self.start = 0

    def record(self, track: str, event: MidiEvent) -> MidiEvent:
        """Keep ``event`` on ``track`` (one before tick 0, a count-in, at 0); returns what was kept."""
        kept = event if event.tick >= 0 else replace(event, tick=0)
        self._messages[track].append(kept)
        return kept

    def mark(self, tick: int, text: str) -> None:
        """Put a marker (a MIDI meta event) with ``text`` at ``tick`` in the recording."""
        self._markers.append((max(tick, self.start), text))

    @property
    def held(self) -> int:
        """Messages held in memory now (every message so far, for this recorder)."""
        return sum(len(m) for m in self._messages.values())

    def notes(self, track: str, *, end: int | None = None) -> list[Note]:
        """The track's notes held now, at the performance's ticks; notes still open are closed
        at ``end`` (or the last tick)."""
        return pair_notes(sorted(self._messages[track], key=lambda e: e.tick), end=end)

    def save(self, path: str | Path, tempo: TempoMap, *, beats_per_bar: int = 4) -> Path:
        """Write the notes held as a type-1 file whose tick 0 is :attr:`start` (atomically)."""
        tracks = {t: _shifted(self.notes(t), self.start) for t in self.tracks}
        markers = [(tick - self.start, text) for tick, text in self._markers]
        return write_midi(
            path, tracks, tempo=_tempo_from(tempo, self.start), beats_per_bar=beats_per_bar, markers=markers
        )

    def keep_up(self, now_tick: int) -> None:
        """After each control step (the engine calls it): a plain recorder keeps everything."""


class RollingRecording(MidiRecorder):
    """A recording written as it goes, in parts of ``part_ticks`` (whole bars), to files named after ``path``.

    Context: control. The engine calls :meth:`keep_up` after every step; when the
    part being played is over (see the module's docstring), it is written and dropped
    from memory. :meth:`write` writes the part being played so far (autosave, the jam's end).
    """

    def __init__(
        self,
        path: str | Path,
        tempo: TempoMap,
        *,
        part_ticks: int,
        beats_per_bar: int = 4,
        tracks: tuple[str, ...] = ("performer", "livegen"),
        lag_ticks: int | None = None,
        hold_ticks: int | None = None,
    ) -> None:
        super().__init__(tracks)
        bar = beats_per_bar * PPQN
        if part_ticks < 1:
            raise ValueError(f"part_ticks {part_ticks}: a part lasts at least one tick")
        self.path = Path(path)
        self.tempo = tempo
        self.beats_per_bar = beats_per_bar
        self.part_ticks = -(-part_ticks // bar) * bar  # whole bars: every part starts on a bar line
        lag = bar if lag_ticks is None else lag_ticks
        hold = 8 * bar if hold_ticks is None else hold_ticks
        self.lag_ticks = max(0, min(lag, self.part_ticks // 2))
        self.hold_ticks = max(self.lag_ticks, min(hold, self.part_ticks // 2))
        self.number = 1  # the part being played
        self.parts: list[Path] = []  # parts written for good, in order
        self.carried = 0  # notes sounding across a cut, begun again in the next part
        self.carried_by_track: dict[str, int] = dict.fromkeys(tracks, 0)
        self._done: dict[str, int] = dict.fromkeys(tracks, 0)  # notes in written parts, less those carried
        self._retry_at: int | None = None
        self.write_errors = 0  # writes that failed (autosaves, parts, takes, the last write), for /metrics
        self._failing = 0  # failures since the last write that succeeded
        self._warned_at = 0.0
        self._why = ""  # why the latest write failed
        self._held = {track: HeldNotes() for track in tracks}  # the notes sounding now

    # ---- names --------------------------------------------------------------------

    def part_path(self, number: int) -> Path:
        """Where part ``number`` (from 1) goes once there is more than one: ``NAME-part001.mid``, ..."""
        return self.path.with_name(f"{self.path.stem}-part{number:03d}{self.path.suffix}")

    @property
    def current_path(self) -> Path:
        """The file of the part being played: the recording's own name until the first cut."""
        return self.path if self.number == 1 else self.part_path(self.number)

    def record(self, track: str, event: MidiEvent) -> MidiEvent:
        kept = super().record(track, event)
        self._held[track].observe(kept)
        return kept

    def _sounding_from_before(self, tick: int) -> bool:
        """Whether a note begun before ``tick`` is still sounding."""
        return any(held.begun_before(tick) for held in self._held.values())

    def note_count(self, track: str) -> int:
        """Notes of ``track`` in the whole performance so far (a note carried across a cut counts once)."""
        return self._done[track] + len(self.notes(track))

    # ---- control thread -----------------------------------------------------------

    def write(self) -> Path:
        """Write the part being played, as far as it goes (atomically); the file's path."""
        return self.save(self.current_path, self.tempo, beats_per_bar=self.beats_per_bar)

    def autosave(self) -> Path | None:
        """:meth:`write`, or None when it fails: the failure is logged and counted, and what is
        held stays in memory for the next try."""
        return self._attempt(self.current_path, self.write)

    def save_copy(self, path: Path) -> Path | None:
        """Write what is held to ``path`` (a take), or None when it fails (logged and counted)."""
        return self._attempt(path, lambda: self.save(path, self.tempo, beats_per_bar=self.beats_per_bar))

    def write_last(
        self,
        *,
        fallbacks: Iterable[Path],
        tries: int = LAST_TRIES,
        wait_s: float = LAST_WAIT_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> tuple[Path, str | None]:
        """Write the part being played at the jam's end: (its path, None); after ``tries`` failures
        ``wait_s`` apart, into the first of ``fallbacks`` that takes it: (that path, a sentence
        saying where it could not go and where it went).

        Raises :class:`MidiFileError` naming every place tried when none takes it; what is held
        stays in memory.
        """
        target = self.current_path
        for attempt in range(tries):
            if attempt:
                sleep(wait_s)
            written = self._attempt(target, self.write)
            if written is not None:
                return written, None
        why = self._why
        refused = [f"{target} ({why})"]
        for folder in fallbacks:
            written = self.save_copy(_free_name(folder, target.name))
            if written is not None:
                problem = f"could not write the recording to {target} after {tries} tries ({why}); it is in {written}"
                log.warning("%s", problem)
                return written, problem
            refused.append(f"{folder} ({self._why})")
        raise MidiFileError(f"the recording could not be written to {'; nor to '.join(refused)}; it is lost")

    def _attempt(self, path: Path, write: Callable[[], Path]) -> Path | None:
        try:
            written = write()
        except (OSError, LivegenError) as err:
            self._failed(path, err)
            return None
        if self._failing:
            log.warning("%s written, after %d failed tries", written, self._failing)
            self._failing = 0
        return written

    def _failed(self, path: Path, err: BaseException) -> None:
        self.write_errors += 1
        self._failing += 1
        self._why = _reason(err)
        now = time.monotonic()
        if self._failing == 1 or now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "%s not written (%s; %d failed tries); the recording stays in memory and is tried again",
                path,
                self._why,
                self._failing,
            )

    def keep_up(self, now_tick: int) -> None:
        """Write and forget every part that is over at ``now_tick``: it ended ``lag_ticks`` ago and
        its notes have ended, or it ended ``hold_ticks`` ago."""
        while now_tick >= self.start + self.part_ticks + self.lag_ticks:
            boundary = self.start + self.part_ticks
            if now_tick < boundary + self.hold_ticks and self._sounding_from_before(boundary):
                return
            if self._retry_at is not None and now_tick < self._retry_at:
                return
            if self._attempt(self.part_path(self.number), partial(self.cut, boundary, now_tick)) is None:
                self._retry_at = now_tick + self.beats_per_bar * PPQN
                return
            self._retry_at = None

    def cut(self, boundary: int, at: int) -> Path:
        """Write the part ending at ``boundary`` (the notes begun before it) and keep the rest.

        A note of that part still sounding at ``at`` ends at ``at`` in it and begins again
        at ``at`` in what is kept. Memory changes only once the file is written: an
        error leaves the recorder as it was.
        """
        at = max(at, boundary)
        written: dict[str, list[Note]] = {}
        kept: dict[str, list[MidiEvent]] = {}
        carried: dict[str, int] = {}
        for track in self.tracks:
            written[track], kept[track], carried[track] = _split(self._messages[track], boundary, at)
        number = self.number
        path = self.part_path(number)
        tempo = _tempo_from(self.tempo, self.start)
        write_midi(
            path,
            {t: _shifted(notes, self.start) for t, notes in written.items()},
            tempo=tempo,
            beats_per_bar=self.beats_per_bar,
            markers=[(tick - self.start, text) for tick, text in self._markers if tick < boundary],
        )
        self._messages = kept
        self._markers = [(tick, text) for tick, text in self._markers if tick >= boundary]
        for track in self.tracks:
            self._done[track] += len(written[track]) - carried[track]
            self.carried_by_track[track] += carried[track]
        self.carried += sum(carried.values())
        self.start = boundary
        self.parts.append(path)
        for held in self._held.values():  # a note begun again at ``at`` sounds from there now
            held.restart(boundary, at)
        self.number = number + 1
        if number == 1:  # part 1 was autosaved under the recording's name; it is part001 now
            try:
                self.path.unlink(missing_ok=True)
            except OSError as err:
                log.warning("%s: could not remove it after writing %s (%s)", self.path, path, err)
        return path


def _reason(err: BaseException) -> str:
    """What the file system said (``No space left on device``), else the error's message."""
    for cause in (err, err.__cause__):
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    return str(err)


def _free_name(folder: Path, name: str) -> Path:
    """``folder / name``, or ``STEM-2.SUFFIX``, ``-3``... when a file has that name (an earlier rescue)."""
    path = folder / name
    number = 1
    while path.exists() or path.is_symlink():
        number += 1
        path = folder / f"{Path(name).stem}-{number}{Path(name).suffix}"
    return path


def _split(events: list[MidiEvent], boundary: int, at: int) -> tuple[list[Note], list[MidiEvent], int]:
    """(notes begun before ``boundary``, events kept, notes carried) of one track.

    A note begun before ``boundary`` and still held at ``at`` ends at ``at`` and is struck
    again there in what is kept (carried).
    """
    held = HeldNotes()
    notes: list[Note] = []
    kept: list[MidiEvent] = []
    for event in sorted(events, key=lambda e: e.tick):
        if event.is_note_on and event.tick < boundary:
            held.observe(event)
            continue
        ended = held.observe(event) if event.is_note_off else None
        if ended is not None:
            notes.append(ended.note())
        elif event.tick >= boundary:
            kept.append(event)  # a later note, its note-off, a stray note-off or another message
    restruck = []
    for ended in held.end_all(at):
        notes.append(ended.note())
        restruck.append(note_on(at, ended.channel, ended.pitch, ended.velocity))
    notes.sort(key=lambda n: (n.start, n.pitch, n.channel))
    # a re-struck note goes first at its tick, before a note-off of the same pitch recorded there
    return notes, sorted(restruck + kept, key=lambda e: e.tick), len(restruck)


def _shifted(notes: list[Note], start: int) -> list[Note]:
    """``notes`` with ``start`` as tick 0 (a note recorded before it, late, starts at 0)."""
    if not start:
        return notes
    return [replace(n, start=max(0, n.start - start)) for n in notes]


def _tempo_from(tempo: TempoMap, start: int) -> TempoMap:
    """The tempo map seen from ``start``: the tempo in force there at tick 0, later changes moved."""
    if not start:
        return tempo
    before = [us for tick, us in tempo.changes if tick <= start]
    later = tuple((tick - start, us) for tick, us in tempo.changes if tick > start)
    return TempoMap(((0, before[-1]), *later))
