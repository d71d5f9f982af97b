"""Which performed messages the engine takes: all a person plays, a bounded share of a flood.

Context: :meth:`InputAdmission.admit` runs on an input backend's thread (no locks, no
allocation beyond a set entry, never raises); the counters are read by the control thread.

A broken controller or a MIDI feedback loop can send thousands of messages a second.
Each performed note-on costs the control thread a re-plan (model inference), so taking
them all starves what must keep time: the clock pulses and commits the control thread
hands to the scheduler. Note-ons are taken at up to ``note_ons_per_s`` (a burst of
``note_on_burst`` at once, a chord or a glissando) and other channel messages
(controllers, pitch bend, aftertouch) at up to ``messages_per_s``: two token buckets,
far above what hands play and far below a flood. What is refused is counted. Nothing
refused leaves a note or a pedal stuck: the note-off of a note-on that was taken is
always taken, and the note-off of one that was refused is refused with it (paired oldest
first per key, as :class:`~livegen.music.held.HeldNotes` pairs them); releasing
the sustain pedal and the all-notes-off and all-sound-off controllers always pass.
Clock and transport messages pass: the followed clock needs every one.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Status bytes that always pass: clock, start, continue, stop, song position.
TIMING = frozenset((0xF8, 0xFA, 0xFB, 0xFC, 0xF2))
_NOTE_OFF, _NOTE_ON, _CONTROL_CHANGE = 0x80, 0x90, 0xB0
#: Controllers that silence (all sound off, all notes off) and always pass.
_SILENCING = frozenset((120, 123))
_SUSTAIN = 64
#: Note-ons remembered per key while down (a keyboard has one; a flood may send thousands).
MAX_DOWN = 64


@dataclass(slots=True)
class _Bucket:
    """A token bucket: ``rate`` tokens a second, at most ``burst`` saved."""

    rate: float
    burst: float
    tokens: float
    at_ns: int = 0

    def take(self, t_ns: int) -> bool:
        tokens = min(self.burst, self.tokens + (t_ns - self.at_ns) * self.rate / 1e9)
        self.at_ns = t_ns
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


class InputAdmission:
    """Admits performed messages at a human rate and counts what a flood loses."""

    def __init__(
        self,
        *,
        note_ons_per_s: float = 200.0,
        note_on_burst: int = 100,
        messages_per_s: float = 1000.0,
        message_burst: int = 200,
    ) -> None:
        self._notes = _Bucket(note_ons_per_s, note_on_burst, note_on_burst)
        self._messages = _Bucket(messages_per_s, message_burst, message_burst)
        #: Per (channel, pitch) with notes down: whether each note-on was taken, oldest first (a
        #: note-off ends the oldest, as :class:`~livegen.music.held.HeldNotes` pairs them).
        self._down: dict[tuple[int, int], list[bool]] = {}
        self.dropped = 0  # messages refused

    def admit(self, data: tuple[int, ...], t_ns: int) -> bool:
        """Whether to take ``data`` (arrived at ``t_ns``, ``perf_counter_ns``); a refusal is counted."""
        status = data[0] if data else 0
        if status in TIMING or status >= 0xF0:
            return True
        kind = status & 0xF0
        if kind in (_NOTE_ON, _NOTE_OFF) and len(data) >= 3:
            key = (status & 0x0F, data[1])
            if kind == _NOTE_ON and data[2] > 0:
                taken = self._notes.take(t_ns)
                down = self._down.setdefault(key, [])
                if len(down) >= MAX_DOWN:  # note-ons with no note-offs (a flood): forget the oldest
                    del down[0]
                down.append(taken)
                self.dropped += not taken
                return taken
            pending = self._down.get(key)
            if not pending:
                return True  # a release with nothing down: harmless, and the engine's to judge
            taken = pending.pop(0)
            if not pending:
                del self._down[key]
            self.dropped += not taken
            return taken
        if (
            kind == _CONTROL_CHANGE
            and len(data) >= 3
            and (data[1] in _SILENCING or (data[1] == _SUSTAIN and data[2] < 64))
        ):
            return True
        if self._messages.take(t_ns):
            return True
        self.dropped += 1
        return False
