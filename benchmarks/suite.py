"""The whole suite in one go: ``livegen bench [--quick] [--json FILE] [--only ITEMS]``.

Context: setup. Runs the benchmarks in the order they were built, catches each
item's failure so that the others still run, says which ran and which were skipped and
why, prints a table of each headline figure beside its target, and writes everything
(with the machine and its load) as JSON. Benchmarks are not tests: nothing here fails
on a missed target.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import machine


@dataclass(frozen=True)
class Item:
    number: int
    key: str
    title: str
    run: Callable[[bool], dict[str, Any]]
    headline: Callable[[dict[str, Any]], list[tuple[str, str, str, bool | None]]]  # figure, value, target, met


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _ms(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f} ms"


def _onset(quick: bool) -> dict[str, Any]:
    from benchmarks import onset

    return onset.measure(quick=quick)


def _onset_head(r: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    rows = []
    for cond in ("idle", "hog"):
        p50, p99, mx = (_get(r, cond, "inside", k) for k in ("p50_ms", "p99_ms", "max_ms"))
        met = None
        if p99 is not None:
            met = p99 <= 0.5 and (cond == "idle" or mx <= 2.0)
        target = "p99 <= 0.5 ms" + (", max <= 2 ms" if cond == "hog" else "")
        rows.append((f"port onset error, {cond}", f"p50 {_ms(p50)}, p99 {_ms(p99)}, max {_ms(mx)}", target, met))
    return rows


def _outside(quick: bool) -> dict[str, Any]:
    from benchmarks import onset

    return onset.measure_outside(quick=quick)


def _outside_head(r: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    p50, p99, mx = (_get(r, "outside", k) for k in ("p50_ms", "p99_ms", "max_ms"))
    return [
        ("arrival at a JACK peer", f"p50 {_ms(p50)}, p99 {_ms(p99)}, max {_ms(mx)}", "(JACK period 2.667 ms)", None)
    ]


def _synth(quick: bool) -> dict[str, Any]:
    from benchmarks import synth

    return synth.measure(quick=quick)


def _synth_head(r: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    exact = _get(r, "offline", "exact")
    vs_plan = _get(r, "offline", "error_vs_plan_frames")
    rt = _get(r, "realtime_jack", "error_frames")
    ok = _get(r, "realtime_jack", "within_one_block_plus_fluid_grid")
    return [
        ("synth offline onset", f"exact on fluidsynth's grid: {exact}; vs plan {vs_plan}", "exact", exact),
        ("synth JACK onset (frames)", f"{rt}", "<= 1 block (128) + 64-frame grid", ok),
    ]


def _reaction(quick: bool) -> dict[str, Any]:
    from benchmarks import replan

    return replan.measure_all(quick)


def _reaction_head(r: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    rows = []
    for name, m in (_get(r, "models") or {}).items():
        p50, p99 = m.get("reaction_p50_ms"), m.get("reaction_p99_ms")
        step = m.get("kind") == "step"
        met = (p99 <= 2.0) if (step and p99 is not None) else None
        rows.append(
            (
                f"reaction {name} ({m.get('kind')})",
                f"p50 {_ms(p50)}, p99 {_ms(p99)}",
                "p99 <= 2 ms" if step else "-",
                met,
            )
        )
    return rows


def _inference(quick: bool) -> dict[str, Any]:
    from benchmarks import inference

    return inference.measure(quick=quick)


def _inference_head(r: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    rows = []
    for name, m in (_get(r, "families") or {}).items():
        ratio = m.get("torch_over_onnxruntime")
        value = (
            f"ort {_ms(m.get('onnxruntime_p50_ms'))}, torch {_ms(m.get('torch_eager_p50_ms'))}, x{ratio}"
            if ratio
            else str(m.get("error"))
        )
        folk = name == "folk-lstm"
        rows.append((f"inference {name}", value, ">= 5x" if folk else "-", (ratio >= 5.0) if folk and ratio else None))
    return rows


def _capacity(quick: bool) -> dict[str, Any]:
    from benchmarks import capacity

    return capacity.measure(quick=quick)


def _capacity_head(r: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    n = r.get("capacity_voices")
    if n is not None and r.get("ceiling_reached") and n < 32:  # quick mode stops early
        return [("capacity (voices, no event > 1 ms)", f">= {n} (tried only up to {n})", ">= 32", None)]
    return [("capacity (voices, no event > 1 ms)", str(n), ">= 32", None if n is None else n >= 32)]


def _peer(quick: bool) -> dict[str, Any]:
    from benchmarks import notochord_peer

    return notochord_peer.measure(quick=quick)


def _peer_head(r: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    a, b = r.get("notochord_feed_query_p50_ms"), r.get("livegen_step_p50_ms")
    return [("Notochord feed+query vs livegen step", f"{_ms(a)} vs {_ms(b)}, x{r.get('ratio')}", "(comparison)", None)]


def _startup(quick: bool) -> dict[str, Any]:
    from benchmarks import startup

    return startup.measure(quick=quick)


def _startup_head(r: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    first = _get(r, "first_note", "first_note_s_median")
    rss_port = _get(r, "first_note", "peak_rss_mb_max")
    rss_default = _get(r, "default_jam", "peak_rss_mb")
    return [
        (
            "command to first note",
            "n/a" if first is None else f"{first:.3f} s",
            "<= 1 s",
            None if first is None else first <= 1.0,
        ),
        (
            "jam peak RSS (default, synth)",
            f"{rss_default} MB",
            "<= 150 MB",
            None if rss_default is None else rss_default <= 150,
        ),
        ("jam peak RSS (JACK MIDI port)", f"{rss_port} MB", "<= 150 MB", None if rss_port is None else rss_port <= 150),
    ]


def _flood(quick: bool) -> dict[str, Any]:
    from benchmarks import flood

    return flood.measure(seconds=3.0 if quick else 10.0)


def _flood_head(r: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    rows: list[tuple[str, str, str, bool | None]] = []
    for run in r.get("runs", []):
        if not run["input_handling"].startswith("admission"):
            continue
        late = run["pulse_lateness_at_peer_in_flood"]
        due, on_time = run["pulses_sent_for_flood"], run["pulses_in_time_at_peer"]
        rows.append(
            (
                f"MIDI clock out under a {run['rate_per_s']}/s input flood",
                f"{on_time}/{due} pulses within 5 ms; at the peer p99 {_ms(late.get('p99_ms'))}, "
                f"max {_ms(late.get('max_ms'))}; {run['messages_dropped_counted']} inputs dropped, counted",
                "max 0.1 ms after the reported latency",
                late.get("max_ms", 1e9) <= 0.1,
            )
        )
    return rows


def _arrival(quick: bool) -> dict[str, Any]:
    from benchmarks import arrival

    return arrival.measure(seconds=2.0 if quick else 5.0)


def _arrival_head(r: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    rows: list[tuple[str, str, str, bool | None]] = []
    for run in r.get("runs", []):
        stamp, read = run["stamp_lateness"], run["read_lateness"]
        rows.append(
            (
                f"input stamps, {run['condition']}",
                f"stamp after the send p99 {_ms(stamp.get('p99_ms'))}, max {_ms(stamp.get('max_ms'))} "
                f"(read by Python: p99 {_ms(read.get('p99_ms'))}, max {_ms(read.get('max_ms'))})",
                "max one JACK period (2.7 ms) + 1 ms",
                stamp.get("max_ms", 1e9) <= 3.7,
            )
        )
    return rows


ITEMS: tuple[Item, ...] = (
    Item(1, "onset", "onset error at the output port", _onset, _onset_head),
    Item(4, "reaction", "reaction: performer note to re-plan committed", _reaction, _reaction_head),
    Item(5, "inference", "inference per step: onnxruntime vs PyTorch eager", _inference, _inference_head),
    Item(6, "capacity", "capacity: simultaneous voices", _capacity, _capacity_head),
    Item(8, "startup", "start to first note, and footprint", _startup, _startup_head),
    Item(3, "synth", "built-in synth onset error", _synth, _synth_head),
    Item(2, "outside", "onset error seen from a separate JACK client", _outside, _outside_head),
    Item(7, "peer", "Notochord peer", _peer, _peer_head),
    Item(9, "flood", "an input flood: MIDI clock out, and what is dropped", _flood, _flood_head),
    Item(10, "arrival", "input arrival stamps with the interpreter lock held", _arrival, _arrival_head),
)


def select(only: list[str] | None) -> list[Item]:
    """The items named in ``only`` (numbers or keys), in suite order; ValueError naming the unknown."""
    if not only:
        return list(ITEMS)
    wanted = {w.strip() for part in only for w in part.split(",") if w.strip()}
    known = {str(i.number) for i in ITEMS} | {i.key for i in ITEMS}
    unknown = sorted(wanted - known)
    if unknown:
        names = ", ".join(f"{i.number}/{i.key}" for i in sorted(ITEMS, key=lambda i: i.number))
        raise ValueError(f"unknown benchmark item(s) {', '.join(unknown)}: expected numbers or names among {names}")
    return [i for i in ITEMS if str(i.number) in wanted or i.key in wanted]


def run_all(items: list[Item], *, quick: bool, say: Callable[[str], None] = print) -> dict[str, Any]:
    report: dict[str, Any] = {
        "suite": "livegen bench",
        "quick": quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "items": {},
        "ran": [],
        "skipped": {},
        "not_selected": [f"{i.number}:{i.key}" for i in ITEMS if i not in items],
    }
    for item in items:
        say(f"livegen bench: item {item.number} ({item.key}): {item.title} ...")
        started = time.perf_counter()
        try:
            result = item.run(quick)
        except Exception as err:  # an item's failure is reported, the others still run
            result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-2000:]}
        result["elapsed_s"] = round(time.perf_counter() - started, 1)
        report["items"][f"{item.number}:{item.key}"] = result
        reason = result.get("skipped") or result.get("error")
        if reason:
            report["skipped"][f"{item.number}:{item.key}"] = reason
            say(f"livegen bench: item {item.number} skipped: {str(reason).splitlines()[0]}")
        else:
            report["ran"].append(f"{item.number}:{item.key}")
    report["machine"]["loadavg_at_end"] = machine()["loadavg"]
    report["table"] = [
        {"item": item.number, "figure": f, "value": v, "target": t, "met": m}
        for item in items
        if f"{item.number}:{item.key}" in report["ran"]
        for f, v, t, m in item.headline(report["items"][f"{item.number}:{item.key}"])
    ]
    return report


def print_table(report: dict[str, Any], say: Callable[[str], None] = print) -> None:
    m = report["machine"]
    say(f"machine: {m['cpu']}, {m['cores']} cores, load {m['loadavg']} -> {m.get('loadavg_at_end')}")
    for row in report["table"]:
        mark = {True: "met", False: "MISSED", None: ""}[row["met"]]
        say(f"  {row['item']}  {row['figure']:<40} {row['value']:<60} target {row['target']:<22} {mark}")
    say(f"ran: {', '.join(report['ran']) or 'none'}")
    for key, reason in report["skipped"].items():
        say(f"skipped {key}: {str(reason).splitlines()[0]}")


def write_json(report: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, dest="json_path")
    parser.add_argument("--only", action="append")
    args = parser.parse_args(argv)
    report = run_all(select(args.only), quick=args.quick)
    print_table(report)
    if args.json_path:
        print(f"JSON -> {write_json(report, args.json_path)}")
    return 0
