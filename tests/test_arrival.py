"""Arrival times from the backend's delta times (:mod:`livegen.io.arrival`), on made-up streams."""

from __future__ import annotations

from livegen.io.arrival import ArrivalStamps

MS = 1_000_000


def feed(stamps: ArrivalStamps, arrivals: list[int], polls: list[int], lost: frozenset[int] = frozenset()) -> list[int]:
    """Stamp messages that arrived at ``arrivals`` and were read at ``polls``.

    The backend's delta is from the message before (from the one before that too for a
    message whose own delta was lost: ``lost`` holds the indices of messages whose
    predecessor the backend saw but never queued).
    """
    out = []
    for k, (arrived, polled) in enumerate(zip(arrivals, polls, strict=True)):
        delta_ns = 0 if k == 0 else arrived - arrivals[k - 1]
        if k in lost:
            delta_ns //= 2  # measured from an ignored message halfway between
        out.append(stamps.stamp(delta_ns / 1e9, polled))
    return out


def test_promptly_read_messages_are_stamped_at_their_arrival_give_or_take_the_best_read() -> None:
    arrivals = [1000 * MS + k * 18 * MS for k in range(100)]
    polls = [t + (k * 7919 % 1000) * 1000 for k, t in enumerate(arrivals)]  # 0..1 ms late
    stamps = feed(ArrivalStamps(), arrivals, polls)
    errors = [s - a for s, a in zip(stamps, arrivals, strict=True)]
    assert all(0 <= e <= 1 * MS for e in errors)
    assert max(errors[20:]) <= min(p - a for p, a in zip(polls, arrivals, strict=True)) + 1  # the best read so far


def test_a_stall_that_reads_a_run_of_messages_at_once_does_not_bunch_them() -> None:
    arrivals = [k * 18 * MS for k in range(40)]
    polls = list(arrivals)
    for k in range(20, 26):
        polls[k] = arrivals[25] + 3 * MS  # six pulses read together, up to 93 ms late
    stamps = feed(ArrivalStamps(), arrivals, polls)
    assert stamps == arrivals


def test_a_long_silence_keeps_the_offset_and_a_late_read_after_it_is_stamped_right() -> None:
    arrivals = [k * 10 * MS for k in range(10)] + [60_000 * MS, 60_010 * MS]
    polls = list(arrivals)
    polls[10] += 80 * MS  # the first message after a minute's silence is read during a stall
    stamps = feed(ArrivalStamps(), arrivals, polls)
    assert stamps == arrivals


def test_lost_deltas_make_the_stamps_early_only_until_the_window_has_moved_on() -> None:
    window_messages, window_ns = 16, 200 * MS
    arrivals = [k * 20 * MS for k in range(200)]
    polls = [t + MS // 2 for t in arrivals]
    lost = frozenset({50})  # 10 ms of the backend's time lost at message 50
    stamps = feed(ArrivalStamps(window_messages, window_ns), arrivals, polls, lost)
    errors = [(s - a) / MS for s, a in zip(stamps, arrivals, strict=True)]
    assert all(abs(e - 0.5) < 1e-6 for e in errors[:50])
    assert min(errors[50:]) >= -10 - 1e-6  # never earlier than what was lost
    assert all(abs(e - 0.5) < 1e-6 for e in errors[50 + window_messages + 1 :])  # both windows passed: right again


def test_stamps_never_go_back_and_never_pass_the_read() -> None:
    arrivals = [k * 5 * MS for k in range(300)]
    polls = [t + (k * 104729 % 40) * MS for k, t in enumerate(arrivals)]
    polls = [max(polls[: k + 1]) for k in range(len(polls))]  # reads come in order
    lost = frozenset(range(7, 300, 13))
    stamps = feed(ArrivalStamps(8, 30 * MS), arrivals, polls, lost)
    assert stamps == sorted(stamps)
    assert all(s <= p for s, p in zip(stamps, polls, strict=True))


def test_reset_starts_over_for_a_new_client() -> None:
    stamps = ArrivalStamps()
    assert stamps.stamp(0.0, 100 * MS) == 100 * MS
    assert stamps.stamp(0.010, 110 * MS) == 110 * MS
    stamps.reset()
    assert stamps.stamp(0.0, 500 * MS) == 500 * MS  # a new client's first delta is 0 again
    assert stamps.stamp(0.005, 520 * MS) == 505 * MS


def test_a_delta_lost_to_an_ignored_message_is_caught_by_the_read_that_found_the_queue_empty() -> None:
    # a SysEx RtMidi ignores comes 2 s after a note and 1 s before the next: that note's
    # delta is 1 s, not 3 s; the reader found the queue empty 0.7 ms before it read the note
    stamps = ArrivalStamps()
    assert stamps.stamp(0.0, 1_000 * MS) == 1_000 * MS
    stamps.found_empty(3_999 * MS + 600_000)
    assert stamps.stamp(1.0, 4_000 * MS + 300_000) == 4_000 * MS + 300_000  # its read, not 2 s early
    stamps.found_empty(4_010 * MS)
    assert stamps.stamp(0.020, 4_020 * MS + 500_000) == 4_020 * MS + 300_000  # 20 ms on, as the backend says
