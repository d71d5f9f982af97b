"""``livegen learn``: bind the next control a performer moves to a jam parameter.

Contexts:

- setup (the main thread): :func:`learn`, :func:`wait_for_control`,
  :func:`write_binding`, :func:`update_controls`. They block, touch files and raise
  livegen errors.
- backend thread: the input callback :func:`wait_for_control` installs; it only
  enqueues the message (``put_nowait`` on a bounded queue) and never raises.

A control *moves* when one CC (on one channel) sends a value different from the first
value it sent while learning, so a controller that dumps its knob positions when the
port opens, or one stray message, binds nothing. Notes, clock and CCs 120-127 (channel
mode messages) are ignored.

The preset is edited with ``tomlkit``, which keeps comments, order and layout; only
the one binding (and any old binding of the same CC) changes. The file is written
with :func:`~livegen.music.atomic.write_atomically` (a temporary file beside it,
fsync-ed, renamed over it), so a crash never leaves half a preset.
"""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.exceptions
from tomlkit.items import InlineTable, Table

from livegen.engine.controls import PARAMETERS, Binding, parse_controls, toml_name
from livegen.errors import ConfigError, LivegenError
from livegen.io.base import MidiInput
from livegen.music.atomic import write_atomically
from livegen.music.events import CONTROL_CHANGE, MidiEvent, decode_message

#: How long ``livegen learn`` waits for a control to move by default (seconds).
DEFAULT_TIMEOUT = 60.0

#: Messages the input may queue before the learner reads them (extra ones are dropped).
_QUEUE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class Learned:
    """What :func:`learn` wrote: the binding (with its channel as written, None = the
    map's), the CC's channel 1-16 as received, the parameters whose old binding of
    that CC was removed, the preset file, and whether the file was created."""

    binding: Binding
    channel_received: int
    replaced: tuple[str, ...]
    preset: Path
    created: bool

    def describe(self) -> str:
        """One line for the terminal, e.g. ``temperature = CC 21 (channel 1) in presets/mine.toml``."""
        text = (
            f"{toml_name(self.binding.name)} = CC {self.binding.cc} (channel {self.channel_received}) in {self.preset}"
        )
        if self.replaced:
            text += f"; CC {self.binding.cc} was bound to {', '.join(self.replaced)}, which is now unbound"
        if self.created:
            text += " (new file)"
        return text


def parameter_name(param: str) -> str:
    """``top-p`` or ``top_p`` -> ``top_p``; ConfigError listing the accepted names otherwise."""
    name = param.strip().replace("-", "_")
    if name not in PARAMETERS:
        accepted = ", ".join(toml_name(n) for n in PARAMETERS)
        raise ConfigError(f"learn: parameter {param!r} is unknown; accepted: {accepted}")
    return name


def _check_preset_path(path: Path) -> None:
    if path.suffix.lower() != ".toml":
        raise ConfigError(
            f"--preset {path}: expected a .toml file to write the binding into (for example presets/mine.toml)"
        )
    if path.exists() and not path.is_file():
        raise ConfigError(f"--preset {path}: is not a file; expected a .toml file")


def _parse(path: Path) -> tomlkit.TOMLDocument:
    if not path.exists():
        return tomlkit.document()
    try:
        return tomlkit.parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomlkit.exceptions.ParseError) as err:
        raise ConfigError(f"{path}: not a readable TOML preset ({err})") from err


def _plain(value: Any) -> Any:
    """tomlkit containers as plain dicts and lists (for :func:`parse_controls`)."""
    unwrap = getattr(value, "unwrap", None)
    return unwrap() if callable(unwrap) else value


def _controls_of(doc: tomlkit.TOMLDocument, source: str) -> Table | InlineTable | None:
    controls = doc.get("controls")
    if controls is None:
        return None
    if not isinstance(controls, Table | InlineTable):
        raise ConfigError(f"{source}: 'controls' must be a table ([controls]), got {_plain(controls)!r}")
    return controls


def check_preset(preset_path: Path, param: str) -> None:
    """Fail before listening if the preset cannot take a binding of ``param`` (setup context).

    The path must name a .toml file (it may not exist yet); an existing ``[controls]``
    must be valid; ``model`` needs ``models``.
    """
    name = parameter_name(param)
    _check_preset_path(preset_path)
    doc = _parse(preset_path)
    controls = _controls_of(doc, str(preset_path))
    table = _plain(controls) if controls is not None else {}
    control_map = parse_controls(table, str(preset_path))
    if name == "model" and not control_map.models:
        raise ConfigError(
            f"{preset_path}: learning 'model' needs the list of models the knob chooses from in [controls]; "
            'add e.g. models = ["folk-lstm", "my-folk"] first'
        )


