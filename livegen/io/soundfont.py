"""Finding a SoundFont for the built-in synth, and the errors when there is none.

Context: setup (file-system look-ups; never called on the audio thread).

Search order of :func:`find_soundfont`: the explicit path (``--soundfont``), then
``$LIVEGEN_SOUNDFONT``, then the paths Debian, Fedora and Arch packages install to
(:data:`SYSTEM_SOUNDFONTS`). An explicit path or environment variable that names a
missing file is an error at once rather than a silent fall-back, so a typo is seen.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from livegen.errors import LivegenError

#: The environment variable that names a SoundFont when ``--soundfont`` is not given.
SOUNDFONT_ENV = "LIVEGEN_SOUNDFONT"

#: Where distributions put General MIDI SoundFonts, best first. ``default-GM.sf2`` is
#: Debian's alternatives link (TimGM6mb or FluidR3, whichever is installed).
SYSTEM_SOUNDFONTS: tuple[Path, ...] = (
    Path("/usr/share/sounds/sf2/default-GM.sf2"),
    Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),
    Path("/usr/share/sounds/sf2/TimGM6mb.sf2"),
    Path("/usr/share/soundfonts/default.sf2"),
    Path("/usr/share/soundfonts/FluidR3_GM.sf2"),
    Path("/usr/share/soundfonts/FluidR3_GM2-2.sf2"),
    Path("/usr/share/sounds/sf3/default-GM.sf3"),
    Path("/usr/share/sounds/sf3/MuseScore_General.sf3"),
    Path("/usr/local/share/soundfonts/default.sf2"),
    Path("/opt/homebrew/share/soundfonts/default.sf2"),
)

INSTALL_HINT = (
    "install the Debian package timgm6mb-soundfont (or fluid-soundfont-gm), "
    f"set {SOUNDFONT_ENV}=FILE.sf2, or pass --soundfont FILE.sf2"
)


class SoundFontNotFoundError(LivegenError, FileNotFoundError):
    """No SoundFont file where one was asked for or looked for; lists the paths tried."""

    def __init__(self, message: str, searched: Sequence[Path] = ()) -> None:
        super().__init__(message)
        self.searched = tuple(searched)


class SoundFontError(LivegenError, ValueError):
    """A file that exists but that fluidsynth cannot load as a SoundFont."""


def find_soundfont(
    explicit: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    candidates: Sequence[Path] = SYSTEM_SOUNDFONTS,
) -> Path:
    """The SoundFont to load: ``explicit``, else ``$LIVEGEN_SOUNDFONT``, else a system one.

    ``environ`` and ``candidates`` exist for tests; callers leave them alone.
    Raises :class:`SoundFontNotFoundError` naming every path tried.
    """
    env = os.environ if environ is None else environ
    if explicit is not None:
        path = Path(explicit).expanduser()
        if path.is_file():
            return path
        raise SoundFontNotFoundError(
            f"SoundFont {str(path)!r} (given with --soundfont) does not exist or is not a file; {INSTALL_HINT}",
            [path],
        )
    from_env = env.get(SOUNDFONT_ENV, "").strip()
    if from_env:
        path = Path(from_env).expanduser()
        if path.is_file():
            return path
        raise SoundFontNotFoundError(
            f"SoundFont {str(path)!r} (from ${SOUNDFONT_ENV}) does not exist or is not a file; {INSTALL_HINT}",
            [path],
        )
    for path in candidates:
        if path.is_file():  # follows symlinks: a dangling alternatives link is skipped
            return path
    searched = "\n  ".join(str(p) for p in candidates)
    raise SoundFontNotFoundError(
        f"no SoundFont found: --soundfont not given, ${SOUNDFONT_ENV} not set, and none of these exist:\n"
        f"  {searched}\nTo fix it: {INSTALL_HINT}.",
        candidates,
    )


def describe_load_failure(path: Path) -> str:
    """Why fluidsynth probably refused ``path``, from its first bytes (for the error message)."""
    try:
        with path.open("rb") as f:
            head = f.read(12)
    except OSError as err:
        return f"it cannot be read ({err.strerror})"
    if len(head) < 12 or head[:4] != b"RIFF":
        return "it is not a RIFF file, so not a SoundFont (.sf2/.sf3) or DLS file"
    form = head[8:12]
    if form not in (b"sfbk", b"DLS "):
        return f"it is a RIFF file of type {form.decode('latin-1')!r}, not a SoundFont ('sfbk')"
    return "it has a SoundFont header but is truncated or corrupt"
