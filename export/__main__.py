"""``python -m export``: train a model, export a checkpoint as a model package.

Context: setup (a command-line tool; configures logging, which library modules never do).

::

    python -m export train midirnn --data corpus:folk|DIR --out DIR [--epochs N] [--patience N]
                                   [--limit N] [--seed S] [--window N] [--batch-size N]
                                   [--time-head regression|classes] [--package PKG_DIR]
    python -m export train token-lstm --data corpus:bach|DIR --out DIR [--epochs N] [--patience N] [--limit N]
                                      [--seed S] [--window N] [--batch-size N] [--hidden N] [--vocab-size N]
                                      [--fixed-step]
                                      [--package PKG_DIR]
    python -m export train deep-musician|multitrack-rnn --data corpus:bach|DIR --out DIR [--epochs N]
                                      [--patience N] [--limit N] [--seed S] [--window N] [--batch-size N]
                                      [--hidden N] [--alpha A] [--gamma G] [--stride N] [--threads N]
                                      [--package PKG_DIR]
    python -m export train midigan|imagegan|crnngan|multitrack-cnn --data corpus:folk|corpus:bach|DIR
                                      --out DIR [--epochs N] [--limit N] [--seed S] [--batch-size N]
                                      [--threads N] [--package PKG_DIR] [--recipe seed|stable (the GANs)]
    python -m export onnx CHECKPOINT --out PACKAGE_DIR [--name NAME] [--version V]
    python -m export prepare --data MIDI_FOLDER --out CACHE [--jobs N]

Every ``train`` also takes [--fresh] [--checkpoint-every N] [--device auto|cpu|cuda]
[--precision auto|fp32|bf16], reads a prepared CACHE wherever it reads a MIDI folder, and
runs unchanged under ``torchrun --nproc_per_node=N -m export train ...`` (see
:mod:`export.distributed`); an interrupted run continues from ``--out``'s ``last.pt``
when the same command is run again.

The families and what each reads of these options come from the registry, :func:`export.family.families`.

A user's mistake (unknown family, missing data, bad option, failed parity) ends
with a one-line message and exit status 2 (usage) or 1 (everything else), never
a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from export.family import families
from livegen.errors import LivegenError

log = logging.getLogger("export")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export", description="Train livegen models and export packages.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a model and write checkpoint.pt")
    train.add_argument("family", help=f"model family; accepted: {', '.join(families())}")
    train.add_argument(
        "--data", required=True, help="corpus:folk, a folder of .mid files, or a cache made by `prepare`"
    )
    train.add_argument("--out", required=True, type=Path, help="folder for checkpoint.pt")
    train.add_argument("--epochs", type=int, default=100, help="most epochs to run (default 100)")
    train.add_argument("--patience", type=int, default=5, help="epochs without improvement before stopping (5)")
    train.add_argument("--limit", type=int, default=None, help="use only the first N tunes or files")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument("--window", type=int, default=None, help="notes per training window (default 64)")
    train.add_argument("--batch-size", type=int, default=None, help="windows per batch (default 64)")
    train.add_argument("--hidden", type=int, default=None, help="LSTM units (default 128; token-lstm 256)")
    train.add_argument("--vocab-size", type=int, default=None, help="token-lstm: most tokens kept (default 512)")
    train.add_argument(
        "--fixed-step",
        action="store_true",
        help="token-lstm: the seed's tokens, a fixed step apart, instead of time-shift tokens",
    )
    train.add_argument(
        "--pitch-embedding",
        type=int,
        default=None,
        help="midirnn: read the pitch through a learned vector of N values (default 0: the seed's pitch / 128)",
    )
    train.add_argument(
        "--time-head",
        choices=("regression", "classes"),
        default="regression",
        help="step and duration as the seed's regression heads (default) or as logits over duration classes",
    )
    train.add_argument("--alpha", type=float, default=None, help="deep-musician: focal loss alpha (default 0.75)")
    train.add_argument("--gamma", type=float, default=None, help="deep-musician: focal loss gamma (default 2)")
    train.add_argument(
        "--stride", type=int, default=None, help="deep-musician: frames between training windows (default 16)"
    )
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    train.add_argument(
        "--recipe",
        default="seed",
        help="midigan, imagegan, crnngan: 'seed' (the seed's training recipe, default) or 'stable' (with the GAN "
        "stabilisers the model card names)",
    )
    train.add_argument("--package", type=Path, default=None, help="export a model package here after training")
    train.add_argument(
        "--fresh", action="store_true", help="start afresh even when --out holds a resumable last.pt of this run"
    )
    train.add_argument(
        "--checkpoint-every", type=int, default=200, help="batches between resumable checkpoints (default 200)"
    )
    train.add_argument(
        "--stop-after-batches", type=int, default=None, help="stop as SIGTERM would after N batches (for tests)"
    )
    train.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: this rank's GPU where there is one"
    )
    train.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="auto: bfloat16 autocast on a GPU that has it (midirnn, token-lstm), else float32",
    )
    train.add_argument("--name", default=None, help="package name (default: the --package folder's name)")

    prepare = commands.add_parser(
        "prepare", help="convert a folder tree of MIDI files into a cache that `train --data` reads"
    )
    prepare.add_argument("--data", required=True, type=Path, help="folder tree of .mid/.midi files")
    prepare.add_argument("--out", required=True, type=Path, help="cache folder (made, or updated in place)")
    prepare.add_argument("--jobs", type=int, default=None, help="worker processes (default: one per CPU)")

    onnx = commands.add_parser("onnx", help="export a checkpoint as a model package")
    onnx.add_argument("checkpoint", type=Path, help="checkpoint.pt written by `train`")
    onnx.add_argument("--out", required=True, type=Path, help="package folder to write")
    onnx.add_argument("--name", default=None, help="package name (default: the folder's name)")
    onnx.add_argument("--version", default="1.0.0", help="package version (default 1.0.0)")
    evaluate = commands.add_parser("evaluate", help="write a package card's Evaluation section (livegen evaluate)")
    evaluate.add_argument("package", type=Path, help="package folder")
    evaluate.add_argument("--rng-seeds", type=int, default=6, help="how many rng seeds to average (default 6)")
    return parser


def _evaluate(args: argparse.Namespace) -> None:
    from export.card_eval import write_evaluation

    if not 1 <= args.rng_seeds <= 100:
        raise LivegenError(f"--rng-seeds {args.rng_seeds}: expected 1 to 100")
    print(write_evaluation(args.package, rng_seeds=range(args.rng_seeds)))


def _prepare(args: argparse.Namespace) -> None:
    from export.prepare import log_report, prepare

    log_report(prepare(args.data, args.out, jobs=args.jobs))


def _quiet_exporter(verbose: bool) -> None:
    """Silence torch's ONNX exporter warning about each torchvision operator it cannot register.

    Called after torch is imported: importing torch sets the levels of its own loggers.
    """
    if not verbose:
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    """What every family's training options take from the command line about the run."""
    from export.distributed import RunOptions

    run = RunOptions(
        resume=not args.fresh,
        checkpoint_every=args.checkpoint_every,
        stop_after_batches=args.stop_after_batches,
        device=args.device,
        precision=args.precision,
    )
    run.check()
    return {
        "data": args.data,
        "out": args.out,
        "epochs": args.epochs,
        "patience": args.patience,
        "limit": args.limit,
        "seed": args.seed,
        "threads": args.threads,
        "run": run,
    }


