"""The ``token-lstm`` family (seed 001): Conv1D + 2 x LSTM over note, chord and time-shift tokens.

Context: setup (training and export; imports torch, never imported by the host).
"""

from __future__ import annotations

from typing import Any

from export.family import SIZES, Family
from export.tokenlstm.model import TokenLstmConfig
from export.tokenlstm.package import export_token_package, model_card
from export.tokenlstm.train import TokenTrainOptions, train_token_lstm
from livegen.models.tokenlstm import FAMILY as NAME


def _config(fixed_step: bool, **fields: Any) -> TokenLstmConfig:
    return TokenLstmConfig(**fields, time_shifts=not fixed_step)


FAMILY = Family(
    NAME,
    options=TokenTrainOptions,
    config=TokenLstmConfig,
    train=train_token_lstm,
    export=export_token_package,
    card=model_card,
    flags={**SIZES, "vocab_size": "max_vocab", "fixed_step": "fixed_step"},
    make_config=_config,
)
