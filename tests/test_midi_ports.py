"""MIDI ports: API names and probes, port names, and real loopbacks through JACK.

The JACK tests run against a jackd with the dummy driver (``jack_server`` fixture) and
judge livegen with independent clients in other processes (``tests/jackutil.py``),
comparing exact byte lists and ``perf_counter_ns`` timestamps across processes.
"""

from __future__ import annotations

import os
import queue
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mido
import pytest
import rtmidi

from livegen.errors import BackendUnavailableError, ConfigError, PortNotFoundError
from livegen.io import midi_api
from livegen.io.base import MemoryInput, MemoryOutput
from livegen.io.midi_api import (
    api_id,
    compiled_apis,
    default_api,
    find_keyboard,
    is_own_port,
    list_ports,
    match_port,
    probe_api,
)
from livegen.io.midi_input import open_input
from livegen.io.midi_output import open_output
from tests.jackutil import JackServer, Peer, find_jackd, jackd_processes

needs_jack_api = pytest.mark.skipif(
    rtmidi.API_UNIX_JACK not in rtmidi.get_compiled_api(), reason="python-rtmidi built without JACK"
)

#: A performance in bytes: channel voice messages of every length, on two channels.
PHRASE: list[tuple[int, ...]] = [
    tuple(mido.Message("program_change", channel=0, program=5).bytes()),
    tuple(mido.Message("control_change", channel=0, control=64, value=127).bytes()),
    tuple(mido.Message("note_on", channel=0, note=60, velocity=100).bytes()),
    tuple(mido.Message("note_on", channel=9, note=36, velocity=127).bytes()),
    tuple(mido.Message("pitchwheel", channel=0, pitch=-8192).bytes()),
    tuple(mido.Message("aftertouch", channel=0, value=33).bytes()),
    tuple(mido.Message("note_off", channel=0, note=60, velocity=0).bytes()),
    tuple(mido.Message("note_off", channel=9, note=36, velocity=64).bytes()),
    tuple(mido.Message("control_change", channel=0, control=64, value=0).bytes()),
]
SYSEX = (0xF0, 0x7D, 0x01, 0x02, 0x03, 0xF7)  # 0x7D: the non-commercial manufacturer id
CLOCK = (0xF8,)
ACTIVE_SENSING = (0xFE,)
GAP_S = 0.003  # a little more than one JACK period (128 frames at 48 kHz = 2.7 ms)
MAX_LATENCY_NS = 200_000_000  # generous: a loaded two-core CI machine


# --- API names and probes (no server needed) -------------------------------------------


def test_api_names_map_to_rtmidi_constants_and_unknown_names_are_refused() -> None:
    assert api_id("alsa") == rtmidi.API_LINUX_ALSA
    assert api_id("JACK") == rtmidi.API_UNIX_JACK
    assert api_id("coremidi") == rtmidi.API_MACOSX_CORE
    assert api_id("winmm") == rtmidi.API_WINDOWS_MM
    with pytest.raises(ConfigError) as caught:
        api_id("pulse")
    assert "'pulse'" in str(caught.value)
    assert "alsa, jack, coremidi, winmm" in str(caught.value)
    with pytest.raises(ConfigError):
        open_output(api="pulse")


@pytest.mark.parametrize(
    ("platform", "expected"), [("linux", "alsa"), ("darwin", "coremidi"), ("win32", "winmm"), ("freebsd14", "jack")]
)
def test_default_api_is_the_platforms_own(monkeypatch: pytest.MonkeyPatch, platform: str, expected: str) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    assert default_api() == expected


def test_compiled_apis_are_rtmidis_in_livegen_names() -> None:
    names = {rtmidi.API_LINUX_ALSA: "alsa", rtmidi.API_UNIX_JACK: "jack", rtmidi.API_MACOSX_CORE: "coremidi"}
    names[rtmidi.API_WINDOWS_MM] = "winmm"
    assert compiled_apis() == [names[a] for a in rtmidi.get_compiled_api() if a in names]


