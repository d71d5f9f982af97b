"""Where packages and generator adapters are found.

Context: setup. Packages: a name of a bundled package (shipped inside the
installed ``livegen``), or a path to a folder or .zip. Adapters: the families
livegen ships, plus any third-party ones registered in the
``livegen.generators`` entry-point group.
"""

from __future__ import annotations

import importlib
import tomllib
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livegen.errors import ConfigError, PackageError
from livegen.models.manifest import MANIFEST, GateRecord, parse_manifest

if TYPE_CHECKING:
    from livegen.models.package import ModelPackage
    from livegen.models.step import StepGenerator

BUNDLED_DIR = Path(__file__).parent / "bundled"
DEFAULT_MODEL = "folk-lstm"

#: Where livegen's own families are declared when it runs from a source tree that is not installed.
_PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def bundled_packages() -> list[Path]:
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p for p in BUNDLED_DIR.iterdir() if (p / MANIFEST).is_file())


def gate_text(gate: GateRecord | None) -> str:
    """How ``models list`` and ``jam`` show a package's quality gate."""
    if gate is None:
        return "not gated"
    label = "EXPERIMENTAL" if gate.experimental else "passed"
    return f"{label} {gate.passed}/{gate.checks}"


def experimental_warning(model: str) -> str | None:
    """The one line ``jam`` prints when ``model`` (a bundled name or a package folder) failed its quality gate."""
    try:
        gate = parse_manifest(resolve_package(model) / MANIFEST).gate
    except (PackageError, OSError):
        return None  # a zip, or a broken package: loading it says what is wrong
    if gate is None or not gate.experimental:
        return None
    return f"{model} is experimental: it failed the quality gate ({gate_text(gate)}); its model card says how"


def is_bundled(path: Path) -> bool:
    """Whether ``path`` is a package shipped inside the installed livegen."""
    return path.is_dir() and path.resolve().parent == BUNDLED_DIR.resolve()


def resolve_package(name_or_path: str) -> Path:
    """A bundled package by name, else a path; raises :class:`PackageError` if neither."""
    for folder in bundled_packages():
        if folder.name == name_or_path:
            return folder
    path = Path(name_or_path)
    if path.exists():
        return path
    names = ", ".join(p.name for p in bundled_packages()) or "none installed"
    raise PackageError(
        f"model {name_or_path!r}: no bundled package of that name and no such path; bundled: {names}; "
        "or give the path of a package folder or .zip"
    )


def _families() -> dict[str, str]:
    """Every family of the ``livegen.generators`` entry-point group, livegen's own among them
    (declared in its pyproject.toml like anybody's); a third party's cannot replace livegen's own."""
    own: dict[str, str] = {}
    others: dict[str, str] = {}
    for ep in entry_points(group="livegen.generators"):
        mine = ep.dist is not None and ep.dist.name == "livegen"
        (own if mine else others).setdefault(ep.name, ep.value)
    if not own:  # a source tree on sys.path, not installed: its pyproject.toml declares them
        own = _declared_in_source_tree()
    return {**others, **own}


def _declared_in_source_tree() -> dict[str, str]:
    try:
        project = tomllib.loads(_PYPROJECT.read_text(encoding="utf-8"))["project"]
        return dict(project["entry-points"]["livegen.generators"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return {}


def generator_class(family: str, *, where: Path | None = None) -> Any:
    """The adapter class for ``family``; raises :class:`PackageError` naming the accepted ones."""
    families = _families()
    if family not in families:
        place = f"{where}: field 'family'" if where else "family"
        raise PackageError(f"{place}: no generator adapter for {family!r}; accepted: {', '.join(sorted(families))}")
    module_name, _, attr = families[family].partition(":")
    return getattr(importlib.import_module(module_name), attr)


def load_generator(
    model: str, *, checked_in_child: bool = False, verified: bool = False
) -> tuple[ModelPackage, StepGenerator]:
    """Load and verify ``model``: every check and the trial on its seed phrase run in a bounded
    child process (:mod:`livegen.models.trial`) while the sessions open here, and the model
    plays only if both pass. ``checked_in_child``: the child first, the sessions after (a swap
    during a performance, on a background thread: nothing unverified is opened here).
    ``verified``: the caller has had it verified (the inference worker's jam), no child.

    A bundled package is part of livegen: its tests run every check and play it, and its
    checksums tie it to those bytes. So at a jam's start it is opened here, without the
    child and without ``onnx.checker`` (importing onnx alone took 445 ms of the start)."""
    from livegen.models.package import load_package
    from livegen.models.trial import start_verification, verify_in_child

    path = resolve_package(model)
    if verified or (is_bundled(path) and not checked_in_child):
        package = load_package(path, check_graphs=False)
    elif checked_in_child:
        verify_in_child(path)
        package = load_package(path, check_graphs=False)
    else:
        verification = start_verification(path)
        try:
            package = load_package(path, check_graphs=False)
        except PackageError:
            verification.wait()  # the child's verdict names the fault first (onnx.checker)
            raise
        except BaseException:
            verification.cancel()
            raise
        verification.wait()
    adapter = generator_class(package.manifest.family)
    # Any kind plays whose adapter is a step generator (a ``frame`` adapter buffers its notes).
    methods = ("reset", "feed", "sample", "snapshot", "restore")
    if not all(callable(getattr(adapter, m, None)) for m in methods) or not hasattr(adapter, "fed"):
        raise ConfigError(
            f"model {model!r} is of kind {package.manifest.kind!r} and its {package.manifest.family!r} adapter "
            "does not play one event at a time; this version plays step and frame models"
        )
    generator: StepGenerator = make_generator(package, adapter)
    return package, generator


def make_generator(package: ModelPackage, adapter: Any = None) -> Any:
    """The package's adapter (``adapter``: its class, when the caller has looked it up), made
    once the package meets the adapter's contract.

    The contract (:mod:`livegen.models.contract`) is checked here, before any of the
    adapter's code reads the package; an adapter class without one is refused by name.
    """
    from livegen.models.contract import Contract

    where = package.folder / MANIFEST
    if adapter is None:
        adapter = generator_class(package.manifest.family, where=where)
    contract = getattr(adapter, "contract", None)  # a third party's class: its members are not known
    if not isinstance(contract, Contract):
        raise PackageError(
            f"{where}: the {package.manifest.family!r} adapter {adapter.__module__}.{adapter.__qualname__} "
            "declares no contract (a livegen.models.contract.Contract of the fields and tensors it reads; "
            "see 'Writing a model family' in docs/model-package.md)"
        )
    contract.values(package)
    return adapter(package)
