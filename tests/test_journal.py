"""The crash journal (livegen.io.journal): what it counts, what the next start sends, what it survives.

The ports are real :class:`RtMidiOutput` objects over a fake rtmidi client (it records
the bytes), so the journal is exercised through the same ``_send`` the scheduler uses.
Crashes are real: a child process journals a port and sends ``SIGKILL`` to itself.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from livegen.errors import ConfigError
from livegen.io import journal as journal_module
from livegen.io.journal import (
    JOURNAL_SIZE,
    MAGIC,
    MAX_SLOTS,
    STATE_DIR_ENV,
    VIRTUAL_CLEANUP_WAIT_S,
    Leftovers,
    NoteJournal,
    guard_output,
    journal_path,
    port_key,
    read_journal,
    state_dir,
)
from livegen.io.midi_output import RtMidiOutput

ON, OFF, CC = 0x90, 0x80, 0xB0


class FakeClient:
    """Stands in for ``rtmidi.MidiOut``: records what is sent; may look at the journal meanwhile."""

    def __init__(self, on_send=None) -> None:
        self.sent: list[tuple[int, ...]] = []
        self.on_send = on_send
        self.deleted = False

    def send_message(self, data) -> None:
        if self.on_send is not None:
            self.on_send(tuple(data))
        self.sent.append(tuple(data))

    def close_port(self) -> None:
        pass

    def delete(self) -> None:
        self.deleted = True


def make_port(name: str = "synth", *, virtual: bool = False, on_send=None) -> tuple[RtMidiOutput, FakeClient]:
    client = FakeClient(on_send)
    return RtMidiOutput(client, name=name, api="alsa", port=name, virtual=virtual), client


def journal_of(port: RtMidiOutput) -> NoteJournal:
    journal = port._journal
    assert isinstance(journal, NoteJournal), "the port has no journal"
    return journal


def journal_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- what it counts (hand-computed) -------------------------------------------------------


def test_note_ons_and_offs_are_counted_per_channel_and_pitch(tmp_path):
    port, client = make_port()
    assert guard_output(port, folder=tmp_path) == Leftovers()  # nothing was left: nothing sent
    assert client.sent == []
    for data in [
        (ON | 0, 60, 100),  # ch1 60: 1
        (ON | 0, 60, 90),  # ch1 60: 2 (a second note-on of the same key)
        (ON | 1, 64, 80),  # ch2 64: 1
        (OFF | 0, 60, 0),  # ch1 60: 1
        (ON | 9, 36, 127),  # ch10 36: 1
        (ON | 1, 64, 0),  # velocity 0 is a note-off: ch2 64: 0
        (OFF | 5, 70, 0),  # a note-off of nothing: stays 0, and does not mark channel 6 used
        (ON | 0, 72, 1),  # ch1 72: 1
    ]:
        port.send(data)
    left = journal_of(port).leftovers()
    assert left.notes == ((0, 60, 1), (0, 72, 1), (9, 36, 1))
    assert left.sustained == ()
    assert left.channels == (0, 1, 9)
    assert left.messages() == [
        (0x80, 60, 0), (0x80, 72, 0), (0x89, 36, 0),
        (0xB0, 64, 0), (0xB0, 123, 0), (0xB0, 120, 0),
        (0xB1, 64, 0), (0xB1, 123, 0), (0xB1, 120, 0),
        (0xB9, 64, 0), (0xB9, 123, 0), (0xB9, 120, 0),
    ]  # fmt: skip
    # The page is the file: what a reader of the file sees (the next start) is the same.
    on_disk = journal_of(port).path.read_bytes()
    assert read_journal(on_disk, port_key("alsa", "synth"), journal_of(port).path) == left
    port.close()


def test_sustain_pedal_press_and_release_across_channels(tmp_path):
    port, _ = make_port()
    guard_output(port, folder=tmp_path)
    for data in [
        (CC | 2, 64, 127),  # ch3 down
        (CC | 3, 64, 64),  # ch4 down (64 is down)
        (CC | 4, 64, 63),  # ch5 up (63 is up): used, never down
        (CC | 2, 64, 0),  # ch3 up
        (CC | 7, 64, 100),  # ch8 down ...
        (CC | 7, 121, 0),  # ... and reset all controllers releases it
        (CC | 11, 1, 90),  # a modulation CC: the channel is used
    ]:
        port.send(data)
    left = journal_of(port).leftovers()
    assert left.notes == ()
    assert left.sustained == (3,)
    assert left.channels == (2, 3, 4, 7, 11)
    port.close()


def test_all_notes_off_and_all_sound_off_clear_only_their_channel(tmp_path):
    port, _ = make_port()
    guard_output(port, folder=tmp_path)
    for pitch in (60, 64, 67):
        port.send((ON | 0, pitch, 100))
        port.send((ON | 1, pitch, 100))
        port.send((ON | 2, pitch, 100))
    port.send((CC | 2, 64, 127))
    port.send((CC | 0, 123, 0))  # all notes off on ch1
    port.send((CC | 2, 120, 0))  # all sound off on ch3: its notes go, its pedal stays down
    left = journal_of(port).leftovers()
    assert left.notes == ((1, 60, 1), (1, 64, 1), (1, 67, 1))
    assert left.sustained == (2,)
    port.send((CC | 1, 126, 1))  # mono mode on: also all notes off
    assert journal_of(port).leftovers().notes == ()
    port.close()


def test_counts_saturate_and_other_messages_are_not_journalled(tmp_path):
    port, client = make_port()
    guard_output(port, folder=tmp_path)
    for _ in range(300):
        port.send((ON | 4, 50, 10))
    for data in [(0xF8,), (0xFA,), (0xC3, 5), (0xE6, 0, 64), (0xF0, 1, 2, 0xF7), (0x40, 1, 2)]:
        port.send(data)  # clock, start, program change, pitch bend, SysEx, a stray data byte
    left = journal_of(port).leftovers()
    assert left.notes == ((4, 50, 255),)
    assert left.channels == (4,)
    assert len(client.sent) == 306  # all of them still went out
    port.close()


def test_a_note_on_is_journalled_before_it_is_sent_and_a_note_off_after(tmp_path):
    seen: list[tuple[tuple[int, ...], int]] = []
    holder: dict[str, Path] = {}

    def look(data):  # the backend's send: what would the next start read right now?
        raw = holder["path"].read_bytes()
        left = read_journal(raw, port_key("alsa", "synth"), holder["path"])
        seen.append((data, sum(count for _, _, count in left.notes) + 100 * len(left.sustained)))

    port, _ = make_port(on_send=look)
    guard_output(port, folder=tmp_path)
    holder["path"] = journal_of(port).path
    port.send((ON, 60, 100))
    port.send((CC, 64, 127))
    port.send((CC, 64, 0))
    port.send((OFF, 60, 0))
    # While each message is with the backend the journal already holds the note-on or the
    # pedal press, and still holds the note or pedal being released.
    assert seen == [((ON, 60, 100), 1), ((CC, 64, 127), 101), ((CC, 64, 0), 101), ((OFF, 60, 0), 1)]
    assert journal_of(port).leftovers().notes == ()
    port.close()


def test_a_closed_port_drops_and_journals_nothing(tmp_path):
    port, client = make_port()
    guard_output(port, folder=tmp_path)
    journal = journal_of(port)
    port.close()
    assert journal.closed and port._journal is None
    port.send((ON, 60, 100))
    assert client.sent == [] and port.dropped == 1


# --- clean and unclean ends ---------------------------------------------------------------


def test_a_clean_close_removes_the_journal_and_one_with_notes_sounding_keeps_it(tmp_path, caplog):
    port, _ = make_port()
    guard_output(port, folder=tmp_path)
    port.send((ON, 60, 100))
    port.send((OFF, 60, 0))
    port.close()
    assert journal_files(tmp_path) == []  # nothing sounded: nothing to keep

    port, _ = make_port()
    guard_output(port, folder=tmp_path)
    port.send((ON | 3, 61, 100))
    with caplog.at_level(logging.WARNING, logger="livegen.io.journal"):
        port.close()  # as if the port was lost before the note-off could go
    assert "1 note(s) still sounding" in caplog.text
    assert journal_files(tmp_path) == [journal_path(tmp_path, "alsa:synth", 0).name]

    again, client = make_port()
    left = guard_output(again, folder=tmp_path)
    assert left.notes == ((3, 61, 1),)
    assert client.sent == [(0x83, 61, 0), (0xB3, 64, 0), (0xB3, 123, 0), (0xB3, 120, 0)]
    again.close()
    assert journal_files(tmp_path) == []


CHILD = r"""
import json, os, signal, sys
from pathlib import Path
from livegen.io.journal import guard_output
from livegen.io.midi_output import RtMidiOutput

