"""The Ableton Link clock: a session with itself on this machine, and the missing-package error."""

from __future__ import annotations

import sys
import time

import pytest

from livegen.engine.clock import Clock
from livegen.errors import BackendUnavailableError

PEERS_MISSING = "Link peers on this machine did not find each other within 5 s: Link cannot use its sockets here"


def link_clock(bpm):
    pytest.importorskip("aalink", reason="aalink not installed: pip install 'livegen[link]'")
    from livegen.engine.link import LinkClock

    return LinkClock(bpm)


def test_beats_advance_at_the_tempo_set():
    clock = link_clock(100)
    try:
        assert isinstance(clock, Clock)
        assert clock.running and clock.tempo_bpm == pytest.approx(100)
        clock.set_tempo(137)
        assert clock.poll()  # the tempo changed: a new mapping, a higher version
        version = clock.version
        assert clock.tempo_bpm == pytest.approx(137)
        assert clock.mapping.ns_per_tick == pytest.approx(60e9 / (137 * 480))
        before, beat0 = time.perf_counter_ns(), clock.beat()
        time.sleep(0.3)
        after, beat1 = time.perf_counter_ns(), clock.beat()
        assert (beat1 - beat0) * 60e9 / (after - before) == pytest.approx(137, rel=0.01)
        # The mapping agrees with Link's beat now, to well within a millisecond's ticks.
        clock.poll()
        assert abs(clock.now_tick() - clock.beat() * 480) < 10
        assert clock.version == version  # nothing moved: no retime asked for
    finally:
        clock.close()


def test_two_peers_share_one_tempo():
    a = link_clock(100)
    b = link_clock(130)
    try:
        deadline = time.monotonic() + 5
        while (a.num_peers == 0 or b.num_peers == 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        if a.num_peers == 0 or b.num_peers == 0:
            pytest.skip(PEERS_MISSING)
        a.set_tempo(91)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            b.poll()
            if b.tempo_bpm == pytest.approx(91, abs=1e-3):
                break
            time.sleep(0.01)
        assert b.tempo_bpm == pytest.approx(91, abs=1e-3)
        a.poll()
        assert abs(a.beat() - b.beat()) < 0.01  # one timeline
    finally:
        a.close()
        b.close()


def test_missing_aalink_names_the_package_and_the_extra(monkeypatch):
    from livegen.engine.link import LinkClock

    monkeypatch.setitem(sys.modules, "aalink", None)
    with pytest.raises(BackendUnavailableError, match=r"aalink.*pip install 'livegen\[link\]'"):
        LinkClock(120)
