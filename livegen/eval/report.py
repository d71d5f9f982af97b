"""The evaluation report: a table in the terminal, a JSON file and the data of the PNG sheet.

Context: setup (offline analysis).

The JSON is deterministic for a given run: keys sorted, floats rounded to 6 significant
digits, NaN written as ``null``, no timestamps or timings. ``schema`` counts its format.
The PNG sheet is drawn by :mod:`livegen.eval.sheet`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from livegen.eval.chart import COLUMNS, RULES, Criterion
from livegen.eval.runner import SYSTEMS, Evaluation

SCHEMA = 1
#: The distributions the bundled model must match better than both baselines (MGEval overlap).
MAIN_FEATURES = ("pitch_class_histogram", "interval_histogram", "ioi_histogram")
#: Rows of the terminal table, in this order (features of metrics.py not listed follow).
FEATURE_ORDER = (
    "pitch_class_histogram",
    "interval_histogram",
    "ioi_histogram",
    "note_length_histogram",
    "pitch_class_transitions",
    "pitch_range",
    "used_pitch_classes",
    "pitch_class_entropy",
    "average_pitch_interval",
    "in_scale_rate",
    "notes_per_beat",
    "polyphony",
    "empty_bar_ratio",
    "pitch_classes_per_bar",
    "qualified_note_ratio",
)


def round_sig(value: float, digits: int = 6) -> float | None:
    """``value`` to ``digits`` significant digits; None for NaN and infinities (JSON has neither)."""
    if not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}") + 0.0


def _clean(value: Any) -> Any:
    """Plain JSON values: rounded floats, lists for arrays, sorted dicts."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_clean(v) for v in value.tolist()]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return round_sig(float(value))
    return value


def feature_names(ev: Evaluation) -> list[str]:
    names = list(ev.reference_features)
    ordered = [n for n in FEATURE_ORDER if n in names]
    return ordered + sorted(n for n in names if n not in ordered)


def _summary(matrix: np.ndarray) -> Any:
    """A feature's mean over samples: one number for a scalar, a list for a histogram."""
    finite = matrix[np.all(np.isfinite(matrix), axis=1)]
    if not finite.size:
        return None
    mean = finite.mean(axis=0)
    return float(mean[0]) if mean.shape[0] == 1 else mean


def _criterion(c: Criterion) -> dict[str, Any]:
    return {
        "mark": c.mark,
        "passed": c.passed,
        "checks": [
            {"name": k.name, "value": k.value, "low": k.low, "high": k.high, "passed": k.passed} for k in c.checks
        ],
    }


def beats_baselines(ev: Evaluation) -> dict[str, dict[str, Any]]:
    """For each main distribution: the three overlaps and whether the model's is above both baselines'."""
    out = {}
    for name in MAIN_FEATURES:
        if name not in ev.reference_features:
            continue
        overlaps = {s.key: s.comparisons[name].overlap for s in ev.systems}
        best_baseline = max(overlaps["random"], overlaps["repeat"])
        out[name] = {**overlaps, "beats_both": bool(overlaps["model"] > best_baseline)}
    return out


