"""The control map: CC values to parameter changes, and the errors a bad [controls] table gives.

Expected values are computed by hand from the formulas in the brief, not by the code.
"""

from __future__ import annotations

import tomllib

import pytest
import tomlkit

from livegen.engine.controls import (
    CONTROL_MODES,
    Binding,
    ControlChange,
    ControlMap,
    parse_controls,
)
from livegen.errors import ConfigError
from livegen.music.events import MidiEvent, control_change, decode_message

SOURCE = "presets/mine.toml"
ACCEPTED = "channel, density, mode, model, models, panic, record, response-bars, temperature, top-p"


def cc(number: int, value: int, channel: int = 1) -> MidiEvent:
    return control_change(0, channel - 1, number, value)


def one(table: dict, name: str, number: int = 21) -> ControlMap:
    return parse_controls({name: number, **table}, SOURCE)


def values(control_map: ControlMap, number: int, steps: list[int], channel: int = 1) -> list:
    out = []
    for v in steps:
        out.extend(control_map.handle(cc(number, v, channel)))
    return out


# --- mappings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("v", "expected"),
    [(0, 0.25), (32, 0.5), (64, 1.0), (96, 2.0), (127, 3.914288)],  # 2 ** (63/32) = 4 * 2 ** (-1/32)
)
def test_temperature_doubles_every_32_steps_around_64(v: int, expected: float) -> None:
    [change] = one({}, "temperature").handle(cc(21, v))
    assert change.name == "temperature"
    assert change.value == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("v", "expected"), [(0, 0.05), (64, 0.528740), (127, 1.0)])  # 0.05 + 60.8 / 127
def test_top_p_runs_from_0_05_to_1(v: int, expected: float) -> None:
    [change] = one({}, "top-p").handle(cc(21, v))
    assert change == ControlChange("top_p", pytest.approx(expected, abs=1e-6))


@pytest.mark.parametrize(("v", "expected"), [(0, 0.25), (64, 1.0), (96, 2.0), (127, 3.914288)])
def test_density_multiplier_stays_within_a_quarter_and_four(v: int, expected: float) -> None:
    [change] = one({}, "density").handle(cc(21, v))
    assert change.name == "density"
    assert change.value == pytest.approx(expected, abs=1e-6)
    assert 0.25 <= float(change.value) <= 4


@pytest.mark.parametrize(
    ("v", "bars"),
    [(0, 1), (4, 1), (5, 2), (8, 2), (64, 9), (118, 15), (127, 16)],
    # 4*15/127 = 0.47 -> 0; 5*15/127 = 0.59 -> 1; 64*15/127 = 7.56 -> 8; 118*15/127 = 13.94 -> 14
)
def test_response_bars_run_from_1_to_16(v: int, bars: int) -> None:
    [change] = one({}, "response_bars").handle(cc(21, v))
    assert change == ControlChange("response_bars", bars)
    assert isinstance(change.value, int)


@pytest.mark.parametrize(
    ("v", "mode"),
    [
        (0, "call-response"),
        (42, "call-response"),
        (43, "accompany"),
        (85, "accompany"),
        (86, "autonomous"),
        (127, "autonomous"),
    ],
)
def test_mode_splits_the_knob_into_three_equal_parts(v: int, mode: str) -> None:
    assert CONTROL_MODES == ("call-response", "accompany", "autonomous")
    assert one({}, "mode").handle(cc(21, v)) == [ControlChange("mode", mode)]


@pytest.mark.parametrize(("v", "model"), [(0, "a"), (63, "a"), (64, "b"), (127, "b")])
def test_model_splits_the_knob_between_the_models(v: int, model: str) -> None:
    control_map = one({"models": ["a", "b"]}, "model")
    assert control_map.handle(cc(21, v)) == [ControlChange("model", model)]


def test_model_with_three_choices_uses_the_same_thirds_as_mode() -> None:
    control_map = one({"models": ["a", "b", "c"]}, "model")
    assert values(control_map, 21, [42, 43, 85, 86]) == [
        ControlChange("model", "a"),
        ControlChange("model", "b"),
        ControlChange("model", "c"),
    ]


# --- buttons ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["panic", "record"])
def test_button_fires_once_per_rise_through_64(name: str) -> None:
    control_map = one({}, name)
    fired = [bool(control_map.handle(cc(21, v))) for v in [0, 63, 64, 127, 100, 63, 0, 127, 127]]
    assert fired == [False, False, True, False, False, False, False, True, False]
    assert control_map.handle(cc(21, 0)) == []
    assert control_map.handle(cc(21, 64)) == [ControlChange(name, True)]


