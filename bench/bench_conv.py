"""Time the runtime's gc_conv2d against torch.nn.functional.conv2d on the convolutions of the examples.

    python bench/bench_conv.py                          # the ResNet example's convs, batch 1 and 32, 1 thread
    python bench/bench_conv.py --threads 1,2 --batches 1 --shapes resnet,large
    python bench/bench_conv.py --baseline HEAD~3         # also time the runtime_c/ of that git revision

Builds runtime_c/gc_gemm.c + gc_conv.c with gcc -O3 -march=native -fopenmp into a temp dir and calls
gc_conv2d through cffi (work buffer sized by gc_conv2d_work_floats). Each thread count runs in a fresh
subprocess with OMP_NUM_THREADS etc. set, and torch gets the same number of threads. A cell is the best
of several timed bursts, the runners taking turns burst by burst; with one thread the clock is the calling
thread's CPU time (--clock cpu), which other processes on a shared machine do not inflate, with more
threads it is wall time. Prints
microseconds per call, GFLOP/s and the ratio torch / gc (above 1: gc_conv2d is faster). Nothing here
asserts on timings.

A shape is N,C,H,W,OC,K,stride,pad[,groups] (square kernel, stride, padding; dilation 1); the batch N is
replaced by each --batches value. --epilogue adds an activation and / or a residual to every conv (fused
into gc_conv2d, separate ops after torch's conv). Shape sets: resnet (examples/resnet), large
(ResNet-18/50-style layers, to check that big convolutions do not get slower), misc (1x1, grouped,
depthwise, odd sizes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ROOT / "runtime_c"
SOURCES = ("gc_gemm.c", "gc_conv.c", "gc_threadpool.c")
SHAPE_SETS = {
    "resnet": ("1,3,32,32,16,3,1,1", "1,16,32,32,16,3,1,1", "1,16,32,32,32,3,2,1", "1,32,16,16,32,3,1,1",
               "1,16,32,32,32,1,2,0", "1,32,16,16,64,3,2,1", "1,64,8,8,64,3,1,1", "1,32,16,16,64,1,2,0"),
    "large": ("1,3,224,224,64,7,2,3", "1,64,56,56,64,3,1,1", "1,128,28,28,128,3,1,1", "1,256,14,14,256,3,1,1",
              "1,512,7,7,512,3,1,1", "1,64,56,56,256,1,1,0", "1,256,56,56,128,1,2,0"),
    "misc": ("1,8,15,17,12,3,1,1", "1,24,20,20,24,3,1,1,3", "1,32,28,28,32,3,1,1,32", "1,16,32,32,16,5,1,2",
             "1,64,8,8,10,1,1,0"),
}
GC_ACT_RELU, GC_ACT_CLAMP = 7, 8  # graphc_rt.h
# name -> (act, lo, hi, residual, res_first)
EPILOGUES = {"none": (0, 0.0, 0.0, False, 0), "relu6": (GC_ACT_CLAMP, 0.0, 6.0, False, 0),
             "add": (0, 0.0, 0.0, True, 0), "add_relu": (GC_ACT_RELU, 0.0, 0.0, True, 1),
             "relu6_add": (GC_ACT_CLAMP, 0.0, 6.0, True, 0)}
CDEF = """
typedef struct gc_conv2d_params {
    int64_t n, c, h, w;
    int64_t oc, kh, kw;
    int64_t oh, ow;
    int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups;
    int act, res_first;  /* the epilogue (graphc_rt.h), left 0: none; a baseline without it reads less */
    float act_lo, act_hi;
    const float *res;
    float *pool;
    const float *in_scale;
} gc_conv2d_params;
size_t gc_conv2d_work_floats(const gc_conv2d_params *p, int nthreads);
void gc_conv2d(const gc_conv2d_params *p, const float *x, const float *w, const float *bias, float *y,
               float *work, int nthreads);
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", default="1", help="comma-separated thread counts (default 1)")
    p.add_argument("--batches", default="1,32", help="comma-separated batch sizes (default 1,32)")
    p.add_argument("--shapes", default="resnet",
                   help="comma-separated shape sets (" + ", ".join(SHAPE_SETS) + ") or N,C,H,W,OC,K,S,P[,G] "
                        "shapes separated by ';' (default resnet)")
    p.add_argument("--epilogue", default="none", choices=tuple(EPILOGUES),
                   help="the fused epilogue of every conv: none, relu6 (MobileNetV2's expand / depthwise), add "
                        "(+ residual: its projection), add_relu (relu(conv + residual): ResNet's block end), "
                        "relu6_add (relu6, then + residual); torch runs the same ops after its conv")
    p.add_argument("--baseline", default="", help="git revision whose runtime_c/ is timed too (column 'base')")
    p.add_argument("--clock", choices=("auto", "cpu", "wall"), default="auto",
                   help="cpu: thread CPU time, wall: perf_counter; auto: cpu for 1 thread (default)")
    p.add_argument("--min-time", type=float, default=0.02, help="seconds per timed burst (default 0.02)")
    p.add_argument("--bursts", type=int, default=15, help="timed bursts per cell, the best counts (default 15)")
    p.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)  # thread count, in the subprocess
    p.add_argument("--libs", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def shapes_of(text: str) -> list[tuple[int, ...]]:
    """Shapes of a split_shape_arg() string: set names and N,C,H,W,OC,K,S,P[,G] shapes, space-separated."""
    out = []
    for part in text.split():
        if part in SHAPE_SETS:
            out += [tuple(int(v) for v in s.split(",")) for s in SHAPE_SETS[part]]
        else:
            out.append(tuple(int(v) for v in part.split(",")))
    return out


def split_shape_arg(text: str) -> str:
    """'resnet,large' -> 'resnet large' (set names); explicit shapes keep their commas."""
    parts = []
    for chunk in text.split(";"):
        names = chunk.split(",")
        parts += names if all(n in SHAPE_SETS for n in names) else [chunk]
    return " ".join(parts)


def build(directory: Path, sources: dict[str, str], name: str) -> Path:
    """Compile the given runtime sources (file name -> text) with graphc_rt.h into lib<name>.so."""
    src = directory / name
    src.mkdir()
    for fname, text in sources.items():
        (src / fname).write_text(text)
    lib = directory / f"lib{name}.so"
    subprocess.run(["gcc", "-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-DGC_INTERNAL=", f"-I{src}",
                    *(str(src / s) for s in SOURCES), "-o", str(lib), "-lm"], check=True)
    return lib


def runtime_sources(rev: str = "") -> dict[str, str]:
    """The sources and every header of runtime_c/ (at git revision rev, or the work tree's)."""
    if not rev:
        return {n: (RUNTIME / n).read_text() for n in (*SOURCES, *(h.name for h in RUNTIME.glob("*.h")))}
    listing = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", f"{rev}:runtime_c"], check=True,
                             capture_output=True, text=True).stdout.split()
    names = (*SOURCES, *(n for n in listing if n.endswith(".h")))
    return {n: subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:runtime_c/{n}"], check=True,
                              capture_output=True, text=True).stdout for n in names}


