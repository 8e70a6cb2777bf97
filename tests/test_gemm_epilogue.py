"""Fused product epilogues (graphc.backend.fusion.gemm_epilogues): a linear layer followed by an
activation, a scalar multiplication and/or a residual addition becomes one gc_sgemm_ep kernel. The
compiled models must agree with PyTorch for every chain, for 1 and 2 threads, at each ISA level of a
default-target library (GRAPHC_ISA), and chains that cannot fuse (a value used twice, a graph output in
the middle, a broadcast residual) must stay separate and still be right."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import graphc
import graphc.nn as gnn
import graphc.nn.functional as gF
from graphc.backend.c import CBackend
from graphc.backend.fusion import gemm_epilogues
from graphc.backend.lowering import lower_program
from graphc.trace import trace

torch = pytest.importorskip("torch")

# name -> (graphc function of the linear's output y and the residual r, torch twin)
CHAINS = {
    "gelu": (lambda y, r: gF.gelu(y), lambda y, r: torch.nn.functional.gelu(y)),
    "gelu_tanh": (lambda y, r: gF.gelu(y, approximate="tanh"),
                  lambda y, r: torch.nn.functional.gelu(y, approximate="tanh")),
    "silu": (lambda y, r: gF.silu(y), lambda y, r: torch.nn.functional.silu(y)),
    "relu": (lambda y, r: gF.relu(y), lambda y, r: torch.relu(y)),
    "relu6": (lambda y, r: gF.relu6(y), lambda y, r: torch.nn.functional.relu6(y)),
    "sigmoid": (lambda y, r: gF.sigmoid(y), lambda y, r: torch.sigmoid(y)),
    "tanh": (lambda y, r: gF.tanh(y), lambda y, r: torch.tanh(y)),
    "residual": (lambda y, r: y + r, lambda y, r: y + r),
    "residual_first": (lambda y, r: r + y, lambda y, r: r + y),
    "scale": (lambda y, r: y * 0.5, lambda y, r: y * 0.5),
    "gelu_scale_residual": (lambda y, r: r + gF.gelu(y) * 0.25, lambda y, r: r + torch.nn.functional.gelu(y) * 0.25),
    "silu_residual": (lambda y, r: gF.silu(y) + r, lambda y, r: torch.nn.functional.silu(y) + r),
}


NAMES = list(CHAINS)


def _models(k, n):
    """torch and graphc twins holding one linear layer per chain (the "scale" one without bias), every
    chain's result an output."""

    def build(nn, fn):
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.ModuleList([nn.Linear(k, n, bias=name != "scale") for name in NAMES])

            def forward(self, x, r):
                return tuple(CHAINS[name][fn](fc(x), r) for name, fc in zip(NAMES, self.fc))

        return M()

    tm = build(torch.nn, 1)
    with torch.no_grad():
        for p in tm.parameters():
            p.copy_(torch.randn(p.shape) / (k ** 0.5 if p.ndim > 1 else 1.0))
    gm = build(gnn, 0)
    gm.load_state_dict(tm.state_dict())
    return tm.eval(), gm.eval()


# (leading shape of x, in features, out features): the dot path (one row), the packed path with odd
# edges, and a depth over one cache block
SHAPES = [((1,), 300, 50), ((2, 37), 29, 53), ((70,), 600, 130)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}x{s[2]}")
def test_fused_chains_match_torch(shape, tmp_path, shared_cache):
    lead, k, n = shape
    tm, gm = _models(k, n)
    rng = np.random.default_rng(k)
    x = rng.standard_normal((*lead, k)).astype(np.float32)
    r = rng.standard_normal((*lead, n)).astype(np.float32)
    kernels = lower_program(trace(gm, (x, r)), CBackend(), name="m").kernels
    # one kernel per chain: the product and its epilogue
    fused = sorted(k.scope for k in kernels if k.ops.startswith("linear+"))
    assert fused == sorted(f"fc.{i}" for i in range(len(NAMES)))
    assert all(k.ops.startswith("linear+") for k in kernels if k.template != "copy.c.j2"), [k.ops for k in kernels]
    cm = graphc.compile(gm, (x, r), cache_dir=shared_cache)
    with torch.no_grad():
        want = tm(torch.from_numpy(x), torch.from_numpy(r))
    got1 = cm(x, r)
    cm.set_num_threads(2)
    got2 = cm(x, r)
    for name, a, b, w in zip(NAMES, got1, got2, want):
        np.testing.assert_allclose(a, w.numpy(), rtol=2e-5, atol=2e-5, err_msg=name)
        assert np.array_equal(a, b), f"{name}: the thread count changed the result"


