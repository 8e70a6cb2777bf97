"""The C runtime's depthwise convolution path and the conv epilogues (bias + activation + residual in the
output write) against a float64 numpy reference, at every vector width (AVX-512 where the CPU has it,
AVX2, and the portable SSE build without FMA or OpenMP), for 1 and 2 threads (bit-identical).

The kernels are built straight from runtime_c/ (-DGC_INTERNAL= exports them) and called through cffi;
the structs and declarations come out of graphc_rt.h the way tests/test_runtime_gemm_conv.py does it.
"""

from __future__ import annotations

import math
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.shared_build import run_gcc

cffi = pytest.importorskip("cffi")

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "runtime_c"
SOURCES = ("gc_gemm.c", "gc_conv.c", "gc_threadpool.c")
BUILDS = {
    "native": ("-O2", "-march=native", "-fopenmp"),
    "avx2": ("-O2", "-std=c11", "-fopenmp", "-mavx2", "-mfma"),
    "portable": ("-O2", "-std=c11"),
}
GUARD = 64
SENTINEL = np.float32(-12345.5)
ACT = {"exp": 1, "sigmoid": 2, "silu": 3, "tanh": 4, "gelu": 5, "gelu_tanh": 6, "relu": 7, "clamp": 8,
       "hardswish": 9}


def _cpu_has(*features: str) -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return all(f in flags for f in features)


def _cdef() -> str:
    header = (RUNTIME / "graphc_rt.h").read_text()
    m = re.search(r"typedef struct gc_conv2d_params \{.*?\} gc_conv2d_params;", header, re.S)
    assert m
    parts = [m.group(0)]
    for name in ("gc_conv2d_work_floats", "gc_conv2d"):
        f = re.search(rf"GC_INTERNAL ([^;]*?\b{name}\([^;]*\);)", header, re.S)
        assert f
        parts.append(f.group(1))
    return "\n".join(parts)


class Runtime:
    def __init__(self, directory: Path, flags: tuple[str, ...]):
        if shutil.which("gcc") is None:
            pytest.skip("gcc is not installed")
        common = ["gcc", *flags, "-Wall", "-Wextra", "-fPIC", "-DGC_INTERNAL=", f"-I{RUNTIME}"]
        objects = [directory / (Path(s).stem + ".o") for s in SOURCES]
        with ThreadPoolExecutor(len(SOURCES)) as pool:
            results = list(pool.map(lambda so: run_gcc([*common, "-c", str(RUNTIME / so[0]), "-o", str(so[1])]),
                                    zip(SOURCES, objects)))
        for res, source in zip(results, SOURCES):
            assert res.returncode == 0, f"gcc failed on {source}:\n{res.stderr}"
        lib = directory / "libgc_conv_epi.so"
        res = run_gcc([*common, "-shared", *map(str, objects), "-o", str(lib), "-lm"])
        assert res.returncode == 0, res.stderr
        self.ffi = cffi.FFI()
        self.ffi.cdef(_cdef())
        self.lib = self.ffi.dlopen(str(lib))

    def ptr(self, a):
        return self.ffi.NULL if a is None else self.ffi.cast("float *", a.ctypes.data)

    def conv2d(self, x, w, bias, stride, pad, groups, nthreads, act=0, lo=0.0, hi=0.0, res=None, res_first=0,
               pooled=None, in_scale=None):
        n, c, h, wd = x.shape
        oc, kh, kw = w.shape[0], w.shape[2], w.shape[3]
        oh = (h + 2 * pad[0] - kh) // stride[0] + 1
        ow = (wd + 2 * pad[1] - kw) // stride[1] + 1
        p = self.ffi.new("gc_conv2d_params *")
        p.n, p.c, p.h, p.w, p.oc, p.kh, p.kw, p.oh, p.ow = n, c, h, wd, oc, kh, kw, oh, ow
        p.stride_h, p.stride_w = stride
        p.pad_h, p.pad_w = pad
        p.dil_h = p.dil_w = 1
        p.groups = groups
        p.act, p.act_lo, p.act_hi, p.res_first = act, lo, hi, res_first
        if res is not None:
            assert res.shape == (n, oc, oh, ow) and res.dtype == np.float32 and res.flags.c_contiguous
            p.res = self.ptr(res)
        if pooled is not None:  # a flat [n * oc + GUARD] buffer for the pooled outputs
            p.pool = self.ptr(pooled)
        if in_scale is not None:
            assert in_scale.shape == (n, c) and in_scale.dtype == np.float32 and in_scale.flags.c_contiguous
            p.in_scale = self.ptr(in_scale)
        work = np.full(self.lib.gc_conv2d_work_floats(p, nthreads) + GUARD, SENTINEL, np.float32)
        y = np.full(n * oc * oh * ow + GUARD, SENTINEL, np.float32)
        self.lib.gc_conv2d(p, self.ptr(x), self.ptr(w), self.ptr(bias), self.ptr(y), self.ptr(work), nthreads)
        assert (work[-GUARD:] == SENTINEL).all(), "kernel wrote past its work buffer"
        assert (y[-GUARD:] == SENTINEL).all(), "kernel wrote past its output"
        return y[:-GUARD].reshape(n, oc, oh, ow)


