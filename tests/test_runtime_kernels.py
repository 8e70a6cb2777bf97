"""Tests of the hand-written C runtime: normalisation, softmax/reductions, attention, embedding, status
strings and the safetensors reader.

The runtime files are compiled into a shared library (once with -fopenmp, once without) and called
through cffi in ABI mode; the declarations come straight from runtime_c/graphc_rt.h. Kernels are checked
against float64 numpy references and, when torch is importable, against torch.nn.functional. The
safetensors reader is checked on files written by the `safetensors` package and by hand, then on
truncated, bit-flipped, hand-corrupted and randomly mutated files: it must return GC_ERR_FORMAT with a
meaningful message and never crash.

The sanitizer test builds a small C driver with -fsanitize=address,undefined (plus leak checking) and
runs it over the whole corrupted-file corpus, with every blob held in a malloc'd buffer of its exact
size so any read past the end is caught. It runs wherever gcc can build sanitized programs;
GRAPHC_SANITIZE=0 turns it off.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.shared_build import run_gcc

cffi = pytest.importorskip("cffi")

ROOT = Path(__file__).resolve().parents[1]
RT = ROOT / "runtime_c"
SOURCES = ["gc_status.c", "gc_norm.c", "gc_reduce.c", "gc_attention.c", "gc_index.c", "gc_safetensors.c",
           "gc_threadpool.c"]
CFLAGS = ["-O2", "-fPIC", "-shared", "-DGC_INTERNAL=", "-Wall", "-Wextra"]

GC_OK, GC_ERR_INVALID_ARGUMENT, GC_ERR_IO, GC_ERR_FORMAT, GC_ERR_MISMATCH = 0, -1, -2, -3, -4
GC_ERR_INDEX = -6
ST_DTYPES = {"F32": 0, "F64": 1, "F16": 2, "BF16": 3, "I8": 4, "I16": 5, "I32": 6, "I64": 7, "U8": 8, "BOOL": 9}
ITEMSIZE = {0: 4, 1: 8, 2: 2, 3: 2, 4: 1, 5: 2, 6: 4, 7: 8, 8: 1, 9: 1}
NP_DTYPE = {
    np.float32: "F32",
    np.float64: "F64",
    np.float16: "F16",
    np.int8: "I8",
    np.int16: "I16",
    np.int32: "I32",
    np.int64: "I64",
    np.uint8: "U8",
    np.bool_: "BOOL",
}


# ---------------------------------------------------------------------------------------------- build


def header_cdef() -> str:
    """graphc_rt.h without preprocessor lines, C++ guards and the GC_INTERNAL marker."""
    out, skipping, depth = [], False, 0
    for line in (RT / "graphc_rt.h").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            directive = stripped[1:].strip()
            if skipping:
                if directive.startswith("if"):
                    depth += 1
                elif directive.startswith("endif"):
                    depth -= 1
                    skipping = depth > 0
            elif directive.startswith("ifdef __cplusplus"):
                skipping, depth = True, 1
            continue
        if not skipping:
            out.append(line.replace("GC_INTERNAL ", ""))
    return "\n".join(out)


FFI = cffi.FFI()
FFI.cdef(header_cdef())


def compile_library(out: Path, extra: list[str]) -> Path:
    cmd = ["gcc", *CFLAGS, *extra, "-o", str(out), *(str(RT / s) for s in SOURCES), "-lm", "-pthread"]
    res = run_gcc(cmd)
    assert res.returncode == 0, res.stderr
    assert "warning" not in res.stderr, res.stderr
    return out


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    return tmp_path_factory.mktemp("graphc_rt")


@pytest.fixture(scope="module")
def omp_lib(build_dir):
    return FFI.dlopen(str(compile_library(build_dir / "libgc_omp.so", ["-fopenmp"])))


@pytest.fixture(scope="module")
def serial_lib(build_dir):
    return FFI.dlopen(str(compile_library(build_dir / "libgc_serial.so", [])))


@pytest.fixture(scope="module", params=["openmp", "serial"])
def lib(request):
    """The kernels built with and without OpenMP: both must give the same answers."""
    return request.getfixturevalue("omp_lib" if request.param == "openmp" else "serial_lib")


def fp(a: np.ndarray):
    assert a.flags.c_contiguous
    return FFI.cast("float *", FFI.from_buffer(a))


def i64p(a: np.ndarray):
    assert a.flags.c_contiguous and a.dtype == np.int64
    return FFI.cast("int64_t *", FFI.from_buffer(a))


def opt(a):
    return FFI.NULL if a is None else fp(a)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def run_threads(fn):
    """fn(nthreads) -> array; the result must not depend on the thread count."""
    results = [fn(nt) for nt in (1, 2, 3)]
    for r in results[1:]:
        assert same_bits(results[0], r)
    return results[0]


def randn(rng, *shape, scale=1.0, offset=0.0):
    return (rng.standard_normal(shape) * scale + offset).astype(np.float32)


# ---------------------------------------------------------------------------------------------- sources


def test_kernel_files_share_the_pragma_macros():
    """Every runtime file with a parallel loop takes GC_PRAGMA / GC_PARALLEL_FOR from gc_simd.h (gc_omp.h);
    none keeps its own copy (a copy drifts: one file's serial build would warn, another's would not)."""
    users = []
    for path in sorted(RT.glob("*.c")):
        text = path.read_text()
        assert not re.search(r"#\s*define\s+GC_(PRAGMA|PARALLEL_FOR|THREAD_ID)\b", text), path.name
        if re.search(r"GC_(PRAGMA|PARALLEL_FOR)\(", text):
            assert '#include "gc_simd.h"' in text, path.name
            users.append(path.name)
    assert {"gc_gemm.c", "gc_conv.c", "gc_norm.c", "gc_reduce.c"} <= set(users)
    # nor does a header or a template of the generated code: gc_omp.h is the one definition, which the
    # generated NAME_internal.h includes
    others = [p for p in sorted(RT.glob("*.h")) if p.name != "gc_omp.h"]
    others += sorted((RT.parent / "templates").rglob("*.j2"))
    for path in others:
        assert not re.search(r"#\s*define\s+\w*(PRAGMA|PARALLEL_FOR)\b", path.read_text()), path.name


# ---------------------------------------------------------------------------------------------- status


def test_status_strings(lib):
    texts = [FFI.string(lib.gc_status_string(code)).decode() for code in range(0, -9, -1)]
    assert all(texts) and len(set(texts)) == len(texts)
    assert "unknown error" not in texts
    for code in (1, -9, 12345, -(2**31)):
        assert FFI.string(lib.gc_status_string(code)).decode() == "unknown error"


# ---------------------------------------------------------------------------------------------- norms


def ref_layer_norm(x, w, b, eps):
    x = x.astype(np.float64)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    if w is not None:
        y = y * w
    if b is not None:
        y = y + b
    return y


NORM_ROWS = [(1, 1), (1, 7), (3, 1), (4, 33), (17, 256), (2, 1000), (64, 1024)]


@pytest.mark.parametrize("outer,n", NORM_ROWS)
@pytest.mark.parametrize("affine", ["none", "weight", "both"])
def test_layer_norm(lib, outer, n, affine):
    rng = np.random.default_rng(outer * 1000 + n)
    x = randn(rng, outer, n, scale=3.0, offset=0.5)
    w = randn(rng, n) if affine != "none" else None
    b = randn(rng, n) if affine == "both" else None

    def run(nt):
        y = np.empty_like(x)
        lib.gc_layer_norm(outer, n, fp(x), opt(w), opt(b), 1e-5, fp(y), nt)
        return y

    y = run_threads(run)
    np.testing.assert_allclose(y, ref_layer_norm(x, w, b, 1e-5), rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("offset,scale,n", [(1000.0, 1e-2, 512), (1e4, 1.0, 4096), (0.0, 1.0, 100_000)])
def test_norm_statistics_are_accurate(lib, offset, scale, n):
    """Data on a large common offset (a one-pass E[x^2]-E[x]^2 would lose everything) and long rows."""
    rng = np.random.default_rng(n)
    x = randn(rng, 4, n, scale=scale, offset=offset)
    y = np.empty_like(x)
    lib.gc_layer_norm(4, n, fp(x), FFI.NULL, FFI.NULL, 1e-12, fp(y), 2)
    np.testing.assert_allclose(y, ref_layer_norm(x, None, None, 1e-12), rtol=0, atol=3e-6)
    lib.gc_group_norm(2, 2, n, 1, fp(x), FFI.NULL, FFI.NULL, 1e-12, fp(y), 2)  # x seen as [2, 2, n]
    ref = ref_group_norm(x.reshape(2, 2, n), 1, None, None, 1e-12).reshape(4, n)
    np.testing.assert_allclose(y, ref, rtol=0, atol=3e-6)


def test_layer_norm_constant_row(lib):
    x = np.full((2, 9), 7.25, np.float32)
    y = np.empty_like(x)
    lib.gc_layer_norm(2, 9, fp(x), FFI.NULL, FFI.NULL, 1e-5, fp(y), 1)
    assert np.all(y == 0.0)


@pytest.mark.parametrize("outer,n", NORM_ROWS)
@pytest.mark.parametrize("with_weight", [False, True])
def test_rms_norm(lib, outer, n, with_weight):
    rng = np.random.default_rng(n)
    x = randn(rng, outer, n, scale=2.0)
    w = randn(rng, n) if with_weight else None

    def run(nt):
        y = np.empty_like(x)
        lib.gc_rms_norm(outer, n, fp(x), opt(w), 1e-6, fp(y), nt)
        return y

    y = run_threads(run)
    x64 = x.astype(np.float64)
    ref = x64 / np.sqrt((x64**2).mean(-1, keepdims=True) + 1e-6) * (1.0 if w is None else w)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


BN_SHAPES = [(1, 1, 1), (2, 3, 5), (4, 16, 49), (8, 64, 64), (3, 5, 1)]


@pytest.mark.parametrize("n,c,inner", BN_SHAPES)
@pytest.mark.parametrize("affine", [False, True])
def test_batch_norm(lib, n, c, inner, affine):
    rng = np.random.default_rng(c * inner)
    x = randn(rng, n, c, inner, scale=2.0, offset=1.0)
    mean, var = randn(rng, c), (rng.random(c) * 3 + 0.1).astype(np.float32)
    w, b = (randn(rng, c), randn(rng, c)) if affine else (None, None)

    def run(nt):
        y = np.empty_like(x)
        lib.gc_batch_norm(n, c, inner, fp(x), fp(mean), fp(var), opt(w), opt(b), 1e-5, fp(y), nt)
        return y

    y = run_threads(run)
    ref = (x - mean[:, None].astype(np.float64)) / np.sqrt(var[:, None].astype(np.float64) + 1e-5)
    if affine:
        ref = ref * w[:, None] + b[:, None]
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


GN_SHAPES = [(1, 1, 1, 1), (2, 4, 5, 2), (3, 6, 7, 3), (2, 6, 1, 6), (2, 32, 256, 8), (1, 5, 3, 1)]


def ref_group_norm(x, groups, w, b, eps):
    n, c, inner = x.shape
    xg = x.astype(np.float64).reshape(n, groups, -1)
    mean = xg.mean(-1, keepdims=True)
    var = ((xg - mean) ** 2).mean(-1, keepdims=True)
    y = ((xg - mean) / np.sqrt(var + eps)).reshape(n, c, inner)
    if w is not None:
        y = y * w[:, None]
    if b is not None:
        y = y + b[:, None]
    return y


@pytest.mark.parametrize("n,c,inner,groups", GN_SHAPES)
@pytest.mark.parametrize("affine", [False, True])
def test_group_norm(lib, n, c, inner, groups, affine):
    rng = np.random.default_rng(c * inner + groups)
    x = randn(rng, n, c, inner, scale=1.5, offset=-2.0)
    w, b = (randn(rng, c), randn(rng, c)) if affine else (None, None)

    def run(nt):
        y = np.empty_like(x)
        lib.gc_group_norm(n, c, inner, groups, fp(x), opt(w), opt(b), 1e-5, fp(y), nt)
        return y

    y = run_threads(run)
    np.testing.assert_allclose(y, ref_group_norm(x, groups, w, b, 1e-5), rtol=1e-5, atol=2e-5)


def test_norms_match_torch(lib):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(7)
    for outer, n in [(1, 1), (5, 33), (16, 768)]:
        x, w, b = randn(rng, outer, n, offset=0.3), randn(rng, n), randn(rng, n)
        y = np.empty_like(x)
        lib.gc_layer_norm(outer, n, fp(x), fp(w), fp(b), 1e-5, fp(y), 2)
        ref = F.layer_norm(torch.from_numpy(x), (n,), torch.from_numpy(w), torch.from_numpy(b), 1e-5)
        np.testing.assert_allclose(y, ref.numpy(), rtol=1e-5, atol=1e-5)
        lib.gc_rms_norm(outer, n, fp(x), fp(w), 1e-6, fp(y), 2)
        ref = F.rms_norm(torch.from_numpy(x), (n,), torch.from_numpy(w), 1e-6)
        np.testing.assert_allclose(y, ref.numpy(), rtol=1e-5, atol=1e-5)
    for n, c, inner in [(2, 3, 10), (4, 16, 49)]:
        x = randn(rng, n, c, inner)
        mean, var = randn(rng, c), (rng.random(c) + 0.5).astype(np.float32)
        w, b = randn(rng, c), randn(rng, c)
        y = np.empty_like(x)
        lib.gc_batch_norm(n, c, inner, fp(x), fp(mean), fp(var), fp(w), fp(b), 1e-3, fp(y), 2)
        t = [torch.from_numpy(a) for a in (x, mean, var, w, b)]
        ref = F.batch_norm(t[0], t[1], t[2], t[3], t[4], training=False, eps=1e-3)
        np.testing.assert_allclose(y, ref.numpy(), rtol=1e-5, atol=1e-5)
    for n, c, inner, groups in [(2, 6, 10, 3), (2, 32, 64, 8), (1, 4, 2, 4)]:
        x, w, b = randn(rng, n, c, inner), randn(rng, c), randn(rng, c)
        y = np.empty_like(x)
        lib.gc_group_norm(n, c, inner, groups, fp(x), fp(w), fp(b), 1e-5, fp(y), 2)
        ref = F.group_norm(torch.from_numpy(x), groups, torch.from_numpy(w), torch.from_numpy(b), 1e-5)
        np.testing.assert_allclose(y, ref.numpy(), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- softmax


def ref_softmax(x, log):
    x = x.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        m = x.max(1, keepdims=True)
        e = np.exp(x - m)
        s = e.sum(1, keepdims=True)
        return (x - m) - np.log(s) if log else e / s


SOFTMAX_SHAPES = [
    (1, 1, 1),
    (1, 5, 1),
    (3, 7, 1),
    (2, 5, 3),
    (2, 3, 64),
    (2, 3, 65),
    (3, 4, 130),
    (1, 1000, 1),
    (16, 2048, 1),
    (4, 37, 200),
    (5, 1, 7),
]


def run_softmax(lib, x, log):
    outer, n, inner = x.shape

    def run(nt):
        y = np.empty_like(x)
        lib.gc_softmax(outer, n, inner, fp(x), fp(y), log, nt)
        return y

    return run_threads(run)


@pytest.mark.parametrize("shape", SOFTMAX_SHAPES)
@pytest.mark.parametrize("log", [0, 1])
def test_softmax(lib, shape, log):
    rng = np.random.default_rng(sum(shape) + log)
    x = randn(rng, *shape, scale=4.0)
    x[rng.random(shape) < 0.1] = -np.inf  # scattered -inf entries (rows stay partly finite)
    x[:, 0, :] = randn(rng, shape[0], shape[2])
    y = run_softmax(lib, x, log)
    np.testing.assert_allclose(y, ref_softmax(x, log), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("inner", [1, 3, 70])
@pytest.mark.parametrize("log", [0, 1])
def test_softmax_special_rows(lib, inner, log):
    """A row of all -inf, a row with NaN and a row with +inf all give NaN rows, like PyTorch."""
    rng = np.random.default_rng(inner)
    x = randn(rng, 4, 6, inner)
    x[0] = -np.inf
    x[1, 2, :] = np.nan
    x[2, 4, :] = np.inf
    y = run_softmax(lib, x, log)
    assert np.isnan(y[:3]).all()
    np.testing.assert_allclose(y[3], ref_softmax(x, log)[3], rtol=1e-5, atol=1e-6)


def test_softmax_matches_torch(lib):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    for shape in [(3, 7, 1), (2, 5, 3), (4, 37, 200), (2, 300, 1)]:
        x = randn(rng, *shape, scale=3.0)
        x[rng.random(shape) < 0.05] = -np.inf
        x[0, :, 0] = -np.inf  # one fully masked column
        for log, fn in ((0, torch.softmax), (1, torch.log_softmax)):
            y = run_softmax(lib, x, log)
            ref = fn(torch.from_numpy(x), dim=1).numpy()
            np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------- reductions

REDUCE_SHAPES = [(1, 1, 1), (2, 7, 1), (3, 5, 4), (2, 9, 64), (2, 9, 65), (1, 3000, 1), (8, 100, 150)]
KINDS = {0: np.sum, 1: np.mean, 2: np.max, 3: np.min, 4: np.prod}


def run_reduce(lib, kind, x):
    outer, n, inner = x.shape

    def run(nt):
        y = np.full((outer, inner), 123.0, np.float32)
        lib.gc_reduce(kind, outer, n, inner, fp(x), fp(y), nt)
        return y

    return run_threads(run)


@pytest.mark.parametrize("shape", REDUCE_SHAPES)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_reduce(lib, shape, kind):
    rng = np.random.default_rng(sum(shape) * 10 + kind)
    x = randn(rng, *shape)
    if kind == 4:  # keep products in range
        x = (1.0 + 0.01 * x).astype(np.float32)
    y = run_reduce(lib, kind, x)
    np.testing.assert_allclose(y, KINDS[kind](x.astype(np.float64), axis=1), rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize("kind", [2, 3])
@pytest.mark.parametrize("inner", [1, 5, 80])
def test_reduce_nan_propagates(lib, kind, inner):
    rng = np.random.default_rng(kind + inner)
    x = randn(rng, 3, 11, inner)
    x[0, 0, :] = np.nan  # first element
    x[1, 10, :] = np.nan  # last element
    x[2, 5, : inner // 2 + 1] = np.nan
    x[2, 6, :] = np.inf if kind == 2 else -np.inf
    y = run_reduce(lib, kind, x)
    np.testing.assert_array_equal(y, KINDS[kind](x, axis=1))


def test_reduce_empty_axis(lib):
    x = np.zeros((2, 0, 3), np.float32)
    assert np.all(run_reduce(lib, 0, x) == 0.0)
    assert np.isnan(run_reduce(lib, 1, x)).all()
    assert np.all(run_reduce(lib, 4, x) == 1.0)


def run_arg(lib, is_min, x):
    outer, n, inner = x.shape

    def run(nt):
        y = np.full((outer, inner), -5, np.int64)
        lib.gc_argreduce(is_min, outer, n, inner, fp(x), i64p(y), nt)
        return y

    return run_threads(run)


@pytest.mark.parametrize("shape", REDUCE_SHAPES)
@pytest.mark.parametrize("is_min", [0, 1])
def test_argreduce(lib, shape, is_min):
    rng = np.random.default_rng(sum(shape) + is_min)
    x = rng.integers(-3, 4, size=shape).astype(np.float32)  # many ties: the first index must win
    ref = np.argmin(x, axis=1) if is_min else np.argmax(x, axis=1)
    np.testing.assert_array_equal(run_arg(lib, is_min, x), ref)


@pytest.mark.parametrize("is_min", [0, 1])
def test_argreduce_nan(lib, is_min):
    x = np.array([[1, np.nan, 5, np.nan], [np.nan, 0, 0, 0], [2, 2, -np.inf, np.inf]], np.float32)
    x = x.reshape(3, 4, 1)
    y = run_arg(lib, is_min, x)[:, 0]
    assert list(y) == ([1, 0, 2] if is_min else [1, 0, 3])
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(x[..., 0])
    assert list(y) == (t.argmin(1) if is_min else t.argmax(1)).tolist()


# ---------------------------------------------------------------------------------------------- attention


def ref_sdpa(q, k, v, mask, scale, causal):
    s = np.einsum("bhid,bhjd->bhij", q.astype(np.float64), k.astype(np.float64)) * scale
    if mask is not None:
        s = s + mask
    if causal:
        tq, tk = s.shape[-2:]
        s = np.where(np.arange(tk)[None, :] > np.arange(tq)[:, None], -np.inf, s)
    with np.errstate(invalid="ignore"):
        m = s.max(-1, keepdims=True)
        e = np.exp(s - m)
        p = e / e.sum(-1, keepdims=True)
    p = np.where(np.isneginf(m), 0.0, p)  # fully masked rows: zeros, like PyTorch 2.x
    return np.einsum("bhij,bhjd->bhid", p, v.astype(np.float64))


def sdpa_params(q, k, v, out, mask_base=None, mask_view=None, scale=None, causal=False):
    """A gc_sdpa_params for [B, H, T, D] views (any strides with the last dim contiguous) and a mask view
    of mask_base; the arrays must stay alive while it is used."""
    b, h, tq, d = q.shape
    tk, dv = k.shape[2], v.shape[3]
    p = FFI.new("gc_sdpa_params *")
    p.b, p.h, p.tq, p.tk, p.d, p.dv = b, h, tq, tk, d, dv
    for name, a in (("q", q), ("k", k), ("v", v), ("o", out)):
        assert a.strides[3] == 4 or a.shape[3] <= 1 or a.size == 0, "the last dim must be contiguous"
        setattr(p, "out" if name == "o" else name, FFI.cast("float *", a.__array_interface__["data"][0]))
        for field, st in zip(("sb", "sh", "st"), a.strides[:3]):
            setattr(p, f"{name}_{field}", st // 4)
    if mask_view is not None:
        p.mask = fp(mask_base)
        p.m_sb, p.m_sh, p.m_sq, p.m_sk = (st // 4 for st in mask_view.strides)
    p.scale = 1.0 / np.sqrt(d) if scale is None else scale
    p.causal = int(causal)
    return p


def run_sdpa(lib, q, k, v, mask_base=None, mask_view=None, scale=None, causal=False):
    """mask_view is a (broadcast) view of mask_base with shape [B, H, Tq, Tk]."""
    b, h, tq, d = q.shape
    tk, dv = k.shape[2], v.shape[3]

    def run(nt):
        nwork = lib.gc_sdpa_work_floats(tq, tk, d, dv, nt)
        work = np.full(nwork + 64, 1e30, np.float32)  # 64 guard floats after what was asked for
        out = np.full((b, h, tq, dv), 7.0, np.float32)
        p = sdpa_params(q, k, v, out, mask_base, mask_view, scale, causal)
        lib.gc_sdpa(p, fp(work), nt)
        assert np.all(work[nwork:] == 1e30), "gc_sdpa wrote past its work buffer"
        return out

    out = run_threads(run)
    ref = ref_sdpa(q, k, v, None if mask_view is None else mask_view, 1.0 / np.sqrt(d) if scale is None else scale,
                   causal)
    return out, ref


SDPA_SHAPES = [  # b, h, tq, tk, d, dv
    (1, 1, 1, 1, 1, 1),
    (1, 1, 1, 5, 4, 4),
    (2, 3, 5, 5, 8, 8),
    (1, 2, 7, 3, 16, 5),
    (2, 1, 3, 9, 5, 12),
    (2, 4, 33, 33, 32, 32),
    (1, 2, 64, 100, 64, 64),
]


@pytest.mark.parametrize("shape", SDPA_SHAPES)
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_no_mask(lib, shape, causal):
    b, h, tq, tk, d, dv = shape
    rng = np.random.default_rng(sum(shape) + causal)
    q, k, v = randn(rng, b, h, tq, d), randn(rng, b, h, tk, d), randn(rng, b, h, tk, dv)
    out, ref = run_sdpa(lib, q, k, v, causal=causal)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=2e-5)


def mask_variants(rng, b, h, tq, tk):
    """(name, base array, [B,H,Tq,Tk] view) for full, broadcast and transposed masks."""
    full = randn(rng, b, h, tq, tk)
    yield "full", full, full
    m2 = randn(rng, tq, tk)
    yield "tq_tk", m2, np.broadcast_to(m2, (b, h, tq, tk))
    pad = np.zeros((b, 1, 1, tk), np.float32)
    pad[:, :, :, tk - max(1, tk // 3) :] = -np.inf  # key padding
    pad[:, :, :, 0] = 0.0
    yield "key_padding", pad, np.broadcast_to(pad, (b, h, tq, tk))
    per_head = randn(rng, 1, h, tq, 1)
    yield "per_head_row", per_head, np.broadcast_to(per_head, (b, h, tq, tk))
    t = randn(rng, tk, tq)  # a transposed (non-contiguous) mask
    yield "transposed", t, np.broadcast_to(t.T, (b, h, tq, tk))


@pytest.mark.parametrize("shape", SDPA_SHAPES)
def test_sdpa_masks(lib, shape):
    b, h, tq, tk, d, dv = shape
    rng = np.random.default_rng(sum(shape))
    q, k, v = randn(rng, b, h, tq, d), randn(rng, b, h, tk, d), randn(rng, b, h, tk, dv)
    for name, base, view in mask_variants(rng, b, h, tq, tk):
        for causal in (False, True):
            out, ref = run_sdpa(lib, q, k, v, base, view, scale=0.37, causal=causal)
            np.testing.assert_allclose(out, ref, rtol=1e-5, atol=2e-5, err_msg=f"{name} causal={causal}")


def test_sdpa_fully_masked_rows_give_zeros(lib):
    rng = np.random.default_rng(5)
    b, h, tq, tk, d = 2, 2, 4, 6, 8
    q, k, v = randn(rng, b, h, tq, d), randn(rng, b, h, tk, d), randn(rng, b, h, tk, d)
    mask = np.zeros((b, h, tq, tk), np.float32)
    mask[0, 1, 2, :] = -np.inf
    mask[1, :, 0, 0] = -np.inf  # with causal, row 0 only sees key 0: fully masked
    for causal in (False, True):
        out, ref = run_sdpa(lib, q, k, v, mask, mask, causal=causal)
        assert (out[0, 1, 2] == 0).all()
        assert (out[1, :, 0] == 0).all() == causal
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=2e-5)  # the reference has zeros there too


def test_sdpa_no_keys(lib):
    q, k, v = np.ones((1, 1, 3, 4), np.float32), np.ones((1, 1, 0, 4), np.float32), np.ones((1, 1, 0, 5), np.float32)
    assert lib.gc_sdpa_work_floats(3, 0, 4, 5, 2) == 0
    out = np.full((1, 1, 3, 5), 9.0, np.float32)
    p = sdpa_params(q, k, v, out, scale=0.5)
    lib.gc_sdpa(p, FFI.NULL, 2)
    assert np.all(out == 0.0)
    del k, v


def test_sdpa_work_formula(lib):
    for tk in (1, 5, 16, 17, 1000):
        for nt in (1, 2, 8):
            one = lib.gc_sdpa_work_floats(7, tk, 32, 24, 1)
            assert one >= 32 * 24 and lib.gc_sdpa_work_floats(7, tk, 32, 24, nt) == nt * one
    assert lib.gc_sdpa_work_floats(7, 10, 8, 8, 0) == lib.gc_sdpa_work_floats(7, 10, 8, 8, 1)


def test_sdpa_matches_torch(lib):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(11)
    for b, h, tq, tk, d, dv in [(2, 3, 5, 5, 8, 8), (1, 2, 7, 3, 16, 5), (2, 4, 40, 40, 32, 32), (1, 1, 9, 4, 8, 8)]:
        q, k, v = randn(rng, b, h, tq, d), randn(rng, b, h, tk, d), randn(rng, b, h, tk, dv)
        tq_, tk_, vv = (torch.from_numpy(a) for a in (q, k, v))
        out, _ = run_sdpa(lib, q, k, v, causal=True)
        ref = F.scaled_dot_product_attention(tq_, tk_, vv, is_causal=True)
        np.testing.assert_allclose(out, ref.numpy(), rtol=1e-5, atol=2e-5)
        for name, base, view in mask_variants(rng, b, h, tq, tk):
            out, _ = run_sdpa(lib, q, k, v, base, view, scale=0.2)
            ref = F.scaled_dot_product_attention(tq_, tk_, vv, attn_mask=torch.from_numpy(view.copy()), scale=0.2)
            np.testing.assert_allclose(out, ref.numpy(), rtol=1e-5, atol=2e-5, err_msg=name)


# ---------------------------------------------------------------------------------------------- embedding


@pytest.mark.parametrize("n,vocab,d", [(0, 3, 4), (1, 1, 1), (7, 10, 3), (5000, 50, 16), (4, 6, 0)])
def test_embedding(lib, n, vocab, d):
    rng = np.random.default_rng(n + vocab + d)
    table = randn(rng, vocab, d)
    idx = rng.integers(0, vocab, size=n).astype(np.int64)

    def run(nt):
        out = np.full((n, d), 3.0, np.float32)
        assert lib.gc_embedding(n, i64p(idx), vocab, d, fp(table), fp(out), nt) == GC_OK
        return out

    np.testing.assert_array_equal(run_threads(run), table[idx])


@pytest.mark.parametrize("bad", [-1, 10, 2**62, -(2**63)])
def test_embedding_bad_index(lib, bad):
    table = np.arange(40, dtype=np.float32).reshape(10, 4)
    idx = np.array([1, 2, bad, 3], np.int64)
    out = np.full((4, 4), 3.0, np.float32)
    assert lib.gc_embedding(4, i64p(idx), 10, 4, fp(table), fp(out), 2) == GC_ERR_INDEX
    assert np.all(out == 3.0), "nothing is written when an index is bad"


# ---------------------------------------------------------------------------------------------- safetensors


@pytest.fixture(scope="module")
def st_lib(omp_lib):
    return omp_lib


class Opened:
    """A gc_st with everything it needs kept alive; close() is idempotent."""

    def __init__(self, lib, rc, st, msg, keep=None):
        self.lib, self.rc, self.st, self.msg, self.keep = lib, rc, st, msg, keep

    def close(self):
        self.lib.gc_st_close(self.st)

    def tensors(self):
        out = {}
        for i in range(self.st.ntensors):
            t = self.st.tensors[i]
            name = FFI.string(t.name).decode()
            out[name] = (t.dtype, tuple(t.shape[j] for j in range(t.ndim)), bytes(FFI.buffer(t.data, t.nbytes)))
        return out

    def meta(self):
        return {
            FFI.string(self.st.meta_keys[i]).decode(): FFI.string(self.st.meta_values[i]).decode()
            for i in range(self.st.nmeta)
        }


def st_open_bytes(lib, data: bytes) -> Opened:
    buf = FFI.new("unsigned char[]", max(1, len(data)))
    FFI.memmove(buf, data, len(data))
    st, err = FFI.new("gc_st *"), FFI.new("char[512]")
    rc = lib.gc_st_open_memory(st, buf, len(data), err, 512)
    return Opened(lib, rc, st, FFI.string(err).decode(errors="replace"), buf)


def st_open_path(lib, path) -> Opened:
    st, err = FFI.new("gc_st *"), FFI.new("char[512]")
    rc = lib.gc_st_open_file(st, str(path).encode(), err, 512)
    return Opened(lib, rc, st, FFI.string(err).decode(errors="replace"))


def make_blob(header, data: bytes = b"", pad: int = 0, length: int | None = None) -> bytes:
    if not isinstance(header, bytes):
        header = header.encode()
    header += b" " * pad
    return struct.pack("<Q", len(header) if length is None else length) + header + data


def check_invariants(op: Opened, size: int):
    """Everything a successful open promises, checked independently of the parser."""
    st = op.st
    assert st.size == size and 0 <= st.ntensors and 0 <= st.nmeta
    base = int(FFI.cast("uintptr_t", st.blob))
    header_len = struct.unpack("<Q", bytes(FFI.buffer(st.blob, 8)))[0]
    data_start = base + 8 + header_len
    spans, names = [], []
    for i in range(st.ntensors):
        t = st.tensors[i]
        assert 0 <= t.dtype <= 9 and 0 <= t.ndim <= 8
        count = 1
        for j in range(t.ndim):
            assert t.shape[j] >= 0
            count *= t.shape[j]
        assert t.nbytes == count * ITEMSIZE[t.dtype]
        addr = int(FFI.cast("uintptr_t", t.data))
        assert data_start <= addr and addr + t.nbytes <= base + size
        if t.nbytes:
            spans.append((addr, addr + t.nbytes))
        name = FFI.string(t.name)
        names.append(name)
        assert op.lib.gc_st_find(st, t.name) == st.tensors + i
    assert names == sorted(names) and len(set(names)) == len(names)
    spans.sort()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    keys = [FFI.string(st.meta_keys[i]) for i in range(st.nmeta)]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    for i in range(st.nmeta):
        assert op.lib.gc_st_meta(st, st.meta_keys[i]) == st.meta_values[i]


def sample_arrays():
    rng = np.random.default_rng(0)
    return {
        "fc1.weight": randn(rng, 4, 3),
        "fc1.bias": randn(rng, 4),
        "f64": rng.standard_normal(5),
        "half": rng.standard_normal((3, 2, 2)).astype(np.float16),
        "i8": rng.integers(-128, 127, 6).astype(np.int8),
        "i16": rng.integers(-1000, 1000, (2, 2)).astype(np.int16),
        "i32": rng.integers(-(2**31), 2**31 - 1, 3).astype(np.int32),
        "i64": rng.integers(-(2**62), 2**62, 2).astype(np.int64),
        "u8": rng.integers(0, 255, 7).astype(np.uint8),
        "mask": rng.random(5) > 0.5,
        "scalar": np.array(2.5, np.float32),
        "empty": np.zeros((0, 3), np.float32),
        "eight_dims": rng.standard_normal((1, 2, 1, 1, 1, 1, 1, 2)).astype(np.float32),
        "ünï/çødé.weight": randn(rng, 2),
    }


METADATA = {"format": "pt", "note": 'héllo "quoted"\n\ttab \\ back', "emoji": "\U0001f600"}


def test_st_reads_files_from_the_safetensors_package(st_lib, tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy")
    arrays = sample_arrays()
    path = tmp_path / "model.safetensors"
    st_numpy.save_file(arrays, str(path), metadata=METADATA)
    for op in (st_open_path(st_lib, path), st_open_bytes(st_lib, path.read_bytes())):
        assert op.rc == GC_OK, op.msg
        assert op.msg == ""
        got = op.tensors()
        assert sorted(got) == sorted(arrays)
        for name, arr in arrays.items():
            dtype, shape, data = got[name]
            assert dtype == ST_DTYPES[NP_DTYPE[arr.dtype.type]]
            assert shape == arr.shape
            assert data == arr.tobytes()
        assert op.meta() == METADATA
        for key, value in METADATA.items():
            assert FFI.string(st_lib.gc_st_meta(op.st, key.encode())).decode() == value
        assert st_lib.gc_st_meta(op.st, b"missing") == FFI.NULL
        assert st_lib.gc_st_find(op.st, b"missing") == FFI.NULL
        assert st_lib.gc_st_find(op.st, b"fc1.weigh") == FFI.NULL
        check_invariants(op, path.stat().st_size)
        assert op.st.mapped == (op.keep is None)
        op.close()
        assert op.st.ntensors == 0 and op.st.blob == FFI.NULL and op.st.tensors == FFI.NULL
        op.close()  # closing twice is harmless


def test_st_reads_bf16_from_torch(st_lib):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    tensors = {"w": torch.randn(3, 5, dtype=torch.bfloat16), "b": torch.arange(4, dtype=torch.int64)}
    op = st_open_bytes(st_lib, st_torch.save(tensors))
    assert op.rc == GC_OK, op.msg
    got = op.tensors()
    assert got["w"][:2] == (ST_DTYPES["BF16"], (3, 5))
    assert got["w"][2] == tensors["w"].view(torch.int16).numpy().tobytes()
    assert got["b"] == (ST_DTYPES["I64"], (4,), tensors["b"].numpy().tobytes())
    op.close()


def test_st_expect(st_lib):
    data = np.arange(13, dtype=np.float32).tobytes()
    header = json_header({"fc1.weight": ("F32", [3, 4], 0, 48), "s": ("F32", [], 48, 52)})
    op = st_open_bytes(st_lib, make_blob(header, data))
    assert op.rc == GC_OK, op.msg
    err, ptr = FFI.new("char[256]"), FFI.new("void **")

    def expect(name, dtype, shape, data_out=ptr):
        shp = FFI.new("int64_t[]", list(shape) or [0])
        rc = st_lib.gc_st_expect(op.st, name.encode(), dtype, len(shape), shp, data_out, err, 256)
        return rc, FFI.string(err).decode()

    assert expect("fc1.weight", 0, [3, 4]) == (GC_OK, "")
    assert ptr[0] == st_lib.gc_st_find(op.st, b"fc1.weight").data
    assert bytes(FFI.buffer(ptr[0], 48)) == data[:48]
    assert expect("s", 0, [], FFI.NULL) == (GC_OK, "")
    assert expect("fc1.weight", 0, [3, 5]) == (
        GC_ERR_MISMATCH,
        "tensor 'fc1.weight': expected f32[3,5], file has f32[3,4]",
    )
    assert expect("fc1.weight", 2, [3, 4]) == (
        GC_ERR_MISMATCH,
        "tensor 'fc1.weight': expected f16[3,4], file has f32[3,4]",
    )
    assert expect("fc1.weight", 0, [12]) == (
        GC_ERR_MISMATCH,
        "tensor 'fc1.weight': expected f32[12], file has f32[3,4]",
    )
    assert expect("s", 7, [1]) == (GC_ERR_MISMATCH, "tensor 's': expected i64[1], file has f32[]")
    assert expect("x", 0, [1]) == (GC_ERR_MISMATCH, "tensor 'x' not found in weights")
    rc, msg = expect("s", 0, [1] * 9)
    assert rc == GC_ERR_INVALID_ARGUMENT and msg
    op.close()
    assert expect("fc1.weight", 0, [3, 4])[0] == GC_ERR_MISMATCH  # closed: nothing left to find


def test_st_file_errors(st_lib, tmp_path):
    op = st_open_path(st_lib, tmp_path / "nope.safetensors")
    assert op.rc == GC_ERR_IO and "nope.safetensors" in op.msg and "No such file" in op.msg
    op = st_open_path(st_lib, tmp_path)
    assert op.rc == GC_ERR_IO and "not a regular file" in op.msg
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo")
        op = st_open_path(st_lib, tmp_path / "fifo")  # must not block waiting for a writer
        assert op.rc == GC_ERR_IO and "not a regular file" in op.msg
    for size in (0, 5, 7):
        p = tmp_path / f"short{size}"
        p.write_bytes(b"\0" * size)
        op = st_open_path(st_lib, p)
        assert (op.rc, op.msg) == (GC_ERR_FORMAT, f"file is {size} bytes, too short for a safetensors header")
        assert op.st.blob == FFI.NULL
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        p = tmp_path / "locked.safetensors"
        p.write_bytes(make_blob("{}"))
        p.chmod(0)
        op = st_open_path(st_lib, p)
        assert op.rc == GC_ERR_IO and "Permission denied" in op.msg


def test_st_null_arguments_and_zeroed_close(st_lib):
    st_lib.gc_st_close(FFI.NULL)
    st = FFI.new("gc_st *")
    st_lib.gc_st_close(st)  # a zeroed struct is a no-op
    assert st_lib.gc_st_find(st, b"x") == FFI.NULL and st_lib.gc_st_meta(st, b"x") == FFI.NULL
    assert st_lib.gc_st_find(FFI.NULL, b"x") == FFI.NULL
    err = FFI.new("char[64]")
    assert st_lib.gc_st_open_memory(FFI.NULL, b"12345678", 8, err, 64) == GC_ERR_INVALID_ARGUMENT
    assert st_lib.gc_st_open_memory(st, FFI.NULL, 8, err, 64) == GC_ERR_INVALID_ARGUMENT
    assert st_lib.gc_st_open_file(st, FFI.NULL, err, 64) == GC_ERR_INVALID_ARGUMENT
    # a NULL or tiny error buffer is fine
    assert st_lib.gc_st_open_memory(st, b"\x02\0\0\0\0\0\0\0{]", 10, FFI.NULL, 0) == GC_ERR_FORMAT
    assert st_lib.gc_st_open_memory(st, b"\x02\0\0\0\0\0\0\0{]", 10, err, 1) == GC_ERR_FORMAT
    assert FFI.string(err) == b""


def json_header(entries: dict, metadata=None) -> str:
    """entries: name -> (dtype, shape, begin, end)"""
    parts = []
    if metadata is not None:
        parts.append('"__metadata__": ' + metadata)
    for name, (dtype, shape, begin, end) in entries.items():
        shape_s = ",".join(str(s) for s in shape)
        parts.append(f'"{name}": {{"dtype": "{dtype}", "shape": [{shape_s}], "data_offsets": [{begin}, {end}]}}')
    return "{" + ", ".join(parts) + "}"


def test_st_hand_written_valid(st_lib):
    data = bytes(range(40))
    cases = [
        # escapes of every kind in names
        (
            r'{"a\u00e9\ud83d\ude00\n\t\"\\\/\b\f\r":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}',
            {'a\u00e9\U0001f600\n\t"\\/\b\f\r': (8, (2,), data[:2])},
        ),
        # raw UTF-8, whitespace everywhere, keys in another order, padding
        ('\n\t{ "ω" :\r{ "data_offsets" : [ 4 , 8 ] ,"shape":[ ],"dtype":"F32" } }  \n', {"ω": (0, (), data[4:8])}),
        # gaps and trailing data are allowed; zero-sized tensors may sit anywhere
        (
            '{"x":{"dtype":"I16","shape":[1,2],"data_offsets":[10,14]},'
            '"z":{"dtype":"F64","shape":[0],"data_offsets":[12,12]},'
            '"e":{"dtype":"BOOL","shape":[3,0,2],"data_offsets":[40,40]}}',
            {"x": (5, (1, 2), data[10:14]), "z": (1, (0,), b""), "e": (9, (3, 0, 2), b"")},
        ),
        ("{}", {}),
        ('{"__metadata__":null}', {}),
        ('{"__metadata__":{}}', {}),
    ]
    for header, expected in cases:
        for pad in (0, 7):
            op = st_open_bytes(st_lib, make_blob(header, data, pad=pad))
            assert op.rc == GC_OK, (header, op.msg)
            assert op.tensors() == expected
            check_invariants(op, 8 + len(header.encode()) + pad + len(data))
            op.close()


def test_st_byte_offset_in_messages(st_lib):
    header = '{"a" {"dtype":"F32"}}'
    op = st_open_bytes(st_lib, make_blob(header))
    assert (op.rc, op.msg) == (GC_ERR_FORMAT, "safetensors header: expected ':' at byte 13")
    op = st_open_bytes(st_lib, make_blob(json_header({"fc1.bias": ("F32", [1000], 0, 4000)}), b"\0" * 1024))
    assert op.msg == "tensor 'fc1.bias': data_offsets [0, 4000] exceed the data area (1024 bytes)"


T = '"dtype":"F32","shape":[2],"data_offsets":[0,8]'
CORRUPT = [  # (header, data, message fragment)
    ("", b"", "expected '{' at byte 8 (end of header)"),
    ("   ", b"", "expected '{'"),
    ("[]", b"", "expected '{' at byte 8"),
    ('{"a":{' + T + "}", b"\0" * 8, "expected ',' or '}'"),
    ('{"a":{' + T + "}},", b"\0" * 8, "unexpected data after the header object at byte"),
    ('{"a":{' + T + "}}\0", b"\0" * 8, "unexpected data after the header object"),
    ('{"a":{' + T + "},}", b"\0" * 8, "expected a string"),
    ('{"a":{' + T + ",}}", b"\0" * 8, "expected a string"),
    ('{"a', b"", "unterminated string starting at byte 9"),
    ('{"a\\', b"", "incomplete escape sequence"),
    ('{"a\\x":1}', b"", "invalid escape sequence in string at byte 11"),
    ('{"a\\u12":1}', b"", "invalid \\u escape"),
    ('{"a\\u12g4":1}', b"", "invalid \\u escape"),
    ('{"\\udc00":1}', b"", "unpaired surrogate"),
    ('{"\\ud800":1}', b"", "unpaired surrogate"),
    ('{"\\ud800\\u0041":1}', b"", "unpaired surrogate"),
    ('{"\\u0000":1}', b"", "NUL character"),
    (b'{"\xff":1}', b"", "invalid UTF-8 in string at byte 10"),
    (b'{"\xc0\x80":1}', b"", "invalid UTF-8"),
    (b'{"\xed\xa0\x80":1}', b"", "invalid UTF-8"),
    (b'{"\xf4\x90\x80\x80":1}', b"", "invalid UTF-8"),
    (b'{"\xe2\x82":1}', b"", "invalid UTF-8"),
    ('{"a\nb":1}', b"", "control character in string"),
    ('{"a":1}', b"", "expected '{'"),
    ('{"a":null}', b"", "expected '{'"),
    ('{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}}', b"\0" * 8, "fraction or exponent"),
    ('{"a":{"dtype":"F32","shape":[2e0],"data_offsets":[0,8]}}', b"\0" * 8, "fraction or exponent"),
    ('{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}', b"\0" * 8, "negative integer"),
    ('{"a":{"dtype":"F32","shape":[02],"data_offsets":[0,8]}}', b"\0" * 8, "leading zero"),
    ('{"a":{"dtype":"F32","shape":[+2],"data_offsets":[0,8]}}', b"\0" * 8, "expected an integer"),
    ('{"a":{"dtype":"F32","shape":[true],"data_offsets":[0,8]}}', b"\0" * 8, "expected an integer"),
    ('{"a":{"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,8]}}', b"", "integer too large"),
    ('{"a":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,8]}}', b"", "integer too large"),
    ('{"a":{"dtype":"F32","shape":"2","data_offsets":[0,8]}}', b"\0" * 8, "expected '['"),
    ('{"a":{"dtype":"F32","shape":[2 2],"data_offsets":[0,8]}}', b"\0" * 8, "expected ',' or ']'"),
    ('{"a":{"dtype":"F32","shape":[2,],"data_offsets":[0,8]}}', b"\0" * 8, "expected an integer"),
    ('{"a":{"dtype":"F32","shape":[[2]],"data_offsets":[0,8]}}', b"\0" * 8, "expected an integer"),
    ('{"a":{"dtype":"U16","shape":[2],"data_offsets":[0,4]}}', b"\0" * 4, "tensor 'a': unknown dtype 'U16'"),
    ('{"a":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}}', b"\0" * 8, "unknown dtype 'f32'"),
    ('{"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}}', b"\0" * 8, "expected a string"),
    ('{"a":{"shape":[2],"data_offsets":[0,8]}}', b"\0" * 8, "tensor 'a': missing \"dtype\""),
    ('{"a":{"dtype":"F32","data_offsets":[0,8]}}', b"\0" * 8, "tensor 'a': missing \"shape\""),
    ('{"a":{"dtype":"F32","shape":[2]}}', b"\0" * 8, "tensor 'a': missing \"data_offsets\""),
    ('{"a":{}}', b"", "tensor 'a': missing \"dtype\""),
    ('{"a":{' + T + ', "extra":1}}', b"\0" * 8, "tensor 'a': unexpected key 'extra' at byte 62"),
    ('{"a":{' + T + ',"dtype":"F32"}}', b"\0" * 8, "tensor 'a': duplicate key 'dtype'"),
    ('{"a":{"dtype":"F32","shape":[2],"data_offsets":[8]}}', b"\0" * 8, "data_offsets needs 2 entries, has 1"),
    ('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}}', b"\0" * 8, "more than 2 entries"),
    ('{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}', b"\0" * 8, "data_offsets [8, 0] end before"),
    (
        '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
        b"\0" * 7,
        "tensor 'a': data_offsets [0, 8] exceed the data area (7 bytes)",
    ),
    (
        '{"a":{"dtype":"F32","shape":[2],"data_offsets":[9223372036854775800,9223372036854775807]}}',
        b"",
        "exceed the data area (0 bytes)",
    ),
    (
        '{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}',
        b"\0" * 8,
        "tensor 'a': shape f32[3] needs 12 bytes but data_offsets [0, 8] hold 8",
    ),
    (
        '{"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}}',
        b"\0" * 8,
        "shape f64[4611686018427387904] is too large",
    ),
    ('{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}', b"\0" * 8, "too large"),
    (
        '{"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}}',
        b"\0",
        "tensor 'a': \"shape\" has more than 8 entries",
    ),
    (
        '{"a":{' + T + '},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}',
        b"\0" * 12,
        "tensors 'a' [0, 8] and 'b' [4, 12] overlap",
    ),
    (
        '{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
        b"\0" * 16,
        "tensors 'a' [0, 16] and 'b' [4, 8] overlap",
    ),
    (
        '{"a":{' + T + '},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}',
        b"\0" * 16,
        "duplicate tensor name 'a'",
    ),
    ('{"__metadata__":{},"__metadata__":{}}', b"", "duplicate __metadata__"),
    ('{"__metadata__":{"k":"v","k":"w"}}', b"", "duplicate __metadata__ key 'k'"),
    ('{"__metadata__":{"k":1}}', b"", "__metadata__ values are strings"),
    ('{"__metadata__":{"k":{"x":"y"}}}', b"", "__metadata__ values are strings"),
    ('{"__metadata__":["k"]}', b"", "expected '{'"),
    ('{"__metadata__":nul}', b"", "expected an object"),
    ('{"__metadata__":{"k" "v"}}', b"", "expected ':'"),
    ('{"__metadata__":{"k":"v",}}', b"", "expected a string"),
]


@pytest.mark.parametrize("header,data,fragment", CORRUPT)
def test_st_corrupt_headers(st_lib, header, data, fragment):
    op = st_open_bytes(st_lib, make_blob(header, data))
    assert op.rc == GC_ERR_FORMAT
    assert fragment in op.msg
    assert op.st.ntensors == 0 and op.st.tensors == FFI.NULL and op.st.strings == FFI.NULL


def test_st_bad_header_lengths(st_lib):
    body = json_header({"a": ("U8", [1], 0, 1)}).encode()
    for length, fragment in [
        (len(body) + 2, f"header length {len(body) + 2} exceeds the file size ({8 + len(body) + 1} bytes)"),
        (2**64 - 1, "exceeds the file size"),
        (2**63, "exceeds the file size"),
        (len(body) - 1, "at byte"),
        (0, "expected '{' at byte 8 (end of header)"),
    ]:
        op = st_open_bytes(st_lib, make_blob(body, b"\x01", length=length))
        assert op.rc == GC_ERR_FORMAT and fragment in op.msg, op.msg
    big = struct.pack("<Q", 100_000_001) + b"{" + b" " * 100_000_000
    op = st_open_bytes(st_lib, big)
    assert op.rc == GC_ERR_FORMAT and "limit" in op.msg


def small_file() -> bytes:
    """A small valid file whose data area is used to the last byte (so any truncation is an error)."""
    header = json_header(
        {"w": ("F32", [2, 2], 0, 16), "b": ("I16", [3], 16, 22), "z": ("F32", [0], 22, 22), "s": ("U8", [], 22, 23)},
        metadata='{"k":"v\\u00e9","k2":""}',
    )
    return make_blob(header, bytes(range(1, 24)), pad=3)


def test_st_truncation_at_every_byte(st_lib, tmp_path):
    blob = small_file()
    full = st_open_bytes(st_lib, blob)
    assert full.rc == GC_OK, full.msg
    assert full.meta() == {"k": "vé", "k2": ""}
    full.close()
    messages = set()
    path = tmp_path / "t.safetensors"
    for cut in range(len(blob)):
        op = st_open_bytes(st_lib, blob[:cut])
        assert op.rc == GC_ERR_FORMAT and op.msg, cut
        messages.add(re.sub(r"\d+", "N", op.msg))
        path.write_bytes(blob[:cut])
        op2 = st_open_path(st_lib, path)
        assert (op2.rc, op2.msg) == (op.rc, op.msg)
    assert len(messages) >= 2


def test_st_header_byte_flips(st_lib):
    blob = small_file()
    header_end = 8 + struct.unpack("<Q", blob[:8])[0]
    outcomes = {GC_OK: 0, GC_ERR_FORMAT: 0}
    for pos in range(header_end):
        for mask in (0x01, 0x02, 0x10, 0x20, 0x40, 0x80, 0xFF):
            mutated = bytearray(blob)
            mutated[pos] ^= mask
            op = st_open_bytes(st_lib, bytes(mutated))
            assert op.rc in outcomes, (pos, mask, op.rc)
            outcomes[op.rc] += 1
            if op.rc == GC_OK:
                check_invariants(op, len(mutated))
                op.close()
            else:
                assert op.msg
    assert outcomes[GC_OK] > 0 and outcomes[GC_ERR_FORMAT] > 0


TOKENS = [
    b'"',
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b" ",
    b"-1",
    b"0",
    b"1e5",
    b"1.0",
    b"\\u",
    b"\\ud800",
    b"18446744073709551616",
    b"9223372036854775807",
    b'"F32"',
    b'"BOOL"',
    b'"shape"',
    b'"dtype"',
    b'"data_offsets"',
    b'"__metadata__"',
    b"null",
    b"\xff",
    b"\xc3",
    b"\x00",
    b"[0,0]",
    b"[]",
]


def mutate(rng: random.Random, blob: bytes) -> bytes:
    """One random structural mutation; the length prefix is usually kept consistent with the header."""
    header_len = struct.unpack("<Q", blob[:8])[0]
    header, data = bytearray(blob[8 : 8 + header_len]), bytearray(blob[8 + header_len :])
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(7)
        pos = rng.randrange(len(header) + 1)
        if op == 0 and header:
            header[min(pos, len(header) - 1)] = rng.randrange(256)
        elif op == 1:
            header[pos:pos] = rng.choice(TOKENS)
        elif op == 2 and header:
            del header[pos : pos + rng.randint(1, 8)]
        elif op == 3:
            chunk = header[pos : pos + rng.randint(1, 40)]
            at = rng.randrange(len(header) + 1)
            header[at:at] = chunk
        elif op == 4:  # change a number
            numbers = list(re.finditer(rb"\d+", bytes(header)))
            if numbers:
                m = rng.choice(numbers)
                new = str(rng.choice([0, 1, 3, 7, 8, 16, 22, 23, 2**31, 2**32, 2**62, 2**63 - 1, 2**64])).encode()
                header[m.start() : m.end()] = new
        elif op == 5 and data:
            del data[rng.randrange(len(data)) :]
        else:
            data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 9)))
    length = len(header) if rng.random() < 0.95 else rng.choice([0, len(header) + 1, 2**64 - 1, rng.randrange(64)])
    return struct.pack("<Q", length) + bytes(header) + bytes(data)


def mutation_corpus(count: int, seed: int = 1234) -> list[bytes]:
    rng = random.Random(seed)
    seeds = [small_file(), make_blob(json_header({"a": ("F32", [2], 0, 8)}), b"\0" * 8)]
    out = []
    for _ in range(count):
        blob = rng.choice(seeds)
        for _ in range(rng.randint(1, 2)):
            blob = mutate(rng, blob)
        out.append(blob)
    return out


def test_st_random_mutations(st_lib):
    ok = failed = 0
    messages = set()
    for blob in mutation_corpus(4000):
        op = st_open_bytes(st_lib, blob)
        if op.rc == GC_OK:
            ok += 1
            check_invariants(op, len(blob))
            op.close()
        else:
            assert op.rc == GC_ERR_FORMAT, (blob, op.rc, op.msg)
            assert op.msg and (
                "at byte" in op.msg or "tensor" in op.msg or "file" in op.msg or "duplicate" in op.msg
            ), op.msg
            messages.add(re.sub(r"'.*'|\d+", "_", op.msg))
            failed += 1
    assert ok > 50 and failed > 1000
    assert len(messages) > 20  # the mutations reach many different checks


# ---------------------------------------------------------------------------------------------- sanitizers

SANITIZE_DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "graphc_rt.h"

static unsigned checksum(const gc_st *st)
{
    unsigned sum = 0;
    for (int i = 0; i < st->ntensors; i++) {
        const gc_st_tensor *t = &st->tensors[i];
        for (size_t j = 0; j < t->nbytes; j++)
            sum = sum * 31u + ((const unsigned char *)t->data)[j];
        sum += (unsigned)strlen(t->name);
        if (gc_st_find(st, t->name) != t)
            abort();
        const void *data;
        char err[128];
        if (gc_st_expect(st, t->name, t->dtype, t->ndim, t->shape, &data, err, sizeof err) || data != t->data)
            abort();
    }
    for (int i = 0; i < st->nmeta; i++)
        if (gc_st_meta(st, st->meta_keys[i]) != st->meta_values[i])
            abort();
    return sum;
}

int main(int argc, char **argv)
{
    unsigned total = 0;
    for (int a = 1; a < argc; a++) {
        FILE *f = fopen(argv[a], "rb");
        if (!f)
            return 2;
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        fseek(f, 0, SEEK_SET);
        unsigned char *buf = malloc(size ? (size_t)size : 1); /* exact size: over-reads are caught */
        if (size && fread(buf, 1, (size_t)size, f) != (size_t)size)
            return 3;
        fclose(f);
        char err[200];
        gc_st st;
        int rc = gc_st_open_memory(&st, buf, (size_t)size, err, sizeof err);
        if (rc == 0)
            total += checksum(&st);
        else if (!err[0] || rc != GC_ERR_FORMAT)
            return 4;
        gc_st_close(&st);
        int rc2 = gc_st_open_file(&st, argv[a], err, sizeof err);
        if (rc2 != rc)
            return 5;
        if (rc2 == 0)
            total -= checksum(&st);
        gc_st_close(&st);
        gc_st_close(&st);
        free(buf);
    }
    printf("%d files, checksum difference %u\n", argc - 1, total);
    return total != 0;
}
"""