def test_probe_of_alsa_without_the_sequencer_says_why_and_what_to_do(capfd: pytest.CaptureFixture[str]) -> None:
    if rtmidi.API_LINUX_ALSA not in rtmidi.get_compiled_api():
        pytest.skip("python-rtmidi built without ALSA")
    if os.path.exists("/dev/snd/seq"):
        pytest.skip("this machine has an ALSA sequencer")
    reason = probe_api("alsa")
    assert reason is not None
    assert "/dev/snd/seq is missing" in reason
    assert "--midi-api jack" in reason
    assert capfd.readouterr().err == ""
    with pytest.raises(BackendUnavailableError) as caught:
        open_output(api="alsa")
    assert "alsa" in str(caught.value) and "/dev/snd/seq" in str(caught.value)


@needs_jack_api
def test_probe_of_jack_without_a_server_is_quick_quiet_and_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    absent = f"livegen-absent-{os.getpid()}-{secrets.token_hex(3)}"
    monkeypatch.setenv("JACK_DEFAULT_SERVER", absent)
    before = set(jackd_processes())
    started = time.monotonic()
    reason = probe_api("jack")
    elapsed = time.monotonic() - started
    assert reason is not None
    assert f"no JACK server named '{absent}' is running" in reason
    assert f"jackd -n {absent} -d dummy" in reason
    assert elapsed < 3.0, f"probe took {elapsed:.2f} s"
    assert capfd.readouterr().err == ""
    time.sleep(0.3)  # a server started behind our back would be up by now
    # Only servers this probe could have started count (other suites may run their own):
    # one with our server's name, or one with no name (the default server).
    new = {pid: argv for pid, argv in jackd_processes().items() if pid not in before}
    suspects = {pid: argv for pid, argv in new.items() if absent in argv or "-n" not in argv}
    assert not suspects, f"a JACK server was started: {suspects}"
    assert not list(Path("/dev/shm").glob(f"jack_{absent}_*"))

    with pytest.raises(BackendUnavailableError) as caught:
        open_output(api="jack")
    assert "the jack MIDI API cannot be used" in str(caught.value)
    assert absent in str(caught.value)
    assert capfd.readouterr().err == ""


# --- port names (no server needed) -----------------------------------------------------


def test_match_port_takes_an_exact_name_or_a_unique_part() -> None:
    ports = ["system:midi_capture_1", "kbd:kbd", "Arturia KeyStep:out", "Arturia BeatStep:out"]
    assert match_port("kbd:kbd", ports, kind="input", api="jack") == "kbd:kbd"
    assert match_port("KEYSTEP", ports, kind="input", api="jack") == "Arturia KeyStep:out"
    assert match_port("kbd", ports, kind="input", api="jack") == "kbd:kbd"


def test_match_port_refuses_ambiguous_and_unknown_names_listing_what_is_there() -> None:
    ports = ["Arturia KeyStep:out", "Arturia BeatStep:out"]
    with pytest.raises(PortNotFoundError) as caught:
        match_port("arturia", ports, kind="input", api="alsa")
    message = str(caught.value)
    assert "'arturia' matches several" in message
    assert "'Arturia KeyStep:out'" in message and "'Arturia BeatStep:out'" in message
    with pytest.raises(PortNotFoundError) as caught:
        match_port("Roland", ports, kind="output", api="alsa")
    message = str(caught.value)
    assert "no MIDI output port matches 'Roland' on the alsa MIDI API" in message
    assert "'Arturia KeyStep:out', 'Arturia BeatStep:out'" in message
    with pytest.raises(LookupError, match="available outputs: none"):
        match_port("Roland", [], kind="output", api="alsa")


@pytest.mark.parametrize(
    ("port", "own"),
    [
        ("livegen:livegen", True),
        ("livegen-01:livegen", True),
        ("livegen in:livegen in", True),
        ("livegen:livegen 128:0", True),
        ("livegen", True),
        ("LiveGenius:out", False),
        ("kbd:livegen", False),
        ("Midi Through:Midi Through Port-0 14:0", False),
    ],
)
def test_livegens_own_ports_are_recognised(port: str, own: bool) -> None:
    assert is_own_port(port) is own


