"""Builds small, valid ``midirnn`` model packages without torch, for host tests.

The step graph is written with ``onnx.helper`` around ONNX's own LSTM operator,
with random weights, so tests of loading, verification and playing need neither
training nor the training extra. ``time_head="classes"`` writes the categorical
variant: ``step_logits`` and ``duration_logits`` over :data:`STEP_CLASSES` and
:data:`DURATION_CLASSES` instead of ``step`` and ``duration``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import tomli_w
from onnx import TensorProto, helper, numpy_helper

from livegen.models.package import sha256_of
from livegen.music.events import Note
from livegen.music.midifile import write_midi

#: Class values (beats) of the ``classes`` test package: a 16th, an 8th triplet, an 8th, ..., a half.
STEP_CLASSES = (0.25, 1 / 3, 0.5, 0.75, 1.0, 2.0)
DURATION_CLASSES = (0.125, 0.25, 0.5, 1.0, 1.5)


def step_graph(hidden: int = 16, seed: int = 0, *, classes: tuple[int, int] | None = None) -> onnx.ModelProto:
    """The step graph; ``classes`` = (K_step, K_dur) gives the categorical time head's logits."""
    rng = np.random.default_rng(seed)
    k_step, k_dur = classes or (1, 1)
    step_out, dur_out = ("step", "duration") if classes is None else ("step_logits", "duration_logits")

    def init(name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [
        init("W", 1, 4 * hidden, 3),
        init("R", 1, 4 * hidden, hidden),
        init("B", 1, 8 * hidden),
        init("Wp", hidden, 128, scale=1.0),
        init("bp", 128),
        init("Ws", hidden, k_step, scale=1.0 if classes else 0.3),
        init("Wd", hidden, k_dur, scale=1.0 if classes else 0.3),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0"),
        numpy_helper.from_array(np.array([0.5], dtype=np.float32), "half"),
    ]
    nodes = [
        helper.make_node("Unsqueeze", ["note", "axis0"], ["x"]),
        helper.make_node("LSTM", ["x", "W", "R", "B", "", "h", "c"], ["y", "h_out", "c_out"], hidden_size=hidden),
        helper.make_node("Squeeze", ["h_out", "axis0"], ["feat"]),
        helper.make_node("MatMul", ["feat", "Wp"], ["logits_raw"]),
        helper.make_node("Add", ["logits_raw", "bp"], ["pitch_logits"]),
        helper.make_node("MatMul", ["feat", "Ws"], ["step_raw"]),
        helper.make_node("Add", ["step_raw", "half"], [step_out]),
        helper.make_node("MatMul", ["feat", "Wd"], ["dur_raw"]),
        helper.make_node("Add", ["dur_raw", "half"], [dur_out]),
    ]
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "midirnn_step",
        [
            helper.make_tensor_value_info("note", f, ["batch", 3]),
            helper.make_tensor_value_info("h", f, [1, "batch", hidden]),
            helper.make_tensor_value_info("c", f, [1, "batch", hidden]),
        ],
        [
            helper.make_tensor_value_info("pitch_logits", f, ["batch", 128]),
            helper.make_tensor_value_info(step_out, f, ["batch", k_step]),
            helper.make_tensor_value_info(dur_out, f, ["batch", k_dur]),
            helper.make_tensor_value_info("h_out", f, [1, "batch", hidden]),
            helper.make_tensor_value_info("c_out", f, [1, "batch", hidden]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


#: The traps :func:`trapped_graph` can set.
TRAPS = ("loop", "alloc", "nan", "inf-step")
#: Bytes the ``alloc`` trap asks for (4 GiB of float32).
TRAP_ALLOC_BYTES = 1 << 32


def trapped_graph(trap: str, above: float, hidden: int = 16) -> onnx.ModelProto:
    """The step graph with a trap sprung when the pitch fed (``note[:, 0]``, pitch / 128) is above ``above``.

    ``loop``: a Loop of 2**62 iterations; ``alloc``: a tensor of :data:`TRAP_ALLOC_BYTES`;
    ``nan``: NaN in every pitch logit; ``inf-step``: an infinite ``step``. Zeros never spring
    it; the test package's seed phrase (pitches 60 to 67) does when ``above`` is under 0.46.
    """
    if trap not in TRAPS:
        raise ValueError(f"trap {trap!r}: expected one of {TRAPS}")
    model = step_graph(hidden)
    graph = model.graph
    target = "step" if trap == "inf-step" else "pitch_logits"
    producer = next(n for n in graph.node if target in n.output)
    producer.output[list(producer.output).index(target)] = f"{target}_untrapped"
    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(above, dtype=np.float32), "trap_above"),
            numpy_helper.from_array(np.array([0], dtype=np.int64), "trap_start"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "trap_end"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "trap_axis"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "trap_zero"),
        ]
    )
    nodes = [
        helper.make_node("Slice", ["note", "trap_start", "trap_end", "trap_axis"], ["trap_pitch"]),
        helper.make_node("ReduceMax", ["trap_pitch"], ["trap_max"], keepdims=0),
        helper.make_node("Greater", ["trap_max", "trap_above"], ["trap_sprung"]),
        helper.make_node("Cast", ["trap_sprung"], ["trap_n"], to=i64),
    ]
    if trap == "loop":
        body = helper.make_graph(
            [
                helper.make_node("Identity", ["cond_in"], ["cond_out"]),
                helper.make_node("Add", ["v_in", "one"], ["v_out"]),
            ],
            "trap_body",
            [
                helper.make_tensor_value_info("i", i64, []),
                helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                helper.make_tensor_value_info("v_in", f, []),
            ],
            [
                helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
                helper.make_tensor_value_info("v_out", f, []),
            ],
            [numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")],
        )
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(1 << 62, dtype=np.int64), "trap_trips"),
                numpy_helper.from_array(np.array(True), "trap_true"),
            ]
        )
        nodes += [
            helper.make_node("Mul", ["trap_n", "trap_trips"], ["trap_m"]),
            helper.make_node("Loop", ["trap_m", "trap_true", "trap_zero"], ["trap_v"], body=body),
            helper.make_node("Mul", ["trap_v", "trap_zero"], ["trap_add"]),
        ]
    elif trap == "alloc":
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(TRAP_ALLOC_BYTES // 4 - 1, dtype=np.int64), "trap_elements"),
                numpy_helper.from_array(np.array(1, dtype=np.int64), "trap_one_i"),
                numpy_helper.from_array(np.array([1.0], dtype=np.float32), "trap_one_f"),
            ]
        )
        nodes += [
            helper.make_node("Mul", ["trap_n", "trap_elements"], ["trap_extra"]),
            helper.make_node("Add", ["trap_extra", "trap_one_i"], ["trap_size"]),
            helper.make_node("Unsqueeze", ["trap_size", "trap_start"], ["trap_shape"]),
            helper.make_node("Expand", ["trap_one_f", "trap_shape"], ["trap_big"]),
            helper.make_node("ReduceSum", ["trap_big"], ["trap_sum"], keepdims=0),
            helper.make_node("Mul", ["trap_sum", "trap_zero"], ["trap_add"]),
        ]
    else:
        value = np.nan if trap == "nan" else np.inf
        graph.initializer.append(numpy_helper.from_array(np.array(value, dtype=np.float32), "trap_value"))
        nodes.append(helper.make_node("Where", ["trap_sprung", "trap_value", "trap_zero"], ["trap_add"]))
    nodes.append(helper.make_node("Add", [f"{target}_untrapped", "trap_add"], [target]))
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


