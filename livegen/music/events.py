"""Immutable note and MIDI event values shared by every layer.

Context: any (pure values, safe to hand between threads).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

NOTE_OFF = 0x80
NOTE_ON = 0x90
CONTROL_CHANGE = 0xB0
PROGRAM_CHANGE = 0xC0

CC_SUSTAIN = 64
CC_ALL_SOUND_OFF = 120
CC_ALL_NOTES_OFF = 123


@dataclass(frozen=True, slots=True)
class Note:
    """A note: MIDI pitch and velocity, start and duration in ticks, channel 0-15."""

    pitch: int
    velocity: int
    start: int
    duration: int
    channel: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.pitch <= 127:
            raise ValueError(f"pitch {self.pitch} outside 0..127")
        if not 1 <= self.velocity <= 127:
            raise ValueError(f"velocity {self.velocity} outside 1..127")
        if self.duration < 0 or self.start < 0:
            raise ValueError("start and duration must be non-negative ticks")
        if not 0 <= self.channel <= 15:
            raise ValueError(f"channel {self.channel} outside 0..15")

    @property
    def end(self) -> int:
        return self.start + self.duration


@dataclass(frozen=True, slots=True, order=True)
class MidiEvent:
    """A channel message at a tick. Orders by tick, then note-offs before note-ons."""

    tick: int
    order: int  # 0 for releases and controls, 1 for note-ons (sort key)
    status: int
    data1: int
    data2: int

    @property
    def kind(self) -> int:
        return self.status & 0xF0

    @property
    def channel(self) -> int:
        return self.status & 0x0F

    @property
    def is_note_on(self) -> bool:
        return self.kind == NOTE_ON and self.data2 > 0

    @property
    def is_note_off(self) -> bool:
        return self.kind == NOTE_OFF or (self.kind == NOTE_ON and self.data2 == 0)

    @property
    def key(self) -> tuple[int, int]:
        """(channel, note number): what a note-off must match to end a note-on."""
        return (self.status & 0x0F, self.data1)

    def bytes(self) -> list[int]:
        if _CHANNEL_DATA[self.status >> 4] == 1:
            return [self.status, self.data1]
        return [self.status, self.data1, self.data2]


def decode_message(tick: int, data: Sequence[int]) -> MidiEvent | None:
    """A channel message as a port delivers it (status byte first) at ``tick``, typed.

    The one place raw input bytes become a :class:`MidiEvent`. None for a system
    message, or for a channel message with the wrong number of data bytes.
    """
    if not data or not 0x80 <= data[0] < 0xF0:
        return None
    status = data[0]
    size = _CHANNEL_DATA[status >> 4]
    if len(data) != size + 1:
        return None
    data2 = data[2] if size == 2 else 0
    return MidiEvent(tick, 1 if status & 0xF0 == NOTE_ON and data2 > 0 else 0, status, data[1], data2)


def note_on(tick: int, channel: int, pitch: int, velocity: int) -> MidiEvent:
    return MidiEvent(tick, 1, NOTE_ON | channel, pitch, velocity)


def note_off(tick: int, channel: int, pitch: int) -> MidiEvent:
    return MidiEvent(tick, 0, NOTE_OFF | channel, pitch, 0)


def control_change(tick: int, channel: int, control: int, value: int) -> MidiEvent:
    return MidiEvent(tick, 0, CONTROL_CHANGE | channel, control, value)


def notes_to_events(notes: Iterable[Note]) -> list[MidiEvent]:
    """Note-on and note-off events for ``notes``, sorted; releases come first at a tick."""
    events: list[MidiEvent] = []
    for n in notes:
        events.append(note_on(n.start, n.channel, n.pitch, n.velocity))
        events.append(note_off(n.end, n.channel, n.pitch))
    events.sort()
    return events


#: Data bytes each channel message carries, by its high nibble.
_CHANNEL_DATA = {0x8: 2, 0x9: 2, 0xA: 2, 0xB: 2, 0xC: 1, 0xD: 1, 0xE: 2}
#: Data bytes of the system common messages (0xF4 and 0xF5 are undefined and dropped).
_COMMON_DATA = {0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF6: 0}
SYSEX_START = 0xF0
SYSEX_END = 0xF7


class MidiStreamParser:
    """Turns raw MIDI bytes, in packets of any size, into complete, well-formed messages.

    Context: an input backend's thread (allocates only the messages it returns). A
    backend normally hands over one complete message per packet, but JACK passes on
    whatever another client wrote. So, as the MIDI 1.0 byte stream is read:
    running status continues across packets (a system common message cancels it);
    real-time bytes (0xF8-0xFF) come out at once as one-byte messages, also from
    inside a message or a SysEx; a SysEx comes out whole from 0xF0 to 0xF7, and one
    that another status byte cuts off, or longer than :attr:`MAX_SYSEX`, is dropped.
    Messages a new status byte cuts short, data bytes with no status before them,
    undefined status bytes (0xF4, 0xF5) and values that are not bytes at all are
    dropped and counted in :attr:`dropped`. Every message returned has its status
    byte first, the exact number of data bytes for it, each 0-127.
    """

    MAX_SYSEX = 4096

    def __init__(self) -> None:
        self.dropped = 0
        self._status = 0  # running status (0: none)
        self._need = 0  # data bytes the message under way still needs
        self._message: list[int] = []
        self._sysex: list[int] | None = None
        self._sysex_too_long = False

    def feed(self, data: Iterable[int]) -> list[tuple[int, ...]]:
        out: list[tuple[int, ...]] = []
        for byte in data:
            if not isinstance(byte, int) or not 0 <= byte <= 0xFF:
                self._abandon()
                self._status = 0
            elif byte >= 0xF8:
                out.append((byte,))
            elif self._sysex is not None or self._sysex_too_long:
                self._in_sysex(byte, out)
            elif byte >= 0x80:
                self._start(byte, out)
            elif self._message:
                self._message.append(byte)
                self._need -= 1
                if not self._need:
                    out.append(tuple(self._message))
                    self._message = [self._status] if self._status else []
                    self._need = _CHANNEL_DATA[self._status >> 4] if self._status else 0
            else:
                self.dropped += 1  # a data byte with no status before it
        return out

    def _abandon(self) -> None:
        if len(self._message) > 1 or self._sysex is not None:
            self.dropped += 1
        self._message, self._need = [], 0
        self._sysex, self._sysex_too_long = None, False

    def _start(self, status: int, out: list[tuple[int, ...]]) -> None:
        self._abandon()
        if status < 0xF0:
            self._status = status
            self._message, self._need = [status], _CHANNEL_DATA[status >> 4]
            return
        self._status = 0  # system common and exclusive cancel running status
        if status == SYSEX_START:
            self._sysex = [status]
        elif status in _COMMON_DATA:
            if _COMMON_DATA[status]:
                self._message, self._need = [status], _COMMON_DATA[status]
            else:
                out.append((status,))
        else:
            self.dropped += 1  # SYSEX_END with no SysEx, or undefined 0xF4/0xF5

    def _in_sysex(self, byte: int, out: list[tuple[int, ...]]) -> None:
        if byte == SYSEX_END:
            if self._sysex is not None:
                out.append((*self._sysex, SYSEX_END))
            self._sysex, self._sysex_too_long = None, False
        elif byte >= 0x80:
            self._start(byte, out)  # cuts the SysEx off: dropped
        elif self._sysex is not None:
            if len(self._sysex) + 1 >= self.MAX_SYSEX:
                self._sysex, self._sysex_too_long = None, True
                self.dropped += 1
            else:
                self._sysex.append(byte)
