"""What every family's training and export share: options, progress, checkpoints, ONNX, parity, packages.

Context: setup (training and export; imports torch, never imported by the host).

Each family module says how a corpus becomes model inputs, what its loss is and
which graphs it exports; the pieces here are the same for all of them: the run
options' checks, the epoch progress bar, the corpus fingerprint and held-out sample
kept in a checkpoint, writing and reading ``checkpoint.pt``, one graph's ONNX export
and its reloaded interface, the parity verdict, and assembling a package in a
staging folder beside the destination, verified by the host's own loader and the
family's adapter before it replaces the destination.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import math
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence, Sized
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, Self, cast

import numpy as np
import onnx
import onnxruntime as ort
import tomli_w
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from export.distributed import (
    Checkpoints,
    Phase,
    RunOptions,
    autocast,
    average_gradients,
    broadcast_module,
    device,
    from_main,
    mean,
    model_identity,
    seed_ranks,
    shard,
    to_device,
    world,
)
from export.errors import ExportError, ParityError
from livegen.music.corpus import Tune

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "livegen-export-checkpoint"
OPSET = 18
#: Largest |onnxruntime - PyTorch| accepted on any output of the parity check.
PARITY_TOLERANCE = 1e-4
MANIFEST = "livegen.toml"
CARD = "README.md"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]*$")


# ---- training ----------------------------------------------------------------------------


class ConfigRecord:
    """``to_dict`` and ``from_dict`` for a family's training config (a frozen dataclass that
    subclasses this): checkpoints and manifests keep the config as a plain table."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Self:
        """A config from a checkpoint: fields it lacks (older checkpoints) keep their defaults,
        fields this version no longer has are left out."""
        known = {f.name for f in fields(cast(Any, cls))}
        return cls(**{k: v for k, v in values.items() if k in known})


def check_run(epochs: int, patience: int, limit: int | None) -> None:
    """The checks of ``--epochs``, ``--patience`` and ``--limit`` every family's ``train`` makes."""
    if epochs < 1:
        raise ExportError(f"--epochs {epochs}: expected a whole number of at least 1")
    if patience < 1:
        raise ExportError(f"--patience {patience}: expected a whole number of at least 1")
    if limit is not None and limit < 3:
        raise ExportError(f"--limit {limit}: expected at least 3 tunes (training, validation, held-out)")


@dataclass(frozen=True, slots=True)
class TrainingOptions:
    """What ``python -m export train FAMILY`` was asked to do: the fields every family takes. A family's
    options subclass this with its ``config`` field (and their own defaults where they differ)."""

    data: str
    out: Path
    epochs: int = 100
    patience: int = 5
    limit: int | None = None
    seed: int = 0
    #: torch's CPU threads (None: torch's default).
    threads: int | None = None
    run: RunOptions = field(default_factory=RunOptions)

    def check(self) -> None:
        """The checks of ``--epochs``, ``--patience``, ``--limit`` and the run's options."""
        check_run(self.epochs, self.patience, self.limit)
        self.run.check()

    def begin(self) -> float:
        """Check the options and set torch's threads; returns when training began (``time.perf_counter``)."""
        self.check()
        if self.threads:
            torch.set_num_threads(self.threads)
        return time.perf_counter()


def check_sizes(window: int, unit: str, hidden: int, batch_size: int) -> None:
    """The checks of ``--window`` (in ``unit``), ``--hidden`` and ``--batch-size`` of the one-step families."""
    if window < 2:
        raise ExportError(f"--window {window}: expected at least 2 {unit}")
    if not 8 <= hidden <= 2048:
        raise ExportError(f"--hidden {hidden}: expected 8 to 2048 units")
    if batch_size < 1:
        raise ExportError(f"--batch-size {batch_size}: expected at least 1")


def corpus_provenance(data: str, limit: int | None, seed: int, tunes: Sequence[Tune], split: Any) -> dict[str, Any]:
    """The head of a checkpoint's ``provenance``: what was read, how it was split and the seed."""
    return {
        "data": data,
        "limit": limit,
        "seed": seed,
        "corpus_fingerprint": tune_fingerprint(tunes),
        "tunes": len(tunes),
        "tunes_train": len(split.train),
        "tunes_validation": len(split.validation),
        "tunes_held_out": len(split.held_out),
    }


