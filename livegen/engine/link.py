"""Ableton Link as a clock source: tick 0 is Link beat 0 of the session's timeline.

Contexts: the constructor and :meth:`LinkClock.close` are setup; :meth:`LinkClock.poll`
and the properties run on the control thread (every few ms); ``tick_to_ns`` and
``ns_to_tick`` on any thread (the scheduler's). Link itself runs in the ``aalink``
package (Ableton's Link library behind an asyncio interface), whose event loop lives
in a daemon thread started here; livegen never awaits on it, it samples the session.

Each :meth:`~LinkClock.poll` reads Link's beat and tempo, bracketed by
``perf_counter_ns`` so the sample's wall time is known to within the call, and
publishes a new :class:`~livegen.engine.clock.ClockMapping` (one immutable tuple, one
assignment) with a higher ``version`` when the tempo changed or the session's beat has
moved more than ``retime_tolerance_ns`` from where the current mapping puts it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from livegen.engine.clock import ClockMapping, MappedClock, bpm_to_ns_per_tick
from livegen.errors import BackendUnavailableError
from livegen.music.time import PPQN

INSTALL_HINT = "pip install 'livegen[link]'"


def _import_aalink() -> Any:
    try:
        import aalink
    except ImportError as err:
        raise BackendUnavailableError(
            f"Ableton Link needs the Python package aalink, which is not installed ({err}): {INSTALL_HINT}"
        ) from err
    return aalink


class LinkClock(MappedClock):
    """A :class:`~livegen.engine.clock.Clock` following an Ableton Link session.

    ``bpm`` is the tempo proposed when this peer starts a session (a session already
    running keeps its own). ``quantum`` is Link's phase length in beats (4: peers align
    bars). With ``start_stop_sync`` the session's play state is ``running``; without,
    the clock always runs.
    """

    def __init__(
        self,
        bpm: float = 120.0,
        *,
        quantum: float = 4.0,
        start_stop_sync: bool = False,
        retime_tolerance_ns: int = 1_000_000,
        timeout: float = 5.0,
    ) -> None:
        if not 20.0 <= bpm <= 999.0:
            raise ValueError(f"Link tempo {bpm} BPM is outside what Link accepts (20 to 999 BPM)")
        aalink = _import_aalink()
        self._tolerance = retime_tolerance_ns
        self._start_stop_sync = start_stop_sync
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="livegen-link", daemon=True)
        self._thread.start()

        async def create() -> Any:
            link = aalink.Link(bpm)  # takes the running loop (this thread's)
            link.quantum = quantum
            link.start_stop_sync_enabled = start_stop_sync
            link.enabled = True
            return link

        try:
            self._link = asyncio.run_coroutine_threadsafe(create(), self._loop).result(timeout)
        except Exception as err:
            self._stop_loop()
            raise BackendUnavailableError(f"Ableton Link (aalink) could not start: {err}") from err
        self._playing = True
        self._bpm = bpm
        self._mapping = ClockMapping(time.perf_counter_ns(), 0, bpm_to_ns_per_tick(bpm), 0)
        self._mapping = self._sample()._replace(version=1)

    # ---- control thread -----------------------------------------------------------

    def now_ns(self) -> int:
        return time.perf_counter_ns()

    def now_tick(self) -> int:
        return self.ns_to_tick(time.perf_counter_ns())

    @property
    def running(self) -> bool:
        """The session's play state with start/stop sync, else always true (as of the last poll)."""
        return self._playing

    @property
    def num_peers(self) -> int:
        """Other Link peers in the session."""
        return int(self._link.num_peers)

    def beat(self) -> float:
        """Link's beat now (read from the session, not the mapping)."""
        return float(self._link.beat)

    def set_tempo(self, bpm: float) -> None:
        """Propose ``bpm`` to the session (every peer follows); the next poll maps it."""
        if not 20.0 <= bpm <= 999.0:
            raise ValueError(f"Link tempo {bpm} BPM is outside what Link accepts (20 to 999 BPM)")
        self._link.tempo = bpm

    def _sample(self) -> ClockMapping:
        link = self._link
        before = time.perf_counter_ns()
        beat = link.beat
        after = time.perf_counter_ns()
        bpm = float(link.tempo)
        self._bpm = bpm
        if self._start_stop_sync:
            self._playing = bool(link.playing)
        ns_per_tick = bpm_to_ns_per_tick(bpm)
        exact_tick = beat * PPQN
        tick = round(exact_tick)
        anchor_ns = (before + after) // 2 + round((tick - exact_tick) * ns_per_tick)
        return ClockMapping(anchor_ns, tick, ns_per_tick, self._mapping.version)

    def poll(self) -> bool:
        """Sample the session and publish a new mapping if it moved; True when ``version`` rose.

        Control thread, every few ms.
        """
        new = self._sample()
        old = self._mapping
        moved = (
            abs(new.ns_per_tick - old.ns_per_tick) > 1e-9 * old.ns_per_tick
            or abs(old.tick_to_ns(new.anchor_tick) - new.anchor_ns) > self._tolerance
        )
        if moved:
            self._mapping = new._replace(version=old.version + 1)
        return moved

    def close(self) -> None:
        """Leave the session and stop the event loop's thread (setup)."""
        link = getattr(self, "_link", None)
        if link is not None:
            link.enabled = False
        self._stop_loop()

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=2.0)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> LinkClock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
