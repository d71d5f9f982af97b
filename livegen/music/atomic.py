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
temporary file behind; it is hidden (a dot name) and never read.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

#: How many random temporary names are tried before giving up (each is new with
#: overwhelming probability; a clash only means another writer is at work).
_NAME_TRIES = 64


def _temporary_name(target: Path) -> Path:
    """A fresh hidden temporary name beside ``target`` (``.NAME.<8 random characters>.tmp``)."""
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")


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
