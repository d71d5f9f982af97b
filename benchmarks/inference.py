"""Item 5: inference per step (or frame) per family, onnxruntime against PyTorch eager.

Context: setup (a benchmark; imports torch, from the ``train`` extra).

Same weights in both runtimes, in the same run: for each bundled family the benchmark
builds the family's PyTorch model from ``export/`` at the bundled package's sizes
(read from its ONNX graph), with random weights (``torch.manual_seed(0)``; timing does
not depend on the values), exports its step graph with the project's own exporter, and
opens that file with the host's session options (``livegen.models.package``). Then it
times one step with the state carried, batch 1, alternating the two runtimes in rounds
so that load changes hit both alike. PyTorch runs under ``torch.inference_mode()`` with
one thread, as onnxruntime does. The ratio is PyTorch time over onnxruntime time.

    python -m benchmarks.inference [--steps N] [--quick]
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Step = Callable[[], None]


def _shape(package: str, graph: str, name: str) -> list[int | str]:
    from livegen.models.manifest import MANIFEST, parse_manifest
    from livegen.models.registry import resolve_package

    manifest = parse_manifest(resolve_package(package) / MANIFEST)
    spec = manifest.graphs[graph]
    for t in (*spec.inputs, *spec.outputs):
        if t.name == name:
            return list(t.shape)
    raise KeyError(f"{package}: graph {graph} has no tensor {name}")


def _ort_session(path: Path) -> Any:
    from livegen.models.package import _session

    return _session(path)


def _loop_ort(session: Any, inputs: dict[str, np.ndarray], state: dict[str, str]) -> Step:
    """A step: run the graph, feed the state outputs back as the next inputs."""
    names = [o.name for o in session.get_outputs()]
    feeds = dict(inputs)

    def step() -> None:
        outs = dict(zip(names, session.run(names, feeds), strict=True))
        for src, dst in state.items():
            feeds[src] = outs[dst]

    return step


def _loop_torch(module: Any, args: list[Any], state: dict[int, int]) -> Step:
    import torch

    values = list(args)

    def step() -> None:
        with torch.inference_mode():
            outs = module(*values)
        for src, dst in state.items():
            values[src] = outs[dst]

    return step


def _folk(folder: Path) -> tuple[Step, Step, str]:
    import torch

    from export.midirnn.model import MidiRnn, TimeClasses
    from export.midirnn.package import export_step_graph

    hidden = int(_shape("folk-lstm", "step", "h")[-1])
    width = int(_shape("folk-lstm", "step", "note")[-1])
    k_step = int(_shape("folk-lstm", "step", "step_logits")[-1])
    k_dur = int(_shape("folk-lstm", "step", "duration_logits")[-1])
    classes = TimeClasses(tuple(0.25 * (i + 1) for i in range(k_step)), tuple(0.25 * (i + 1) for i in range(k_dur)))
    # export/midirnn/model.py is being changed by another session: pass input_size only if it is taken.
    extra = {"input_size": width} if "input_size" in inspect.signature(MidiRnn.__init__).parameters else {}
    model = MidiRnn(hidden=hidden, time_classes=classes, **extra).eval()
    path = folder / "folk.onnx"
    export_step_graph(model, path)
    from export.midirnn.model import MidiRnnStep

    note = np.array([[0.5, 0.5, 0.5] + [0.0] * (width - 3)], dtype=np.float32)
    zeros = np.zeros((1, 1, hidden), dtype=np.float32)
    ort_step = _loop_ort(_ort_session(path), {"note": note, "h": zeros, "c": zeros}, {"h": "h_out", "c": "c_out"})
    args = [torch.from_numpy(note), torch.zeros(1, 1, hidden), torch.zeros(1, 1, hidden)]
    torch_step = _loop_torch(MidiRnnStep(model).eval(), args, {1: 3, 2: 4})
    return ort_step, torch_step, f"MidiRnn LSTM({hidden}), input {width}, heads 128+{k_step}+{k_dur}"


def _token(folder: Path) -> tuple[Step, Step, str]:
    import torch

    from export.tokenlstm.model import KERNEL, TokenLstm, TokenLstmConfig, TokenLstmStep
    from export.tokenlstm.package import export_step_graph

    h = _shape("token-lstm", "step", "h")
    ctx = _shape("token-lstm", "step", "context")
    vocab = int(_shape("token-lstm", "step", "logits")[-1])
    config = TokenLstmConfig(embed=int(ctx[-1]), hidden=int(h[-1]), layers=int(h[0]))
    model = TokenLstm(vocab, config).eval()
    path = folder / "token.onnx"
    export_step_graph(model, path)
    token = np.array([3], dtype=np.int64)
    context = np.zeros((1, KERNEL - 1, config.embed), dtype=np.float32)
    zeros = np.zeros((config.layers, 1, config.hidden), dtype=np.float32)
    feeds: dict[str, np.ndarray] = {"token": token, "context": context, "h": zeros, "c": zeros}
    state = {"context": "context_out", "h": "h_out", "c": "c_out"}
    ort_step = _loop_ort(_ort_session(path), feeds, state)
    args = [torch.from_numpy(token), torch.from_numpy(context), torch.from_numpy(zeros), torch.from_numpy(zeros)]
    torch_step = _loop_torch(TokenLstmStep(model).eval(), args, {1: 1, 2: 2, 3: 3})
    return ort_step, torch_step, f"TokenLstm vocab {vocab}, Conv1D + {config.layers} x LSTM({config.hidden})"


def _multitrack(folder: Path) -> tuple[Step, Step, str]:
    import torch

    from export.common import export_graph
    from export.multitrack_rnn.model import MultiTrackConfig, MultiTrackRnn, StepGraph

    hidden = int(_shape("multitrack-rnn", "step", "h")[-1])
    width = int(_shape("multitrack-rnn", "step", "frame")[-1])
    config = MultiTrackConfig(hidden=hidden, tracks=4, keys=width // 4 - 1)
    model = MultiTrackRnn(config).eval()
    path = folder / "multitrack.onnx"
    batch = torch.export.Dim("batch")
    example = (torch.zeros(2, width), torch.zeros(1, 2, hidden), torch.zeros(1, 2, hidden))
    export_graph(
        StepGraph(model),
        example,
        path,
        inputs=("frame", "h", "c"),
        outputs=("logits", "h_out", "c_out"),
        dynamic={"frame": {0: batch}, "h": {1: batch}, "c": {1: batch}},
    )
    frame = np.zeros((1, width), dtype=np.float32)
    frame[0, ::49] = 1.0
    zeros = np.zeros((1, 1, hidden), dtype=np.float32)
    feeds = {"frame": frame, "h": zeros, "c": zeros}
    ort_step = _loop_ort(_ort_session(path), feeds, {"h": "h_out", "c": "c_out"})
    args = [torch.from_numpy(frame), torch.zeros(1, 1, hidden), torch.zeros(1, 1, hidden)]
    torch_step = _loop_torch(StepGraph(model).eval(), args, {1: 1, 2: 2})
    return ort_step, torch_step, f"MultiTrackRnn LSTM({hidden}) over {width}-wide frames"


def _deep(folder: Path) -> tuple[Step, Step, str]:
    import torch

    from export.common import export_graph
    from export.deepmusician.model import KEYS, DecoderGraph, DeepMusician, DeepMusicianConfig

    h = _shape("deep-musician", "decoder", "h")
    config = DeepMusicianConfig(hidden=int(h[-1]), layers=int(h[0]))
    model = DeepMusician(config).eval()
    path = folder / "decoder.onnx"
    batch = torch.export.Dim("batch")
    example = (torch.zeros(2, KEYS), torch.zeros(config.layers, 2, config.hidden))
    export_graph(
        DecoderGraph(model),
        example,
        path,
        inputs=("frame", "h"),
        outputs=("logits", "h_out"),
        dynamic={"frame": {0: batch}, "h": {1: batch}},
    )
    frame = np.zeros((1, KEYS), dtype=np.float32)
    frame[0, 40] = 1.0
    zeros = np.zeros((config.layers, 1, config.hidden), dtype=np.float32)
    ort_step = _loop_ort(_ort_session(path), {"frame": frame, "h": zeros}, {"h": "h_out"})
    args = [torch.from_numpy(frame), torch.from_numpy(zeros)]
    torch_step = _loop_torch(DecoderGraph(model).eval(), args, {1: 1})
    return ort_step, torch_step, f"DeepMusician decoder: {config.layers} x GRU({config.hidden}) + classifier"


FAMILIES: dict[str, Callable[[Path], tuple[Step, Step, str]]] = {
    "folk-lstm": _folk,
    "token-lstm": _token,
    "multitrack-rnn": _multitrack,
    "deep-musician": _deep,
}


def _time(step: Step, n: int) -> list[int]:
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        started = clock()
        step()
        out.append(clock() - started)
    return out


def compare(ort_step: Step, torch_step: Step, steps: int, rounds: int = 10) -> dict[str, float]:
    """Median step time of each runtime, alternating in ``rounds``; their ratio."""
    for step in (ort_step, torch_step):
        _time(step, 20)  # warm-up
    ort_ns: list[int] = []
    torch_ns: list[int] = []
    per_round = max(1, steps // rounds)
    for _ in range(rounds):
        ort_ns += _time(ort_step, per_round)
        torch_ns += _time(torch_step, per_round)
    ort_ms = statistics.median(ort_ns) / 1e6
    torch_ms = statistics.median(torch_ns) / 1e6
    return {
        "onnxruntime_p50_ms": round(ort_ms, 4),
        "torch_eager_p50_ms": round(torch_ms, 4),
        "torch_over_onnxruntime": round(torch_ms / ort_ms, 2),
        "steps_each": per_round * rounds,
    }


def measure(steps: int = 2000, *, quick: bool = False, families: list[str] | None = None) -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"skipped": "torch is not installed: `pip install -e '.[train]'` (make setup-dev)"}
    if quick:
        steps = min(steps, 200)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    results: dict[str, Any] = {
        "weights": "random (torch.manual_seed(0)) at the bundled sizes, exported with export/ to ONNX: "
        "the same weights in both runtimes",
        "torch": torch.__version__,
        "torch_threads": 1,
        "target_ratio_folk_lstm": 5.0,
        "families": {},
    }
    try:
        with tempfile.TemporaryDirectory(prefix="livegen-bench-inference-") as tmp:
            for name in families or list(FAMILIES):
                try:
                    ort_step, torch_step, what = FAMILIES[name](Path(tmp))
                    results["families"][name] = {"model": what, **compare(ort_step, torch_step, steps)}
                except Exception as err:  # one family failing must not hide the others
                    results["families"][name] = {"error": f"{type(err).__name__}: {err}"}
    finally:
        torch.set_num_threads(threads)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.steps, quick=args.quick), indent=2))


if __name__ == "__main__":
    main()
