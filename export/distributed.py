"""Training on several processes and resuming it: torchrun's environment, rank-0-only writes, sharding,
gradient averaging, and the resumable ``last.pt`` checkpoint every training loop keeps.

Context: setup (training only; imports torch, never imported by the host).

Every family's ``train`` runs unchanged as one process or under
``torchrun --nproc_per_node=N`` (and ``--nnodes``): :func:`world` reads torchrun's
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` and joins the process group (gloo for CPU
tensors, NCCL for CUDA tensors when there is a GPU). What the loops do with it:

- **Sharding** (:func:`shard`): every rank draws the same shuffled order from the same
  seeded generator and takes every N-th index from its rank on, the order padded by
  wrapping round so that all ranks take the same number of batches, as
  ``torch.utils.data.DistributedSampler`` does. ``--batch-size`` is per process: the
  effective batch is N times larger.
- **Gradients averaged across ranks** (:func:`average_gradients`): after each backward
  pass, one all-reduce over all gradients flattened into one buffer, divided by N. This
  is the collective ``DistributedDataParallel`` runs; DDP overlaps it with the backward
  pass, but its reducer follows only forwards through the DDP wrapper, and the loops
  here call their networks in ways it does not follow (the GANs run the discriminator
  twice per step, crnngan takes gradients with ``torch.autograd.grad``, the supervised
  loops' loss functions call the module itself). Batch-norm buffers are broadcast from
  rank 0 after each step (:func:`sync_buffers`), as DDP does by default, so every rank
  holds identical weights and buffers after every step.
- **Rank 0 writes**: ``checkpoint.pt``, the package and ``last.pt``; it alone validates
  and broadcasts the figures, so that all ranks take the same early-stopping decision.
- **Resuming** (:class:`Checkpoints`): ``out/last.pt`` holds everything a loop needs to
  continue bit-identically: weights, optimiser, scheduler, shuffle generators, every
  rank's torch RNG state, the epoch, the batch position and the loop's own figures. It
  is written atomically (a temporary file, then a rename) every ``checkpoint_every``
  batches, after every epoch, and when SIGTERM or SIGINT arrives (the ranks agree on
  stopping after the same batch). Run the same command again and training continues.
- **Devices and precision** (:func:`device`, :func:`autocast`): a rank takes the GPU of
  its ``LOCAL_RANK`` where the loop supports one; bfloat16 autocast on GPUs that have it.

A diagnostic: with ``LIVEGEN_STEP_LOG=PREFIX`` in the environment every rank appends a
line per optimiser step to ``PREFIX.rankN``: the step, a sha256 of its weights and
buffers, and a sha256 of the batch it trained on (the distributed test reads them).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar, cast

import torch
import torch.distributed as dist

from export.errors import ExportError

log = logging.getLogger(__name__)

#: The resumable checkpoint of a run, beside ``checkpoint.pt`` in ``--out``.
LAST = "last.pt"
LAST_FORMAT = "livegen-export-resume"
STEP_LOG_ENV = "LIVEGEN_STEP_LOG"
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How a training run is carried out, not what it learns: resuming, checkpoints, device, precision."""

    #: Continue from ``out/last.pt`` when it holds this run (same data, config, seed and process count).
    resume: bool = True
    #: Batches between resumable checkpoints (one is also written after every epoch).
    checkpoint_every: int = 200
    #: Stop as SIGTERM would after this many batches of this process (a deterministic interruption for tests).
    stop_after_batches: int | None = None
    #: auto: the GPU of this rank where the family trains on one, else the CPU.
    device: str = "auto"
    #: auto: bfloat16 autocast on a GPU that supports it where the family allows, else float32.
    precision: str = "auto"

    def check(self) -> None:
        if self.checkpoint_every < 1:
            raise ExportError(f"--checkpoint-every {self.checkpoint_every}: expected at least 1 batch")
        if self.stop_after_batches is not None and self.stop_after_batches < 1:
            raise ExportError(f"--stop-after-batches {self.stop_after_batches}: expected at least 1")
        if self.device not in DEVICES:
            raise ExportError(f"--device {self.device!r}: expected one of {', '.join(DEVICES)}")
        if self.precision not in PRECISIONS:
            raise ExportError(f"--precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")


