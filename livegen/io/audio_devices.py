"""Audio output devices through PortAudio (python-sounddevice): listing and choosing.

Context: setup (the ``livegen ports`` and ``doctor`` commands, opening the synth's
stream). Nothing here runs on the audio thread.

PortAudio enumerates devices once, when it is initialised (at ``import sounddevice``):
a JACK server started later is only seen after :func:`refresh_portaudio`, which must
not be called while a stream is open. PortAudio's JACK host API connects to the
server named by ``$JACK_DEFAULT_SERVER`` (or ``default``), read at that same moment.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from livegen.errors import BackendUnavailableError, PortNotFoundError

PORTAUDIO_HINT = "install the Debian package libportaudio2 (PortAudio), or render to a WAV file instead"


@dataclass(frozen=True, slots=True)
class AudioDevice:
    """One PortAudio device as ``livegen ports`` shows it."""

    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    is_default_output: bool

    @property
    def is_output(self) -> bool:
        return self.max_output_channels > 0

    def __str__(self) -> str:
        star = "*" if self.is_default_output else " "
        return f"{star}[{self.index}] {self.name} ({self.hostapi}, {self.max_output_channels} out)"


def load_sounddevice() -> ModuleType:
    """Import sounddevice; a missing PortAudio library becomes a :class:`BackendUnavailableError`."""
    try:
        return importlib.import_module("sounddevice")
    except OSError as err:  # sounddevice raises OSError('PortAudio library not found')
        raise BackendUnavailableError(f"audio output is unavailable: {err}; {PORTAUDIO_HINT}") from err
    except ImportError as err:
        raise BackendUnavailableError(
            f"audio output is unavailable: {err}; install livegen with its dependencies (pip install sounddevice)"
        ) from err


def refresh_portaudio() -> None:
    """Re-initialise PortAudio so devices (e.g. a JACK server) that appeared since import are seen.

    Closes nothing itself, but PortAudio's terminate invalidates open streams: call it
    only while no stream is open.
    """
    sd = load_sounddevice()
    sd._terminate()
    sd._initialize()


def list_audio_devices(*, outputs_only: bool = True, refresh: bool = False) -> list[AudioDevice]:
    """The PortAudio devices that can play (all devices with ``outputs_only=False``)."""
    sd = load_sounddevice()
    if refresh:
        refresh_portaudio()
    hostapis: Any = sd.query_hostapis()
    devices: Any = sd.query_devices()
    default_out = _default_output_index(sd)
    found = [
        AudioDevice(
            index=int(d["index"]),
            name=str(d["name"]),
            hostapi=str(hostapis[d["hostapi"]]["name"]),
            max_input_channels=int(d["max_input_channels"]),
            max_output_channels=int(d["max_output_channels"]),
            default_samplerate=float(d["default_samplerate"]),
            is_default_output=int(d["index"]) == default_out,
        )
        for d in devices
    ]
    return [d for d in found if d.is_output] if outputs_only else found


def audio_output_available(device: int | str | None = None, *, refresh: bool = False) -> bool:
    """True when PortAudio loads and ``device`` (None: any default output) can play.

    For ``livegen doctor`` and for choosing between live audio and a WAV file.
    """
    try:
        find_output_device(device, refresh=refresh)
    except (BackendUnavailableError, PortNotFoundError):
        return False
    return True


def find_output_device(device: int | str | None = None, *, refresh: bool = False) -> AudioDevice:
    """The output device for ``device``: an index, a name (exact, else a unique substring,
    case-insensitive), or None for PortAudio's default output.

    Raises :class:`PortNotFoundError` listing the available output devices.
    """
    outputs = list_audio_devices(refresh=refresh)
    found: AudioDevice | None = None
    if device is None:
        found = next((d for d in outputs if d.is_default_output), outputs[0] if outputs else None)
        what = "no default audio output device"
    elif isinstance(device, int) or device.strip().isdigit():
        index = int(device)
        found = next((d for d in outputs if d.index == index), None)
        what = f"no audio output device with index {index}"
    else:
        wanted = device.strip().lower()
        exact = [d for d in outputs if d.name.lower() == wanted]
        partial = [d for d in outputs if wanted in d.name.lower()]
        if len(exact) == 1 or len(partial) == 1:
            found = (exact or partial)[0]
            what = ""
        elif len(partial) > 1:
            what = f"audio output device name {device!r} matches several devices"
        else:
            what = f"no audio output device matches {device!r}"
    if found is not None:
        return found
    raise PortNotFoundError(f"{what}; {_describe(outputs)}")


def _describe(outputs: list[AudioDevice]) -> str:
    if not outputs:
        return (
            "no audio output devices are available (no sound card, and no JACK server running); "
            "start one (e.g. `jackd -d dummy` for a silent test server), or render to a WAV file"
        )
    listed = "\n  ".join(str(d) for d in outputs)
    return f"available output devices (give a name or an index):\n  {listed}"


def _default_output_index(sd: ModuleType) -> int:
    default = sd.default.device[1]  # PortAudio's default output index, -1 when there is none
    return default if isinstance(default, int) else -1