def split_provenance(options: TrainingOptions, fingerprint: str, unit: str, parts: Sequence[Sized]) -> dict[str, Any]:
    """The head of a checkpoint's ``provenance``: what was read (``--data``, ``--limit``), the corpus's
    fingerprint, the seed, and how many ``unit`` (tunes, pieces) each part of the split (training,
    validation, held-out) holds."""
    train, validation, held_out = parts
    return {
        "data": options.data,
        "limit": options.limit,
        "seed": options.seed,
        "corpus_fingerprint": fingerprint,
        f"{unit}_train": len(train),
        f"{unit}_validation": len(validation),
        f"{unit}_held_out": len(held_out),
    }


def training_record(
    result: FitResult, *, max_epochs: int, patience: int, started: float, stopped_early: bool | None = None
) -> dict[str, Any]:
    """A checkpoint's ``training`` table: epochs, the best one, and the time taken (since ``started``)."""
    record: dict[str, Any] = {
        "epochs_run": len(result.history),
        "max_epochs": max_epochs,
        "best_epoch": result.best_epoch,
        "patience": patience,
    }
    if stopped_early is not None:
        record["stopped_early"] = stopped_early
    record["training_seconds"] = result.seconds
    record["total_seconds"] = time.perf_counter() - started
    record["threads"] = torch.get_num_threads()
    return record


def progress(*, disable: bool = False) -> Progress:
    """The rich progress bar of one epoch's batches (``disable``: on ranks other than 0)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        disable=disable,
    )


class Batches(Protocol):
    """Training windows: how many, and a batch of them by index."""

    def __len__(self) -> int: ...

    def take(self, index: torch.Tensor) -> Any: ...


class Schedule(Protocol):
    """The optimiser settings of a family's config."""

    @property
    def batch_size(self) -> int: ...
    @property
    def learning_rate(self) -> float: ...
    @property
    def lr_factor(self) -> float: ...
    @property
    def lr_patience(self) -> int: ...
    @property
    def lr_min(self) -> float: ...
    @property
    def grad_clip(self) -> float: ...


@dataclass(frozen=True, slots=True)
class FitResult:
    """The best epoch's weights (already loaded into the model) and how training went."""

    state: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    best_epoch: int
    best_loss: float
    seconds: float


def finished_fit(restored: tuple[dict[str, Any], dict[str, Any]] | None) -> FitResult | None:
    """The fit a resumed run's phase had already finished (what :meth:`Phase.restore` gave), else None."""
    if restored is None or not restored[0].get("finished"):
        return None
    done = restored[0]
    return FitResult(**{f.name: done[f.name] for f in fields(FitResult)})


def finish_fit(phase: Phase, result: FitResult, **extra: Any) -> FitResult:
    """Record ``result`` (and ``extra``) as ``phase``'s outcome, for :func:`finished_fit` on resuming."""
    phase.finish({**{f.name: getattr(result, f.name) for f in fields(FitResult)}, **extra})
    return result


def resume_loop(
    restored: tuple[dict[str, Any], dict[str, Any]] | None, state: dict[str, Any], local: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], Callable[[], dict[str, Any]]]:
    """A training loop's ``state`` (saved by rank 0) and ``local`` running sums (per rank), overlaid by
    what :meth:`Phase.restore` gave a resumed run, and ``snapshot()``: the state with ``seconds``
    counting the time trained before and since resuming (for :meth:`Phase.after_batch`)."""
    if restored is not None:
        state |= restored[0]
        local |= restored[1]
    started = time.perf_counter()

    def snapshot() -> dict[str, Any]:
        return {**state, "seconds": state["seconds"] + time.perf_counter() - started}

    return state, local, snapshot