class _Unfusable(gnn.Module):
    """fc1's output is used twice and fc3's residual broadcasts: neither fuses; fc2's gelu fuses, but not
    the addition after it (the gelu's result is a graph output too). The values stay right."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = gnn.Linear(16, 24), gnn.Linear(16, 24), gnn.Linear(16, 24)

    def forward(self, x, b):
        y = self.fc1(x)
        h = gF.gelu(self.fc2(x))
        return gF.relu(y) + y, h, h + 1.0, self.fc3(x) + b


def test_unfusable_chains_stay_separate(tmp_path, shared_cache):
    m = _Unfusable().eval()
    x = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((24,)).astype(np.float32)
    g = trace(m, (x, b))
    found = {p.scope: [m.op for m in ep.nodes] for p, ep in gemm_epilogues(g).items()}
    assert found == {"fc2": ["gelu"]}
    cm = graphc.compile(m, (x, b), cache_dir=shared_cache)
    ref = graphc.compile(m, (x, b), cache_dir=shared_cache, opt_level=0)
    for got, want in zip(cm(x, b), ref(x, b)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


class _SumOfProducts(gnn.Module):
    """An LSTM cell's gates: the sum of two linears. Each product could take the addition as its
    epilogue with the other as the residual; only one may (both did, and the other product was never
    computed: an undeclared value in the C source); the relu after the residual stays a kernel of its own."""

    def __init__(self):
        super().__init__()
        self.ih, self.hh = gnn.Linear(12, 20), gnn.Linear(8, 20)

    def forward(self, x, h):
        return gF.relu(self.ih(x) + self.hh(h))


def test_a_sum_of_two_products_fuses_into_one_of_them(tmp_path, shared_cache):
    m = _SumOfProducts().eval()
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 12)).astype(np.float32)
    h = rng.standard_normal((3, 8)).astype(np.float32)
    found = {p.scope: [n.op for n in ep.nodes] for p, ep in gemm_epilogues(trace(m, (x, h))).items()}
    assert found == {"ih": ["add"]}
    cm = graphc.compile(m, (x, h), cache_dir=shared_cache)
    sd = {k: v.numpy() for k, v in m.state_dict().items()}
    want = np.maximum(x @ sd["ih.weight"].T + sd["ih.bias"] + h @ sd["hh.weight"].T + sd["hh.bias"], 0)
    np.testing.assert_allclose(cm(x, h), want, rtol=1e-5, atol=1e-5)


def test_isa_levels_agree(tmp_path, shared_cache):
    """One default-target library, run under each GRAPHC_ISA level in its own process."""
    tm, gm = _models(300, 50)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((9, 300)).astype(np.float32)
    r = rng.standard_normal((9, 50)).astype(np.float32)
    out = tmp_path / "export"
    graphc.compile(gm, (x, r), cache_dir=shared_cache, out_dir=out)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "r.npy", r)
    with torch.no_grad():
        want = np.stack([w.numpy() for w in tm(torch.from_numpy(x), torch.from_numpy(r))])
    script = textwrap.dedent(f"""
        import numpy as np, graphc
        cm = graphc.load_compiled({str(out)!r})
        y = cm(np.load({str(tmp_path / 'x.npy')!r}), np.load({str(tmp_path / 'r.npy')!r}))
        np.save({str(tmp_path)!r} + "/y_" + cm.isa + ".npy", np.stack(y))
        print(cm.isa)
    """)
    seen = []
    for level in ("generic", "avx2", "avx512"):
        env = dict(os.environ, GRAPHC_ISA=level)
        res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        isa = res.stdout.strip()
        seen.append(isa)
        np.testing.assert_allclose(np.load(tmp_path / f"y_{isa}.npy"), want, rtol=2e-5, atol=2e-5)
    assert "generic" in seen
