"""The runtime's flash-style attention (runtime_c/gc_attention.c) at every ISA level this CPU runs.

gc_attention.c (with the thread pool it parallelises on) is built for baseline x86-64 without OpenMP,
x86-64-v2 (the default library's generic kernels), x86-64-v3 (AVX2 + FMA) and x86-64-v4 (AVX-512, when
the CPU has it) and called through cffi with gc_sdpa_params taken from numpy views: q, k, v and out
addressed by strides, as a fused qkv projection's permuted slices are. Results are checked against a
float64 numpy reference (and torch when it is importable) over odd sizes (one query, one key, head sizes
that are not a multiple of any vector width, query and key counts across the block and chunk
boundaries), every mask layout, causal masking and batches, on 1, 2 and 3 threads (the same bits on
each); the softmax's exponential is held to its stated error through a two-key sweep.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.shared_build import run_gcc

cffi = pytest.importorskip("cffi")

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "runtime_c"
SOURCES = ("gc_attention.c", "gc_threadpool.c")
LEVELS = {"baseline": ("-O2", "-std=c11"), "generic": ("-O3", "-march=x86-64-v2", "-fopenmp"),
          "avx2": ("-O3", "-march=x86-64-v3", "-fopenmp"), "avx512": ("-O3", "-march=x86-64-v4", "-fopenmp")}
CDEF = """
typedef struct gc_sdpa_params {
    int64_t b, h, tq, tk, d, dv;
    const float *q; int64_t q_sb, q_sh, q_st;
    const float *k; int64_t k_sb, k_sh, k_st;
    const float *v; int64_t v_sb, v_sh, v_st;
    const float *mask; int64_t m_sb, m_sh, m_sq, m_sk;
    float scale; int causal;
    float *out; int64_t o_sb, o_sh, o_st;
} gc_sdpa_params;
size_t gc_sdpa_work_floats(int64_t tq, int64_t tk, int64_t d, int64_t dv, int nthreads);
void gc_sdpa(const gc_sdpa_params *p, float *work, int nthreads);
"""


def cpu_has(flag: str) -> bool:
    try:
        return re.search(rf"\b{flag}\b", Path("/proc/cpuinfo").read_text()) is not None
    except OSError:
        return False


def available(level: str) -> bool:
    return {"baseline": True, "generic": cpu_has("sse4_2"), "avx2": cpu_has("avx2") and cpu_has("fma"),
            "avx512": all(cpu_has(f) for f in ("avx512f", "avx512vl", "avx512bw", "avx512dq"))}[level]


class Sdpa:
    def __init__(self, ffi: cffi.FFI, lib) -> None:
        self.ffi, self.lib = ffi, lib

    def ptr(self, a: np.ndarray):
        return self.ffi.cast("float *", a.__array_interface__["data"][0])

    def __call__(self, q, k, v, out, mask=None, scale=None, causal=False, nthreads=1) -> None:
        """q[B, H, Tq, D], k, v, out views (last dim contiguous), mask a [B, H, Tq, Tk] (broadcast) view."""
        b, h, tq, d = q.shape
        tk, dv = k.shape[2], v.shape[3]
        p = self.ffi.new("gc_sdpa_params *")
        p.b, p.h, p.tq, p.tk, p.d, p.dv = b, h, tq, tk, d, dv
        for name, a in (("q", q), ("k", k), ("v", v), ("o", out)):
            assert a.strides[3] == 4 or a.shape[3] <= 1 or a.size == 0, "the last dim must be contiguous"
            setattr(p, "out" if name == "o" else name, self.ptr(a))
            for field, st in zip(("sb", "sh", "st"), a.strides[:3]):
                setattr(p, f"{name}_{field}", st // 4)
        if mask is not None:
            p.mask = self.ptr(mask)
            p.m_sb, p.m_sh, p.m_sq, p.m_sk = (st // 4 for st in mask.strides)
        p.scale = 1.0 / np.sqrt(d) if scale is None else scale
        p.causal = int(causal)
        nwork = self.lib.gc_sdpa_work_floats(tq, tk, d, dv, nthreads)
        work = np.full(nwork + 64, 1e30, np.float32)
        self.lib.gc_sdpa(p, self.ptr(work), nthreads)
        assert (work[nwork:] == 1e30).all(), "gc_sdpa wrote past its work buffer"

    def run(self, q, k, v, mask=None, scale=None, causal=False) -> np.ndarray:
        """The output on 1, 2 and 3 threads, which must be the same bits."""
        outs = []
        for nt in (1, 2, 3):
            out = np.full(q.shape[:3] + (v.shape[3],), 7.0, np.float32)
            self(q, k, v, out, mask, scale, causal, nt)
            outs.append(out)
        for o in outs[1:]:
            assert o.tobytes() == outs[0].tobytes(), "the result depends on the thread count"
        return outs[0]


@pytest.fixture(scope="module", params=list(LEVELS))
def sdpa(request, tmp_path_factory) -> Sdpa:
    level = request.param
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    if not available(level):
        pytest.skip(f"this CPU cannot run {level}")
    out = tmp_path_factory.mktemp(f"attn_{level}") / "libgc_attention.so"
    cmd = ["gcc", *LEVELS[level], "-Wall", "-Wextra", "-fPIC", "-shared", "-DGC_INTERNAL=", f"-I{RUNTIME}",
           *(str(RUNTIME / s) for s in SOURCES), "-o", str(out), "-lm", "-pthread"]
    res = run_gcc(cmd)
    assert res.returncode == 0 and "warning" not in res.stderr, res.stderr
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    return Sdpa(ffi, ffi.dlopen(str(out)))


def reference(q, k, v, mask=None, scale=None, causal=False) -> np.ndarray:
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
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


def randn(rng, *shape) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def masks(rng, b, h, tq, tk):
    """(name, [B, H, Tq, Tk] view): none, full, broadcast rows, key padding, per-head rows, transposed."""
    yield "none", None
    yield "full", randn(rng, b, h, tq, tk)
    yield "tq_tk", np.broadcast_to(randn(rng, tq, tk), (b, h, tq, tk))
    pad = np.zeros((b, 1, 1, tk), np.float32)
    pad[:, :, :, tk - max(1, tk // 3):] = -np.inf
    pad[:, :, :, 0] = 0.0
    yield "key_padding", np.broadcast_to(pad, (b, h, tq, tk))
    yield "per_head_row", np.broadcast_to(randn(rng, 1, h, tq, 1), (b, h, tq, tk))
    yield "transposed", np.broadcast_to(randn(rng, tk, tq).T, (b, h, tq, tk))


SHAPES = [  # b, h, tq, tk, d, dv: one row / key, odd sizes, several key blocks and query chunks
    (1, 1, 1, 1, 8, 8),
    (2, 3, 7, 7, 8, 8),
    (1, 2, 129, 129, 32, 32),
    (2, 2, 7, 129, 64, 64),
    (1, 3, 33, 20, 80, 80),
    (1, 1, 5, 300, 32, 24),
    (1, 2, 200, 70, 16, 5),
    (1, 1, 1, 1000, 64, 64),
    (3, 1, 20, 1, 3, 7),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_reference(sdpa, shape):
    b, h, tq, tk, d, dv = shape
    rng = np.random.default_rng(sum(shape))
    q, k, v = randn(rng, b, h, tq, d), randn(rng, b, h, tk, d), randn(rng, b, h, tk, dv)
    for name, mask in masks(rng, b, h, tq, tk):
        for causal in (False, True):
            got = sdpa.run(q, k, v, mask, 0.37 if mask is not None else None, causal)
            want = reference(q, k, v, mask, 0.37 if mask is not None else None, causal)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5, err_msg=f"{name} causal={causal}")


@pytest.mark.parametrize("heads,d", [(12, 32), (4, 80), (3, 8)])
def test_strided_views_of_a_fused_projection(sdpa, heads, d):
    """q, k, v are slices of one [B, T, 3, H, D] qkv buffer read as [B, H, T, D] (no copies); the output
    goes straight into a [B, T, H, D] buffer; nothing outside the view is written."""
    rng = np.random.default_rng(heads + d)
    b, t = 2, 37
    qkv = randn(rng, b, t, 3, heads, d)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    assert not q.flags.c_contiguous
    for causal in (False, True):
        buf = np.full((b, t, heads, d + 3), 9.0, np.float32)  # rows padded: the row stride is not H * D
        out = buf[:, :, :, :d].transpose(0, 2, 1, 3)
        sdpa(q, k, v, out, None, None, causal, 2)
        want = reference(np.ascontiguousarray(q), np.ascontiguousarray(k), np.ascontiguousarray(v), causal=causal)
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=2e-5)
        assert (buf[..., d:] == 9.0).all()


def test_exp_error_bound(sdpa):
    """One query, keys with scores 0 and x <= 0, values 0 and 1: out = e^x / (1 + e^x), whose relative
    error is the softmax exponential's (within 2e-7, gc_attention.c) plus a few roundings."""
    x = np.concatenate([np.linspace(-87.0, 0.0, 60_001), -np.geomspace(1e-6, 87.0, 4_001)]).astype(np.float32)
    n = x.size
    q = np.ones((1, n, 1, 1), np.float32)
    k = np.zeros((1, n, 2, 1), np.float32)
    k[0, :, 1, 0] = x
    v = np.zeros((1, n, 2, 1), np.float32)
    v[0, :, 1, 0] = 1.0
    out = np.zeros((1, n, 1, 1), np.float32)
    sdpa(q, k, v, out, None, 1.0, False, 2)
    e = np.exp(x.astype(np.float64))
    want = e / (1.0 + e)
    rel = np.abs(out.ravel().astype(np.float64) - want) / want
    assert rel.max() < 5e-7, (rel.max(), x[rel.argmax()])
    # below -87.3 a term counts as 0: the other key takes everything
    k[0, :, 1, 0] = -88.0
    sdpa(q, k, v, out, None, 1.0, False, 1)
    assert (out == 0.0).all()