def _sanitizers_work() -> bool:
    """gcc can link an ASan/UBSan program here (the runtime libraries are installed)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "probe.c")
        with open(src, "w") as f:
            f.write("int main(void) { return 0; }\n")
        r = subprocess.run(["gcc", "-fsanitize=address,undefined", src, "-o", os.path.join(d, "probe")],
                           capture_output=True)
        return r.returncode == 0 and subprocess.run([os.path.join(d, "probe")]).returncode == 0


@pytest.mark.skipif(os.environ.get("GRAPHC_SANITIZE") == "0" or shutil.which("gcc") is None or not _sanitizers_work(),
                    reason="gcc cannot build ASan/UBSan programs here (or GRAPHC_SANITIZE=0)")
def test_st_under_sanitizers(tmp_path):
    driver = tmp_path / "driver.c"
    driver.write_text(SANITIZE_DRIVER)
    exe = tmp_path / "driver"
    cmd = [
        "gcc",
        "-g",
        "-O1",
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all",
        "-fno-omit-frame-pointer",
        "-Wall",
        "-Wextra",
        "-DGC_INTERNAL=",
        f"-I{RT}",
        "-o",
        str(exe),
        str(driver),
        str(RT / "gc_safetensors.c"),
        str(RT / "gc_status.c"),
    ]
    res = run_gcc(cmd)
    assert res.returncode == 0 and "warning" not in res.stderr, res.stderr
    blob = small_file()
    corpus = [blob[:cut] for cut in range(len(blob) + 1)]
    corpus += [make_blob(h, d) for h, d, _ in CORRUPT]
    for pos in range(len(blob)):
        corpus.append(blob[:pos] + bytes([blob[pos] ^ 0x20]) + blob[pos + 1 :])
    corpus += mutation_corpus(3000, seed=99)
    files = []
    for i, data in enumerate(corpus):
        p = tmp_path / f"c{i}.safetensors"
        p.write_bytes(data)
        files.append(str(p))
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0", UBSAN_OPTIONS="print_stacktrace=1")
    res = subprocess.run([str(exe), *files], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr[-4000:]
    assert f"{len(files)} files" in res.stdout
