"""The ``token-lstm`` family: tokens, nearest chords, the step adapter, and a tiny train/export/play run.

Context: setup (tests). The adapter tests run a hand-written ONNX graph (a Markov chain
over tokens) so that what the adapter plays is known exactly; the end-to-end test trains
a tiny model with the training extra and plays it through the offline engine.
"""

from __future__ import annotations

import itertools
import tomllib
from pathlib import Path

import numpy as np
import onnx
import pytest
import tomli_w
from onnx import TensorProto, helper, numpy_helper

from livegen.errors import PackageError
from livegen.models.package import load_package, sha256_of
from livegen.models.sampling import SamplingParams
from livegen.models.step import StepEvent
from livegen.models.tokenlstm import (
    CHORD_TICKS,
    MAX_SHIFTS,
    TokenLstmGenerator,
    Vocabulary,
    chamfer,
    group_chords,
    parse_shift,
    parse_token,
    shift_name,
    token_name,
    tune_tokens,
)
from livegen.music.corpus import Tune

# ---- tokens -----------------------------------------------------------------------------


def test_token_names_are_pitch_names_with_octaves_low_to_high():
    assert token_name([60]) == "C4"
    assert token_name([61]) == "C#4"
    assert token_name([64, 48, 55, 64]) == "C3.G3.E4"  # sorted, duplicates dropped
    assert token_name([0, 127]) == "C-1.G9"
    assert parse_token("C3.G3.E4") == (48, 55, 64)
    assert parse_token("A#2") == (46,)
    assert parse_token("C-1") == (0,)


@pytest.mark.parametrize("bad", ["Db4", "E4.C4", "C4.C4", "H2", "G#9", ""])
def test_parse_token_refuses_what_token_name_never_writes(bad):
    with pytest.raises(ValueError):
        parse_token(bad)


def test_notes_closer_than_a_64th_fold_into_one_chord_token():
    onsets = [0, 0, 0, 240, 250, 480, 500, 520]
    pitches = [67, 60, 64, 62, 65, 60, 72, 60]
    assert CHORD_TICKS == 30
    assert group_chords(onsets, pitches) == [
        (0, (60, 64, 67)),
        (240, (62, 65)),  # 10 ticks apart: a performer's chord
        (480, (60, 72)),  # each note measured from the previous one; the repeated 60 counts once
    ]
    assert group_chords([0, 30], [60, 64]) == [(0, (60,)), (30, (64,))]


def test_chamfer_distance_counts_each_voice_to_the_nearest_both_ways():
    assert chamfer([60, 64, 67], [60, 64, 67]) == 0
    assert chamfer([60, 64, 67], [60, 64, 69]) == 4  # G->A and A->G
    assert chamfer([60, 64, 67], [48, 52, 55]) == (5 + 9 + 12) + (12 + 8 + 5)  # each to the nearest, both ways
    assert chamfer([60], [60, 64]) == 4  # the extra E is 4 from C
    assert chamfer([60], [62]) == 4


def test_unknown_chords_map_to_the_nearest_token_ties_to_the_earlier():
    vocab = Vocabulary(["C4", "C4.E4.G4", "C3.E3.G3", "D4", "C4.E4"])
    assert vocab.index([67, 60, 64]) == 1
    assert vocab.index([60, 65]) is None
    assert vocab.nearest([60, 64, 69]) == 1  # C-E-A: 4 from C-E-G (A->G, G->A), 5 from C-E
    assert vocab.nearest([48, 52, 55, 60]) == 2  # C3-E3-G3 plus C4: 5 from C3-E3-G3, 36 from C4-E4-G4
    assert vocab.nearest([61]) == 0  # C#4: 2 from C4 and from D4; the earlier (more frequent) wins
    assert vocab.nearest([60, 63]) == 4  # C-Eb: 2 from C-E, 3 from C4 alone, 6 from C-E-G
    assert vocab.nearest([100]) == 3  # far above everything: the highest single note
    assert list(vocab.distances([60, 64, 69])) == [0 + 13, 4, 25 + 28, 2 + 11, 0 + 5]


# ---- the adapter over a hand-written graph ---------------------------------------------------

TOKENS = ["C4", "C4.E4.G4", "D4.F4.A4", "G3", "E5"]
EMBED, HIDDEN, LAYERS = 4, 8, 2


