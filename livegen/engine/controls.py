"""Live controls: the map from a controller's knobs and buttons to jam parameters.

Contexts:

- setup: :func:`parse_controls` (validates a preset's ``[controls]`` table),
  :class:`ControlMap` construction and :meth:`ControlMap.to_table`.
- control: :meth:`ControlMap.handle`, called on the control thread (the planner's) for
  each incoming MIDI message. It keeps the last value of each control, so one map
  belongs to one thread; :class:`ControlChange` values are immutable and may be handed on.

A preset's ``[controls]`` table (keys with dashes or underscores)::

    [controls]
    channel = 1                          # optional, 1-16: only CCs on this channel count
    temperature = 21                     # a CC number 0-119 ...
    top-p = { cc = 22, channel = 2 }     # ... or a CC on its own channel
    model = 23
    models = ["folk-lstm", "my-folk"]    # the choices of `model` (required when it is bound)
    panic = 64

CC numbers 120-127 are channel mode messages (all notes off and so on) and cannot be
bound. Written by hand: this is livegen's own schema over a few integers, which no
library describes; the TOML itself is read by ``tomllib`` (and written by ``tomlkit``
in :mod:`livegen.engine.learn`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from livegen.errors import ConfigError
from livegen.music.events import CONTROL_CHANGE, MidiEvent

#: The follow modes the ``mode`` control steps through, low knob to high.
CONTROL_MODES: tuple[str, ...] = ("call-response", "accompany", "autonomous")

#: Bindable parameters as ControlChange names (underscores) in the order the docs list them.
CONTINUOUS: tuple[str, ...] = ("temperature", "top_p", "density", "response_bars", "mode", "model")
#: Buttons: they fire ``True`` when the value rises through 64.
SWITCHES: tuple[str, ...] = ("panic", "record")
PARAMETERS: tuple[str, ...] = CONTINUOUS + SWITCHES

#: Fields of ``[controls]`` that are not bindings.
_OTHER_FIELDS: tuple[str, ...] = ("channel", "models")

#: Highest bindable CC number (120-127 are channel mode messages).
MAX_CC = 119
DENSITY_MIN = 0.25
DENSITY_MAX = 4.0
MAX_RESPONSE_BARS = 16
SWITCH_THRESHOLD = 64


def toml_name(name: str) -> str:
    """A parameter's spelling in TOML and on the command line: ``top_p`` -> ``top-p``."""
    return name.replace("_", "-")


def accepted_fields() -> str:
    """The ``[controls]`` field names, comma-separated, for error messages."""
    return ", ".join(sorted(toml_name(name) for name in PARAMETERS + _OTHER_FIELDS))


@dataclass(frozen=True, slots=True)
class ControlChange:
    """A parameter moved by a control: ``name`` is one of :data:`PARAMETERS`.

    ``value`` is a float (temperature, top_p, density), an int (response_bars), a str
    (mode, model) or ``True`` (panic, record).
    """

    name: str
    value: float | int | str | bool


@dataclass(frozen=True, slots=True)
class Binding:
    """One parameter on one CC. ``channel`` is 1-16, or None for the map's channel (any when unset)."""

    name: str
    cc: int
    channel: int | None = None

    def to_toml(self) -> int | dict[str, int]:
        """The TOML value: the plain CC number, or ``{cc, channel}`` when the binding has its own channel."""
        if self.channel is None:
            return self.cc
        return {"cc": self.cc, "channel": self.channel}


def _where(channel: int | None) -> str:
    return "on any channel" if channel is None else f"on channel {channel}"


def temperature_value(v: int) -> float:
    """CC value 0-127 -> temperature 2 ** ((v - 64) / 32): 0.25 at 0, 1.0 at 64, about 3.9 at 127."""
    return float(2.0 ** ((v - 64) / 32))


def top_p_value(v: int) -> float:
    """CC value 0-127 -> nucleus mass 0.05 + 0.95 * v / 127 (0.05 to 1.0)."""
    return 0.05 + 0.95 * v / 127


def density_value(v: int) -> float:
    """CC value 0-127 -> notes-per-beat multiplier 2 ** ((v - 64) / 32), clamped to 0.25..4."""
    return min(DENSITY_MAX, max(DENSITY_MIN, float(2.0 ** ((v - 64) / 32))))


