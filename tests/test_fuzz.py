"""Fuzzing the parsers of hostile input.

Every input to the MIDI file reader, the raw MIDI byte parser of the inputs, the preset
parser and the manifest parser gives a result or a typed livegen error, never another
exception, a hang or unbounded memory. Each target runs ``LIVEGEN_FUZZ_EXAMPLES``
examples (default 150; the whole module stays well under a minute), e.g. a long run::

    LIVEGEN_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest -q tests/test_fuzz.py
"""

from __future__ import annotations

import atexit
import os
import shutil
import struct
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livegen.engine.preset import _TYPES, make_config
from livegen.engine.tracker import NoteTracker
from livegen.errors import ConfigError, MidiFileError, PackageError
from livegen.io.base import MidiInput
from livegen.models.manifest import parse_manifest
from livegen.music.events import MidiStreamParser, decode_message
from livegen.music.held import pair_notes
from livegen.music.midifile import Song, read_midi
from tests.pkgfactory import manifest as factory_manifest

EXAMPLES = int(os.environ.get("LIVEGEN_FUZZ_EXAMPLES", "150"))
#: Peak Python memory one example may allocate (inputs are at most a few kB).
MEMORY_LIMIT = 64 << 20

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=2),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

T = TypeVar("T")
_DIR = Path(tempfile.mkdtemp(prefix="livegen-fuzz-"))
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)


def bounded(fn: Callable[[], T]) -> T:
    """``fn()``, failing the example if it allocates more than :data:`MEMORY_LIMIT`."""
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_LIMIT, f"{peak} bytes allocated"
    return result


def _file(name: str, data: bytes) -> Path:
    path = _DIR / name
    path.write_bytes(data)
    return path


# --- MIDI files -----------------------------------------------------------------------


