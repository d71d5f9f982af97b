"""Typed commands: steer a running jam from the terminal (or a pipe), one line each.

Context: :class:`CommandReader` reads on its own daemon thread and only posts
:class:`~livegen.engine.controls.ControlChange` objects to the conductor, which
applies them on the control thread. A line it cannot read, or a value outside what
the command line accepts (checked here by :meth:`LiveParams.check`, the same check
as the command line's), is answered on stderr with what is wrong and what is
accepted; nothing is posted and the jam goes on.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TextIO

from livegen.engine.config import JamConfig
from livegen.engine.controls import CONTROL_MODES, ControlChange
from livegen.engine.live import LiveParams
from livegen.engine.options import live_verbs
from livegen.errors import ConfigError

#: Verbs that set a live option (``temperature``, ``top-p``, ``density``, ``bars``), from JamConfig.
_LIVE = live_verbs(JamConfig)
_LIVE_SHOWN = ", ".join(
    f"{d.spelled.removeprefix('--')} {'N' if d.kind is int else 'X'}" for d in dict.fromkeys(_LIVE.values())
)
HELP = f"commands: mode call-response|accompany|autonomous, model NAME, {_LIVE_SHOWN}, panic, take, quit"


def parse_command(line: str, live: LiveParams, modes: tuple[str, ...] = CONTROL_MODES) -> ControlChange | str | None:
    """One typed line -> a control change, ``"quit"``, or None for a blank line.

    Raises :class:`ConfigError` saying what is wrong and what is accepted: an unknown
    command, a mode not in ``modes``, a value outside ``live``'s ranges.
    """
    words = line.split()
    if not words:
        return None
    verb, args = words[0].lower(), words[1:]
    if verb in ("quit", "exit", "stop") and not args:
        return "quit"
    if verb in ("panic", "take", "record") and not args:
        return ControlChange("panic" if verb == "panic" else "record", True)
    if verb == "mode" and len(args) == 1:
        if args[0] not in modes:
            raise ConfigError(f"mode {args[0]!r}: expected one of {', '.join(modes)}")
        return ControlChange("mode", args[0])
    if verb == "model" and len(args) == 1:
        return ControlChange("model", args[0])
    if verb in _LIVE and len(args) == 1:
        declared = _LIVE[verb]
        name = declared.option.live
        assert name is not None
        try:
            value = declared.kind(args[0])
        except ValueError:
            what = f"a whole number of {declared.name}" if declared.kind is int else "a number"
            raise ConfigError(f"{verb} {args[0]!r}: expected {what}") from None
        return ControlChange(name, declared.kind(live.check(name, value, verb)))
    raise ConfigError(f"command {line.strip()!r} not understood; {HELP}")


class CommandReader:
    """Reads typed commands from ``stream`` and posts them; ``quit`` calls ``on_quit``.

    ``live`` gives the ranges a value is checked against (it is only read: the ranges
    do not change during a jam).
    """

    def __init__(
        self,
        post: Callable[[ControlChange], None],
        on_quit: Callable[[], None],
        live: LiveParams,
        stream: TextIO | None = None,
        *,
        modes: tuple[str, ...] = CONTROL_MODES,
    ) -> None:
        self.post = post
        self.on_quit = on_quit
        self.live = live
        self.modes = modes
        self.stream = stream if stream is not None else sys.stdin
        self._thread = threading.Thread(target=self._run, name="livegen-commands", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the stream has ended (tests, a piped script)."""
        self._thread.join(timeout)

    def _run(self) -> None:  # the reader thread
        for line in self.stream:
            try:
                command = parse_command(line, self.live, self.modes)
            except ConfigError as err:
                print(f"livegen: {err}", file=sys.stderr, flush=True)
                continue
            if command == "quit":
                self.on_quit()
                return
            if isinstance(command, ControlChange):
                self.post(command)
