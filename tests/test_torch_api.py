"""PyTorch's free functions, Tensor methods and module-level shims that real model files use, against
PyTorch itself: every case is one function of the module (``m``) that runs unchanged with ``m=torch``
and ``m=graphc`` (the rename-only promise), eagerly over several shapes and dtypes, and compiled to C
in one library with a dynamic batch dim. The registry ops underneath (expm1, log1p, log2) are
also in tests/op_table.py, which runs them through the C and emulated CUDA backends.
Also: the clear error for a torch name graphc lacks, grad-mode context managers, finfo/iinfo,
multinomial, and the jit/fx/checkpoint shims."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import graphc
from graphc import TraceError

F32, F64, I64, I32, BOOL = np.float32, np.float64, np.int64, np.int32, np.bool_


@dataclass
class Case:
    name: str
    fn: Callable[..., Any]  # fn(m, *inputs) with m the torch or the graphc module
    inputs: list[tuple[tuple[Any, ...], Any]]  # (shape with "B" for the batch dim, numpy dtype)
    kind: str = "normal"  # how to draw the data: normal, perm (distinct values), pos (positive), special
    compiled: bool = True  # in the compiled library too (eager-only: data-dependent or creation-only)
    rtol: float = 1e-5


def _data(shape: tuple[int, ...], dt: Any, kind: str, rng: np.random.Generator) -> np.ndarray:
    n = int(np.prod(shape))
    if kind == "perm":  # distinct values, so sorting has no ties to order
        v = rng.permutation(n).astype(np.float64) - n // 2
        return (v / 4 if np.dtype(dt).kind == "f" else v).reshape(shape).astype(dt)
    if np.dtype(dt) == BOOL:
        return rng.integers(0, 2, size=shape).astype(bool)
    if np.dtype(dt).kind in "iu":
        return rng.integers(-4, 5, size=shape).astype(dt)
    x = rng.standard_normal(shape)
    if kind == "pos":
        x = np.abs(x) + 0.05
    if kind == "special":
        flat = x.reshape(-1)
        for i, v in enumerate([np.nan, np.inf, -np.inf, 0.0, -0.0]):
            flat[(7 * i + 3) % flat.size] = v
    return x.astype(dt)


def _shape(spec: tuple[Any, ...], b: int) -> tuple[int, ...]:
    return tuple(b if d == "B" else d for d in spec)


def _flat(out: Any) -> list[np.ndarray]:
    """Outputs (a tensor, or nested tuples of them) as a list of numpy arrays."""
    if isinstance(out, (tuple, list)):
        return [a for o in out for a in _flat(o)]
    if hasattr(out, "detach"):
        return [out.detach().numpy()]
    return [np.asarray(out)]


def _check(got: list[np.ndarray], want: list[np.ndarray], what: str, rtol: float) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} outputs, PyTorch gives {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, f"{what} output {i}: shape {g.shape}, PyTorch {w.shape}"
        assert g.dtype == w.dtype, f"{what} output {i}: dtype {g.dtype}, PyTorch {w.dtype}"
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol, equal_nan=True, err_msg=f"{what} output {i}")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"{what} output {i}")


def _einsum_cases() -> list[Case]:
    eqs = [
        ("bhqd,bhkd->bhqk", [("B", 2, 3, 4), ("B", 2, 5, 4)]),
        ("...ij,...jk->...ik", [("B", 3, 4), (4, 2)]),
        ("bij,bjk->bik", [("B", 3, 4), ("B", 4, 2)]),
        ("ij->ji", [("B", 3)]),
        ("bi,bi->b", [("B", 5), ("B", 5)]),
        ("bi,bj->bij", [("B", 3), ("B", 2)]),
        ("bij->b", [("B", 3, 2)]),
        ("bnd,de->bne", [("B", 3, 4), (4, 6)]),
        ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
        ("bij,jk", [("B", 2, 3), (3, 4)]),  # implicit output: bik
        ("b c, c d -> b d", [("B", 3), (3, 2)]),
    ]
    return [Case(f"einsum{i}", (lambda e: lambda m, *xs: m.einsum(e, *xs))(eq), [(s, F32) for s in shapes])
            for i, (eq, shapes) in enumerate(eqs)]


def _topk_gathered(m, x, *args, **kw):
    """topk's values and the values its indices pick: PyTorch leaves the order of ties open, so with ties
    the indices are checked by what they gather."""
    r = m.topk(x, *args, **kw)
    d = kw.get("dim", args[1] if len(args) > 1 else -1)
    return r.values, m.gather(x, d, r.indices)


def _mm(m, x, a, b):
    return m.addmm(x, a, b, beta=0.5, alpha=2.0), m.addmm(x, a, b), x.addmm(a, b, beta=0)


CASES: list[Case] = [
    Case("roll", lambda m, x: (m.roll(x, (1, -2), (1, 2)), x.roll(3, -1), m.roll(x, 4)), [(("B", 3, 5), F32)]),
    Case("roll_i64", lambda m, x: m.roll(x, -1, 1), [(("B", 4), I64)]),
    Case("roll_batch", lambda m, x: (m.roll(x, 1, 0), m.roll(x, -3, 0)), [(("B", 3), F32)]),
    Case("flip", lambda m, x: (m.flip(x, (0, 2)), x.flip(-1), m.fliplr(x), m.flipud(x), x.flip(1, 2)),
         [(("B", 3, 4), F32)]),
    Case("flip_i64", lambda m, x: m.flip(x, [1]), [(("B", 5), I64)]),
    Case("gather", lambda m, x, i: (m.gather(x, 1, i), x.gather(1, i)), [(("B", 5), F32), (("B", 3), I64)], "idx"),
    Case("index_select", lambda m, x, i: (m.index_select(x, 1, i), x.index_select(0, i[:1] * 0)),
         [(("B", 6), F32), ((4,), I64)], "idx"),
    Case("tril", lambda m, x: (m.tril(x), m.triu(x, 1), x.tril(-1), x.triu(), m.tril(x, diagonal=2)),
         [(("B", 4, 5), F32)]),
    Case("tril_i64", lambda m, x: (m.tril(x), m.triu(x)), [(("B", 3, 3), I64)]),
    Case("predicates", lambda m, x: (m.isnan(x), m.isinf(x), m.isfinite(x), x.isnan(), x.isinf(), x.isfinite(),
                                     m.isposinf(x), m.isneginf(x)), [(("B", 6), F32)], "special"),
    Case("predicates_i64", lambda m, x: (m.isnan(x), m.isinf(x), m.isfinite(x)), [(("B", 4), I64)]),
    Case("unary", lambda m, x: (m.expm1(x), m.log1p(x), m.log2(x), x.expm1(), x.log1p(), x.log2()),
         [(("B", 3, 4), F32)], "pos"),
    Case("unary_f64", lambda m, x: (m.expm1(x), m.log1p(x), m.log2(x)), [(("B", 4), F64)], "pos"),
    Case("unary_int", lambda m, x: (m.expm1(x), m.log2(x.abs() + 1)), [(("B", 4), I64)]),
    Case("logsumexp", lambda m, x: (m.logsumexp(x, 1), x.logsumexp(dim=(0, 2), keepdim=True), m.logsumexp(x, -1)),
         [(("B", 3, 5), F32)]),
    Case("logsumexp_inf", lambda m, x: m.logsumexp(x, 1), [(("B", 5), F32)], "special"),
    Case("addmm", _mm, [((3, 4), F32), ((3, 5), F32), ((5, 4), F32)]),
    Case("baddbmm", lambda m, x, a, b: (m.baddbmm(x, a, b), m.baddbmm(x, a, b, beta=2, alpha=0.5), m.bmm(a, b),
                                        a.bmm(b), x.baddbmm(a, b)),
         [(("B", 3, 4), F32), (("B", 3, 2), F32), (("B", 2, 4), F32)]),
    Case("broadcast", lambda m, x, y: (m.broadcast_to(x, (2, x.shape[0], 3)), x.broadcast_to((2, x.shape[0], 3)),
                                       *m.broadcast_tensors(x, y)), [(("B", 1), F32), ((3,), F32)]),
    Case("aliases", lambda m, x, y: (m.clamp_min(x, -0.5), m.clamp_max(x, 0.3), x.clamp_min(0.1), m.clone(x),
                                     m.detach(x), m.divide(x, y), m.multiply(x, y), m.subtract(x, y),
                                     m.negative(x), m.true_divide(x, y), x.divide(y), x.multiply(2),
                                     x.subtract(y, alpha=2), x.negative(), m.swapaxes(x, 0, 1), x.swapaxes(1, 0),
                                     m.swapdims(x, 0, 1), m.movedim(x, 0, 1), x.moveaxis(1, 0)),
         [(("B", 4), F32), (("B", 4), F32)], "pos"),
    Case("cosine_similarity", lambda m, x, y: (m.nn.functional.cosine_similarity(x, y),
                                               m.nn.functional.cosine_similarity(x, y[:1], dim=-1, eps=1e-6)),
         [(("B", 5), F32), (("B", 5), F32)]),
    Case("normalize", lambda m, x: (m.nn.functional.normalize(x), m.nn.functional.normalize(x, p=1.0, dim=-1)),
         [(("B", 3, 4), F32)]),
    Case("one_hot", lambda m, i: m.nn.functional.one_hot(i, 6), [(("B", 3), I64)], "idx"),
    Case("meshgrid", lambda m, x, y: (*m.meshgrid(x, y, indexing="ij"), *m.meshgrid(x, y, indexing="xy"),
                                      *m.meshgrid([x, y, x], indexing="xy")), [((3,), F32), ((4,), F32)]),
    *_einsum_cases(),
    Case("cumsum", lambda m, x: (m.cumsum(x, 1), x.cumsum(-1), m.cumsum(x, dim=0), x.cumsum(2, dtype=m.float64),
                                 m.cumsum(x[0, 0, 0], 0)), [(("B", 3, 5), F32)]),
    Case("cumsum_f64", lambda m, x: (m.cumsum(x, 0), x.cumsum(1)), [(("B", 7), F64)]),
    Case("cumsum_int", lambda m, x, y, z: (m.cumsum(x, 1), y.cumsum(0), m.cumsum(z, 1), z.cumsum(0, dtype=m.float32),
                                           m.cumsum(x, 1, dtype=m.int32)),
         [(("B", 6), I64), (("B", 2, 3), I32), (("B", 4), BOOL)]),
    Case("cumsum_special", lambda m, x: m.cumsum(x, 1), [(("B", 9), F32)], "special"),
    Case("cumprod", lambda m, x: (m.cumprod(x, 1), x.cumprod(-1), m.cumprod(x, dim=0), x.cumprod(2, dtype=m.float64)),
         [(("B", 3, 5), F32)], "pos"),
    Case("cumprod_int", lambda m, x, y, z: (m.cumprod(x, 1), y.cumprod(0), m.cumprod(z, 1),
                                            x.cumprod(1, dtype=m.int32)),
         [(("B", 6), I64), (("B", 2, 3), I32), (("B", 4), BOOL)]),
    Case("cumprod_special", lambda m, x: (m.cumprod(x, 1), x.cumprod(0)), [(("B", 9), F32)], "special"),
    Case("sort", lambda m, x: (*m.sort(x), *x.sort(1, True), *m.sort(x, dim=0, descending=True),
                               m.argsort(x, 0), x.argsort(dim=-1, descending=True), m.msort(x),
                               m.sort(x, stable=True, dim=2).indices, m.sort(x[0, 0, 0]).indices),
         [(("B", 3, 5), F32)], "perm"),
    Case("sort_ties", lambda m, x: (*m.sort(x, stable=True), *m.sort(x, dim=0, descending=True, stable=True),
                                    m.argsort(x, dim=1, descending=True, stable=True),
                                    m.sort(x, dim=1, stable=True).values),
         [(("B", 7), I64)]),
    Case("sort_dtypes", lambda m, x, y, z: (*m.sort(x, stable=True), *m.sort(y, dim=0, stable=True),
                                            *m.sort(z, dim=1, descending=True, stable=True)),
         [(("B", 6), F64), (("B", 4), I32), (("B", 5), BOOL)]),
    Case("sort_special", lambda m, x: (*m.sort(x, stable=True), *m.sort(x, dim=1, descending=True, stable=True)),
         [(("B", 11), F32)], "special"),
    Case("topk", lambda m, x: (*m.topk(x, 3), *x.topk(2, 1, largest=False), *m.topk(x, 1, dim=0),
                               *m.topk(x, 2, -1, True, False), m.topk(x, k=4, dim=2).values),
         [(("B", 3, 5), F32)], "perm"),
    Case("topk_ties", lambda m, x: (*_topk_gathered(m, x, 3), *_topk_gathered(m, x, 2, 1, False),
                                    *_topk_gathered(m, x, 1, dim=0)), [(("B", 8), I64)]),
    Case("topk_special", lambda m, x: (*_topk_gathered(m, x, 4), *_topk_gathered(m, x, 3, largest=False)),
         [(("B", 10), F32)], "special"),
    Case("sort_inplace_values", lambda m, x: (x.clone().sort(1).values.cumsum_(1), x.clone().neg_().argsort(1)),
         [(("B", 6), F32)], "perm"),
    Case("scan_inplace_through_views",
         lambda m, x: (lambda y: (y[:, 1:].cumsum_(1), y[1:].cumprod_(0), y))(x.clone()), [((3, 5), F32)]),
    Case("cumsum_inplace", lambda m, x: (x.clone().cumsum_(1), x.clone().cumprod_(0), x), [(("B", 4), F32)]),
]


class Fn(graphc.nn.Module):
    """A function as a module (graphc.trace and graphc.compile take modules)."""

    def __init__(self, fn: Callable[..., Any]):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


def _inputs(case: Case, b: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for k, (spec, dt) in enumerate(case.inputs):
        shape = _shape(spec, b)
        if case.kind == "idx" and np.dtype(dt).kind == "i":
            hi = 6 if case.name == "one_hot" else _shape(case.inputs[0][0], b)[-1]
            out.append(rng.integers(0, hi, size=shape).astype(dt))
        else:
            out.append(_data(shape, dt, case.kind if k == 0 or case.kind != "special" else "normal", rng))
    return out


def _torch_out(torch, case: Case, arrays: list[np.ndarray]) -> list[np.ndarray]:
    return _flat(case.fn(torch, *[torch.from_numpy(a.copy()) for a in arrays]))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_eager_matches_torch(case):
    torch = pytest.importorskip("torch")
    for b in (1, 3):
        arrays = _inputs(case, b, seed=b)
        got = _flat(case.fn(graphc, *[graphc.tensor(a) for a in arrays]))
        _check(got, _torch_out(torch, case, arrays), f"{case.name} (B={b})", case.rtol)


def _compiled_cases() -> list[Case]:
    return [c for c in CASES if c.compiled]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory, shared_cache):
    """Every compiled case in one C library: inputs xs0, xs1, ... with the batch dim B dynamic."""
    cases = _compiled_cases()
    slots: list[tuple[Case, list[int]]] = []
    specs: list[tuple[Case, int]] = []
    for c in cases:
        slots.append((c, list(range(len(specs), len(specs) + len(c.inputs)))))
        specs += [(c, k) for k in range(len(c.inputs))]

    def forward(*xs):
        return {f"c{j}": c.fn(graphc, *[xs[i] for i in idx]) for j, (c, idx) in enumerate(slots)}

    example = []
    for c, _ in slots:
        example += [graphc.tensor(a) for a in _inputs(c, 2)]
    dynamic = {f"xs{i}": {0: graphc.Dim("B", min=1, max=8)} for i, (c, k) in enumerate(specs)
               if c.inputs[k][0][:1] == ("B",)}
    lib = graphc.compile(Fn(forward), tuple(example), dynamic, name="torch_api",
                         cache_dir=shared_cache)
    return lib, slots


@pytest.mark.parametrize("b", [1, 5])
def test_compiled_matches_torch(compiled, b):
    torch = pytest.importorskip("torch")
    lib, slots = compiled
    feeds: dict[str, np.ndarray] = {}
    want: dict[str, list[np.ndarray]] = {}
    for c, idx in slots:
        arrays = _inputs(c, b, seed=10 + b)
        feeds.update({f"xs{i}": a for i, a in zip(idx, arrays)})
        want[c.name] = _torch_out(torch, c, arrays)
    out = lib.run(**feeds)
    for j, (c, _) in enumerate(slots):
        got = [out[k] for k in out if k == f"c{j}" or k.startswith(f"c{j}_")]
        _check(got, want[c.name], f"compiled {c.name} (B={b})", c.rtol)


# ------------------------------------------------------------------------------------------ errors
def test_missing_name_is_one_clear_attribute_error():
    with pytest.raises(AttributeError) as e:
        graphc.nn.functional.grid_sampel  # noqa: B018
    msg = str(e.value)
    assert msg.startswith("graphc.nn.functional.grid_sampel is not supported") and "docs/ops.md" in msg
    assert isinstance(e.value, graphc.GraphcError)
    with pytest.raises(AttributeError, match=r"Nearest supported names: graphc\.nn\.Conv\dd"):
        graphc.nn.Conv4d  # noqa: B018
    with pytest.raises(AttributeError, match=r"graphc\.einsun is not supported.*graphc\.einsum"):
        graphc.einsun  # noqa: B018
    with pytest.raises(ImportError, match="cannot import name"):
        from graphc import not_a_torch_function  # noqa: F401
    # probes by libraries (hasattr / getattr with a default) keep working and stay cheap
    assert not hasattr(graphc, "__wrapped__") and not hasattr(graphc.nn, "_pytestfixturefunction")
    assert getattr(graphc.nn.functional, "no_such_fn", None) is None
    assert str(pytest.raises(AttributeError, getattr, graphc, "__array_interface__").value) == \
        "module 'graphc' has no attribute '__array_interface__'"


def test_multinomial_eager_and_refused_in_a_trace():
    graphc.manual_seed(0)
    p = graphc.tensor([[0.0, 1.0, 3.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    s = graphc.multinomial(p, 4000, replacement=True)
    assert s.shape == (2, 4000) and s.dtype is graphc.int64
    freq = np.bincount(s.numpy()[0], minlength=4) / 4000
    np.testing.assert_allclose(freq, [0, 0.25, 0.75, 0], atol=0.03)  # zero-probability classes never come
    no_rep = p[1].multinomial(4)
    assert sorted(no_rep.tolist()) == [0, 1, 2, 3]
    graphc.manual_seed(3)
    a = graphc.multinomial(p, 5, True)
    graphc.manual_seed(3)
    assert graphc.equal(a, graphc.multinomial(p, 5, True))  # seeded: reproducible
    with pytest.raises(RuntimeError, match="without replacement"):
        graphc.multinomial(p, 3)
    with pytest.raises(RuntimeError, match="element < 0"):
        graphc.multinomial(graphc.tensor([1.0, -1.0]), 1)
    with pytest.raises(TraceError, match=r"multinomial draws random samples.*sample outside"):
        graphc.trace(Fn(lambda x: graphc.multinomial(x.softmax(-1), 1)), (graphc.rand(2, 3),))


def test_sort_and_topk_return_named_tuples_and_refuse_a_bad_k():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(F32)
    for m in (torch, graphc):
        r, s = m.topk(m.tensor(x), 2), m.tensor(x).sort(descending=True)
        assert type(r).__name__ == "topk" and type(s).__name__ == "sort" and isinstance(r, tuple)
        assert r.indices.dtype == m.int64 and s.indices.dtype == m.int64
        values, indices = r
        np.testing.assert_array_equal(values.numpy(), s.values.numpy()[:, :2])
        np.testing.assert_array_equal(indices.numpy(), s.indices.numpy()[:, :2])
        with pytest.raises(RuntimeError, match="selected index k out of range"):
            m.topk(m.tensor(x), 6)
    assert graphc.return_types.topk is type(graphc.topk(graphc.tensor(x), 1))
    # along a dynamic dim, k above its size is reported by the compiled library at run time
    lib = graphc.compile(Fn(lambda x: x.topk(3, dim=0).indices), (graphc.tensor(np.ones((4, 2), F32)),),
                         {"xs0": {0: graphc.Dim("B", min=1, max=8)}}, name="topk_k")
    np.testing.assert_array_equal(lib.run(xs0=np.arange(10, dtype=F32).reshape(5, 2))["output"],
                                  [[4, 4], [3, 3], [2, 2]])
    with pytest.raises(graphc.GraphcError, match=r"k=3 is larger than the sorted dim"):
        lib.run(xs0=np.ones((2, 2), F32))


def test_dynamic_dims_in_roll_flip_and_einsum_stay_symbolic():
    g = graphc.trace(Fn(lambda x: (x.roll(2, 0), x.flip(0), graphc.einsum("bi,bj->bij", x, x))),
                     (graphc.randn(4, 3),), {"xs0": {0: "B"}})
    assert [str(v.type) for _, v in g.outputs] == ["f32[B,3]", "f32[B,3]", "f32[B,3,3]"]


def test_einsum_errors():
    x = graphc.randn(3, 3)
    with pytest.raises(NotImplementedError, match="repeated subscripts"):
        graphc.einsum("ii->i", x)
    with pytest.raises(ValueError, match="2 subscripts for an operand with 2 dims|3 subscripts"):
        graphc.einsum("ijk->i", x)
    with pytest.raises(ValueError, match="operand term"):
        graphc.einsum("ij,jk->ik", x)


# ------------------------------------------------------------------------------------------ grad mode
def _grad_mode_checks(m):
    assert m.is_grad_enabled()
    with m.no_grad():
        assert not m.is_grad_enabled()
        with m.enable_grad():
            assert m.is_grad_enabled()
        assert not m.is_grad_enabled()
    assert m.is_grad_enabled()

    @m.no_grad()
    def f():
        return m.is_grad_enabled()

    @m.no_grad
    def g():
        return m.is_grad_enabled()

    @m.inference_mode()
    def h():
        return m.is_grad_enabled(), m.is_inference_mode_enabled()

    @m.inference_mode
    def h2():
        return m.is_inference_mode_enabled()

    assert (f(), g(), h(), h2()) == (False, False, (False, True), True), m.__name__
    assert m.is_grad_enabled() and not m.is_inference_mode_enabled()
    with m.inference_mode(False):
        assert m.is_grad_enabled() and not m.is_inference_mode_enabled()
    m.set_grad_enabled(False)
    assert not m.is_grad_enabled()
    m.set_grad_enabled(True)
    with m.set_grad_enabled(False):
        assert not m.is_grad_enabled()
    assert m.is_grad_enabled()
    with pytest.raises(AssertionError, match="too long"):
        m._assert(m.tensor(3) > 4, "too long")
    m._assert(True, "fine")


def test_grad_mode_context_managers_and_decorators():
    """The same checks pass on PyTorch and on graphc."""
    torch = pytest.importorskip("torch")
    _grad_mode_checks(torch)
    _grad_mode_checks(graphc)


def test_assert_on_traced_values_is_a_trace_error():
    with pytest.raises(TraceError, match="bool"):
        graphc.trace(Fn(lambda x: (graphc._assert(x.sum() > 0, "positive"), x)[1]), (graphc.rand(3),))


def test_finfo_iinfo_match_torch():
    torch = pytest.importorskip("torch")
    for g, t in ((graphc.float32, torch.float32), (graphc.float64, torch.float64), (graphc.float16, torch.float16),
                 (graphc.bfloat16, torch.bfloat16)):
        a, b = graphc.finfo(g), torch.finfo(t)
        for k in ("bits", "eps", "max", "min", "tiny", "smallest_normal", "resolution"):
            assert getattr(a, k) == getattr(b, k), (g, k)
        assert a.dtype == b.dtype
    assert graphc.finfo().eps == torch.finfo().eps
    for g, t in ((graphc.int64, torch.int64), (graphc.int32, torch.int32), (graphc.uint8, torch.uint8),
                 (graphc.int8, torch.int8), (graphc.int16, torch.int16)):
        a, b = graphc.iinfo(g), torch.iinfo(t)
        assert (a.bits, a.min, a.max, a.dtype) == (b.bits, b.min, b.max, b.dtype)
    with pytest.raises(TypeError, match="not a floating-point"):
        graphc.finfo(graphc.int32)
    with pytest.raises(TypeError, match="not an integer"):
        graphc.iinfo(graphc.float32)


# ------------------------------------------------------------------------------------------ shims
def test_jit_fx_checkpoint_shims():
    import graphc.jit
    import graphc.utils.checkpoint

    assert graphc.jit.is_scripting() is False and graphc.jit.is_tracing() is False
    seen = []

    def fwd(x):
        seen.append(graphc.jit.is_tracing())
        return graphc.utils.checkpoint.checkpoint(lambda y, s: y * s, x, 2.0, use_reentrant=False)

    g = graphc.trace(Fn(fwd), (graphc.ones(2),))
    assert seen == [True] and [n.op for n in g.nodes] == ["constant", "mul"]
    assert graphc.jit.is_tracing() is False

    @graphc.jit.unused
    def a():
        return 1

    @graphc.jit._overload_method
    def b():
        return 2

    @graphc.jit.ignore
    def c():
        return 3

    assert (a(), b(), c(), graphc.jit.ignore(drop=True)(a)()) == (1, 2, 3, 1)
    assert graphc.jit.script(fwd) is fwd and graphc.jit.annotate(list, [1]) == [1]
    assert graphc.fx.wrap("len") == "len" and graphc.fx.wrap(a) is a
    seq = graphc.nn.Sequential(graphc.nn.ReLU(), graphc.nn.Identity())
    x = graphc.tensor([-1.0, 2.0])
    assert graphc.utils.checkpoint.checkpoint_sequential(seq, 2, x).tolist() == [0.0, 2.0]


def test_legacy_tensor_types_annotate_construct_and_check():
    def f(x: graphc.LongTensor | None = None, y: graphc.FloatTensor | None = None) -> graphc.BoolTensor | None:
        return None

    assert f() is None and "LongTensor" in repr(f.__annotations__["x"])
    t = graphc.LongTensor([1, 2])
    assert t.dtype is graphc.int64 and t.type() == "graphc.LongTensor"
    assert isinstance(t, graphc.LongTensor) and not isinstance(t, graphc.FloatTensor)
    assert isinstance(t, graphc.Tensor)
    assert graphc.FloatTensor(2, 3).shape == (2, 3) and graphc.FloatTensor(2, 3).dtype is graphc.float32
    assert graphc.BoolTensor([True]).dtype is graphc.bool


def test_function_lists_agree_with_torch_signatures():
    """Every name this file exercises exists in torch too: the test cases above run as written on both."""
    torch = pytest.importorskip("torch")
    for name in graphc.functions.__all__:
        assert hasattr(torch, name), name
    for name in graphc.functions.METHODS:
        assert hasattr(torch.Tensor, name), name
    assert math.isclose(graphc.finfo(graphc.float32).eps, 2 ** -23)
