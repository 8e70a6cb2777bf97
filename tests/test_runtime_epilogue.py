"""gc_sgemm_ep: products with a fused epilogue (bias, row bias, activation, scale, residual) against numpy.

gc_gemm.c (with gc_act.c, whose separate pass the epilogue must reproduce) is built at each ISA level this
machine can run and called through cffi. Every product path is covered (dot: linear layout with a short
side; axpy: row-major B with few rows; packed: everything else, with depths over one cache block so the
epilogue must wait for the last one). Results must match the float64 reference within the activation's
bound, equal gc_sgemm followed by gc_act bit for bit, and not depend on the thread count. The conv's form
(a bias per row, the residual before or after the activation) must equal the float32 steps done one by one.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.shared_build import run_gcc

cffi = pytest.importorskip("cffi")

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "runtime_c"
SOURCES = ("gc_gemm.c", "gc_act.c", "gc_threadpool.c")
LEVELS = {"baseline": ("-O2", "-std=c11"), "avx2": ("-O3", "-std=gnu11", "-march=x86-64-v3", "-fopenmp"),
          "avx512": ("-O3", "-std=gnu11", "-march=x86-64-v4", "-fopenmp")}
KINDS = {"none": 0, "exp": 1, "sigmoid": 2, "silu": 3, "tanh": 4, "gelu": 5, "gelu_tanh": 6, "relu": 7, "clamp": 8,
         "hardswish": 9}
CDEF = """
typedef struct gc_epilogue {
    int act; float lo, hi; float scale; const float *residual; const float *row_bias; int res_first;
} gc_epilogue;
void gc_sgemm(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc, const float *bias, int nthreads);
void gc_sgemm_ep(int transA, int transB, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float *C, int64_t ldc, const float *bias, const gc_epilogue *ep,
                 int nthreads);
