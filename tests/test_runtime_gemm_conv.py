"""The C runtime's GEMM, convolution and pooling kernels against numpy (and PyTorch when installed).

The kernels are built straight from runtime_c/ into a shared library (-DGC_INTERNAL= exports them) and
called through cffi in ABI mode; the declarations are cut out of graphc_rt.h so the tests follow the
contract. Besides the values, every kernel must give bit-identical results for 1 and 2 threads, never
read C when beta == 0, and stay inside the work buffer its *_work_floats function sized.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.shared_build import run_gcc

cffi = pytest.importorskip("cffi")

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "runtime_c"
SOURCES = ("gc_gemm.c", "gc_conv.c", "gc_pool.c", "gc_threadpool.c")
NATIVE_FLAGS = ("-O3", "-march=native", "-fopenmp")
PORTABLE_FLAGS = ("-O2", "-std=c11")  # no OpenMP, baseline ISA: SSE2 vectors, no FMA
AVX2_FLAGS = ("-O2", "-std=c11", "-fopenmp", "-mavx2", "-mfma")  # the 6 x 16 micro-kernel
STRUCTS = ("gc_epilogue", "gc_conv2d_params", "gc_conv_transpose2d_params", "gc_pool2d_params")
FUNCTIONS = ("gc_sgemm", "gc_sgemm_ep", "gc_sgemm_pack_b_floats", "gc_sgemm_pack_b", "gc_sgemm_ep_packed",
             "gc_sgemm_batched", "gc_conv2d_work_floats", "gc_conv2d",
             "gc_conv_transpose2d_work_floats", "gc_conv_transpose2d", "gc_max_pool2d", "gc_avg_pool2d",
             "gc_adaptive_avg_pool2d", "gc_pool_new", "gc_pool_free", "gc_pool_enter")
GUARD = 64  # sentinel floats after every output / work buffer
SENTINEL = np.float32(-12345.5)


# ---------------------------------------------------------------------------------- build and bind
def _cdef() -> str:
    header = (RUNTIME / "graphc_rt.h").read_text()
    parts = ["typedef struct gc_pool gc_pool;"]
    for name in STRUCTS:
        m = re.search(rf"typedef struct {name} \{{.*?\}} {name};", header, re.S)
        assert m, f"{name} not found in graphc_rt.h"
        parts.append(m.group(0))
    for name in FUNCTIONS:
        m = re.search(rf"GC_INTERNAL ([^;]*?\b{name}\([^;]*\);)", header, re.S)
        assert m, f"{name} not found in graphc_rt.h"
        parts.append(m.group(1))
    return "\n".join(parts)


def _build(directory: Path, flags: tuple[str, ...]):
    """Compile the sources side by side (gc_gemm.c takes longest), link them, load the library."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    common = ["gcc", *flags, "-Wall", "-Wextra", "-fPIC", "-DGC_INTERNAL=", f"-I{RUNTIME}"]
    objects = [directory / (Path(s).stem + ".o") for s in SOURCES]
    with ThreadPoolExecutor(len(SOURCES)) as pool:
        results = list(pool.map(lambda so: run_gcc([*common, "-c", str(RUNTIME / so[0]), "-o", str(so[1])]),
                                zip(SOURCES, objects)))
    for res, source in zip(results, SOURCES):
        assert res.returncode == 0, f"gcc failed on {source}:\n{res.stderr}"
    lib_path = directory / "libgc_gemm_conv.so"
    res = run_gcc([*common, "-shared", *map(str, objects), "-o", str(lib_path), "-lm"])
    assert res.returncode == 0, res.stderr
    ffi = cffi.FFI()
    ffi.cdef(_cdef())
    return ffi, ffi.dlopen(str(lib_path))


class Runtime:
    """Thin numpy-facing wrappers over the C kernels."""

    def __init__(self, ffi, lib):
        self.ffi, self.lib = ffi, lib

    def ptr(self, a: np.ndarray | None):
        if a is None:
            return self.ffi.NULL
        assert a.dtype == np.float32
        return self.ffi.cast("float *", a.ctypes.data)

    def sgemm(self, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias=None, nthreads=1):
        self.lib.gc_sgemm(ta, tb, m, n, k, alpha, self.ptr(a), lda, self.ptr(b), ldb, beta, self.ptr(c), ldc,
                          self.ptr(bias), nthreads)

    def pack_b(self, tb, n, k, b, ldb) -> np.ndarray:
        """gc_sgemm_pack_b into a 64-byte aligned buffer of exactly gc_sgemm_pack_b_floats, guarded."""
        floats = self.lib.gc_sgemm_pack_b_floats(n, k)
        raw = np.full(floats + GUARD + 16, SENTINEL, np.float32)
        skip = (-raw.ctypes.data % 64) // 4
        packed = raw[skip:skip + floats + GUARD]
        self.lib.gc_sgemm_pack_b(tb, n, k, self.ptr(b), ldb, self.ptr(packed))
        assert (packed[floats:] == SENTINEL).all(), "gc_sgemm_pack_b wrote past gc_sgemm_pack_b_floats"
        return packed

    def sgemm_ep(self, ta, tb, m, n, k, a, lda, b, ldb, c, ldc, bias, scale, residual, nthreads, packed=None):
        """gc_sgemm_ep (packed None) or gc_sgemm_ep_packed, the epilogue v * scale + residual (None: none)."""
        ep = self.ffi.NULL
        if scale is not None:
            ep = self.ffi.new("gc_epilogue *", {"act": 0, "lo": 0.0, "hi": 0.0, "scale": scale,
                                                "residual": self.ptr(residual)})
        if packed is None:
            self.lib.gc_sgemm_ep(ta, tb, m, n, k, self.ptr(a), lda, self.ptr(b), ldb, self.ptr(c), ldc,
                                 self.ptr(bias), ep, nthreads)
        else:
            self.lib.gc_sgemm_ep_packed(ta, tb, m, n, k, self.ptr(a), lda, self.ptr(b), ldb, self.ptr(packed),
                                        self.ptr(c), ldc, self.ptr(bias), ep, nthreads)

    @staticmethod
    def _guarded(shape) -> np.ndarray:
        """A flat buffer for shape followed by GUARD sentinel floats."""
        return np.full(int(np.prod(shape)) + GUARD, SENTINEL, np.float32)

    def conv2d(self, x, w, bias, stride, pad, dil, groups, nthreads=1, transpose=False, out_pad=(0, 0)):
        n, c, h, wd = x.shape
        if transpose:
            oc, kh, kw = w.shape[1] * groups, w.shape[2], w.shape[3]
            oh = (h - 1) * stride[0] - 2 * pad[0] + dil[0] * (kh - 1) + out_pad[0] + 1
            ow = (wd - 1) * stride[1] - 2 * pad[1] + dil[1] * (kw - 1) + out_pad[1] + 1
            p = self.ffi.new("gc_conv_transpose2d_params *")
        else:
            oc, kh, kw = w.shape[0], w.shape[2], w.shape[3]
            oh = (h + 2 * pad[0] - dil[0] * (kh - 1) - 1) // stride[0] + 1
            ow = (wd + 2 * pad[1] - dil[1] * (kw - 1) - 1) // stride[1] + 1
            p = self.ffi.new("gc_conv2d_params *")
        p.n, p.c, p.h, p.w, p.oc, p.kh, p.kw, p.oh, p.ow = n, c, h, wd, oc, kh, kw, oh, ow
        p.stride_h, p.stride_w = stride
        p.pad_h, p.pad_w = pad
        p.dil_h, p.dil_w = dil
        p.groups = groups
        if transpose:
            work_floats, run = self.lib.gc_conv_transpose2d_work_floats, self.lib.gc_conv_transpose2d
        else:
            work_floats, run = self.lib.gc_conv2d_work_floats, self.lib.gc_conv2d
        work = self._guarded((work_floats(p, nthreads),))
        y = self._guarded((n, oc, oh, ow))
        run(p, self.ptr(x), self.ptr(w), self.ptr(bias), self.ptr(y), self.ptr(work), nthreads)
        assert (work[-GUARD:] == SENTINEL).all(), "kernel wrote past its work buffer"
        assert (y[-GUARD:] == SENTINEL).all(), "kernel wrote past its output"
        return y[:-GUARD].reshape(n, oc, oh, ow)

    def pool(self, kind, x, kernel, stride, pad, dil=(1, 1), ceil_mode=False, count_include_pad=True,
             divisor_override=0, nthreads=1):
        n, c, h, w = x.shape
        out = [pool_out_size(s, k, st, p, d, ceil_mode) for s, k, st, p, d in zip((h, w), kernel, stride, pad, dil)]
        p = self.ffi.new("gc_pool2d_params *")
        p.n, p.c, p.h, p.w, p.oh, p.ow = n, c, h, w, *out
        p.kh, p.kw = kernel
        p.stride_h, p.stride_w = stride
        p.pad_h, p.pad_w = pad
        p.dil_h, p.dil_w = dil
        p.count_include_pad = int(count_include_pad)
        p.divisor_override = divisor_override
        y = self._guarded((n, c, *out))
        fn = self.lib.gc_max_pool2d if kind == "max" else self.lib.gc_avg_pool2d
        fn(p, self.ptr(x), self.ptr(y), nthreads)
        assert (y[-GUARD:] == SENTINEL).all()
        return y[:-GUARD].reshape(n, c, *out)

    def adaptive_avg(self, x, oh, ow, nthreads=1):
        n, c, h, w = x.shape
        y = self._guarded((n, c, oh, ow))
        self.lib.gc_adaptive_avg_pool2d(n, c, h, w, oh, ow, self.ptr(x), self.ptr(y), nthreads)
        assert (y[-GUARD:] == SENTINEL).all()
        return y[:-GUARD].reshape(n, c, oh, ow)


