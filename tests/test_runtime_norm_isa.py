"""Layer and RMS norm (runtime_c/gc_norm.c) and softmax rows (gc_reduce.c) at each ISA level this machine
can run, against float64 numpy.

The kernels run on float vectors as wide as the ISA (4, 8 or 16 lanes), so row lengths around the vector
and chunk sizes, data on a large offset (norms), -inf entries and NaN rows (softmax), in-place use and
1 vs 2 threads (bit-identical) are checked at each level."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.shared_build import run_gcc

cffi = pytest.importorskip("cffi")

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "runtime_c"
LEVELS = {"baseline": ("-O2", "-std=c11"), "avx2": ("-O3", "-std=gnu11", "-march=x86-64-v3", "-fopenmp"),
          "avx512": ("-O3", "-std=gnu11", "-march=x86-64-v4", "-fopenmp")}
CDEF = """
void gc_layer_norm(int64_t outer, int64_t n, const float *x, const float *weight, const float *bias, float eps,
                   float *y, int nthreads);
void gc_rms_norm(int64_t outer, int64_t n, const float *x, const float *weight, float eps, float *y, int nthreads);
void gc_softmax(int64_t outer, int64_t n, int64_t inner, const float *x, float *y, int log, int nthreads);
"""


def _cpu_has(flag: str) -> bool:
    try:
        return f" {flag}" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.fixture(scope="module", params=list(LEVELS))
def lib(request, tmp_path_factory):
    level = request.param
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    if level == "avx2" and not (_cpu_has("avx2") and _cpu_has("fma")) or level == "avx512" and not _cpu_has("avx512f"):
        pytest.skip(f"this CPU cannot run {level}")
    out = tmp_path_factory.mktemp(f"norm_{level}") / "libgc_norm.so"
    cmd = ["gcc", *LEVELS[level], "-Wall", "-Wextra", "-fPIC", "-shared", "-DGC_INTERNAL=", f"-I{RUNTIME}",
           *(str(RUNTIME / f) for f in ("gc_norm.c", "gc_reduce.c", "gc_threadpool.c")), "-o", str(out), "-lm"]
    res = run_gcc(cmd)
    assert res.returncode == 0 and "warning" not in res.stderr, res.stderr
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    return ffi, ffi.dlopen(str(out))


def _p(ffi, a):
    return ffi.NULL if a is None else ffi.cast("float *", a.ctypes.data)


def ref(x, w, b, eps, rms):
    x = x.astype(np.float64)
    if rms:
        y = x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    else:
        y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    if w is not None:
        y = y * w
    if b is not None:
        y = y + b
    return y


@pytest.mark.parametrize("rms", [False, True], ids=["layer", "rms"])
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
@pytest.mark.parametrize("outer,n", [(3, 1), (5, 7), (9, 31), (130, 384), (4, 1000), (3, 4097), (40, 96)])
def test_norm_rows(lib, outer, n, affine, rms):
    ffi, L = lib
    rng = np.random.default_rng(outer * 7 + n)
    x = (rng.standard_normal((outer, n)) * 3 + (0 if rms else 50)).astype(np.float32)
    w = rng.standard_normal(n).astype(np.float32) if affine in ("both", "weight") else None
    b = rng.standard_normal(n).astype(np.float32) if affine in ("both", "bias") and not rms else None

    def run(nt, inplace=False):
        y = x.copy() if inplace else np.full(x.size + 16, -7.0, np.float32)
        src = y if inplace else x
        if rms:
            L.gc_rms_norm(outer, n, _p(ffi, src), _p(ffi, w), 1e-5, _p(ffi, y), nt)
        else:
            L.gc_layer_norm(outer, n, _p(ffi, src), _p(ffi, w), _p(ffi, b), 1e-5, _p(ffi, y), nt)
        if not inplace:
            assert (y[x.size:] == -7.0).all(), "wrote past the output"
            y = y[:x.size]
        return y.reshape(outer, n)

    y1, y2, y3 = run(1), run(2), run(2, inplace=True)
    assert np.array_equal(y1, y2) and np.array_equal(y1, y3)
    want = ref(x, w, b, 1e-5, rms)
    np.testing.assert_allclose(y1, want, rtol=1e-5, atol=3e-5)


@pytest.mark.parametrize("log", [0, 1])
@pytest.mark.parametrize("outer,n", [(3, 1), (5, 7), (9, 33), (130, 128), (4, 1000), (2, 4097)])
def test_softmax_rows(lib, outer, n, log):
    ffi, L = lib
    rng = np.random.default_rng(outer + n + log)
    x = (rng.standard_normal((outer, n)) * 4).astype(np.float32)
    x[rng.random((outer, n)) < 0.1] = -np.inf
    x[:, 0] = rng.standard_normal(outer)  # every row keeps a finite entry
    special = outer >= 4
    if special:  # a row of -inf, a row with NaN, a row with +inf: NaN rows, like PyTorch
        x[1] = -np.inf
        x[2, n // 2] = np.nan
        x[3, n - 1] = np.inf

    def run(nt, inplace=False):
        y = x.copy() if inplace else np.full(x.size + 16, -7.0, np.float32)
        L.gc_softmax(outer, n, 1, _p(ffi, y if inplace else x), _p(ffi, y), log, nt)
        if not inplace:
            assert (y[x.size:] == -7.0).all(), "wrote past the output"
            y = y[:x.size]
        return y.reshape(outer, n)

    y1, y2, y3 = run(1), run(2), run(2, inplace=True)
    assert np.array_equal(y1, y2, equal_nan=True) and np.array_equal(y1, y3, equal_nan=True)
    x64 = x.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        m = x64.max(1, keepdims=True)
        s = np.exp(x64 - m).sum(1, keepdims=True)
        want = (x64 - m) - np.log(s) if log else np.exp(x64 - m) / s
    rows = [r for r in range(outer) if not (special and r in (1, 2, 3))]
    if special:
        assert np.isnan(y1[1:4]).all()
    np.testing.assert_allclose(y1[rows], want[rows], rtol=1e-5, atol=1e-6)