def test_button_first_message_counts_as_rising_when_high() -> None:
    assert one({}, "panic").handle(cc(21, 127)) == [ControlChange("panic", True)]
    assert one({}, "panic").handle(cc(21, 64)) == [ControlChange("panic", True)]
    assert one({}, "panic").handle(cc(21, 63)) == []


# --- dedupe, channels, other messages ---------------------------------------------------


def test_a_step_that_maps_to_the_same_value_emits_once() -> None:
    control_map = parse_controls({"temperature": 21, "response-bars": 22, "mode": 23}, SOURCE)
    assert values(control_map, 21, [64, 64, 64]) == [ControlChange("temperature", 1.0)]
    assert values(control_map, 22, [0, 4, 5]) == [ControlChange("response_bars", 1), ControlChange("response_bars", 2)]
    assert values(control_map, 23, [10, 20, 42, 43]) == [
        ControlChange("mode", "call-response"),
        ControlChange("mode", "accompany"),
    ]
    # back to a value emitted before, after another one: a change again
    assert values(control_map, 21, [96, 64]) == [ControlChange("temperature", 2.0), ControlChange("temperature", 1.0)]


def test_reset_lets_the_same_value_through_again() -> None:
    control_map = one({}, "temperature")
    assert control_map.handle(cc(21, 64))
    assert control_map.handle(cc(21, 64)) == []
    control_map.reset()
    assert control_map.handle(cc(21, 64)) == [ControlChange("temperature", 1.0)]


def test_map_channel_filters_and_a_binding_channel_overrides_it() -> None:
    control_map = parse_controls({"channel": 2, "temperature": 21, "top-p": {"cc": 22, "channel": 3}}, SOURCE)
    assert control_map.handle(cc(21, 64, channel=1)) == []
    assert control_map.handle(cc(21, 64, channel=2)) == [ControlChange("temperature", 1.0)]
    assert control_map.handle(cc(22, 127, channel=2)) == []
    assert control_map.handle(cc(22, 127, channel=3)) == [ControlChange("top_p", 1.0)]


def test_without_a_channel_any_channel_counts() -> None:
    control_map = one({}, "mode")
    assert control_map.handle(cc(21, 0, channel=1)) == [ControlChange("mode", "call-response")]
    assert control_map.handle(cc(21, 127, channel=16)) == [ControlChange("mode", "autonomous")]


def test_same_cc_on_two_channels_drives_two_parameters() -> None:
    control_map = parse_controls({"temperature": {"cc": 21, "channel": 1}, "top-p": {"cc": 21, "channel": 2}}, SOURCE)
    assert control_map.handle(cc(21, 127, channel=1)) == [ControlChange("temperature", pytest.approx(3.914288))]
    assert control_map.handle(cc(21, 127, channel=2)) == [ControlChange("top_p", 1.0)]
    assert control_map.handle(cc(21, 127, channel=3)) == []


@pytest.mark.parametrize(
    "message",
    [(0x90, 21, 100), (0x80, 21, 0), (0xE0, 0, 64), (0xC0, 21), (0xF8,), (), (0xB0, 22, 100), (0xB0, 21)],
)
def test_non_cc_messages_and_unbound_ccs_change_nothing(message: tuple[int, ...]) -> None:
    event = decode_message(0, message)  # a system or malformed message is never decoded: it never gets here
    assert event is None or one({}, "temperature").handle(event) == []


# --- bindings and the table -------------------------------------------------------------


def test_bindings_and_to_table_round_trip_through_toml() -> None:
    text = """
channel = 2
temperature = 21
top_p = { cc = 22, channel = 5 }
model = 23
models = ["folk-lstm", "my-folk"]
panic = 64
"""
    control_map = parse_controls(tomllib.loads(text), SOURCE)
    assert control_map.bindings == {
        "temperature": Binding("temperature", 21),
        "top_p": Binding("top_p", 22, 5),
        "model": Binding("model", 23),
        "panic": Binding("panic", 64),
    }
    table = control_map.to_table()
    assert table == {
        "channel": 2,
        "temperature": 21,
        "top-p": {"cc": 22, "channel": 5},
        "model": 23,
        "models": ["folk-lstm", "my-folk"],
        "panic": 64,
    }
    again = parse_controls(tomllib.loads(tomlkit.dumps(table)), SOURCE)
    assert again == control_map