def _main_rank() -> bool:
    """Whether this process writes packages: always, except on torchrun's ranks other than 0."""
    from export.distributed import world

    return world().main


def _train(args: argparse.Namespace) -> None:
    from export.family import family

    chosen = family(args.family)
    _quiet_exporter(args.verbose)
    checkpoint = chosen.train(chosen.options_from(args, **_run(args)))
    if args.package is not None and _main_rank():
        chosen.export(checkpoint, args.package, name=args.name)


def _onnx(args: argparse.Namespace) -> None:
    from export.common import load_checkpoint
    from export.errors import ExportError
    from export.family import family

    name = load_checkpoint(args.checkpoint).get("family")
    known = families()
    if name not in known:
        raise ExportError(f"{args.checkpoint}: family {name!r} cannot be exported; accepted: {', '.join(known)}")
    chosen = family(str(name))
    _quiet_exporter(args.verbose)
    chosen.export(args.checkpoint, args.out, name=args.name, version=args.version)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from rich.logging import RichHandler

    # torchrun's ranks other than 0 say only what goes wrong: rank 0 reports the run
    quiet = os.environ.get("RANK", "0") not in ("", "0")
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, show_time=False, markup=False)],
    )
    finished = False
    try:
        commands = {"train": _train, "onnx": _onnx, "evaluate": _evaluate, "prepare": _prepare}
        commands[args.command](args)
        finished = True
    except LivegenError as err:
        code = getattr(err, "exit_code", 1)  # TrainingInterrupted: 128 + the signal, as if it had killed us
        print(f"{'stopped' if code != 1 else 'error'}: {err}", file=sys.stderr)
        return int(code)
    except ImportError as err:
        print(
            f"error: {err.name or err} is not installed; install the training extra: pip install -e '.[train]'",
            file=sys.stderr,
        )
        return 1
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if args.command == "train" and "export.distributed" in sys.modules:
            from export.distributed import shutdown

            shutdown(finished=finished)  # leave torchrun's process group
    return 0


if __name__ == "__main__":
    sys.exit(main())