class Client:
    def send_message(self, data): pass
    def close_port(self): pass
    def delete(self): pass

folder, name, messages, then = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
port = RtMidiOutput(Client(), name=name, api="alsa", port=name, virtual=False)
guard_output(port, folder=Path(folder))
for data in messages:
    port.send(data)
print(port._journal.path, flush=True)
if then == "hold":
    sys.stdin.readline()
os.kill(os.getpid(), signal.SIGKILL)
"""


def run_child(folder: Path, name: str, messages: list[list[int]], then: str = "kill") -> subprocess.Popen[str]:
    """A process that journals port ``name``, sends ``messages``, prints its journal's path and
    kills itself with SIGKILL at once (``kill``) or when its stdin gets a line (``hold``)."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(folder), name, json.dumps(messages), then],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return child


def wait_killed(child: subprocess.Popen[str]) -> str:
    out, err = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL, err
    return out.strip()


TEN_HELD = [
    [CC | 0, 64, 127], [CC | 1, 64, 127], [CC | 9, 64, 100],
    [ON | 0, 60, 100], [ON | 0, 64, 100], [ON | 0, 67, 100], [ON | 0, 72, 100],
    [ON | 1, 48, 90], [ON | 1, 55, 90], [ON | 1, 62, 90],
    [ON | 9, 36, 120], [ON | 9, 38, 120], [ON | 9, 42, 120],
    [ON | 0, 65, 100], [OFF | 0, 65, 0],  # played and released: not left sounding
    [ON | 1, 50, 100], [ON | 1, 50, 0],  # released with a velocity-0 note-on
]  # fmt: skip