def test_bindings_view_cannot_change_the_map() -> None:
    control_map = one({}, "temperature")
    view = control_map.bindings
    view.pop("temperature")  # type: ignore[attr-defined]
    assert control_map.handle(cc(21, 64)) == [ControlChange("temperature", 1.0)]


def test_empty_table_is_a_map_that_binds_nothing() -> None:
    control_map = parse_controls({}, SOURCE)
    assert control_map.bindings == {}
    assert control_map.to_table() == {}
    assert control_map.handle(cc(21, 64)) == []


# --- errors -----------------------------------------------------------------------------


def error_of(table: object) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_controls(table, SOURCE)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith(f"{SOURCE}: ")
    return message


def test_unknown_field_lists_accepted_ones() -> None:
    assert error_of({"tempo": 21}) == f"{SOURCE}: field 'controls.tempo' is unknown; accepted: {ACCEPTED}"


@pytest.mark.parametrize("bad", [120, -1, 127, "21", 21.0, True, [21]])
def test_cc_outside_0_119_or_not_an_int(bad: object) -> None:
    assert error_of({"top-p": bad}) == (
        f"{SOURCE}: field 'controls.top-p': expected a CC number 0-119 or an inline table "
        f"{{ cc = N, channel = C }}, got {bad!r}"
    )


def test_cc_in_an_inline_table_is_checked_too() -> None:
    assert "field 'controls.density.cc': expected a CC number 0-119" in error_of({"density": {"cc": 200}})
    assert "got 200" in error_of({"density": {"cc": 200}})


@pytest.mark.parametrize("bad", [0, 17, "1", True])
def test_map_channel_outside_1_16(bad: object) -> None:
    assert error_of({"channel": bad}) == (
        f"{SOURCE}: field 'controls.channel': expected a MIDI channel 1-16, got {bad!r}"
    )


def test_binding_channel_outside_1_16() -> None:
    assert error_of({"top-p": {"cc": 22, "channel": 0}}) == (
        f"{SOURCE}: field 'controls.top-p.channel': expected a MIDI channel 1-16, got 0"
    )


def test_inline_table_without_cc_or_with_other_keys() -> None:
    assert error_of({"mode": {"channel": 2}}) == (
        f"{SOURCE}: field 'controls.mode': the inline table needs cc, e.g. {{ cc = 21, channel = 2 }}"
    )
    assert error_of({"mode": {"cc": 2, "chan": 3}}) == (
        f"{SOURCE}: field 'controls.mode': unknown key(s) chan; accepted: cc, channel"
    )


def test_a_cc_bound_twice_names_both_fields() -> None:
    assert error_of({"temperature": 21, "top-p": 21}) == (
        f"{SOURCE}: CC 21 is bound twice: 'controls.temperature' (on any channel) and 'controls.top-p' "
        "(on any channel); bind each CC to one parameter (or give them different channels)"
    )


def test_a_cc_bound_twice_on_overlapping_channels() -> None:
    message = error_of({"channel": 3, "panic": 30, "record": {"cc": 30, "channel": 3}})
    assert "CC 30 is bound twice: 'controls.panic' (on channel 3) and 'controls.record' (on channel 3)" in message
    message = error_of({"panic": 30, "record": {"cc": 30, "channel": 4}})
    assert "CC 30 is bound twice: 'controls.panic' (on any channel) and 'controls.record' (on channel 4)" in message


def test_both_spellings_of_one_field() -> None:
    assert error_of({"top-p": 21, "top_p": 22}) == (
        f"{SOURCE}: fields 'controls.top-p' and 'controls.top_p' are the same field; keep one"
    )


def test_model_bound_without_models() -> None:
    assert error_of({"model": 23}) == (
        f"{SOURCE}: field 'controls.model' is bound to CC 23 but 'controls.models' is missing; list the models "
        'the knob chooses from, e.g. models = ["folk-lstm", "my-folk"]'
    )


@pytest.mark.parametrize("bad", [[], "folk-lstm", ["a", 3], ["a", " "]])
def test_models_must_be_a_non_empty_list_of_names(bad: object) -> None:
    assert error_of({"models": bad}) == (
        f"{SOURCE}: field 'controls.models': expected a non-empty list of model names or package paths, "
        f'e.g. ["folk-lstm", "my-folk"], got {bad!r}'
    )


def test_models_listed_twice() -> None:
    assert error_of({"models": ["a", "b", "a"]}) == f"{SOURCE}: field 'controls.models': a listed more than once"


def test_controls_must_be_a_table() -> None:
    assert error_of(21) == f"{SOURCE}: [controls] must be a table, got 21"
