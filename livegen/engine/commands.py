"""Typed commands: steer a running jam from the terminal (or a pipe), one line each.

Context: :class:`CommandReader` reads on its own daemon thread and only posts
:class:`~livegen.engine.controls.ControlChange` objects to the conductor, which
applies them on the control thread. A line it cannot read is answered on stderr
with what is accepted; the jam goes on.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TextIO

from livegen.engine.controls import ControlChange
from livegen.errors import ConfigError

HELP = (
    "commands: mode call-response|accompany|autonomous, model NAME, temperature X, top-p X, density X, "
    "bars N, panic, take, quit"
)
_NUMBERS = {"temperature": "temperature", "top-p": "top_p", "top_p": "top_p", "density": "density"}


def parse_command(line: str) -> ControlChange | str | None:
    """One typed line -> a control change, ``"quit"``, or None for a blank line."""
    words = line.split()
    if not words:
        return None
    verb, args = words[0].lower(), words[1:]
    if verb in ("quit", "exit", "stop") and not args:
        return "quit"
    if verb in ("panic", "take", "record") and not args:
        return ControlChange("panic" if verb == "panic" else "record", True)
    if verb in ("mode", "model") and len(args) == 1:
        return ControlChange(verb, args[0])
    if verb in _NUMBERS and len(args) == 1:
        try:
            return ControlChange(_NUMBERS[verb], float(args[0]))
        except ValueError:
            raise ConfigError(f"{verb} {args[0]!r}: expected a number") from None
    if verb in ("bars", "response-bars") and len(args) == 1 and args[0].isdigit():
        return ControlChange("response_bars", int(args[0]))
    raise ConfigError(f"command {line.strip()!r} not understood; {HELP}")


class CommandReader:
    """Reads typed commands from ``stream`` and posts them; ``quit`` calls ``on_quit``."""

    def __init__(
        self, post: Callable[[ControlChange], None], on_quit: Callable[[], None], stream: TextIO | None = None
    ) -> None:
        self.post = post
        self.on_quit = on_quit
        self.stream = stream if stream is not None else sys.stdin
        self._thread = threading.Thread(target=self._run, name="livegen-commands", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:  # the reader thread
        for line in self.stream:
            try:
                command = parse_command(line)
            except ConfigError as err:
                print(f"livegen: {err}", file=sys.stderr, flush=True)
                continue
            if command == "quit":
                self.on_quit()
                return
            if isinstance(command, ControlChange):
                self.post(command)
