"""Music values: tempo maps, notes to events, MIDI file round trips and broken files."""

from __future__ import annotations

import mido
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livegen.errors import MidiFileError
from livegen.io.recorder import MidiRecorder
from livegen.music.events import Note, decode_message, note_off, note_on, notes_to_events
from livegen.music.midifile import read_midi, write_midi
from livegen.music.time import PPQN, TempoMap, ceil_to_grid, quantize


def test_tempo_map_converts_exactly_across_changes():
    tempo = TempoMap(((0, 500_000), (960, 250_000)))  # 120 BPM, then 240 BPM from beat 2
    assert tempo.tick_to_ns(480) == 500_000_000
    assert tempo.tick_to_ns(960) == 1_000_000_000
    assert tempo.tick_to_ns(1440) == 1_250_000_000
    for tick in (0, 1, 479, 960, 961, 5000):
        assert tempo.ns_to_tick(tempo.tick_to_ns(tick)) == tick
    with pytest.raises(ValueError):
        TempoMap(((10, 500_000),))


def test_grid_helpers():
    assert quantize(59, 120) == 0 and quantize(60, 120) == 120
    assert ceil_to_grid(121, 120) == 240 and ceil_to_grid(240, 120) == 240


def test_notes_to_events_puts_releases_first():
    events = notes_to_events([Note(60, 90, 0, 480), Note(62, 90, 480, 480)])
    assert events == [note_on(0, 0, 60, 90), note_off(480, 0, 60), note_on(480, 0, 62, 90), note_off(960, 0, 62)]


notes_strategy = st.lists(
    st.builds(
        Note,
        pitch=st.integers(0, 127),
        velocity=st.integers(1, 127),
        start=st.integers(0, 20 * PPQN),
        duration=st.integers(1, 4 * PPQN),
        channel=st.integers(0, 15),
    ),
    max_size=40,
)


@settings(max_examples=40, deadline=None)
@given(notes=notes_strategy)
def test_write_then_read_gives_the_same_notes(tmp_path_factory, notes):
    # Overlapping notes of one pitch and channel are ambiguous in MIDI; keep them apart.
    kept, busy = [], {}
    for n in sorted(notes, key=lambda n: n.start):
        if busy.get((n.channel, n.pitch), -1) < n.start:
            kept.append(n)
            busy[(n.channel, n.pitch)] = n.end
    path = tmp_path_factory.mktemp("m") / "x.mid"
    write_midi(path, {"a": kept}, tempo=TempoMap.constant(90))
    song = read_midi(path)
    assert sorted(song.notes, key=lambda n: (n.start, n.pitch, n.channel)) == sorted(
        kept, key=lambda n: (n.start, n.pitch, n.channel)
    )
    assert round(song.tempo.initial_bpm) == 90


def test_read_rescales_other_resolutions_and_closes_open_notes(tmp_path):
    mid = mido.MidiFile(ticks_per_beat=96)
    track = mido.MidiTrack(
        [
            mido.Message("note_on", note=60, velocity=80, time=0),
            mido.Message("note_on", note=60, velocity=0, time=48),
            mido.Message("note_on", note=64, velocity=80, time=48),
            mido.MetaMessage("end_of_track", time=96),
        ]
    )
    mid.tracks.append(track)
    mid.save(tmp_path / "r.mid")
    song = read_midi(tmp_path / "r.mid")
    assert song.notes == (Note(60, 80, 0, 240), Note(64, 80, 480, 480))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"RIFF0000WAVEfmt ", "not a readable Standard MIDI File"),
        (b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\x00\x00\x01\x00\x00\x90", "not a readable"),
    ],
)
def test_broken_files_raise_a_named_error(tmp_path, content, message):
    path = tmp_path / "bad.mid"
    path.write_bytes(content)
    with pytest.raises(MidiFileError, match=message) as info:
        read_midi(path)
    assert "bad.mid" in str(info.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(MidiFileError, match="no such MIDI file"):
        read_midi(tmp_path / "none.mid")
    with pytest.raises(MidiFileError, match="is a folder"):
        read_midi(tmp_path)


def test_recorder_keeps_parts_on_separate_tracks(tmp_path):
    rec = MidiRecorder(("performer", "livegen"))
    rec.record("performer", decode_message(0, (0x90, 60, 100)))
    rec.record("performer", decode_message(480, (0x80, 60, 0)))
    rec.record("livegen", decode_message(960, (0x90, 67, 90)))
    rec.record("livegen", decode_message(1200, (0x90, 67, 0)))
    rec.record("livegen", decode_message(1200, (0x90, 69, 90)))  # left open: closed at the last tick
    path = rec.save(tmp_path / "r.mid", TempoMap.constant(120))
    mid = mido.MidiFile(path)
    names = [next(m.name for m in t if m.type == "track_name") for t in mid.tracks[1:]]
    assert names == ["performer", "livegen"]
    assert rec.notes("livegen") == [Note(67, 90, 960, 240), Note(69, 90, 1200, 0)]


def test_a_note_struck_and_released_on_one_tick_is_kept(tmp_path):
    """A note struck just as a jam stops is released on the same tick; the file keeps it, a tick long."""
    recorder = MidiRecorder(("livegen",))
    recorder.record("livegen", decode_message(0, (0x90, 60, 90)))
    recorder.record("livegen", decode_message(480, (0x80, 60, 0)))
    recorder.record("livegen", decode_message(960, (0x90, 64, 90)))
    recorder.record("livegen", decode_message(960, (0x80, 64, 0)))
    path = recorder.save(tmp_path / "take.mid", TempoMap.constant(120))
    assert [(n.pitch, n.start, n.duration) for n in read_midi(path).notes] == [(60, 0, 480), (64, 960, 1)]


def test_writing_a_long_part_holds_no_copy_of_its_messages(tmp_path):
    import tracemalloc

    # a 15-minute part of a busy model: 7 500 notes, 15 000 messages
    notes = [Note(55 + i % 24, 90, i * 230, 200) for i in range(7500)]
    tracemalloc.start()
    try:
        write_midi(tmp_path / "part.mid", {"livegen": notes})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_500_000  # a list of the part's mido messages took about 4 MB at once
    assert [(n.start, n.pitch) for n in read_midi(tmp_path / "part.mid").notes] == [(n.start, n.pitch) for n in notes]
