"""Tiny trainings of every family through its Python API, for the distributed and resume tests; run as
``torchrun ... -m tests.distributed_train FAMILY DATA OUT`` it trains one of them on every rank.

Context: test setup (needs the ``train`` extra).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from export.crnngan.model import CrnnGanConfig
from export.crnngan.train import CrnnGanOptions, train_crnngan
from export.deepmusician.model import DeepMusicianConfig
from export.deepmusician.train import DeepMusicianOptions, train_deep_musician
from export.distributed import RunOptions, TrainingInterrupted, shutdown
from export.imagegan.model import ImageGanConfig
from export.imagegan.train import ImageGanOptions, train_imagegan
from export.midigan.model import MidiGanConfig
from export.midigan.train import MidiGanOptions, train_midigan
from export.midirnn.model import MidiRnnConfig
from export.midirnn.train import TrainOptions, train_midirnn
from export.multitrack_cnn.model import MultiTrackCnnConfig
from export.multitrack_cnn.train import MultiTrackCnnOptions, train_multitrack_cnn
from export.multitrack_rnn.model import MultiTrackConfig
from export.multitrack_rnn.train import MultiTrackOptions, train_multitrack
from export.tokenlstm.model import TokenLstmConfig
from export.tokenlstm.train import TokenTrainOptions, train_token_lstm


def _midirnn(**run: Any) -> Any:
    config = MidiRnnConfig(window=16, batch_size=8, hidden=16)
    return train_midirnn(TrainOptions(config=config, epochs=2, patience=2, **run))


def _token_lstm(**run: Any) -> Any:
    config = TokenLstmConfig(window=16, batch_size=8, hidden=16, filters=16)
    return train_token_lstm(TokenTrainOptions(config=config, epochs=2, patience=2, **run))


def _deep_musician(**run: Any) -> Any:
    config = DeepMusicianConfig(hidden=8, classifier=8, window=16, decode_frames=4, stride=16, batch_size=8)
    return train_deep_musician(DeepMusicianOptions(config=config, epochs=2, patience=2, **run))


def _multitrack(**run: Any) -> Any:
    config = MultiTrackConfig(hidden=16, window=16, batch_size=8)
    return train_multitrack(MultiTrackOptions(config=config, epochs=2, patience=2, **run))


def _multitrack_cnn(**run: Any) -> Any:
    config = MultiTrackCnnConfig(hidden=4, batch_size=16, stride=4)
    return train_multitrack_cnn(MultiTrackCnnOptions(config=config, epochs=2, patience=2, **run))


def _midigan(**run: Any) -> Any:
    config = MidiGanConfig(hidden=32, batch_size=64)
    return train_midigan(MidiGanOptions(config=config, epochs=2, patience=2, **run))


def _imagegan(**run: Any) -> Any:
    config = ImageGanConfig(window=32, hidden=32, channels=4, filters=8, batch_size=16, stride=8)
    return train_imagegan(ImageGanOptions(config=config, epochs=2, seed=1, **run))


def _crnngan(**run: Any) -> Any:
    config = CrnnGanConfig(
        hidden=8, window=8, noise=4, batch_size=8, pretrain_epochs=2, batches_per_epoch=3, min_epochs=1
    )
    return train_crnngan(CrnnGanOptions(config=config, epochs=2, patience=1, threads=1, **run))


#: Every family's tiny training: ``train(data=..., out=..., run=...)``.
FAMILIES: dict[str, Callable[..., Any]] = {
    "midirnn": _midirnn,
    "token-lstm": _token_lstm,
    "deep-musician": _deep_musician,
    "multitrack-rnn": _multitrack,
    "multitrack-cnn": _multitrack_cnn,
    "midigan": _midigan,
    "imagegan": _imagegan,
    "crnngan": _crnngan,
}


def main(argv: list[str]) -> int:
    family, data, out = argv[:3]
    stop = int(argv[3]) if len(argv) > 3 else None
    finished = False
    try:
        FAMILIES[family](data=data, out=Path(out), run=RunOptions(stop_after_batches=stop))
        finished = True
    except TrainingInterrupted as err:
        print(f"stopped: {err}", file=sys.stderr)
        return err.exit_code
    finally:
        shutdown(finished=finished)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
