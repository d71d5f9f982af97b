"""A flood of performed messages: cut to a human rate, counted, marked, and it never stops the clock."""

from __future__ import annotations

import mido
import numpy as np
import pytest

from livegen.engine import session
from livegen.engine.accompany import AccompanyPlanner, AccompanySettings
from livegen.engine.admission import InputAdmission
from livegen.engine.clock import ManualClock
from livegen.engine.clockout import ClockMaster
from livegen.engine.live import LiveParams
from livegen.engine.scheduler import Scheduler
from livegen.engine.session import MODEL_TRACK, PERFORMER_TRACK, Engine
from livegen.io.base import MemoryOutput
from livegen.io.recorder import MidiRecorder
from livegen.music.events import decode_message
from livegen.music.held import HeldNotes
from livegen.music.time import TempoMap
from tests.fakes import CountingGenerator

MS = 1_000_000


def flood(per_s: int, seconds: float, start_ns: int = 10**9) -> list[tuple[tuple[int, ...], int]]:
    """Note-on and note-off pairs over the keyboard at ``per_s`` note-ons a second, each released 0.5 ms on."""
    step = 10**9 // per_s
    out = []
    for i in range(int(per_s * seconds)):
        t, pitch = start_ns + i * step, 36 + i % 61
        out += [((0x90, pitch, 100), t), ((0x80, pitch, 0), t + step // 2)]
    return out


def still_down(messages: list[tuple[int, ...]]) -> int:
    held = HeldNotes()
    for data in messages:
        event = decode_message(0, data)
        if event is not None:
            held.observe(event)
    return len(held)


def test_what_a_person_plays_passes_whole() -> None:
    admission = InputAdmission()
    played = []
    for chord in range(50):  # a ten-note chord every 100 ms for 5 s, with the pedal, then a run at 30 notes/s
        t = 10**9 + chord * 100 * MS
        played += [((0x90, 48 + k, 90), t + k * MS) for k in range(10)]
        played += [((0xB0, 64, 127), t + 20 * MS), ((0xB0, 1, chord), t + 30 * MS)]
        played += [((0x80, 48 + k, 0), t + 80 * MS) for k in range(10)] + [((0xB0, 64, 0), t + 90 * MS)]
    played += flood(30, 5.0, start_ns=6 * 10**9)
    assert all(admission.admit(data, t) for data, t in sorted(played, key=lambda m: m[1]))
    assert admission.dropped == 0


def test_a_flood_is_cut_to_a_human_rate_counted_and_leaves_no_note_down() -> None:
    admission = InputAdmission(note_ons_per_s=200, note_on_burst=100)
    messages = flood(10_000, 3.0)
    taken = [data for data, t in messages if admission.admit(data, t)]
    note_ons = sum(1 for d in taken if d[0] == 0x90)
    assert 100 + 200 * 3 - 5 <= note_ons <= 100 + 200 * 3 + 5  # the burst, then 200 a second
    assert admission.dropped == len(messages) - len(taken)
    assert still_down(taken) == 0  # every note-on taken was released; no refused release came through


def test_releases_silencers_and_clock_pass_through_a_flood_of_controllers() -> None:
    admission = InputAdmission(messages_per_s=1000, message_burst=200)
    t = 10**9
    for i in range(5000):  # 5,000 mod-wheel messages in 50 ms: the burst of 200, then 1,000 a second
        admission.admit((0xB0, 1, i % 128), t + i * 10_000)
    end = t + 50 * MS
    assert not admission.admit((0xB0, 1, 3), end)
    assert not admission.admit((0xE0, 0, 64), end)  # pitch bend: refused with the controllers
    assert admission.admit((0xB0, 64, 0), end)  # sustain released
    assert admission.admit((0xB0, 123, 0), end) and admission.admit((0xB0, 120, 0), end)  # all notes / sound off
    assert admission.admit((0xF8,), end) and admission.admit((0xFA,), end)  # MIDI clock, start
    assert 5000 - 251 + 2 <= admission.dropped <= 5000 - 249 + 2  # about 250 of them taken


def test_a_release_pairs_with_the_oldest_note_on_of_its_key() -> None:
    admission = InputAdmission(note_ons_per_s=1, note_on_burst=1)
    t = 10**9
    assert admission.admit((0x90, 60, 100), t)  # taken: the burst
    assert not admission.admit((0x90, 60, 100), t + 1)  # the same key again, refused
    assert admission.admit((0x80, 60, 0), t + 2)  # releases the one taken
    assert not admission.admit((0x80, 60, 0), t + 3)  # the refused one's release goes with it
    assert admission.admit((0x80, 60, 0), t + 4)  # a stray release: the engine's to judge
    assert admission.dropped == 2


class Rig:
    """An engine with the jam's admission on a manual clock, accompanying, and sending MIDI clock."""

    def __init__(self) -> None:
        self.clock = ManualClock(TempoMap.constant(120))
        self.out = MemoryOutput(clock=self.clock.now_ns)
        self.clock_port = MemoryOutput(clock=self.clock.now_ns)
        self.scheduler = Scheduler(
            [[self.out], [], [self.clock_port]], tick_of=self.clock.ns_to_tick, now_ns=self.clock.now_ns
        )
        self.generator = CountingGenerator()
        planner = AccompanyPlanner(
            self.generator, LiveParams(), np.random.default_rng(0), AccompanySettings(listen_beats=0)
        )
        self.recorder = MidiRecorder((PERFORMER_TRACK, MODEL_TRACK))
        self.engine = Engine(
            planner, self.clock, self.scheduler, self.recorder, clock_out=ClockMaster(), admission=InputAdmission()
        )

    def run(self, start: int, stop: int, step: int = 10, messages=()) -> None:
        """Step every ``step`` ticks; each message arrives (``on_midi``) when its time has come."""
        pending = sorted(messages, key=lambda m: m[1])
        for tick in range(start, stop, step):
            self.clock.set_tick(tick)
            now = self.clock.now_ns()
            while pending and pending[0][1] <= now:
                self.engine.on_midi(*pending.pop(0))
            self.engine.step()
            self.scheduler.run_until(now)


def test_a_flood_never_stops_the_clock_and_the_recording_marks_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(session, "FLOOD_OVER_NS", 0)  # over at the first step without a drop
    rig = Rig()
    messages = flood(10_000, 2.0, start_ns=rig.clock.tick_to_ns(960))  # 2 s from beat 2: 40,000 messages
    rig.run(0, 960 + 6 * 480, messages=messages)  # to beat 8
    pulses = [rig.clock.ns_to_tick(t) for t, m in rig.clock_port.messages if m == (0xF8,)]
    assert pulses == list(range(pulses[0], pulses[0] + 20 * len(pulses), 20))  # 24 a beat, none missed
    assert pulses[-1] >= 960 + 6 * 480 - 20
    engine = rig.engine
    assert 0 < engine.input_dropped == len(messages) - 2 * len(rig.recorder.notes(PERFORMER_TRACK))
    assert len(rig.recorder.notes(PERFORMER_TRACK)) <= 100 + 200 * 2 + 5  # what the planner had to hear
    rig.recorder.save(tmp_path / "take.mid", TempoMap.constant(120))
    markers = [m.text for m in mido.MidiFile(tmp_path / "take.mid").tracks[0] if m.type == "marker"]
    assert markers[0] == "livegen: input flood, performed messages dropped"
    assert markers[1] == f"livegen: input flood over, {engine.input_dropped} messages dropped so far"


@pytest.mark.parametrize("per_step", [1, 3])
def test_a_control_step_takes_a_bounded_share_of_waiting_input(monkeypatch, per_step) -> None:
    monkeypatch.setattr(session, "INPUTS_PER_STEP", per_step)
    rig = Rig()
    rig.engine.admission = None  # a burst within any rate: the step's bound is what is tested
    for i in range(10):
        rig.engine.on_midi((0xB0, 1, i), rig.clock.tick_to_ns(0))
    rig.clock.set_tick(0)
    rig.engine.step()
    assert rig.engine._inbox.qsize() == 10 - per_step


def test_a_rolling_recordings_markers_go_into_the_part_they_fall_in(tmp_path) -> None:
    from livegen.io.recorder import RollingRecording

    recording = RollingRecording(tmp_path / "take.mid", TempoMap.constant(120), part_ticks=1920)
    recording.mark(100, "first")
    recording.mark(2500, "second")
    part = recording.cut(1920, 1920)
    later = recording.write()

    def markers(path):
        out, tick = [], 0
        for m in mido.MidiFile(path).tracks[0]:
            tick += m.time
            if m.type == "marker":
                out.append((tick, m.text))
        return out

    assert markers(part) == [(100, "first")]
    assert markers(later) == [(2500 - 1920, "second")]