@pytest.fixture(scope="module", params=list(BUILDS))
def rt(request, tmp_path_factory) -> Runtime:
    if request.param == "avx2" and not _cpu_has("avx2", "fma"):
        pytest.skip("the CPU has no AVX2 / FMA")
    return Runtime(tmp_path_factory.mktemp(f"gc_{request.param}"), BUILDS[request.param])


def conv_ref(x, w, bias, stride, pad, groups):
    """float64 convolution, one einsum per tap and group."""
    n, c, h, wd = x.shape
    oc, cg, kh, kw = w.shape
    ocg = oc // groups
    oh = (h + 2 * pad[0] - kh) // stride[0] + 1
    ow = (wd + 2 * pad[1] - kw) // stride[1] + 1
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    y = np.zeros((n, oc, oh, ow))
    for g in range(groups):
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, g * cg:(g + 1) * cg, i:i + stride[0] * (oh - 1) + 1:stride[0],
                           j:j + stride[1] * (ow - 1) + 1:stride[1]]
                y[:, g * ocg:(g + 1) * ocg] += np.einsum("nchw,oc->nohw", patch, w[g * ocg:(g + 1) * ocg, :, i, j])
    if bias is not None:
        y += bias[None, :, None, None]
    return y


def act_ref(kind: str, v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    erf = np.vectorize(math.erf)
    return {
        "exp": lambda: np.exp(v), "sigmoid": lambda: 1 / (1 + np.exp(-v)), "silu": lambda: v / (1 + np.exp(-v)),
        "tanh": lambda: np.tanh(v), "gelu": lambda: 0.5 * v * (1 + erf(v / math.sqrt(2))),
        "gelu_tanh": lambda: 0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3))),
        "relu": lambda: np.maximum(v, 0), "clamp": lambda: np.clip(v, lo, hi),
        "hardswish": lambda: v * np.clip(v + 3, 0, 6) / 6,
    }[kind]()


def _close(got, ref, rtol=1e-4):
    scale = max(1.0, float(np.abs(ref).max(initial=0.0)))
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * scale)