TEN_CLEANUP = [
    (0x80, 60, 0), (0x80, 64, 0), (0x80, 67, 0), (0x80, 72, 0),
    (0x81, 48, 0), (0x81, 55, 0), (0x81, 62, 0),
    (0x89, 36, 0), (0x89, 38, 0), (0x89, 42, 0),
    (0xB0, 64, 0), (0xB0, 123, 0), (0xB0, 120, 0),
    (0xB1, 64, 0), (0xB1, 123, 0), (0xB1, 120, 0),
    (0xB9, 64, 0), (0xB9, 123, 0), (0xB9, 120, 0),
]  # fmt: skip


def test_after_kill_9_the_next_start_sends_exactly_the_cleanup_first(tmp_path, caplog):
    path = wait_killed(run_child(tmp_path, "synth", TEN_HELD))
    assert Path(path).exists()  # the page outlived the process
    port, client = make_port()
    with caplog.at_level(logging.WARNING, logger="livegen.io.journal"):
        left = guard_output(port, folder=tmp_path)
    assert client.sent == TEN_CLEANUP
    assert left.sustained == (0, 1, 9) and len(left.pids) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        f"MIDI output 'synth': a jam on it did not end cleanly (pid {left.pids[0]}); sent the note-offs of 10 notes "
        "left sounding (sustain was down on channels 1, 2, 10), then sustain off, all notes off and all sound off "
        "on channels 1, 2, 10"
    ]
    # The new journal is this start's own and empty: a second start finds nothing.
    assert journal_of(port).leftovers() == Leftovers()
    port.send((ON | 2, 70, 100))  # sent after the cleanup, journalled in the fresh journal
    assert client.sent[-1] == (ON | 2, 70, 100)
    port.close()
    assert journal_files(tmp_path) == [Path(path).name]  # kept: the note is still sounding
    other, client2 = make_port()
    guard_output(other, folder=tmp_path)
    assert client2.sent == [(0x82, 70, 0), (0xB2, 64, 0), (0xB2, 123, 0), (0xB2, 120, 0)]
    other.close()


def test_a_port_of_another_name_is_not_cleaned(tmp_path):
    wait_killed(run_child(tmp_path, "synth", TEN_HELD))
    port, client = make_port("drums")
    assert not guard_output(port, folder=tmp_path)
    assert client.sent == []
    port.close()
    port, client = make_port("synth")
    guard_output(port, folder=tmp_path)
    assert client.sent == TEN_CLEANUP
    port.close()


def test_a_virtual_port_waits_for_listeners_before_the_cleanup(tmp_path):
    wait_killed(run_child(tmp_path, "livegen", [[ON, 60, 100]]))
    slept: list[float] = []
    port, client = make_port("livegen", virtual=True, on_send=lambda data: slept.append(-1.0))
    guard_output(port, folder=tmp_path, sleep=slept.append)
    assert slept[0] == VIRTUAL_CLEANUP_WAIT_S and slept[1:] == [-1.0] * 4  # the wait, then the four messages
    assert client.sent == [(0x80, 60, 0), (0xB0, 64, 0), (0xB0, 123, 0), (0xB0, 120, 0)]
    port.close()
    # Nothing left: no wait at all.
    quiet, _ = make_port("livegen", virtual=True)
    guard_output(quiet, folder=tmp_path, sleep=slept.append)
    assert len(slept) == 5
    quiet.close()


# --- two jams on one port -----------------------------------------------------------------


