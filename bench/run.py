"""Time graphc's compiled libraries against PyTorch eager, ONNX Runtime and plain numpy.

    python bench/run.py                     # all examples, batch 1 and 32, 1 thread
    python bench/run.py --threads 2 --models mlp,resnet --batches 1,8,32

For each example model (examples/<name>/model.py) it compiles the graphc model, loads the same weights
into the PyTorch twin (bench/twins.py), exports that twin to ONNX for ONNX Runtime, and (for the MLP)
runs a hand-written numpy forward. Every runner gets the same thread count. It prints a markdown table
of median latencies and the ratio of each peer's time to graphc's (above 1: graphc is faster) and
writes it to bench/results.md. A peer that is not installed, or fails, shows "n/a" with the reason
below the table. Nothing here asserts on timings.

Peers: ``pip install torch onnxruntime onnx`` (``onnxscript`` too for PyTorch's default ONNX exporter;
without it the legacy TorchScript exporter is used).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("mlp", "resnet", "transformer")
PEERS = ("torch", "onnxruntime", "numpy")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated example names")
    p.add_argument("--batches", default="1,32", help="comma-separated batch sizes")
    p.add_argument("--threads", type=int, default=1, help="threads for every runner (default 1)")
    p.add_argument("--min-time", type=float, default=0.5, help="seconds of timed runs per cell (default 0.5)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results.md"), help="markdown file to write")
    p.add_argument("--build-dir", default=None, help="where the ONNX files go (default: a temp dir)")
    return p.parse_args(argv)


def time_it(fn: Callable[[], Any], min_time: float, min_runs: int = 10, warmup: int = 3) -> float:
    """Median seconds of one call of fn, over at least min_runs calls and min_time seconds."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 10_000:
            break
    return statistics.median(times)


def first_output(out: Any) -> Any:
    """The first output of a runner's result (an array, a tuple/list or a dict of arrays)."""
    import numpy as np

    if isinstance(out, dict):
        out = next(iter(out.values()))
    elif isinstance(out, (tuple, list)):
        out = out[0]
    if hasattr(out, "detach"):
        out = out.detach().numpy()
    elif hasattr(out, "numpy"):
        out = out.numpy()
    return np.asarray(out)


def load_example(name: str) -> dict[str, Any]:
    """Run examples/<name>/model.py and return its namespace, with `model` built and its weights loaded."""
    import runpy

    import graphc
    from graphc.nn import Module

    path = ROOT / "examples" / name / "model.py"
    sys.path.insert(0, str(path.parent))
    try:
        ns = runpy.run_path(str(path), run_name="__graphc_model__")
    finally:
        sys.path.remove(str(path.parent))
    model = ns["model"]
    if not isinstance(model, Module):
        model = model()
    if ns.get("weights"):
        model.load_state_dict(graphc.load(str(path.parent / ns["weights"])))
    ns["model"] = model.eval()
    return ns