def test_special_values(sdpa):
    rng = np.random.default_rng(7)
    b, h, tq, tk, d = 1, 2, 9, 40, 16
    q, k, v = randn(rng, b, h, tq, d), randn(rng, b, h, tk, d), randn(rng, b, h, tk, d)
    # huge scores do not overflow: the running maximum is subtracted first
    big = sdpa.run(q * 300, k * 300, v)
    np.testing.assert_allclose(big, reference(q * 300, k * 300, v), rtol=1e-4, atol=1e-4)
    # a NaN in a query row poisons that row only
    qn = q.copy()
    qn[0, 1, 4, 3] = np.nan
    out = sdpa.run(qn, k, v)
    assert np.isnan(out[0, 1, 4]).all() and not np.isnan(np.delete(out[0, 1], 4, axis=0)).any()
    # so does an infinite one (a score of +inf: e^(inf - inf) in the reference)
    qn[0, 1, 4, 3] = np.inf
    with np.errstate(invalid="ignore"):
        want = reference(qn, k, v)
    assert np.isnan(want[0, 1, 4]).all()
    np.testing.assert_array_equal(np.isnan(sdpa.run(qn, k, v)), np.isnan(want))
    # fully masked rows (a -inf mask row; causal with the only visible key masked) give zeros
    mask = np.zeros((b, h, tq, tk), np.float32)
    mask[0, 0, 2] = -np.inf
    mask[0, 1, 0, 0] = -np.inf
    for causal in (False, True):
        out = sdpa.run(q, k, v, mask, causal=causal)
        assert (out[0, 0, 2] == 0).all() and (out[0, 1, 0] == 0).all() == causal
        np.testing.assert_allclose(out, reference(q, k, v, mask, causal=causal), rtol=1e-5, atol=2e-5)
    # no keys: zeros, and no work memory asked for
    out = np.full((1, 1, 3, 5), 9.0, np.float32)
    sdpa(np.ones((1, 1, 3, 4), np.float32), np.ones((1, 1, 0, 4), np.float32), np.ones((1, 1, 0, 5), np.float32),
         out, None, 0.5, False, 2)
    assert (out == 0).all() and sdpa.lib.gc_sdpa_work_floats(3, 0, 4, 5, 2) == 0