def manifest(hidden: int, files: dict[str, str], name: str = "test-rnn", time_head: str = "regression") -> dict:
    table = {
        "schema": 1,
        "name": name,
        "family": "midirnn",
        "kind": "step",
        "version": "0.0.1",
        "description": "random weights, for tests",
        "seed_phrase": "seed.mid",
        "representation": {"time_unit": "beat", "pitch_min": 48, "pitch_max": 84, "pitch_scale": 128.0, "grid": 120},
        "graphs": {
            "step": {
                "file": "model.onnx",
                "inputs": [
                    {"name": "note", "shape": ["batch", 3], "dtype": "float32"},
                    {"name": "h", "shape": [1, "batch", hidden], "dtype": "float32"},
                    {"name": "c", "shape": [1, "batch", hidden], "dtype": "float32"},
                ],
                "outputs": [
                    {"name": "pitch_logits", "shape": ["batch", 128], "dtype": "float32"},
                    {"name": "step", "shape": ["batch", 1], "dtype": "float32"},
                    {"name": "duration", "shape": ["batch", 1], "dtype": "float32"},
                    {"name": "h_out", "shape": [1, "batch", hidden], "dtype": "float32"},
                    {"name": "c_out", "shape": [1, "batch", hidden], "dtype": "float32"},
                ],
                "state": [{"input": "h", "output": "h_out"}, {"input": "c", "output": "c_out"}],
            }
        },
        "parameters": {
            "temperature": {"default": 1.0, "min": 0.05, "max": 4.0},
            "top_p": {"default": 0.95, "min": 0.05, "max": 1.0},
        },
        "metrics": {"parity_max_abs_diff": 0.0},
        "files": files,
    }
    if time_head == "classes":
        table["representation"].update(
            time_head="classes", step_classes=list(STEP_CLASSES), duration_classes=list(DURATION_CLASSES)
        )
        outputs = table["graphs"]["step"]["outputs"]
        outputs[1] = {"name": "step_logits", "shape": ["batch", len(STEP_CLASSES)], "dtype": "float32"}
        outputs[2] = {"name": "duration_logits", "shape": ["batch", len(DURATION_CLASSES)], "dtype": "float32"}
    return table


SEED_NOTES = [Note(p, 90, i * 240, 220) for i, p in enumerate([60, 62, 64, 65, 67, 65, 64, 62])]


def write_package(
    folder: Path,
    *,
    hidden: int = 16,
    seed: int = 0,
    mutate=None,
    time_head: str = "regression",
    graph: onnx.ModelProto | None = None,
) -> Path:
    """Write a valid package to ``folder``; ``mutate(manifest_dict)`` may break it on purpose.

    ``time_head="classes"`` writes the categorical time head (see the module docstring);
    ``graph``: another step graph of the same inputs and outputs (:func:`trapped_graph`).
    """
    folder.mkdir(parents=True, exist_ok=True)
    classes = (len(STEP_CLASSES), len(DURATION_CLASSES)) if time_head == "classes" else None
    onnx.save(graph or step_graph(hidden, seed, classes=classes), str(folder / "model.onnx"))
    (folder / "README.md").write_text("# test-rnn\nRandom weights for tests.\n")
    write_midi(folder / "seed.mid", {"seed": SEED_NOTES})
    files = {n: sha256_of(folder / n) for n in ("model.onnx", "README.md", "seed.mid")}
    table = manifest(hidden, files, time_head=time_head)
    if mutate is not None:
        mutate(table)
    (folder / "livegen.toml").write_text(tomli_w.dumps(table))
    return folder
