"""The built-in SoundFont synth: the names the engine and the CLI use.

Context: see each module; this one only re-exports.

* :mod:`livegen.io.soundfont`: finding a SoundFont (setup).
* :mod:`livegen.io.synth_render`: the sample-accurate renderer shared by offline and
  live use, :func:`render_offline` and :func:`write_wav`.
* :mod:`livegen.io.synth_live`: :class:`LiveSynth` on a PortAudio output stream, and
  :class:`SynthOutput`, its face as a scheduler output.
* :mod:`livegen.io.audio_devices`: listing and choosing audio output devices.
"""

from __future__ import annotations

from livegen.io.audio_devices import AudioDevice, audio_output_available, find_output_device, list_audio_devices
from livegen.io.soundfont import SoundFontError, SoundFontNotFoundError, find_soundfont
from livegen.io.synth_live import DacClock, LiveSynth, SynthOutput, SynthStats
from livegen.io.synth_render import (
    DEFAULT_GAIN,
    DEFAULT_SAMPLERATE,
    FLUID_BLOCK,
    Renderer,
    frames_to_ns,
    ns_to_frames,
    render_offline,
    write_wav,
)

__all__ = [
    "DEFAULT_GAIN",
    "DEFAULT_SAMPLERATE",
    "FLUID_BLOCK",
    "AudioDevice",
    "DacClock",
    "LiveSynth",
    "Renderer",
    "SoundFontError",
    "SoundFontNotFoundError",
    "SynthOutput",
    "SynthStats",
    "audio_output_available",
    "find_output_device",
    "find_soundfont",
    "frames_to_ns",
    "list_audio_devices",
    "ns_to_frames",
    "render_offline",
    "write_wav",
]
