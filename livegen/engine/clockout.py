"""MIDI clock master output: the clock, transport and song position bytes to send, by tick.

Context: control thread. :class:`ClockMaster` only computes ``(tick, bytes)`` pairs; the
engine turns them into scheduler items (a deadline from its clock for each tick) and the
scheduler sends them, so clock pulses go out on the same absolute deadlines as the notes.

Pulses are 0xF8 at every multiple of :data:`~livegen.engine.clock.TICKS_PER_PULSE`
(20 ticks, 24 per quarter note) from the start tick: each is computed from its index,
never accumulated, and :meth:`ClockMaster.advance` never returns one twice. Written by
hand: it is a dozen lines of MIDI 1.0 arithmetic no library packages on its own.
"""

from __future__ import annotations

from livegen.engine.clock import (
    MIDI_CLOCK,
    MIDI_CONTINUE,
    MIDI_SPP,
    MIDI_START,
    MIDI_STOP,
    TICKS_PER_PULSE,
    TICKS_PER_SPP,
)
from livegen.music.time import PPQN

#: Song Position Pointer is 14 bits of sixteenth notes.
MAX_SPP = (1 << 14) - 1

ClockEvent = tuple[int, tuple[int, ...]]


def song_position(tick: int) -> tuple[int, int, int]:
    """The Song Position Pointer message for ``tick`` (a multiple of 120 ticks, a sixteenth)."""
    if tick < 0 or tick % TICKS_PER_SPP:
        raise ValueError(
            f"song position tick {tick} is not a whole sixteenth: MIDI clock can start or continue only at "
            f"a non-negative multiple of {TICKS_PER_SPP} ticks"
        )
    value = tick // TICKS_PER_SPP
    if value > MAX_SPP:
        raise ValueError(
            f"song position tick {tick} is past the last Song Position Pointer value "
            f"({MAX_SPP} sixteenths = tick {MAX_SPP * TICKS_PER_SPP})"
        )
    return (MIDI_SPP, value & 0x7F, value >> 7)


class ClockMaster:
    """Makes MIDI clock output as ``(tick, bytes)`` pairs for the engine to schedule (control thread).

    ``start(tick)`` then ``advance(now_tick)`` every control step; ``stop(tick)`` and
    ``continue_(tick)`` for the transport. Pulses already returned past a stop tick are
    the engine's to withdraw (schedule clock output under its own generation).
    """

    def __init__(self) -> None:
        self._running = False
        self._origin = 0  # the tick of pulse 0 of the current run
        self._next = 0  # index of the next pulse to return

    @property
    def running(self) -> bool:
        return self._running

    @property
    def next_pulse_tick(self) -> int:
        """The tick of the next pulse :meth:`advance` will return."""
        return self._origin + self._next * TICKS_PER_PULSE

    def start(self, tick: int = 0) -> list[ClockEvent]:
        """Begin at ``tick``: Song Position Pointer and Start (the pulse at ``tick`` follows).

        Receivers take Start as position 0, so a start at a later tick sends Song
        Position Pointer and Continue instead (the MIDI 1.0 way to start from a position).
        """
        spp = song_position(tick)
        self._running, self._origin, self._next = True, tick, 0
        return [(tick, spp), (tick, (MIDI_START if tick == 0 else MIDI_CONTINUE,))]

    def continue_(self, tick: int) -> list[ClockEvent]:
        """Resume at ``tick``: Song Position Pointer and Continue (the pulse at ``tick`` follows)."""
        spp = song_position(tick)
        self._running, self._origin, self._next = True, tick, 0
        return [(tick, spp), (tick, (MIDI_CONTINUE,))]

    def stop(self, tick: int) -> list[ClockEvent]:
        """Stop at ``tick``: 0xFC; :meth:`advance` returns nothing until the next start."""
        self._running = False
        return [(tick, (MIDI_STOP,))]

    def advance(self, now_tick: int, lookahead_ticks: int = PPQN) -> list[ClockEvent]:
        """Every pulse not yet returned up to and including ``now_tick + lookahead_ticks``."""
        if not self._running:
            return []
        last = (now_tick + lookahead_ticks - self._origin) // TICKS_PER_PULSE  # index of the last due pulse
        if last < self._next:
            return []
        pulse: tuple[int, ...] = (MIDI_CLOCK,)
        out = [(self._origin + i * TICKS_PER_PULSE, pulse) for i in range(self._next, last + 1)]
        self._next = last + 1
        return out
