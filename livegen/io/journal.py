"""The crash journal: what a MIDI output port has left sounding, kept where ``kill -9`` cannot erase it.

Contexts:

- setup: :func:`guard_output` (find what crashed jams left on a port, send its
  cleanup, give the port a fresh journal), :meth:`NoteJournal.close`,
  :func:`state_dir`, :func:`journal_path`, :func:`read_journal`. They touch files,
  may sleep, log, and never raise for a journal's own trouble (a warning says it and
  the port plays without a journal); only a bad ``LIVEGEN_STATE_DIR`` is an error.
- scheduler thread (real-time): :meth:`NoteJournal.before_send` and
  :meth:`NoteJournal.after_send`, called by
  :class:`~livegen.io.midi_output.RtMidiOutput` around every message it hands to the
  backend, under the port's own lock. They are stores into a mapped page: no system
  call, no allocation, no logging.

Why a mapped file. A jam killed with ``kill -9`` (or by the OOM killer, or a crash in
a C library) runs no clean-up, and whatever it held sounds on the synth at the other
end of the port until someone notices. Each port a jam opens therefore has a
one-page file mapped with ``mmap`` (``MAP_SHARED``); updating it is a memory write,
and the dirty page belongs to the kernel's page cache, not to the process, so it is
in the file after the process dies, and the next start reads it. (It is not flushed
to the disk while the jam runs: a power cut of the whole machine may lose the last
updates, but then the synth lost its notes too.) The file is written in full before
it is mapped, never extended or truncated while mapped, so a store cannot fault.

What it holds (:data:`JOURNAL_SIZE` bytes, little-endian):

====== ======= ==============================================================
offset size    content
====== ======= ==============================================================
0      8       :data:`MAGIC`
8      2       :data:`VERSION`
10     2       length of the port key in bytes
12     4       process id of the jam that wrote it
16     8       when it started (Unix seconds, float64)
32     224     the port key (UTF-8; see :func:`port_key`)
256    2048    per channel and pitch (``channel * 128 + pitch``): note-ons sent
               minus note-offs sent, 0 to 255, like the scheduler's NoteTracker
2304   16      per channel: 1 while the sustain pedal is down (CC64 >= 64 sent)
2320   16      per channel: 1 once a note or a controller was sent on it
====== ======= ==============================================================

A note-on, a sustain pedal press and a channel's first use are written *before*
the message is sent, a note-off and a pedal release *after*, so that whenever the
process dies the journal holds at least what sounds. All notes off (CC123), all
sound off (CC120) and the mode messages (CC124-127) clear the channel's notes;
reset all controllers (CC121) releases its pedal. A note-on with velocity 0 is a
note-off. System messages (clock, transport, SysEx) are not journalled.

The cleanup the next start sends, like the scheduler's own stop: one note-off per
counted note-on (channel, then pitch order), then on every channel the journal
says was used, in channel order, sustain off (CC64=0), all notes off (CC123) and all
sound off (CC120).

Two jams on the same port name at once. Each journal file is a *slot*
(``NAME-HASH.SLOT.journal``, up to :data:`MAX_SLOTS`) and its owner holds an
exclusive ``flock`` on it for as long as it runs; the kernel drops the lock when the
process dies, however it dies. A start takes the first slot whose lock it gets (a
new one if none is free), and cleans up every unlocked slot it finds, because an
unlocked journal belongs to a jam that is gone. A lock is per open file, so a fresh
journal is locked before it gets its name (written with
:func:`~livegen.music.atomic.write_atomically`, linked when new, renamed over the
old one on a reset), and whoever gets a lock checks that the file still has its
name, else looks again. A clean exit, with nothing left sounding, removes the file;
otherwise it stays for the next start. The descriptors are not inherited by child
processes (:pep:`446`), so a model-verifying child cannot keep a dead jam's lock.

A file that is not a journal of this version (a different mark or version, a wrong
size, a different port, a count or flag out of range) is reported by name and
replaced; it never stops a start.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mmap
import os
import re
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from livegen.errors import ConfigError, LivegenError
from livegen.io import jack
from livegen.music.atomic import sync_folder, write_atomically
from livegen.music.events import CC_ALL_NOTES_OFF, CC_ALL_SOUND_OFF, CC_SUSTAIN, CONTROL_CHANGE, NOTE_OFF, NOTE_ON

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no flock, so no journal
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: The environment variable that moves the folder journals are kept in (an absolute path).
STATE_DIR_ENV = "LIVEGEN_STATE_DIR"

MAGIC = b"LGJRNL\r\n"
VERSION = 1
JOURNAL_SIZE = 4096
#: How many jams may journal the same port at once.
MAX_SLOTS = 8
#: A virtual port has no listener the moment it is created: a DAW or patchbay that
#: reconnects to it needs a moment. The cleanup on a virtual port waits this long (seconds).
VIRTUAL_CLEANUP_WAIT_S = 1.0

_HEADER = struct.Struct("<8sHHId")
_KEY_AT = 32
_KEY_MAX = 224
_NOTES_AT = 256
_SUSTAIN_AT = _NOTES_AT + 16 * 128
_USED_AT = _SUSTAIN_AT + 16
_END = _USED_AT + 16
_ZEROS_128 = bytes(128)
_OPEN_TRIES = 16
_CC_RESET_ALL = 121

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class JournalError(LivegenError, ValueError):
    """A journal file that is not one this version wrote (names the file and what is wrong)."""


class GuardedOutput(Protocol):
    """What :func:`guard_output` needs of a port (:class:`~livegen.io.midi_output.RtMidiOutput`)."""

    api: str
    port: str
    virtual: bool

    def send(self, data: Sequence[int]) -> None: ...

    def attach_journal(self, journal: NoteJournal) -> None: ...


# --- where -------------------------------------------------------------------------------


def state_dir() -> Path:
    """The folder journals live in (setup context).

    ``$LIVEGEN_STATE_DIR`` if set, else ``$XDG_STATE_HOME/livegen`` (when that is an
    absolute path, as the XDG spec requires), else ``~/.local/state/livegen``. A
    relative ``LIVEGEN_STATE_DIR`` is a :class:`ConfigError`.
    """
    explicit = os.environ.get(STATE_DIR_ENV, "")
    if explicit:
        folder = Path(explicit).expanduser()
        if not folder.is_absolute():
            raise ConfigError(
                f"{STATE_DIR_ENV}={explicit!r}: expected an absolute folder path "
                "(livegen keeps the crash journals of its MIDI ports there)"
            )
        return folder
    xdg = os.environ.get("XDG_STATE_HOME", "")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "livegen"
    return Path.home() / ".local" / "state" / "livegen"


def port_key(api: str, port: str) -> str:
    """The name a port's journal is kept under: the MIDI API, the JACK server if JACK, the port."""
    if api == "jack":
        return f"jack@{jack.server_name()}:{port}"
    return f"{api}:{port}"


