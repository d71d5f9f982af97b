"""The trial of a package before it plays: every check, then its adapter plays the seed phrase,
all in a child process within a time and a memory bound.

Context: the parent's side (:func:`start_verification`, :func:`verify_in_child`) runs at
setup (a jam's start, ``livegen models verify``) or on a background thread (a model swap
during a performance); :func:`main` is the child.

The child is started with ``python -I`` (isolated: nothing is imported from the working
directory, no ``PYTHON*`` variable is read), limits its own address space to
:data:`ADDRESS_SPACE_BYTES` before it opens the package, and is killed after
:data:`TIMEOUT_S`. Inside it every run keeps to livegen's run budget
(:mod:`livegen.models.budget`), so a graph that loops or allocates on real input is
refused by name within seconds, and a graph that crashes onnxruntime crashes only the
child. A zipped package is extracted into a folder the parent removes when the child
has ended, however it ended.

The trial (:func:`play_trial`): :func:`~livegen.models.package.load_package` (every check,
onnx.checker and the run on zeros included), then, when the family's adapter plays one
event at a time, it hears the package's seed phrase (:data:`PLAIN_PHRASE` without one) and
proposes :data:`TRIAL_STEPS` events, each heard back, as a performance would: every graph
runs on real input, and every proposal must be a playable note.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import livegen
from livegen.errors import InferenceSkipped, LivegenError, PackageError
from livegen.models.package import ModelPackage, load_package
from livegen.models.sampling import SamplingParams
from livegen.models.step import StepEvent, step_events
from livegen.music.events import Note
from livegen.music.time import PPQN

#: The child's address space, bytes: about 250 MB are the interpreter, onnx and onnxruntime,
#: 1 GiB the models' arena (livegen.models.budget), the rest parsing and copies.
ADDRESS_SPACE_BYTES = 3 << 30
#: The longest a verification may take, seconds (onnx.checker on a large graph takes a few).
TIMEOUT_S = 120.0
#: Events the adapter proposes, each fed back, after the seed phrase.
TRIAL_STEPS = 32
#: The longest step or duration a proposal may have, ticks (64 beats).
MAX_EVENT_TICKS = 64 * PPQN
#: The phrase a package without a seed phrase hears: a C major scale in eighths.
PLAIN_PHRASE = tuple(Note(p, 90, i * PPQN // 2, PPQN // 2) for i, p in enumerate((60, 62, 64, 65, 67, 69, 71, 72)))
#: The line the child's verdict starts with on its stderr.
_VERDICT = "livegen-verify: "
#: How much of the child's stderr is kept, bytes.
_STDERR_TAIL = 1 << 16


def _seed(package: ModelPackage) -> list[StepEvent]:
    from livegen.music.midifile import read_midi

    path = package.seed_phrase
    notes = read_midi(path).notes if path is not None else PLAIN_PHRASE
    return step_events(notes or PLAIN_PHRASE)


def play_trial(package: ModelPackage, *, steps: int = TRIAL_STEPS) -> None:
    """The adapter of ``package`` hears its seed phrase and proposes ``steps`` events, each fed back.

    Raises :class:`PackageError` naming the package when a run is refused (over its time or
    memory budget, non-finite) or a proposal is not a playable note. An adapter that does not
    play one event at a time (a third-party kind) is left to its own checks.
    """
    from livegen.models.registry import generator_class, make_generator

    adapter = generator_class(package.manifest.family, where=package.folder)
    if not all(callable(getattr(adapter, m, None)) for m in ("reset", "feed", "sample")):
        return
    generator = make_generator(package, adapter)
    rng = np.random.default_rng(0)
    params = SamplingParams()
    where = f"{package.folder}: the trial on the seed phrase"
    try:
        for event in _seed(package):
            generator.feed(event)
        for _ in range(steps):
            event = generator.sample(params, rng)
            if not (
                0 <= event.pitch <= 127
                and 0 <= event.step <= MAX_EVENT_TICKS
                and 1 <= event.duration <= MAX_EVENT_TICKS
                and 0 <= event.velocity <= 127
            ):
                raise PackageError(
                    f"{where}: the {package.manifest.family} adapter proposed pitch {event.pitch}, step "
                    f"{event.step}, duration {event.duration}, velocity {event.velocity}; expected MIDI pitches "
                    f"and velocities, and steps and durations of at most {MAX_EVENT_TICKS} ticks (64 beats)"
                )
            generator.feed(event)
    except InferenceSkipped as err:
        raise PackageError(f"{where} failed: {err}") from err
    except LivegenError:
        raise
    except Exception as err:
        raise PackageError(f"{where} failed: the {package.manifest.family} adapter raised {err!r}") from err


def main(argv: Sequence[str] | None = None) -> int:
    """The child: limit the address space, run every check and the trial; the verdict on stderr."""
    import resource

    parser = argparse.ArgumentParser(prog="livegen-verify")
    parser.add_argument("path", type=Path)
    parser.add_argument("--extract-into", type=Path)
    parser.add_argument("--address-space", type=int, default=ADDRESS_SPACE_BYTES)
    args = parser.parse_args(argv)
    resource.setrlimit(resource.RLIMIT_AS, (args.address_space, args.address_space))
    try:
        play_trial(load_package(args.path, extract_into=args.extract_into))
    except LivegenError as err:
        print(_VERDICT + " ".join(str(err).split()), file=sys.stderr)
        return 1
    except MemoryError:
        limit = args.address_space >> 20
        print(f"{_VERDICT}{args.path}: verifying it needed more than {limit} MiB of memory", file=sys.stderr)
        return 1
    return 0


# ---- the parent's side -------------------------------------------------------------------


def child_command(module: str, *args: str) -> list[str]:
    """A command line that runs ``module``'s ``main(args)`` in an isolated interpreter
    (``python -I``); livegen's own folder is appended to the path, for a source checkout."""
    root = str(Path(livegen.__file__).resolve().parent.parent)
    code = f"import sys; sys.path.append({root!r}); from {module} import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-I", "-c", code, *args]