class TrainingInterrupted(ExportError):
    """Training stopped on SIGTERM or SIGINT (or ``stop_after_batches``) after writing ``last.pt``."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


# ---- the processes ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class World:
    """This process among torchrun's: its global rank, how many there are, its rank on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


_world: World | None = None


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as err:
        raise ExportError(f"environment variable {name}={value!r}: expected a whole number (set by torchrun)") from err


def world() -> World:
    """This process's place among torchrun's processes; the first call with ``WORLD_SIZE`` > 1 joins the
    process group (rendezvous at torchrun's ``MASTER_ADDR``/``MASTER_PORT``)."""
    global _world
    if _world is None:
        size, rank, local = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
        if size < 1 or not 0 <= rank < size:
            raise ExportError(f"RANK {rank} and WORLD_SIZE {size}: expected 0 <= RANK < WORLD_SIZE (set by torchrun)")
        if size > 1 and not dist.is_initialized():
            try:
                if torch.cuda.is_available():
                    torch.cuda.set_device(local % torch.cuda.device_count())
                    dist.init_process_group("cpu:gloo,cuda:nccl")
                else:
                    dist.init_process_group("gloo")
            except (ValueError, RuntimeError) as err:
                raise ExportError(
                    f"WORLD_SIZE {size}: cannot join the other processes ({err}); start them with torchrun"
                ) from err
            log.debug("rank %d of %d joined the process group (%s)", rank, size, dist.get_backend())
        _world = World(rank, size, local)
    return _world


def shutdown(*, finished: bool) -> None:
    """Leave the process group (when this process joined one).

    ``finished``: this rank's work ended normally, so every rank is on its way here; it
    waits at a barrier first. Without it a rank that finishes early (every rank but 0,
    while rank 0 exports) tore down its gloo connections under rank 0 and died in
    ``std::terminate`` (SIGABRT) in 3 of 5 runs. After an error there is no waiting: the
    other ranks may be inside another collective, and torchrun stops them.
    """
    global _world
    if dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()
    _world = None


def device(run: RunOptions) -> torch.device:
    """The device a loop that supports GPUs trains on: this rank's GPU for ``auto`` when there is one."""
    if run.device == "cpu" or (run.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ExportError("--device cuda: torch sees no CUDA GPU here; use --device cpu or auto")
    return torch.device("cuda", world().local_rank % torch.cuda.device_count())


def autocast(where: torch.device, run: RunOptions) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision for a loop's forward pass: bfloat16 autocast on a GPU that supports it (``auto`` or
    ``bf16``), nothing on the CPU or with ``fp32``."""
    if where.type == "cuda" and run.precision in ("auto", "bf16"):
        if torch.cuda.is_bf16_supported():
            return torch.autocast("cuda", dtype=torch.bfloat16)
        if run.precision == "bf16":
            raise ExportError("--precision bf16: this GPU has no bfloat16; use --precision fp32")
    return contextlib.nullcontext()


def to_device(value: T, where: torch.device) -> T:
    """``value`` (a tensor, or a dataclass, tuple or list of them) on ``where``."""
    if isinstance(value, torch.Tensor):
        return cast(T, value.to(where, non_blocking=True))
    if is_dataclass(value) and not isinstance(value, type):
        return type(value)(**{f.name: to_device(getattr(value, f.name), where) for f in fields(value)})
    if isinstance(value, tuple | list):
        return cast(T, type(value)(to_device(v, where) for v in value))
    return value


# ---- collectives (each a no-op in one process) -------------------------------------------------


def barrier() -> None:
    if world().distributed:
        dist.barrier()


def broadcast(value: T) -> T:
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if not world().distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def from_main(compute: Callable[[], T]) -> T:
    """``compute()`` run on rank 0 alone, its result on every rank (validation: one rank measures, all decide)."""
    if not world().distributed:
        return compute()
    box: list[Any] = [compute() if world().main else None]
    dist.broadcast_object_list(box, src=0)
    return cast(T, box[0])


def gather(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not world().distributed:
        return [value]
    out: list[Any] = [None] * world().size
    dist.all_gather_object(out, value)
    return out


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is set on any rank (every rank gets the same answer)."""
    if not world().distributed:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def mean(value: float) -> float:
    """The mean of ``value`` over the ranks."""
    if not world().distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor.item()) / world().size