# --- real JACK -------------------------------------------------------------------------


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for peer in started:
        peer.stop()


def _receiver(peers: list[Peer], port: str, count: int) -> Peer:
    peer = Peer("receive", "--port", port, "--count", str(count), "--timeout", "20")
    peers.append(peer)
    return peer


def _sender(peers: list[Peer], name: str) -> Peer:
    peer = Peer("send", "--name", name)
    peers.append(peer)
    peer.expect("ready")
    return peer


def _collect(peer: Peer) -> list[tuple[int, tuple[int, ...]]]:
    messages: list[tuple[int, tuple[int, ...]]] = []
    while True:
        line = peer.next(timeout=20)
        if line["event"] == "done":
            return messages
        assert line["event"] == "message", line
        messages.append((line["t_ns"], tuple(line["data"])))


@pytest.mark.jack
def test_virtual_output_is_livegen_livegen_and_an_independent_client_gets_exactly_what_was_sent(
    jack_server: str, peers: list[Peer]
) -> None:
    sequence = [*PHRASE, SYSEX]
    out = open_output("livegen", api="jack")
    try:
        assert (out.name, out.port, out.virtual) == ("livegen", "livegen", True)
        peer = _receiver(peers, "livegen", len(sequence))
        assert peer.expect("ready")["port"] == "livegen:livegen"  # what jack_lsp and a DAW show
        sent_at = []
        for data in sequence:
            sent_at.append(time.perf_counter_ns())
            out.send(data)
            time.sleep(GAP_S)
        received = _collect(peer)
    finally:
        out.close()
    assert [data for _, data in received] == sequence
    assert (out.errors, out.dropped) == (0, 0)
    for sent, (arrived, _) in zip(sent_at, received, strict=True):
        assert 0 <= arrived - sent < MAX_LATENCY_NS


@pytest.mark.jack
def test_input_from_another_client_reaches_the_callback_with_perf_counter_timestamps(
    jack_server: str, peers: list[Peer]
) -> None:
    keyboard = _sender(peers, "kbd")
    got: queue.Queue[tuple[tuple[int, ...], int]] = queue.Queue()
    source = open_input("kbd", api="jack", callback=lambda data, t_ns: got.put((data, t_ns)))
    try:
        assert source.port == "kbd:kbd"
        sent = []
        for data in [PHRASE[0], CLOCK, PHRASE[2], SYSEX, ACTIVE_SENSING, *PHRASE[3:]]:
            sent.append(keyboard.send(data))
            time.sleep(GAP_S)
        delivered = [got.get(timeout=5) for _ in range(len(PHRASE) - 1)]
        time.sleep(0.05)
        assert got.empty(), "clock, SysEx and active sensing must be dropped"
    finally:
        source.close()
    assert [data for data, _ in delivered] == [PHRASE[0], *PHRASE[2:]]
    assert all(type(data) is tuple and type(t_ns) is int for data, t_ns in delivered)
    stamps = [t_ns for _, t_ns in delivered]
    assert stamps == sorted(stamps)
    voice = [line for line in sent if tuple(line["data"]) not in (CLOCK, SYSEX, ACTIVE_SENSING)]
    for line, t_ns in zip(voice, stamps, strict=True):
        assert 0 <= t_ns - line["t_ns"] < MAX_LATENCY_NS  # perf_counter_ns, same clock as the sender's
    assert source.errors == 0


def _hold_the_interpreter_lock(until: float) -> None:
    """Stall every other Python thread of this process in turns of about 60 ms (one C call keeps the GIL)."""
    started = time.perf_counter()
    sum(range(1_000_000))
    n = max(1_000_000, round(1_000_000 * 0.06 / (time.perf_counter() - started)))  # ~60 ms on this machine
    while time.monotonic() < until:
        sum(range(n))
        time.sleep(0.05)