def response_bars_value(v: int) -> int:
    """CC value 0-127 -> answer length 1 + round(v * 15 / 127) bars (1 to 16)."""
    return 1 + round(v * (MAX_RESPONSE_BARS - 1) / 127)


def choice(v: int, choices: tuple[str, ...]) -> str:
    """CC value 0-127 -> one of ``choices``, the range split into equal parts: ``choices[v * n // 128]``."""
    return choices[v * len(choices) // 128]


class ControlMap:
    """Bindings from CCs to parameters, and the last value each control sent.

    Built in setup (usually by :func:`parse_controls`); :meth:`handle` runs on the
    control thread. Raises :class:`ConfigError` (naming ``source``) when two bindings
    share a CC on an overlapping channel, when ``model`` is bound without ``models``,
    or when a value is out of range.
    """

    def __init__(
        self,
        bindings: Iterable[Binding] = (),
        *,
        channel: int | None = None,
        models: Iterable[str] = (),
        source: str = "controls",
    ) -> None:
        self.channel = channel
        self.models: tuple[str, ...] = tuple(models)
        self.source = source
        found: dict[str, Binding] = {}
        for binding in bindings:
            if binding.name not in PARAMETERS:
                accepted = ", ".join(toml_name(name) for name in PARAMETERS)
                raise ConfigError(f"{source}: control {binding.name!r} is unknown; accepted: {accepted}")
            if binding.name in found:
                raise ConfigError(f"{source}: field 'controls.{toml_name(binding.name)}' is bound twice")
            _check_cc(binding.cc, f"controls.{toml_name(binding.name)}", source)
            if binding.channel is not None:
                _check_channel(binding.channel, f"controls.{toml_name(binding.name)}.channel", source)
            found[binding.name] = binding
        if channel is not None:
            _check_channel(channel, "controls.channel", source)
        self._bindings = found
        self._check_overlaps()
        if "model" in found and not self.models:
            raise ConfigError(
                f"{source}: field 'controls.model' is bound to CC {found['model'].cc} but 'controls.models' is "
                'missing; list the models the knob chooses from, e.g. models = ["folk-lstm", "my-folk"]'
            )
        # (cc, channel 1-16 or None for any) -> parameter name; handle() looks up both keys.
        self._lookup: dict[tuple[int, int | None], str] = {
            (b.cc, self.effective_channel(b)): name for name, b in found.items()
        }
        self._last: dict[str, float | int | str] = {}
        self._level: dict[str, int] = {}

    @property
    def bindings(self) -> Mapping[str, Binding]:
        """Parameter name (``top_p`` style) -> its binding; a copy, so changing it changes nothing."""
        return dict(self._bindings)

    def effective_channel(self, binding: Binding) -> int | None:
        """The channel 1-16 a binding listens on: its own, else the map's, else None (any)."""
        return binding.channel if binding.channel is not None else self.channel

    def _check_overlaps(self) -> None:
        items = list(self._bindings.values())
        for i, first in enumerate(items):
            for second in items[i + 1 :]:
                if first.cc != second.cc:
                    continue
                a, b = self.effective_channel(first), self.effective_channel(second)
                if a is None or b is None or a == b:
                    raise ConfigError(
                        f"{self.source}: CC {first.cc} is bound twice: 'controls.{toml_name(first.name)}' "
                        f"({_where(a)}) and 'controls.{toml_name(second.name)}' ({_where(b)}); "
                        "bind each CC to one parameter (or give them different channels)"
                    )

    def handle(self, event: MidiEvent) -> list[ControlChange]:
        """The parameter changes one incoming MIDI message makes (control thread).

        Non-CC messages, CCs bound to nothing and steps that map to the value last
        emitted give ``[]``. A button gives ``True`` when its value reaches 64 or more
        after being below 64 (its first message counts as rising when it is 64 or more).
        """
        if event.kind != CONTROL_CHANGE:
            return []
        cc, v = event.data1, event.data2
        name = self._lookup.get((cc, event.channel + 1))
        if name is None:
            name = self._lookup.get((cc, None))
            if name is None:
                return []
        if name in SWITCHES:
            before = self._level.get(name)
            self._level[name] = v
            if v >= SWITCH_THRESHOLD and (before is None or before < SWITCH_THRESHOLD):
                return [ControlChange(name, True)]
            return []
        value = self._map(name, v)
        if self._last.get(name) == value:
            return []
        self._last[name] = value
        return [ControlChange(name, value)]

    def _map(self, name: str, v: int) -> float | int | str:
        if name == "temperature":
            return temperature_value(v)
        if name == "top_p":
            return top_p_value(v)
        if name == "density":
            return density_value(v)
        if name == "response_bars":
            return response_bars_value(v)
        if name == "mode":
            return choice(v, CONTROL_MODES)
        return choice(v, self.models)

    def reset(self) -> None:
        """Forget the last values, so the next message of every control emits (control thread)."""
        self._last.clear()
        self._level.clear()

    def to_table(self) -> dict[str, Any]:
        """The ``[controls]`` table as plain TOML-able values (setup context).

        ``parse_controls(m.to_table(), source)`` gives back an equal map.
        """
        table: dict[str, Any] = {}
        if self.channel is not None:
            table["channel"] = self.channel
        for name in PARAMETERS:
            if name in self._bindings:
                table[toml_name(name)] = self._bindings[name].to_toml()
        if self.models:
            table["models"] = list(self.models)
        return table

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ControlMap):
            return NotImplemented
        return (self.channel, self.models, self._bindings) == (other.channel, other.models, other._bindings)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ControlMap({self.to_table()!r})"


