"""Item 7: Notochord (PyPI ``notochord``) against a livegen step model of the same
architecture and size: per-event cost of feed plus query.

Context: setup (a benchmark; imports torch and notochord, from the ``bench`` extra).

- Notochord: ``Notochord()`` with its default architecture (embeddings 512, 2 x GRU(1024),
  GLU-MLP heads for instrument, pitch, time and velocity; 17.7 M parameters) and random
  weights (``torch.manual_seed(0)``; its trained checkpoint is not downloadable here),
  in eval mode, one torch thread. One event = ``feed(inst, pitch, time, vel)`` then
  ``query()`` (instrument, pitch, time, velocity sampled in turn, plus the end flag).
- livegen: the same network, with Notochord's own weights copied, as livegen hosts a
  ``step`` model: an ONNX ``step`` graph (the four embeddings summed, the GRU, the
  ``h_proj`` MLP; state carried as a tensor) and one ONNX graph per head, opened with
  livegen's session options; between the heads, numpy samples the modality and adds its
  embedding to the head's input (Notochord's query order instrument -> pitch -> time ->
  velocity), as Notochord's ``query`` does. The time and velocity mixtures are sampled
  as a plain logistic mixture (Notochord's censoring at the bounds is replaced by a
  clip), and the end flag is not predicted: a slightly smaller job.

    python -m benchmarks.notochord_peer [--events N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _softmax_sample(logits: np.ndarray, rng: np.random.Generator) -> int:
    z = logits - logits.max()
    p = np.exp(z)
    p /= p.sum()
    return int(rng.choice(len(p), p=p))


def _mixture_sample(params: np.ndarray, lo: float, hi: float, rng: np.random.Generator) -> float:
    k = len(params) // 3
    component = _softmax_sample(params[:k], rng)
    loc = params[k + component]
    scale = np.logaddexp(0.0, params[2 * k + component]) + 1e-3
    u = rng.uniform(1e-6, 1 - 1e-6)
    return float(np.clip(loc + scale * np.log(u / (1 - u)), lo, hi))


class LivegenNotochord:
    """Notochord's network hosted the livegen way: ONNX graphs and numpy sampling."""

    def __init__(self, model: Any, folder: Path) -> None:
        import torch
        from torch import nn

        from export.common import export_graph
        from livegen.models.package import _session

        emb = model.instrument_emb.weight.shape[1]
        gru_src = model.rnn.rnn
        layers, hidden = gru_src.num_layers, gru_src.hidden_size
        gru = nn.GRU(emb, hidden, layers, batch_first=True)
        gru.load_state_dict(gru_src.state_dict())

        class Step(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inst, self.pitch = model.instrument_emb, model.pitch_emb
                self.time, self.vel = model.time_emb, model.vel_emb
                self.gru, self.h_proj = gru, model.h_proj

            def forward(self, inst: Any, pitch: Any, t: Any, vel: Any, h: Any) -> tuple[Any, Any]:
                x = self.inst(inst) + self.pitch(pitch) + self.time(t) + self.vel(vel)
                out, h_out = self.gru(x, h)
                return self.h_proj(out[:, 0]), h_out

        class Head(nn.Module):
            def __init__(self, proj: Any) -> None:
                super().__init__()
                self.proj = proj

            def forward(self, x: Any) -> Any:
                return self.proj(torch.tanh(x))

        z = torch.zeros
        export_graph(
            Step().eval(),
            (z(1, 1, dtype=torch.int64), z(1, 1, dtype=torch.int64), z(1, 1), z(1, 1), z(layers, 1, hidden)),
            folder / "step.onnx",
            inputs=("inst", "pitch", "time", "vel", "h"),
            outputs=("hq", "h_out"),
            dynamic={},
        )
        self.step = _session(folder / "step.onnx")
        self.heads = []
        for k, proj in enumerate(model.projections):
            path = folder / f"head{k}.onnx"
            export_graph(Head(proj).eval(), (z(1, emb),), path, inputs=("x",), outputs=("params",), dynamic={})
            self.heads.append(_session(path))
        # The sampled values' embeddings, computed in numpy from the same weights.
        self.inst_table = model.instrument_emb.weight.detach().numpy().copy()
        self.pitch_table = model.pitch_emb.weight.detach().numpy().copy()
        self.sines = [
            (m.fs.detach().numpy().copy(), m.proj.weight.detach().numpy().T.copy(), m.proj.bias.detach().numpy().copy())
            for m in (model.time_emb, model.vel_emb)
        ]
        self.h = np.zeros((layers, 1, hidden), dtype=np.float32)
        self.hq = np.zeros((1, emb), dtype=np.float32)
        self.rng = np.random.default_rng(0)

    def _sine(self, which: int, x: float) -> np.ndarray:
        fs, w, b = self.sines[which]
        return np.sin(x * fs) @ w + b

    def feed(self, inst: int, pitch: int, t: float, vel: float) -> None:
        feeds = {
            "inst": np.array([[inst]], dtype=np.int64),
            "pitch": np.array([[pitch]], dtype=np.int64),
            "time": np.array([[t]], dtype=np.float32),
            "vel": np.array([[vel]], dtype=np.float32),
            "h": self.h,
        }
        self.hq, self.h = self.step.run(None, feeds)

    def query(self) -> dict[str, float]:
        rng = self.rng
        x = self.hq
        inst = _softmax_sample(self.heads[0].run(None, {"x": x})[0][0], rng)
        x = (x + self.inst_table[inst]).astype(np.float32)
        pitch = _softmax_sample(self.heads[1].run(None, {"x": x})[0][0], rng)
        x = (x + self.pitch_table[pitch]).astype(np.float32)
        t = _mixture_sample(self.heads[2].run(None, {"x": x})[0][0], 0.0, 10.0, rng)
        x = (x + self._sine(0, t)).astype(np.float32)
        vel = _mixture_sample(self.heads[3].run(None, {"x": x})[0][0], 0.0, 127.0, rng)
        return {"inst": inst, "pitch": pitch, "time": t, "vel": vel}


def _time_events(feed: Any, query: Any, n: int) -> list[int]:
    out = []
    event = {"inst": 1, "pitch": 60, "time": 0.1, "vel": 80.0}
    for _ in range(n):
        started = time.perf_counter_ns()
        feed(int(event["inst"]), int(event["pitch"]), float(event["time"]), float(event["vel"]))
        event = query()
        out.append(time.perf_counter_ns() - started)
        if event["vel"] < 1:  # keep a note-on stream going, as a performance would
            event = {**event, "vel": 80.0}
    return out


def measure(events: int = 300, *, quick: bool = False) -> dict[str, Any]:
    try:
        import torch
        from notochord import Notochord
    except ImportError as err:
        return {
            "skipped": f"{err}: install with `pip install --no-deps notochord` and its small dependencies "
            "(tqdm, appdirs, pandas); a plain `pip install notochord` may pull another torch"
        }
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    if quick:
        events = min(events, 30)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    try:
        model = Notochord().eval()
        params = sum(p.numel() for p in model.parameters())
        with tempfile.TemporaryDirectory(prefix="livegen-bench-notochord-") as tmp:
            ours = LivegenNotochord(model, Path(tmp))
            model.reset()
            for _ in range(3):  # warm-up both
                _time_events(model.feed, model.query, 5)
                _time_events(ours.feed, ours.query, 5)
            noto_ns: list[int] = []
            ours_ns: list[int] = []
            rounds = 5
            for _ in range(rounds):  # alternate, so load changes hit both alike
                with torch.inference_mode():
                    noto_ns += _time_events(model.feed, model.query, max(1, events // rounds))
                ours_ns += _time_events(ours.feed, ours.query, max(1, events // rounds))
    finally:
        torch.set_num_threads(threads)
    import notochord

    a = statistics.median(noto_ns) / 1e6
    b = statistics.median(ours_ns) / 1e6
    return {
        "notochord": getattr(notochord, "__version__", "installed"),
        "torch": torch.__version__,
        "architecture": "Notochord() defaults: emb 512, GRU 2 x 1024, GLU-MLP heads; random weights (seed 0)",
        "parameters": params,
        "events_each": len(noto_ns),
        "notochord_feed_query_p50_ms": round(a, 3),
        "notochord_feed_query_p99_ms": round(float(np.percentile(noto_ns, 99)) / 1e6, 3),
        "livegen_step_p50_ms": round(b, 3),
        "livegen_step_p99_ms": round(float(np.percentile(ours_ns, 99)) / 1e6, 3),
        "ratio": round(a / b, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.events, quick=args.quick), indent=2))


if __name__ == "__main__":
    main()
