"""Arrival times of input messages from the backend's own delta times, not from when Python read them.

Context: an input's reader thread (:class:`~livegen.io.midi_input.RtMidiInput`); one
:class:`ArrivalStamps` per backend client.

python-rtmidi hands each queued message with the seconds since the message before it,
measured on the backend's thread without Python (RtMidi 5.0.0's JACK backend reads
``jack_get_time()`` in the process callback, once per event). When the time a reader
thread *polls* a message is taken as its arrival, every stall of the interpreter lock
(garbage collection, inference, a flood) moves it: measured with a 48 pulse/s clock
into a JACK input while another thread held the lock for about 60 ms at a time, poll
stamps were up to 103 ms late, the backend's deltas at most 2.7 ms (one period)
(``python -m benchmarks.arrival``). A late, bunched run of clock pulses reads as a tempo change
to the clock follower, and the notes it places move.

The deltas give only differences, so the arrival time is ``sum(deltas) + offset``, and
the reads bound the offset. From above: a message cannot arrive after it was read. From
below: it arrived after the last read that found the queue empty. The offset is the
least upper bound over a window, raised to the latest lower bound. It must move because
deltas get lost: RtMidi measures a delta from the previous message the backend saw,
also one its queue had no room for or one it was told to ignore (so livegen's inputs
ask RtMidi to ignore nothing but SysEx and filter in Python), and on backends whose
clock is not ``perf_counter``'s (WinMM, ALSA's queue) the two drift apart. A lost delta
is caught at the next message read after an empty read; otherwise an upper bound leaves
the window once it is both :data:`WINDOW_MESSAGES` messages and :data:`WINDOW_NS` old,
so a long silence keeps the offset and a stall with a flood behind it does not push it
out. Written by hand: no MIDI library turns delta times back into absolute ones.
"""

from __future__ import annotations

from collections import deque

#: A bound stays in the window for at least this many messages...
WINDOW_MESSAGES = 64
#: ...and at least this long (ns of poll time).
WINDOW_NS = 2_000_000_000


class ArrivalStamps:
    """Turns (delta seconds, read time) per message into arrival times (reader thread).

    :meth:`stamp` returns a time no later than the read, no earlier than the last
    :meth:`found_empty` and no earlier than the stamp before it. :meth:`reset` starts
    over (a new backend client: its deltas start anew).
    """

    def __init__(self, window_messages: int = WINDOW_MESSAGES, window_ns: int = WINDOW_NS) -> None:
        self._window_messages = window_messages
        self._window_ns = window_ns
        self._bounds: deque[tuple[int, int, int]] = deque()  # (message number, poll ns, bound), bounds rising
        self.reset()

    def reset(self) -> None:
        self._bounds.clear()
        self._sum_ns = 0  # the backend's time since its first message
        self._count = 0
        self._last: int | None = None
        self._empty_at: int | None = None

    def found_empty(self, t_ns: int) -> None:
        """The queue was empty when read at ``t_ns`` (taken before the read): what comes next arrived later."""
        self._empty_at = t_ns

    def stamp(self, delta_s: float, poll_ns: int) -> int:
        """The arrival time (perf_counter ns) of a message read at ``poll_ns``."""
        if self._count:
            self._sum_ns += max(0, round(delta_s * 1e9))
        self._count += 1
        bound = poll_ns - self._sum_ns
        bounds = self._bounds
        if self._empty_at is not None:
            least = self._empty_at - self._sum_ns  # the offset is at least this: older bounds below it are stale
            while bounds and bounds[0][2] < least:
                bounds.popleft()
        while bounds and bounds[-1][2] >= bound:
            bounds.pop()
        bounds.append((self._count, poll_ns, bound))
        oldest_kept = self._count - self._window_messages
        while len(bounds) > 1 and bounds[0][0] <= oldest_kept and bounds[0][1] < poll_ns - self._window_ns:
            bounds.popleft()
        t_ns = self._sum_ns + bounds[0][2]
        if self._last is not None and t_ns < self._last:
            t_ns = self._last
        self._last = t_ns
        return t_ns