@pytest.fixture(scope="module")
def rt(tmp_path_factory) -> Runtime:
    return Runtime(*_build(tmp_path_factory.mktemp("gc_native"), NATIVE_FLAGS))


def _rand(rng, *shape) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _close(got, ref, rtol=1e-4):
    """Float32 results against a float64 reference: relative to the magnitude of the reference."""
    ref = np.asarray(ref, np.float64)
    scale = max(1.0, float(np.abs(ref).max(initial=0.0)))
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * scale)


def _same_for_threads(f):
    """Run f(nthreads) for 1 and 2 threads; the results must agree to the bit."""
    one, two = f(1), f(2)
    np.testing.assert_array_equal(one, two)
    return one


# ---------------------------------------------------------------------------------- GEMM
GEMM_SHAPES = [
    (1, 1, 1), (1, 7, 3), (5, 1, 9), (3, 4, 5), (4, 70, 33), (2, 300, 40), (13, 17, 19), (37, 50, 29),
    (8, 32, 256), (70, 400, 300), (100, 3, 70), (129, 65, 257),
    (1, 203, 787),  # a batch-1 linear (8-column dot tiles, odd tails; threads split 203 off the tile grid)
]


@pytest.mark.parametrize("ta,tb", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("m,n,k", GEMM_SHAPES)
def test_sgemm_matches_numpy(rt, m, n, k, ta, tb):
    rng = np.random.default_rng(m * 10007 + n * 101 + k)
    a = _rand(rng, k, m) if ta else _rand(rng, m, k)
    b = _rand(rng, n, k) if tb else _rand(rng, k, n)
    c0, bias = _rand(rng, m, n), _rand(rng, n)
    opa, opb = (a.T if ta else a).astype(np.float64), (b.T if tb else b).astype(np.float64)
    for alpha, beta, use_bias in ((1.0, 0.0, False), (0.5, 1.0, True), (-2.0, 0.25, False), (1.0, 0.0, True)):
        def run(nthreads, alpha=alpha, beta=beta, use_bias=use_bias):
            c = c0.copy()
            rt.sgemm(ta, tb, m, n, k, alpha, a, a.shape[1], b, b.shape[1], beta, c, n,
                     bias if use_bias else None, nthreads)
            return c

        got = _same_for_threads(run)
        _close(got, alpha * opa @ opb + beta * c0 + (bias if use_bias else 0.0))


@pytest.mark.parametrize("m,n,k,ta,tb", [(1, 50, 20, 0, 1), (3, 40, 9, 0, 0), (50, 2, 30, 0, 1),
                                         (33, 47, 300, 1, 0), (100, 100, 100, 0, 0), (70, 400, 300, 1, 1)])
def test_sgemm_beta_zero_never_reads_c(rt, m, n, k, ta, tb):
    rng = np.random.default_rng(1)
    a = _rand(rng, k, m) if ta else _rand(rng, m, k)
    b = _rand(rng, n, k) if tb else _rand(rng, k, n)
    ref = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b)
    for nthreads in (1, 2):
        c = np.full((m, n), np.nan, np.float32)
        rt.sgemm(ta, tb, m, n, k, 1.0, a, a.shape[1], b, b.shape[1], 0.0, c, n, None, nthreads)
        assert np.isfinite(c).all()
        _close(c, ref)


@pytest.mark.parametrize("m,n,k,ta,tb", [(5, 7, 3, 0, 0), (2, 40, 30, 0, 1), (3, 50, 20, 1, 0),
                                         (40, 3, 25, 0, 1), (90, 70, 150, 1, 1), (90, 70, 150, 0, 0)])
def test_sgemm_leading_dimensions(rt, m, n, k, ta, tb):
    """Operands are sub-blocks of wider matrices; C's columns past n must stay untouched."""
    rng = np.random.default_rng(2)
    abig = _rand(rng, k + 2, m + 5) if ta else _rand(rng, m + 2, k + 5)
    bbig = _rand(rng, n + 2, k + 3) if tb else _rand(rng, k + 2, n + 3)
    a = abig[1:k + 1, 2:m + 2] if ta else abig[1:m + 1, 2:k + 2]
    b = bbig[1:n + 1, 2:k + 2] if tb else bbig[1:k + 1, 2:n + 2]
    cbig0 = _rand(rng, m + 1, n + 4)
    bias = _rand(rng, n)
    ref = 0.75 * (a.T if ta else a).astype(np.float64) @ (b.T if tb else b) - cbig0[1:, 1:n + 1] + bias

    def run(nthreads):
        cbig = cbig0.copy()
        c_view = cbig[1:, 1:]  # ldc = n + 4 > n
        rt.sgemm(ta, tb, m, n, k, 0.75, a, abig.shape[1], b, bbig.shape[1], -1.0, c_view, cbig.shape[1], bias,
                 nthreads)
        return cbig

    cbig = _same_for_threads(run)
    _close(cbig[1:, 1:n + 1], ref)
    np.testing.assert_array_equal(cbig[0], cbig0[0])
    np.testing.assert_array_equal(cbig[:, 0], cbig0[:, 0])
    np.testing.assert_array_equal(cbig[:, n + 1:], cbig0[:, n + 1:])