def _markov_graph(transitions: np.ndarray, previous: np.ndarray | None = None, embed: int = EMBED) -> onnx.ModelProto:
    """logits = 10 * transitions[token] (+ 10 * previous[the token before it]); context_out shifts in the
    token's one-hot (``embed`` wide, index mod ``embed``); h_out = h + 1."""
    v = len(transitions)
    one_hot = np.zeros((v, embed), np.float32)
    one_hot[np.arange(v), np.arange(v) % embed] = 1
    inits = [
        numpy_helper.from_array((10 * transitions).astype(np.float32), "T"),
        numpy_helper.from_array(one_hot, "E"),
        numpy_helper.from_array(np.ones(1, np.float32), "one"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([1], np.int64), "start"),
        numpy_helper.from_array(np.array([2], np.int64), "stop"),
    ]
    nodes = [
        helper.make_node("Gather", ["T", "token"], ["logits" if previous is None else "first"], axis=0),
        helper.make_node("Gather", ["E", "token"], ["emb"], axis=0),
        helper.make_node("Unsqueeze", ["emb", "axis1"], ["emb3"]),
        helper.make_node("Slice", ["context", "start", "stop", "axis1"], ["last"]),
        helper.make_node("Concat", ["last", "emb3"], ["context_out"], axis=1),
        helper.make_node("Add", ["h", "one"], ["h_out"]),
        helper.make_node("Identity", ["c"], ["c_out"]),
    ]
    if previous is not None:  # the token before this one is context[:, 1, :] (a one-hot when embed >= v)
        inits.append(numpy_helper.from_array((10 * previous).astype(np.float32), "P"))
        nodes += [
            helper.make_node("Squeeze", ["last", "axis1"], ["prev"]),
            helper.make_node("MatMul", ["prev", "P"], ["second"]),
            helper.make_node("Add", ["first", "second"], ["logits"]),
        ]
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "markov",
        [
            helper.make_tensor_value_info("token", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("context", f, ["batch", 2, embed]),
            helper.make_tensor_value_info("h", f, [LAYERS, "batch", HIDDEN]),
            helper.make_tensor_value_info("c", f, [LAYERS, "batch", HIDDEN]),
        ],
        [
            helper.make_tensor_value_info("logits", f, ["batch", v]),
            helper.make_tensor_value_info("context_out", f, ["batch", 2, embed]),
            helper.make_tensor_value_info("h_out", f, [LAYERS, "batch", HIDDEN]),
            helper.make_tensor_value_info("c_out", f, [LAYERS, "batch", HIDDEN]),
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def _write(
    folder: Path,
    transitions: np.ndarray,
    tokens: list[str] = TOKENS,
    previous: np.ndarray | None = None,
    **representation,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    embed = EMBED if previous is None else len(tokens)
    onnx.save(_markov_graph(transitions, previous, embed), str(folder / "model.onnx"))

    def t(name, shape, dtype="float32"):
        return {"name": name, "shape": shape, "dtype": dtype}

    manifest = {
        "schema": 1,
        "name": "markov-tokens",
        "family": "token-lstm",
        "kind": "step",
        "version": "0.0.1",
        "representation": {"tokens": tokens, "step_beats": 0.5, "duration_beats": 0.5, **representation},
        "graphs": {
            "step": {
                "file": "model.onnx",
                "inputs": [
                    t("token", ["batch"], "int64"),
                    t("context", ["batch", 2, embed]),
                    t("h", [LAYERS, "batch", HIDDEN]),
                    t("c", [LAYERS, "batch", HIDDEN]),
                ],
                "outputs": [
                    t("logits", ["batch", len(tokens)]),
                    t("context_out", ["batch", 2, embed]),
                    t("h_out", [LAYERS, "batch", HIDDEN]),
                    t("c_out", [LAYERS, "batch", HIDDEN]),
                ],
                "state": [
                    {"input": "context", "output": "context_out"},
                    {"input": "h", "output": "h_out"},
                    {"input": "c", "output": "c_out"},
                ],
            }
        },
        "files": {"model.onnx": sha256_of(folder / "model.onnx")},
    }
    (folder / "livegen.toml").write_bytes(tomli_w.dumps(manifest).encode())
    return folder


def _cycle() -> np.ndarray:
    """C4 -> C-E-G -> D-F-A -> G3 -> E5 -> C4, each all but certain."""
    v = len(TOKENS)
    return np.roll(np.eye(v), 1, axis=1)


@pytest.fixture
def generator(tmp_path: Path) -> TokenLstmGenerator:
    return TokenLstmGenerator(load_package(_write(tmp_path / "markov", _cycle())))


COLD = SamplingParams(temperature=0.05, top_p=1.0)


def _play(gen: TokenLstmGenerator, n: int, rng: np.random.Generator, params: SamplingParams = COLD) -> list:
    """Sample and feed back ``n`` events, as a planner does."""
    out = []
    for _ in range(n):
        event = gen.sample(params, rng)
        gen.feed(event)
        out.append((event.pitch, event.step, event.duration))
    return out


def test_a_chord_token_is_sampled_once_and_played_as_several_events(generator):
    rng = np.random.default_rng(0)
    generator.feed(StepEvent(60, 0, 240))  # C4 -> the next token is C-E-G
    assert _play(generator, 7, rng) == [
        (60, 240, 240),
        (64, 0, 240),
        (67, 0, 240),  # C4.E4.G4, one eighth after C4
        (62, 240, 240),
        (65, 0, 240),
        (69, 0, 240),  # D4.F4.A4
        (55, 240, 240),  # G3
    ]
    assert generator.fed == 8


def test_sample_without_feeding_repeats_the_pending_chord_note(generator):
    rng = np.random.default_rng(0)
    generator.feed(StepEvent(60, 0, 240))
    first = generator.sample(COLD, rng)
    generator.feed(first)
    assert generator.sample(COLD, rng) == generator.sample(COLD, rng) == StepEvent(64, 0, 240)


def test_snapshot_mid_chord_restores_the_buffered_notes_and_state(generator):
    rng = np.random.default_rng(0)
    generator.feed(StepEvent(55, 0, 240))  # G3 -> E5 -> C4 -> C-E-G
    _play(generator, 3, rng)  # E5, C4, C (first note of C-E-G)
    snap = generator.snapshot()
    fed = generator.fed
    after = _play(generator, 5, rng)
    assert after[:2] == [(64, 0, 240), (67, 0, 240)]  # the rest of the chord
    generator.feed(StepEvent(72, 480, 240))  # a performed note ends the plan
    generator.restore(snap)
    assert generator.fed == fed
    assert _play(generator, 5, rng) == after
    generator.reset()
    assert generator.fed == 0
    with pytest.raises(RuntimeError):
        generator.sample(COLD, rng)


def test_performed_chord_folds_into_one_token_and_unknown_chords_map_to_the_nearest(generator):
    rng = np.random.default_rng(0)
    # D4-F4-A4 played 10 ticks apart in a scrambled order: heard as one token -> G3 next
    for pitch, step in ((65, 0), (62, 10), (69, 10)):
        generator.feed(StepEvent(pitch, step, 400))
    assert generator.sample(COLD, rng) == StepEvent(55, 240, 240)
    # C4-E4-A4 is unknown: the nearest token is C-E-G (distance 4), whose successor is D-F-A
    generator.reset()
    for pitch, step in ((60, 0), (64, 0), (69, 0)):
        generator.feed(StepEvent(pitch, step, 400))
    assert generator.sample(COLD, rng).pitch == 62


def test_the_first_note_of_a_drawn_token_opens_a_new_token_even_with_step_zero(generator):
    """After a planner's restart the next model note is fed with step 0; it must not join the last chord."""
    rng = np.random.default_rng(0)
    generator.feed(StepEvent(60, 0, 240))
    event = generator.sample(COLD, rng)  # C of C-E-G
    generator.feed(StepEvent(event.pitch, 0, 240))
    assert [generator.sample(COLD, rng)] == [StepEvent(64, 0, 240)]


def test_pitch_range_and_scale_mask_whole_tokens(generator):
    rng = np.random.default_rng(0)
    generator.feed(StepEvent(60, 0, 240))  # C-E-G is all but certain next
    # a range that cuts G4 off: C-E-G is masked, the next most likely allowed token is drawn
    low = SamplingParams(temperature=0.05, top_p=1.0, pitch_min=50, pitch_max=66)
    pitches = set()
    for seed in range(20):
        snap = generator.snapshot()
        event = generator.sample(low, np.random.default_rng(seed))
        pitches.add(event.pitch)
        generator.restore(snap)
    assert pitches <= {55, 60}  # G3 or C4 (single notes inside the range)
    # A minor pentatonic from 60 to 70 allows C4 and C-E-G whole; D-F-A has an F, G3 and E5 are out of range
    pent = SamplingParams(temperature=0.05, top_p=1.0, scale="minor-pentatonic", root=9, pitch_min=60, pitch_max=70)
    assert _play(generator, 4, rng, pent) == [(60, 240, 240), (64, 0, 240), (67, 0, 240), (60, 240, 240)]
    # 62-66 holds no whole token: tokens with an allowed pitch are drawn and only those pitches played
    narrow = SamplingParams(temperature=0.05, top_p=1.0, pitch_min=62, pitch_max=66)
    generator.reset()
    generator.feed(StepEvent(60, 0, 240))
    played = _play(generator, 12, rng, narrow)
    assert played[:3] == [(64, 240, 240), (62, 240, 240), (65, 0, 240)]  # E of C-E-G; D, F of D-F-A
    assert {p for p, _, _ in played} == {62, 64, 65}


def test_manifest_mistakes_name_the_field(tmp_path):
    folder = _write(tmp_path / "short", _cycle())
    manifest = tomllib.loads((folder / "livegen.toml").read_text())
    manifest["representation"]["tokens"] = TOKENS[:-1]
    (folder / "livegen.toml").write_bytes(tomli_w.dumps(manifest).encode())
    with pytest.raises(PackageError, match=r"representation\.tokens.*5 token names"):
        TokenLstmGenerator(load_package(folder))
    manifest["representation"]["tokens"] = ["C4", "C4", "D4", "G3", "E5"]
    (folder / "livegen.toml").write_bytes(tomli_w.dumps(manifest).encode())
    with pytest.raises(PackageError, match=r"representation\.tokens.*twice"):
        TokenLstmGenerator(load_package(folder))
    folder = _write(tmp_path / "step", _cycle(), step_beats=0)
    with pytest.raises(PackageError, match=r"representation\.step_beats"):
        TokenLstmGenerator(load_package(folder))


# ---- time shifts ----------------------------------------------------------------------------

TIMED = ["C4", "C4.E4.G4", "G3", "+1/2", "+1", "+2"]
C4, CEG, G3, HALF, ONE, TWO = range(len(TIMED))


def test_time_shifts_are_named_in_beats_in_lowest_terms():
    assert [shift_name(t) for t in (240, 480, 720, 160, 1920)] == ["+1/2", "+1", "+3/2", "+1/3", "+4"]
    assert [parse_shift(n) for n in ("+1/2", "+3/2", "+1/3", "C4")] == [240, 720, 160, None]


@pytest.mark.parametrize("bad", ["+0", "+2/4", "+1/0", "+1/7"])
def test_parse_shift_refuses_what_shift_name_never_writes(bad):
    with pytest.raises(ValueError, match="time shift"):
        parse_shift(bad)


def test_a_gap_is_the_nearest_shift_and_a_long_gap_the_longest_shifts_first():
    vocabulary = Vocabulary(TIMED)
    assert vocabulary.gap(240) == vocabulary.gap(250) == (HALF,)  # a performer a little late
    assert vocabulary.gap(30) == (HALF,)  # shorter than every shift: the shortest
    assert vocabulary.gap(1440) == (TWO, ONE)
    assert vocabulary.gap(1940) == (TWO, TWO)  # the 20 ticks left are nearer nothing than +1/2
    assert vocabulary.gap(20 * 960) == (TWO,) * MAX_SHIFTS
    assert Vocabulary(TOKENS).gap(480) == ()


def test_a_tune_reads_as_its_chords_and_the_shifts_between_them():
    tune = Tune(
        "t",
        pitch=np.array([60, 64, 67, 55, 60], np.int16),
        onset=np.array([0, 0, 0, 1, 4], np.float32),
        duration=np.ones(5, np.float32),
    )
    assert tune_tokens(tune, Vocabulary(TIMED)).tolist() == [CEG, ONE, G3, TWO, ONE, C4]
    assert tune_tokens(tune, Vocabulary(TOKENS)).tolist() == [1, 3, 0]  # no shifts: the seed's tokens


def _timed_cycle() -> np.ndarray:
    """C4 -> +1 -> C-E-G -> +1/2 -> G3 -> +1 -> C-E-G, each all but certain."""
    t = np.zeros((len(TIMED), len(TIMED)))
    t[C4, ONE] = t[ONE, CEG] = t[CEG, HALF] = t[HALF, G3] = t[G3, ONE] = t[TWO, C4] = 1
    return t


def test_each_drawn_chord_starts_after_its_shifts_and_sounds_until_the_next(tmp_path: Path):
    generator = TokenLstmGenerator(load_package(_write(tmp_path / "timed", _timed_cycle(), TIMED)))
    rng = np.random.default_rng(0)
    generator.feed(StepEvent(60, 0, 480))  # C4
    assert _play(generator, 5, rng) == [
        (60, 480, 240),
        (64, 0, 240),
        (67, 0, 240),  # C-E-G a beat after C4, sounding until G3
        (55, 240, 480),  # G3 half a beat later, sounding until C-E-G
        (60, 480, 240),
    ]
    snap = generator.snapshot()
    after = _play(generator, 4, rng)
    assert after == [(64, 0, 240), (67, 0, 240), (55, 240, 480), (60, 480, 240)]
    generator.restore(snap)
    assert _play(generator, 4, rng) == after


def test_the_answer_keeps_the_pulse_the_performer_played(tmp_path: Path):
    """A model whose next shift repeats the shift before the last chord: it hears the performer's timing."""
    t = np.zeros((len(TIMED), len(TIMED)))
    t[HALF, C4] = t[ONE, C4] = 1  # after a shift: C4
    previous = np.zeros_like(t)
    previous[HALF, HALF] = previous[ONE, ONE] = 1  # after a chord: the shift that came before it
    generator = TokenLstmGenerator(load_package(_write(tmp_path / "pulse", t, TIMED, previous)))
    rng = np.random.default_rng(0)
    for step, pulse in ((240, 240), (250, 240), (480, 480), (470, 480)):
        generator.reset()
        generator.feed(StepEvent(60, 0, 100))
        generator.feed(StepEvent(60, step, 100))
        event = generator.sample(COLD, rng)
        assert (event.pitch, event.step, event.duration) == (60, pulse, pulse)


def test_a_malformed_time_shift_token_names_the_field(tmp_path: Path):
    folder = _write(tmp_path / "bad", _timed_cycle(), ["C4", "C4.E4.G4", "G3", "+1/2", "+1", "+2/4"])
    with pytest.raises(PackageError, match=r"representation\.tokens.*\+2/4.*time shift"):
        TokenLstmGenerator(load_package(folder))


# ---- end to end: train, export, play ------------------------------------------------------


def _write_chorales(folder: Path, count: int = 8) -> Path:
    """Block chords of C major in four voices, quarter and eighth notes, with a passing note or two."""
    from livegen.music.events import Note
    from livegen.music.midifile import write_midi

    chords = [(48, 55, 64, 72), (53, 57, 65, 72), (55, 59, 62, 67), (45, 57, 64, 72), (50, 57, 65, 69)]
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        notes, tick = [], 0
        for _ in range(int(rng.integers(24, 40))):
            length = int(rng.choice([240, 480]))
            for pitch in chords[int(rng.integers(len(chords)))]:
                notes.append(Note(pitch=pitch, velocity=80, start=tick, duration=length))
            if rng.random() < 0.3:
                notes.append(Note(pitch=74, velocity=80, start=tick + length // 2, duration=length // 2))
            tick += length
        write_midi(folder / f"chorale{i}.mid", {"satb": notes})
    return folder


@pytest.mark.slow
def test_tiny_model_trains_exports_with_parity_and_plays_in_both_modes(tmp_path: Path):
    pytest.importorskip("torch", reason="training needs the train extra: pip install -e '.[train]'")
    from export.__main__ import main
    from export.common import PARITY_TOLERANCE
    from livegen.engine.accompany import AccompanyPlanner, AccompanySettings
    from livegen.engine.callresponse import CallResponseSettings
    from livegen.engine.live import LiveParams
    from livegen.engine.render import render_call_response
    from livegen.music.events import decode_message
    from livegen.music.midifile import read_midi
    from livegen.music.time import TempoMap

    data = _write_chorales(tmp_path / "chorales")
    package = tmp_path / "pkg" / "tiny-tokens"
    args = ["--epochs", "2", "--window", "16", "--batch-size", "4", "--hidden", "16", "--vocab-size", "8"]
    assert main(["train", "token-lstm", "--data", str(data), "--out", str(tmp_path / "run"), *args,
                 "--package", str(package)]) == 0  # fmt: skip
    manifest = tomllib.loads((package / "livegen.toml").read_text())
    assert manifest["family"] == "token-lstm" and "step_beats" not in manifest["representation"]
    tokens = manifest["representation"]["tokens"]
    chords = {"C3.G3.E4.C5", "F3.A3.F4.C5", "G3.B3.D4.G4", "A2.A3.E4.C5", "D3.A3.F4.A4", "D5"}
    shifts = {"+1/4", "+1/2", "+1"}  # the gaps the quarter and eighth chords and their passing notes make
    assert set(tokens) & shifts == shifts and set(tokens) - shifts < chords  # the 4 most frequent chords
    assert manifest["metrics"]["parity_max_abs_diff"] <= PARITY_TOLERANCE
    assert {s["input"] for s in manifest["graphs"]["step"]["state"]} == {"context", "h", "c"}
    assert "time shift" in (package / "README.md").read_text()
    # the onnx command re-exports the checkpoint
    again = tmp_path / "pkg" / "again"
    assert main(["onnx", str(tmp_path / "run" / "checkpoint.pt"), "--out", str(again)]) == 0
    # the seed's way: a fixed step, no shifts
    fixed = tmp_path / "pkg" / "fixed"
    assert main(["train", "token-lstm", "--data", str(data), "--out", str(tmp_path / "run-fixed"), *args,
                 "--fixed-step", "--package", str(fixed)]) == 0  # fmt: skip
    fixed_manifest = tomllib.loads((fixed / "livegen.toml").read_text())
    assert fixed_manifest["representation"]["step_beats"] == 0.5
    assert set(fixed_manifest["representation"]["tokens"]) == chords  # all 6, no shifts

    generator = TokenLstmGenerator(load_package(package))
    allowed = {p for name in tokens if parse_shift(name) is None for p in parse_token(name)}
    seed = read_midi(package / "seed.mid").notes
    settings = CallResponseSettings(silence_beats=1.0)
    tempo = TempoMap.constant(120)
    performance = render_call_response(
        generator, seed, tempo=tempo, params=SamplingParams(), rng_seed=1, settings=settings, response_bars=2
    )
    onsets = sorted({n.start for n in performance.model})
    assert len(performance.model) > len(onsets) >= 4  # chords: several notes share an onset
    assert {n.pitch for n in performance.model} <= allowed
    # a gap is 1 to MAX_SHIFTS time shifts, not one fixed step
    shift_ticks = [t for name in shifts if (t := parse_shift(name))]
    gaps = {sum(c) for n in range(1, MAX_SHIFTS + 1) for c in itertools.combinations_with_replacement(shift_ticks, n)}
    assert set(np.diff(onsets).tolist()) <= gaps and len(set(np.diff(onsets).tolist())) > 1
    ends = {n.start + n.duration for n in performance.model}
    assert set(onsets[1:]) <= ends  # each chord sounds until the next starts

    # accompaniment on a manual clock: the performer plays a chord, the model joins after a beat
    generator.reset()
    planner = AccompanyPlanner(
        generator, LiveParams(response_bars=1), np.random.default_rng(0), AccompanySettings(listen_beats=1)
    )
    for pitch in (60, 64, 67):
        planner.on_input(decode_message(0, (0x90, pitch, 90)))
    for pitch in (60, 64, 67):
        planner.on_input(decode_message(400, (0x80, pitch, 0)))
    committed = []
    for tick in range(0, 4000, 10):
        for action in planner.advance(tick):
            committed += [e for e in getattr(action, "events", ()) if e.is_note_on]
    # it joins after the one-beat listening window, within a beat: the model draws the time shift of its first chord
    assert committed and 480 <= min(e.tick for e in committed) < 960
    assert {e.data1 for e in committed} <= allowed
    assert len(committed) > len({e.tick for e in committed})  # chords here too
