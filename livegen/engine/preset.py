"""Presets: TOML files a performer starts from, mapped onto :class:`JamConfig`.

Context: setup. A preset has a ``[jam]`` table whose keys are the long options
of ``livegen jam`` (with dashes or underscores; command-line options override
them) and an optional ``[controls]`` table binding MIDI CCs to live parameters
(:mod:`livegen.engine.controls`, written by ``livegen learn``). Unknown keys,
wrong types and values out of range are errors that name the file, the field,
the value and what is accepted; the keys, their types and ranges are JamConfig's options
(:mod:`livegen.engine.options`).

A preset writes only inside livegen's recordings folder: its ``out-dir`` is a folder
inside ``out/`` of the working directory, and its ``record`` and ``log-file`` are files
inside the jam's out-dir (the preset's, or ``--out-dir`` when the command line gives
one). An absolute path, a ``..`` or a symbolic link that leads out is refused by name;
the command line may name any path. A ``seed-file`` is read, not written, and is
relative to the preset file.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livegen.engine.config import RECORDINGS, JamConfig
from livegen.engine.controls import parse_controls
from livegen.engine.options import preset_types
from livegen.errors import ConfigError

PRESET_DIR = Path(__file__).resolve().parents[2] / "presets"

#: What a preset may write for each field of ``[jam]`` (declared on JamConfig's options).
_TYPES = preset_types(JamConfig)
TABLES = ("jam", "controls")
#: Files a jam writes: in a preset, a path inside the jam's out-dir (option, example).
_WRITTEN = {"record": ("--record", "take.mid"), "log_file": ("--log-file", "livegen.log")}


@dataclass(frozen=True, slots=True)
class Preset:
    """A preset file read and checked: ``values`` are JamConfig keyword arguments, except that
    the files it writes (:data:`_WRITTEN`) are still relative to the jam's out-dir."""

    path: Path
    values: dict[str, Any]
    keys: dict[str, str]  # field -> the key as the file spells it


def _resolve(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = PRESET_DIR / f"{name_or_path}.toml"
    if bundled.is_file():
        return bundled
    known = sorted(p.stem for p in PRESET_DIR.glob("*.toml")) if PRESET_DIR.is_dir() else []
    raise ConfigError(f"preset {name_or_path!r}: no such file; bundled presets: {', '.join(known) or 'none'}")


def _inside(preset: Path, key: str, raw: str, base: Path, option: str, example: str, where: str) -> Path:
    """``raw`` (a preset's relative path) resolved inside ``base``, symbolic links followed."""
    kind = "folder" if option == "--out-dir" else "file"
    accepted = (
        f"a preset names a {kind} inside {where}, such as {example!r} ({option} on the command line may name any path)"
    )
    if Path(raw).is_absolute():
        raise ConfigError(f"{preset}: field 'jam.{key}': {raw!r} is absolute; {accepted}")
    base = base.resolve()
    target = (base / raw).resolve()
    if not target.is_relative_to(base):
        raise ConfigError(f"{preset}: field 'jam.{key}': {raw!r} leaves {where} ({base}); {accepted}")
    return target


def load_preset(name_or_path: str) -> Preset:
    """The preset's ``[jam]`` and ``[controls]`` tables, checked."""
    path = _resolve(name_or_path)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: not a readable TOML preset ({err})") from err
    except RecursionError as err:  # tomllib recurses once per level of nesting
        raise ConfigError(f"{path}: not a readable TOML preset (tables or arrays nested too deeply)") from err
    unknown_tables = set(table) - set(TABLES)
    if unknown_tables:
        raise ConfigError(
            f"{path}: unknown table(s) {sorted(unknown_tables)}; a preset holds [jam] and optionally [controls]"
        )
    values: dict[str, Any] = {}
    keys: dict[str, str] = {}
    if "controls" in table:
        values["controls"] = parse_controls(table["controls"], str(path))
    jam = table.get("jam", {})
    if not isinstance(jam, dict):
        raise ConfigError(f"{path}: 'jam' must be a table ([jam] with the long options of livegen jam), got {jam!r}")
    for key, raw in jam.items():
        field = key.replace("-", "_")
        if field not in _TYPES:
            accepted = ", ".join(sorted(k.replace("_", "-") for k in _TYPES))
            raise ConfigError(f"{path}: field 'jam.{key}' is unknown; accepted: {accepted}")
        if not isinstance(raw, _TYPES[field]) or (isinstance(raw, bool) and bool not in _TYPES[field]):
            kinds = " or ".join(t.__name__ for t in _TYPES[field])
            raise ConfigError(f"{path}: field 'jam.{key}': expected {kinds}, got {raw!r}")
        value: Any = raw
        if field == "outputs":
            if not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{path}: field 'jam.outputs': expected a list of port names, 'synth' or 'none'")
            value = tuple(value)
        elif field == "out_dir":
            value = _inside(path, key, value, RECORDINGS, "--out-dir", "installation", "out/ of the working directory")
        elif field in _WRITTEN:
            option, example = _WRITTEN[field]
            if Path(value).is_absolute():  # refused now; relative ones are checked against the jam's out-dir
                _inside(path, key, value, RECORDINGS, option, example, "the jam's out-dir")
        elif field == "seed_file":
            value = (path.parent / value).resolve() if not Path(value).is_absolute() else Path(value)
        elif field == "transpose":
            value = str(value)
        values[field] = value
        keys[field] = key
    return Preset(path, values, keys)


def make_config(preset: str | None, overrides: dict[str, Any]) -> JamConfig:
    """A JamConfig from a preset (if any) with command-line ``overrides`` (None = not given)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if preset is None:
        return _config(given)
    loaded = load_preset(preset)
    values = {**loaded.values, **given}
    out_dir = Path(values.get("out_dir", RECORDINGS))
    for field, (option, example) in _WRITTEN.items():
        if field in loaded.values and field not in given:
            key = loaded.keys[field]
            values[field] = _inside(
                loaded.path, key, loaded.values[field], out_dir, option, example, "the jam's out-dir"
            )
    try:
        return _config(values)
    except ConfigError as err:
        raise ConfigError(f"{loaded.path}: {err} (in [jam] or on the command line)") from err


def _config(values: dict[str, Any]) -> JamConfig:
    names = {f.name for f in dataclasses.fields(JamConfig)}
    return JamConfig(**{k: v for k, v in values.items() if k in names})