# products with B packed beforehand (gc_sgemm_pack_b: a compiled model's linear weights): small M / N (the
# unpacked dot and axpy paths), odd edges, several depth blocks, row blocks and column strips
PACKED_SHAPES = [(1, 7, 3), (3, 50, 20), (17, 33, 5), (37, 50, 29), (70, 400, 300), (129, 65, 257),
                 (20, 1100, 40), (600, 40, 130), (64, 96, 784)]


def _check_packed(rt, m, n, k, ta, tb, seed=5):
    """gc_sgemm_ep_packed against numpy and, bit for bit, against gc_sgemm_ep on the same operands (1 and
    2 threads); with and without bias and an epilogue."""
    rng = np.random.default_rng(seed + m * 7919 + n * 31 + k)
    a = _rand(rng, k, m) if ta else _rand(rng, m, k)
    b = _rand(rng, n, k) if tb else _rand(rng, k, n)
    bias, res = _rand(rng, n), _rand(rng, m, n + 3)  # the residual is laid out as C
    packed = rt.pack_b(tb, n, k, b, b.shape[1])
    ref = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b)
    for use_bias, scale in ((True, None), (False, None), (True, 0.5)):
        def run(nthreads, pk, use_bias=use_bias, scale=scale):
            c = np.full((m, n + 3), np.nan, np.float32)  # ldc > n: the columns past n stay NaN
            rt.sgemm_ep(ta, tb, m, n, k, a, a.shape[1], b, b.shape[1], c, n + 3, bias if use_bias else None,
                        scale, res if scale is not None else None, nthreads, pk)
            assert np.isnan(c[:, n:]).all()
            return c[:, :n]

        got = _same_for_threads(lambda nt: run(nt, packed))
        np.testing.assert_array_equal(got, run(1, None))
        want = ref + (bias if use_bias else 0.0)
        _close(got, want if scale is None else want * scale + res[:, :n])


@pytest.mark.parametrize("ta,tb", [(0, 1), (0, 0), (1, 1)])
@pytest.mark.parametrize("m,n,k", PACKED_SHAPES)
def test_sgemm_packed_b(rt, m, n, k, ta, tb):
    _check_packed(rt, m, n, k, ta, tb)


def test_sgemm_empty_depth(rt):
    """K == 0: C = beta * C + bias (and beta == 0 still overwrites NaN); M or N == 0 is a no-op."""
    rng = np.random.default_rng(3)
    c0, bias = _rand(rng, 6, 9), _rand(rng, 9)
    c = c0.copy()
    rt.sgemm(0, 0, 6, 9, 0, 1.0, None, 1, None, 9, 0.5, c, 9, bias, 2)
    _close(c, 0.5 * c0.astype(np.float64) + bias)
    c = np.full((6, 9), np.nan, np.float32)
    rt.sgemm(1, 1, 6, 9, 0, 1.0, None, 6, None, 1, 0.0, c, 9, None, 1)
    np.testing.assert_array_equal(c, 0.0)
    c = c0.copy()
    rt.sgemm(0, 0, 0, 9, 4, 1.0, None, 4, None, 9, 0.0, c, 9, bias, 1)
    rt.sgemm(0, 0, 6, 0, 4, 1.0, None, 4, None, 0, 0.0, c, 9, bias, 1)
    np.testing.assert_array_equal(c, c0)