def _varlen(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _chunk(kind: bytes, body: bytes, declared: int | None = None) -> bytes:
    return kind + struct.pack(">I", len(body) if declared is None else declared) + body


_byte = st.integers(0, 255)
_data = st.integers(0, 127)
_event = st.one_of(
    st.tuples(st.sampled_from([0x80, 0x90]) | _byte, _data, _byte).map(bytes),  # note-ish, maybe hostile
    st.tuples(_data, _data).map(bytes),  # running status
    st.tuples(_byte, _data).map(lambda t: bytes([0xFF, 0x51, 3, t[0], t[1], 0])),  # set_tempo (maybe 0)
    st.binary(min_size=4, max_size=4).map(lambda b: bytes([0xFF, 0x58, 4]) + b),  # time signature
    st.tuples(_byte, _byte, st.binary(max_size=8)).map(lambda t: bytes([0xFF, t[0], t[1]]) + t[2]),  # any meta
    st.binary(max_size=8).map(lambda b: bytes([0xF0, len(b)]) + b),  # sysex
    st.binary(max_size=4).map(lambda b: b"\xf7" + b),
    st.binary(min_size=1, max_size=4),
)
_track = st.lists(st.tuples(st.integers(0, 1 << 28), _event), max_size=30).map(
    lambda events: b"".join(_varlen(dt) + ev for dt, ev in events)
)


@st.composite
def midi_files(draw: st.DrawFn) -> bytes:
    fmt = draw(st.integers(0, 3) | st.integers(0, 0xFFFF))
    division = draw(st.sampled_from([96, 480, 1, 0x7FFF, 0xE250, 0]) | st.integers(0, 0xFFFF))
    tracks = draw(st.lists(_track, max_size=4))
    ntracks = draw(st.just(len(tracks)) | st.integers(0, 0xFFFF))
    end_of_track = draw(st.booleans())
    body = b"".join(
        _chunk(b"MTrk", t + (b"\x00\xff\x2f\x00" if end_of_track else b""), draw(st.none() | st.integers(0, 1 << 31)))
        for t in tracks
    )
    header = _chunk(b"MThd", struct.pack(">HHH", fmt, ntracks, division), draw(st.sampled_from([None, 6, 0, 100])))
    data = header + body
    cut = draw(st.none() | st.integers(0, len(data)))
    return data if cut is None else data[:cut]


def _check_song(song: Song) -> None:
    assert all(0 <= n.pitch <= 127 and 1 <= n.velocity <= 127 and 0 <= n.channel <= 15 for n in song.notes)
    assert song.beats_per_bar >= 1 and song.tempo.changes[0][0] == 0


def _read(data: bytes) -> None:
    path = _file("fuzz.mid", data)
    try:
        song = bounded(lambda: read_midi(path))
    except MidiFileError as err:
        assert str(path) in str(err)
    else:
        _check_song(song)


@FUZZ
@given(st.binary(max_size=512))
def test_read_midi_random_bytes(data: bytes) -> None:
    _read(data)


@FUZZ
@given(midi_files())
def test_read_midi_structured(data: bytes) -> None:
    _read(data)


# --- raw MIDI bytes from a port -------------------------------------------------------

_LENGTHS = {0x8: 3, 0x9: 3, 0xA: 3, 0xB: 3, 0xC: 2, 0xD: 2, 0xE: 3}
_COMMON = {0xF1: 2, 0xF2: 3, 0xF3: 2, 0xF6: 1}

_stream_byte = st.one_of(
    _byte,
    st.sampled_from([0xF0, 0xF7, 0xF8, 0xFA, 0xFC, 0xFE, 0xFF, 0xF9, 0xFD, 0xF4, 0xF5]),
    st.integers(-300, 1000),  # not even a byte: a broken backend
)
_packets = st.lists(st.lists(_stream_byte, max_size=40).map(tuple), max_size=20)


def _well_formed(message: tuple[int, ...]) -> bool:
    if not message or not all(0 <= b <= 255 for b in message):
        return False
    status, data = message[0], message[1:]
    if status < 0x80 or any(b >= 0x80 for b in data[:-1]):
        return False
    if status == 0xF0:
        return len(message) >= 2 and message[-1] == 0xF7
    if any(b >= 0x80 for b in data):
        return False
    if status >= 0xF8:
        return len(message) == 1
    if status >= 0xF0:
        return _COMMON.get(status) == len(message)
    return _LENGTHS[status >> 4] == len(message)


@FUZZ
@given(_packets)
def test_stream_parser_gives_only_well_formed_messages(packets: list[tuple[int, ...]]) -> None:
    parser = MidiStreamParser()
    messages: list[tuple[int, ...]] = []
    for packet in packets:
        messages.extend(bounded(lambda p=packet: parser.feed(p)))  # type: ignore[misc]
    assert all(_well_formed(m) for m in messages), messages
    # the consumers of channel messages take all of them
    tracker = NoteTracker(1)
    for m in messages:
        if m[0] < 0xF0:
            tracker.observe(0, m)
    events = [decode_message(i, m) for i, m in enumerate(messages)]
    assert all(e is not None for i, e in enumerate(events) if messages[i][0] < 0xF0)  # each is decoded
    pair_notes(e for e in events if e is not None)


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0x80, 0xEF), st.lists(_data, min_size=2, max_size=2)), min_size=1, max_size=10),
    st.lists(st.integers(0xF8, 0xFF), max_size=5),
    st.randoms(use_true_random=False),
)
def test_stream_parser_keeps_messages_through_running_status_and_real_time(
    messages: list[tuple[int, list[int]]], real_time: list[int], rnd: Any
) -> None:
    """Running status and real-time bytes anywhere do not change the channel messages."""
    expected = [(s, *d[: _LENGTHS[s >> 4] - 1]) for s, d in messages]
    stream: list[int] = []
    previous = None
    for status, data in messages:
        if status != previous or rnd.random() < 0.5:
            stream.append(status)
        stream.extend(data[: _LENGTHS[status >> 4] - 1])
        previous = status
    for b in real_time:
        stream.insert(rnd.randrange(len(stream) + 1), b)
    out = MidiStreamParser().feed(stream)
    assert [m for m in out if m[0] < 0xF0] == expected
    assert sorted(m[0] for m in out if m[0] >= 0xF8) == sorted(real_time)


