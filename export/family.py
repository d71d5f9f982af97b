"""What every model family gives ``python -m export``, and the registry of families.

Context: setup (the command line reads the registry; a family's own module, and torch with
it, is imported only when that family is trained or exported, so ``--help`` stays fast).

A family is one folder, ``export/<family>/``: ``model.py`` (its networks and config),
``train.py`` (data, losses, the training loop), ``package.py`` (ONNX export, manifest,
model card) and ``__init__.py``, which defines ``FAMILY``, a :class:`Family`. Adding one of
livegen's own families is that folder and one entry in :data:`FAMILIES`; a third party's is
its module and one entry point in the ``livegen.export_families`` group (name = the module
that defines ``FAMILY``), as ``docs/examples/pitch_chain/`` shows. A third party's cannot
replace one of livegen's own names.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from export.errors import ExportError

if TYPE_CHECKING:
    from export.common import ConfigRecord, TrainingOptions

#: Every family's name on the command line and the module that defines its ``FAMILY``.
FAMILIES: dict[str, str] = {
    "midirnn": "export.midirnn",
    "token-lstm": "export.tokenlstm",
    "deep-musician": "export.deepmusician",
    "multitrack-rnn": "export.multitrack_rnn",
    "midigan": "export.midigan",
    "imagegan": "export.imagegan",
    "crnngan": "export.crnngan",
    "multitrack-cnn": "export.multitrack_cnn",
}

#: The entry-point group of other distributions' families: ``name = "module"`` (the module defines ``FAMILY``).
ENTRY_POINTS = "livegen.export_families"


def families() -> dict[str, str]:
    """Every family ``python -m export`` knows: livegen's own, then those installed distributions declare."""
    found = {ep.name: ep.value.split(":")[0] for ep in entry_points(group=ENTRY_POINTS)}
    return {**FAMILIES, **{name: module for name, module in found.items() if name not in FAMILIES}}


#: The ``train`` command's size options (argparse names) and the config fields they set.
SIZES: Mapping[str, str] = {"window": "window", "batch_size": "batch_size", "hidden": "hidden"}


class Export(Protocol):
    """Export a checkpoint written by the family's ``train`` as the package folder ``out``; returns ``out``."""

    def __call__(self, checkpoint: Path, out: Path, /, *, name: str | None = ..., version: str = ...) -> Path: ...


@dataclass(frozen=True, slots=True)
class Family:
    """One model family: its name, options and config classes, training, export and model card."""

    #: The name on the command line and in checkpoints and manifests (``multitrack-rnn``).
    name: str
    #: Its training options (a :class:`~export.common.TrainingOptions` with a ``config`` field).
    options: type[TrainingOptions]
    #: Its architecture and training hyper-parameters, kept in checkpoints and manifests.
    config: type[ConfigRecord]
    #: Train as the options say and write ``checkpoint.pt`` into ``options.out``; returns its path.
    train: Callable[[Any], Path]
    #: Export a checkpoint as a model package.
    export: Export
    #: The model card (the package's README.md) from a checkpoint and the export's figures.
    card: Callable[..., str]
    #: The ``train`` command's options this family reads (argparse names) and the config fields they set;
    #: an option left out (None) keeps the config's default.
    flags: Mapping[str, str] = field(default_factory=lambda: dict(SIZES))
    #: ``--recipe`` values and the config fields each sets (the command line's own options override them).
    recipes: Mapping[str, Mapping[str, object]] = field(default_factory=lambda: {"seed": {}})
    #: Builds the config from its fields (default: the config class itself).
    make_config: Callable[..., ConfigRecord] | None = None

    def configure(self, args: argparse.Namespace) -> ConfigRecord:
        """The config the ``train`` command's ``args`` ask for."""
        if args.recipe not in self.recipes:
            raise ExportError(f"--recipe {args.recipe!r}: {self.name} accepts {', '.join(self.recipes)}")
        given = {name: getattr(args, flag) for flag, name in self.flags.items() if getattr(args, flag) is not None}
        return (self.make_config or self.config)(**(dict(self.recipes[args.recipe]) | given))

    def options_from(self, args: argparse.Namespace, **run: Any) -> TrainingOptions:
        """The training options of the ``train`` command's ``args``; ``run``: the fields every family takes."""
        return self.options(**run, config=self.configure(args))  # type: ignore[call-arg]


def family(name: str) -> Family:
    """The family called ``name`` (its module is imported now)."""
    known = families()
    if name not in known:
        raise ExportError(f"unknown model family {name!r}; accepted: {', '.join(known)}")
    found = getattr(importlib.import_module(known[name]), "FAMILY", None)
    if not isinstance(found, Family) or found.name != name:
        raise ExportError(f"{known[name]}.FAMILY: expected the Family {name!r}, got {found!r}")
    return found