@pytest.mark.parametrize("ta,tb", [(0, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("batch,m,n,k", [(3, 5, 7, 4), (4, 16, 20, 33), (2, 1, 30, 12), (5, 40, 40, 40)])
def test_sgemm_batched(rt, batch, m, n, k, ta, tb):
    rng = np.random.default_rng(4)
    a = _rand(rng, batch, *((k, m) if ta else (m, k)))
    b = _rand(rng, *((n, k) if tb else (k, n)))  # one B for every item (stride 0)
    bias = _rand(rng, n)
    opa = np.swapaxes(a, 1, 2) if ta else a
    ref = opa.astype(np.float64) @ (b.T if tb else b) + bias

    def run(nthreads):
        c = np.full((batch, m, n), np.nan, np.float32)  # the batched product overwrites C
        rt.lib.gc_sgemm_batched(ta, tb, batch, m, n, k, rt.ptr(a), a.shape[2], a.shape[1] * a.shape[2], rt.ptr(b),
                                b.shape[1], 0, rt.ptr(c), n, m * n, rt.ptr(bias), nthreads)
        return c

    _close(_same_for_threads(run), ref)


# ---------------------------------------------------------------------------------- convolution
def conv2d_ref(x, w, bias, stride, pad, dil, groups):
    """Direct float64 convolution: one einsum per kernel tap and group."""
    n, c, h, wd = x.shape
    oc, cg, kh, kw = w.shape
    ocg = oc // groups
    oh = (h + 2 * pad[0] - dil[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + 2 * pad[1] - dil[1] * (kw - 1) - 1) // stride[1] + 1
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    y = np.zeros((n, oc, oh, ow))
    for g in range(groups):
        for i in range(kh):
            for j in range(kw):
                r0, c0 = i * dil[0], j * dil[1]
                patch = xp[:, g * cg:(g + 1) * cg, r0:r0 + stride[0] * (oh - 1) + 1:stride[0],
                           c0:c0 + stride[1] * (ow - 1) + 1:stride[1]]
                y[:, g * ocg:(g + 1) * ocg] += np.einsum("nchw,oc->nohw", patch, w[g * ocg:(g + 1) * ocg, :, i, j])
    if bias is not None:
        y += bias[None, :, None, None]
    return y


def conv_transpose2d_ref(x, w, bias, stride, pad, out_pad, dil, groups):
    """Scatter form in float64: every input pixel adds w * x at i*dil + ih*stride - pad."""
    n, c, h, wd = x.shape
    cg, ocg, kh, kw = w.shape[0] // groups, w.shape[1], w.shape[2], w.shape[3]
    oc = ocg * groups
    oh = (h - 1) * stride[0] - 2 * pad[0] + dil[0] * (kh - 1) + out_pad[0] + 1
    ow = (wd - 1) * stride[1] - 2 * pad[1] + dil[1] * (kw - 1) + out_pad[1] + 1
    # output rows / columns before cropping the padding, with room for every tap
    full = np.zeros((n, oc, oh + 2 * pad[0] + stride[0] * h + dil[0] * kh,
                     ow + 2 * pad[1] + stride[1] * wd + dil[1] * kw))
    for g in range(groups):
        xg = x[:, g * cg:(g + 1) * cg].astype(np.float64)
        for i in range(kh):
            for j in range(kw):
                r0, c0 = i * dil[0], j * dil[1]
                contrib = np.einsum("nchw,co->nohw", xg, w[g * cg:(g + 1) * cg, :, i, j])
                full[:, g * ocg:(g + 1) * ocg, r0:r0 + stride[0] * (h - 1) + 1:stride[0],
                     c0:c0 + stride[1] * (wd - 1) + 1:stride[1]] += contrib
    y = full[:, :, pad[0]:pad[0] + oh, pad[1]:pad[1] + ow]
    if bias is not None:
        y = y + bias[None, :, None, None]
    return y


# n, c, h, w, oc, (kh, kw), stride, pad, dil, groups
# Paths (gc_conv.c): one input channel per group runs direct per-plane loops; a plain 1x1 (stride 1, no
# padding) a gemm on x; other kernels with several taps, and strided or padded 1x1s over at most 32
# channels, the spatial path (phase planes, register tiles of 8 output channels x 3 vectors of wide
# positions on AVX-512, 4 x 3 elsewhere; small images with 64k output channels: 6 positions x 64
# channels); the rest im2col + gemm.
CONV_CASES = [
    (2, 3, 9, 11, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (1, 4, 10, 7, 6, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    (2, 8, 5, 6, 5, (1, 1), (1, 1), (0, 0), (1, 1), 1),      # 1x1: gemm on x, no im2col
    (1, 8, 7, 7, 4, (1, 1), (2, 2), (0, 0), (1, 1), 1),      # strided 1x1: spatial, one phase plane
    (2, 6, 8, 8, 4, (3, 3), (1, 1), (1, 1), (1, 1), 2),      # groups
    (2, 5, 9, 9, 5, (3, 3), (1, 1), (1, 1), (1, 1), 5),      # depthwise
    (1, 4, 12, 10, 8, (5, 5), (2, 2), (2, 2), (1, 1), 4),    # depthwise, channel multiplier 2
    (1, 3, 12, 12, 4, (3, 3), (1, 1), (2, 2), (2, 2), 1),    # dilation
    (2, 4, 11, 13, 6, (2, 5), (2, 1), (1, 2), (2, 1), 2),    # everything asymmetric
    (2, 4, 1, 20, 6, (1, 3), (1, 2), (0, 1), (1, 1), 1),     # conv1d as H = 1
    (3, 1, 8, 8, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),      # single input channel: direct loops
    (1, 3, 4, 4, 2, (4, 4), (1, 1), (0, 0), (1, 1), 1),      # kernel covers the input
    (1, 3, 5, 5, 2, (3, 3), (3, 3), (2, 2), (2, 2), 1),      # outputs hitting only padding
    (1, 16, 20, 20, 32, (3, 3), (1, 1), (1, 1), (1, 1), 1),  # one image, two bands for 2 threads
    (4, 8, 16, 16, 8, (3, 3), (1, 1), (1, 1), (1, 1), 2),    # many items: one per thread
    (3, 6, 9, 9, 9, (3, 3), (2, 2), (1, 1), (1, 1), 3),      # odd item count
    (1, 64, 23, 25, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (2, 96, 31, 29, 6, (3, 3), (2, 1), (1, 1), (1, 1), 1),   # stride 2 rows only: two row phases
    (1, 16, 32, 32, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    # spatial path
    (1, 16, 32, 32, 16, (3, 3), (1, 1), (1, 1), (1, 1), 1),  # the ResNet example's 3x3 (wide rows of 34)
    (2, 16, 32, 32, 32, (3, 3), (2, 2), (1, 1), (1, 1), 1),  # stride 2: rows deinterleave into 2 column phases
    (1, 6, 13, 11, 5, (3, 3), (2, 2), (2, 2), (1, 1), 1),    # stride 2, even padding, odd sizes
    (1, 4, 9, 13, 6, (2, 2), (2, 2), (0, 0), (1, 1), 1),     # 2x2 / 2 on an odd width: last column unread
    (1, 6, 5, 34, 9, (2, 5), (3, 2), (2, 0), (2, 3), 3),     # stride 2, dilation 3: phases of 17 and 14 columns
    (1, 3, 20, 21, 8, (7, 7), (2, 2), (3, 3), (1, 1), 1),    # ResNet-50 stem shape: 7x7 / 2, pad 3
    (1, 5, 16, 15, 7, (3, 3), (2, 2), (1, 1), (2, 2), 1),    # stride 2 with dilation 2: one column phase
    (1, 16, 31, 33, 20, (1, 1), (2, 2), (0, 0), (1, 1), 1),  # strided 1x1, odd sizes, 20 = 2.5 channel blocks
    (2, 4, 13, 14, 9, (4, 4), (4, 4), (0, 0), (1, 1), 1),    # patchify: 16 phase planes of one tap each
    (2, 8, 9, 10, 6, (2, 3), (3, 2), (1, 0), (1, 2), 1),     # stride 3 rows, dilated columns
    (1, 64, 8, 8, 40, (3, 3), (1, 1), (1, 1), (1, 1), 1),    # 8-wide rows: a vector spans several rows
    (1, 32, 16, 16, 64, (1, 1), (2, 2), (0, 0), (1, 1), 1),  # the example's strided 1x1 shortcut
    (1, 5, 3, 2, 3, (3, 3), (1, 1), (1, 1), (1, 1), 1),      # tiny: one partial vector
    (2, 9, 7, 5, 12, (1, 1), (1, 1), (1, 1), (1, 1), 3),     # padded 1x1, groups: spatial
    (1, 64, 60, 58, 12, (3, 3), (1, 1), (1, 1), (1, 1), 1),  # several bands (planes past the L2 budget)
    (3, 40, 50, 50, 4, (3, 3), (2, 2), (1, 1), (1, 1), 1),   # bands, 3 images over 2 threads
    (5, 3, 17, 19, 10, (3, 3), (1, 1), (0, 0), (1, 1), 1),   # no padding, 5 images
    (1, 64, 4, 5, 36, (3, 3), (1, 1), (1, 1), (1, 1), 1),    # 24 wide positions: a vector + an 8-lane one;
                                                             # 4.5 channel blocks split over 2 threads
    (1, 24, 7, 7, 40, (3, 3), (1, 1), (1, 1), (1, 1), 1),    # ResNet's 7x7 layers: 48 + 8 wide positions
    (1, 12, 15, 13, 9, (3, 3), (2, 2), (1, 1), (1, 1), 1),   # stride 2 onto 8x7: 8-lane vector, 2 blocks
    (1, 3, 48, 40, 20, (16, 16), (16, 16), (0, 0), (1, 1), 1),  # ViT's patch embedding: 256 one-tap phase planes
    (2, 3, 29, 31, 12, (11, 11), (4, 4), (2, 2), (1, 1), 1),    # AlexNet's 11x11 / 4: 121 taps
    (1, 4, 14, 13, 10, (9, 9), (1, 1), (4, 4), (1, 1), 1),      # 9x9: 81 taps
    # depth blocks (AVX2 / generic: more than 16 input channels, bands of 16+ tiles): 16 + 16 + 8 channels,
    # 12 channel blocks (the last partial) in groups of 8; then groups whose 24 channels split 16 + 8
    (1, 40, 30, 28, 45, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (2, 48, 24, 24, 36, (3, 3), (1, 1), (1, 1), (1, 1), 2),
    # spatial path by channel vectors (AVX-512; small images, output channels in blocks of 64)
    (1, 64, 8, 8, 64, (3, 3), (1, 1), (1, 1), (1, 1), 1),    # the example's 8x8 layer
    (2, 32, 16, 16, 64, (3, 3), (2, 2), (1, 1), (1, 1), 1),  # stride 2 onto 8x8
    (1, 32, 9, 7, 128, (3, 3), (1, 1), (1, 1), (1, 1), 2),   # groups, 63 positions: a partial tile
    (1, 64, 10, 10, 128, (3, 3), (1, 1), (1, 1), (1, 1), 1), # two bands for 2 threads
    (3, 16, 6, 5, 64, (3, 3), (1, 1), (2, 1), (2, 1), 1),    # dilation, odd images over 2 threads
    # im2col + gemm
    (1, 300, 20, 20, 8, (1, 1), (2, 2), (0, 0), (1, 1), 1),  # deep strided 1x1
    (1, 520, 6, 6, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),    # more than 4608 channel-taps
    (2, 3, 12, 40, 4, (1, 17), (1, 1), (0, 8), (1, 1), 1),   # 17-wide kernel
    (1, 300, 24, 24, 32, (1, 1), (1, 1), (1, 1), (1, 1), 1), # one big item: threads inside gemm
    (4, 272, 6, 6, 8, (1, 1), (2, 2), (0, 0), (1, 1), 1),    # many items: one per thread
    (1, 300, 66, 60, 8, (1, 1), (2, 2), (0, 0), (1, 1), 1),  # two column chunks, split mid-row
    (2, 300, 62, 58, 6, (1, 1), (2, 1), (1, 1), (1, 1), 1),  # strided, chunked, one task per thread
    (1, 260, 48, 48, 8, (1, 1), (1, 1), (1, 1), (1, 1), 1),  # one image cut in tasks for 2 threads
]


def _conv_data(case, transpose=False):
    n, c, h, w, oc, k, _, _, _, groups = case
    rng = np.random.default_rng(sum(case[:5]) + groups)
    x = _rand(rng, n, c, h, w)
    wt = _rand(rng, c, oc // groups, *k) if transpose else _rand(rng, oc, c // groups, *k)
    return x, wt, _rand(rng, oc)


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_numpy(rt, case, use_bias):
    x, w, bias = _conv_data(case)
    bias = bias if use_bias else None
    stride, pad, dil, groups = case[6:]
    got = _same_for_threads(lambda nt: rt.conv2d(x, w, bias, stride, pad, dil, groups, nt))
    _close(got, conv2d_ref(x, w, bias, stride, pad, dil, groups))


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_torch(rt, case):
    torch = pytest.importorskip("torch")
    x, w, bias = _conv_data(case)
    stride, pad, dil, groups = case[6:]
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(bias), stride, pad,
                                     dil, groups)
    _close(rt.conv2d(x, w, bias, stride, pad, dil, groups, 2), ref.numpy())


# n, c, h, w, oc, (kh, kw), stride, pad, out_pad, dil, groups
CONV_T_CASES = [
    (2, 3, 5, 6, 4, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 1),
    (1, 4, 4, 4, 6, (4, 4), (2, 2), (1, 1), (0, 0), (1, 1), 2),
    (2, 6, 5, 5, 4, (1, 1), (1, 1), (0, 0), (0, 0), (1, 1), 1),   # 1x1: gemm straight into y
    (1, 4, 5, 5, 4, (3, 3), (1, 1), (1, 1), (0, 0), (1, 1), 4),   # depthwise
    (2, 4, 4, 5, 6, (3, 2), (2, 3), (1, 0), (1, 2), (2, 1), 2),   # everything asymmetric
    (1, 2, 3, 3, 3, (3, 3), (1, 1), (0, 0), (0, 0), (1, 1), 1),
    (2, 16, 8, 8, 8, (4, 4), (2, 2), (1, 1), (0, 0), (1, 1), 1),  # threads inside gemm and col2im
    (4, 4, 6, 6, 4, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 1),   # one item per thread
    (1, 3, 1, 9, 2, (1, 4), (1, 3), (0, 1), (0, 2), (1, 1), 1),   # conv_transpose1d as H = 1
]


def _conv_t_args(case):
    stride, pad, out_pad, dil, groups = case[6:]
    return stride, pad, out_pad, dil, groups


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("case", CONV_T_CASES)
def test_conv_transpose2d_matches_numpy(rt, case, use_bias):
    x, w, bias = _conv_data((*case[:6], None, None, None, case[-1]), transpose=True)
    bias = bias if use_bias else None
    stride, pad, out_pad, dil, groups = _conv_t_args(case)
    got = _same_for_threads(lambda nt: rt.conv2d(x, w, bias, stride, pad, dil, groups, nt, transpose=True,
                                                 out_pad=out_pad))
    _close(got, conv_transpose2d_ref(x, w, bias, stride, pad, out_pad, dil, groups))


@pytest.mark.parametrize("case", CONV_T_CASES)
def test_conv_transpose2d_matches_torch(rt, case):
    torch = pytest.importorskip("torch")
    x, w, bias = _conv_data((*case[:6], None, None, None, case[-1]), transpose=True)
    stride, pad, out_pad, dil, groups = _conv_t_args(case)
    ref = torch.nn.functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(bias),
                                               stride, pad, out_pad, groups, dil)
    _close(rt.conv2d(x, w, bias, stride, pad, dil, groups, 2, transpose=True, out_pad=out_pad), ref.numpy())


# ---------------------------------------------------------------------------------- pooling
def pool_out_size(size, k, s, p, d, ceil_mode):
    """PyTorch's pooling output size (a window may not start in the right padding under ceil_mode)."""
    span = size + 2 * p - d * (k - 1) - 1
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def max_pool_ref(x, kernel, stride, pad, dil, ceil_mode):
    n, c, h, w = x.shape
    oh, ow = (pool_out_size(s, k, st, p, d, ceil_mode) for s, k, st, p, d in zip((h, w), kernel, stride, pad, dil))
    y = np.full((n, c, oh, ow), -np.inf, np.float32)
    for i in range(oh):
        rows = [r for r in range(i * stride[0] - pad[0], i * stride[0] - pad[0] + dil[0] * kernel[0], dil[0])
                if 0 <= r < h]
        for j in range(ow):
            cols = [q for q in range(j * stride[1] - pad[1], j * stride[1] - pad[1] + dil[1] * kernel[1], dil[1])
                    if 0 <= q < w]
            for r in rows:
                for q in cols:
                    y[:, :, i, j] = np.maximum(y[:, :, i, j], x[:, :, r, q])  # NaN propagates
    return y


def avg_pool_ref(x, kernel, stride, pad, ceil_mode, count_include_pad, divisor_override):
    """PyTorch's avg_pool2d: the padded window is clipped to size + pad, the summed one to the input."""
    n, c, h, w = x.shape
    oh, ow = (pool_out_size(s, k, st, p, 1, ceil_mode) for s, k, st, p in zip((h, w), kernel, stride, pad))
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        h0 = i * stride[0] - pad[0]
        h1 = min(h0 + kernel[0], h + pad[0])
        for j in range(ow):
            w0 = j * stride[1] - pad[1]
            w1 = min(w0 + kernel[1], w + pad[1])
            win = x[:, :, max(h0, 0):min(h1, h), max(w0, 0):min(w1, w)].astype(np.float64)
            if divisor_override:
                div = divisor_override
            elif count_include_pad:
                div = (h1 - h0) * (w1 - w0)
            else:
                div = win.shape[2] * win.shape[3]
            y[:, :, i, j] = win.sum(axis=(2, 3)) / div
    return y


def adaptive_avg_ref(x, oh, ow):
    n, c, h, w = x.shape
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            h0, h1 = i * h // oh, -(-(i + 1) * h // oh)
            w0, w1 = j * w // ow, -(-(j + 1) * w // ow)
            y[:, :, i, j] = x[:, :, h0:h1, w0:w1].astype(np.float64).mean(axis=(2, 3))
    return y


# n, c, h, w, kernel, stride, pad, dilation, ceil_mode
MAX_POOL_CASES = [
    (2, 3, 8, 9, (2, 2), (2, 2), (0, 0), (1, 1), False),
    (1, 2, 9, 9, (3, 3), (2, 2), (1, 1), (1, 1), True),
    (1, 3, 10, 7, (3, 2), (2, 1), (1, 1), (2, 1), False),
    (2, 2, 7, 7, (3, 3), (3, 3), (1, 1), (1, 1), True),
    (1, 1, 5, 5, (5, 5), (1, 1), (2, 2), (1, 1), False),
    (1, 2, 6, 11, (2, 3), (2, 2), (0, 1), (1, 2), True),
    (2, 64, 16, 16, (3, 3), (2, 2), (1, 1), (1, 1), False),   # big enough to use threads
    # 2 x 2 / 2 without padding (its own vector kernel): LeNet's two, whole vectors and a masked tail, an odd
    # size that drops the last row and column, ceil_mode reading past the input (the general kernel), threads
    (1, 6, 28, 28, (2, 2), (2, 2), (0, 0), (1, 1), False),
    (1, 16, 10, 10, (2, 2), (2, 2), (0, 0), (1, 1), False),
    (2, 3, 9, 71, (2, 2), (2, 2), (0, 0), (1, 1), False),
    (1, 2, 7, 7, (2, 2), (2, 2), (0, 0), (1, 1), True),
    (2, 32, 32, 40, (2, 2), (2, 2), (0, 0), (1, 1), False),
    # stride_w 1 or 2 without column dilation (the separable kernel: rows maxed into a padded row buffer,
    # then the columns): ResNet's stem pool, an SPP 5 x 5 / 1, ceil_mode, even kh with stride_h 3, a
    # one-row window, rows dilated; and a row too long for the buffer (the general kernel)
    (1, 4, 112, 112, (3, 3), (2, 2), (1, 1), (1, 1), False),
    (2, 3, 37, 45, (5, 5), (1, 1), (2, 2), (1, 1), False),
    (1, 2, 30, 30, (3, 3), (2, 2), (1, 1), (1, 1), True),
    (1, 2, 20, 53, (4, 3), (3, 2), (1, 1), (1, 1), True),
    (1, 2, 9, 19, (1, 3), (1, 2), (0, 1), (1, 1), False),
    (1, 2, 17, 40, (3, 3), (1, 2), (1, 1), (3, 1), False),
    (1, 1, 3, 5000, (3, 3), (1, 1), (1, 1), (1, 1), False),
]


@pytest.mark.parametrize("case", MAX_POOL_CASES)
def test_max_pool2d_matches_numpy(rt, case):
    n, c, h, w, k, s, p, d, ceil_mode = case
    x = _rand(np.random.default_rng(5), n, c, h, w)
    x.flat[::29] = np.nan  # a NaN in the window wins, like in PyTorch
    got = _same_for_threads(lambda nt: rt.pool("max", x, k, s, p, d, ceil_mode, nthreads=nt))
    np.testing.assert_array_equal(got, max_pool_ref(x, k, s, p, d, ceil_mode))


@pytest.mark.parametrize("case", MAX_POOL_CASES)
def test_max_pool2d_matches_torch(rt, case):
    torch = pytest.importorskip("torch")
    n, c, h, w, k, s, p, d, ceil_mode = case
    x = _rand(np.random.default_rng(6), n, c, h, w)
    ref = torch.nn.functional.max_pool2d(torch.from_numpy(x), k, s, p, d, ceil_mode=ceil_mode)
    np.testing.assert_array_equal(rt.pool("max", x, k, s, p, d, ceil_mode, nthreads=2), ref.numpy())


# n, c, h, w, kernel, stride, pad, ceil_mode, count_include_pad, divisor_override
AVG_POOL_CASES = [
    (2, 3, 8, 9, (2, 2), (2, 2), (0, 0), False, True, 0),
    (1, 2, 6, 6, (3, 3), (2, 2), (1, 1), True, True, 0),     # last window clipped to h + pad
    (1, 2, 6, 6, (3, 3), (2, 2), (1, 1), True, False, 0),
    (1, 2, 5, 5, (2, 2), (2, 2), (0, 0), True, True, 0),     # ceil window past the input, no padding
    (2, 3, 7, 10, (3, 2), (2, 3), (1, 1), False, False, 0),
    (1, 2, 7, 7, (3, 3), (2, 2), (1, 1), True, True, 5),     # divisor_override
    (1, 1, 4, 9, (4, 5), (1, 2), (2, 2), True, False, 0),
    (2, 64, 16, 16, (3, 3), (1, 1), (1, 1), False, True, 0),  # big enough to use threads
]


@pytest.mark.parametrize("case", AVG_POOL_CASES)
def test_avg_pool2d_matches_numpy(rt, case):
    n, c, h, w, k, s, p, ceil_mode, cip, div = case
    x = _rand(np.random.default_rng(7), n, c, h, w)
    got = _same_for_threads(lambda nt: rt.pool("avg", x, k, s, p, (1, 1), ceil_mode, cip, div, nthreads=nt))
    _close(got, avg_pool_ref(x, k, s, p, ceil_mode, cip, div), rtol=1e-5)


@pytest.mark.parametrize("case", AVG_POOL_CASES)
def test_avg_pool2d_matches_torch(rt, case):
    torch = pytest.importorskip("torch")
    n, c, h, w, k, s, p, ceil_mode, cip, div = case
    x = _rand(np.random.default_rng(8), n, c, h, w)
    ref = torch.nn.functional.avg_pool2d(torch.from_numpy(x), k, s, p, ceil_mode, cip, div or None)
    _close(rt.pool("avg", x, k, s, p, (1, 1), ceil_mode, cip, div, nthreads=2), ref.numpy(), rtol=1e-5)


ADAPTIVE_CASES = [(2, 3, 7, 7, 1, 1), (1, 2, 10, 9, 3, 4), (1, 1, 5, 5, 7, 6), (1, 2, 33, 33, 7, 7),
                  (1, 2, 40, 50, 1, 1), (2, 32, 20, 20, 2, 3)]


@pytest.mark.parametrize("case", ADAPTIVE_CASES)
def test_adaptive_avg_pool2d(rt, case):
    n, c, h, w, oh, ow = case
    x = _rand(np.random.default_rng(9), n, c, h, w)
    got = _same_for_threads(lambda nt: rt.adaptive_avg(x, oh, ow, nt))
    _close(got, adaptive_avg_ref(x, oh, ow), rtol=1e-5)
    torch = pytest.importorskip("torch")
    ref = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x), (oh, ow))
    _close(got, ref.numpy(), rtol=1e-5)


# ---------------------------------------------------------------------------------- other builds
def _cpu_has(*features: str) -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return all(f in flags for f in features)


@pytest.mark.parametrize("flags", [PORTABLE_FLAGS, AVX2_FLAGS], ids=["portable", "avx2"])
def test_other_builds_agree(rt, tmp_path, flags):
    """Other vector widths / micro-kernels (and no OpenMP at all) give the same results."""
    if flags is AVX2_FLAGS and not _cpu_has("avx2", "fma"):
        pytest.skip("the CPU has no AVX2 / FMA")
    port = Runtime(*_build(tmp_path, flags))
    rng = np.random.default_rng(10)
    for m, n, k in ((1, 40, 30), (1, 203, 787), (3, 50, 17), (37, 50, 29), (70, 400, 300)):
        for ta, tb in ((0, 0), (0, 1), (1, 0), (1, 1)):
            a = _rand(rng, k, m) if ta else _rand(rng, m, k)
            b = _rand(rng, n, k) if tb else _rand(rng, k, n)
            bias = _rand(rng, n)
            c = np.full((m, n), np.nan, np.float32)
            port.sgemm(ta, tb, m, n, k, 1.0, a, a.shape[1], b, b.shape[1], 0.0, c, n, bias, 2)
            _close(c, (a.T if ta else a).astype(np.float64) @ (b.T if tb else b) + bias)
    for m, n, k in PACKED_SHAPES[2:]:  # this build's panels (NR = 16 on AVX2, 8 with SSE vectors)
        _check_packed(port, m, n, k, 0, 1)
    for case in (CONV_CASES[0], CONV_CASES[6], CONV_CASES[8], CONV_CASES[14], CONV_CASES[20], CONV_CASES[27],
                 CONV_CASES[36]):
        x, w, bias = _conv_data(case)
        stride, pad, dil, groups = case[6:]
        _close(port.conv2d(x, w, bias, stride, pad, dil, groups, 2), rt.conv2d(x, w, bias, stride, pad, dil, groups))
    case = CONV_T_CASES[4]
    x, w, bias = _conv_data((*case[:6], None, None, None, case[-1]), transpose=True)
    stride, pad, out_pad, dil, groups = _conv_t_args(case)
    _close(port.conv2d(x, w, bias, stride, pad, dil, groups, 2, transpose=True, out_pad=out_pad),
           conv_transpose2d_ref(x, w, bias, stride, pad, out_pad, dil, groups))
    x = _rand(rng, 2, 3, 9, 71)  # the 2 x 2 / 2 vector kernel: whole vectors and a scalar tail
    x.flat[::29] = np.nan
    np.testing.assert_array_equal(port.pool("max", x, (2, 2), (2, 2), (0, 0), nthreads=2),
                                  max_pool_ref(x, (2, 2), (2, 2), (0, 0), (1, 1), False))
    x = _rand(rng, 2, 3, 9, 9)
    np.testing.assert_array_equal(port.pool("max", x, (3, 3), (2, 2), (1, 1), ceil_mode=True),
                                  rt.pool("max", x, (3, 3), (2, 2), (1, 1), ceil_mode=True))
    _close(port.pool("avg", x, (3, 3), (2, 2), (1, 1), ceil_mode=True, count_include_pad=False),
           avg_pool_ref(x, (3, 3), (2, 2), (1, 1), True, False, 0), rtol=1e-5)
    _close(port.adaptive_avg(x, 4, 3), adaptive_avg_ref(x, 4, 3), rtol=1e-5)


# ---------------------------------------------------------------------------------- random convolutions
# A C driver runs gc_conv2d on random shapes (every path: strides 1-4, dilations 1-3, padding 0-4, groups,
# kernels up to 9x9, up to 300 channels) against a float64 loop in the driver itself, for 1 and 2 threads
# (bit-identical), with x, w, bias, y and the work buffer malloc'd at their exact sizes: built with
# ASan/UBSan any read or write past a buffer (a plane or tile edge computed wrong) stops it.
CONV_DRIVER = r"""
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "graphc_rt.h"

static unsigned long long state;
static unsigned next(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return (unsigned)(state >> 11);
}
static int64_t pick(int64_t lo, int64_t hi) { return lo + (int64_t)(next() % (unsigned)(hi - lo + 1)); }
static float *fill(size_t n) {
    float *a = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) a[i] = (float)((int)(next() % 2001) - 1000) / 1000.0f;
    return a;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    const int iters = atoi(argv[1]);
    state = strtoull(argv[2], NULL, 10) * 2654435761ull + 88172645463325252ull;
    int bad = 0;
    for (int it = 0; it < iters && bad < 5; it++) {
        gc_conv2d_params p;
        memset(&p, 0, sizeof p); /* no epilogue, pool or input scale */
        int64_t cg = pick(1, 20), ocg = pick(1, 19);
        p.groups = pick(1, 3);
        p.kh = pick(1, 5); p.kw = pick(1, 5);
        p.stride_h = pick(1, 4); p.stride_w = pick(1, 4);
        p.dil_h = pick(1, 3); p.dil_w = pick(1, 3);
        p.pad_h = pick(0, 4); p.pad_w = pick(0, 4);
        p.h = pick(1, 40); p.w = pick(1, 40);
        p.n = 0;
        switch (next() % 8) {
        case 0: cg = pick(20, 70); break;                                          /* deeper */
        case 1: p.kh = p.kw = 3; p.stride_h = p.stride_w = pick(1, 2);            /* ResNet-style */
                p.pad_h = p.pad_w = 1; p.dil_h = p.dil_w = 1; break;
        case 2: cg = pick(250, 300); p.kh = p.kw = 1; p.h = pick(1, 9); p.w = pick(1, 9); ocg = pick(1, 9); break;
        case 3: p.kh = pick(6, 9); p.kw = pick(6, 9); p.dil_h = p.dil_w = 1; break;
        case 5: ocg = 64 * pick(1, 2); cg = pick(14, 24); p.h = pick(3, 10); p.w = pick(3, 10); /* channel */
                p.kh = p.kw = 3; p.groups = pick(1, 2); p.n = 1; break;               /* vectors */
        case 4: cg = pick(1, 4); p.h = pick(1, 4); p.w = pick(20, 80);                /* long rows, */
                p.stride_w = 2; p.dil_w = pick(2, 3); p.kw = pick(3, 5); break;       /* uneven phases */
        default: break;
        }
        if (p.n == 0) p.n = pick(1, 3);
        p.c = cg * p.groups; p.oc = ocg * p.groups;
        const int64_t eh = p.h + 2 * p.pad_h - p.dil_h * (p.kh - 1) - 1;
        const int64_t ew = p.w + 2 * p.pad_w - p.dil_w * (p.kw - 1) - 1;
        if (eh < 0 || ew < 0) { it--; continue; }
        p.oh = eh / p.stride_h + 1; p.ow = ew / p.stride_w + 1;
        if (p.n * p.oc * p.oh * p.ow * cg * p.kh * p.kw > 1500000) { it--; continue; } /* keep the loop quick */
        const size_t nx = (size_t)(p.n * p.c * p.h * p.w), nw = (size_t)(p.oc * cg * p.kh * p.kw);
        const size_t ny = (size_t)(p.n * p.oc * p.oh * p.ow);
        float *x = fill(nx), *w = fill(nw), *b = fill((size_t)p.oc), *y[2];
        const float *bias = next() % 2 ? b : NULL;
        for (int t = 0; t < 2; t++) {
            float *work = fill(gc_conv2d_work_floats(&p, t + 1));
            y[t] = fill(ny);
            gc_conv2d(&p, x, w, bias, y[t], work, t + 1);
            free(work);
        }
        double err = 0.0, scale = 1.0;
        for (int64_t n = 0; n < p.n; n++)
            for (int64_t o = 0; o < p.oc; o++)
                for (int64_t oh = 0; oh < p.oh; oh++)
                    for (int64_t ow = 0; ow < p.ow; ow++) {
                        const int64_t g = o / ocg;
                        double s = bias ? bias[o] : 0.0;
                        for (int64_t c = 0; c < cg; c++)
                            for (int64_t i = 0; i < p.kh; i++)
                                for (int64_t j = 0; j < p.kw; j++) {
                                    const int64_t ih = oh * p.stride_h - p.pad_h + i * p.dil_h;
                                    const int64_t iw = ow * p.stride_w - p.pad_w + j * p.dil_w;
                                    if (ih < 0 || ih >= p.h || iw < 0 || iw >= p.w) continue;
                                    s += (double)x[((n * p.c + g * cg + c) * p.h + ih) * p.w + iw] *
                                         w[((o * cg + c) * p.kh + i) * p.kw + j];
                                }
                        const double d = fabs(s - y[0][((n * p.oc + o) * p.oh + oh) * p.ow + ow]);
                        err = d > err ? d : err;
                        scale = fabs(s) > scale ? fabs(s) : scale;
                    }
        const int same = memcmp(y[0], y[1], ny * sizeof(float)) == 0;
        if (err > 1e-4 * scale || !same) {
            bad++;
            printf("MISMATCH n=%d c=%d h=%d w=%d oc=%d k=%dx%d s=%d,%d p=%d,%d d=%d,%d g=%d bias=%d err=%g "
                   "threads_agree=%d\n", (int)p.n, (int)p.c, (int)p.h, (int)p.w, (int)p.oc, (int)p.kh, (int)p.kw,
                   (int)p.stride_h, (int)p.stride_w, (int)p.pad_h, (int)p.pad_w, (int)p.dil_h, (int)p.dil_w,
                   (int)p.groups, bias != NULL, err, same);
        }
        free(x); free(w); free(b); free(y[0]); free(y[1]);
    }
    printf("%d convolutions, %d mismatches\n", iters, bad);
    return bad != 0;
}
"""
SANITIZE = ("-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer")


def _sanitizers_work(tmp_path: Path) -> bool:
    """gcc can build and run an ASan/UBSan program here (the runtime libraries are installed)."""
    src, exe = tmp_path / "probe.c", tmp_path / "probe"
    src.write_text("int main(void) { return 0; }\n")
    r = subprocess.run(["gcc", *SANITIZE, str(src), "-o", str(exe)], capture_output=True)
    return r.returncode == 0 and subprocess.run([str(exe)]).returncode == 0


@pytest.mark.parametrize("flags", [(*NATIVE_FLAGS, *SANITIZE), (*PORTABLE_FLAGS, *SANITIZE), NATIVE_FLAGS],
                         ids=["native-sanitized", "portable-sanitized", "native"])
def test_conv2d_random_shapes(tmp_path, flags):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    if "-fsanitize=address,undefined" in flags and not _sanitizers_work(tmp_path):
        pytest.skip("gcc cannot build ASan/UBSan programs here")
    driver, exe = tmp_path / "driver.c", tmp_path / "driver"
    driver.write_text(CONV_DRIVER)
    cmd = ["gcc", *flags, "-Wall", "-Wextra", "-DGC_INTERNAL=", f"-I{RUNTIME}", "-o", str(exe), str(driver),
           str(RUNTIME / "gc_conv.c"), str(RUNTIME / "gc_gemm.c"), str(RUNTIME / "gc_threadpool.c"), "-pthread",
           "-lm"]
    res = run_gcc(cmd)
    assert res.returncode == 0 and "warning" not in res.stderr, res.stderr
    res = subprocess.run([str(exe), "1000", str(len(flags))], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "1000 convolutions, 0 mismatches" in res.stdout


# ---------------------------------------------------------------------------------- the thread pool
@pytest.fixture
def pooled(rt):
    """rt with a context's thread pool bound to this thread (as run_v binds it): gc_parallel_for runs on
    the pool's workers instead of OpenMP."""
    pool = rt.lib.gc_pool_new()
    assert pool != rt.ffi.NULL
    rt.lib.gc_pool_enter(pool)
    yield rt
    rt.lib.gc_pool_enter(rt.ffi.NULL)
    rt.lib.gc_pool_free(pool)


def test_pool_runs_gemm_and_conv_like_openmp(pooled, rt):
    """On the pool, every product and convolution equals the OpenMP / single-thread result bit for bit
    (tasks own fixed pieces of the output) and matches numpy; repeated jobs reuse the sleeping workers."""
    rng = np.random.default_rng(11)
    for m, n, k in [(70, 400, 300), (129, 65, 257), (2, 300, 40), (8, 32, 256), (300, 300, 300)]:
        for ta, tb in [(0, 0), (0, 1), (1, 0)]:
            a = _rand(rng, k, m) if ta else _rand(rng, m, k)
            b = _rand(rng, n, k) if tb else _rand(rng, k, n)
            bias = _rand(rng, n)
            outs = []
            for nt in (1, 2, 2):
                c = np.empty((m, n), np.float32)
                pooled.sgemm(ta, tb, m, n, k, 1.0, a, a.shape[1], b, b.shape[1], 0.0, c, n, bias, nt)
                outs.append(c)
            np.testing.assert_array_equal(outs[0], outs[1])
            np.testing.assert_array_equal(outs[1], outs[2])
            _close(outs[0], (a.T if ta else a).astype(np.float64) @ (b.T if tb else b) + bias)
    a = _rand(rng, 6, 20, 30)
    b = _rand(rng, 30, 24)
    c = [np.empty((6, 20, 24), np.float32) for _ in range(2)]
    for nt, ci in zip((1, 2), c):
        pooled.lib.gc_sgemm_batched(0, 0, 6, 20, 24, 30, pooled.ptr(a), 30, 600, pooled.ptr(b), 24, 0,
                                    pooled.ptr(ci), 24, 480, pooled.ffi.NULL, nt)
    np.testing.assert_array_equal(c[0], c[1])
    _close(c[0], a.astype(np.float64) @ b)
    for case in CONV_CASES:
        x, w, bias = _conv_data(case)
        stride, pad, dil, groups = case[6:]
        one = pooled.conv2d(x, w, bias, stride, pad, dil, groups, 1)
        two = pooled.conv2d(x, w, bias, stride, pad, dil, groups, 2)
        np.testing.assert_array_equal(one, two)
        _close(two, conv2d_ref(x, w, bias, stride, pad, dil, groups))

