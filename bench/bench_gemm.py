"""Time the runtime's gc_sgemm against numpy's matmul (OpenBLAS or whatever BLAS numpy links).

    python bench/bench_gemm.py                    # 1 and 2 threads, the default shapes
    python bench/bench_gemm.py --threads 1 --shapes 256x256x256,64x256x784:nt

Builds runtime_c/gc_gemm.c with gcc -O3 -march=native -fopenmp into a temp dir and calls it through cffi.
Each thread count runs in a fresh subprocess with OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS
set, so numpy's BLAS uses the same number of threads as gc_sgemm. A shape is MxNxK, optionally followed by
":tn" flags for op(A) = A^T / op(B) = B^T (":nt" is a linear layer, x @ W^T). Each cell is the best of
several timed bursts (the minimum filters out noise from other processes). Prints GFLOP/s and the
ratio gc / numpy (above 1: gc_sgemm is faster); "packed B" is gc_sgemm_ep_packed with op(B) packed once
beforehand (constant weights, as compiled models do at create), "same bits" whether it gave gc_sgemm's
result exactly. Nothing here asserts on timings.
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
DEFAULT_SHAPES = ("256x256x256", "1024x1024x1024", "64x256x784:nt", "1x256x784:nt", "8x1024x1024:nt",
                  "512x49x4608", "3136x64x576", "256x256x256:tt")
# the linear layers of bench/run.py's models (x @ W^T, W constant: the "packed" column packs it once)
MODEL_SHAPES = ("64x512x784:nt", "128x1152x384:nt", "128x1536x384:nt", "128x384x1536:nt", "197x1536x384:nt",
                "197x384x1536:nt", "3136x384x96:nt", "3136x96x384:nt", "49x3072x768:nt", "49x768x3072:nt",
                "64x8192x512:nt")
CDEF = """
void gc_sgemm(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
              int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc, const float *bias,
              int nthreads);
size_t gc_sgemm_pack_b_floats(int64_t N, int64_t K);
void gc_sgemm_pack_b(int transB, int64_t N, int64_t K, const float *B, int64_t ldb, float *Bp);
void gc_sgemm_ep_packed(int transA, int transB, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                        const float *B, int64_t ldb, const float *Bp, float *C, int64_t ldc, const float *bias,
                        const void *ep, int nthreads);
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--shapes", default=",".join(DEFAULT_SHAPES), help="comma-separated MxNxK[:tn] shapes, or "
                   "'models' for the linear layers of bench/run.py's models")
    p.add_argument("--isa", default="native", help="the -march of the build (native, or x86-64-v3 for the AVX2 "
                   "kernels on an AVX-512 machine)")
    p.add_argument("--min-time", type=float, default=0.05, help="seconds per timed burst (default 0.05)")
    p.add_argument("--bursts", type=int, default=7, help="timed bursts per cell, the best counts (default 7)")
    p.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)  # thread count, in the subprocess
    p.add_argument("--lib", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def parse_shape(text: str) -> tuple[int, int, int, int, int]:
    dims, _, flags = text.partition(":")
    m, n, k = (int(d) for d in dims.lower().split("x"))
    flags = (flags or "nn").lower()
    return m, n, k, int(flags[0] == "t"), int(flags[1] == "t")


def build(directory: Path, isa: str = "native") -> Path:
    lib = directory / "libgc_gemm.so"
    subprocess.run(["gcc", "-O3", f"-march={isa}", "-fopenmp", "-fPIC", "-shared", "-DGC_INTERNAL=",
                    f"-I{RUNTIME}", str(RUNTIME / "gc_gemm.c"), str(RUNTIME / "gc_threadpool.c"), "-o", str(lib)],
                   check=True)
    return lib


def best_time(fn, min_time: float, bursts: int) -> float:
    """Seconds per call: calls are grouped into bursts of at least min_time, the fastest burst wins."""
    fn()
    reps = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time:
            break
        reps *= 2
    best = elapsed / reps
    for _ in range(bursts - 1):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def worker(args: argparse.Namespace) -> None:
    """Runs in a subprocess whose BLAS thread count is already pinned to args.worker."""
    import cffi
    import numpy as np

    nthreads = args.worker
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    lib = ffi.dlopen(args.lib)
    rng = np.random.default_rng(0)
    for text in args.shapes.split(","):
        m, n, k, ta, tb = parse_shape(text)
        a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
        c = np.empty((m, n), np.float32)
        pa, pb, pc = (ffi.cast("float *", x.ctypes.data) for x in (a, b, c))
        lda, ldb = a.shape[1], b.shape[1]
        gc_call = partial(lib.gc_sgemm, ta, tb, m, n, k, 1.0, pa, lda, pb, ldb, 0.0, pc, n, ffi.NULL, nthreads)
        t_gc = best_time(gc_call, args.min_time, args.bursts)
        ref = c.copy()
        packed = np.empty(lib.gc_sgemm_pack_b_floats(n, k) + 16, np.float32)
        pp = ffi.cast("float *", (packed.ctypes.data + 63) // 64 * 64)
        lib.gc_sgemm_pack_b(tb, n, k, pb, ldb, pp)
        pk_call = partial(lib.gc_sgemm_ep_packed, ta, tb, m, n, k, pa, lda, pb, ldb, pp, pc, n, ffi.NULL, ffi.NULL,
                          nthreads)
        t_pk = best_time(pk_call, args.min_time, args.bursts)
        same = "yes" if np.array_equal(ref, c) else "NO"
        np_call = partial(np.matmul, a.T if ta else a, b.T if tb else b, out=c)
        t_np = best_time(np_call, args.min_time, args.bursts)
        err = float(np.abs(ref - c).max() / max(1e-30, float(np.abs(c).max())))
        flops = 2.0 * m * n * k
        print(f"| {text:>16} | {nthreads:>7} | {flops / t_gc / 1e9:>10.1f} | {flops / t_np / 1e9:>13.1f} "
              f"| {t_np / t_gc:>10.2f} | {err:>9.1e} | {flops / t_pk / 1e9:>10.1f} | {t_np / t_pk:>10.2f} "
              f"| {same:>4} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    if args.shapes == "models":
        args.shapes = ",".join(MODEL_SHAPES)
    with tempfile.TemporaryDirectory() as tmp:
        lib = build(Path(tmp), args.isa)
        print("| shape (MxNxK:tAtB) | threads | gc GFLOP/s | numpy GFLOP/s | gc / numpy | max rel diff "
              "| packed B GFLOP/s | packed / numpy | same bits |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
        for nthreads in (int(t) for t in args.threads.split(",")):
            env = dict(os.environ, OPENBLAS_NUM_THREADS=str(nthreads), OMP_NUM_THREADS=str(nthreads),
                       MKL_NUM_THREADS=str(nthreads))
            cmd = [sys.executable, __file__, "--worker", str(nthreads), "--lib", str(lib), "--shapes", args.shapes,
                   "--min-time", str(args.min_time), "--bursts", str(args.bursts)]
            subprocess.run(cmd, env=env, check=True)


if __name__ == "__main__":
    main()
