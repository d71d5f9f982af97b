"""A log file that rotates at a size cap, for jams that run unattended for days.

Context: setup. :func:`check_log_file` validates the settings when the jam's
configuration is built (so a preset's mistake names the preset); :func:`rotating_handler`
opens the file for ``livegen/cli.py``, the only place that configures logging. The
handler is :class:`logging.handlers.RotatingFileHandler`: when a record would take the
file past ``max_bytes`` it becomes ``FILE.1`` (``FILE.1`` becomes ``FILE.2`` and so on),
and the oldest beyond ``backups`` is deleted, so the logs never hold more than about
``max_bytes * (backups + 1)``. Rotation happens on whichever thread logs; the
scheduler's real-time thread never logs. Records are formatted by
:class:`~livegen.printable.PrintableFormatter`: one line each, control characters escaped.
"""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

from livegen.errors import ConfigError
from livegen.printable import PrintableFormatter

#: Default size cap of the log file, bytes.
DEFAULT_MAX_BYTES = 5_000_000
#: Default number of rotated files kept beside the log file.
DEFAULT_BACKUPS = 3
#: The smallest size cap accepted, bytes (a few records).
MIN_MAX_BYTES = 1024
MAX_BACKUPS = 100
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def check_log_file(path: Path | None, max_bytes: int, backups: int, *, out_dir: Path | None = None) -> None:
    """Refuse a log file in a folder that does not exist, a folder as the file, and caps out of range.

    ``out_dir``: the jam's recordings folder, which livegen creates (with its parents) like
    the recordings themselves; a log file directly in it may name it before it exists.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < MIN_MAX_BYTES:
        raise ConfigError(
            f"--log-max-bytes {max_bytes!r}: expected a size cap of at least {MIN_MAX_BYTES} bytes "
            f"(default {DEFAULT_MAX_BYTES})"
        )
    if isinstance(backups, bool) or not isinstance(backups, int) or not 1 <= backups <= MAX_BACKUPS:
        raise ConfigError(
            f"--log-backups {backups!r}: expected 1 to {MAX_BACKUPS} rotated files to keep (default {DEFAULT_BACKUPS})"
        )
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--log-file {path}: is a folder; expected a file name such as {path / 'livegen.log'}")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"--log-file {path}: {parent} is a file, not a folder")
    if not parent.is_dir() and not _same(parent, out_dir):
        raise ConfigError(
            f"--log-file {path}: the folder {parent} does not exist; create it, or give a file in an existing "
            "folder or directly in the jam's --out-dir (which livegen creates)"
        )


def _same(folder: Path, other: Path | None) -> bool:
    return other is not None and folder.resolve() == Path(other).resolve()


def rotating_handler(
    path: Path, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS, *, out_dir: Path | None = None
) -> logging.Handler:
    """The open, size-capped log file at ``path`` (UTF-8, appended to), formatted with times.

    A log file in ``out_dir`` (the jam's recordings folder) creates that folder first.
    """
    check_log_file(path, max_bytes, backups, out_dir=out_dir)
    try:
        if _same(path.parent, out_dir):
            path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"--log-file {path}: cannot be opened for writing ({err.strerror or err})") from err
    handler.setFormatter(PrintableFormatter(LOG_FORMAT))
    return handler
