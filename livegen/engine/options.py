"""The jam's options, each declared once: on its :class:`~livegen.engine.jam.JamConfig` field.

Context: setup. A field declared with :func:`option` carries its type and default (the
field's own), its command-line flag, help, accepted values (choices or :class:`Bounds`)
and, for a live control, the verb a typed command uses. Everything that reads options is
generated from those declarations: the argparse options (:func:`add_arguments`), the
preset schema (:func:`preset_types`), the range checks (:func:`check_bounds`, which
``JamConfig`` runs, so a preset, the command line and a typed command refuse a value with
the same words) and the typed commands' verbs (:func:`live_verbs`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from livegen.errors import ConfigError

T = TypeVar("T")


def shown(value: Any) -> str:
    """A value as a message or ``--help`` shows it (``-5``, not ``-5.0``)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


#: The key of an option in its field's metadata.
OPTION = "livegen.option"


@dataclass(frozen=True, slots=True)
class Bounds:
    """The numbers an option accepts: ``low`` to ``high`` (``low`` itself refused with ``low_open``)."""

    low: float
    high: float = math.inf
    low_open: bool = False
    note: str = ""  # what the number counts, for messages: " bars", " (a day)"

    def accepts(self, value: float) -> bool:
        """Whether ``value`` lies within (nan and infinities never do)."""
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high and math.isfinite(value)

    def check(self, value: float, spelled: str) -> float:
        """``value``, or a :class:`ConfigError` that names ``spelled`` (the option) and what is accepted."""
        if not self.accepts(value):
            raise ConfigError(f"{spelled} {shown(value)}: expected {self.describe()}")
        return value

    def describe(self) -> str:
        """What is accepted, in words: ``1 to 64``, ``more than 0 and at most 1440``, ``at least 1``."""
        if self.high == math.inf:
            return f"{'more than' if self.low_open else 'at least'} {self.low:g}{self.note}"
        if self.low_open:
            return f"more than {self.low:g} and at most {self.high:g}{self.note}"
        return f"{self.low:g} to {self.high:g}{self.note}"


@dataclass(frozen=True, slots=True)
class Option:
    """How one jam setting is spelled and checked everywhere (see the module docstring).

    ``flag`` None: a preset-only setting. ``live``: the verb a typed command sets it with
    (its value is checked against the same bounds). ``toml``: what a preset may write,
    when more than the field's type (``transpose = -3``). ``group``: the ``--help`` section.
    """

    flag: str | None
    help: str
    choices: tuple[str, ...] = ()
    bounds: Bounds | None = None
    metavar: str | None = None
    live: str | None = None
    toml: tuple[type, ...] = ()
    group: str | None = None


def option(
    default: T,
    flag: str | None,
    help: str,
    *,
    choices: tuple[str, ...] = (),
    bounds: Bounds | None = None,
    metavar: str | None = None,
    live: str | None = None,
    toml: tuple[type, ...] = (),
    group: str | None = None,
) -> T:
    """A dataclass field with ``default`` that is a jam option (see :class:`Option`)."""
    declared = Option(flag, help, choices, bounds, metavar, live, toml, group)
    return dataclasses.field(default=default, metadata={OPTION: declared})


@dataclass(frozen=True, slots=True)
class Declared:
    """One option as declared on a config class: its field's name, type and default."""

    name: str
    kind: type  # str, int, float, bool, Path, or tuple (a list of words)
    default: Any
    option: Option

    @property
    def spelled(self) -> str:
        """How the user names it: its flag, or the preset key for a preset-only setting."""
        return self.option.flag or self.name.replace("_", "-")


def _kind(hint: Any) -> type:
    """The type an annotation names, None taken off (``float | None`` -> float)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    kind = origin if origin is not None else hint
    assert isinstance(kind, type), hint
    return kind


@functools.cache
def declared(config_class: type) -> tuple[Declared, ...]:
    """The options of ``config_class`` in field order (read once per class)."""
    hints = typing.get_type_hints(config_class)
    return tuple(
        Declared(f.name, _kind(hints[f.name]), f.default, f.metadata[OPTION])
        for f in dataclasses.fields(config_class)
        if OPTION in f.metadata
    )


def check_bounds(config: Any) -> None:
    """Refuse a config whose numbers lie outside their options' bounds, or whose words are not
    among their choices, naming the option."""
    config_class: type = type(config)
    for d in declared(config_class):
        value, o = getattr(config, d.name), d.option
        if value is None:
            continue
        if o.bounds is not None:
            o.bounds.check(value, d.spelled)
        if o.choices and value not in o.choices:
            raise ConfigError(f"{d.spelled} {value!r}: expected one of {', '.join(o.choices)}")


def preset_types(config_class: type) -> dict[str, tuple[type, ...]]:
    """What a preset may write for each option (a float option takes a whole number too)."""
    by_kind: dict[type, tuple[type, ...]] = {float: (int, float), Path: (str,), tuple: (list,)}
    return {d.name: d.option.toml or by_kind.get(d.kind, (d.kind,)) for d in declared(config_class)}


def live_verbs(config_class: type) -> dict[str, Declared]:
    """Typed-command verbs of the live options: the flag's word and the live name."""
    verbs: dict[str, Declared] = {}
    for d in declared(config_class):
        live = d.option.live
        if live is not None:
            verbs[live] = verbs[live.replace("_", "-")] = verbs[d.spelled.removeprefix("--")] = d
    return verbs


def _help(d: Declared) -> str:
    has_default = d.default not in (None, False, "") and not isinstance(d.default, tuple)
    default = f" (default {shown(d.default)})" if has_default else ""
    return d.option.help + default


def add_arguments(parser: argparse.ArgumentParser, config_class: type, names: tuple[str, ...] | None = None) -> None:
    """Add the options of ``config_class`` that have a flag (or those in ``names``) to ``parser``.

    Every argument defaults to None (not given), so that a preset's value or the field's
    default applies; a switch takes ``--no-X`` too, to turn off what a preset turned on.
    """
    groups: dict[str, argparse._ArgumentGroup] = {}
    for d in declared(config_class):
        o = d.option
        if o.flag is None or (names is not None and d.name not in names):
            continue
        target: Any = parser
        if o.group is not None:
            target = groups.get(o.group) or groups.setdefault(o.group, parser.add_argument_group(o.group))
        kwargs: dict[str, Any] = {"dest": d.name, "help": _help(d), "default": None}
        if o.metavar is not None:
            kwargs["metavar"] = o.metavar
        if d.kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif d.kind is tuple:
            kwargs["nargs"] = "+"
        elif o.choices:
            kwargs["choices"] = o.choices
        else:
            kwargs["type"] = d.kind
        target.add_argument(o.flag, **kwargs)


def given(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    """The options the command line gave (None: not given), as ``config_class`` takes them."""
    values = {d.name: getattr(args, d.name, None) for d in declared(config_class)}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
