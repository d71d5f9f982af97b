"""The root of every error livegen raises on purpose.

Context: any. This module imports nothing of livegen, so every layer (``music``
included) may raise these. Each error has two parents, so callers can catch the
livegen error or the builtin kind (the python-rtmidi habit).
"""

from __future__ import annotations


class LivegenError(Exception):
    """Something a user can fix: the message names the thing and what is accepted."""


class MidiFileError(LivegenError, ValueError):
    """A MIDI file that cannot be read or written."""


class PackageError(LivegenError, ValueError):
    """A model package that fails verification; names the file and the field."""


class InferenceSkipped(LivegenError, RuntimeError):
    """One model run refused: over its time or memory budget, stopped, failed, or not finite.

    The caller skips the step the run was for and counts it; the performance goes on.
    """


class PortNotFoundError(LivegenError, LookupError):
    """A MIDI port or audio device name that matches nothing available."""


class BackendUnavailableError(LivegenError, RuntimeError):
    """A MIDI or audio backend that cannot run on this machine (and why)."""


class ConfigError(LivegenError, ValueError):
    """A command-line option or preset field outside what is accepted."""