def test_stream_parser_sysex() -> None:
    parser = MidiStreamParser()
    assert parser.feed([0xF0, 0x7E, 0xF8, 0x09, 0xF7]) == [(0xF8,), (0xF0, 0x7E, 0x09, 0xF7)]
    # unterminated: a status byte ends it, it is dropped and counted; the note survives
    assert parser.feed([0xF0, 0x01, 0x02, 0x90, 60, 100]) == [(0x90, 60, 100)]
    assert parser.dropped >= 1
    # a SysEx longer than the limit is dropped whole, without holding its bytes
    parser.feed([0xF0] + [1] * (MidiStreamParser.MAX_SYSEX + 10))
    assert parser.feed([0xF7, 0x80, 60, 0]) == [(0x80, 60, 0)]
    # a stray data byte before any status, truncated messages and non-bytes are dropped
    assert parser.feed([5, 0x90, 60, 0xB0, 7, 300, 0x90, 61, 1]) == [(0x90, 61, 1)]
    # running status continues across packets, a system common message cancels it
    assert parser.feed([62, 2]) == [(0x90, 62, 2)]
    assert parser.feed([0xF6, 63, 3]) == [(0xF6,)]


class _Backend:
    """A python-rtmidi MidiIn double whose get_message hands out hostile packets."""

    def __init__(self, packets: list[tuple[int, ...]]) -> None:
        self._packets = list(packets)

    def get_message(self) -> tuple[list[int], float] | None:
        return (list(self._packets.pop(0)), 0.0) if self._packets else None


def test_rtmidi_input_delivers_only_well_formed_messages() -> None:
    from livegen.io.midi_input import RtMidiInput

    packets = [(0x90, 60), (100,), (0xF8,), (0x90, 0xF8, 61, 0xFA, 90), (0xF0, 1, 2), (0xB0, 7, 300), (62, 1)]
    backend = _Backend(packets)
    reader = RtMidiInput(
        backend, name="x", api="jack", port="x", virtual=True, poll_interval=0.001, ignore=(True, False)
    )  # a clock follower's input: clock is let through
    got: list[tuple[int, ...]] = []
    reader.set_callback(lambda data, t_ns: got.append(data))
    reader._start()
    try:
        import time

        for _ in range(500):
            if not backend._packets:
                break
            time.sleep(0.002)
        time.sleep(0.02)
    finally:
        reader._stop.set()
        reader._thread.join(1.0)
    # 300 is no byte: it ends the control change and its running status, so 62, 1 are stray
    assert got == [(0x90, 60, 100), (0xF8,), (0xF8,), (0xFA,), (0x90, 61, 90)]
    assert reader.errors == 0 and reader.malformed >= 2
    assert isinstance(reader, MidiInput)


# --- presets --------------------------------------------------------------------------

_scalars = st.one_of(
    st.booleans(),
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.integers(-50, 500),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["off", "follow", "3", "call-response", "accompany", "autonomous", "midi", "55-84", "C major"]),
    st.datetimes(),
    st.dates(),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_jam_keys = (
    st.sampled_from(sorted(_TYPES)) | st.sampled_from([k.replace("_", "-") for k in _TYPES]) | st.text(max_size=8)
)
_control_keys = st.sampled_from(
    ["temperature", "top-p", "density", "bars", "mode", "panic", "take", "channel", "models"]
)


@st.composite
def preset_texts(draw: st.DrawFn) -> str:
    table: dict[str, Any] = {}
    if draw(st.booleans()):
        table["jam"] = draw(st.dictionaries(_jam_keys, _values, max_size=6) | _values)
    if draw(st.booleans()):
        table["controls"] = draw(st.dictionaries(_control_keys | st.text(max_size=6), _values, max_size=4) | _values)
    if draw(st.integers(0, 5)) == 0:
        table[draw(st.text(max_size=6))] = draw(_values)
    return tomli_w.dumps(table)