@pytest.mark.jack
def test_input_timestamps_come_from_the_backend_so_a_stalled_interpreter_does_not_move_them(
    jack_server: str, peers: list[Peer]
) -> None:
    keyboard = _sender(peers, "kbd")
    got: list[tuple[int, int]] = []  # (stamp, when the callback ran)
    source = open_input("kbd", api="jack", callback=lambda data, t_ns: got.append((t_ns, time.perf_counter_ns())))
    try:
        keyboard.tell({"stream": 300, "interval": 0.005})
        keyboard.expect("streaming")
        while len(got) < 20:  # read promptly for a while (0.1 s), then stall for 1 s
            time.sleep(0.001)
        _hold_the_interpreter_lock(time.monotonic() + 1.0)
        sent = keyboard.expect("streamed", timeout=20)["t_ns"]
        deadline = time.monotonic() + 5
        while len(got) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        source.close()
    assert len(got) == len(sent) == 300
    stamp_late = [(stamp - t) / 1e6 for t, (stamp, _) in zip(sent, got, strict=True)]
    read_late = [(read - t) / 1e6 for t, (_, read) in zip(sent, got, strict=True)]
    # the stalls held the reader back (that is what is measured against) ...
    assert max(read_late) > 25, f"no stall happened: read at most {max(read_late):.1f} ms after sending"
    # ... and the stamps say when JACK delivered (its next periods of 2.7 ms), not when Python read
    assert min(stamp_late) >= 0
    assert max(stamp_late) < 10, f"stamps up to {max(stamp_late):.1f} ms late, reads up to {max(read_late):.1f} ms"
    assert [stamp for stamp, _ in got] == sorted(stamp for stamp, _ in got)


@pytest.mark.jack
def test_a_failing_callback_is_counted_and_later_messages_still_arrive(jack_server: str, peers: list[Peer]) -> None:
    keyboard = _sender(peers, "kbd")
    got: queue.Queue[tuple[int, ...]] = queue.Queue()

    def callback(data: tuple[int, ...], t_ns: int) -> None:
        if data[1] == 61:
            raise RuntimeError("a bug in the planner")
        got.put(data)

    source = open_input("kbd:kbd", api="jack", callback=callback)
    try:
        for note in (60, 61, 62):
            keyboard.send((0x90, note, 100))
            time.sleep(GAP_S)
        assert [got.get(timeout=5), got.get(timeout=5)] == [(0x90, 60, 100), (0x90, 62, 100)]
    finally:
        source.close()
    assert (source.errors, source.received) == (1, 3)


@pytest.mark.jack
def test_unknown_and_ambiguous_port_names_list_the_available_ports(jack_server: str, peers: list[Peer]) -> None:
    _sender(peers, "kbd-a")
    _sender(peers, "kbd-b")
    with pytest.raises(PortNotFoundError) as caught:
        open_input("no-such-keyboard", api="jack")
    message = str(caught.value)
    assert "'no-such-keyboard'" in message and "jack" in message
    assert "'kbd-a:kbd-a'" in message and "'kbd-b:kbd-b'" in message
    with pytest.raises(PortNotFoundError, match="'kbd' matches several ports on the jack MIDI API"):
        open_input("kbd", api="jack")
    with pytest.raises(PortNotFoundError, match="no MIDI output port matches 'no-such-synth'"):
        open_output("no-such-synth", api="jack", virtual=False)


@pytest.mark.jack
def test_find_keyboard_skips_livegens_own_ports(jack_server: str, peers: list[Peer]) -> None:
    out = open_output(api="jack")
    own_in = open_input(api="jack", virtual=True)
    try:
        inputs, outputs = list_ports("jack")
        assert "livegen:livegen" in inputs
        assert "livegen in:livegen in" in outputs
        assert find_keyboard("jack") is None
        _sender(peers, "kbd")
        assert find_keyboard("jack") == "kbd:kbd"
    finally:
        own_in.close()
        out.close()


@pytest.mark.jack
def test_connected_output_reaches_a_virtual_input(jack_server: str) -> None:
    got: queue.Queue[tuple[int, ...]] = queue.Queue()
    source = open_input(api="jack", virtual=True, callback=lambda data, t_ns: got.put(data))
    try:
        assert source.port == "livegen in"
        out = open_output("livegen in", api="jack", virtual=False)
        try:
            assert out.port == "livegen in:livegen in"
            for data in PHRASE:
                out.send(data)
                time.sleep(GAP_S)
            assert [got.get(timeout=5) for _ in PHRASE] == PHRASE
        finally:
            out.close()
    finally:
        source.close()
    out.send(PHRASE[0])
    assert (out.errors, out.dropped) == (0, 1)  # a closed port drops and counts


