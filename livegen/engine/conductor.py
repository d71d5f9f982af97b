"""The conductor: the follow mode playing now, and everything a performer changes live.

Context: control (the planner's thread), except :meth:`Conductor.post`, which any
thread may call (a typed command, a model loaded in the background).

The conductor is the planner the engine drives. It passes performed notes and
time to the current mode's planner and steers it: control changes (from the
control map's CCs or from typed commands) set live parameters, switch mode
(the old planner is silenced, the new one shares the model and the live
parameters), fire panic or save a take, and switch model. A model switch loads
the package on a background thread so the clock and the scheduler never wait
for it; once loaded it replaces the model inside the :class:`SwappableGenerator`
primed with the recent context, and what is planned but not committed is sampled
afresh. Committed notes keep playing and carry their note-offs, so no note is
left sounding.

A model run refused by its budget (:mod:`livegen.models.budget`: over its time or
memory, or NaN in its outputs) ends the planner's call it was made in: that step is
skipped, counted in :attr:`Conductor.skipped_steps` and logged (the 1st, 2nd, 4th,
8th... and every 1000th), and the next call plans on.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from livegen.engine.controls import ControlChange
from livegen.engine.keyfollow import KeyFollower
from livegen.engine.live import LiveParams
from livegen.engine.planner import Action, Commit, Panic, Planner, PlannerReport, SaveTake
from livegen.engine.swap import SwappableGenerator
from livegen.errors import ConfigError, InferenceSkipped, LivegenError
from livegen.models.step import StepGenerator
from livegen.music.events import CONTROL_CHANGE, MidiEvent

log = logging.getLogger(__name__)

NUMERIC = ("temperature", "top_p", "density", "response_bars")
CONTROL_NAMES = (*NUMERIC, "mode", "model", "panic", "record")


@dataclass(frozen=True, slots=True)
class _Loaded:
    name: str
    generator: StepGenerator | None
    error: str | None


class Conductor(Planner):
    """A :class:`Planner` that hosts the current mode's planner and applies live controls."""

    def __init__(
        self,
        make_planner: Callable[[str], Planner],
        mode: str,
        generator: SwappableGenerator,
        live: LiveParams,
        *,
        modes: tuple[str, ...],
        load_model: Callable[[str], StepGenerator] | None = None,
        controls: Callable[[MidiEvent], list[ControlChange]] | None = None,
        key_follower: KeyFollower | None = None,
    ) -> None:
        if mode not in modes:
            raise ConfigError(f"mode {mode!r}: expected one of {', '.join(modes)}")
        self.make_planner = make_planner
        self.modes = modes
        self.mode = mode
        self.generator = generator
        self.live = live
        self.load_model = load_model
        self.controls = controls
        self.key_follower = key_follower
        self.planner = make_planner(mode)
        self.model = generator.name
        self.loading: str | None = None
        self.events: list[str] = []  # what changed, for the jam's report
        self.skipped_steps = 0  # planner calls ended by a model run its budget refused
        self._posted: queue.SimpleQueue[ControlChange | _Loaded] = queue.SimpleQueue()
        self._loader: threading.Thread | None = None

    # ---- any thread ---------------------------------------------------------------

    def post(self, change: ControlChange) -> None:
        """Queue a control change for the control thread (typed commands, other threads)."""
        self._posted.put(change)

    # ---- Planner ------------------------------------------------------------------

    @property
    def responses(self) -> int:
        return self.planner.responses

    @property
    def busy(self) -> bool:
        return self.planner.busy or self.loading is not None

    @property
    def programs(self) -> dict[int, int] | None:
        """MIDI channel -> GM program of the current model's tracks (a multi-track model's), else None."""
        return self.generator.programs

    def _skipping(self, call: Callable[[], list[Action]]) -> list[Action]:
        """``call()``, or no actions when a model run it made was refused (counted and logged)."""
        try:
            return call()
        except InferenceSkipped as err:
            self._skipped(err)
            return []

    def _skipped(self, err: InferenceSkipped) -> None:
        self.skipped_steps += 1
        count = self.skipped_steps
        if count & (count - 1) == 0 or count % 1000 == 0:  # the 1st, 2nd, 4th, 8th... and every 1000th
            log.warning("model %s: %s (%d step(s) skipped so far)", self.model, err, count)

    def on_input(self, event: MidiEvent) -> list[Action]:
        return self._skipping(partial(self._on_input, event))

    def _on_input(self, event: MidiEvent) -> list[Action]:
        if self.controls is not None and event.kind == CONTROL_CHANGE:
            changes = self.controls(event)
            if changes:
                return [a for change in changes for a in self.apply(change)]
        if self.key_follower is not None:
            self.key_follower.observe_performed(event)
        return self.planner.on_input(event)

    def advance(self, now_tick: int) -> list[Action]:
        actions: list[Action] = []
        while True:
            try:
                item = self._posted.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Loaded):
                actions += self._skipping(partial(self._swap, item))
            else:
                actions += self._skipping(partial(self.apply, item))
        planned = self._skipping(partial(self.planner.advance, now_tick))
        if self.key_follower is not None:
            self.key_follower.observe_committed(e for a in planned if isinstance(a, Commit) for e in a.events)
            self.key_follower.update(now_tick)
        return actions + planned

    def plan_ahead(self, now_tick: int) -> None:
        """The planner's work beyond the commit horizon (see ``Planner.plan_ahead``)."""
        try:
            self.planner.plan_ahead(now_tick)
        except InferenceSkipped as err:
            self._skipped(err)

    def report(self) -> PlannerReport:
        return PlannerReport(tuple(self.events), self.planner.report().reseeds)

    def silence(self) -> list[Action]:
        return self._skipping(self.planner.silence)

    def resume(self, tick: int) -> list[Action]:
        return self._skipping(lambda: self.planner.resume(tick))

    def replan(self) -> None:
        try:
            self.planner.replan()
        except InferenceSkipped as err:
            self._skipped(err)

    # ---- controls -----------------------------------------------------------------

    def apply(self, change: ControlChange) -> list[Action]:
        """Apply one control change now; the actions it causes."""
        name, value = change.name, change.value
        if name in NUMERIC:
            assert isinstance(value, (int, float)) and not isinstance(value, bool)
            was = self.live.set(name, float(value))
            self.events.append(f"{name} = {was:g}")
            return []
        if name == "mode":
            return self.switch_mode(str(value))
        if name == "model":
            self.request_model(str(value))
            return []
        if name == "panic":
            self.events.append("panic")
            return [*self.planner.silence(), Panic()]
        if name == "record":
            self.events.append("take saved")
            return [SaveTake()]
        raise ConfigError(f"control {name!r}: expected one of {', '.join(CONTROL_NAMES)}")

    def switch_mode(self, mode: str) -> list[Action]:
        if mode not in self.modes:
            raise ConfigError(f"mode {mode!r}: expected one of {', '.join(self.modes)}")
        if mode == self.mode:
            return []
        actions = self.planner.silence()
        self.planner = self.make_planner(mode)
        self.mode = mode
        self.events.append(f"mode = {mode}")
        return actions

    # ---- model swap ---------------------------------------------------------------

    def request_model(self, name: str) -> None:
        """Start loading ``name`` in the background; it takes over when ready (one load at a time)."""
        if self.load_model is None or name == self.model or name == self.loading:
            return
        if self._loader is not None and self._loader.is_alive():
            log.warning("model %s: still loading %s; ignored", name, self.loading)
            return
        self.loading = name
        loader = self.load_model

        def load() -> None:  # background thread: never touches the planner
            try:
                self._posted.put(_Loaded(name, loader(name), None))
            except LivegenError as err:
                self._posted.put(_Loaded(name, None, str(err)))
            except Exception as err:  # a broken package must not end the performance
                self._posted.put(_Loaded(name, None, f"model {name}: could not be loaded ({err!r})"))

        self._loader = threading.Thread(target=load, name=f"livegen-load-{name}", daemon=True)
        self._loader.start()

    def swap_now(self, name: str, generator: StepGenerator) -> list[Action]:
        """Replace the model at once (tests, and the background load's arrival)."""
        return self._swap(_Loaded(name, generator, None))

    def _swap(self, loaded: _Loaded) -> list[Action]:
        self.loading = None
        if loaded.generator is None:
            log.warning("%s; still playing %s", loaded.error, self.model)
            self.events.append(f"model {loaded.name} failed: {loaded.error}")
            return []
        try:
            self.generator.swap(loaded.generator, loaded.name)  # primes the new model: it runs
        except InferenceSkipped as err:
            log.warning("model %s: %s; still playing %s", loaded.name, err, self.model)
            self.events.append(f"model {loaded.name} failed: {err}")
            return []
        self.planner.replan()
        self.model = loaded.name
        self.events.append(f"model = {loaded.name}")
        return []

    def wait_loaded(self, timeout: float = 30.0) -> None:
        """Block until a background load has finished (tests, offline renders)."""
        if self._loader is not None:
            self._loader.join(timeout)