def fit_windows(
    model: torch.nn.Module,
    windows: Batches,
    loss: Callable[[Any], torch.Tensor],
    validate: Callable[[], tuple[float, dict[str, float], str]],
    config: Schedule,
    options: TrainingOptions,
    *,
    min_delta: float,
) -> FitResult:
    """Adam over shuffled batches of ``windows`` with gradient clipping, a rich progress bar per epoch,
    learning-rate reduction on a validation plateau and early stopping after ``patience`` epochs without
    a validation loss ``min_delta`` below the best (``options``: the run's epochs, patience, seed, ``out``
    folder and run options).

    ``validate()`` returns (validation loss, further history figures, what the epoch's log line adds
    after the validation loss). The model's weights are drawn before this is called, after
    ``torch.manual_seed(seed)``; batches are shuffled with a generator seeded with ``seed``.

    Under torchrun each rank trains on its shard of every epoch's order and gradients are averaged
    across ranks; rank 0 validates (the model on the CPU) and every rank takes its figures. The loop
    keeps ``out/last.pt`` (see :mod:`export.distributed`): with ``options.run.resume`` a run interrupted at
    any batch continues from it to the same weights as an uninterrupted run. ``loss`` gets each batch
    on the training device (the GPU of this rank when ``options.run.device`` allows), under its precision.
    """
    epochs, patience, seed, run = options.epochs, options.patience, options.seed, options.run
    w = world()
    where = device(run)
    seed_ranks(seed)
    broadcast_module(model)
    sample = windows.take(torch.arange(min(len(windows), 64)))
    identity = {
        "loop": "fit_windows",
        **model_identity(model),
        "config": _plain(config),
        "windows": len(windows),
        "data_sample": weights_digest_of(sample),
        "seed": seed,
        "epochs": epochs,
        "patience": patience,
        "min_delta": min_delta,
    }
    checkpoints = Checkpoints(options.out, run, identity)
    model.to(where)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience, min_lr=config.lr_min
    )
    objects = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "shuffle": generator}
    with checkpoints.phase("fit", objects) as phase:
        restored = phase.restore()
        done = finished_fit(restored)
        if done is not None:
            model.to("cpu")
            return done
        state: dict[str, Any] = {
            "epoch": 1,
            "batch": 0,
            "order": None,  # the epoch's whole shuffled order (each rank trains on its shard)
            "history": [],
            "best_loss": math.inf,
            "best_epoch": 0,
            "best_state": copy.deepcopy(model.state_dict()),
            "waited": 0,
            "seconds": 0.0,
            "stopped": False,
        }
        local = {"running": 0.0, "train_seconds": 0.0}
        state, local, snapshot = resume_loop(restored, state, local)

        with progress(disable=not w.main) as bar:
            while state["epoch"] <= epochs and not state["stopped"]:
                epoch = state["epoch"]
                epoch_started = time.perf_counter()
                if state["order"] is None:
                    state["order"] = torch.randperm(len(windows), generator=generator)
                    local["running"], local["train_seconds"] = 0.0, 0.0
                mine = shard(state["order"])
                batches = math.ceil(len(mine) / config.batch_size)
                task = bar.add_task(f"epoch {epoch}", total=batches, completed=state["batch"], info="")
                model.train()
                for i in range(state["batch"], batches):
                    step_started = time.perf_counter()
                    index = mine[i * config.batch_size : (i + 1) * config.batch_size]
                    batch = to_device(windows.take(index), where)
                    with autocast(where, run):
                        value = loss(batch)
                    optimizer.zero_grad(set_to_none=True)
                    value.backward()
                    average_gradients(model.parameters())
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                    optimizer.step()
                    local["running"] += value.item()
                    local["train_seconds"] += time.perf_counter() - step_started
                    state["batch"] = i + 1
                    bar.update(task, advance=1, info=f"loss {local['running'] / (i + 1):.4f}")
                    phase.after_batch(snapshot, lambda: dict(local), batch=index)
                train_loss = mean(local["running"] / batches)
                samples_per_second = len(mine) * w.size / max(mean(local["train_seconds"]), 1e-9)
                if where.type != "cpu" and w.main:
                    model.to("cpu")
                val, figures, detail = from_main(validate)
                model.to(where)
                learning_rate = float(optimizer.param_groups[0]["lr"])
                scheduler.step(val)
                seconds = time.perf_counter() - epoch_started
                state["history"].append(
                    {
                        "epoch": float(epoch),
                        "train_loss": train_loss,
                        "val_loss": val,
                        **figures,
                        "learning_rate": learning_rate,
                        "seconds": seconds,
                        "samples_per_second": samples_per_second,
                    }
                )
                improved = val < state["best_loss"] - min_delta
                if improved:
                    state["best_loss"], state["best_epoch"], state["waited"] = val, epoch, 0
                    state["best_state"] = copy.deepcopy(model.state_dict())
                else:
                    state["waited"] += 1
                bar.remove_task(task)  # the log line below keeps the epoch's figures
                log.info(
                    "epoch %d: lr %.2g, train %.4f, validation %.4f%s%s, %.1f s, %.0f samples/s%s",
                    epoch,
                    learning_rate,
                    train_loss,
                    val,
                    detail,
                    " best" if improved else "",
                    seconds,
                    samples_per_second,
                    f" ({w.size} processes)" if w.distributed else "",
                )
                if not math.isfinite(val):
                    raise ExportError(f"validation loss became {val} at epoch {epoch}; lower the learning rate")
                state |= {"epoch": epoch + 1, "batch": 0, "order": None}
                if state["waited"] >= patience:
                    log.info("validation loss has not improved for %d epochs; stopping", patience)
                    state["stopped"] = True
                phase.after_epoch(snapshot, lambda: {"running": 0.0, "train_seconds": 0.0})
        model.load_state_dict(state["best_state"])
        model.to("cpu")
        best = {k: v.detach().cpu() for k, v in state["best_state"].items()}
        return finish_fit(
            phase, FitResult(best, state["history"], state["best_epoch"], state["best_loss"], snapshot()["seconds"])
        )


