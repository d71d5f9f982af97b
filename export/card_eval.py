"""The model card's "Evaluation" section, measured with ``livegen evaluate``.

Context: setup. ``python -m export evaluate PACKAGE`` runs the evaluation for
several rng seeds, writes (or replaces) the section in the package's README.md
and updates that file's sha256 in ``livegen.toml``, so the package still verifies.
Re-exporting a package writes a fresh card; run this again after it.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tomli_w

from livegen.eval.report import beats_baselines, markdown_tables
from livegen.eval.runner import EvalOptions, Evaluation, run_evaluation
from livegen.models.manifest import MANIFEST
from livegen.models.package import load_package, sha256_of

_SECTION = re.compile(r"^## Evaluation\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
_NAMES = {
    "pitch_class_histogram": "pitch classes",
    "interval_histogram": "melodic intervals",
    "ioi_histogram": "inter-onset intervals",
}


def _verdicts(runs: Sequence[Evaluation]) -> list[str]:
    per_seed = [beats_baselines(ev) for ev in runs]
    lines = [
        f"| main distribution | model, rng seed {runs[0].options.rng_seed} | random notes | repeat the seed "
        f"| over rng seeds {runs[0].options.rng_seed}-{runs[-1].options.rng_seed}: model (mean ± sd) "
        "| random (mean) | repeat (mean) | beats both |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for feature, label in _NAMES.items():
        first = per_seed[0][feature]
        model = np.array([r[feature]["model"] for r in per_seed])
        random = np.array([r[feature]["random"] for r in per_seed])
        repeat = np.array([r[feature]["repeat"] for r in per_seed])
        wins = int(sum(r[feature]["beats_both"] for r in per_seed))
        verdict = (
            f"yes, {wins} of {len(per_seed)} seeds"
            if model.mean() > max(random.mean(), repeat.mean())
            else (f"**no** ({wins} of {len(per_seed)} seeds)")
        )
        lines.append(
            f"| {label} | {first['model']:.3f} | {first['random']:.3f} | {first['repeat']:.3f} "
            f"| {model.mean():.3f} ± {model.std():.3f} | {random.mean():.3f} | {repeat.mean():.3f} | {verdict} |"
        )
    return lines


def evaluation_section(package: Path, name: str, rng_seeds: Sequence[int] = range(6)) -> str:
    runs = [run_evaluation(EvalOptions(model=str(package), rng_seed=seed)) for seed in rng_seeds]
    first = runs[0]
    o = first.options
    return "\n".join(
        [
            "## Evaluation",
            "",
            "```",
            f"livegen evaluate --model {name} --rng-seed {o.rng_seed} --json out/eval-{name}.json",
            "```",
            "",
            f"{len(first.samples)} held-out tunes of the split above (at least {o.bars + 2} bars long, evenly spread): "
            f"the first 2 bars are the seed, the model answers {o.bars} bars in call-and-response with its default "
            "sampling parameters, and the reference set is what those tunes really play in the same bars. Two "
            "baselines answer the same seeds: random notes over the seed's range, and the seed looped. MGEval "
            "(Yang and Lerch 2020) per feature: overlap of the intra-set and inter-set distance densities (1 = like "
            'the reference, higher is better) and KL(intra ‖ inter) (lower is better); "reference ½ vs ½" is what '
            "one half of the real continuations scores against the other, the practical ceiling. Rules and "
            "definitions: `docs/evaluation.md` in the livegen repository.",
            "",
            markdown_tables(first),
            "The main distributions, which the model must match better than both baselines "
            f"(written by `python -m export evaluate`, {len(runs)} rng seeds):",
            "",
            *_verdicts(runs),
            "",
        ]
    )


def write_evaluation(package: Path, rng_seeds: Sequence[int] = range(6)) -> str:
    """Measure, write the section into the card, rehash it; returns the section."""
    name = load_package(package).name
    section = evaluation_section(package, name, rng_seeds)
    card = package / "README.md"
    text = card.read_text(encoding="utf-8")
    text = (
        _SECTION.sub(lambda _: section + "\n", text) if _SECTION.search(text) else text.rstrip("\n") + "\n\n" + section
    )
    card.write_text(text, encoding="utf-8")
    manifest_path = package / MANIFEST
    manifest = tomllib.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["files"]["README.md"] = sha256_of(card)
    manifest_path.write_text(tomli_w.dumps(manifest), encoding="utf-8")
    load_package(package)  # still verifies
    return section