def average_gradients(parameters: Iterable[torch.Tensor]) -> None:
    """Replace each gradient by its mean over the ranks: one all-reduce of all of them flattened together."""
    if not world().distributed:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= world().size
    for grad, averaged in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads), strict=True):
        grad.copy_(averaged)


def sync_buffers(*modules: torch.nn.Module) -> None:
    """Rank 0's buffers (batch-norm running statistics) on every rank."""
    if not world().distributed:
        return
    for module in modules:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def broadcast_module(*modules: torch.nn.Module) -> None:
    """Rank 0's weights and buffers on every rank (at the start, as DDP does)."""
    if not world().distributed:
        return
    with torch.no_grad():
        for module in modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)


def shard(order: torch.Tensor, w: World | None = None) -> torch.Tensor:
    """This rank's share of ``order``: every N-th index from its rank on, padded by wrapping round so that
    every rank gets ``ceil(len / N)`` (``DistributedSampler``'s rule). One process: ``order`` itself."""
    w = w or world()
    if not w.distributed or len(order) == 0:
        return order
    total = math.ceil(len(order) / w.size) * w.size
    padded = order.repeat(math.ceil(total / len(order)))[:total]
    return padded[w.rank : total : w.size]


def shard_list(items: Sequence[T], w: World | None = None) -> list[T]:
    """:func:`shard` for a list of batches."""
    w = w or world()
    if not w.distributed or not items:
        return list(items)
    total = math.ceil(len(items) / w.size) * w.size
    return [items[i % len(items)] for i in range(w.rank, total, w.size)]


def rank_generator(shared: torch.Generator, seed: int, stream: int = 0) -> torch.Generator:
    """The generator a rank draws its noise (or dropout-like samples) from: ``shared`` itself in one process
    (so that a single-process run draws what a run without torchrun draws), a generator of its own per rank otherwise,
    so that ranks do not draw the same noise and the shared shuffle generator stays the same on all ranks."""
    w = world()
    if not w.distributed:
        return shared
    return torch.Generator().manual_seed(seed * 7919 + 1_000_003 * (w.rank + 1) + stream)


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (say, converting and caching a corpus), the other ranks after it."""
    w = world()
    if w.distributed and not w.main:
        dist.barrier()
    try:
        yield
    finally:
        if w.distributed and w.main:
            dist.barrier()


def seed_ranks(seed: int) -> None:
    """Give ranks other than 0 a torch RNG stream of their own (dropout masks differ between ranks); rank 0
    keeps its stream, so that one process draws what a run without torchrun draws."""
    w = world()
    if w.distributed and not w.main:
        torch.manual_seed(seed * 7919 + 1_000_003 * w.rank)


# ---- stopping on a signal ------------------------------------------------------------------------


class _StopSignals:
    """SIGTERM and SIGINT ask the loop to stop after the current batch; a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = signum
            log.warning("%s: stopping after this batch and writing a resumable checkpoint", signal.Signals(signum).name)


# ---- resumable checkpoints -------------------------------------------------------------------------


def _state(obj: Any) -> Any:
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    return obj.state_dict()


def _load_state(obj: Any, state: Any) -> None:
    if isinstance(obj, torch.Generator):
        obj.set_state(state)
    else:
        obj.load_state_dict(state)


