"""The ``token-lstm`` family (seed 001): Conv1D + 2 x LSTM over note and chord tokens: its config and network.

Context: setup (training and export; imports torch, never imported by the host).

Seed 001 (Mokobi, May and Voorhis-Allen, after Skúli's Keras tutorial; its Model 1 in
``cademay/cs230-music-generation``) parses MIDI with music21 into notes and chords,
names each as a string, builds the vocabulary of the strings seen, and trains
``Conv1D(kernel 3, ReLU) -> Dropout 0.1 -> LSTM 256 -> Dropout 0.3 -> LSTM 256 ->
Dropout 0.3 -> Dense(vocabulary) -> softmax`` with categorical cross-entropy on
sequences of 100 tokens predicting the next.

Kept: the token strings (:mod:`livegen.models.tokenlstm`), the vocabulary from the
training data, Conv1D with kernel 3 and ReLU, two LSTM layers of 256 units, the
dropouts, a softmax over the vocabulary trained with cross-entropy, sequences of
100 tokens.

Changed, and why:

- **Causal convolution, loss at every position.** The seed flattens the whole window
  into its dense layer and predicts only the 101st token; the host runs the model as
  a stream, one token at a time from a zero state, so the convolution sees the
  current and the two previous tokens (zeros before the first: the streaming graph
  carries those two as state) and every position of a window is a target.
- **An embedding instead of the token index divided by the vocabulary size.** The
  seed feeds one number per token, which puts the tokens on an arbitrary line (the
  alphabetical order of their names); a learned embedding of :data:`EMBED` numbers is
  what a categorical input needs and costs 32 numbers per token.
- **A capped vocabulary** (``max_vocab``, 512 for the bundled model): Bach's
  four-part chords in every voicing make thousands of distinct tokens, most seen once
  or twice; the tokens outside the cap are mapped to the nearest kept token
  (:meth:`livegen.models.tokenlstm.Vocabulary.nearest`) as the host maps a performer's
  chords. The cap keeps the package under 5 MB (the output layer is 256 numbers per
  token) and gives every kept token enough examples to learn.
- **Time shifts** (``time_shifts``, on by default): the seed places its tokens a fixed
  0.5 beats apart, so every onset falls on an eighth and a passing note takes as long as
  a full chord. The vocabulary also holds the gaps between onsets of the training data
  (:data:`MIN_SHIFT_SHARE` of the gaps or more, at most :data:`MAX_SHIFT_BEATS`), and a
  tune is read as chord, shift, chord, ... (:func:`livegen.models.tokenlstm.tune_tokens`):
  the same softmax predicts when the next chord comes and which.
- Adam with early stopping on a validation split, learning-rate halving and gradient
  clipping, instead of RMSprop for a fixed 200-2000 epochs: two CPU cores, minutes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from export.common import ConfigRecord
from export.errors import ExportError
from livegen.models.tokenlstm import Vocabulary

#: Width of the token embedding that replaces the seed's one normalised number per token.
EMBED = 32


#: The convolution's kernel (the seed's), so the streaming graph keeps KERNEL - 1 inputs as state.
KERNEL = 3


@dataclass(frozen=True, slots=True)
class TokenLstmConfig(ConfigRecord):
    """Architecture and training hyper-parameters; stored in the checkpoint and the manifest."""

    embed: int = EMBED
    filters: int = 256
    hidden: int = 256
    layers: int = 2
    conv_dropout: float = 0.1
    dropout: float = 0.3
    window: int = 100
    batch_size: int = 16
    learning_rate: float = 0.002
    lr_patience: int = 2
    lr_factor: float = 0.5
    lr_min: float = 1e-4
    grad_clip: float = 1.0
    max_vocab: int = 512
    time_shifts: bool = True


class TokenLstm(nn.Module):
    """Embedding -> causal Conv1D(kernel 3, ReLU) -> dropout -> 2 x LSTM -> dropout -> logits over the vocabulary."""

    def __init__(self, vocab: int, config: TokenLstmConfig) -> None:
        super().__init__()
        self.vocab = vocab
        self.config = config
        self.embed = nn.Embedding(vocab, config.embed)
        self.conv = nn.Conv1d(config.embed, config.filters, KERNEL)
        self.conv_dropout = nn.Dropout(config.conv_dropout)
        self.lstm = nn.LSTM(
            config.filters, config.hidden, num_layers=config.layers, batch_first=True, dropout=config.dropout
        )
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(config.hidden, vocab)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """The convolution's output [batch, time, filters]: each position sees itself and the two before (zeros)."""
        x = self.embed(tokens).transpose(1, 2)  # [batch, embed, time]
        x = F.pad(x, (KERNEL - 1, 0))
        return self.conv_dropout(F.relu(self.conv(x))).transpose(1, 2)

    def forward(
        self, tokens: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Logits [batch, time, vocab] for the token after each position of ``tokens`` [batch, time], and (h, c)."""
        out, (h, c) = self.lstm(self.features(tokens), state)
        return self.out(self.dropout(out)), (h, c)


class TokenLstmStep(nn.Module):
    """One token in, the next token's logits out; the convolution's last two inputs and the LSTM state as state."""

    def __init__(self, model: TokenLstm) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, token: torch.Tensor, context: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.model
        window = torch.cat([context, m.embed(token).unsqueeze(1)], dim=1)  # [batch, 3, embed]
        x = F.relu(m.conv(window.transpose(1, 2)))  # [batch, filters, 1]
        out, (h_out, c_out) = m.lstm(x.transpose(1, 2), (h, c))
        return m.out(out[:, 0, :]), window[:, 1:, :], h_out, c_out


def model_from_checkpoint(checkpoint: Mapping[str, Any], path: Path) -> tuple[TokenLstm, Vocabulary]:
    """The trained model of ``checkpoint`` in eval mode and its vocabulary; clear errors for a mismatch."""
    config = TokenLstmConfig.from_dict(checkpoint["config"])
    tokens = checkpoint.get("tokens")
    if not isinstance(tokens, list) or not tokens:
        raise ExportError(f"{path}: the checkpoint holds no 'tokens' vocabulary")
    vocabulary = Vocabulary(tokens)
    model = TokenLstm(len(vocabulary), config)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError) as err:
        raise ExportError(f"{path}: the weights do not fit a token-lstm of this config ({err})") from err
    return model.eval(), vocabulary