def batch_means(
    windows: Batches, measure: Callable[[Any], tuple[float, Mapping[str, Any]]], batch_size: int
) -> dict[str, float]:
    """Each figure ``measure(batch)`` gives, over the batches of ``windows`` in order, averaged by the weight it
    gives beside them (the targets the batch holds): a validation loss and its parts. No gradient."""
    sums: dict[str, float] = {}
    count = 0.0
    with torch.no_grad():
        for start in range(0, len(windows), batch_size):
            weight, figures = measure(windows.take(torch.arange(start, min(start + batch_size, len(windows)))))
            for key, value in figures.items():
                sums[key] = sums.get(key, 0.0) + float(value) * weight
            count += weight
    return {key: value / max(count, 1.0) for key, value in sums.items()}


def _plain(config: object) -> Any:
    """A config as a plain table (for a run's identity)."""
    to_dict = getattr(config, "to_dict", None)
    return to_dict() if callable(to_dict) else repr(config)


def weights_digest_of(value: Any) -> str:
    """A sha256 of the tensors of ``value`` (a batch dataclass, tuple or tensor)."""
    digest = hashlib.sha256()
    for field_ in fields(value) if hasattr(value, "__dataclass_fields__") else ():
        item = getattr(value, field_.name)
        if isinstance(item, torch.Tensor):
            digest.update(item.detach().cpu().contiguous().numpy().tobytes())
    if isinstance(value, torch.Tensor):
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def tune_fingerprint(tunes: Sequence[Tune]) -> str:
    """A short hash of the tunes' names and notes, to tell two corpora apart in provenance."""
    digest = hashlib.sha256()
    for tune in tunes:
        digest.update(tune.name.encode())
        digest.update(tune.pitch.tobytes())
        digest.update(tune.onset.tobytes())
        digest.update(tune.duration.tobytes())
    return digest.hexdigest()[:16]