def update_controls(
    text: str, param: str, cc: int, channel: int, *, source: str = "preset"
) -> tuple[str, Binding, tuple[str, ...]]:
    """Bind ``param`` to ``cc`` received on ``channel`` (1-16) in a preset's TOML text.

    Returns the new text, the binding as written and the parameters whose binding of
    the same CC (on an overlapping channel) was removed. The binding is the plain CC
    number when ``channel`` is the table's ``channel``, or when the table has no
    ``channel`` and ``channel`` is 1 (the usual controller, which then counts on any
    channel); otherwise ``{ cc = N, channel = C }``. Other keys, comments and tables are
    kept as they were. Raises :class:`ConfigError` naming ``source``.
    """
    name = parameter_name(param)
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as err:
        raise ConfigError(f"{source}: not a readable TOML preset ({err})") from err
    controls = _controls_of(doc, source)
    if controls is None:
        controls = tomlkit.table()
        doc.add("controls", controls)
    current = parse_controls(_plain(controls), source)
    if current.channel == channel or (current.channel is None and channel == 1):
        binding = Binding(name, cc, None)
    else:
        binding = Binding(name, cc, channel)
    listens_on = channel  # the new binding hears exactly this channel, or every channel when plain and unset
    wide = binding.channel is None and current.channel is None
    replaced: list[str] = []
    for other in current.bindings.values():
        if other.name == name or other.cc != cc:
            continue
        theirs = current.effective_channel(other)
        if wide or theirs is None or theirs == listens_on:
            replaced.append(toml_name(other.name))
            _remove(controls, other.name)
    value: Any = binding.cc
    if binding.channel is not None:
        inline = tomlkit.inline_table()
        inline.update({"cc": binding.cc, "channel": binding.channel})
        value = inline
    spelled = [key for key in controls if str(key).replace("-", "_") == name]
    # An existing binding is replaced where it stands (keeping its spelling and comment).
    controls[spelled[0] if spelled else toml_name(name)] = value
    new_text = tomlkit.dumps(doc)
    parse_controls(_plain(_controls_of(tomlkit.parse(new_text), source)), source)  # what we wrote must load
    return new_text, binding, tuple(replaced)


def _remove(controls: Table | InlineTable, name: str) -> None:
    for key in list(controls.keys()):
        if str(key).replace("-", "_") == name:
            del controls[key]


def write_binding(preset_path: Path, param: str, cc: int, channel: int) -> Learned:
    """Write the binding into ``preset_path`` (created when missing) and say what changed (setup context)."""
    _check_preset_path(preset_path)
    created = not preset_path.exists()
    text = "" if created else _read(preset_path)
    new_text, binding, replaced = update_controls(text, param, cc, channel, source=str(preset_path))
    _write_atomically(preset_path, new_text)
    return Learned(binding, channel, replaced, preset_path, created)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not a readable TOML preset ({err})") from err


def _write_atomically(path: Path, text: str) -> None:
    """Replace the preset with ``text`` whole, or leave it as it was (setup context)."""
    try:
        write_atomically(path, lambda out: out.write(text.encode("utf-8")))
    except OSError as err:
        raise ConfigError(f"{path}: cannot write the preset ({err})") from err


def wait_for_control(midi_input: MidiInput, timeout: float) -> tuple[int, int]:
    """``(cc, channel 1-16)`` of the first CC that moves on ``midi_input`` (setup context).

    Installs its own callback on the input (backend thread: enqueue only). Raises
    :class:`LivegenError` when nothing moves within ``timeout`` seconds.
    """
    inbox: queue.Queue[MidiEvent] = queue.Queue(_QUEUE_SIZE)

    def enqueue(data: tuple[int, ...], _t_ns: int) -> None:
        """Backend thread: keep control changes only; never block, never raise."""
        event = decode_message(0, data)
        if event is not None and event.kind == CONTROL_CHANGE and event.data1 < 120:
            with contextlib.suppress(queue.Full):
                inbox.put_nowait(event)

    midi_input.set_callback(enqueue)
    first: dict[tuple[int, int], int] = {}
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LivegenError(
                f"learn: no control moved on MIDI input {midi_input.name!r} within {timeout:g} s "
                "(turn a knob, move a fader or press a button that sends CCs 0-119; notes and clock are ignored)"
            )
        try:
            event = inbox.get(timeout=min(remaining, 0.1))
        except queue.Empty:
            continue
        key, value = (event.data1, event.channel + 1), event.data2
        if key not in first:
            first[key] = value
        elif value != first[key]:
            return key


def learn(
    param: str,
    preset_path: Path,
    input_port: str | None = None,
    api: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    on_listening: Callable[[str], None] | None = None,
) -> Learned:
    """Wait for a control to move on ``input_port`` and bind it to ``param`` in ``preset_path``.

    Setup context (blocks up to ``timeout`` seconds). ``input_port`` is a port name or
    a unique part of one (default: the first keyboard found); ``api`` an ``--midi-api``
    name. ``on_listening`` is called with the input's port name once it is open. Raises
    :class:`ConfigError` (parameter, preset), the port errors of
    :func:`livegen.io.midi_input.open_input`, or :class:`LivegenError` on timeout.
    """
    from livegen.io.midi_input import open_input

    if not timeout > 0:
        raise ConfigError(f"--timeout {timeout}: expected a number of seconds above 0")
    check_preset(preset_path, param)
    midi_input = open_input(input_port, api=api)
    try:
        if on_listening is not None:
            on_listening(midi_input.name)
        cc, channel = wait_for_control(midi_input, timeout)
    finally:
        midi_input.close()
    return write_binding(preset_path, param, cc, channel)