def test_two_live_jams_on_one_port_keep_separate_journals(tmp_path):
    first, first_client = make_port()
    guard_output(first, folder=tmp_path)
    first.send((ON, 60, 100))
    holder = run_child(tmp_path, "synth", [[ON | 1, 62, 100]], then="hold")
    try:
        child_path = holder.stdout.readline().strip()  # type: ignore[union-attr]
        assert child_path == str(journal_path(tmp_path, "alsa:synth", 1))  # slot 0 is ours, held
        second, second_client = make_port()
        guard_output(second, folder=tmp_path)  # both others alive: nothing to clean, a third slot
        assert second_client.sent == []
        assert journal_of(second).path == journal_path(tmp_path, "alsa:synth", 2)
        second.send((ON | 2, 64, 100))
        assert journal_of(first).leftovers().notes == ((0, 60, 1),)
        assert journal_of(second).leftovers().notes == ((2, 64, 1),)
        second.send((OFF | 2, 64, 0))
        second.close()
        assert journal_of(first).leftovers().notes == ((0, 60, 1),)
        holder.stdin.write("\n")  # type: ignore[union-attr]
        holder.stdin.flush()  # type: ignore[union-attr]
        wait_killed(holder)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    # Now the child is dead: a new start cleans its slot up, never the live first jam's.
    third, third_client = make_port()
    guard_output(third, folder=tmp_path)
    assert third_client.sent == [(0x81, 62, 0), (0xB1, 64, 0), (0xB1, 123, 0), (0xB1, 120, 0)]
    assert journal_of(third).path == journal_path(tmp_path, "alsa:synth", 1)
    assert first_client.sent == [(ON, 60, 100)]
    first.send((OFF, 60, 0))
    for port in (first, third):
        port.close()
    assert journal_files(tmp_path) == []


def test_every_dead_slot_is_cleaned_not_only_the_one_taken(tmp_path):
    alive, _ = make_port()
    guard_output(alive, folder=tmp_path)  # slot 0, held all along
    one = run_child(tmp_path, "synth", [[ON | 4, 40, 100]], then="hold")
    two = run_child(tmp_path, "synth", [[ON | 5, 50, 100], [CC | 5, 64, 127]], then="hold")
    try:
        paths = sorted([one.stdout.readline().strip(), two.stdout.readline().strip()])  # type: ignore[union-attr]
        assert paths == [str(journal_path(tmp_path, "alsa:synth", s)) for s in (1, 2)]
        for child in (one, two):
            child.stdin.write("\n")  # type: ignore[union-attr]
            child.stdin.flush()  # type: ignore[union-attr]
            wait_killed(child)
    finally:
        for child in (one, two):
            if child.poll() is None:
                child.kill()
                child.wait()
    port, client = make_port()
    left = guard_output(port, folder=tmp_path)
    assert client.sent == [
        (0x84, 40, 0), (0x85, 50, 0),
        (0xB4, 64, 0), (0xB4, 123, 0), (0xB4, 120, 0),
        (0xB5, 64, 0), (0xB5, 123, 0), (0xB5, 120, 0),
    ]  # fmt: skip
    assert len(left.pids) == 2
    # It kept slot 1 and removed slot 2; slot 0 still belongs to the live jam.
    assert journal_files(tmp_path) == [journal_path(tmp_path, "alsa:synth", s).name for s in (0, 1)]
    for p in (alive, port):
        p.close()


def test_when_every_slot_is_taken_the_port_plays_without_a_journal(tmp_path, caplog):
    ports = []
    for _ in range(MAX_SLOTS):
        port, _ = make_port()
        guard_output(port, folder=tmp_path)
        ports.append(port)
    extra, client = make_port()
    with caplog.at_level(logging.WARNING, logger="livegen.io.journal"):
        guard_output(extra, folder=tmp_path)
    assert f"{MAX_SLOTS} jams already journal this port" in caplog.text
    assert extra._journal is None
    extra.send((ON, 60, 100))
    assert client.sent == [(ON, 60, 100)]
    for port in [*ports, extra]:
        port.close()


# --- files that are not journals ----------------------------------------------------------


def _valid(key: str = "alsa:synth") -> bytearray:
    data = bytearray(JOURNAL_SIZE)
    raw = key.encode()
    struct.pack_into("<8sHHId", data, 0, MAGIC, 1, len(raw), 4242, 0.0)
    data[32 : 32 + len(raw)] = raw
    data[256 + 60] = 1  # channel 1, pitch 60 sounding
    data[2320] = 1  # channel 1 used
    return data


def _other_version() -> bytes:
    data = _valid()
    struct.pack_into("<H", data, 8, 2)
    return bytes(data)