def journal_path(folder: Path, key: str, slot: int) -> Path:
    """The file of journal slot ``slot`` of port ``key`` in ``folder`` (readable name, hashed key)."""
    readable = _UNSAFE.sub("_", key).strip("._")[:48] or "port"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
    return folder / f"{readable}-{digest}.{slot}.journal"


# --- what is left --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Leftovers:
    """What jams that did not end cleanly left on a port (channels 0-15)."""

    notes: tuple[tuple[int, int, int], ...] = ()  # (channel, pitch, note-ons not yet released)
    sustained: tuple[int, ...] = ()  # channels with the sustain pedal down
    channels: tuple[int, ...] = ()  # channels used
    pids: tuple[int, ...] = ()  # the jams that left them

    def __bool__(self) -> bool:
        return bool(self.notes or self.sustained or self.channels)

    @property
    def all_channels(self) -> list[int]:
        """Every channel the cleanup resets: used, sounding or sustained."""
        return sorted(set(self.channels) | {ch for ch, _, _ in self.notes} | set(self.sustained))

    def messages(self) -> list[tuple[int, int, int]]:
        """The cleanup: the note-offs, then CC64=0, CC123 and CC120 on every channel."""
        out = [(NOTE_OFF | ch, pitch, 0) for ch, pitch, count in self.notes for _ in range(count)]
        for ch in self.all_channels:
            out += [(CONTROL_CHANGE | ch, cc, 0) for cc in (CC_SUSTAIN, CC_ALL_NOTES_OFF, CC_ALL_SOUND_OFF)]
        return out

    def merged(self, other: Leftovers) -> Leftovers:
        counts: dict[tuple[int, int], int] = {}
        for ch, pitch, count in (*self.notes, *other.notes):
            counts[(ch, pitch)] = counts.get((ch, pitch), 0) + count
        return Leftovers(
            notes=tuple((ch, pitch, count) for (ch, pitch), count in sorted(counts.items())),
            sustained=tuple(sorted(set(self.sustained) | set(other.sustained))),
            channels=tuple(sorted(set(self.channels) | set(other.channels))),
            pids=tuple(dict.fromkeys((*self.pids, *other.pids))),
        )

    def describe(self) -> str:
        """What the cleanup sends, in words (channels numbered 1-16 as on a synth's panel)."""
        held = sum(count for _, _, count in self.notes)
        text = f"the note-offs of {held} note{'s' if held != 1 else ''} left sounding"
        if self.sustained:
            text += f" (sustain was down on {_channels(self.sustained)})"
        return f"{text}, then sustain off, all notes off and all sound off on {_channels(self.all_channels)}"


