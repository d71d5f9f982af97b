"""Live control on a manual clock: CC parameters, mode switches, panic, takes and model hot-swap.

Everything runs through the real Engine, Scheduler and ClockMaster into memory outputs,
so the checks are on the exact messages a port would have carried.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from livegen.engine.accompany import AccompanyPlanner, AccompanySettings
from livegen.engine.callresponse import CallResponsePlanner, CallResponseSettings
from livegen.engine.clock import ManualClock
from livegen.engine.clockout import ClockMaster
from livegen.engine.conductor import Conductor
from livegen.engine.controls import ControlChange, parse_controls
from livegen.engine.live import Generations, LiveParams
from livegen.engine.planner import Planner
from livegen.engine.scheduler import Scheduler
from livegen.engine.session import MODEL_TRACK, PERFORMER_TRACK, Engine
from livegen.engine.swap import SwappableGenerator
from livegen.errors import ConfigError
from livegen.io.base import MemoryOutput
from livegen.io.recorder import MidiRecorder
from livegen.models.step import StepEvent
from livegen.music.time import PPQN, TempoMap
from tests.fakes import CountingGenerator, ScriptedGenerator

TEMPO = TempoMap.constant(120)
MODES = ("call-response", "accompany")
CONTROLS = parse_controls(
    {"temperature": 21, "density": 23, "mode": 25, "model": 26, "panic": 27, "record": 28, "models": ["a", "b"]},
    "test",
)


class Rig:
    """An engine on a manual clock with a conductor over a swappable scripted model."""

    def __init__(self, mode: str = "accompany", loader=None) -> None:
        self.clock = ManualClock(TEMPO)
        self.out = MemoryOutput(clock=self.clock.now_ns)
        self.clock_port = MemoryOutput(clock=self.clock.now_ns)
        self.scheduler = Scheduler(
            [[self.out], [], [self.clock_port]], tick_of=self.clock.ns_to_tick, now_ns=self.clock.now_ns
        )
        self.live = LiveParams(response_bars=2)
        self.model = SwappableGenerator(ScriptedGenerator([StepEvent(67, 240, 240)]), "a")
        generations = Generations()
        rng = np.random.default_rng(0)

        def make(name: str) -> Planner:
            if name == "accompany":
                return AccompanyPlanner(self.model, self.live, rng, AccompanySettings(listen_beats=0), generations)
            return CallResponsePlanner(self.model, self.live, rng, CallResponseSettings(silence_beats=1), generations)

        self.conductor = Conductor(
            make, mode, self.model, self.live, modes=MODES, load_model=loader, controls=CONTROLS.handle
        )
        self.recorder = MidiRecorder((PERFORMER_TRACK, MODEL_TRACK))
        self.takes = 0
        self.engine = Engine(
            self.conductor,
            self.clock,
            self.scheduler,
            self.recorder,
            clock_out=ClockMaster(),
            on_save_take=self._take,
        )

    def _take(self) -> None:
        self.takes += 1

    def send(self, tick: int, data: tuple[int, ...]) -> None:
        self.engine.on_midi(data, self.clock.tick_to_ns(tick))

    def run(self, start: int, stop: int, step: int = 10) -> None:
        for tick in range(start, stop, step):
            self.clock.set_tick(tick)
            self.engine.step()
            self.scheduler.run_until(self.clock.now_ns())

    def model_messages(self) -> list[tuple[int, tuple[int, ...]]]:
        return [(self.clock.ns_to_tick(t), m) for t, m in self.out.messages]

    def sounding(self) -> Counter:
        held: Counter = Counter()
        for _, m in self.out.messages:
            if m[0] & 0xF0 == 0x90 and m[2] > 0:
                held[m[1]] += 1
            elif m[0] & 0xF0 == 0x80 or (m[0] & 0xF0 == 0x90 and m[2] == 0):
                held[m[1]] = max(0, held[m[1]] - 1)
        return +held


def note_ons(rig: Rig) -> list[tuple[int, int]]:
    return [(t, m[1]) for t, m in rig.model_messages() if m[0] & 0xF0 == 0x90 and m[2] > 0]


def test_cc_sets_live_parameters_and_is_not_heard_by_the_model():
    rig = Rig()
    rig.send(0, (0xB0, 21, 96))  # temperature 2 ** ((96 - 64) / 32) = 2.0
    rig.send(0, (0xB0, 23, 32))  # density 0.5
    rig.run(0, 20)
    assert rig.live.sampling.temperature == 2.0 and rig.live.density == 0.5
    assert rig.model.current.fed_events == []  # type: ignore[attr-defined]
    assert rig.recorder.notes(PERFORMER_TRACK) == []


def test_mode_switch_by_cc_silences_the_old_mode():
    rig = Rig("accompany")
    rig.send(0, (0x90, 60, 100))
    rig.send(240, (0x80, 60, 0))
    rig.run(0, 1000)
    assert note_ons(rig)
    rig.send(1000, (0xB0, 25, 0))  # call-response
    rig.run(1000, 4000)
    assert rig.conductor.mode == "call-response"
    assert all(t < 1000 + 2 * PPQN for t, _ in note_ons(rig))  # the accompaniment stopped (pending withdrawn)
    assert not rig.sounding()


def test_panic_silences_everything_and_record_saves_a_take():
    rig = Rig("accompany")
    rig.send(0, (0x90, 60, 100))
    rig.run(0, 500)
    rig.send(500, (0xB0, 27, 127))
    rig.send(500, (0xB0, 28, 127))
    rig.run(500, 3000)
    assert not any(t > 500 for t, _ in note_ons(rig))
    assert not rig.sounding()
    assert (0xB0, 123, 0) in [m for _, m in rig.out.messages]  # all notes off on the model's channel
    assert rig.takes == 1


def test_hot_swap_keeps_committed_notes_leaves_none_sounding_and_never_stops_the_clock():
    new = CountingGenerator(base=40)
    rig = Rig("accompany")
    rig.send(0, (0x90, 60, 100))
    rig.send(200, (0x80, 60, 0))
    rig.run(0, 1200)
    before = note_ons(rig)
    committed_until = rig.conductor.planner.line.committed_until  # type: ignore[attr-defined]
    rig.conductor.swap_now("b", new)
    rig.run(1200, 5000)
    ons = note_ons(rig)
    assert ons[: len(before)] == before
    old = [(t, p) for t, p in ons if t < committed_until]
    fresh = [(t, p) for t, p in ons if t >= committed_until]
    assert {p for _, p in old} == {67}  # what was committed before the swap played as planned
    assert fresh and all(p != 67 for _, p in fresh)  # the new model plays from the commit horizon
    assert new.fed_events[0].pitch == 60  # primed with the recent context, the performer first
    rig.engine.finish()
    assert not rig.sounding()
    pulses = [rig.clock.ns_to_tick(t) for t, m in rig.clock_port.messages if m == (0xF8,)]
    assert pulses == list(range(0, pulses[-1] + 1, PPQN // 24))  # 24 per beat, none missed across the swap


def test_model_cc_loads_in_the_background_and_reports_a_failure_without_stopping():
    def loader(name: str):
        if name == "b":
            raise ConfigError("model 'b': no such package; bundled: a")
        return CountingGenerator()

    rig = Rig("accompany", loader=loader)
    rig.send(0, (0x90, 60, 100))
    rig.run(0, 200)
    rig.send(200, (0xB0, 26, 127))  # models[1] = "b"
    rig.run(200, 210)
    rig.conductor.wait_loaded()
    rig.run(210, 3000)
    assert rig.conductor.model == "a"
    assert any("model b failed" in e and "no such package" in e for e in rig.conductor.events)
    assert note_ons(rig)  # still playing


def test_typed_command_posts_are_applied_on_the_control_thread():
    rig = Rig("accompany")
    rig.conductor.post(ControlChange("response_bars", 8))
    rig.conductor.post(ControlChange("mode", "call-response"))
    rig.run(0, 20)
    assert rig.live.response_bars == 8 and rig.conductor.mode == "call-response"
    with pytest.raises(ConfigError, match="mode 'solo': expected one of call-response, accompany"):
        rig.conductor.apply(ControlChange("mode", "solo"))


def test_a_late_first_step_starts_midi_clock_on_the_next_sixteenth():
    rig = Rig()
    rig.run(14, 400)  # the first control step comes 14 ticks after the clock started
    clock = [(rig.clock.ns_to_tick(t), m) for t, m in rig.clock_port.messages if m[0] in (0xF2, 0xFA, 0xFB)]
    # Song Position 1 (a 16th) and Continue, sent at the first control step from tick 120
    assert [m for _, m in clock[:2]] == [(0xF2, 1, 0), (0xFB,)]
    assert 120 <= clock[0][0] < 130
