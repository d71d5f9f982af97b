"""ONNX export, parity check and model package of the ``token-lstm`` family.

Context: setup (export only; imports torch, never imported by the host).

The streaming graph is one token step (``token``, ``context``, ``h``, ``c`` in;
``logits``, ``context_out``, ``h_out``, ``c_out`` out): ``context`` holds the
embeddings of the two previous tokens, which the kernel-3 convolution reads beside
the current one, and ``h``/``c`` the two LSTM layers' state; all three are declared
state. The parity check runs that graph token by token in onnxruntime over held-out
chorales and compares it with PyTorch running each whole sequence at once in float64
(as :mod:`export.midirnn.package` does for ``midirnn``); the export fails above
:data:`~export.common.PARITY_TOLERANCE`. The package is staged beside the
destination and verified by the host's loader and adapter before it replaces it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from export.card import percent, render_card
from export.common import (
    CARD,
    PARITY_TOLERANCE,
    check_interface,
    check_parity,
    check_target,
    export_graph,
    load_checkpoint,
    run_table,
    sample_tunes,
    session,
    tensor,
    write_package,
)
from export.errors import ExportError
from export.seed import SEED, SEED_BPM, write_seed
from export.tokenlstm.model import KERNEL, TokenLstm, TokenLstmConfig, TokenLstmStep, model_from_checkpoint
from export.tokenlstm.train import MAX_SHIFT_BEATS, MIN_SHIFT_SHARE
from livegen.models.tokenlstm import CHORD_TICKS, CONTEXT, LOGITS, TOKEN_INPUT, Vocabulary, tune_tokens
from livegen.models.tokenlstm import FAMILY as NAME

log = logging.getLogger(__name__)


#: The step graph's file in the package.
GRAPH = "model.onnx"


INPUTS = (TOKEN_INPUT, CONTEXT, "h", "c")


#: The package's default sampling temperature, chosen on the validation pieces (never the held-out ones):
#: ``livegen evaluate --split validation --rng-seed 0 --temperature T`` overlaps of (pitch classes, melodic
#: intervals) by temperature, on the corpus:four-voice model with time shifts (token-lstm 2.0.0). 1.0 scores
#: best there, but its accompaniment's top line leaps 1.40 times the truth's on the validation phrases
#: (the gate's limit); at 0.85 every failure figure but the accompaniment's density is inside the gate's band.
DEFAULT_TEMPERATURE = 0.85


TEMPERATURE_TUNING = ((1.0, 0.868, 0.946), (0.85, 0.843, 0.884), (0.7, 0.919, 0.721))


OUTPUTS = (LOGITS, "context_out", "h_out", "c_out")


def graph_shapes(model: TokenLstm) -> dict[str, tuple[list[int | str], str]]:
    """Every tensor of the step graph: (shape as the manifest declares it, dtype)."""
    cfg = model.config
    state: list[int | str] = [cfg.layers, "batch", cfg.hidden]
    context: list[int | str] = ["batch", KERNEL - 1, cfg.embed]
    return {
        TOKEN_INPUT: (["batch"], "int64"),
        CONTEXT: (context, "float32"),
        "h": (state, "float32"),
        "c": (state, "float32"),
        LOGITS: (["batch", model.vocab], "float32"),
        "context_out": (context, "float32"),
        "h_out": (state, "float32"),
        "c_out": (state, "float32"),
    }


def export_step_graph(model: TokenLstm, path: Path) -> None:
    """Write the one-token step graph of ``model`` to ``path`` (weights inside the file)."""
    step = TokenLstmStep(model).eval()
    cfg = model.config
    example = (
        torch.zeros(2, dtype=torch.int64),
        torch.zeros(2, KERNEL - 1, cfg.embed),
        torch.zeros(cfg.layers, 2, cfg.hidden),
        torch.zeros(cfg.layers, 2, cfg.hidden),
    )
    batch = torch.export.Dim("batch")
    export_graph(
        step,
        example,
        path,
        inputs=INPUTS,
        outputs=OUTPUTS,
        dynamic={TOKEN_INPUT: {0: batch}, CONTEXT: {0: batch}, "h": {1: batch}, "c": {1: batch}},
    )


def _session(path: Path, model: TokenLstm) -> ort.InferenceSession:
    runner = session(path)
    check_interface(runner, path, graph_shapes(model))
    return runner


def _run(model: TokenLstm, exact: TokenLstm, session: ort.InferenceSession, tokens: np.ndarray) -> tuple[float, float]:
    """Largest differences (onnxruntime, torch float32) from torch float64 over every output and step."""
    batch, length = tokens.shape
    x = torch.from_numpy(tokens)
    with torch.no_grad():
        runs = []
        for net in (model, exact):
            logits, (h_n, c_n) = net(x)
            context = net.embed(x[:, -(KERNEL - 1) :]).double().numpy()
            runs.append({LOGITS: logits.double().numpy(), "h_n": h_n.double().numpy(), "c_n": c_n.double().numpy()})
            runs[-1]["context"] = context
    float32, reference = runs

    def deviation(name: str, value: np.ndarray, ref: np.ndarray) -> float:
        diff = np.abs(value - ref)
        if name == "c_n":  # the cell state is unbounded: relative where it exceeds 1 (as for midirnn)
            diff = diff / np.maximum(1.0, np.abs(ref))
        return float(diff.max())

    torch_worst = max(deviation(k, float32[k], reference[k]) for k in reference)
    cfg = model.config
    feeds: dict[str, np.ndarray] = {
        CONTEXT: np.zeros((batch, KERNEL - 1, cfg.embed), np.float32),
        "h": np.zeros((cfg.layers, batch, cfg.hidden), np.float32),
        "c": np.zeros((cfg.layers, batch, cfg.hidden), np.float32),
    }
    worst = 0.0
    for t in range(length):
        out = dict(zip(OUTPUTS, session.run(list(OUTPUTS), {**feeds, TOKEN_INPUT: tokens[:, t]}), strict=True))
        worst = max(worst, deviation(LOGITS, out[LOGITS], reference[LOGITS][:, t]))
        feeds = {CONTEXT: out["context_out"], "h": out["h_out"], "c": out["c_out"]}
    worst = max(
        worst,
        deviation("h_n", feeds["h"], reference["h_n"]),
        deviation("c_n", feeds["c"], reference["c_n"]),
        deviation("context", feeds[CONTEXT], reference["context"]),
    )
    return (worst if np.isfinite(worst) else float("inf")), torch_worst


def parity(model: TokenLstm, path: Path, sequences: Sequence[np.ndarray]) -> tuple[float, float]:
    """(max |onnxruntime - torch float64|, max |torch float32 - torch float64|) over ``sequences``.

    Each sequence runs alone over all its tokens, then all together as one batch cut
    to the shortest one's length. Logits are compared at every step; the final LSTM
    state and convolution context once.
    """
    if not sequences:
        raise ExportError("the parity check needs at least one held-out sequence")
    session = _session(path, model)
    model.eval()
    exact = copy.deepcopy(model).double().eval()
    runs = [_run(model, exact, session, seq[None].astype(np.int64)) for seq in sequences]
    length = min(len(s) for s in sequences)
    runs.append(_run(model, exact, session, np.stack([s[:length] for s in sequences]).astype(np.int64)))
    result = max(r[0] for r in runs), max(r[1] for r in runs)
    log.info(
        "parity: %d sequences (%d tokens) alone and batched: max |onnxruntime - torch float64| = %.3g "
        "(torch float32: %.3g)",
        len(sequences),
        sum(len(s) for s in sequences),
        *result,
    )
    return result


def build_manifest(
    *,
    name: str,
    version: str,
    description: str,
    checkpoint: Mapping[str, Any],
    model: TokenLstm,
    vocabulary: Vocabulary,
    metrics: Mapping[str, float],
    files: Mapping[str, str],
) -> dict[str, Any]:
    """The ``livegen.toml`` table of a ``token-lstm`` package (see ``docs/model-package.md``)."""
    cfg = model.config
    p, t = checkpoint["provenance"], checkpoint["training"]
    shapes = graph_shapes(model)
    step = float(checkpoint["step_beats"])
    timing: dict[str, Any] = {} if vocabulary.timed else {"step_beats": step, "duration_beats": step}
    training: dict[str, Any] = {
        **run_table(p, t, "tokens_train"),
        "embed": cfg.embed,
        "filters": cfg.filters,
        "kernel": KERNEL,
        "hidden": cfg.hidden,
        "layers": cfg.layers,
        "dropout": f"{cfg.conv_dropout} after the convolution, {cfg.dropout} after each LSTM layer",
        "window": cfg.window,
        "batch_size": cfg.batch_size,
        "learning_rate": cfg.learning_rate,
        "max_vocab": cfg.max_vocab,
        "distinct_tokens_train": int(p["distinct_tokens_train"]),
        "vocabulary_coverage_train": round(float(p["vocabulary_coverage_train"]), 6),
        "vocabulary_coverage_held_out": round(float(p["vocabulary_coverage_held_out"]), 6),
        "time_shifts": vocabulary.timed,
        "loss": "cross-entropy over the vocabulary at every position",
        "torch_version": p["torch_version"],
        "exported": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if p.get("limit") is not None:
        training["limit"] = p["limit"]
    state = [(CONTEXT, "context_out"), ("h", "h_out"), ("c", "c_out")]
    return {
        "schema": 1,
        "name": name,
        "family": NAME,
        "kind": "step",
        "version": version,
        "description": description,
        "seed_phrase": SEED,
        "representation": {
            "time_unit": "beat",
            **timing,
            "chord_ticks": CHORD_TICKS,
            "pitch_min": int(p["pitch_min"]),
            "pitch_max": int(p["pitch_max"]),
            "tokens": list(vocabulary.names),
        },
        "graphs": {
            "step": {
                "file": GRAPH,
                "inputs": [tensor(n, *shapes[n]) for n in INPUTS],
                "outputs": [tensor(n, *shapes[n]) for n in OUTPUTS],
                "state": [{"input": i, "output": o} for i, o in state],
            }
        },
        "parameters": {
            "temperature": {"default": DEFAULT_TEMPERATURE, "min": 0.05, "max": 4.0},
            "top_p": {"default": 0.95, "min": 0.05, "max": 1.0},
        },
        "training": training,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "files": dict(files),
    }


def _tuning() -> str:
    return "; ".join(f"temperature {t:g}: {pc:.3f} / {iv:.3f}" for t, pc, iv in TEMPERATURE_TUNING)


#: What each music21 folder of corpus:four-voice holds, for the card.
COLLECTIONS = {
    "bach": "Bach chorales",
    "palestrina": "Palestrina mass movements in four parts",
    "trecento": "trecento pieces in four parts",
    "beethoven": "Beethoven string quartet movements",
    "mozart": "Mozart string quartet movements",
    "haydn": "Haydn string quartet movements",
    "schumann_robert": "Robert Schumann string quartet movements",
}


def _source(p: Mapping[str, Any]) -> str:
    """What the model was trained on, in words."""
    data = p["data"]
    if data == "corpus:bach":
        return "the Bach chorales music21 ships (`bach/bwv*.mxl`, all parts merged into one stream)"
    if data == "corpus:four-voice":
        collections = sorted(dict(p.get("collections", {})).items(), key=lambda item: (-item[1], item[0]))
        named = [
            f"{n} {COLLECTIONS.get(k, 'four-part score' + ('s' if n > 1 else '') + f' from `{k}/`')}"
            for k, n in collections
        ]
        return (
            "`corpus:four-voice`, every four-voice work music21 ships (each piece's four voices merged into one "
            f"stream): {', '.join(named)}"
        )
    return f"`{data}`"


def _shift_list(vocabulary: Vocabulary) -> str:
    order = np.argsort(vocabulary.shift_ticks[vocabulary.is_shift], kind="stable")
    names = [n for n, shift in zip(vocabulary.names, vocabulary.is_shift, strict=True) if shift]
    return ", ".join(f"`{names[i]}`" for i in order)


def _accuracy_rows(m: Mapping[str, float], timed: bool) -> str:
    rows = [
        f"| every token | **{percent(m['held_out_token_accuracy'])}** (cross-entropy "
        f"{m['held_out_token_cross_entropy']:.3f}) | {percent(m['baseline_most_frequent_token_accuracy'])} | "
        f"{percent(m['baseline_repeat_last_token_accuracy'])} | {int(m['held_out_targets'])} |"
    ]
    for kind, label in (("chord", "the next chord (after a shift)"), ("shift", "the next time shift")):
        if timed and f"held_out_{kind}_accuracy" in m:
            rows.append(
                f"| {label} | **{percent(m[f'held_out_{kind}_accuracy'])}** | "
                f"{percent(m[f'baseline_most_frequent_{kind}_accuracy'])} | "
                f"{percent(m[f'baseline_repeat_last_{kind}_accuracy'])} | {int(m[f'held_out_{kind}_targets'])} |"
            )
    return "\n".join(rows)


def model_card(
    *,
    name: str,
    description: str,
    checkpoint: Mapping[str, Any],
    model: TokenLstm,
    vocabulary: Vocabulary,
    metrics: Mapping[str, float],
    seed_tune: str,
    size_bytes: int,
) -> str:
    """The package's README.md: data, tokens, timing, model, held-out figures, parity, seed choices, limits."""
    cfg: TokenLstmConfig = model.config
    p, t, m = checkpoint["provenance"], checkpoint["training"], metrics
    timed = vocabulary.timed
    step = float(checkpoint["step_beats"])
    history = "\n".join(
        f"| {int(h['epoch'])} | {h['learning_rate']:.2g} | {h['train_loss']:.4f} | {h['val_loss']:.4f} |"
        for h in checkpoint["history"]
    )
    chords = [pitches for pitches in vocabulary.pitches if pitches]
    sizes = [len(pitches) for pitches in chords]
    by_size = ", ".join(f"{sizes.count(k)} of {k} note{'s' if k > 1 else ''}" for k in sorted(set(sizes)))
    examples = ", ".join(f"`{n}`" for n in vocabulary.names[:3])
    chord_example = next((n for n in vocabulary.names if "." in n), vocabulary.names[0])
    params = sum(x.numel() for x in model.parameters())
    shifts = int(vocabulary.is_shift.sum())
    kept_tokens = f"{len(chords)} most frequent training chords and notes" + (
        f" and {shifts} time shifts" if timed else ""
    )
    if timed:
        shift_text = f"""
A **time shift** token is the time from one chord's onset to the next, in beats: the
vocabulary holds every gap that is at least {MIN_SHIFT_SHARE:.1%} of the training gaps, up to
{MAX_SHIFT_BEATS} beats ({_shift_list(vocabulary)}). A piece is read as chord, shift, chord, shift, ...;
a longer gap is spelled with the longest shifts first, any other gap with the nearest shift.
"""
        timing = """Each chord comes when the model says: a draw is the time shifts after the last chord (their sum
is the new chord's step), the chord, and the shifts after it (their sum is how long it sounds: until
the next chord starts, legato, as the voices of a chorale or a quartet hand over to each other). The
shifts drawn after a chord are the next chord's step, so what the model plays is one sequence it
sampled. A performer's notes are heard with their timing: each new onset is preceded by the shifts
nearest its gap, so the answer hears the pulse it was played. The grid of the answer is therefore the
training music's (quarters, eighths, sixteenths, triplets where the data has them), not a fixed
offset; notes of one voice that outlast the next onset are cut there (see Limits)."""
        kept_fixed = ""
        changed_timing = """
- **Time shifts instead of a fixed offset.** The seed placed every token 0.5 quarter notes after the
  previous: every onset on an eighth, a passing note as long as a full chord. Here the model predicts
  the gap to the next chord as a token of the same softmax (see Timing)."""
        limits_timing = """- Durations are not modelled: a chord sounds until the next onset (legato), so a note held in
  one voice while another moves is cut at that move and not re-sounded."""
    else:
        shift_text = ""
        timing = f"""The seed's tokens carry no durations: it placed them a fixed 0.5 quarter notes apart. This package
keeps that: every token starts **{step:g} beats** after the previous one and sounds {step:g} beats
(`representation.step_beats` and `duration_beats`); a chord token sounds as all its notes at once.
{step:g} beats is the most common time between successive tokens of the training chorales (the
exporter measures it), and the seed's value. The chorales' own rhythm (quarter-note chords, eighth-
and sixteenth-note passing notes in single voices, fermatas) is therefore not reproduced: every
token, a full chord or a passing note, gets one eighth. See the evaluation's inter-onset intervals.
Performed notes are heard as tokens in order; their timing is not fed to the model."""
        kept_fixed = "; tokens a fixed offset apart"
        changed_timing = ""
        limits_timing = f"""- No durations and no rests: every token is one {step:g}-beat step (see Timing). The model
  plays chorale-like chord successions at an even pulse, not the chorales' rhythms."""
    return render_card(
        name,
        f"""\
{description}

Family `token-lstm` (seed 001: Conv1D + 2 x LSTM(256) + dropout over music21-style note and chord
tokens), host kind `step`: the host feeds one token at a time and carries the state.
""",
        {
            "Data": f"""\
Trained on {_source(p)}: {p["tunes"]} pieces. Split *by piece* (a hash of each name, so no piece is in
two parts): training {p["tunes_train"]} ({p["tokens_train"]} tokens), validation {p["tunes_validation"]}
({p["tokens_validation"]} tokens, early stopping), held-out {p["tunes_held_out"]} ({p["tokens_held_out"]}
tokens, the figures below). Why four-voice music: a chord-token model needs chords to learn, and these
are the collections music21 ships that are made of them (four voices moving mostly together); the folk
tunes are single melodies. Training pitches span MIDI {p["pitch_min"]}-{p["pitch_max"]}. Corpus
fingerprint `{p["corpus_fingerprint"]}`.
""",
            "Tokens": f"""\
A token is the set of pitches that start together, named as music21 names notes: a single note is its
pitch name with octave (`C4` = MIDI 60) and a chord its pitches from low to high joined by dots
(`{chord_example}`). Notes less than {CHORD_TICKS} ticks (a 64th) apart fold into one chord, in
training and live. The vocabulary is the {kept_tokens} ({by_size}; most frequent first: {examples}),
listed in `livegen.toml` as `representation.tokens`. The training pieces hold
{int(p["distinct_tokens_train"])} distinct chords and notes, most of them voicings seen once or twice;
the vocabulary holds {percent(p["vocabulary_coverage_train"])} of training chords and
{percent(p["vocabulary_coverage_held_out"])} of held-out chords exactly. Every other pitch set (in
training, and a performer's chords live) is mapped to the **nearest** chord token: the smallest symmetric
chamfer distance in semitones (each note of one set to the nearest note of the other, both ways,
summed; ties to the more frequent token). So a voicing one note away maps to its neighbour, and a lone
note to the same or the nearest lone note.
{shift_text}
""",
            "Timing": f"""\
{timing}
""",
            "Model and training": f"""\
- Embedding({len(vocabulary)}, {cfg.embed}) -> causal Conv1D({cfg.filters} filters, kernel {KERNEL}, ReLU)
  -> dropout {cfg.conv_dropout} -> {cfg.layers} x LSTM({cfg.hidden}) with dropout {cfg.dropout} after each
  -> Linear({cfg.hidden}, {len(vocabulary)}) -> softmax; {params} parameters, {size_bytes / 1e6:.1f} MB as ONNX.
- Cross-entropy of the next token at every position of windows of {cfg.window} tokens
  ({p["windows_train"]} training windows, cut inside pieces), Adam at {cfg.learning_rate}, halved after
  {cfg.lr_patience} epochs without a better validation loss, gradient norm clipped at {cfg.grad_clip},
  batches of {cfg.batch_size}, shuffled with a generator seeded by `--seed {p["seed"]}`.
- Early stopping (patience {t["patience"]}): {t["epochs_run"]} epochs of at most {t["max_epochs"]}, best
  epoch {t["best_epoch"]} (validation loss {m["best_val_loss"]:.4f}); those weights are exported.
  Training took {float(t["training_seconds"]) / 60:.1f} min on {t["threads"]} CPU threads (torch
  {p["torch_version"]}).

| epoch | learning rate | train loss | validation loss |
|---:|---:|---:|---:|
{history}
""",
            "Held-out figures": f"""\
Each held-out piece runs as one stream from a zero state, as the host runs it; the prediction after
every token is scored against the next token, as mapped to the vocabulary. Baselines on the same
targets: the most frequent training token (of that kind), and repeat the last token (of that kind).

| next token | this model, top-1 | most frequent | repeat the last | targets |
|---|---:|---:|---:|---:|
{_accuracy_rows(m, timed)}

ONNX parity: the exported step graph, run token by token in onnxruntime on {len(checkpoint["held_out_sample"])}
held-out pieces (alone and as one batch), differs from PyTorch running each whole sequence with the
same weights in float64 by at most {m["parity_max_abs_diff"]:.2g} on the logits at any step and on the final
state (the cell state relative to its size where it exceeds 1); the export fails above
{PARITY_TOLERANCE:g}. PyTorch's own float32 run differs from that reference by up to
{m["parity_torch_float32_max_abs_diff"]:.2g}.
""",
            "Seed phrase": f"""\
`{SEED}`: the opening (up to 8 beats) of the held-out piece `{seed_tune}`, at {SEED_BPM:g} BPM.
""",
            "What was kept from the seed, and what changed": f"""\
Kept: music21-style note and chord tokens with a vocabulary built from the training data; Conv1D with
kernel 3 and ReLU; two LSTM layers of 256 units; dropout after the convolution and after each LSTM
layer (0.1 and 0.3, as the seed's Model 1 code); a softmax over the vocabulary trained with
cross-entropy; sequences of 100 tokens{kept_fixed}.

Changed or scaled down, and why:

- **Conv1D is causal and the loss is taken at every position.** The seed flattens the whole window into
  its dense layer and predicts only the 101st token. The host streams one token at a time from a zero
  state, so the convolution reads the current token and the two before it (zeros before the first; the
  step graph carries those two embeddings as state, `context`) and every position is a target.
- **Embedding({cfg.embed}) instead of the token index divided by the vocabulary size.** One number per
  token places the tokens on an arbitrary line; a learned embedding is what a categorical input needs.
- **Vocabulary capped at {cfg.max_vocab} tokens** (for two CPU cores and the package size): the output
  layer costs {cfg.hidden} numbers per token and the rare voicings have too few examples to learn; the
  rest map to the nearest token.
- **Chords keep their octaves** (the seed's chords were pitch classes, `normalOrder`), so the host can
  play them voiced; this is what makes the vocabulary large.{changed_timing}
- **Data**: {p["tunes"]} pieces ({p["tokens_train"]} training tokens) rather than the seed's 10-song
  training sets of one key and metre; not transposed.
- **Sampling temperature {DEFAULT_TEMPERATURE:g} by default** (the seed took the argmax). Chosen on the
  validation pieces with `livegen evaluate --split validation` (overlap of pitch classes / melodic
  intervals with the real continuations): {_tuning()}. 1.0 scores best there, but on those phrases its
  accompaniment's top line leaps 1.40 times the real music's, the quality gate's limit; at
  {DEFAULT_TEMPERATURE:g} every gate figure there but the accompaniment's density is inside the gate's band.
- **Adam, early stopping on a validation split** ({t["epochs_run"]} epochs, {float(t["training_seconds"]) / 60:.0f}
  minutes) instead of RMSprop for 200-2000 epochs on GPUs: two shared CPU cores. The seed's own
  figures show heavy over-fitting (train loss 0.0097, test loss 0.71); early stopping keeps the
  weights that generalise best.
""",
            "Limits": f"""\
{limits_timing}
- The merged four voices are one token stream: a passing note in one voice is a one-note token, and
  the chord under it is not re-sounded.
- Only the {len(chords)} kept chords and notes are ever played; a performer's chord is heard as the nearest.
- Trained in the keys of the pieces as written (no transposition): a performer in a remote key is
  heard through the nearest tokens; `--transpose follow` helps.
""",
        },
    )