def _channels(channels: Sequence[int]) -> str:
    numbers = ", ".join(str(ch + 1) for ch in channels)
    return f"channel{'s' if len(channels) != 1 else ''} {numbers or 'none'}"


def read_journal(data: bytes, key: str, path: Path) -> Leftovers:
    """What the journal bytes ``data`` (read from ``path``, for port ``key``) say was left.

    Raises :class:`JournalError` naming ``path`` when they are not a journal this
    version wrote for that port.
    """
    if len(data) != JOURNAL_SIZE:
        raise JournalError(f"crash journal {path} is {len(data)} bytes long; a journal is {JOURNAL_SIZE}")
    magic, version, key_len, pid, _started = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise JournalError(f"crash journal {path} does not start with the journal mark {MAGIC!r}")
    if version != VERSION:
        raise JournalError(
            f"crash journal {path} was written by another livegen version (journal version {version}, "
            f"this one reads version {VERSION})"
        )
    wanted = _key_bytes(key)
    found = data[_KEY_AT : _KEY_AT + min(key_len, _KEY_MAX)]
    if found != wanted:
        raise JournalError(f"crash journal {path} belongs to port {found.decode('utf-8', 'replace')!r}, not {key!r}")
    notes = []
    for index in range(16 * 128):
        count = data[_NOTES_AT + index]
        if count:
            notes.append((index >> 7, index & 0x7F, count))
    sustained, channels = [], []
    for ch in range(16):
        pedal, used = data[_SUSTAIN_AT + ch], data[_USED_AT + ch]
        if pedal > 1 or used > 1:
            raise JournalError(
                f"crash journal {path}: the flags of channel {ch + 1} are {pedal} and {used}; expected 0 or 1"
            )
        if pedal:
            sustained.append(ch)
        if used:
            channels.append(ch)
    leftovers = Leftovers(tuple(notes), tuple(sustained), tuple(channels), (pid,))
    return leftovers if leftovers else Leftovers()


def _key_bytes(key: str) -> bytes:
    return key.encode("utf-8")[:_KEY_MAX]


def _blank(key: str) -> bytes:
    """A journal of nothing sounding, written by this process."""
    data = bytearray(JOURNAL_SIZE)
    raw = _key_bytes(key)
    _HEADER.pack_into(data, 0, MAGIC, VERSION, len(raw), os.getpid() & 0xFFFFFFFF, time.time())
    data[_KEY_AT : _KEY_AT + len(raw)] = raw
    return bytes(data)


# --- the journal of a running jam ------------------------------------------------------------


