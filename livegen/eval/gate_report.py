"""The quality gate's report: one row per check (figure, interval, threshold, verdict), its JSON,
and its record in a package (the manifest's ``[gate]`` and the model card's "Quality gate" section).

Context: setup.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from livegen.errors import ConfigError
from livegen.eval.gate import GateResult
from livegen.eval.report import round_sig
from livegen.music.atomic import write_atomically

#: Short names of the modes for the table.
MODE_SHORT = {"call-response": "answer", "accompany": "accomp", "held-out": "nll"}


def gate_table(result: GateResult) -> Table:
    """One row per check; fits 80 columns (names and rules are short, nothing wraps)."""
    table = Table(title=f"quality gate: {result.model}", title_justify="left", box=None, pad_edge=False)
    for column, justify in (
        ("check", "left"),
        ("mode", "left"),
        ("model", "right"),
        ("95% CI", "right"),
        ("truth", "right"),
        ("passes when", "left"),
        ("", "left"),
    ):
        table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for check in result.checks:
        interval = f"{_num(check.interval[0])}-{_num(check.interval[1])}" if check.interval else ""
        truth = "" if check.truth is None else _num(check.truth)
        mark = "[green]pass[/]" if check.passed else "[red]FAIL[/]"
        name = check.name.replace("_", " ")
        table.add_row(name, MODE_SHORT[check.mode], _num(check.figure), interval, truth, check.threshold, mark)
    return table


def _num(value: float) -> str:
    """Two decimals (one from 10 up): every figure of the gate reads at that precision."""
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def print_gate(result: GateResult, console: Console | None = None) -> None:
    console = console or Console()
    o = result.options
    sampling = ", ".join(f"{k} {v:g}" for k, v in result.sampling.items())
    console.print(
        f"[bold]{result.model}[/]: {result.phrases} phrases of {result.seed_source}, {o.bars} bars each, "
        f"{o.rng_seeds} draw(s) from rng seed {o.rng_seed}, {sampling}"
    )
    console.print(gate_table(result))
    overlaps = result.overlaps
    for feature in overlaps["model"]:
        row = ", ".join(f"{system} {values[feature]:.3f}" for system, values in overlaps.items())
        console.print(f"  overlap {feature}: {row}")
    if result.likelihood is not None:
        lk = result.likelihood
        console.print(f"  held-out NLL per {lk.unit}: model {lk.model:.4g}, n-gram {lk.ngram:.4g} ({lk.count} scored)")
    for warning in result.warnings:
        console.print(f"[yellow]note:[/] {warning}")
    verdict = (
        "[green]PASSED[/]" if result.passed else f"[red]FAILED[/] ({sum(not c.passed for c in result.checks)} checks)"
    )
    console.print(f"gate: {verdict}")


def gate_json(result: GateResult) -> dict[str, Any]:
    def fig(f: Any) -> dict[str, Any]:
        return {"mean": round_sig(f.mean), "low": round_sig(f.low), "high": round_sig(f.high)}

    return {
        "model": result.model,
        "passed": result.passed,
        "phrases": result.phrases,
        "seed_source": result.seed_source,
        "options": {
            "seeds": result.options.seeds,
            "rng_seeds": result.options.rng_seeds,
            "bars": result.options.bars,
            "rng_seed": result.options.rng_seed,
            "modes": list(result.options.modes),
        },
        "sampling": {k: round_sig(v) for k, v in result.sampling.items()},
        "checks": [
            {
                "name": c.name,
                "mode": c.mode,
                "figure": round_sig(c.figure),
                "interval": [round_sig(x) for x in c.interval] if c.interval else None,
                "threshold": c.threshold,
                "truth": None if c.truth is None else round_sig(c.truth),
                "passed": c.passed,
            }
            for c in result.checks
        ],
        "figures": {
            mode: {name: {"model": fig(m), "truth": fig(t)} for name, (m, t) in rows.items()}
            for mode, rows in result.figures.items()
        },
        "overlaps": {s: {k: round_sig(v) for k, v in row.items()} for s, row in result.overlaps.items()},
        "likelihood": None
        if result.likelihood is None
        else {
            "model": round_sig(result.likelihood.model),
            "ngram": round_sig(result.likelihood.ngram),
            "unit": result.likelihood.unit,
            "count": result.likelihood.count,
        },
        "warnings": result.warnings,
    }


def write_gate_json(result: GateResult, path: Path) -> Path:
    text = json.dumps(gate_json(result), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
    return write_atomically(path, lambda f: f.write(text.encode()))


def record_gate(folder: Path, result: GateResult) -> Path:
    """Record ``result`` in the package at ``folder`` (see :func:`record_report`)."""
    return record_report(folder, gate_json(result))


def record_report(folder: Path, report: dict[str, Any]) -> Path:
    """Write a gate report (:func:`gate_json`) into the package: ``livegen.toml``'s ``[gate]`` table
    (keeping its formatting) and the card's "Quality gate" section, with the card's checksum renewed.

    ``status`` is "passed" when every check passed, else "experimental": ``models list`` shows it and
    ``jam`` warns. The package still verifies afterwards.
    """
    import tomlkit

    from livegen.models.manifest import MANIFEST, parse_manifest
    from livegen.models.package import sha256_of

    if not folder.is_dir():
        raise ConfigError(f"--record {folder}: a zip package cannot be rewritten; unpack it and gate the folder")
    path = folder / MANIFEST
    document = tomlkit.parse(path.read_text(encoding="utf-8"))
    checks = report["checks"]
    table = tomlkit.table()
    table["status"] = "passed" if report["passed"] else "experimental"
    table["passed"] = sum(bool(c["passed"]) for c in checks)
    table["checks"] = len(checks)
    table["failed"] = [f"{c['name']} ({c['mode']})" for c in checks if not c["passed"]]
    document["gate"] = table
    card = folder / CARD
    if card.is_file():
        section = _with_section(card.read_text(encoding="utf-8"), gate_section(report))
        write_atomically(card, lambda f: f.write(section.encode()))
        if CARD in document.get("files", {}):
            document["files"][CARD] = sha256_of(card)
    text = tomlkit.dumps(document)
    write_atomically(path, lambda f: f.write(text.encode()))
    parse_manifest(path)  # what was written reads back
    return path


#: The model card, and the heading of its section the gate writes.
CARD = "README.md"
SECTION = "## Quality gate"
_SECTION = re.compile(rf"^{SECTION}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)


def _with_section(card: str, section: str) -> str:
    """``card`` with its gate section replaced by ``section`` (or ``section`` added at the end)."""
    if _SECTION.search(card):
        return _SECTION.sub(lambda _: section + "\n", card)
    return card.rstrip("\n") + "\n\n" + section


def gate_section(report: dict[str, Any]) -> str:
    """The model card's "Quality gate" section: the command, the verdict, every check and the baselines."""
    o, checks = report["options"], report["checks"]
    passed = sum(bool(c["passed"]) for c in checks)
    sampling = ", ".join(f"{k} {v:g}" for k, v in report["sampling"].items()) or "its defaults"
    verdict = (
        f"**passed**: all {len(checks)} checks"
        if report["passed"]
        else f"**experimental**: {passed} of {len(checks)} checks passed"
    )
    lines = [
        SECTION,
        "",
        "```",
        f"livegen evaluate --gate --model {report['model']} --record",
        "```",
        "",
        f"{report['phrases']} phrases of the {report['seed_source']}, {o['bars']} bars each, {o['rng_seeds']} "
        f"draws from rng seed {o['rng_seed']}, at {sampling}; thresholds in `docs/evaluation.md` of the livegen "
        f'repository ("The quality gate"). {verdict}.',
        "",
        "| check | mode | model | 95% interval | truth | passes when | |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for c in checks:
        interval = f"{_num(c['interval'][0])}-{_num(c['interval'][1])}" if c.get("interval") else ""
        truth = "" if c.get("truth") is None else _num(c["truth"])
        verdict_cell = "pass" if c["passed"] else "**FAIL**"
        name = c["name"].replace("_", " ")
        lines.append(
            f"| {name} | {MODE_SHORT[c['mode']]} | {_num(c['figure'])} | {interval} | {truth} "
            f"| {c['threshold']} | {verdict_cell} |"
        )
    overlaps = report.get("overlaps") or {}
    if overlaps.get("model"):
        systems = list(overlaps)
        lines += ["", "| MGEval overlap | " + " | ".join(systems) + " |", "|---|" + "---:|" * len(systems)]
        for feature in overlaps["model"]:
            label = feature.removesuffix("_histogram").replace("_", " ")
            lines.append(f"| {label} | " + " | ".join(f"{overlaps[s][feature]:.3f}" for s in systems) + " |")
    likelihood = report.get("likelihood")
    if likelihood:
        lines += [
            "",
            f"Held-out NLL per {likelihood['unit']}: model {likelihood['model']:.4g}, n-gram "
            f"{likelihood['ngram']:.4g} ({likelihood['count']} scored).",
        ]
    return "\n".join(lines) + "\n"