void gc_act(int kind, int64_t n, const float *x, float *y, int nthreads);
"""


def _cpu_has(flag: str) -> bool:
    try:
        return f" {flag}" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.fixture(scope="module", params=list(LEVELS))
def rt(request, tmp_path_factory):
    level = request.param
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    if level == "avx2" and not (_cpu_has("avx2") and _cpu_has("fma")) or level == "avx512" and not _cpu_has("avx512f"):
        pytest.skip(f"this CPU cannot run {level}")
    out = tmp_path_factory.mktemp(f"ep_{level}") / "libgc_ep.so"
    cmd = ["gcc", *LEVELS[level], "-Wall", "-Wextra", "-fPIC", "-shared", "-DGC_INTERNAL=", f"-I{RUNTIME}",
           *(str(RUNTIME / s) for s in SOURCES), "-o", str(out), "-lm"]
    res = run_gcc(cmd)
    assert res.returncode == 0 and "warning" not in res.stderr, res.stderr
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    return ffi, ffi.dlopen(str(out))


def _p(ffi, a):
    return ffi.NULL if a is None else ffi.cast("float *", a.ctypes.data)


_erf = np.frompyfunc(math.erf, 1, 1)


def ref_act(kind: str, v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    v = v.astype(np.float64)
    with np.errstate(over="ignore"):
        if kind == "none":
            return v
        if kind == "exp":
            return np.exp(v)
        if kind == "sigmoid":
            return 1.0 / (1.0 + np.exp(-v))
        if kind == "silu":
            return v / (1.0 + np.exp(-v))
        if kind == "tanh":
            return np.tanh(v)
        if kind == "gelu":
            return 0.5 * v * (1.0 + _erf(v / math.sqrt(2.0)).astype(np.float64))
        if kind == "gelu_tanh":
            return 0.5 * v * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v**3)))
        if kind == "relu":
            return np.maximum(v, 0.0)
        if kind == "hardswish":
            return v * np.clip(v + 3.0, 0.0, 6.0) / 6.0
        return np.clip(v, lo, hi)


def run_ep(rt, ta, tb, m, n, k, a, b, bias, kind, scale, residual, nthreads, lo=-0.5, hi=1.5, row_bias=None,
           res_first=0):
    ffi, lib = rt
    ep = ffi.new("gc_epilogue *", {"act": KINDS[kind], "lo": lo, "hi": hi, "scale": scale,
                                   "residual": _p(ffi, residual), "row_bias": _p(ffi, row_bias),
                                   "res_first": res_first})
    c = np.full(m * n + 32, -7.0, np.float32)
    lda = m if ta else k
    ldb = k if tb else n
    lib.gc_sgemm_ep(ta, tb, m, n, k, _p(ffi, a), lda, _p(ffi, b), ldb, _p(ffi, c), n, _p(ffi, bias), ep, nthreads)
    assert (c[m * n:] == -7.0).all(), "wrote past C"
    return c[:m * n].reshape(m, n)


# (m, n, k, ta, tb): dot path (linear layout, a short side), axpy path (B row-major, m <= 4), packed paths
# with odd edges and depth over one cache block (K > 256)
SHAPES = [(1, 50, 300, 0, 1), (3, 37, 20, 0, 1), (40, 4, 300, 0, 1), (2, 45, 33, 0, 0), (37, 53, 300, 0, 1),
          (70, 130, 600, 0, 1), (13, 29, 17, 1, 0), (9, 33, 260, 0, 0)]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_epilogue_matches_reference(rt, shape, kind):
    m, n, k, ta, tb = shape
    rng = np.random.default_rng(m * 1000 + n)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    a *= np.float32(1.5 / math.sqrt(k))  # products of order 1: every activation's interesting range
    bias = rng.standard_normal(n).astype(np.float32)
    res = rng.standard_normal((m, n)).astype(np.float32)
    got1 = run_ep(rt, ta, tb, m, n, k, a, b, bias, kind, 0.75, res, 1)
    got2 = run_ep(rt, ta, tb, m, n, k, a, b, bias, kind, 0.75, res, 2)
    assert np.array_equal(got1, got2, equal_nan=True), "the thread count changed the result"
    opa = a.T if ta else a
    opb = b.T if tb else b
    p = opa.astype(np.float64) @ opb.astype(np.float64) + bias
    want = ref_act(kind, p, -0.5, 1.5) * 0.75 + res
    # the product's own float32 rounding, amplified by the activation's slope (at most ~1.2, e^p for exp)
    tol = 1e-5 * (np.abs(want) + np.abs(ref_act(kind, p, -0.5, 1.5)) * (k / 64.0) + 1.0)
    np.testing.assert_array_less(np.abs(got1 - want), tol)


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in ("relu", "clamp", "hardswish")])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_epilogue_equals_separate_passes(rt, shape, kind):
    """act only: exactly gc_sgemm (with bias) followed by gc_act on the whole output."""
    ffi, lib = rt
    m, n, k, ta, tb = shape
    rng = np.random.default_rng(7 + m + n)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32) * np.float32(1 / math.sqrt(k))
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    c = np.empty((m, n), np.float32)
    lib.gc_sgemm(ta, tb, m, n, k, 1.0, _p(ffi, a), m if ta else k, _p(ffi, b), k if tb else n, 0.0, _p(ffi, c), n,
                 _p(ffi, bias), 1)
    if kind != "none":
        lib.gc_act(KINDS[kind], c.size, _p(ffi, c), _p(ffi, c), 1)
    got = run_ep(rt, ta, tb, m, n, k, a, b, bias, kind, 1.0, None, 2)
    assert np.array_equal(got, c, equal_nan=True)


def test_epilogue_special_values(rt):
    """NaN passes relu and clamp (like the reference), bounds are exact, K = 0 still applies the epilogue."""
    ffi, lib = rt
    a = np.array([[np.nan, -3.0, 0.25, 9.0]], np.float32).T.copy()  # [4, 1]
    b = np.ones((1, 1), np.float32)
    for kind, want in [("relu", [np.nan, 0.0, 0.25, 9.0]), ("clamp", [np.nan, -0.5, 0.25, 1.5])]:
        got = run_ep(rt, 0, 0, 4, 1, 1, a, b, None, kind, 1.0, None, 1)
        np.testing.assert_array_equal(got[:, 0], np.array(want, np.float32))
    bias = np.array([-1.0, 2.0, 0.5], np.float32)
    res = np.arange(6, dtype=np.float32).reshape(2, 3)
    ep = ffi.new("gc_epilogue *", {"act": KINDS["relu"], "scale": 2.0, "residual": _p(ffi, res)})
    c = np.full((2, 3), np.nan, np.float32)
    lib.gc_sgemm_ep(0, 1, 2, 3, 0, ffi.NULL, 1, ffi.NULL, 1, _p(ffi, c), 3, _p(ffi, bias), ep, 1)
    np.testing.assert_array_equal(c, np.maximum(bias, 0) * 2 + res)


# the conv's shapes too: M output channels x N positions x K = C (1x1 convs), small K and small M
CONV_SHAPES = SHAPES + [(96, 200, 16, 0, 0), (24, 150, 144, 0, 0), (5, 70, 24, 0, 0), (50, 49, 320, 0, 0)]


@pytest.mark.parametrize("res_first", [0, 1])
@pytest.mark.parametrize("kind", ["none", "relu", "clamp", "tanh", "hardswish"])
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_row_bias_and_residual_order(rt, shape, kind, res_first):
    """The conv's epilogue: v + row_bias[i], then act(v) + res or act(v + res). With the cheap activations
    (applied in registers by the packed path) exactly the float32 steps one by one; all of them within the
    activation's bound of the float64 reference, and the same for 1 and 2 threads."""
    ffi, lib = rt
    m, n, k, ta, tb = shape
    rng = np.random.default_rng(3 * m + n + k)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32) * np.float32(1.5 / math.sqrt(k))
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    rb = rng.standard_normal(m).astype(np.float32)
    res = rng.standard_normal((m, n)).astype(np.float32)
    got1 = run_ep(rt, ta, tb, m, n, k, a, b, None, kind, 1.0, res, 1, row_bias=rb, res_first=res_first)
    got2 = run_ep(rt, ta, tb, m, n, k, a, b, None, kind, 1.0, res, 2, row_bias=rb, res_first=res_first)
    assert np.array_equal(got1, got2, equal_nan=True), "the thread count changed the result"
    opa = a.T if ta else a
    opb = b.T if tb else b
    p = opa.astype(np.float64) @ opb.astype(np.float64) + rb[:, None]
    want = ref_act(kind, p + res, -0.5, 1.5) if res_first else ref_act(kind, p, -0.5, 1.5) + res
    tol = 1e-5 * (np.abs(want) + np.abs(p) * (k / 64.0) + 2.0)
    np.testing.assert_array_less(np.abs(got1 - want), tol)
    if kind in ("none", "relu", "clamp"):
        c = np.empty((m, n), np.float32)
        lib.gc_sgemm(ta, tb, m, n, k, 1.0, _p(ffi, a), m if ta else k, _p(ffi, b), k if tb else n, 0.0, _p(ffi, c),
                     n, ffi.NULL, 1)
        v = c + rb[:, None]
        if res_first:
            v = v + res
        v = np.where(v < 0, np.float32(0), v) if kind == "relu" else v
        if kind == "clamp":
            v = np.where(v <= -0.5, np.float32(-0.5), v)
            v = np.where(v >= 1.5, np.float32(1.5), v)
        if not res_first:
            v = v + res
        assert np.array_equal(got1, v.astype(np.float32)), "not the float32 steps one by one"
    # without a residual, and the row bias alone (no activation): act(v + rb)
    got = run_ep(rt, ta, tb, m, n, k, a, b, None, kind, 1.0, None, 1, row_bias=rb, res_first=res_first)
    want = ref_act(kind, p, -0.5, 1.5)
    np.testing.assert_array_less(np.abs(got - want), 1e-5 * (np.abs(want) + np.abs(p) * (k / 64.0) + 2.0))