def _preset(text: str | bytes) -> None:
    path = _file("fuzz.toml", text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    try:
        bounded(lambda: make_config(str(path), {}))
    except ConfigError as err:
        assert str(path) in str(err)


@FUZZ
@given(preset_texts())
def test_preset_structured(text: str) -> None:
    _preset(text)


@FUZZ
@given(st.text(max_size=300) | st.binary(max_size=300))
def test_preset_random_text(text: str | bytes) -> None:
    _preset(text)


# --- manifests ------------------------------------------------------------------------


def _set_path(table: dict[str, Any], path: list[str | int], value: Any) -> None:
    node: Any = table
    for key in path[:-1]:
        node = node[key]
    if isinstance(node, dict) != isinstance(path[-1], str):
        raise TypeError("an earlier change replaced a list with a table or the other way round")
    node[path[-1]] = value


def _paths(node: Any, prefix: list[str | int]) -> Iterator[list[str | int]]:
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield [*prefix, key]
        yield from _paths(value, [*prefix, key])


_VALID_MANIFEST = factory_manifest(16, {n: "sha256:" + "0" * 64 for n in ("model.onnx", "README.md", "seed.mid")})
_MANIFEST_PATHS = list(_paths(_VALID_MANIFEST, []))


@st.composite
def manifest_texts(draw: st.DrawFn) -> str:
    """A valid manifest with a few fields replaced by values of any type (or removed)."""
    import copy

    table = copy.deepcopy(_VALID_MANIFEST)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_MANIFEST_PATHS))
        try:
            if draw(st.integers(0, 4)) == 0:
                node: Any = table
                for key in path[:-1]:
                    node = node[key]
                del node[path[-1]]
            else:
                _set_path(table, path, draw(_values))
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed or replaced its parent
    return tomli_w.dumps(table)


def _manifest(text: str | bytes) -> None:
    path = _file("livegen.toml", text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    try:
        bounded(lambda: parse_manifest(path))
    except PackageError as err:
        assert str(path) in str(err)


@FUZZ
@given(manifest_texts())
def test_manifest_wrong_types(text: str) -> None:
    _manifest(text)


@FUZZ
@given(st.text(max_size=300) | st.binary(max_size=300) | _values.map(lambda v: tomli_w.dumps({"x": v})))
def test_manifest_random_text(text: str | bytes) -> None:
    _manifest(text)


def test_valid_manifest_still_parses() -> None:
    assert parse_manifest(_file("livegen.toml", tomli_w.dumps(_VALID_MANIFEST).encode())).name == "test-rnn"


@pytest.mark.parametrize("text", ["jam = 3", "jam = [1]", "controls = 1", "[jam]\ntranspose = 99999999999999"])
def test_preset_odd_tables(text: str) -> None:
    with pytest.raises(ConfigError, match=r"fuzz\.toml"):
        make_config(str(_file("fuzz.toml", text.encode())), {})


def test_midi_file_with_tempo_zero_found_by_fuzzing() -> None:
    data = b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00`MTrk\x00\x00\x00\x07\x00\xffQ\x03\x00\x00\x00"
    with pytest.raises(MidiFileError, match=r"fuzz\.mid: a tempo of 0 microseconds per quarter note at tick 0"):
        read_midi(_file("fuzz.mid", data))


def test_manifest_name_with_a_trailing_newline() -> None:
    table = dict(_VALID_MANIFEST, name="test-rnn\n")
    with pytest.raises(PackageError, match="field 'name': expected lowercase letters"):
        parse_manifest(_file("livegen.toml", tomli_w.dumps(table).encode()))


def test_midi_file_with_an_unknown_key_found_by_fuzzing() -> None:
    data = b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00`MTrk\x00\x00\x00\n\x00\x80\x00\x00\x00\xffY\x02\x00\x02"
    with pytest.raises(MidiFileError, match=r"fuzz\.mid: not a readable Standard MIDI File \(Could not decode key"):
        read_midi(_file("fuzz.mid", data))


@pytest.mark.parametrize("nesting", ["[" * 500 + "]" * 500, "{a = " * 500 + "1" + "}" * 500])
def test_toml_nested_500_deep_is_a_named_error(nesting: str) -> None:
    with pytest.raises(PackageError, match=r"livegen\.toml: not valid TOML \(tables or arrays nested too deeply\)"):
        parse_manifest(_file("livegen.toml", f"schema = 1\nname = {nesting}\n".encode()))
    with pytest.raises(ConfigError, match=r"fuzz\.toml: not a readable TOML preset \(.*nested too deeply\)"):
        make_config(str(_file("fuzz.toml", f"[jam]\nmodel = {nesting}\n".encode())), {})