class Verification:
    """A verification running in a child process; :meth:`wait` gives its verdict."""

    def __init__(self, path: str | Path, *, timeout: float = TIMEOUT_S) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._scratch = Path(tempfile.mkdtemp(prefix="livegen-verify-"))
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by _cleanup once the child has ended)
        try:
            self._process = subprocess.Popen(
                child_command("livegen.models.trial", str(self.path), "--extract-into", str(self._scratch)),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
            )
        except OSError as err:
            self._cleanup()
            raise PackageError(f"{self.path}: could not be verified in a child process ({err})") from err

    def _cleanup(self) -> None:
        self._stderr.close()
        shutil.rmtree(self._scratch, ignore_errors=True)

    def wait(self) -> None:
        """Wait for the verdict; :class:`PackageError` naming the package when it fails."""
        try:
            try:
                code = self._process.wait(self.timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
                raise PackageError(
                    f"{self.path}: verifying it took more than {self.timeout:g} s (the trial loops or the graph "
                    "is too large); refused"
                ) from None
            if code == 0:
                return
            self._stderr.seek(max(0, self._stderr.seek(0, os.SEEK_END) - _STDERR_TAIL))
            lines = self._stderr.read().decode("utf-8", "replace").splitlines()
        finally:
            self._cleanup()
        verdict = next((line.removeprefix(_VERDICT) for line in reversed(lines) if line.startswith(_VERDICT)), None)
        if verdict is not None:
            raise PackageError(verdict if str(self.path) in verdict else f"{self.path}: {verdict}")
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        last = next((line for line in reversed(lines) if line.strip()), "")
        raise PackageError(f"{self.path}: the verification process {how}{f' ({last})' if last else ''}; refused")

    def cancel(self) -> None:
        """Stop the child if it still runs (the caller no longer needs the verdict); any number of times."""
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        self._process.wait()
        self._cleanup()


def start_verification(path: str | Path, *, timeout: float = TIMEOUT_S) -> Verification:
    """Start verifying ``path`` in a child process (see the module docstring); the caller goes on."""
    return Verification(path, timeout=timeout)


def verify_in_child(path: str | Path, *, timeout: float = TIMEOUT_S) -> None:
    """Run every check and the trial on ``path`` in a bounded child process.

    Context: setup, or a background thread during a performance (a model swap):
    onnx.checker holds the GIL while it parses, long enough to delay the scheduler's
    sends; in a child process it cannot. Raises :class:`PackageError` with the child's message.
    """
    start_verification(path, timeout=timeout).wait()


if __name__ == "__main__":
    sys.exit(main())
