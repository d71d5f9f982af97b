"""``livegen doctor``: what works on this machine and what to install for what does not.

Context: setup. Each check catches its own failure and turns it into advice.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from livegen.errors import LivegenError


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _module(name: str, pip_name: str, debian: str = "") -> Check:
    try:
        module = importlib.import_module(name)
    except Exception as err:  # an import can fail with OSError for a missing shared library
        fix = f"pip install {pip_name}" + (f" and apt-get install {debian}" if debian else "")
        return Check(f"python package {pip_name}", False, f"cannot import {name}: {err}", fix)
    try:
        version = importlib.metadata.version(pip_name)
    except importlib.metadata.PackageNotFoundError:
        version = str(getattr(module, "__version__", ""))
    return Check(f"python package {pip_name}", True, f"{name} {version}".strip())


def _try(name: str, probe: Callable[[], str], fix: str, *, required: bool = True) -> Check:
    try:
        return Check(name, True, probe(), required=required)
    except (LivegenError, OSError, ImportError) as err:
        return Check(name, False, str(err), fix, required)


def run_checks() -> Iterator[Check]:
    yield Check("python", sys.version_info >= (3, 11), sys.version.split()[0], "use Python 3.11 or newer")
    for name, pip_name, debian in (
        ("numpy", "numpy", ""),
        ("mido", "mido", ""),
        ("rtmidi", "python-rtmidi", ""),
        ("onnx", "onnx", ""),
        ("onnxruntime", "onnxruntime", ""),
        ("fluidsynth", "pyfluidsynth", "libfluidsynth3"),
        ("sounddevice", "sounddevice", "libportaudio2"),
    ):
        yield _module(name, pip_name, debian)

    def soundfont() -> str:
        from livegen.io.soundfont import find_soundfont

        return str(find_soundfont(None))

    yield _try("General MIDI SoundFont", soundfont, "apt-get install timgm6mb-soundfont, or pass --soundfont FILE.sf2")

    def audio() -> str:
        from livegen.io.synth import list_audio_devices

        devices = list_audio_devices()
        if not devices:
            raise LivegenError("no audio output device: the synth will render WAV files instead")
        return ", ".join(str(d) for d in devices)

    yield _try(
        "audio output",
        audio,
        "attach a sound card, or start JACK (jackd -d dummy) to stream; WAV files are written meanwhile",
        required=False,
    )

    def midi() -> str:
        from livegen.io import midi_api

        usable = []
        for api in midi_api.compiled_apis():
            reason = midi_api.probe_api(api)
            if reason is None:
                usable.append(api)
        if not usable:
            reasons = "; ".join(f"{api}: {midi_api.probe_api(api)}" for api in midi_api.compiled_apis())
            raise LivegenError(f"no MIDI backend runs here ({reasons})")
        return "usable APIs: " + ", ".join(usable)

    yield _try(
        "MIDI backend",
        midi,
        "load the ALSA sequencer (modprobe snd-seq) or start a JACK server (jackd -d dummy -r 48000) "
        "and use --midi-api jack; without one, jam still plays the synth and writes files",
        required=False,
    )
    yield Check(
        "JACK server binary",
        shutil.which("jackd") is not None,
        shutil.which("jackd") or "jackd not found",
        "apt-get install jackd2",
        required=False,
    )

    def bundled() -> str:
        from livegen.models.package import load_package
        from livegen.models.registry import DEFAULT_MODEL, resolve_package

        package = load_package(resolve_package(DEFAULT_MODEL))
        return f"{package.name} {package.manifest.version} verified"

    yield _try("bundled model", bundled, "reinstall livegen (pip install -e .): the package data is missing")

    # Looked up, not imported: the host never loads torch.
    if importlib.util.find_spec("torch") is None:
        yield Check("training extra", False, "torch not installed", "pip install -e '.[train]'", required=False)
    else:
        yield Check("training extra", True, "torch available for python -m export", required=False)