def _bad_flag() -> bytes:
    data = _valid()
    data[2304 + 3] = 7  # sustain flag of channel 4
    return bytes(data)


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"not a journal at all", "is 20 bytes long; a journal is 4096"),
        (bytes(JOURNAL_SIZE), "does not start with the journal mark"),
        (_other_version(), "written by another livegen version (journal version 2, this one reads version 1)"),
        (bytes(_valid("alsa:drums")), "belongs to port 'alsa:drums', not 'alsa:synth'"),
        (_bad_flag(), "the flags of channel 4 are 7 and 0; expected 0 or 1"),
        (bytes(_valid()) + b"\0", "is 4097 bytes long"),
    ],
)
def test_a_corrupt_or_foreign_journal_is_named_ignored_and_replaced(tmp_path, caplog, content, said):
    path = journal_path(tmp_path, "alsa:synth", 0)
    path.write_bytes(content)
    port, client = make_port()
    with caplog.at_level(logging.WARNING, logger="livegen.io.journal"):
        left = guard_output(port, folder=tmp_path)
    assert not left and client.sent == []  # nothing trusted from it
    assert f"crash journal {path}" in caplog.text and said in caplog.text
    assert "ignoring it and replacing it with a new journal" in caplog.text
    assert journal_of(port).path == path and len(path.read_bytes()) == JOURNAL_SIZE
    port.send((ON, 61, 100))
    assert journal_of(port).leftovers().notes == ((0, 61, 1),)
    port.close()


def test_the_valid_journal_fixture_is_read(tmp_path):
    # The hand-made file the corruption cases start from is itself a journal (so each case
    # fails for its one reason only).
    path = journal_path(tmp_path, "alsa:synth", 0)
    path.write_bytes(bytes(_valid()))
    port, client = make_port()
    assert guard_output(port, folder=tmp_path).pids == (4242,)
    assert client.sent == [(0x80, 60, 0), (0xB0, 64, 0), (0xB0, 123, 0), (0xB0, 120, 0)]
    port.close()


def test_a_failed_reset_keeps_the_old_journal_whole(tmp_path, monkeypatch, caplog):
    path = journal_path(tmp_path, "alsa:synth", 0)
    path.write_bytes(bytes(_valid()))
    real_replace = os.replace

    def refuse(src, dst):
        if Path(dst) == path:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", refuse)
    port, client = make_port()
    with caplog.at_level(logging.WARNING, logger="livegen.io.journal"):
        guard_output(port, folder=tmp_path)
    assert len(client.sent) == 4  # the cleanup went out
    assert "has no crash journal" in caplog.text and "No space left on device" in caplog.text
    assert port._journal is None
    assert path.read_bytes() == bytes(_valid())  # intact: the next start repeats the (harmless) cleanup
    assert journal_files(tmp_path) == [path.name]  # and no temporary file is left
    port.close()


def test_an_unusable_state_folder_is_a_warning_not_a_failed_start(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    port, client = make_port()
    with caplog.at_level(logging.WARNING, logger="livegen.io.journal"):
        assert not guard_output(port, folder=blocker / "journals")
    assert "MIDI output 'synth' has no crash journal" in caplog.text and str(blocker) in caplog.text
    port.send((ON, 60, 100))
    assert client.sent == [(ON, 60, 100)]
    port.close()


# --- where ------------------------------------------------------------------------------------


def test_state_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "mine"))
    assert state_dir() == tmp_path / "mine"
    monkeypatch.delenv(STATE_DIR_ENV)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir() == tmp_path / "xdg" / "livegen"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/xdg")  # the XDG spec: ignore a relative path
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_dir() == tmp_path / "home" / ".local" / "state" / "livegen"
    monkeypatch.setenv(STATE_DIR_ENV, "relative")
    with pytest.raises(ConfigError, match=r"LIVEGEN_STATE_DIR='relative': expected an absolute folder path"):
        state_dir()


def test_guard_uses_the_state_dir_and_names_jack_ports_by_server(monkeypatch, tmp_path):
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("JACK_DEFAULT_SERVER", "studio")
    assert port_key("jack", "livegen") == "jack@studio:livegen"
    port, _ = make_port("a/b: c")
    guard_output(port)
    path = journal_of(port).path
    assert path.parent == tmp_path and path.name.startswith("alsa_a_b_c-") and path.name.endswith(".0.journal")
    port.close()


def test_the_journal_layout_fits_its_page():
    assert journal_module._END <= JOURNAL_SIZE
    assert journal_module._KEY_AT + journal_module._KEY_MAX <= journal_module._NOTES_AT