def to_json(ev: Evaluation) -> dict[str, Any]:
    """The report as plain, deterministic JSON values."""
    o = ev.options
    features: dict[str, Any] = {}
    for name in feature_names(ev):
        self_overlaps = ev.reference_self[name]
        finite = self_overlaps[np.isfinite(self_overlaps)]
        entry: dict[str, Any] = {
            "reference": {
                "mean": _summary(ev.reference_features[name]),
                "split_half_overlap": float(finite.mean()) if finite.size else None,
                "split_half_overlap_p10": float(np.percentile(finite, 10)) if finite.size else None,
            }
        }
        for s in ev.systems:
            c = s.comparisons[name]
            entry[s.key] = {
                "mean": _summary(s.features[name]),
                "overlap": c.overlap,
                "kl": c.kl,
                "intra_mean": c.intra_mean,
                "inter_mean": c.inter_mean,
            }
        features[name] = entry
    report = {
        "schema": SCHEMA,
        "subject": ev.subject,
        "mode": "model" if o.model is not None else "midi",
        "options": {
            "model": o.model,
            "midi": str(o.midi) if o.midi is not None else None,
            "reference": o.reference,
            "seeds": o.seeds,
            "bars": o.bars,
            "rng_seed": o.rng_seed,
            "temperature": o.temperature,
            "top_p": o.top_p,
        },
        "sampling": ev.sampling,
        "seed_source": ev.seed_source,
        "reference": ev.reference_label,
        "samples": [s.name for s in ev.samples],
        "systems": {s.key: s.label for s in ev.systems},
        "features": features,
        "beats_baselines": beats_baselines(ev),
        "chart": {
            "rules": RULES,
            **{key: {col: _criterion(crit) for col, crit in row.items()} for key, row in ev.chart.rows.items()},
        },
        "following_rate": {
            **{s.key: s.following_rate for s in ev.systems},
            "reference": ev.reference_following_rate,
        },
        "export_metrics": ev.export_metrics,
        "selection": ev.selection,
        "warnings": ev.warnings,
    }
    return dict(_clean(report))