def tune_sample(tunes: Sequence[Tune], count: int = 8, notes: int | None = 256) -> list[dict[str, Any]]:
    """A few tunes spread over ``tunes`` (their first ``notes``, or all of them for None), as plain lists
    (for ``torch.load(weights_only=True)``).

    Spread rather than the first few, so that every collection of a corpus (its
    rhythms, lengths and ranges) reaches the parity check and the seed phrase.
    """
    eligible = [t for t in tunes if len(t) >= 16] or list(tunes)
    stride = max(1, len(eligible) // count)
    return [
        {
            "name": t.name,
            "pitch": [int(p) for p in t.pitch[:notes]],
            "onset": [float(x) for x in t.onset[:notes]],
            "duration": [float(x) for x in t.duration[:notes]],
        }
        for t in eligible[::stride][:count]
    ]


def fingerprint(names: Sequence[str], arrays: Sequence[np.ndarray]) -> str:
    """A short hash of names and arrays (pieces and their tracks), to tell two corpora apart in provenance."""
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode())
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def sample_tunes(sample: Sequence[Mapping[str, Any]]) -> list[Tune]:
    """The tunes of a checkpoint's ``held_out_sample`` (see :func:`tune_sample`)."""
    return [
        Tune(
            name=str(item["name"]),
            pitch=np.asarray(item["pitch"], dtype=np.int16),
            onset=np.asarray(item["onset"], dtype=np.float32),
            duration=np.asarray(item["duration"], dtype=np.float32),
        )
        for item in sample
    ]


# ---- checkpoints -------------------------------------------------------------------------


def save_checkpoint(out: Path, family: str, **fields: Any) -> Path:
    """Write ``out/checkpoint.pt`` (through a ``.part`` file, so a crash leaves no half checkpoint).

    Under torchrun only rank 0 writes; the others get the path it writes to.
    """
    path = out / CHECKPOINT
    if not world().main:
        return path
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    torch.save({"format": CHECKPOINT_FORMAT, "family": family, **fields}, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by ``python -m export train``; clear errors for anything else."""
    if not path.is_file():
        raise ExportError(f"{path}: no such checkpoint; expected the {CHECKPOINT} written by `python -m export train`")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle, zip and runtime errors for foreign files
        raise ExportError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ExportError(f"{path}: not a livegen export checkpoint (field 'format' is not {CHECKPOINT_FORMAT!r})")
    return checkpoint


def read_checkpoint(path: Path, family: str) -> dict[str, Any]:
    """A checkpoint of ``family`` (see :func:`load_checkpoint`); an error names the family it holds instead."""
    checkpoint = load_checkpoint(path)
    if checkpoint.get("family") != family:
        raise ExportError(f"{path}: family {checkpoint.get('family')!r} is not {family!r}")
    return checkpoint


# ---- ONNX and parity ---------------------------------------------------------------------


def export_graph(
    module: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    *,
    inputs: Sequence[str],
    outputs: Sequence[str],
    dynamic: Mapping[str, Mapping[int, Any]],
    opset: int = OPSET,
) -> None:
    """One graph with weights inside the file, checked by ``onnx.checker``."""
    noise = io.StringIO()
    try:
        # The dynamo exporter reports each stage on stdout and warns when inputs
        # share one batch axis (they do, on purpose); keep the CLI quiet.
        with warnings.catch_warnings(), contextlib.redirect_stdout(noise):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                example,
                str(path),
                input_names=list(inputs),
                output_names=list(outputs),
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=dict(dynamic),
                external_data=False,
                verbose=False,
            )
    except Exception as err:  # the exporter raises many internal types
        raise ExportError(f"{path}: torch.onnx.export failed ({type(err).__name__}: {err})") from err
    log.debug("exporter output: %s", noise.getvalue())
    onnx.checker.check_model(str(path), full_check=True)


def session(path: Path) -> ort.InferenceSession:
    """An onnxruntime session on one thread, as the host runs a graph."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


_ORT_TYPES = {"float32": "tensor(float)", "int64": "tensor(int64)"}


def check_interface(
    session: ort.InferenceSession, path: Path, expected: Mapping[str, tuple[Sequence[int | str], str]]
) -> None:
    """The reloaded graph has exactly the tensors ``expected`` (name: (shape, dtype)) the manifest will declare."""
    actual = {a.name: a for a in [*session.get_inputs(), *session.get_outputs()]}
    if set(actual) != set(expected):
        raise ExportError(f"{path}: the exported graph has tensors {sorted(actual)}, expected {sorted(expected)}")
    for name, (shape, dtype) in expected.items():
        arg = actual[name]
        fixed = [d if isinstance(d, int) else None for d in shape]
        have = [d if isinstance(d, int) else None for d in arg.shape]
        if arg.type != _ORT_TYPES[dtype] or fixed != have:
            raise ExportError(f"{path}: tensor {name!r} is {arg.type}{arg.shape}, expected {dtype}{shape}")


def check_parity(
    diff: float, what: object, tolerance: float = PARITY_TOLERANCE, *, graphs: str = "the ONNX graphs differ"
) -> None:
    """Fail the export when the graphs do not reproduce PyTorch (float64) within ``tolerance``."""
    if not diff <= tolerance:
        raise ParityError(
            f"{what}: parity check failed: {graphs} from PyTorch (float64) by up to {diff:.3g} "
            f"(accepted: at most {tolerance:g}); the package was not written"
        )


# ---- packages ----------------------------------------------------------------------------


def tensor(name: str, shape: Sequence[object], dtype: str = "float32") -> dict[str, Any]:
    """One tensor of a manifest's graph table."""
    return {"name": name, "shape": shape, "dtype": dtype}


def run_table(provenance: Mapping[str, Any], training: Mapping[str, Any], count: str) -> dict[str, Any]:
    """The head of a one-step family's manifest [training] table: data, split (with ``count``, the
    training notes or tokens), epochs, time and seed, from a checkpoint's provenance and training tables."""
    return {
        "data": provenance["data"],
        "corpus_fingerprint": provenance["corpus_fingerprint"],
        "tunes_train": provenance["tunes_train"],
        "tunes_validation": provenance["tunes_validation"],
        "tunes_held_out": provenance["tunes_held_out"],
        count: provenance[count],
        "split": "by tune (sha256 of the tune name): 80% train, 10% validation, 10% held-out",
        "epochs": training["epochs_run"],
        "best_epoch": training["best_epoch"],
        "max_epochs": training["max_epochs"],
        "patience": training["patience"],
        "training_seconds": round(float(training["training_seconds"]), 1),
        "seed": provenance["seed"],
    }


def sha256(path: Path) -> str:
    """A file's checksum as the manifest's [files] table writes it."""
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def check_target(name: str, out: Path, example: str = "") -> None:
    """The package name is valid and ``out`` may be replaced by a package."""
    if not NAME_PATTERN.match(name):
        raise ExportError(f"package name {name!r}: expected lowercase letters, digits and dashes{example}")
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out}: is a file; expected a folder for the model package")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ExportError(f"--out {out}: the folder is not empty and holds no {MANIFEST}; refusing to replace it")