def _data(seed, n, c, h, w, oc, kh, kw, groups):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((oc, c // groups, kh, kw)) / math.sqrt(c // groups * kh * kw)).astype(np.float32)
    return x, wt, rng.standard_normal(oc).astype(np.float32), rng


def _both_threads(f):
    one, two = f(1), f(2)
    np.testing.assert_array_equal(one, two)
    return one


# n, c, h, w, (kh, kw), stride, pad: the depthwise path (groups == c == oc), rows of any width
DEPTHWISE = [
    (1, 3, 7, 9, (3, 3), (1, 1), (1, 1)),
    (2, 4, 10, 13, (3, 3), (2, 2), (1, 1)),      # batch 2, stride 2 onto odd widths
    (1, 2, 1, 1, (3, 3), (1, 1), (1, 1)),        # H = W = 1
    (1, 2, 1, 19, (3, 3), (1, 1), (1, 1)),       # H = 1
    (1, 3, 17, 33, (5, 5), (1, 1), (2, 2)),
    (1, 2, 12, 37, (5, 5), (2, 2), (2, 2)),
    (1, 2, 14, 14, (7, 7), (1, 1), (3, 3)),
    (1, 2, 15, 16, (7, 7), (2, 2), (3, 3)),
    (2, 3, 8, 8, (3, 3), (1, 1), (0, 0)),        # no padding
    (1, 2, 9, 70, (3, 3), (1, 1), (1, 1)),       # rows past 4 vectors of 16
    (1, 2, 6, 5, (3, 5), (2, 1), (0, 2)),        # asymmetric
    (1, 2, 5, 5, (3, 3), (1, 1), (2, 2)),        # padding past the kernel's half
    (1, 2, 6, 7, (2, 2), (2, 2), (0, 0)),        # even kernel, last column unread
    (1, 40, 28, 28, (3, 3), (1, 1), (1, 1)),     # many planes for 2 threads
    (1, 24, 56, 56, (3, 3), (2, 2), (1, 1)),     # MobileNetV2's strided layer shape
    # square kernels (dw_band tiles): rows of 1, 2, 3 and 7 vectors, odd row counts (4/2/1-row tiles)
    (1, 3, 7, 7, (5, 5), (1, 1), (2, 2)),
    (1, 3, 15, 14, (5, 5), (2, 2), (2, 2)),
    (1, 2, 13, 113, (3, 3), (2, 2), (1, 1)),
    (1, 2, 29, 31, (7, 7), (2, 2), (3, 3)),
    (1, 2, 5, 50, (3, 3), (1, 1), (0, 0)),
    (1, 2, 11, 40, (5, 5), (1, 1), (1, 1)),      # padding below the kernel's half
    (1, 3, 16, 15, (3, 3), (2, 2), (1, 1)),      # rows of 8 and 4 outputs: 8-lane tiles (AVX-512)
    (1, 2, 9, 4, (5, 5), (1, 1), (2, 2)),
    # stride 2 deinterleaved in the tiles (AVX2): 4-row tiles and the rows left over, no padding, padding
    # below the kernel's half, rows of 5 vectors of 8
    (1, 2, 17, 61, (3, 3), (2, 2), (0, 0)),
    (1, 2, 10, 26, (5, 5), (2, 2), (1, 1)),
    (1, 2, 19, 79, (3, 3), (2, 2), (1, 1)),
]


@pytest.mark.parametrize("case", DEPTHWISE, ids=lambda c: "x".join(map(str, c[:4])) + f"_k{c[4][0]}{c[4][1]}s{c[5][0]}")
def test_depthwise_matches_numpy(rt, case):
    n, c, h, w, k, stride, pad = case
    x, wt, bias, _ = _data(sum(case[:4]), n, c, h, w, c, *k, c)
    got = _both_threads(lambda nt: rt.conv2d(x, wt, bias, stride, pad, c, nt))
    _close(got, conv_ref(x, wt, bias, stride, pad, c))
    _close(rt.conv2d(x, wt, None, stride, pad, c, 1), conv_ref(x, wt, None, stride, pad, c))


# every path: depthwise, direct (one input channel per group), spatial tiles for one input channel, 1x1 gemm,
# 1x1 on 1x1 images, spatial, im2col + gemm
PATHS = {
    "depthwise": (2, 6, 9, 21, 6, (3, 3), (1, 1), (1, 1), 6),
    "depthwise_s2": (1, 5, 11, 19, 5, (5, 5), (2, 2), (2, 2), 5),
    "depthwise_3s2": (1, 4, 12, 23, 4, (3, 3), (2, 2), (1, 1), 4),  # ReLU6 / SiLU in the tiles' stores
    "depthwise_narrow": (1, 3, 13, 7, 3, (3, 3), (1, 1), (1, 1), 3),  # rows of 7: 8-lane tiles (AVX-512)
    "depthwise_narrow_5s2": (1, 3, 9, 15, 3, (5, 5), (2, 2), (2, 2), 3),
    "depthwise_5s1": (1, 3, 14, 19, 3, (5, 5), (1, 1), (2, 2), 3),  # SiLU in the 5x5 tiles' stores (AVX2)
    "depthwise_3s2_wide": (1, 3, 11, 75, 3, (3, 3), (2, 2), (1, 1), 3),  # 4-row tiles, 5 vectors a row
    "direct": (2, 2, 12, 13, 4, (5, 5), (1, 1), (0, 0), 2),          # channel multiplier 2: per-plane loops
    "one_channel": (2, 1, 12, 13, 6, (5, 5), (1, 1), (2, 2), 1),     # LeNet's first conv: spatial tiles
    "gemm1x1": (2, 16, 7, 9, 12, (1, 1), (1, 1), (0, 0), 1),
    "gemm1x1_chunked": (1, 8, 30, 40, 200, (1, 1), (1, 1), (0, 0), 1),  # output columns in L2-sized chunks
    "gemv": (3, 40, 1, 1, 24, (1, 1), (1, 1), (0, 0), 1),            # 1x1 outputs: dot products
    "gemv_groups": (2, 12, 1, 1, 8, (1, 1), (1, 1), (0, 0), 4),
    "gemv_threads": (2, 600, 1, 1, 300, (1, 1), (1, 1), (0, 0), 1),  # enough for 2 threads
    "spatial": (1, 8, 10, 11, 10, (3, 3), (1, 1), (1, 1), 1),
    "spatial_7x7": (1, 16, 7, 7, 40, (3, 3), (1, 1), (1, 1), 1),   # 8-lane vectors, channel blocks split
    "columns": (1, 300, 6, 6, 8, (1, 1), (2, 2), (0, 0), 1),
}


@pytest.mark.parametrize("kind", list(ACT))
@pytest.mark.parametrize("path", list(PATHS))
def test_epilogue_activation(rt, path, kind):
    n, c, h, w, oc, k, stride, pad, groups = PATHS[path]
    x, wt, bias, _ = _data(len(path) + len(kind), n, c, h, w, oc, *k, groups)
    lo, hi = (-0.5, 0.75) if kind == "clamp" else (0.0, 0.0)
    ref = act_ref(kind, conv_ref(x, wt, bias, stride, pad, groups).astype(np.float32).astype(np.float64), lo, hi)
    got = _both_threads(lambda nt: rt.conv2d(x, wt, bias, stride, pad, groups, nt, ACT[kind], lo, hi))
    _close(got, ref)


@pytest.mark.parametrize("res_first", [0, 1])
@pytest.mark.parametrize("path", list(PATHS))
def test_epilogue_residual(rt, path, res_first):
    n, c, h, w, oc, k, stride, pad, groups = PATHS[path]
    x, wt, bias, rng = _data(7 + res_first, n, c, h, w, oc, *k, groups)
    conv = conv_ref(x, wt, bias, stride, pad, groups)
    res = rng.standard_normal(conv.shape).astype(np.float32)
    ref = np.clip(conv + res, 0, 6) if res_first else np.clip(conv, 0, 6) + res
    got = _both_threads(lambda nt: rt.conv2d(x, wt, bias, stride, pad, groups, nt, ACT["clamp"], 0.0, 6.0, res,
                                             res_first))
    _close(got, ref)
    plain = rt.conv2d(x, wt, None, stride, pad, groups, 1, 0, 0.0, 0.0, res, 0)  # residual alone, no bias
    _close(plain, conv_ref(x, wt, None, stride, pad, groups) + res)


# the pooled output (a squeeze-excitation's global average pool) on the depthwise path with whole planes
# per task and with several bands per plane, and on the other paths (a pass after the conv)
POOLED = {
    "depthwise": (2, 6, 9, 21, 6, (3, 3), (1, 1), (1, 1), 6),
    "depthwise_bands": (1, 2, 400, 401, 2, (3, 3), (1, 1), (1, 1), 2),
    "depthwise_s2": (1, 5, 11, 19, 5, (5, 5), (2, 2), (2, 2), 5),
    "gemm1x1": (2, 16, 7, 9, 12, (1, 1), (1, 1), (0, 0), 1),
    "spatial": (1, 8, 10, 11, 10, (3, 3), (1, 1), (1, 1), 1),
}


@pytest.mark.parametrize("path", list(POOLED))
def test_pooled_output(rt, path):
    n, c, h, w, oc, k, stride, pad, groups = POOLED[path]
    x, wt, bias, _ = _data(3, n, c, h, w, oc, *k, groups)

    def run(nt):
        pooled = np.full(n * oc + GUARD, SENTINEL, np.float32)
        y = rt.conv2d(x, wt, bias, stride, pad, groups, nt, ACT["silu"], pooled=pooled)
        assert (pooled[-GUARD:] == SENTINEL).all(), "kernel wrote past the pooled output"
        return np.concatenate([y.ravel(), pooled[:-GUARD]])

    both = _both_threads(run)
    ref = act_ref("silu", conv_ref(x, wt, bias, stride, pad, groups).astype(np.float32).astype(np.float64), 0, 0)
    y, pooled = both[:ref.size].reshape(ref.shape), both[ref.size:]
    _close(y, ref)
    np.testing.assert_allclose(pooled, y.astype(np.float64).mean(axis=(2, 3)).ravel(), rtol=1e-5, atol=1e-6)


# the input scale (a squeeze-excitation's x * s[n, c] folded into the conv reading it): the weights scaled per
# image; with a residual, an activation and the pooled output, batch 2, groups, and a spatial kernel
SCALED = {
    "gemm1x1": (2, 24, 9, 11, 10, (1, 1), (1, 1), (0, 0), 1),
    "gemm1x1_chunked": (1, 16, 30, 40, 8, (1, 1), (1, 1), (0, 0), 1),
    "groups": (2, 12, 6, 7, 8, (1, 1), (1, 1), (0, 0), 4),
    "spatial": (2, 8, 10, 11, 10, (3, 3), (1, 1), (1, 1), 1),
}


@pytest.mark.parametrize("path", list(SCALED))
def test_input_scale(rt, path):
    n, c, h, w, oc, k, stride, pad, groups = SCALED[path]
    x, wt, bias, rng = _data(11, n, c, h, w, oc, *k, groups)
    s = rng.uniform(0.0, 1.0, (n, c)).astype(np.float32)
    conv = conv_ref(x.astype(np.float64) * s[:, :, None, None], wt, bias, stride, pad, groups)
    res = rng.standard_normal(conv.shape).astype(np.float32)

    def run(nt):
        pooled = np.full(n * oc + GUARD, SENTINEL, np.float32)
        y = rt.conv2d(x, wt, bias, stride, pad, groups, nt, ACT["silu"], res=res, res_first=0, pooled=pooled,
                      in_scale=s)
        assert (pooled[-GUARD:] == SENTINEL).all(), "kernel wrote past the pooled output"
        return np.concatenate([y.ravel(), pooled[:-GUARD]])

    both = _both_threads(run)
    ref = act_ref("silu", conv, 0, 0) + res
    y, pooled = both[:ref.size].reshape(ref.shape), both[ref.size:]
    _close(y, ref)
    np.testing.assert_allclose(pooled, y.astype(np.float64).mean(axis=(2, 3)).ravel(), rtol=1e-5, atol=1e-6)
    _close(rt.conv2d(x, wt, None, stride, pad, groups, 1, in_scale=s),
           conv_ref(x.astype(np.float64) * s[:, :, None, None], wt, None, stride, pad, groups))