def _rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def _set_rng_states(states: Mapping[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


def weights_digest(*modules: torch.nn.Module) -> str:
    """A sha256 of the modules' weights and buffers, to compare ranks and runs."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def model_identity(*modules: torch.nn.Module) -> dict[str, Any]:
    """What identifies a run's model before training: classes, shapes and a digest of the initial weights
    (drawn after the seed, so this also tells seed and architecture apart)."""
    return {
        "modules": [type(m).__name__ for m in modules],
        "initial_weights": weights_digest(*modules),
    }


class Checkpoints:
    """The resumable ``out/last.pt`` of one training run, made of phases (a loop each: ``fit``, or a GAN's
    ``pretrain`` and ``adversarial``). Rank 0 reads and writes the file; the other ranks receive its content.

    ``identity`` is what must match for a run to continue from the file (data, config, seed, the initial
    weights); a file of another run is left aside with a warning and training starts afresh, but resuming
    with another number of processes is an error (the shuffled shards would not continue).
    """

    def __init__(self, out: Path | None, run: RunOptions, identity: Mapping[str, Any]) -> None:
        run.check()
        self.out = out
        self.run = run
        self.world = world()
        self.identity = dict(identity)
        self.phases: dict[str, Any] = {}  # finished phases' results
        self.saved: dict[str, Any] | None = None  # what last.pt held when this run started
        self.batches = 0  # batches this process has trained, for stop_after_batches
        self.signals = _StopSignals()
        self.path = None if out is None else out / LAST
        if self.path is not None and run.resume:
            # rank 0 reads; its verdict (the content, or the error) reaches every rank, so none waits alone
            self.saved, error = from_main(self._read_or_error)
            if error is not None:
                raise ExportError(error)
            if self.saved is not None:
                self.phases = dict(self.saved["phases"])

    def _read_or_error(self) -> tuple[dict[str, Any] | None, str | None]:
        try:
            return self._read(), None
        except ExportError as err:
            return None, str(err)

    def _read(self) -> dict[str, Any] | None:
        assert self.path is not None
        if not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises pickle, zip and runtime errors for foreign files
            raise ExportError(
                f"{self.path}: not a readable resumable checkpoint ({type(err).__name__}: {err}); "
                "delete it or pass --fresh to start afresh"
            ) from err
        if not isinstance(saved, dict) or saved.get("format") != LAST_FORMAT:
            raise ExportError(
                f"{self.path}: not a livegen resumable checkpoint (field 'format' is not {LAST_FORMAT!r}); "
                "delete it or pass --fresh"
            )
        if saved.get("identity") != self.identity:
            theirs, ours = saved.get("identity") or {}, self.identity
            differ = sorted(k for k in {*theirs, *ours} if theirs.get(k) != ours.get(k))
            log.warning(
                "%s belongs to another run (%s differ); starting afresh and replacing it", self.path, ", ".join(differ)
            )
            return None
        if saved.get("world_size") != self.world.size:
            raise ExportError(
                f"{self.path}: written by {saved.get('world_size')} processes, this run has {self.world.size}; "
                "resume with the same number of processes (torchrun --nnodes x --nproc_per_node), "
                "or pass --fresh to start afresh"
            )
        return saved

    @contextlib.contextmanager
    def phase(self, name: str, objects: Mapping[str, Any]) -> Iterator[Phase]:
        """A loop of this run: ``objects`` (modules, optimisers, schedulers, generators) are saved with it.
        Inside the block SIGTERM and SIGINT ask the loop to stop after its current batch."""
        with self.signals:
            yield Phase(self, name, objects)

    def write(self, phase: str, objects: Mapping[str, Any], loop: Mapping[str, Any], local: Mapping[str, Any]) -> None:
        """Every rank calls this together: gather each rank's RNG and figures, rank 0 writes the file."""
        ranks = gather({"rng": _rng_states(), "local": dict(local)})
        if not self.world.main or self.path is None:
            return
        content = {
            "format": LAST_FORMAT,
            "identity": self.identity,
            "world_size": self.world.size,
            "phase": phase,
            "phases": self.phases,
            "objects": {name: _state(obj) for name, obj in objects.items()},
            "loop": dict(loop),
            "ranks": ranks,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{LAST}.{os.getpid()}.tmp")
        torch.save(content, tmp)
        os.replace(tmp, self.path)


class Phase:
    """One loop's resumable state: :meth:`restore` at its start, :meth:`after_batch` after every optimiser
    step, :meth:`after_epoch` after every epoch and :meth:`finish` with its result."""

    def __init__(self, checkpoints: Checkpoints, name: str, objects: Mapping[str, Any]) -> None:
        self.checkpoints = checkpoints
        self.name = name
        self.objects = dict(objects)
        self.modules = [o for o in objects.values() if isinstance(o, torch.nn.Module)]
        self.step_log = os.environ.get(STEP_LOG_ENV)
        self.steps = 0

    @property
    def main(self) -> bool:
        return self.checkpoints.world.main

    def restore(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(loop, this rank's local figures) to continue from, with the objects' states loaded; None to start
        afresh. A finished phase gives its result as the loop with ``finished`` set."""
        c = self.checkpoints
        saved = c.saved
        if saved is None:
            return None
        if self.name in c.phases:
            if saved["phase"] == self.name:  # the run stopped right after this phase: objects are its end
                self._load(saved)
            else:
                self._load_finished()
            log.info("%s: phase %r already finished; continuing after it", c.path, self.name)
            return {**c.phases[self.name], "finished": True}, {}
        if saved["phase"] != self.name:
            return None
        self._load(saved)
        ranks = saved["ranks"]
        mine = ranks[c.world.rank]
        _set_rng_states(mine["rng"])
        loop = dict(saved["loop"])
        log.info("resuming from %s: epoch %s, batch %s", c.path, loop.get("epoch"), loop.get("batch"))
        return loop, dict(mine["local"])

    def _load(self, saved: Mapping[str, Any]) -> None:
        for name, obj in self.objects.items():
            if name not in saved["objects"]:
                raise ExportError(f"{self.checkpoints.path}: holds no state for {name!r}; pass --fresh to start afresh")
            _load_state(obj, saved["objects"][name])

    def _load_finished(self) -> None:
        result = self.checkpoints.phases[self.name]
        for name, obj in self.objects.items():
            if name in result.get("objects", {}):
                _load_state(obj, result["objects"][name])

    def after_batch(
        self, loop: Callable[[], Mapping[str, Any]], local: Callable[[], Mapping[str, Any]], batch: Any = None
    ) -> None:
        """After an optimiser step: the step log, a periodic checkpoint, and a stop (with a checkpoint) when a
        signal arrived on any rank or ``stop_after_batches`` is reached. ``loop()`` must describe the state
        *after* this batch (the next batch to train)."""
        c = self.checkpoints
        c.batches += 1
        self.steps += 1
        if self.step_log:
            self._log_step(batch)
        stop_after = c.run.stop_after_batches
        requested = c.signals.signum
        if stop_after is not None and c.batches >= stop_after and requested is None:
            requested = signal.SIGTERM
        stop = any_rank(requested is not None)
        if stop or c.batches % c.run.checkpoint_every == 0:
            c.write(self.name, self.objects, loop(), local())
        if stop:
            signum = int(requested or signal.SIGTERM)
            where = f"{c.path}" if c.path is not None else "nowhere (no --out)"
            raise TrainingInterrupted(
                f"training stopped after {c.batches} batches; resumable checkpoint written to {where}: "
                "run the same command again to continue",
                signum,
            )

    def after_epoch(self, loop: Callable[[], Mapping[str, Any]], local: Callable[[], Mapping[str, Any]]) -> None:
        """After an epoch's validation: a checkpoint at the start of the next epoch."""
        self.checkpoints.write(self.name, self.objects, loop(), local())

    def finish(self, result: Mapping[str, Any]) -> None:
        """The phase is done: ``result`` (with the objects' states as they are now) is what a resumed run gets
        from :meth:`restore`; written at once."""
        c = self.checkpoints
        c.phases[self.name] = {**result, "objects": {n: _state(o) for n, o in self.objects.items()}}
        c.write(self.name, self.objects, {"finished": True}, {})

    def _log_step(self, batch: Any) -> None:
        c = self.checkpoints
        digest = hashlib.sha256()
        for tensor in _tensors(batch):
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        line = f"{self.name} {self.steps} {weights_digest(*self.modules)} {digest.hexdigest()}\n"
        with open(f"{self.step_log}.rank{c.world.rank}", "a", encoding="utf-8") as f:
            f.write(line)


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if is_dataclass(value) and not isinstance(value, type):
        return [t for f in fields(value) for t in _tensors(getattr(value, f.name))]
    if isinstance(value, tuple | list):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, int | float):
        return [torch.tensor([value])]
    return []
