"""Offline performance: the same engine on a manual clock, as fast as inference allows.

Context: setup/control (no real-time thread). A render of a given seed phrase,
model and ``rng_seed`` is deterministic: time advances in fixed steps of
virtual time, and the scheduler sends on that virtual clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from livegen.engine.callresponse import CallResponsePlanner, CallResponseSettings
from livegen.engine.clock import ManualClock
from livegen.engine.live import LiveParams
from livegen.engine.scheduler import Scheduler, Sent
from livegen.engine.session import MODEL_TRACK, PERFORMER_TRACK, Engine
from livegen.io.recorder import MidiRecorder
from livegen.models.sampling import SamplingParams
from livegen.models.step import StepGenerator
from livegen.music.events import Note, notes_to_events
from livegen.music.time import PPQN, TempoMap


@dataclass(frozen=True, slots=True)
class Performance:
    """What an offline performance produced: both parts, and every message with its time."""

    performer: list[Note]
    model: list[Note]
    sent: list[Sent]  # deadlines in ns from tick 0
    tempo: TempoMap
    end_ns: int


def render_call_response(
    generator: StepGenerator,
    seed_notes: tuple[Note, ...] | list[Note],
    *,
    tempo: TempoMap,
    params: SamplingParams,
    rng_seed: int,
    settings: CallResponseSettings,
    response_bars: int = 4,
    echo_channel: int | None = 1,
    step_ticks: int = 10,
) -> Performance:
    """Play ``seed_notes`` as the performer and let the model answer once."""
    clock = ManualClock(tempo)
    scheduler = Scheduler([[], []], tick_of=clock.ns_to_tick, now_ns=clock.now_ns)
    recorder = MidiRecorder((PERFORMER_TRACK, MODEL_TRACK))
    live = LiveParams(sampling=params, response_bars=response_bars)
    planner = CallResponsePlanner(generator, live, np.random.default_rng(rng_seed), settings)
    engine = Engine(planner, clock, scheduler, recorder, echo_channel=echo_channel, keep_sent=True)
    events = notes_to_events(seed_notes)
    last = events[-1].tick if events else 0
    index, tick = 0, 0
    response_beats = settings.silence_beats + response_bars * settings.beats_per_bar + 8
    limit = last + round(response_beats * PPQN)
    while tick <= limit:
        clock.set_tick(tick)
        while index < len(events) and events[index].tick <= tick:
            engine.on_midi(tuple(events[index].bytes()), clock.tick_to_ns(events[index].tick))
            index += 1
        engine.step()
        scheduler.run_until(clock.now_ns())
        if index == len(events) and planner.responses >= 1 and not planner.busy:
            break
        tick += step_ticks
    engine.finish()
    end_ns = clock.now_ns()
    return Performance(
        performer=recorder.notes(PERFORMER_TRACK),
        model=recorder.notes(MODEL_TRACK),
        sent=engine.sent,
        tempo=tempo,
        end_ns=end_ns,
    )
