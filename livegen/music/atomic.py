"""Writing a file whole or not at all: the one way livegen rewrites its files.

Context: whichever thread saves (the control thread for a jam's recording and its
autosaves, setup for the rest); never the real-time thread (it writes, fsyncs and
renames). It lives in :mod:`livegen.music`, the lowest layer, so that the MIDI file
writer here and every layer above it (``io``, ``engine``) share it.

How (POSIX ``rename(2)``, which :func:`os.replace` calls, swaps a name to another file
in one step when both are in the same folder):

1. a new temporary file ``.NAME.<8 random characters>.tmp`` in the target's own folder (so the
   rename never crosses file systems), created with ``O_EXCL`` so two writers never
   share one;
2. the caller writes into it; it is flushed and ``fsync``-ed, so its bytes are on disk
   before any name points at it;
3. it takes the old file's permission bits, then :func:`os.replace` puts it in place
   of the old file (or :func:`os.link` when ``overwrite=False``, which refuses an
   existing name); the folder is ``fsync``-ed so that the new name survives a power cut;
4. whatever goes wrong before the rename (an error, ``KeyboardInterrupt``) removes the
   temporary file and leaves the old file as it was.

A reader, a crash or ``kill -9`` at any moment sees the old file or the new one, never
half of one. Only ``kill -9`` (or a power cut) in the middle of step 2 can leave a
temporary file behind; it is hidden (a dot name) and never read, and
:func:`remove_stale_temporaries` removes it at the next start. A writer holds an
``flock`` on its temporary file from creation to rename, so the cleanup tells a file
whose writer died (no lock) from one being written now (locked), whichever process
writes it; a writer whose fresh file was removed before it took the lock (it has no
name left) starts again with another name.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no flock; stale temporaries are told by their age
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: How many random temporary names are tried before giving up (each is new with
#: overwhelming probability; a clash only means another writer is at work).
_NAME_TRIES = 64
#: The names :func:`write_atomically` gives its temporary files, and only those.
TEMPORARY_NAME = re.compile(r"\A\..+\.[0-9a-f]{8}\.tmp\Z", re.DOTALL)
#: Without ``flock``, a temporary file untouched this long (seconds) has no writer left.
STALE_WITHOUT_LOCK_S = 3600.0


def _temporary_name(target: Path) -> Path:
    """A fresh hidden temporary name beside ``target`` (``.NAME.<8 random characters>.tmp``)."""
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")


def _hold(fd: int) -> bool:
    """Lock the new temporary file open on ``fd`` for its writer; False when it lost its name
    meanwhile (a cleanup took it for a dead writer's)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:  # a file system without flock: write on, unlocked
        return True
    return os.fstat(fd).st_nlink > 0


def write_atomically(
    path: str | os.PathLike[str],
    write: Callable[[BinaryIO], object],
    *,
    overwrite: bool = True,
    mode: int = 0o666,
) -> Path:
    """Make ``path`` hold exactly what ``write(file)`` writes, or leave it as it was.

    ``write`` gets a binary file open on the temporary file and writes into it; it
    must not close it. ``overwrite=False`` creates ``path`` only if it does not exist
    yet (:class:`FileExistsError` otherwise; a concurrent creator cannot be
    overwritten). A new file gets ``mode`` less the umask (like :func:`open`); a
    replaced file keeps the permission bits of the one it replaces. The folder is
    created if missing.

    Raises :class:`OSError` from the file system and whatever ``write`` raises, in
    every case after removing the temporary file. Context: any thread but the
    real-time one (it blocks on the disk).
    """
    target = Path(path)
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(_NAME_TRIES):
        temp = _temporary_name(target)
        try:
            fd = os.open(temp, flags, mode)
        except FileExistsError:
            continue
        if not _hold(fd):
            os.close(fd)
            continue
        break
    else:
        raise FileExistsError(f"{folder}: no free temporary name for {target.name} after {_NAME_TRIES} tries")
    linked = False
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        if overwrite:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(temp, stat.S_IMODE(os.stat(target).st_mode))
            os.replace(temp, target)
        else:
            os.link(temp, target)  # FileExistsError when another writer got there first
            linked = True
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    if linked:
        with contextlib.suppress(OSError):
            os.unlink(temp)  # the file is in place under its name; this name is only a leftover
    sync_folder(folder)
    return target


def sync_folder(folder: Path) -> None:
    """``fsync`` a folder so that a rename or an unlink in it is on disk (POSIX; best effort).

    Some file systems refuse to ``fsync`` a folder; the rename has happened all the
    same, so that refusal is ignored.
    """
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> int:
    """Remove the temporary files that writes killed half-way left in ``folder``; how many.

    Only regular files named like :func:`write_atomically`'s temporaries
    (``.NAME.<8 hex digits>.tmp``) and locked by no writer are removed (without ``flock``:
    untouched for :data:`STALE_WITHOUT_LOCK_S`); a file being written now, by this process
    or another, stays. Nothing else in the folder is touched, and a file that cannot be
    checked is left. Context: setup (a jam's start).
    """
    folder = Path(folder)
    try:
        entries = [e for e in os.scandir(folder) if TEMPORARY_NAME.match(e.name)]
    except OSError:  # no folder yet (nothing to clean) or one we cannot list
        return 0
    removed = 0
    for entry in entries:
        try:
            if _remove_if_stale(Path(entry.path)):
                removed += 1
        except OSError as err:
            log.debug("%s: left as it is (%s)", entry.path, err)
    if removed:
        sync_folder(folder)
    return removed


def _remove_if_stale(path: Path) -> bool:
    seen = os.lstat(path)
    if not stat.S_ISREG(seen.st_mode):
        return False
    if fcntl is None:
        if time.time() - seen.st_mtime < STALE_WITHOUT_LOCK_S:
            return False
        os.unlink(path)
        return True
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | os.O_CLOEXEC)
    try:
        if not os.path.samestat(os.fstat(fd), seen):
            return False  # replaced since it was listed: look at it next time
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False  # its writer holds it: a write in progress
            raise
        os.unlink(path)  # under the lock: its writer, if it just made it, sees no name and starts again
        return True
    finally:
        os.close(fd)
