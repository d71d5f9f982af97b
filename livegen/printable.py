"""Text from files made safe to print and log: control characters escaped.

Context: any (pure functions; only ``livegen/cli.py`` installs the formatter). A string
read from a preset, a manifest or a MIDI file reaches the terminal, the journal and the
log file; a newline in it would forge a log record, an ESC would drive the terminal.
Escaping happens where lines leave livegen, not where strings are read, so no module
has to remember which of its strings came from a file:

- :class:`PrintableFormatter` formats every record of every handler the CLI installs
  (the console and the log file). Log calls are spread over many modules with
  file-derived arguments (a model's name, a port's, a path); escaping the final message
  in the formatter covers all of them, third-party records included. A traceback's lines
  are indented under their record, so every line that starts at the margin is a record.
- :func:`printable` escapes a line the CLI prints itself (the jam's report, ``models
  info``, ``models verify``, an error).

Written by hand (a few lines): ``rich.control.escape_control_codes`` leaves newline and
ESC alone, and ``repr`` adds quotes and doubles the backslashes of Windows paths. Each
character :meth:`str.isprintable` rejects (C0 and C1 controls, DEL, bidirectional
overrides, line and paragraph separators) is written as Python writes it: ``\\n``,
``\\x1b``, ``\\u202e``.
"""

from __future__ import annotations

import logging

#: What a traceback's lines start with in the log, under the record they belong to.
INDENT = "    "


def printable(text: str) -> str:
    """``text`` with every non-printable character escaped (``"a\\nb"`` -> ``"a\\\\nb"``)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class PrintableFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose every record is one line at the margin, escaped;
    a traceback or stack follows on indented lines, each escaped too."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = printable(self.formatMessage(record))
        details = []
        if record.exc_info:
            details.append(self.formatException(record.exc_info))
        elif record.exc_text:
            details.append(record.exc_text)
        if record.stack_info:
            details.append(self.formatStack(record.stack_info))
        for block in details:
            text += "".join(f"\n{INDENT}{printable(line)}" for line in block.splitlines())
        return text
