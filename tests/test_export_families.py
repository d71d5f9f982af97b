"""The family contract of ``python -m export``: every registered family, the command line's view of them.

Context: test (needs the ``train`` extra for the families' modules).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from export.__main__ import _parser
from export.common import ConfigRecord, TrainingOptions
from export.errors import ExportError
from export.family import FAMILIES, family


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_registered_family_gives_its_options_config_and_functions(name: str) -> None:
    chosen = family(name)
    assert chosen.name == name
    assert issubclass(chosen.options, TrainingOptions)
    assert issubclass(chosen.config, ConfigRecord)
    config = next(f for f in dataclasses.fields(chosen.options) if f.name == "config")
    assert config.default_factory is chosen.config
    assert all(callable(f) for f in (chosen.train, chosen.export, chosen.card))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_the_train_command_builds_each_familys_options(name: str, tmp_path: Path) -> None:
    args = _parser().parse_args(["train", name, "--data", "corpus:folk", "--out", str(tmp_path), "--batch-size", "7"])
    options = family(name).options_from(args, data=args.data, out=args.out, epochs=3)
    assert isinstance(options, family(name).options)
    assert options.config.batch_size == 7
    assert options.epochs == 3


def test_a_recipe_the_family_lacks_is_refused_with_what_it_accepts(tmp_path: Path) -> None:
    args = _parser().parse_args(["train", "crnngan", "--data", "x", "--out", str(tmp_path), "--recipe", "stable"])
    with pytest.raises(ExportError, match="--recipe 'stable': crnngan accepts seed"):
        family("crnngan").configure(args)
    args = _parser().parse_args(["train", "midigan", "--data", "x", "--out", str(tmp_path), "--recipe", "stable"])
    assert family("midigan").configure(args).minibatch_std


def test_an_unknown_family_is_named_with_the_accepted_ones() -> None:
    with pytest.raises(ExportError, match="unknown model family 'transformer'; accepted: midirnn, token-lstm"):
        family("transformer")


def test_help_lists_every_family_without_importing_torch() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from export.__main__ import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "    main(['train', '--help'])\n"
        "print('torch' in sys.modules, out.getvalue().replace(chr(10), ' '))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imported, text = result.stdout.split(" ", 1)
    assert imported == "False"
    assert all(name in " ".join(text.split()) for name in FAMILIES)
