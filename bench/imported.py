"""Imported models beside their graphc.nn twins: the torch twin of each example (bench/twins.py, the same
weights) goes through graphc.from_torch, and both libraries are timed in one run.

    python bench/imported.py [--threads 1] [--min-time 0.5]

``compile_from_torch`` is the piece bench/run.py can call for a torch model: it returns the compiled
model as a runner plus the import and compile times.
"""

from __future__ import annotations

import argparse
import runpy
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def compile_from_torch(tm: Any, xs: tuple, dynamic: dict | None = None, *, threads: int = 1,
                       cache_dir: Path | None = None) -> tuple[Any, dict[str, float]]:
    """graphc.from_torch + graphc.compile of a torch module; (callable taking numpy inputs, times in s)."""
    import graphc

    t0 = time.perf_counter()
    imp = graphc.from_torch(tm, xs, dynamic)
    t1 = time.perf_counter()
    lib = graphc.compile(imp, threads=threads, cache_dir=cache_dir)
    t2 = time.perf_counter()
    lib.set_num_threads(threads)
    facts = {"import_s": t1 - t0, "compile_s": t2 - t1, **{f"{k}_s": v for k, v in imp.times.items()}}
    return lib, facts


def _time(fn: Any, xs: tuple, min_time: float) -> float:
    for _ in range(3):
        fn(*xs)
    n, t0 = 0, time.perf_counter()
    while True:
        fn(*xs)
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_time and n >= 10:
            return dt / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-time", type=float, default=0.5)
    ap.add_argument("--models", nargs="*", default=["mlp", "resnet", "transformer"])
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    import graphc
    from bench.twins import load_twin

    print("| model | graphc.nn (ms) | from torch (ms) | ratio | import (s) | compile (s) | max diff |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        ns = runpy.run_path(str(ROOT / "examples" / name / "model.py"))
        gm, ex, dyn = ns["model"], ns["example_inputs"], ns.get("dynamic")
        xs = tuple(np.ascontiguousarray(x.numpy()) for x in ex)
        native = graphc.compile(gm, ex, dyn, threads=args.threads)
        native.set_num_threads(args.threads)
        twin = load_twin(name, gm.state_dict())
        lib, facts = compile_from_torch(twin, tuple(torch.from_numpy(x) for x in xs), dyn, threads=args.threads)
        diff = float(np.abs(np.asarray(lib(*xs)) - np.asarray(native(*xs))).max())
        t_native, t_imp = [], []
        for _ in range(3):  # interleaved, so a busy spell hits both alike
            t_native.append(_time(native, xs, args.min_time))
            t_imp.append(_time(lib, xs, args.min_time))
        a, b = min(t_native) * 1e3, min(t_imp) * 1e3
        print(f"| {name} | {a:.3f} | {b:.3f} | {b / a:.2f} | {facts['import_s']:.1f} | {facts['compile_s']:.1f} "
              f"| {diff:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