def test_matches_torch(sdpa):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(11)
    b, h, tq, tk, d = 2, 3, 50, 61, 24
    q, k, v = randn(rng, b, h, tq, d), randn(rng, b, h, tk, d), randn(rng, b, h, tk, d)
    keep = rng.random((b, 1, tq, tk)) > 0.3
    keep[..., 0] = True
    additive = np.where(keep, 0.0, -np.inf).astype(np.float32)
    T = torch.from_numpy
    want = F.scaled_dot_product_attention(T(q), T(k), T(v), attn_mask=T(keep)).numpy()
    got = sdpa.run(q, k, v, np.broadcast_to(additive, (b, h, tq, tk)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)
    want = F.scaled_dot_product_attention(T(q), T(q), T(q), is_causal=True, scale=0.3).numpy()
    np.testing.assert_allclose(sdpa.run(q, q, q, scale=0.3, causal=True), want, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("d", [32, 64, 80])
def test_matches_torch_head_sizes(sdpa, d):
    """The micro-kernels' head sizes (whole tiles at 32 and 64, a narrower tail tile at 80) against torch's
    scaled_dot_product_attention: odd query/key counts (one key vector's tail, two key blocks), causal or
    not, with and without an additive mask; 1, 2 and 3 threads give the same bits (Sdpa.run)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    T = torch.from_numpy
    rng = np.random.default_rng(d)
    for b, h, tq, tk in ((1, 3, 37, 37), (2, 2, 1, 19), (1, 2, 131, 131), (1, 1, 70, 197)):
        q, k, v = randn(rng, b, h, tq, d), randn(rng, b, h, tk, d), randn(rng, b, h, tk, d)
        mask = randn(rng, b, 1, tq, tk)
        for causal in (False, True):
            want = F.scaled_dot_product_attention(T(q), T(k), T(v), is_causal=causal).numpy()
            np.testing.assert_allclose(sdpa.run(q, k, v, causal=causal), want, rtol=1e-5, atol=2e-5,
                                       err_msg=f"{(b, h, tq, tk)} causal={causal}")
        want = F.scaled_dot_product_attention(T(q), T(k), T(v), attn_mask=T(mask)).numpy()
        got = sdpa.run(q, k, v, np.broadcast_to(mask, (b, h, tq, tk)))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5, err_msg=f"{(b, h, tq, tk)} mask")
