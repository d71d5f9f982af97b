"""The PNG sheet of an evaluation: what a person looks at before reading numbers.

Context: setup (offline; matplotlib with the Agg backend, imported only here and only
when a sheet is drawn: it comes with the ``eval`` extra).

Top row: four samples as piano rolls, the seed (shaded) then the model's continuation.
Middle row: the main distributions, mean over each set: pitch classes, melodic intervals,
inter-onset intervals, for the reference, the model and both baselines. Bottom row: the
MGEval overlap of each main feature per system beside what the reference scores against
itself, the seed-000 chart, and the figures copied from the export.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from livegen.errors import LivegenError
from livegen.eval import metrics
from livegen.eval.chart import COLUMNS
from livegen.eval.report import MAIN_FEATURES
from livegen.eval.runner import SYSTEMS, Evaluation
from livegen.music.events import Note
from livegen.music.time import PPQN

#: Colour-blind-safe colours (Okabe and Ito) of each set.
COLOURS = {"reference": "#333333", "model": "#D55E00", "random": "#0072B2", "repeat": "#009E73"}
PITCH_NAMES = ("C", "C♯", "D", "E♭", "E", "F", "F♯", "G", "A♭", "A", "B♭", "B")
IOI_LABELS = ("32nd", "16th", "8th³", "8th", "4th³", "8th.", "4th", "4th.", "half", "half.", "whole+")
SHORT_FEATURE = {
    "pitch_class_histogram": "pitch classes",
    "interval_histogram": "intervals",
    "ioi_histogram": "inter-onset intervals",
    "note_length_histogram": "note lengths",
    "pitch_class_transitions": "pitch-class transitions",
}


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, or a LivegenError saying what to install."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise LivegenError(
            f"the PNG sheet needs matplotlib ({err}); install the eval extra: pip install -e '.[eval]'"
        ) from err
    return plt


def sample_indices(n: int, count: int = 4) -> list[int]:
    """``count`` samples spread over ``n`` (the first, then evenly)."""
    return sorted({(k * n) // count for k in range(min(count, n))})


def _roll(
    ax: Any,
    seed: Sequence[Note],
    answer: Sequence[Note],
    truth: Sequence[Note],
    seed_ticks: int,
    length: int,
    bar: int,
) -> None:
    """Seed (shaded, grey notes), the answer (filled) and what the tune really did (outlines)."""
    beats = PPQN
    pitches = [n.pitch for n in (*seed, *answer, *truth)] or [60]
    low, high = min(pitches) - 2, max(pitches) + 2
    ax.axvspan(0, seed_ticks / beats, color="#e4e4e4", zorder=0)
    for n in seed:
        ax.broken_barh([(n.start / beats, max(n.duration, 20) / beats)], (n.pitch - 0.4, 0.8), color="#555555")
    for n in truth:
        start = (n.start + seed_ticks) / beats
        ax.broken_barh(
            [(start, max(n.duration, 20) / beats)],
            (n.pitch - 0.45, 0.9),
            facecolor="none",
            edgecolor=COLOURS["reference"],
            lw=0.8,
            zorder=3,
        )
    for n in answer:
        start = (n.start + seed_ticks) / beats
        ax.broken_barh([(start, max(n.duration, 20) / beats)], (n.pitch - 0.4, 0.8), color=COLOURS["model"], zorder=2)
    total = (seed_ticks + length) / beats
    for x in np.arange(0, total + 1e-9, bar / beats):
        ax.axvline(x, color="#bbbbbb", lw=0.5, zorder=0)
    ax.set_xlim(0, total)
    ax.set_ylim(low, high)
    ax.set_xticks(np.arange(0, total + 1e-9, 4 * bar / beats))
    ax.set_xticklabels([str(int(x / (bar / beats)) + 1) for x in ax.get_xticks()])
    ax.set_xlabel("bar")
    ax.set_ylabel("MIDI pitch")
    ax.yaxis.get_major_locator().set_params(integer=True)


def _set_means(ev: Evaluation, name: str) -> dict[str, np.ndarray]:
    means = {"reference": ev.reference_features[name].mean(axis=0)}
    means.update({s.key: s.features[name].mean(axis=0) for s in ev.systems})
    return means


def _labels(ev: Evaluation) -> dict[str, str]:
    return {"reference": "reference", **{s.key: s.label for s in ev.systems}}


def _bars(ax: Any, means: dict[str, np.ndarray], labels: dict[str, str], ticks: Sequence[str]) -> None:
    keys = ["reference", *SYSTEMS]
    width = 0.8 / len(keys)
    x = np.arange(len(ticks))
    for i, key in enumerate(keys):
        ax.bar(x + (i - (len(keys) - 1) / 2) * width, means[key], width, color=COLOURS[key], label=labels[key])
    ax.set_xticks(x)
    ax.set_xticklabels(ticks)
    ax.set_ylabel("share")


def draw_sheet(ev: Evaluation, path: Path) -> Path:
    """Draw the sheet of ``ev`` to ``path`` (PNG)."""
    plt = pyplot()
    from matplotlib.gridspec import GridSpec

    labels = _labels(ev)
    fig = plt.figure(figsize=(17, 12.5), dpi=90)
    grid = GridSpec(3, 4, figure=fig, height_ratios=[1.0, 0.9, 1.0], hspace=0.55, wspace=0.28, top=0.845, bottom=0.06)
    o = ev.options
    sampling = ", ".join(f"{k} {v:g}" for k, v in ev.sampling.items())
    fig.suptitle(
        f"livegen evaluate: {ev.subject}  ({len(ev.samples)} seeds of 2 bars from {ev.seed_source}, "
        f"{o.bars}-bar continuations, rng seed {o.rng_seed}{', ' + sampling if sampling else ''})\n"
        f"reference: {ev.reference_label}",
        fontsize=13,
    )

    model = ev.system("model")
    with_truth = o.model is not None
    for col, index in enumerate(sample_indices(len(ev.samples))):
        sample = ev.samples[index]
        ax = fig.add_subplot(grid[0, col])
        truth = sample.continuation if with_truth else ()
        _roll(ax, sample.seed, model.continuations[index], truth, sample.seed_ticks, ev.length, sample.bar_ticks)
        name = sample.name if len(sample.name) <= 40 else "…" + sample.name[-39:]
        ax.set_title(name, fontsize=9)
    if with_truth:
        what = f"the seed (shaded, grey), {ev.subject}'s continuation (orange), what the tune really played (outlines)"
    else:
        what = "each file's first 2 bars as the seed (shaded, grey), then its continuation (orange)"
    fig.text(
        0.5,
        0.872,
        f"piano rolls: {what}",
        ha="center",
        fontsize=10,
    )

    ax = fig.add_subplot(grid[1, 0])
    _bars(ax, _set_means(ev, "pitch_class_histogram"), labels, [str(i) for i in range(12)])
    ax.set_title("pitch classes (as played, 0 = C)")
    ax.set_xlabel("pitch class")
    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="center", bbox_to_anchor=(0.5, 0.905), ncols=4, fontsize=10, frameon=False)

    ax = fig.add_subplot(grid[1, 1:3])
    means = _set_means(ev, "interval_histogram")
    steps = np.arange(-metrics.INTERVAL_RANGE, metrics.INTERVAL_RANGE + 1)
    for key in ["reference", *SYSTEMS]:
        style = {"lw": 2.5} if key in ("reference", "model") else {"lw": 1.5, "ls": "--"}
        ax.plot(steps, means[key], marker="o", ms=3, color=COLOURS[key], label=labels[key], **style)
    ax.set_xticks(steps[::2])
    ax.set_title("melodic intervals (semitones; ±12 holds wider leaps)")
    ax.set_xlabel("interval to the next note")
    ax.set_ylabel("share")

    ax = fig.add_subplot(grid[1, 3])
    _bars(ax, _set_means(ev, "ioi_histogram"), labels, IOI_LABELS)
    ax.set_title("inter-onset intervals")
    ax.tick_params(axis="x", labelrotation=60, labelsize=8)

    ax = fig.add_subplot(grid[2, 0:2])
    features = [
        f for f in (*MAIN_FEATURES, "note_length_histogram", "pitch_class_transitions") if f in ev.reference_self
    ]
    x = np.arange(len(features))
    width = 0.8 / len(SYSTEMS)
    for i, key in enumerate(SYSTEMS):
        values = [ev.system(key).comparisons[f].overlap for f in features]
        ax.bar(x + (i - 1) * width, values, width, color=COLOURS[key], label=labels[key])
    selfs = [float(np.nanmean(ev.reference_self[f])) for f in features]
    ax.scatter(x, selfs, marker="_", s=1200, lw=2.5, color=COLOURS["reference"], zorder=3, label="reference ½ vs ½")
    ax.set_xticks(x)
    ax.set_xticklabels([SHORT_FEATURE.get(f, f) for f in features], fontsize=9)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("MGEval overlap")
    ax.set_title("overlap with the reference (1 = indistinguishable; bar = what real music scores)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=4, frameon=False)

    ax = fig.add_subplot(grid[2, 2:4])
    ax.axis("off")
    ax.set_title("seed 000 chart (objective proxies, thresholds from the reference)")
    cells = [
        [labels[key], *[ev.chart.rows[key][c].mark for c in COLUMNS], f"{ev.system(key).following_rate:.2f}"]
        for key in SYSTEMS
    ]
    if ev.reference_following_rate is not None:
        cells.append(["real tunes", "", "", "", "", f"{ev.reference_following_rate:.2f}"])
    table = ax.table(
        cellText=cells,
        colLabels=["", *COLUMNS, "follows seed"],
        colWidths=[0.22, 0.13, 0.13, 0.13, 0.19, 0.16],
        bbox=(0.0, 0.45, 1.0, 0.5),
        cellLoc="center",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(11)
    marks = {"✓": "#d8f0d8", "✗": "#f6d5d5", "N/A": "#eeeeee"}
    for (r, c), cell in table.get_celld().items():
        if r >= 1 and 1 <= c <= len(COLUMNS):
            cell.set_facecolor(marks.get(cell.get_text().get_text(), "white"))
    lines = [f"{k} = {v:.4g}" for k, v in ev.export_metrics.items()] or ["(none: not a trained package)"]
    half = (len(lines) + 1) // 2
    ax.text(0.0, 0.36, "from the export's own held-out evaluation ([metrics]):", fontsize=9, transform=ax.transAxes)
    for i, chunk in enumerate((lines[:half], lines[half:])):
        ax.text(
            0.54 * i,
            0.30,
            "\n".join(chunk),
            va="top",
            ha="left",
            fontsize=7.5,
            family="monospace",
            transform=ax.transAxes,
        )

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return path
