"""Where a jam's recording goes: checked before the first note, and where it goes when it cannot.

Context: setup (:func:`prepare_destination`, :func:`check_destination` at a jam's start)
and control (:func:`fallback_folders` at its end).

A place that can never take the recording (a read-only file system, a folder with no
write permission, a name that is a folder, a FIFO or a device, a path through a file,
``/proc``) is refused by name before anything plays. A full disk is not refused: it may
have room by the time a file is written, and a recording that cannot be written stays in
memory (:mod:`livegen.io.recorder`). When the recording still cannot be written at the
end, it goes to the first of :func:`fallback_folders` that takes it.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from livegen.errors import LivegenError
from livegen.music.atomic import remove_stale_temporaries

log = logging.getLogger(__name__)

#: Errors of a file system that may have room later: the jam plays, and the recording waits in memory.
FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
#: The sub-folder of livegen's state folder that takes recordings their own folder refused.
FALLBACK_SUBFOLDER = "recordings"


class DestinationError(LivegenError, OSError):
    """A place a recording or its audio can never be written; names the path and why."""


def prepare_destination(path: Path, *, option: str, shown: Path | None = None) -> None:
    """Check that ``path`` can take the recording (:func:`check_destination`), then remove the
    temporary files a killed write left in its folder (setup, before the first note)."""
    check_destination(path, option=option, shown=shown)
    removed = remove_stale_temporaries(path.parent)
    if removed:
        log.warning("%s: removed %d temporary file(s) left by a write that was killed", path.parent, removed)


def check_destination(path: Path, *, option: str, shown: Path | None = None) -> None:
    """Raise :class:`DestinationError` when ``path`` can never be written; make its folder when missing.

    The message begins with ``option`` (where the path came from, e.g. ``--record``) and
    ``shown`` (what the user gave: ``path`` by default, the folder for ``--out-dir``).

    Creates and removes one empty temporary file in the folder, named like
    :func:`~livegen.music.atomic.write_atomically`'s (so a kill cannot leave a stranger).
    """
    try:
        seen = path.stat()
    except (FileNotFoundError, NotADirectoryError):  # a file in the way is named below
        pass
    except OSError as err:
        raise _refused(option, shown or path, path.parent, err) from err
    else:
        if stat.S_ISDIR(seen.st_mode):
            raise DestinationError(f"{option} {path}: is a folder; expected the name of a file to write")
        if not stat.S_ISREG(seen.st_mode):
            raise DestinationError(
                f"{option} {path}: is not a regular file (a FIFO, a device or a socket); "
                "expected the name of a file to write"
            )
    folder = path.parent
    blocker = _file_in_the_way(folder)
    if blocker is not None:
        raise DestinationError(
            f"{option} {shown or path}: {blocker} is a file, not a folder; expected a folder to write into"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".{path.name}.{secrets.token_hex(4)}.tmp"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as err:
        if err.errno in FULL:
            log.warning(
                "%s: the disk is full (%s); the recording waits in memory until it has room", folder, err.strerror
            )
            return
        raise _refused(option, shown or path, folder, err) from err


def _refused(option: str, shown: Path, folder: Path, err: OSError) -> DestinationError:
    where = "there" if shown == folder else f"in {folder}"
    return DestinationError(
        f"{option} {shown}: cannot write {where} ({err.strerror or err}); "
        "choose a folder this user can write (--out-dir DIR or --record DIR/NAME.mid)"
    )


def _file_in_the_way(folder: Path) -> Path | None:
    """The nearest existing ancestor of ``folder`` (itself included) when it is not a folder."""
    for place in (folder, *folder.parents):
        try:
            seen = place.stat()
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            return None  # mkdir will say why
        return None if stat.S_ISDIR(seen.st_mode) else place
    return None


def fallback_folders() -> Iterator[Path]:
    """Where a recording goes when its own folder refuses it, in order (control, the jam's end).

    1. ``recordings`` in livegen's state folder: ``$LIVEGEN_STATE_DIR/recordings``, else
       ``$XDG_STATE_HOME/livegen/recordings``, else ``~/.local/state/livegen/recordings``;
    2. a new private folder ``livegen-recording-XXXXXXXX`` in the temporary folder
       (``$TMPDIR``, else ``/tmp``), made only when the first one failed.
    """
    from livegen.io.journal import state_dir

    try:
        state = state_dir() / FALLBACK_SUBFOLDER
    except (LivegenError, RuntimeError) as err:  # a relative LIVEGEN_STATE_DIR, no home folder
        log.warning("no state folder for the recording (%s)", err)
    else:
        yield state
    try:
        temporary = Path(tempfile.mkdtemp(prefix="livegen-recording-"))
    except OSError as err:
        log.warning("no temporary folder for the recording (%s)", err)
    else:
        yield temporary
