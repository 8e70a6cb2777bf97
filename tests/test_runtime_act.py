"""The runtime's vectorised activations (runtime_c/gc_act.c, gc_vmath.h) against float64 references.

gc_act.c is built at each ISA level this machine can run (baseline SSE2 without FMA; x86-64-v3 = AVX2 +
FMA; x86-64-v4 = AVX-512 when the CPU has it) and called through cffi. Each function's largest error
(relative; GELU's absolute in Phi below 0) over a dense sweep of its interesting range and over random
inputs must stay within the bound gc_vmath.h states; special values (0, -0, inf, NaN, overflow and
underflow) are checked exactly, and results must not depend on the thread count or on where the array
starts (the partial last vector).
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.shared_build import run_gcc

cffi = pytest.importorskip("cffi")

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "runtime_c"
SOURCES = ("gc_act.c", "gc_threadpool.c")
KINDS = {"exp": 1, "sigmoid": 2, "silu": 3, "tanh": 4, "gelu": 5, "gelu_tanh": 6}
LEVELS = {"baseline": ("-O2", "-std=c11"), "avx2": ("-O2", "-march=x86-64-v3", "-fopenmp"),
          "avx512": ("-O2", "-march=x86-64-v4", "-fopenmp")}


def cpu_has(flag: str) -> bool:
    try:
        return re.search(rf"\b{flag}\b", Path("/proc/cpuinfo").read_text()) is not None
    except OSError:
        return False


def available(level: str) -> bool:
    return {"baseline": True, "avx2": cpu_has("avx2") and cpu_has("fma"), "avx512": cpu_has("avx512f")}[level]


_erfc = np.frompyfunc(math.erfc, 1, 1)  # 1 + erf(-z) would cancel for large z


def reference(kind: str, x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    with np.errstate(over="ignore"):
        if kind == "exp":
            return np.exp(x)
        if kind == "sigmoid":
            return 1.0 / (1.0 + np.exp(-x))
        if kind == "silu":
            return x / (1.0 + np.exp(-x))
        if kind == "tanh":
            return np.tanh(x)
        if kind == "gelu":
            return 0.5 * x * _erfc(-x / math.sqrt(2.0)).astype(np.float64)
        u = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)
        return x / (1.0 + np.exp(-2.0 * u))  # = x (1 + tanh u) / 2, without its cancellation


# the largest relative error each function may have (gc_vmath.h states the same) and the range swept:
# to where the result (or, for the GELUs, the factor that multiplies x) leaves the normal floats. The
# tanh GELU's error is relative for x >= 0 and absolute in the factor for x < 0: |error| <= GELU_NEG |x|
# (as PyTorch's float 0.5 x (1 + tanh u) is); the erf GELU's is relative throughout
BOUND = {"exp": 1.5e-7, "sigmoid": 2.5e-7, "silu": 2.5e-7, "tanh": 4e-7, "gelu": 5e-7, "gelu_tanh": 3.5e-7}
GELU_NEG = 2.5e-7
RANGE = {"exp": (-103.0, 88.7), "sigmoid": (-87.0, 60.0), "silu": (-87.0, 60.0), "tanh": (-12.0, 12.0),
         "gelu": (-12.0, 13.0), "gelu_tanh": (-10.0, 13.0)}


@pytest.fixture(scope="module", params=list(LEVELS))
def act(request, tmp_path_factory):
    level = request.param
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    if not available(level):
        pytest.skip(f"this CPU cannot run {level}")
    out = tmp_path_factory.mktemp(f"act_{level}") / "libgc_act.so"
    cmd = ["gcc", *LEVELS[level], "-Wall", "-Wextra", "-fPIC", "-shared", "-DGC_INTERNAL=", f"-I{RUNTIME}",
           *(str(RUNTIME / s) for s in SOURCES), "-o", str(out), "-lm"]
    res = run_gcc(cmd)
    assert res.returncode == 0 and "warning" not in res.stderr, res.stderr
    ffi = cffi.FFI()
    ffi.cdef("void gc_act(int kind, int64_t n, const float *x, float *y, int nthreads);")
    lib = ffi.dlopen(str(out))

    def run(kind: str, x: np.ndarray, nthreads: int = 1, inplace: bool = False) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        y = x.copy() if inplace else np.full(x.size + 16, -7.0, np.float32)
        src = ffi.cast("float *", y.ctypes.data) if inplace else ffi.cast("float *", x.ctypes.data)
        lib.gc_act(KINDS[kind], x.size, src, ffi.cast("float *", y.ctypes.data), nthreads)
        if not inplace:
            assert (y[x.size:] == -7.0).all(), "gc_act wrote past the end"
            y = y[:x.size]
        return y

    return run


def rel_error(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    # below the normal range the float32 result can only be as good as the subnormal spacing
    return np.abs(got.astype(np.float64) - want) / np.maximum(np.abs(want), 2.0**-126)


def error_ratio(kind: str, x: np.ndarray, got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """each element's error over the bound gc_vmath.h states for it (at most 1 passes)"""
    ratio = rel_error(got, want) / BOUND[kind]
    if kind == "gelu_tanh":
        neg = x < 0
        ratio[neg] = np.abs(got[neg].astype(np.float64) - want[neg]) / (GELU_NEG * np.abs(x[neg].astype(np.float64)))
    return ratio


@pytest.mark.parametrize("kind", list(KINDS))
def test_error_within_bound(act, kind):
    lo, hi = RANGE[kind]
    sweep = np.linspace(lo, hi, 400_003, dtype=np.float32)
    rng = np.random.default_rng(1)
    rand = np.concatenate([rng.standard_normal(50_000) * 3, rng.uniform(lo, hi, 50_000),
                           rng.standard_normal(20_000) * 1e-3]).astype(np.float32)
    rand = rand[(rand >= lo) & (rand <= hi)]
    for x in (sweep, rand):
        err = error_ratio(kind, x, act(kind, x), reference(kind, x))
        worst = int(np.argmax(err))
        assert err[worst] <= 1.0, f"{kind}({x[worst]!r}) error {err[worst]:.3g} times the bound"


@pytest.mark.parametrize("kind", list(KINDS))
def test_special_values(act, kind):
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30, -1e-30, 200.0, -200.0], np.float32)
    got = act(kind, x)
    assert np.isnan(got[4])
    with np.errstate(invalid="ignore", over="ignore"):
        want = reference(kind, x).astype(np.float32)
    # x times a factor that vanishes at -inf (-inf * 0 in the reference) has no value there
    exact = [0, 1, 2] if kind in ("silu", "gelu", "gelu_tanh") else [0, 1, 2, 3]
    np.testing.assert_array_equal(got[exact], want[exact])
    np.testing.assert_array_equal(np.signbit(got[:2]), np.signbit(want[:2]))
    assert error_ratio(kind, x[5:7], got[5:7], reference(kind, x[5:7])).max() <= 1.0
    np.testing.assert_array_equal(got[7:], want[7:])  # saturated: 1, x, inf or 0 exactly


@pytest.mark.parametrize("kind", ["silu", "gelu"])
def test_threads_offsets_and_in_place(act, kind):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(100_003) * 4).astype(np.float32)
    one = act(kind, x, 1)
    for nt in (2, 3):
        assert act(kind, x, nt).tobytes() == one.tobytes()
    assert act(kind, x, 2, inplace=True).tobytes() == one.tobytes()
    for start in range(1, 9):  # every lane position: the same bits
        assert act(kind, x[start:start + 37]).tobytes() == one[start:start + 37].tobytes()
