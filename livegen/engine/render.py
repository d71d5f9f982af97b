"""Offline performance: the same engine on a manual clock, as fast as inference allows.

Context: setup/control (no real-time thread). A render of a given seed phrase,
model and ``rng_seed`` is deterministic: time advances in fixed steps of
virtual time, and the scheduler sends on that virtual clock. While nothing is
planned, held or pending, time moves straight to the step of the next performed
message, so a render's cost follows its notes, not the length of the pauses
between them (a seed file may hold a pause of billions of ticks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from livegen.engine.accompany import AccompanyPlanner, AccompanySettings
from livegen.engine.callresponse import CallResponsePlanner, CallResponseSettings
from livegen.engine.clock import ManualClock
from livegen.engine.live import LiveParams
from livegen.engine.planner import Planner
from livegen.engine.scheduler import Scheduler, Sent
from livegen.engine.session import MODEL_TRACK, PERFORMER_TRACK, Engine
from livegen.io.recorder import MidiRecorder
from livegen.models.sampling import SamplingParams
from livegen.models.step import StepGenerator
from livegen.music.events import MidiEvent, Note, notes_to_events
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
    live = LiveParams(sampling=params, response_bars=response_bars)
    planner = CallResponsePlanner(generator, live, np.random.default_rng(rng_seed), settings)
    events = notes_to_events(seed_notes)
    last = events[-1].tick if events else 0
    response_beats = settings.silence_beats + response_bars * settings.beats_per_bar + 8
    return _perform(
        planner,
        events,
        tempo=tempo,
        limit=last + round(response_beats * PPQN),
        done=lambda: planner.responses >= 1 and not planner.busy,
        echo_channel=echo_channel,
        step_ticks=step_ticks,
    )


def render_accompany(
    generator: StepGenerator,
    performed: tuple[Note, ...] | list[Note],
    *,
    tempo: TempoMap,
    params: SamplingParams,
    rng_seed: int,
    settings: AccompanySettings,
    until: int,
    echo_channel: int | None = 1,
    step_ticks: int = 10,
) -> Performance:
    """Play ``performed`` as the performer while the model accompanies it, up to tick ``until``."""
    live = LiveParams(sampling=params)
    planner = AccompanyPlanner(generator, live, np.random.default_rng(rng_seed), settings)
    return _perform(
        planner,
        notes_to_events(performed),
        tempo=tempo,
        limit=until,
        done=lambda: False,
        echo_channel=echo_channel,
        step_ticks=step_ticks,
    )


def _perform(
    planner: Planner,
    events: list[MidiEvent],
    *,
    tempo: TempoMap,
    limit: int,
    done: Callable[[], bool],
    echo_channel: int | None,
    step_ticks: int,
) -> Performance:
    """Feed ``events`` to ``planner`` on a manual clock in steps of ``step_ticks`` until ``limit`` or ``done()``."""
    clock = ManualClock(tempo)
    scheduler = Scheduler([[], []], tick_of=clock.ns_to_tick, now_ns=clock.now_ns)
    recorder = MidiRecorder((PERFORMER_TRACK, MODEL_TRACK))
    engine = Engine(planner, clock, scheduler, recorder, echo_channel=echo_channel, keep_sent=True)
    index, tick = 0, 0
    while tick <= limit:
        clock.set_tick(tick)
        while index < len(events) and events[index].tick <= tick:
            engine.on_midi(tuple(events[index].bytes()), clock.tick_to_ns(events[index].tick))
            index += 1
        engine.step()
        scheduler.run_until(clock.now_ns())
        if index == len(events) and done():
            break
        tick += step_ticks
        if index < len(events) and not planner.busy and not scheduler.pending:
            tick = max(tick, events[index].tick // step_ticks * step_ticks)  # idle: skip to the next message
    engine.finish()
    return Performance(
        performer=recorder.notes(PERFORMER_TRACK),
        model=recorder.notes(MODEL_TRACK),
        sent=engine.sent,
        tempo=tempo,
        end_ns=clock.now_ns(),
    )
