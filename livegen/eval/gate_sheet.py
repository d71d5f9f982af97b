"""The gate's piano-roll sheet: what a performer would hear, phrase by phrase, in each mode.

Context: setup (offline; matplotlib, imported only when a sheet is drawn).

One row per mode (call-and-response answers, accompaniment), four phrases spread over the
set: the seed shaded, the model's notes filled, the true continuation as outlines. A drone,
a silence or a collapse shows at a glance.
"""

from __future__ import annotations

from pathlib import Path

from livegen.eval.gate import GateResult
from livegen.eval.sheet import _roll, pyplot, sample_indices

TITLES = {"call-response": "answers", "accompany": "accompaniment"}


def draw_gate_sheet(result: GateResult, path: Path, count: int = 4) -> Path:
    plt = pyplot()
    modes = [m for m in result.answers if result.answers[m]]
    indices = sample_indices(len(result.samples), count)
    fig, axes = plt.subplots(len(modes), len(indices), figsize=(4.2 * len(indices), 3.0 * len(modes)), squeeze=False)
    for row, mode in enumerate(modes):
        for col, i in enumerate(indices):
            sample = result.samples[i]
            answer = result.answers[mode][i]
            length = result.options.bars * sample.bar_ticks
            ax = axes[row][col]
            _roll(ax, sample.seed, answer, sample.continuation, sample.seed_ticks, length, sample.bar_ticks)
            ax.set_title(f"{TITLES[mode]}: {sample.name}", fontsize=8)
    verdict = "passed" if result.passed else f"FAILED {sum(not c.passed for c in result.checks)} checks"
    fig.suptitle(f"{result.model}: seed shaded, model filled, truth outlined; gate {verdict}", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