def best_times(fns, min_time: float, bursts: int, clock) -> list[float]:
    """Seconds per call of each fn: calls are grouped into bursts of at least min_time, the fns take turns
    burst by burst (so a busy spell on a shared machine hits them alike), the fastest burst of each wins."""
    best = []
    reps = []
    for fn in fns:
        fn()
        n = 1
        while True:
            t0 = clock()
            for _ in range(n):
                fn()
            elapsed = clock() - t0
            if elapsed >= min_time:
                break
            n *= 2
        reps.append(n)
        best.append(elapsed / n)
    for _ in range(bursts - 1):
        for i, fn in enumerate(fns):
            t0 = clock()
            for _ in range(reps[i]):
                fn()
            best[i] = min(best[i], (clock() - t0) / reps[i])
    return best


def out_size(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


def worker(args: argparse.Namespace) -> None:
    """Runs in a subprocess whose OpenMP / torch thread count is already pinned to args.worker."""
    import cffi
    import numpy as np
    import torch

    nthreads = args.worker
    torch.set_num_threads(nthreads)
    clock = time.thread_time if args.clock == "cpu" or (args.clock == "auto" and nthreads == 1) else time.perf_counter
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    libs = [ffi.dlopen(p) for p in args.libs.split(os.pathsep)]
    rng = np.random.default_rng(0)
    for batch in (int(b) for b in args.batches.split(",")):
        for shape in shapes_of(args.shapes):
            _, c, h, w, oc, k, s, pad, *g = shape
            groups = g[0] if g else 1
            oh, ow = out_size(h, k, s, pad), out_size(w, k, s, pad)
            x = rng.standard_normal((batch, c, h, w), dtype=np.float32)
            wt = rng.standard_normal((oc, c // groups, k, k), dtype=np.float32)
            bias = rng.standard_normal(oc, dtype=np.float32)
            p = ffi.new("gc_conv2d_params *")
            p.n, p.c, p.h, p.w, p.oc, p.kh, p.kw, p.oh, p.ow = batch, c, h, w, oc, k, k, oh, ow
            p.stride_h = p.stride_w = s
            p.pad_h = p.pad_w = pad
            p.dil_h = p.dil_w = 1
            p.groups = groups
            act, lo, hi, with_res, res_first = EPILOGUES[args.epilogue]
            res = rng.standard_normal((batch, oc, oh, ow), dtype=np.float32) if with_res else None
            p.act, p.act_lo, p.act_hi, p.res_first = act, lo, hi, res_first
            if res is not None:
                p.res = ffi.cast("float *", res.ctypes.data)
            y = np.empty((batch, oc, oh, ow), np.float32)
            ptr = partial(ffi.cast, "float *")
            tx, tw, tb = (torch.from_numpy(a) for a in (x, wt, bias))
            tres = torch.from_numpy(res) if res is not None else None

            def torch_conv(tx=tx, tw=tw, tb=tb, s=s, pad=pad, groups=groups, tres=tres, act=act, lo=lo, hi=hi,
                           res_first=res_first):
                t = torch.nn.functional.conv2d(tx, tw, tb, s, pad, 1, groups)
                if tres is not None and res_first:
                    t += tres
                if act == GC_ACT_RELU:
                    t.relu_()
                elif act == GC_ACT_CLAMP:
                    t.clamp_(lo, hi)
                if tres is not None and not res_first:
                    t += tres
                return t

            ref = torch_conv().numpy()
            calls, err = [], 0.0
            for lib in libs:
                work = np.empty(max(1, lib.gc_conv2d_work_floats(p, nthreads)), np.float32)
                calls.append(partial(lib.gc_conv2d, p, ptr(x.ctypes.data), ptr(wt.ctypes.data),
                                     ptr(bias.ctypes.data), ptr(y.ctypes.data), ptr(work.ctypes.data), nthreads))
                calls[-1].work = work  # keep the buffer alive
                calls[-1]()
                err = max(err, float(np.abs(y - ref).max() / max(1e-30, float(np.abs(ref).max()))))
            calls.append(torch_conv)
            *times, t_torch = best_times(calls, args.min_time, args.bursts, clock)
            flops = 2.0 * batch * oc * oh * ow * (c // groups) * k * k
            label = f"{batch},{c},{h},{w},{oc},{k},{s},{pad}" + (f",{groups}" if groups > 1 else "")
            cells = [f"{t * 1e6:>9.1f}" for t in times]
            print(f"| {label:>24} | {nthreads:>2} | " + " | ".join(cells) + f" | {t_torch * 1e6:>9.1f} "
                  f"| {flops / times[-1] / 1e9:>6.1f} | {t_torch / times[-1]:>6.2f} |"
                  + (f" {times[0] / times[-1]:>6.2f} |" if len(times) > 1 else "") + f" {err:>7.1e} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        libs = [build(Path(tmp), runtime_sources(args.baseline), "base")] if args.baseline else []
        libs.append(build(Path(tmp), runtime_sources(), "gc"))
        cols = (["base (us)"] if args.baseline else []) + ["gc (us)", "torch (us)", "gc GFLOP/s", "torch / gc"]
        cols += ["base / gc"] if args.baseline else []
        print("| N,C,H,W,OC,K,S,P[,G] | T | " + " | ".join(cols) + " | max rel diff |")
        print("|---:|---:|" + "---:|" * (len(cols) + 1), flush=True)
        for nthreads in (int(t) for t in args.threads.split(",")):
            env = dict(os.environ, OPENBLAS_NUM_THREADS=str(nthreads), OMP_NUM_THREADS=str(nthreads),
                       MKL_NUM_THREADS=str(nthreads))
            cmd = [sys.executable, __file__, "--worker", str(nthreads), "--libs", os.pathsep.join(map(str, libs)),
                   "--shapes", split_shape_arg(args.shapes), "--batches", args.batches, "--clock", args.clock,
                   "--min-time", str(args.min_time), "--bursts", str(args.bursts), "--epilogue", args.epilogue]
            subprocess.run(cmd, env=env, check=True)


if __name__ == "__main__":
    main()