class NoteJournal:
    """One port's journal, mapped and locked by this process (see the module docstring).

    Made by :func:`guard_output`; attached to a port, which calls :meth:`before_send`
    and :meth:`after_send` around every message and :meth:`close` when it closes.
    """

    def __init__(self, path: Path, fd: int, key: str) -> None:
        """Setup context: map ``fd`` (an open, locked journal file of ``key``), taking it over."""
        self.path = path
        self.key = key
        self._fd = fd
        self._map = mmap.mmap(fd, JOURNAL_SIZE, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self.closed = False

    def before_send(self, data: Sequence[int]) -> None:
        """Scheduler thread: note a note-on, a pedal press or a channel's use before it goes out."""
        if len(data) < 3:
            return
        status = data[0]
        kind = status & 0xF0
        if kind == NOTE_ON:
            if data[2]:
                page = self._map
                ch = status & 0x0F
                page[_USED_AT + ch] = 1
                index = _NOTES_AT + (ch << 7) + (data[1] & 0x7F)
                count = page[index]
                if count < 255:
                    page[index] = count + 1
        elif kind == CONTROL_CHANGE:
            page = self._map
            ch = status & 0x0F
            page[_USED_AT + ch] = 1
            if data[1] == CC_SUSTAIN and data[2] >= 64:
                page[_SUSTAIN_AT + ch] = 1

    def after_send(self, data: Sequence[int]) -> None:
        """Scheduler thread: forget a released note, a released pedal or a silenced channel once sent."""
        if len(data) < 3:
            return
        status = data[0]
        kind = status & 0xF0
        if kind == NOTE_OFF or (kind == NOTE_ON and not data[2]):
            page = self._map
            index = _NOTES_AT + ((status & 0x0F) << 7) + (data[1] & 0x7F)
            count = page[index]
            if count:
                page[index] = count - 1
        elif kind == CONTROL_CHANGE:
            cc = data[1]
            ch = status & 0x0F
            if cc == CC_SUSTAIN:
                if data[2] < 64:
                    self._map[_SUSTAIN_AT + ch] = 0
            elif cc == CC_ALL_SOUND_OFF or cc >= CC_ALL_NOTES_OFF:
                start = _NOTES_AT + (ch << 7)
                self._map[start : start + 128] = _ZEROS_128
            elif cc == _CC_RESET_ALL:
                self._map[_SUSTAIN_AT + ch] = 0

    def leftovers(self) -> Leftovers:
        """What the journal says sounds now (control or setup context)."""
        return read_journal(self._map[:], self.key, self.path)

    def close(self) -> None:
        """Setup context: unmap and unlock; the file goes if nothing sounds, else it stays.

        A jam that ends cleanly has silenced its port, so its journal holds no note and
        no pedal and is removed. If something still sounds (the port's sends failed or
        it was lost), the journal stays for the next start on this port to clean up,
        and a warning says so. Never raises.
        """
        if self.closed:
            return
        self.closed = True
        try:
            left = self.leftovers()
        except JournalError as err:  # cannot happen unless someone wrote into our page
            log.warning("%s; keeping it", err)
            left = None
        try:
            if left is not None and not left.notes and not left.sustained:
                os.unlink(self.path)  # still ours: we hold its lock
                sync_folder(self.path.parent)
            elif left is not None:
                log.warning(
                    "MIDI port %s closed with %d note(s) still sounding or a pedal down; the next start on it "
                    "will send their cleanup (crash journal %s)",
                    self.key,
                    sum(count for _, _, count in left.notes),
                    self.path,
                )
        except OSError as err:
            log.warning("crash journal %s: cannot remove it (%s)", self.path, err)
        finally:
            with contextlib.suppress(BufferError, ValueError):
                self._map.close()
            with contextlib.suppress(OSError):
                os.close(self._fd)  # releases the lock

    def __repr__(self) -> str:
        return f"<NoteJournal {self.key!r} at {str(self.path)!r} closed={self.closed}>"


# --- claiming slots ----------------------------------------------------------------------------


def _lock(fd: int) -> bool:
    assert fcntl is not None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _open_locked(path: Path) -> int | bool:
    """A locked descriptor of the file named ``path``; False if its owner lives; True if there is none."""
    for _ in range(_OPEN_TRIES):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return True
        if not _lock(fd):
            os.close(fd)
            return False
        try:
            named = os.stat(path)
            mine = os.fstat(fd)
            same = (named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino)
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # renamed over or removed while we waited: look again
    raise OSError(f"crash journal {path} keeps changing while it is being opened")


def _write_locked(path: Path, content: bytes, *, overwrite: bool) -> int | None:
    """Write a journal under ``path`` and return a descriptor locking it since before it had the name.

    ``overwrite=False`` creates it only if no file has the name (None otherwise).
    """
    held: list[int] = []

    def write(out: BinaryIO) -> None:
        out.write(content)
        fd = os.dup(out.fileno())  # the lock lives on the open file, past the writer's close
        held.append(fd)
        if not _lock(fd):
            raise OSError(f"crash journal {path}: a new file is locked by someone else")

    try:
        write_atomically(path, write, overwrite=overwrite, mode=0o600)
    except FileExistsError:
        for fd in held:
            os.close(fd)
        return None
    except BaseException:
        for fd in held:
            os.close(fd)
        raise
    return held[0]


@dataclass(slots=True)
class _Slot:
    path: Path
    fd: int
    fresh: bool  # created by this start: nothing to clean, nothing to reset


def _close_all(slots: Iterable[_Slot]) -> None:
    for slot in slots:
        with contextlib.suppress(OSError):
            os.close(slot.fd)


def _claim(folder: Path, key: str) -> tuple[_Slot | None, list[_Slot], Leftovers]:
    """This start's slot (None if all are taken), the dead jams' other slots, and what they left."""
    own: _Slot | None = None
    dead: list[_Slot] = []
    left = Leftovers()
    try:
        for slot in range(MAX_SLOTS):
            path = journal_path(folder, key, slot)
            for _ in range(_OPEN_TRIES):
                fd = _open_locked(path)
                if fd is False:
                    break  # a live jam's
                if fd is True:
                    if own is not None:
                        break
                    created = _write_locked(path, _blank(key), overwrite=False)
                    if created is None:
                        continue  # another start created it meanwhile: look again
                    own = _Slot(path, created, fresh=True)
                    break
                claimed = _Slot(path, int(fd), fresh=False)
                if own is None:
                    own = claimed
                else:
                    dead.append(claimed)
                try:
                    left = left.merged(read_journal(os.pread(claimed.fd, JOURNAL_SIZE + 1, 0), key, path))
                except JournalError as err:
                    log.warning("%s; ignoring it and replacing it with a new journal", err)
                break
    except BaseException:
        _close_all([*([own] if own else []), *dead])
        raise
    return own, dead, left


def guard_output(
    output: GuardedOutput,
    *,
    folder: Path | None = None,
    virtual_wait_s: float = VIRTUAL_CLEANUP_WAIT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> Leftovers:
    """Clean up what crashed jams left on ``output``'s port, then journal it (setup context).

    Before anything else is sent on the port: reads every journal of this port that
    no running jam holds; if anything was left, sends the cleanup (on a virtual port
    after ``virtual_wait_s``, so that whoever reconnects to it hears it) and logs one
    warning saying what it cleaned; then gives the port a fresh journal of its own
    (:meth:`attach_journal`) and removes the dead ones. Returns what was cleaned
    (empty when nothing was left).

    ``folder`` defaults to :func:`state_dir`. Raises :class:`ConfigError` only for a bad
    ``LIVEGEN_STATE_DIR``; any other trouble with the journal files is a warning and the
    port plays without a journal.
    """
    if fcntl is None:
        log.info("no crash journal for MIDI output %r: this platform has no flock", output.port)
        return Leftovers()
    key = port_key(output.api, output.port)
    try:
        folder = state_dir() if folder is None else folder
        folder.mkdir(parents=True, exist_ok=True)
        own, dead, left = _claim(folder, key)
    except (OSError, RuntimeError) as err:  # RuntimeError: Path.home() without a home
        _without_journal(output, folder, err)
        return Leftovers()
    try:
        if left:
            if output.virtual and virtual_wait_s > 0:
                sleep(virtual_wait_s)
            for data in left.messages():
                output.send(data)
            pids = ", ".join(str(pid) for pid in left.pids)
            log.warning(
                "MIDI output %r: a jam on it did not end cleanly (pid %s); sent %s", output.port, pids, left.describe()
            )
        for slot in dead:
            os.unlink(slot.path)  # we hold its lock: no one else reads or resets it
        if dead:
            sync_folder(folder)
        _close_all(dead)
        dead = []
        if own is None:
            _without_journal(output, folder, f"{MAX_SLOTS} jams already journal this port")
            return left
        if not own.fresh:
            fd = _write_locked(own.path, _blank(key), overwrite=True)
            assert fd is not None
            os.close(own.fd)
            own.fd = fd
        journal = NoteJournal(own.path, own.fd, key)
        own = None  # the journal owns the descriptor now
    except (OSError, ValueError) as err:  # ValueError: mmap refuses the file
        _without_journal(output, folder, err)
        return left
    finally:
        _close_all([*([own] if own else []), *dead])
    output.attach_journal(journal)
    return left


def _without_journal(output: GuardedOutput, folder: Path | None, why: object) -> None:
    where = f" in {folder}" if folder is not None else ""
    log.warning(
        "MIDI output %r has no crash journal%s (%s); if this jam is killed, notes it holds may keep sounding",
        output.port,
        where,
        why,
    )