def _check_cc(value: object, field: str, source: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_CC:
        raise ConfigError(
            f"{source}: field '{field}': expected a CC number 0-{MAX_CC} or an inline table "
            f"{{ cc = N, channel = C }}, got {value!r}"
        )
    return value


def _check_channel(value: object, field: str, source: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 16:
        raise ConfigError(f"{source}: field '{field}': expected a MIDI channel 1-16, got {value!r}")
    return value


def _binding(name: str, key: str, raw: object, source: str) -> Binding:
    field = f"controls.{key}"
    if isinstance(raw, Mapping):
        unknown = sorted(str(k) for k in raw if k not in ("cc", "channel"))
        if unknown:
            raise ConfigError(f"{source}: field '{field}': unknown key(s) {', '.join(unknown)}; accepted: cc, channel")
        if "cc" not in raw:
            raise ConfigError(f"{source}: field '{field}': the inline table needs cc, e.g. {{ cc = 21, channel = 2 }}")
        cc = _check_cc(raw["cc"], f"{field}.cc", source)
        channel = _check_channel(raw["channel"], f"{field}.channel", source) if "channel" in raw else None
        return Binding(name, cc, channel)
    return Binding(name, _check_cc(raw, field, source), None)


def parse_controls(table: Mapping[str, Any], source: str) -> ControlMap:
    """Validate a preset's ``[controls]`` table into a :class:`ControlMap` (setup context).

    ``source`` names the file in errors. Raises :class:`ConfigError` naming the source,
    the field, the bad value and what is accepted.
    """
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: [controls] must be a table, got {table!r}")
    seen: dict[str, str] = {}
    channel: int | None = None
    models: tuple[str, ...] = ()
    bindings: list[Binding] = []
    for key, raw in table.items():
        name = str(key).replace("-", "_")
        if name not in PARAMETERS and name not in _OTHER_FIELDS:
            raise ConfigError(f"{source}: field 'controls.{key}' is unknown; accepted: {accepted_fields()}")
        if name in seen:
            raise ConfigError(
                f"{source}: fields 'controls.{seen[name]}' and 'controls.{key}' are the same field; keep one"
            )
        seen[name] = str(key)
        if name == "channel":
            channel = _check_channel(raw, "controls.channel", source)
        elif name == "models":
            models = _models(raw, source)
        else:
            bindings.append(_binding(name, str(key), raw, source))
    return ControlMap(bindings, channel=channel, models=models, source=source)


def _models(raw: object, source: str) -> tuple[str, ...]:
    if not isinstance(raw, list | tuple) or not raw or not all(isinstance(m, str) and m.strip() for m in raw):
        raise ConfigError(
            f"{source}: field 'controls.models': expected a non-empty list of model names or package paths, "
            f'e.g. ["folk-lstm", "my-folk"], got {raw!r}'
        )
    duplicates = sorted({m for m in raw if list(raw).count(m) > 1})
    if duplicates:
        raise ConfigError(f"{source}: field 'controls.models': {', '.join(duplicates)} listed more than once")
    return tuple(raw)
