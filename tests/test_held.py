"""Decoded once, paired once: raw bytes become typed events in one place, and one HeldNotes pairs
note-ons with note-offs for the recorder, the planners, the key follower and the soak meter."""

from __future__ import annotations

import pytest

from livegen.music.events import Note, control_change, decode_message, note_off, note_on
from livegen.music.held import HeldNotes, pair_notes


@pytest.mark.parametrize(
    "data",
    [(0x91, 60, 100), (0x81, 60, 0), (0xA0, 60, 30), (0xB2, 64, 127), (0xC3, 5), (0xD4, 77), (0xE5, 0, 64)],
)
def test_every_channel_message_decodes_and_encodes_back_to_its_bytes(data):
    event = decode_message(7, data)
    assert event is not None and event.tick == 7 and event.channel == data[0] & 0x0F
    assert tuple(event.bytes()) == data  # channel pressure is two bytes on the wire, as program change is


@pytest.mark.parametrize("data", [(), (0xF8,), (0xF2, 0, 0), (0x90, 60), (0xC0, 5, 5), (0x90, 60, 100, 1)])
def test_system_and_malformed_messages_decode_to_nothing(data):
    assert decode_message(0, data) is None


def test_a_note_on_of_velocity_zero_is_a_release_and_sorts_before_note_ons_at_its_tick():
    release = decode_message(480, (0x90, 60, 0))
    assert release is not None and release.is_note_off and not release.is_note_on
    assert sorted([note_on(480, 0, 60, 90), release]) == [release, note_on(480, 0, 60, 90)]


def test_held_notes_end_the_oldest_note_of_a_key_first():
    held = HeldNotes()
    held.observe(note_on(0, 0, 60, 80))
    held.observe(note_on(100, 0, 60, 90))  # struck again while held
    held.observe(note_on(100, 1, 60, 70))  # another channel
    first = held.observe(note_off(200, 0, 60))
    assert first is not None and (first.start, first.end, first.velocity) == (0, 200, 80)
    assert len(held) == 2 and (0, 60) in held and held.earliest() == 100
    assert held.observe(note_off(300, 2, 61)) is None  # a stray note-off changes nothing
    assert held.observe(control_change(300, 0, 64, 127)) is None
    assert [e.note() for e in held.end_all(400)] == [Note(60, 90, 100, 300, 0), Note(60, 70, 100, 300, 1)]
    assert not held


def test_held_notes_answer_what_a_planner_and_the_soak_meter_ask():
    held = HeldNotes()
    for event in (note_on(-120, 0, 62, 90), note_on(0, 0, 64, 90), note_on(500, 3, 67, 90)):
        held.observe(event)
    assert held.begun_before(1) == [(0, 62, -120), (0, 64, 0)]
    ended = held.end_channel(600, 0)  # all notes off on channel 1
    assert [(e.pitch, e.start, e.end) for e in ended] == [(62, -120, 600), (64, 0, 600)]
    assert ended[0].note(shortest=1) == Note(62, 90, 0, 600, 0)  # a count-in note starts at tick 0
    assert held.sounding() == [(3, 67)]
    held.restart(501, 900)
    assert held.earliest() == 900


def test_pair_notes_closes_what_is_left_open_at_the_end():
    events = [note_on(0, 0, 60, 90), note_off(480, 0, 60), note_on(480, 0, 62, 80)]
    assert pair_notes(events) == [Note(60, 90, 0, 480), Note(62, 80, 480, 0)]
    assert pair_notes(events, end=960) == [Note(60, 90, 0, 480), Note(62, 80, 480, 480)]
