"""Errors of training and export, each a :class:`~livegen.errors.LivegenError`.

Context: setup (training and export only).
"""

from __future__ import annotations

from livegen.errors import LivegenError


class ExportError(LivegenError, RuntimeError):
    """Training or export cannot go on; the message names the file or option and what is accepted."""


class ParityError(ExportError):
    """The exported ONNX graph does not reproduce the PyTorch model within the tolerance."""