def verify_package(folder: Path) -> None:
    """Verify a written package as a jam does before it plays one (:func:`livegen.models.registry.load_generator`):
    the host's loader (schema, checksums, graphs), the trial on its seed phrase in a bounded child
    process, and its family's adapter (the family's representation fields)."""
    from livegen.errors import LivegenError
    from livegen.models.registry import load_generator

    try:
        load_generator(str(folder))
    except LivegenError as err:
        raise ExportError(f"the written package fails the host's verification: {err}") from err


def write_package(
    out: Path,
    name: str,
    build: Callable[[Path], tuple[dict[str, Any], str]],
    *,
    example: str = "",
    files: Sequence[str] | None = None,
) -> Path:
    """Assemble a package: ``build(staging)`` writes the graphs and the seed phrase into ``staging`` and
    returns the manifest and the model card. The manifest's [files] table gets the sha256 of ``files``,
    in that order (every file by name for None); the host verifies the result with the family's adapter,
    and only then does it replace ``out``. A failed export leaves ``out`` as it was."""
    check_target(name, out, example)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out.parent))
    try:
        manifest, card = build(staging)
        (staging / CARD).write_text(card, encoding="utf-8")
        names = sorted(p.name for p in staging.iterdir() if p.is_file()) if files is None else files
        manifest["files"] = {f: sha256(staging / f) for f in names}
        (staging / MANIFEST).write_bytes(tomli_w.dumps(manifest).encode("utf-8"))
        verify_package(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
        out.chmod(0o755)  # mkdtemp made it private; an installed package is read by every user
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    size = sum(f.stat().st_size for f in out.iterdir())
    log.info("wrote package %s (%d files, %.0f KB)", out, len(list(out.iterdir())), size / 1024)
    return out