def dumps(ev: Evaluation) -> str:
    return json.dumps(to_json(ev), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(ev: Evaluation, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(dumps(ev), encoding="utf-8")
    tmp.replace(path)
    return path


# ---- markdown (model cards) ----------------------------------------------------------


def markdown_tables(ev: Evaluation) -> str:
    """The feature table and the chart as Markdown, for a model card."""
    labels = {s.key: s.label for s in ev.systems}
    head = (
        "| feature | overlap: "
        + " | overlap: ".join(labels[k] for k in SYSTEMS)
        + " | KL: "
        + " | KL: ".join(labels[k] for k in SYSTEMS)
        + " | overlap: reference ½ vs ½ |"
    )
    lines = [head, "|---" + "|---:" * (2 * len(SYSTEMS) + 1) + "|"]
    for name in feature_names(ev):
        overlaps = [ev.system(k).comparisons[name].overlap for k in SYSTEMS]
        best = max((v for v in overlaps if math.isfinite(v)), default=None)
        cells = [f"**{_fmt(v)}**" if v == best else _fmt(v) for v in overlaps]
        cells += [_fmt(ev.system(k).comparisons[name].kl) for k in SYSTEMS]
        self_overlap = ev.reference_self[name]
        cells.append(_fmt(float(np.nanmean(self_overlap)) if np.isfinite(self_overlap).any() else None))
        label = f"`{name}`" + (" *" if name in MAIN_FEATURES else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| system | " + " | ".join(COLUMNS) + " | following rate |",
        "|---" + "|:---:" * len(COLUMNS) + "|---:|",
    ]
    for s in ev.systems:
        marks = " | ".join(ev.chart.rows[s.key][c].mark for c in COLUMNS)
        lines.append(f"| {s.label} | {marks} | {_fmt(s.following_rate, 2)} |")
    if ev.reference_following_rate is not None:
        lines.append("| reference | | | | | " + _fmt(ev.reference_following_rate, 2) + " |")
    if ev.selection:
        lines += ["", selection_text(ev.selection)]
    return "\n".join(lines) + "\n"


def selection_text(selection: dict[str, float]) -> str:
    """One sentence on a block model's candidate selection."""
    return (
        f"Candidate selection: {selection['candidates']:g} blocks drawn per block, {selection['blocks']:g} blocks; "
        f"fit to the bar heard (pitch classes, register, density; 1 = the same) "
        f"{_fmt(selection['chosen_fit'])} for the blocks kept, {_fmt(selection['candidate_fit'])} for a block "
        "drawn without selection."
    )


# ---- terminal ------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def _mean_text(matrix: np.ndarray) -> str:
    summary = _summary(matrix)
    return _fmt(summary, 2) if isinstance(summary, float) else ""


def feature_table(ev: Evaluation) -> Table:
    """Rows: features; columns: reference, then MGEval overlap and KL of each system."""
    labels = {s.key: s.label for s in ev.systems}
    table = Table(
        title=f"MGEval against {ev.reference_label}: overlap (higher is closer) and KL (lower is closer)",
        title_justify="left",
    )
    table.add_column("feature")
    table.add_column("mean\nreference", justify="right")
    table.add_column(f"mean\n{labels['model']}", justify="right")
    table.add_column("overlap\nref ½ vs ½", justify="right")
    for key in SYSTEMS:
        table.add_column(f"overlap\n{labels[key]}", justify="right")
    for key in SYSTEMS:
        table.add_column(f"KL\n{labels[key]}", justify="right")
    model = ev.system("model")
    for name in feature_names(ev):
        overlaps = {s.key: s.comparisons[name].overlap for s in ev.systems}
        kls = {s.key: s.comparisons[name].kl for s in ev.systems}
        finite = [v for v in overlaps.values() if math.isfinite(v)]
        best = max(finite) if finite else None
        finite_kl = [v for v in kls.values() if math.isfinite(v)]
        least = min(finite_kl) if finite_kl else None
        self_overlap = ev.reference_self[name]
        row = [
            name + (" *" if name in MAIN_FEATURES else ""),
            _mean_text(ev.reference_features[name]),
            _mean_text(model.features[name]),
            _fmt(float(np.nanmean(self_overlap)) if np.isfinite(self_overlap).any() else None),
        ]
        row += [f"[bold green]{_fmt(overlaps[k])}[/]" if overlaps[k] == best else _fmt(overlaps[k]) for k in SYSTEMS]
        row += [f"[bold green]{_fmt(kls[k])}[/]" if kls[k] == least else _fmt(kls[k]) for k in SYSTEMS]
        table.add_row(*row)
    return table


def chart_table(ev: Evaluation) -> Table:
    table = Table(title="Seed 000 chart (objective proxies; rules in docs/evaluation.md)", title_justify="left")
    table.add_column("system")
    for col in COLUMNS:
        table.add_column(col, justify="center")
    table.add_column("following rate", justify="right")
    colours = {"✓": "green", "✗": "red", "N/A": "dim"}
    for s in ev.systems:
        row = ev.chart.rows[s.key]
        marks = [f"[{colours[row[c].mark]}]{row[c].mark}[/]" for c in COLUMNS]
        table.add_row(s.label, *marks, _fmt(s.following_rate))
    if ev.reference_following_rate is not None:
        table.add_row("reference", *[""] * len(COLUMNS), _fmt(ev.reference_following_rate))
    return table


def print_report(ev: Evaluation, console: Console | None = None) -> None:
    console = console or Console()
    o = ev.options
    sampling = ", ".join(f"{k} {v:g}" for k, v in ev.sampling.items())
    console.print(
        f"[bold]{ev.subject}[/]: {len(ev.samples)} seeds of {2} bars from {ev.seed_source}, "
        f"{o.bars} bars each, rng seed {o.rng_seed}" + (f", {sampling}" if sampling else "")
    )
    console.print(feature_table(ev))
    console.print("* the main distributions: the model should overlap the reference more than both baselines")
    for name, row in beats_baselines(ev).items():
        verdict = "[green]beats both baselines[/]" if row["beats_both"] else "[red]does not beat both baselines[/]"
        console.print(
            f"  {name}: {ev.subject} {_fmt(row['model'])}, random {_fmt(row['random'])}, "
            f"repeat {_fmt(row['repeat'])}: {verdict}"
        )
    console.print(chart_table(ev))
    for col in COLUMNS:
        console.print(f"  {col}: {RULES[col]}", style="dim")
    if ev.selection:
        console.print(selection_text(ev.selection))
    if ev.export_metrics:
        console.print("From the export's own held-out evaluation (\\[metrics] of livegen.toml):")
        for key, value in ev.export_metrics.items():
            console.print(f"  {key}: {value:.6g}")
    for warning in ev.warnings:
        console.print(f"[yellow]note:[/] {warning}")
