"""Compile time of a bench model (default ResNet-18) from Python, each run in a fresh process:

* cold: an empty cache (the runtime's objects are built too),
* cold model: the runtime's objects cached, the model's library not (a new model on a used machine),
* cached: the library cached (trace, passes, codegen, the cache check, open),
* warm process: the same compile a second time in one process.

    python bench/compile_time.py                      # ResNet-18, 3 runs each, medians
    python bench/compile_time.py --model lenet --runs 5

The graphc imported is the one on PYTHONPATH (compare two checkouts by running this file with each).
Nothing asserts on times; the machine's CPU model is printed with the medians. Besides the wall time of
the compile call each row shows its CPU time (the process's and its compilers', user + system), which a
busy machine inflates much less than the wall time: compare those on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

WORKER = """
import json, os, sys, time
sys.path.insert(0, {bench!r})
import numpy as np
import graphc
from models import MODELS
spec = MODELS[{model!r}]
gm = spec.build(graphc.nn, graphc.nn.functional)
x = spec.inputs(np.random.default_rng(0))
times, cpu = [], []
for _ in range({repeat}):
    t0, c0 = time.perf_counter(), os.times()
    cm = graphc.compile(gm, x, cache_dir={cache!r})
    c1 = os.times()
    times.append(time.perf_counter() - t0)
    cpu.append(sum(c1[:4]) - sum(c0[:4]))  # user + system, this process and its (compiler) children
print(json.dumps({{"times": times, "cpu": cpu, "hit": cm.cache_hit}}))
"""


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(model: str, cache: Path, repeat: int = 1) -> list[tuple[float, float]]:
    """(wall seconds, CPU seconds) of each compile call in one fresh process."""
    code = WORKER.format(bench=str(HERE), model=model, cache=str(cache), repeat=repeat)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"the compile failed:\n{r.stderr[-2000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return list(zip(out["times"], out["cpu"]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet18", help="a name from bench/models.py (default resnet18)")
    p.add_argument("--runs", type=int, default=3, help="runs of each measurement (default 3)")
    args = p.parse_args(argv)
    rows: dict[str, list[tuple[float, float]]] = {"cold": [], "cold model": [], "cached": [], "warm process": []}
    base = Path(tempfile.mkdtemp(prefix="graphc-compile-time-"))
    try:
        for i in range(args.runs):
            cache = base / f"c{i}"
            rows["cold"] += run(args.model, cache)
            for entry in (cache / "v1").iterdir():  # keep the runtime's objects only
                if entry.name != "runtime" and not entry.name.startswith("runtime-"):
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            rows["cold model"] += run(args.model, cache)
            rows["cached"] += run(args.model, cache)
            rows["warm process"] += run(args.model, cache, repeat=2)[1:]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{args.model}, {args.runs} runs, CPU {cpu_model()} ({os.cpu_count()} logical CPUs), "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    for k, v in rows.items():
        wall, cpu = [t for t, _ in v], [c for _, c in v]
        print(f"  {k:<13} median {statistics.median(wall):7.2f} s, CPU {statistics.median(cpu):6.2f} s   "
              f"(runs: {', '.join(f'{t:.2f}' for t in wall)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