def export_token_package(
    checkpoint_path: Path,
    out: Path,
    *,
    name: str | None = None,
    version: str = "1.0.0",
    description: str | None = None,
    tolerance: float = PARITY_TOLERANCE,
) -> Path:
    """Export a ``token-lstm`` checkpoint as the package folder ``out``; returns ``out``.

    Raises :class:`~export.errors.ParityError` (and writes nothing) when the graph
    differs from PyTorch by more than ``tolerance``.
    """
    checkpoint = load_checkpoint(checkpoint_path)
    if checkpoint.get("family") != NAME:
        raise ExportError(f"{checkpoint_path}: family {checkpoint.get('family')!r} is not {NAME!r}")
    name = name or out.name
    check_target(name, out, " (e.g. token-lstm)")
    model, vocabulary = model_from_checkpoint(checkpoint, checkpoint_path)
    provenance = checkpoint["provenance"]
    if description is None:
        data = {"corpus:bach": "music21's Bach chorales", "corpus:four-voice": "music21's four-voice works"}.get(
            provenance["data"], provenance["data"]
        )
        lstm = f"Conv1D + {model.config.layers} x LSTM({model.config.hidden})"
        description = (
            f"{lstm} over {len(vocabulary)} note, chord and time-shift tokens, trained on {data}; it chooses "
            "when each chord comes."
            if vocabulary.timed
            else f"{lstm} over {len(vocabulary)} note and chord tokens, trained on {data}; one token every "
            f"{float(checkpoint['step_beats']):g} beats."
        )
    sample = sample_tunes(checkpoint["held_out_sample"])
    sequences = [s for s in (tune_tokens(t, vocabulary) for t in sample) if len(s) >= 2]

    def build(staging: Path) -> tuple[dict[str, Any], str]:
        graph = staging / GRAPH
        export_step_graph(model, graph)
        diff, torch_diff = parity(model, graph, sequences)
        check_parity(diff, graph, tolerance, graphs="the ONNX step graph differs")
        metrics = {
            **checkpoint["metrics"],
            "parity_max_abs_diff": diff,
            "parity_torch_float32_max_abs_diff": torch_diff,
        }
        seed_tune = write_seed(staging / SEED, sample, int(provenance["pitch_min"]), int(provenance["pitch_max"]))
        card = model_card(
            name=name,
            description=description,
            checkpoint=checkpoint,
            model=model,
            vocabulary=vocabulary,
            metrics=metrics,
            seed_tune=seed_tune,
            size_bytes=graph.stat().st_size,
        )
        manifest = build_manifest(
            name=name,
            version=version,
            description=description,
            checkpoint=checkpoint,
            model=model,
            vocabulary=vocabulary,
            metrics=metrics,
            files={},
        )
        return manifest, card

    write_package(out, name, build, example=" (e.g. token-lstm)", files=(GRAPH, CARD, SEED))
    return out