@pytest.mark.jack
def test_memory_twins_tell_the_truth(jack_server: str, peers: list[Peer]) -> None:
    # Output: the same sends into the twin and into a real port an independent client reads.
    twin_out = MemoryOutput()
    out = open_output(api="jack")
    try:
        peer = _receiver(peers, "livegen", len(PHRASE))
        peer.expect("ready")
        for data in PHRASE:
            twin_out.send(data)
            out.send(data)
            time.sleep(GAP_S)
        real = [data for _, data in _collect(peer)]
    finally:
        out.close()
    assert twin_out.received() == real == PHRASE

    # Input: the same performance injected into the twin and played into a real port.
    twin_got: list[tuple[tuple[int, ...], int]] = []
    twin_in = MemoryInput()
    twin_in.set_callback(lambda data, t_ns: twin_got.append((data, t_ns)))
    real_got: queue.Queue[tuple[tuple[int, ...], int]] = queue.Queue()
    keyboard = _sender(peers, "kbd")
    source = open_input("kbd", api="jack", callback=lambda data, t_ns: real_got.put((data, t_ns)))
    try:
        for data in PHRASE:
            twin_in.inject(data)
            keyboard.send(data)
            time.sleep(GAP_S)
        real_in = [real_got.get(timeout=5) for _ in PHRASE]
    finally:
        source.close()
    assert [d for d, _ in twin_got] == [d for d, _ in real_in] == PHRASE
    for got in (twin_got, real_in):
        assert all(type(data) is tuple and type(t_ns) is int for data, t_ns in got)
        assert [t for _, t in got] == sorted(t for _, t in got)


CLOSE_UNDER_LOAD = """
import sys, time
from livegen.io.midi_input import open_input
for _ in range(int(sys.argv[1])):
    source = open_input("stream", api="jack", callback=lambda data, t_ns: None, poll_interval=0.001)
    time.sleep(0.02)
    source.close()
print("closed", source.received)
"""


@pytest.mark.jack
def test_closing_an_input_while_messages_stream_in_neither_hangs_nor_crashes(
    jack_server: str, peers: list[Peer]
) -> None:
    # With an rtmidi callback (Python on JACK's process thread) this deadlocked the
    # interpreter or crashed it within a few dozen closes; run it in a child so a
    # regression fails instead of hanging the suite.
    stream = _sender(peers, "stream")
    stream.tell({"stream": 20000, "interval": 0.0005})
    stream.expect("streaming")
    try:
        done = subprocess.run(
            [sys.executable, "-c", CLOSE_UNDER_LOAD, "25"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"closing an input under load hung: {err.stderr!r}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("closed")
    assert int(done.stdout.split()[1]) > 0  # messages were flowing when it closed


@pytest.mark.jack
def test_a_hung_jack_server_makes_probe_and_open_fail_in_bounded_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    jackd = find_jackd()
    if jackd is None:
        pytest.skip("jackd not installed: run `make setup` (Debian package jackd2)")
    server = JackServer(jackd, f"livegen-hung-{os.getpid()}-{secrets.token_hex(3)}", tmp_path)
    server.start()
    try:
        server.wait_ready()
        monkeypatch.setenv("JACK_DEFAULT_SERVER", server.name)
        server.pause()  # SIGSTOP: an in-process client open would now wait forever
        started = time.monotonic()
        reason = probe_api("jack", timeout=1.0)
        assert reason is not None and "did not answer within 1 s" in reason
        assert server.name in reason
        monkeypatch.setattr(midi_api, "PROBE_TIMEOUT", 1.0)
        with pytest.raises(BackendUnavailableError, match="stopped or hung"):
            open_output(api="jack")
        assert time.monotonic() - started < 10
        assert capfd.readouterr().err == ""
    finally:
        server.stop()