def make_inputs(example_inputs: tuple, batch: int, seed: int = 0) -> list[Any]:
    """Random inputs shaped like example_inputs with dim 0 set to batch (ints stay within the example's range)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for x in example_inputs:
        a = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
        shape = (batch, *a.shape[1:])
        if np.issubdtype(a.dtype, np.floating):
            out.append(rng.standard_normal(shape).astype(a.dtype))
        else:
            out.append(rng.integers(int(a.min()), int(a.max()) + 1, size=shape).astype(a.dtype))
    return out


def numpy_mlp(state: dict[str, Any]) -> Callable[[Any], Any]:
    """The MLP example's forward in plain numpy (float32 matmuls through numpy's BLAS)."""
    import numpy as np

    w = [(np.ascontiguousarray(state[f"fc{i}.weight"].T), state[f"fc{i}.bias"]) for i in (1, 2, 3)]

    def forward(x: Any) -> Any:
        h = np.maximum(x @ w[0][0] + w[0][1], 0)
        h = np.maximum(h @ w[1][0] + w[1][1], 0)
        return h @ w[2][0] + w[2][1]

    return forward


class Runners:
    """Builds the runner of each peer for one model; a failure becomes the reason shown for n/a."""

    def __init__(self, name: str, ns: dict[str, Any], threads: int, build_dir: Path) -> None:
        self.name, self.ns, self.threads, self.build_dir = name, ns, threads, build_dir
        self.reasons: dict[str, str] = {}
        self.state = {k: v.numpy() for k, v in ns["model"].state_dict().items()}

    def graphc(self) -> Callable[..., Any]:
        import graphc

        return graphc.compile(self.ns["model"], self.ns["example_inputs"], dynamic=self.ns.get("dynamic"),
                              threads=self.threads)

    def torch(self) -> Callable[..., Any] | None:
        try:
            import torch
        except ImportError:
            self.reasons["torch"] = "torch is not installed"
            return None
        sys.path.insert(0, str(ROOT / "bench"))
        from twins import load_twin

        torch.set_num_threads(self.threads)
        twin = load_twin(self.name, self.state)
        self.twin = twin

        def run(*xs: Any) -> Any:
            with torch.inference_mode():
                return twin(*(torch.from_numpy(x) for x in xs))

        return run

    def onnxruntime(self, example: list[Any]) -> Callable[..., Any] | None:
        try:
            import onnxruntime as ort
            import torch
        except ImportError as e:
            self.reasons["onnxruntime"] = f"{e.name} is not installed"
            return None
        twin = getattr(self, "twin", None)
        if twin is None:
            self.reasons["onnxruntime"] = "needs the torch twin"
            return None
        names = list(_input_names(self.ns))
        path = self.build_dir / f"{self.name}.onnx"
        args = tuple(torch.from_numpy(x) for x in example)
        try:
            _export_onnx(twin, args, names, path)
        except Exception as e:  # report and carry on: an exporter failure is a result, not a crash
            self.reasons["onnxruntime"] = f"torch.onnx.export failed: {type(e).__name__}: {str(e).splitlines()[0]}"
            return None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        in_names = [i.name for i in sess.get_inputs()]

        def run(*xs: Any) -> Any:
            return sess.run(None, dict(zip(in_names, xs)))

        return run

    def numpy(self) -> Callable[..., Any] | None:
        if self.name != "mlp":
            self.reasons["numpy"] = "hand-written numpy forward only for the MLP"
            return None
        return numpy_mlp(self.state)


def _input_names(ns: dict[str, Any]) -> list[str]:
    from graphc.trace import input_names

    return input_names(ns["model"], len(ns["example_inputs"]))


def _export_onnx(twin: Any, args: tuple, names: list[str], path: Path) -> None:
    """Export the torch twin with a dynamic batch: torch.export-based when onnxscript is there, else TorchScript."""
    import logging
    import warnings

    import torch

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" and the like
    try:
        import onnxscript  # noqa: F401  (the torch.export-based exporter needs it)

        dynamo = True
    except ImportError:
        dynamo = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("B", min=1, max=1024)
            torch.onnx.export(twin, args, str(path), dynamo=True, input_names=names, output_names=["output"],
                              dynamic_shapes=tuple({0: batch} for _ in args), verbose=False)
            return
        # The TorchScript exporter fills in forward()'s default arguments as tensors (TransformerEncoderLayer's
        # is_causal then reaches SDPA as a Tensor): a *args wrapper hides them. The fused transformer fast path
        # has no ONNX form, so it is off while exporting.
        class PositionalOnly(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = twin

            def forward(self, *xs: torch.Tensor) -> torch.Tensor:
                return self.inner(*xs)

        fastpath = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            torch.onnx.export(PositionalOnly().eval(), args, str(path), dynamo=False, input_names=names,
                              output_names=["output"], dynamic_axes={n: {0: "B"} for n in names})
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)


def machine_line(threads: int) -> str:
    import numpy as np

    import graphc

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = [f"graphc {graphc.__version__}", f"numpy {np.__version__}"]
    for mod in ("torch", "onnxruntime"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            pass
    return (f"{cpu}, {os.cpu_count()} CPUs, {threads} thread(s); Python {platform.python_version()}; "
            + ", ".join(versions))


def fmt_ms(t: float | None) -> str:
    return "n/a" if t is None else f"{t * 1e3:.3f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # thread counts must be in the environment before numpy's BLAS and OpenMP start
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np

    models = [m for m in args.models.split(",") if m]
    batches = [int(b) for b in args.batches.split(",") if b]
    tmp = tempfile.TemporaryDirectory(prefix="graphc-bench-")
    build_dir = Path(args.build_dir or tmp.name)
    build_dir.mkdir(parents=True, exist_ok=True)

    rows, notes, diffs = [], {}, []
    for name in models:
        print(f"[{name}] building runners ...", file=sys.stderr)
        ns = load_example(name)
        r = Runners(name, ns, args.threads, build_dir)
        t0 = time.perf_counter()
        runners: dict[str, Callable[..., Any] | None] = {"graphc": r.graphc()}
        print(f"[{name}] graphc.compile {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        runners["torch"] = r.torch()
        runners["onnxruntime"] = r.onnxruntime(make_inputs(ns["example_inputs"], 2))
        runners["numpy"] = r.numpy()
        for peer, why in r.reasons.items():
            notes.setdefault(why, []).append(f"{name}/{peer}")
        for batch in batches:
            xs = make_inputs(ns["example_inputs"], batch)
            ref = first_output(runners["graphc"](*xs))
            times: dict[str, float | None] = {}
            for peer, fn in runners.items():
                if fn is None:
                    times[peer] = None
                    continue
                if peer != "graphc":
                    diffs.append((name, batch, peer, float(np.abs(first_output(fn(*xs)) - ref).max())))
                times[peer] = time_it(lambda fn=fn, xs=xs: fn(*xs), args.min_time)
            rows.append((name, batch, times))
            print(f"[{name}] batch {batch}: " + ", ".join(f"{p} {fmt_ms(t)} ms" for p, t in times.items()),
                  file=sys.stderr)

    lines = [
        "# graphc benchmark",
        "",
        f"Median latency of one forward call in milliseconds (lower is better); ×: the peer's time divided by "
        f"graphc's (above 1: graphc is faster). {machine_line(args.threads)}. Command: "
        f"`{' '.join(['python bench/run.py', *(argv if argv is not None else sys.argv[1:])])}`.",
        "",
        "| model | batch | graphc (ms) | " + " | ".join(f"{p} (ms) | ×" for p in PEERS) + " |",
        "| --- | ---: | ---: | " + " | ".join("---: | ---:" for _ in PEERS) + " |",
    ]
    for name, batch, times in rows:
        g = times["graphc"]
        cells = []
        for p in PEERS:
            t = times[p]
            cells += [fmt_ms(t), "n/a" if t is None or not g else f"{t / g:.2f}"]
        lines.append(f"| {name} | {batch} | {fmt_ms(g)} | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "n/a:"] + [f"- {', '.join(where)}: {why}" for why, where in notes.items()]
    if diffs:
        worst: dict[tuple[str, str], float] = {}
        for n, _, p, d in diffs:
            worst[n, p] = max(d, worst.get((n, p), 0.0))
        lines += ["", "Largest absolute difference of each peer's output from graphc's (same inputs, all batches):",
                  "", "| model | " + " | ".join(PEERS) + " |", "| --- |" + " ---: |" * len(PEERS)]
        for n in models:
            lines.append(f"| {n} | " + " | ".join(f"{worst[n, p]:.1e}" if (n, p) in worst else "n/a" for p in PEERS)
                         + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}", file=sys.stderr)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
