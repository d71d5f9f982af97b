"""The note tracker: which notes sound on which output group and channel.

Context: real-time (updated by the scheduler as it sends) and, after the
scheduler has stopped, control. Counts are preallocated; updating allocates
nothing.
"""

from __future__ import annotations

from livegen.music.events import (
    CC_ALL_NOTES_OFF,
    CC_ALL_SOUND_OFF,
    CC_SUSTAIN,
    CONTROL_CHANGE,
    NOTE_OFF,
    NOTE_ON,
)


class NoteTracker:
    """Counts note-ons minus note-offs per (group, channel, pitch)."""

    def __init__(self, groups: int) -> None:
        self._counts = [[bytearray(128) for _ in range(16)] for _ in range(groups)]
        self._used = [[False] * 16 for _ in range(groups)]

    def observe(self, group: int, data: tuple[int, ...]) -> None:
        """Update from one message about to be sent to ``group``."""
        if len(data) < 3:
            return
        kind, channel = data[0] & 0xF0, data[0] & 0x0F
        row = self._counts[group][channel]
        if kind == NOTE_ON and data[2] > 0:
            self._used[group][channel] = True
            if row[data[1]] < 255:
                row[data[1]] += 1
        elif kind in (NOTE_OFF, NOTE_ON) and row[data[1]] > 0:
            row[data[1]] -= 1

    def sounds(self, group: int, channel: int, pitch: int) -> bool:
        """Whether ``pitch`` sounds on ``channel`` of ``group``."""
        return self._counts[group][channel][pitch] > 0

    def sounding(self, group: int) -> list[tuple[int, int]]:
        """(channel, pitch) of every note sounding on ``group``."""
        return [(ch, pitch) for ch, row in enumerate(self._counts[group]) for pitch in range(128) if row[pitch]]

    def release(self, group: int, *, reset_controllers: bool = False) -> list[tuple[int, ...]]:
        """Messages that silence exactly what sounds on ``group``, and forget it.

        With ``reset_controllers`` (stop, crash, port loss) they are followed by
        sustain off, all notes off and all sound off on every channel the group used.
        """
        messages: list[tuple[int, ...]] = []
        for ch, row in enumerate(self._counts[group]):
            for pitch in range(128):
                for _ in range(row[pitch]):
                    messages.append((NOTE_OFF | ch, pitch, 0))
                row[pitch] = 0
        if reset_controllers:
            for ch, used in enumerate(self._used[group]):
                if used:
                    messages.append((CONTROL_CHANGE | ch, CC_SUSTAIN, 0))
                    messages.append((CONTROL_CHANGE | ch, CC_ALL_NOTES_OFF, 0))
                    messages.append((CONTROL_CHANGE | ch, CC_ALL_SOUND_OFF, 0))
        return messages
