"""Tests of graphc.passes: each pass on graphs that contain its pattern and on graphs that nearly do.

Every check goes through :func:`check_pass`, which asserts
  (1) the structure changed or not as expected (op counts / parameter names, by the caller),
  (2) interpreter outputs before and after agree on random inputs,
  (3) the verifier accepts the result, the input graph and its arrays are untouched, and
  (4) the printed result is deterministic, parses back to the same text, and `changed` is honest.
Graphs are built through the Tensor API + graphc.trace (graphc.nn.Module subclasses) and directly
with Graph.add_node. A hypothesis property test checks optimize(level=2) on random elementwise/shape
graphs.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import graphc
from graphc import nn
from graphc.errors import ShapeError, VerifyError
from graphc.ir import Graph, Value, interpret, parse, verify
from graphc.ops import get_op
from graphc.passes import (
    PASSES,
    PIPELINE,
    Pass,
    PassError,
    PassResult,
    canonicalize,
    cse,
    dce,
    fold_batchnorm,
    fold_constants,
    merge_lora,
    optimize,
    passes_for_level,
    register_pass,
    remove_noops,
    run_pass,
)
from graphc.sym import Sym
from graphc.tensor import apply
from graphc.trace import trace

f32, f64, f16, i64 = graphc.float32, graphc.float64, graphc.float16, graphc.int64


# ------------------------------------------------------------------------------------------- helpers
class GB:
    """A tiny graph builder over Graph.add_node (types come from the op rules)."""

    def __init__(self, name: str = "g", dims: dict[str, tuple[int, int]] | None = None):
        self.g = Graph(name)
        self.g.dims.update(dims or {})
        self.rng = np.random.default_rng(0)

    def input(self, name: str, shape: tuple, dt: Any = f32) -> Value:
        shape = tuple(Sym.var(d) if isinstance(d, str) else d for d in shape)
        return self.g.add_input(name, get_op("full").infer_type([], {"shape": shape, "value": 0, "dtype": dt}))

    def param(self, name: str, data: np.ndarray | tuple, dt: Any = f32, *, with_data: bool = True) -> Value:
        if isinstance(data, tuple):
            data = self.rng.standard_normal(data)
        data = np.asarray(data).astype(dt.np)
        t = get_op("full").infer_type([], {"shape": data.shape, "value": 0, "dtype": dt})
        return self.g.add_param(name, t, data if with_data else None)

    def op(self, op: str, *ins: Value | None, scope: str = "", **attrs: Any) -> Value:
        opdef = get_op(op)
        bound = opdef.bind_attrs(attrs)
        t = opdef.infer_type([None if v is None else v.type for v in ins], bound)
        return self.g.add_node(op, ins, bound, t, scope=scope).out

    def const(self, value: Any, dt: Any = f32) -> Value:
        return self.op("constant", value=value, dtype=dt)

    def done(self, *outs: Value, **named: Value) -> Graph:
        pairs = [(f"out{i}", v) for i, v in enumerate(outs)] + list(named.items())
        self.g.set_outputs(pairs)
        verify(self.g)
        return self.g


def ops(g: Graph) -> Counter:
    return Counter(n.op for n in g.nodes)


def random_inputs(g: Graph, seed: int, dim_value: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    env = {s: min(max(dim_value, g.dims.get(s, (1, 1))[0]), g.dims.get(s, (1, 10**9))[1]) for s in g.symbols()}
    out = {}
    for v in g.inputs:
        shape = tuple(d.evaluate(env) if isinstance(d, Sym) else d for d in v.type.shape)
        dt = v.type.dtype
        if dt.is_floating_point:
            a = rng.standard_normal(shape)
        elif dt is graphc.bool:
            a = rng.random(shape) < 0.5
        else:
            a = rng.integers(0, 5, shape)  # small non-negative: valid indices for embeddings too
        out[v.name] = np.asarray(a).astype(dt.np)
    return out


def assert_same_outputs(g1: Graph, g2: Graph, *, rtol: float = 1e-5, atol: float = 1e-6, seeds=(0, 1, 2),
                        dim_values=(3,)) -> None:
    for dv in dim_values:
        for s in seeds:
            feeds = random_inputs(g1, s, dv)
            a, b = interpret(g1, feeds), interpret(g2, feeds)
            assert list(a) == list(b)
            for k in a:
                assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype, k
                np.testing.assert_allclose(b[k].astype(np.float64), a[k].astype(np.float64), rtol=rtol, atol=atol,
                                           err_msg=f"output {k!r}")


def _snapshot(g: Graph) -> tuple[str, dict[str, bytes]]:
    return str(g), {k: np.asarray(v).tobytes() for k, v in g.param_data.items()}


def check_pass(p: Pass | Callable[[Graph], Graph], g: Graph, *, expect_change: bool | None = None,
               rtol: float = 1e-5, atol: float = 1e-6, dim_values=(3,), seeds=(0, 1, 2)) -> Graph:
    """Run a pass (or optimize) and check semantics, verification, purity and determinism."""
    before = _snapshot(g)
    if isinstance(p, Pass):
        out, changed = p(g, verify=True)
        again, changed2 = p(g, verify=True)
        assert changed == changed2
        if expect_change is not None:
            assert changed is expect_change, f"{p.name}: changed={changed}\n{g}\n{out}"
        if not changed:
            assert str(out) == str(g), f"{p.name} reported no change but changed the graph"
    else:
        out, again = p(g), p(g)
    assert _snapshot(g) == before, "the pass modified its input graph or its arrays"
    verify(out)
    text = str(out)
    assert str(again) == text, "the pass is not deterministic"
    assert _snapshot(again)[1] == _snapshot(out)[1]
    assert str(parse(text)) == text
    assert out is not g
    assert_same_outputs(g, out, rtol=rtol, atol=atol, dim_values=dim_values, seeds=seeds)
    return out


class Fn(nn.Module):
    """A module whose forward is a function of (self, *inputs); parameters/buffers given by name."""

    def __init__(self, fn: Callable[..., Any], params: dict[str, Any] | None = None,
                 buffers: dict[str, Any] | None = None, **children: nn.Module):
        super().__init__()
        self._fn = fn
        for k, v in (params or {}).items():
            setattr(self, k, nn.Parameter(graphc.tensor(np.asarray(v, dtype=np.float32))))
        for k, v in (buffers or {}).items():
            self.register_buffer(k, graphc.tensor(np.asarray(v, dtype=np.float32)))
        for k, m in children.items():
            setattr(self, k, m)

    def forward(self, *xs: Any) -> Any:
        return self._fn(self, *xs)


def rnd(*shape: int, seed: int = 0, lo: float | None = None) -> np.ndarray:
    a = np.random.default_rng(seed).standard_normal(shape)
    return np.abs(a) + lo if lo is not None else a


# ----------------------------------------------------------------------------------- protocol/registry
def test_registry_lists_every_pass_with_doc_and_level() -> None:
    for name in ("dce", "cse", "remove_noops", "fold_constants", "fold_batchnorm", "merge_lora", "canonicalize"):
        p = PASSES[name]
        assert p.name == name and p.doc and p.level in (1, 2)
        assert name in PIPELINE
    assert PASSES["dce"] is dce and PASSES["merge_lora"].needs_baked_weights
    assert [p.level for p in (dce, cse, remove_noops)] == [1, 1, 1]
    assert all(p.level == 2 for p in (fold_constants, fold_batchnorm, merge_lora, canonicalize))


def test_run_pass_by_name_and_unknown_name() -> None:
    b = GB()
    x = b.input("x", (2, 3))
    b.op("exp", x)
    g = b.done(b.op("relu", x))
    res = run_pass("dce", g, verify=True)
    assert isinstance(res, PassResult) and res.changed and ops(res.graph) == {"relu": 1}
    with pytest.raises(ValueError, match="unknown pass 'dec'.*dce"):
        run_pass("dec", g)


def test_verify_after_each_pass_names_the_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    def corrupt(g: Graph) -> bool:
        """Breaks the graph on purpose."""
        g.nodes[0].out.type = g.nodes[0].out.type.with_dtype(f64)
        return True

    bad = register_pass("corrupt_for_test", level=3)(corrupt)
    try:
        b = GB()
        g = b.done(b.op("relu", b.input("x", (2,))))
        out, changed = bad(g)  # verification is off by default
        assert changed
        with pytest.raises(VerifyError, match="after pass 'corrupt_for_test'"):
            bad(g, verify=True)
        monkeypatch.setenv("GRAPHC_VERIFY_PASSES", "1")
        with pytest.raises(VerifyError, match="after pass 'corrupt_for_test'"):
            bad(g)
        with pytest.raises(ValueError, match="registered twice"):
            register_pass("corrupt_for_test", level=3)(corrupt)
    finally:
        del PASSES["corrupt_for_test"]


# ------------------------------------------------------------------------------------------------ dce
def test_dce_drops_unused_nodes_and_params() -> None:
    b = GB()
    x = b.input("x", (2, 3))
    unused_in = b.input("y", (4,))
    w, dead_w = b.param("w", (3,)), b.param("dead.w", (3,))
    b.op("exp", b.op("mul", x, dead_w))  # a dead chain using a parameter
    b.op("neg", unused_in)
    g = b.done(b.op("add", x, w))
    out = check_pass(dce, g, expect_change=True)
    assert ops(out) == {"add": 1}
    assert list(out.params) == ["w"] and list(out.param_data) == ["w"]
    assert [v.name for v in out.inputs] == ["x", "y"]  # inputs are the interface: kept
    check_pass(dce, out, expect_change=False)


def test_dce_keeps_a_parameter_returned_directly() -> None:
    b = GB()
    x = b.input("x", (2,))
    w = b.param("w", (2,))
    g = b.done(b.op("relu", x), w)
    out = check_pass(dce, g, expect_change=False)
    assert list(out.params) == ["w"]


# ------------------------------------------------------------------------------------------------ cse
def test_cse_merges_repeated_work_and_commuted_operands() -> None:
    def f(m: Any, x: Any) -> Any:
        a = x.exp() + x.exp()           # two exps
        c = (x * 2.0) + (x * 2.0)       # two constants 2.0, two muls
        return a * c + c * a            # commuted mul

    g = trace(Fn(f), (graphc.randn(2, 3),))
    out = check_pass(cse, g, expect_change=True)
    assert ops(out) == {"exp": 1, "constant": 1, "mul": 2, "add": 3}
    check_pass(cse, out, expect_change=False)


def test_cse_keeps_different_constants_attrs_and_operand_order() -> None:
    b = GB()
    x = b.input("x", (3, 3))
    outs = [
        b.op("add", x, b.const(0.0)), b.op("add", x, b.const(-0.0)),        # +0 and -0 differ
        b.op("add", b.op("cast", x, dtype=f64), b.const(1.0, f64)),
        b.op("cast", b.op("add", x, b.const(1.0)), dtype=f64),            # same value, other dtype
        b.op("sub", x, b.op("relu", x)), b.op("sub", b.op("relu", x), x),  # not commutative
        b.op("permute", x, dims=(1, 0)), b.op("softmax", x, dim=0), b.op("softmax", x, dim=1),
        b.op("add", x, b.const(float("nan"))), b.op("add", x, b.const(float("nan"))),  # NaN == NaN here
    ]
    g = b.done(*outs)
    out = check_pass(cse, g, expect_change=True)
    consts = sorted(repr(n.attrs["value"]) + n.attrs["dtype"].short for n in out.nodes if n.op == "constant")
    assert consts == ["-0.0f32", "0.0f32", "1.0f32", "1.0f64", "nanf32"]
    assert ops(out)["relu"] == 1 and ops(out)["sub"] == 2 and ops(out)["softmax"] == 2
    assert ops(out)["add"] == 5


# --------------------------------------------------------------------------------------- remove_noops
def test_remove_noops_removes_every_kind() -> None:
    b = GB(dims={"B": (1, 8)})
    x = b.input("x", ("B", 3))
    y = b.op("identity", x)
    y = b.op("dropout", y, p=0.25)
    y = b.op("reshape", y, shape=(Sym.var("B"), 3))
    y = b.op("permute", y, dims=(0, 1))
    y = b.op("expand", y, shape=(Sym.var("B"), 3))
    y = b.op("cast", y, dtype=f32)
    y = b.op("slice", y, dim=1, start=0, end=3, step=1)
    y = b.op("mul", y, b.const(1.0))
    y = b.op("mul", b.const(1.0), y)
    y = b.op("add", y, b.const(0.0))
    y = b.op("add", b.const(-0.0), y)
    y = b.op("sub", y, b.const(0.0))
    y = b.op("div", y, b.const(1.0))
    y = b.op("add", y, b.op("full", shape=(3,), value=0.0, dtype=f32))
    y = b.op("concat", y, dim=1)
    y = b.op("pad", y, pads=(0, 0, 0, 0))
    g = b.done(b.op("relu", y))
    out = check_pass(remove_noops, g, expect_change=True, dim_values=(1, 3))
    assert ops(out) == {"relu": 1}
    assert out.nodes[0].inputs[0] is out.inputs[0]
    check_pass(remove_noops, out, expect_change=False)


def test_remove_noops_keeps_near_misses() -> None:
    b = GB()
    x = b.input("x", (3, 3))
    ones = b.param("ones", np.ones(3))  # all ones, but a parameter: its value may change at load time
    outs = [
        b.op("reshape", x, shape=(9,)),
        b.op("permute", x, dims=(1, 0)),              # same type (square), not the identity
        b.op("expand", b.op("relu", x), shape=(2, 3, 3)),
        b.op("cast", x, dtype=f64),
        b.op("slice", x, dim=0, start=1, end=3, step=1),
        b.op("mul", x, b.const(2.0)),
        b.op("add", x, b.op("full", shape=(2, 3, 3), value=0.0, dtype=f32)),  # broadcasts x up
        b.op("mul", x, ones),
        b.op("sub", b.const(0.0), x),                 # 0 - x is not x
        b.op("div", b.const(1.0), x),
        b.op("concat", x, x, dim=0),
    ]
    g = b.done(*outs)
    out = check_pass(remove_noops, g, expect_change=False)
    assert ops(out) == ops(g)


def test_remove_noops_on_traced_dropout_and_identity_views() -> None:
    def f(m: Any, x: Any) -> Any:
        y = apply("dropout", x, p=0.5)
        y = y.reshape(y.shape[0], 4).view(-1, 4) * 1
        return apply("identity", y) + 0

    g = trace(Fn(f), (graphc.randn(2, 4),), dynamic={"xs0": 0})
    out = check_pass(remove_noops, g, expect_change=True)
    assert "dropout" not in ops(out) and "identity" not in ops(out)
    assert "mul" not in ops(out) and "add" not in ops(out)


# ------------------------------------------------------------------------------------- fold_constants
def test_fold_constants_folds_casts_transposes_and_weight_expressions() -> None:
    b = GB()
    x = b.input("x", (4, 2, 3))
    w16 = b.param("w16", (3,), f16)
    wb = b.param("attn.wb", (4, 5, 3))                 # a batched weight used transposed
    s = b.param("s", (3,))
    y = b.op("mul", x, b.op("cast", w16, dtype=f32))
    y = b.op("matmul", y, b.op("permute", wb, dims=(0, 2, 1)))
    z = b.op("add", b.op("mul", s, b.const(2.0)), b.const(1.0), scope="block")
    k = b.op("mul", b.const(3.0), b.op("add", b.const(1.0), b.const(0.5)))   # 0-d, constants only
    g = b.done(b.op("add", y, b.op("sum", z, dims=(0,))), b.op("mul", x, k))
    out = check_pass(fold_constants, g, expect_change=True)
    assert ops(out) == {"mul": 2, "matmul": 1, "add": 1, "constant": 1}
    assert list(out.params) == ["w16.cast", "attn.wb.permute", "s.mul.add.sum"]  # the chain's name grows
    assert out.params["attn.wb.permute"].type.shape == (4, 3, 5)
    np.testing.assert_array_equal(out.param_data["attn.wb.permute"], np.transpose(g.param_data["attn.wb"], (0, 2, 1)))
    assert out.param_data["w16.cast"].dtype == np.float32
    const = next(n for n in out.nodes if n.op == "constant")
    assert const.attrs == {"value": 4.5, "dtype": f32}
    check_pass(fold_constants, out, expect_change=False)


def test_fold_constants_names_are_scoped_and_deduplicated() -> None:
    b = GB()
    x = b.input("x", (3,))
    outs = [b.op("add", x, b.op("arange", end=3, dtype=f32, scope="pos") if i == 0
                 else b.op("mul", b.op("arange", end=3, dtype=f32), b.const(float(i)), scope="pos"))
            for i in range(3)]
    g = b.done(*outs)
    out = check_pass(fold_constants, g, expect_change=True)
    assert list(out.params) == ["pos.mul", "pos.mul_1"]


def test_fold_constants_zero_d_from_a_parameter_stays_a_parameter() -> None:
    b = GB()
    x = b.input("x", (3,))
    t = b.param("temperature", np.asarray(2.0))
    g = b.done(b.op("mul", x, b.op("reciprocal", t)))
    out = check_pass(fold_constants, g, expect_change=True)
    assert "constant" not in ops(out) and out.params["temperature.reciprocal"].type.shape == ()


def test_fold_constants_near_misses() -> None:
    b = GB(dims={"B": (1, 4)})
    x = b.input("x", ("B", 3))
    w = b.param("w", (3,))
    nodata = b.param("nodata", (3,), with_data=False)
    outs = [
        b.op("add", b.op("expand", w, shape=(300, 3)), b.const(1.0)),                # a big broadcast
        b.op("add", b.op("full", shape=(200, 200), value=1.0, dtype=f32), b.const(1.0)),  # big full
        b.op("add", x, w),                                                             # a runtime input
        b.op("neg", nodata),                                                           # no data to fold
        b.op("add", x, b.op("full", shape=(Sym.var("B"), 3), value=2.0, dtype=f32)),   # dynamic shape
    ]
    g = b.done(*outs)
    g.param_data["nodata"] = np.zeros(3, np.float32)  # for the interpreter only ...
    out, changed = fold_constants(_without_data(g, "nodata"), verify=True)
    assert ops(out)["expand"] == 1 and ops(out)["full"] == 2 and ops(out)["neg"] == 1
    assert set(out.params) == {"w", "nodata"}
    out2 = check_pass(fold_constants, g)  # with data, only the neg folds
    assert set(out2.params) == {"w", "nodata.neg"} and ops(out2)["expand"] == 1


def _without_data(g: Graph, name: str) -> Graph:
    h = g.copy()
    h.param_data = {k: v for k, v in h.param_data.items() if k != name}
    return h


def test_fold_constants_reports_an_op_that_always_fails() -> None:
    b = GB()
    x = b.input("x", (2,))
    table = b.param("table", (4, 2))
    idx = b.param("idx", np.array([1, 7]), i64)
    g = b.done(b.op("add", x, b.op("sum", b.op("index_select", table, idx, dim=0), dims=(0,))))
    with pytest.raises(PassError, match="index_select.*every run.*out of bounds"):
        fold_constants(g)


def test_fold_constants_is_independent_of_parameter_values() -> None:
    b = GB()
    x = b.input("x", (2, 3))
    w = b.param("w", (3,), f16)
    g = b.done(b.op("mul", x, b.op("exp", b.op("cast", w, dtype=f32))))
    g2 = g.copy()
    g2.param_data = {"w": np.full(3, np.inf, np.float16)}
    a, c = fold_constants(g).graph, fold_constants(g2).graph
    assert str(a) == str(c) and list(a.params) == ["w.cast.exp"]


# ------------------------------------------------------------------------------------- fold_batchnorm
def _bn_params(c: int, seed: int) -> dict[str, np.ndarray]:
    return {"bn_w": rnd(c, seed=seed), "bn_b": rnd(c, seed=seed + 1)}


def _bn_buffers(c: int, seed: int) -> dict[str, np.ndarray]:
    return {"mean": rnd(c, seed=seed + 2), "var": rnd(c, seed=seed + 3, lo=0.3)}


def _bn(m: Any, y: Any, affine: bool = True) -> Any:
    return apply("batch_norm", y, m.mean, m.var, m.bn_w if affine else None, m.bn_b if affine else None, eps=1e-3)


@pytest.mark.parametrize("conv_bias", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_fold_batchnorm_into_conv2d(conv_bias: bool, affine: bool) -> None:
    params = {"weight": rnd(4, 3, 3, 3), **_bn_params(4, 1)}
    if conv_bias:
        params["bias"] = rnd(4, seed=9)

    def f(m: Any, x: Any) -> Any:
        y = apply("conv", x, m.weight, m.bias if conv_bias else None, stride=(2, 1), padding=(1, 1), dilation=(1, 1))
        return _bn(m, y, affine).relu()

    g = trace(Fn(f, params, _bn_buffers(4, 1)), (graphc.randn(2, 3, 7, 6),), dynamic={"xs0": 0})
    out = check_pass(fold_batchnorm, g, expect_change=True, rtol=1e-4, atol=1e-5)
    assert ops(out) == {"conv": 1, "relu": 1}
    want_bias = "bias.bn_folded"
    assert list(out.params) == ["weight.bn_folded", want_bias]
    conv = out.nodes[0]
    assert conv.out.name == g.nodes[0].out.name and conv.attrs == g.nodes[0].attrs
    check_pass(fold_batchnorm, out, expect_change=False)


def test_fold_batchnorm_depthwise_conv1d_and_linear() -> None:
    def f(m: Any, x: Any, v: Any) -> Any:
        y = apply("conv", x, m.dw, stride=(1,), padding=(1,), dilation=(1,), groups=4)
        y = apply("batch_norm", y, m.mean, m.var, m.bn_w, m.bn_b, eps=1e-5)
        z = apply("linear", v, m.lw, m.lb)
        z = apply("batch_norm", z, m.mean, m.var, None, m.bn_b, eps=1e-5)
        return y, z

    params = {"dw": rnd(4, 1, 3), "lw": rnd(4, 5, seed=3), "lb": rnd(4, seed=4), **_bn_params(4, 5)}
    g = trace(Fn(f, params, _bn_buffers(4, 5)), (graphc.randn(2, 4, 9), graphc.randn(2, 5)),
              dynamic={"xs0": 0, "xs1": 0})
    out = check_pass(fold_batchnorm, g, expect_change=True, rtol=1e-4, atol=1e-5)
    assert ops(out) == {"conv": 1, "linear": 1}
    assert list(out.params) == ["dw.bn_folded", "dw.bias.bn_folded", "lw.bn_folded", "lb.bn_folded"]
    # the BN buffers are shared by both folds and now unused: gone
    assert "mean" not in out.params and "var" not in out.params


@pytest.mark.parametrize("dt", [f32, f16])
def test_fold_batchnorm_twice_in_a_row_keeps_one_set_of_names(dt: Any) -> None:
    b = GB()
    x = b.input("x", (2, 3, 5), dt)
    c = b.op("conv", x, b.param("conv.weight", (4, 3, 3), dt), stride=(1,), padding=(1,), dilation=(1,))
    mean, var = b.param("bn.mean", (4,), dt), b.param("bn.var", rnd(4, seed=3, lo=0.5), dt)
    y = b.op("batch_norm", b.op("batch_norm", c, mean, var, eps=1e-5), mean, var, b.param("bn2.w", (4,), dt), eps=0.1)
    g = b.done(y)
    tol = 2e-2 if dt is f16 else 1e-5
    out = check_pass(fold_batchnorm, g, expect_change=True, rtol=tol, atol=tol)
    assert list(out.params) == ["conv.weight.bn_folded", "conv.bias.bn_folded"] and ops(out) == {"conv": 1}
    assert out.param_data["conv.weight.bn_folded"].dtype == dt.np


def test_fold_batchnorm_near_misses() -> None:
    def f(m: Any, x: Any, v: Any) -> Any:
        c = apply("conv", x, m.w, stride=(1, 1), padding=(0, 0), dilation=(1, 1))
        y1 = _bn(m, c)                              # conv output also used below: no fold
        y2 = _bn(m, c.relu())                      # BN after relu, not after conv
        mean = v.mean(0)                             # statistics computed at run time: no fold
        l3 = apply("linear", v, m.lw)
        y3 = apply("batch_norm", l3, mean, m.var, m.bn_w, m.bn_b, eps=1e-5)
        t = apply("linear", x.permute(0, 2, 3, 1), m.lw2)  # linear on [N, H, W, C] then BN on dim 1
        y4 = apply("batch_norm", t, m.mean[:2] * 0 + m.mean2, m.var2, eps=1e-5)
        return y1 + c, y2, y3, y4

    params = {"w": rnd(4, 4, 1, 1), "lw": rnd(4, 4, seed=2), "lw2": rnd(4, 4, seed=3), **_bn_params(4, 7)}
    buffers = {**_bn_buffers(4, 7), "mean2": rnd(2, seed=5), "var2": rnd(2, seed=6, lo=0.5)}
    g = trace(Fn(f, params, buffers), (graphc.randn(1, 4, 2, 3), graphc.randn(3, 4)))
    out = check_pass(fold_batchnorm, g, expect_change=False)
    assert ops(out)["batch_norm"] == 4


def _layers(*names: str) -> list[Any]:
    """graphc.nn layer classes (the layers engineer's work): skip until they have landed."""
    found = [getattr(nn, n, None) for n in names]
    if any(f is None for f in found):
        pytest.skip(f"graphc.nn.{'/'.join(names)} not available yet")
    return found


def _randomise_bn_stats(model: Any) -> None:
    for name, buf in model.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(graphc.randn(*buf.shape))
        elif name.endswith("running_var"):
            buf.copy_(graphc.rand(*buf.shape) + 0.5)
    for name, p in model.named_parameters():
        if ".weight" in name and p.ndim == 1 or name.endswith("bias"):
            p.data = graphc.randn(*p.shape)


def test_fold_batchnorm_with_graphc_nn_layers() -> None:
    Conv1d, Conv2d, BatchNorm1d, BatchNorm2d, Linear, ReLU, Flatten = _layers(
        "Conv1d", "Conv2d", "BatchNorm1d", "BatchNorm2d", "Linear", "ReLU", "Flatten")
    graphc.manual_seed(0)
    cnn = nn.Sequential(Conv2d(3, 8, 3, padding=1, bias=False), BatchNorm2d(8), ReLU(),
                        Conv2d(8, 8, 3, groups=8), BatchNorm2d(8, affine=False), Flatten(),
                        Linear(8 * 4 * 4, 6), BatchNorm1d(6))
    seq1d = nn.Sequential(Conv1d(4, 5, 3, padding=1), BatchNorm1d(5))
    for m, x in ((cnn, graphc.randn(2, 3, 6, 6)), (seq1d, graphc.randn(2, 4, 7))):
        _randomise_bn_stats(m)
        g = trace(m, (x,), dynamic={"input": 0})
        out = check_pass(fold_batchnorm, g, expect_change=True, rtol=1e-4, atol=1e-5)
        assert "batch_norm" not in ops(out)
        assert all(k.endswith(".bn_folded") or "running" not in k for k in out.params)
        assert_same_outputs(g, optimize(g, 2, verify=True), rtol=1e-4, atol=1e-5)
    assert sorted(k for k in out.params) == ["0.bias.bn_folded", "0.weight.bn_folded"]

    # near misses: batch statistics (no running stats), and a conv whose output is also returned
    stats = nn.Sequential(Conv2d(3, 4, 3), BatchNorm2d(4, track_running_stats=False))
    g = trace(stats, (graphc.randn(2, 3, 5, 5),))
    check_pass(fold_batchnorm, g, expect_change=False)

    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = Conv2d(3, 4, 1), BatchNorm2d(4)

        def forward(self, x: Any) -> Any:
            c = self.conv(x)
            return self.bn(c), c

    two = Two()
    _randomise_bn_stats(two)
    check_pass(fold_batchnorm, trace(two, (graphc.randn(2, 3, 4, 4),)), expect_change=False)


# ---------------------------------------------------------------------------------------- canonicalize
def test_canonicalize_transposed_matmul_plus_bias_is_one_linear() -> None:
    b = GB(dims={"B": (1, 16)})
    x = b.input("x", ("B", 5))
    w, bias = b.param("fc.weight", (4, 5)), b.param("fc.bias", (4,))
    mm = b.op("matmul", x, b.op("permute", w, dims=(1, 0)), scope="fc")
    y1 = b.op("add", mm, bias, scope="fc")
    mm2 = b.op("matmul", x, b.op("permute", w, dims=(1, 0)), scope="fc2")
    y2 = b.op("add", bias, mm2)                        # bias first
    g = b.done(y1, y2)
    out = check_pass(canonicalize, g, expect_change=True)
    assert ops(out) == {"linear": 2}
    assert [v.name for v in out.nodes[0].inputs] == ["x", "fc.weight", "fc.bias"]
    assert out.nodes[0].scope == "fc"
    check_pass(canonicalize, out, expect_change=False)


def test_canonicalize_matmul_with_a_parameter_gets_a_pretransposed_weight() -> None:
    def f(m: Any, x: Any) -> Any:
        return x @ m.w.t() + m.b                       # eager .t(): the graph holds w^T

    g = trace(Fn(f, {"w": rnd(4, 5), "b": rnd(1, 4, seed=1)}), (graphc.randn(2, 3, 5),), dynamic={"xs0": 0})
    out = check_pass(canonicalize, g, expect_change=True)
    assert ops(out) == {"permute": 1, "reshape": 1, "linear": 1}   # b [1, 4] -> [4]
    out2 = check_pass(optimize, g)
    assert ops(out2) == {"linear": 1}
    (wname, w), = [(k, v) for k, v in out2.param_data.items() if v.shape == (4, 5)]
    np.testing.assert_array_equal(w, g.param_data["_const0"].T)


def test_canonicalize_near_misses() -> None:
    b = GB()
    x = b.input("x", (2, 5))
    xi = b.input("xi", (2, 5), i64)
    h = b.input("h", (5, 4))
    w = b.param("w", (5, 4))
    w3 = b.param("w3", (2, 5, 4))
    outs = [
        b.op("add", b.op("linear", x, b.param("lw", (4, 5))), b.param("bad_bias", (2, 4))),  # bias not [N]
        b.op("add", b.op("linear", x, b.param("lw2", (4, 5))), b.param("col", (2, 1))),      # broadcasts wrongly
        b.op("matmul", x, h),                         # runtime right operand
        b.op("matmul", x, w3),                        # 3-d weight
        b.op("matmul", xi, b.param("wi", np.ones((5, 4)), i64)),  # integer matmul: linear is float-only
        b.op("div", x, b.const(3.0)),                  # 1/3 is not exact
        b.op("div", x, b.const(2.0 ** -130)),          # 2^130 overflows float32
        b.op("sub", b.const(1.0), x),                  # constant on the left
        b.op("sub", x, b.op("full", shape=(5,), value=1.0, dtype=f32)),  # not a 0-d constant
    ]
    lin_shared = b.op("linear", x, b.param("lw3", (4, 5)))
    outs += [b.op("add", lin_shared, b.param("lb3", (4,))), b.op("relu", lin_shared)]  # linear used twice
    outs.append(b.op("matmul", x, w))                 # this one does change
    g = b.done(*outs)
    out = check_pass(canonicalize, g, expect_change=True)
    c = ops(out)
    assert c["matmul"] == 3 and c["div"] == 2 and c["sub"] == 2 and c["add"] == 3
    assert c["linear"] == 4 and c["permute"] == 1


def test_canonicalize_sub_and_div_by_constants() -> None:
    b = GB()
    x = b.input("x", (3,))
    n = b.input("n", (3,), i64)
    y = b.op("div", b.op("sub", x, b.const(1.5)), b.const(-4.0))
    m = b.op("sub", n, b.const(7, i64))
    big = b.op("sub", n, b.const(-(2 ** 63), i64))  # the negation does not fit: unchanged
    g = b.done(y, m, big)
    out = check_pass(canonicalize, g, expect_change=True)
    assert ops(out) == {"constant": 4, "add": 2, "mul": 1, "sub": 1}
    values = sorted(n.attrs["value"] for n in out.nodes if n.op == "constant")
    assert values == [-(2 ** 63), -7, -1.5, -0.25]
    feeds = {"x": np.array([-0.0, 1.5, np.inf], np.float32), "n": np.array([0, -3, 2 ** 40])}
    for k in ("out0", "out1", "out2"):
        np.testing.assert_array_equal(interpret(out, feeds)[k], interpret(g, feeds)[k])


def test_canonicalize_moves_layout_ops_after_a_linear_to_its_input() -> None:
    """torch's batch_first MultiheadAttention: out_proj on [T*B, E], reshaped to [T, B, E] and transposed
    to [B, T, E] before the residual add; the reshape and permute go to the linear's input, so its GEMM
    feeds the add and fuses it as graphc.nn's linear does. Checked against numpy."""
    from graphc.backend.fusion import gemm_epilogues

    b = GB(dims={"B": (1, 8)})
    h = b.input("h", (4, "B", 6))                    # [T, B, E]
    r = b.input("r", ("B", 4, 6))                    # residual [B, T, E]
    w, bias = b.param("out_proj.weight", (6, 6)), b.param("out_proj.bias", (6,))
    flat = b.op("reshape", h, shape=(Sym.var("B") * 4, 6))
    lin = b.op("linear", flat, w, bias)
    back = b.op("permute", b.op("reshape", lin, shape=(4, Sym.var("B"), 6)), dims=(1, 0, 2))
    y = b.op("add", r, back)
    # near misses: a wider input (the copy would grow), a permute of the last dim, a linear used twice
    wide = b.op("permute", b.op("linear", h, b.param("down.weight", (3, 6))), dims=(1, 0, 2))
    last = b.op("permute", b.op("linear", h, b.param("sq.weight", (6, 6))), dims=(0, 2, 1))
    twice = b.op("linear", h, b.param("tw.weight", (6, 6)))
    g = b.done(y, wide, last, b.op("permute", twice, dims=(1, 0, 2)), twice)
    out = check_pass(canonicalize, g, expect_change=True, dim_values=(1, 3))
    assert ops(out) == {"reshape": 2, "permute": 4, "linear": 4, "add": 1}
    (lin2,) = [n for n in out.nodes if n.op == "linear" and n.inputs[1].name == "out_proj.weight"]
    assert lin2.inputs[0].node.op == "permute" and lin2.out.type.shape == (Sym.var("B"), 4, 6)
    (ep,) = [e for p, e in gemm_epilogues(out).items() if p is lin2]
    assert [n.op for n in ep.nodes] == ["add"] and ep.residual is not None and ep.residual.name == "r"
    rng = np.random.default_rng(0)
    feeds = {"h": rng.standard_normal((4, 3, 6)).astype(np.float32),
             "r": rng.standard_normal((3, 4, 6)).astype(np.float32)}
    wv, bv = out.param_data["out_proj.weight"], out.param_data["out_proj.bias"]
    want = feeds["r"] + (feeds["h"].reshape(12, 6) @ wv.T + bv).reshape(4, 3, 6).transpose(1, 0, 2)
    np.testing.assert_allclose(interpret(out, feeds)["out0"], want, rtol=1e-5, atol=1e-5)
    check_pass(canonicalize, out, expect_change=False, dim_values=(1, 3))


# ------------------------------------------------------------------------------------------ merge_lora
class _Lora(nn.Module):
    """A hand-written LoRA linear: base(x) + scaling * B(A(dropout(x))) per adapter."""

    def __init__(self, n_in: int, n_out: int, ranks: tuple[int, ...] = (2,), scale_first: bool = False):
        super().__init__()
        self.weight = nn.Parameter(graphc.tensor(rnd(n_out, n_in).astype(np.float32)))
        self.bias = nn.Parameter(graphc.tensor(rnd(n_out, seed=1).astype(np.float32)))
        self.ranks = ranks
        self.scale_first = scale_first
        for i, r in enumerate(ranks):
            setattr(self, f"lora_A{i}", nn.Parameter(graphc.tensor(rnd(r, n_in, seed=10 + i).astype(np.float32))))
            setattr(self, f"lora_B{i}", nn.Parameter(graphc.tensor(rnd(n_out, r, seed=20 + i).astype(np.float32))))

    def forward(self, x: Any) -> Any:
        y = apply("linear", x, self.weight, self.bias)
        for i, r in enumerate(self.ranks):
            h = apply("linear", apply("dropout", x, p=0.1), getattr(self, f"lora_A{i}"))
            if self.scale_first:
                y = y + apply("linear", h * (2.0 / r), getattr(self, f"lora_B{i}"))
            else:
                y = (2.0 / r) * apply("linear", h, getattr(self, f"lora_B{i}")) + y
        return y


@pytest.mark.parametrize("ranks,scale_first", [((2,), False), ((2, 4), False), ((4,), True)])
def test_merge_lora_one_and_two_adapters(ranks: tuple[int, ...], scale_first: bool) -> None:
    m = _Lora(6, 5, ranks, scale_first)
    g = trace(m, (graphc.randn(3, 6),), dynamic={"x": 0})
    out = check_pass(merge_lora, g, expect_change=True, rtol=1e-4, atol=1e-5)
    assert ops(out) == {"linear": 1}
    assert list(out.params) == ["bias", "weight.lora_merged"]
    w = g.param_data["weight"].astype(np.float64)
    for i, r in enumerate(ranks):
        w = w + (2.0 / r) * g.param_data[f"lora_B{i}"].astype(np.float64) @ g.param_data[f"lora_A{i}"]
    np.testing.assert_allclose(out.param_data["weight.lora_merged"], w, rtol=1e-6, atol=1e-6)
    check_pass(merge_lora, out, expect_change=False)


def test_merge_lora_pipeline_option_and_near_misses() -> None:
    m = _Lora(6, 5, (4,))
    g = trace(m, (graphc.randn(3, 6),))
    kept = check_pass(lambda h: optimize(h, 2, bake_weights=False, verify=True), g)
    assert ops(kept) == {"linear": 3, "constant": 1, "mul": 1, "add": 1} and "lora_A0" in kept.params
    merged = check_pass(lambda h: optimize(h, 2, verify=True), g, rtol=1e-4, atol=1e-5)
    assert ops(merged) == {"linear": 1}

    def f(m: Any, x: Any, z: Any) -> Any:
        base = apply("linear", x, m.w)
        h = apply("linear", x, m.a)
        d1 = base + 0.5 * apply("linear", h, m.b)                 # h also used below: no merge
        d2 = apply("linear", x, m.w2) + apply("linear", apply("linear", z, m.a), m.b)  # other input
        d3 = apply("linear", x, m.w3) + m.s * apply("linear", apply("linear", x, m.a2), m.b2)  # [N] scale
        return d1 + h.sum(), d2, d3

    params = {"w": rnd(5, 6), "w2": rnd(5, 6, seed=1), "w3": rnd(5, 6, seed=2), "a": rnd(2, 6, seed=3),
              "b": rnd(5, 2, seed=4), "a2": rnd(2, 6, seed=5), "b2": rnd(5, 2, seed=6), "s": rnd(5, seed=7)}
    g2 = trace(Fn(f, params), (graphc.randn(3, 6), graphc.randn(3, 6)))
    check_pass(merge_lora, g2, expect_change=False)


def test_merge_lora_with_graphc_nn_lora() -> None:
    """LoraLinear (PEFT layout) with two adapters: the pass must agree with the module's own merge()."""
    lora = pytest.importorskip("graphc.nn.lora")
    (ReLU,) = _layers("ReLU")
    graphc.manual_seed(0)

    def build() -> Any:
        graphc.manual_seed(1)
        m = nn.Sequential(lora.LoraLinear((6, 5), r=2, lora_alpha=4, lora_dropout=0.1), ReLU(),
                          lora.LoraLinear((5, 3), r=4, adapter_name="a"))
        m[2].add_adapter("b", r=2, lora_alpha=8)
        m[2].set_adapter("b")
        for name, p in m.named_parameters():
            if "lora_B" in name:
                p.data = graphc.randn(*p.shape)  # B starts at zero: make every adapter matter
        return m

    g = trace(build(), (graphc.randn(3, 6),), dynamic={"input": 0})
    assert ops(g)["dropout"] == 1 and ops(g)["linear"] == 6
    out = check_pass(lambda h: optimize(h, 2, verify=True), g, rtol=1e-4, atol=1e-5)
    assert ops(out) == {"linear": 2, "relu": 1}
    assert sorted(out.params) == ["0.base_layer.bias", "0.base_layer.weight.lora_merged", "2.base_layer.bias",
                                  "2.base_layer.weight.lora_merged"]
    merged = build()
    for i in (0, 2):
        merged[i].merge()
        np.testing.assert_allclose(out.param_data[f"{i}.base_layer.weight.lora_merged"],
                                   merged[i].base_layer.weight.numpy(), rtol=1e-6, atol=1e-6)
    kept = optimize(g, 2, bake_weights=False, verify=True)
    assert ops(kept)["linear"] == 6 and "2.lora_A.b.weight" in kept.params and "2.lora_A.a.weight" not in kept.params


# -------------------------------------------------------------------------------------------- pipeline
def _mlp_like() -> Graph:
    def f(m: Any, x: Any) -> Any:
        y = apply("linear", apply("dropout", x, p=0.2), m.w1.to(graphc.float16).float(), m.b1)
        y = (y - 1.0) / 2.0
        y = y * 1.0 + y.exp() * 0 + y.exp()
        return x @ m.w2 + y.sum(-1, keepdim=True)

    return trace(Fn(f, {"w1": rnd(7, 7), "b1": rnd(7, seed=1), "w2": rnd(7, 3, seed=2)}),
                 (graphc.randn(2, 7),), dynamic={"xs0": 0})


def test_optimize_levels() -> None:
    g = _mlp_like()
    o0 = check_pass(lambda h: optimize(h, 0, verify=True), g)
    assert str(o0) == str(g)
    o1 = check_pass(lambda h: optimize(h, 1, verify=True), g)
    assert "dropout" not in ops(o1) and ops(o1)["exp"] == 1
    o2 = check_pass(lambda h: optimize(h, 2, verify=True), g)
    assert ops(o2)["linear"] == 2 and "sub" not in ops(o2) and "div" not in ops(o2) and "matmul" not in ops(o2)
    o3 = optimize(g, 3, verify=True)
    assert str(o3) == str(o2)
    for level in (-1, 4, 1.5, True):
        with pytest.raises(ValueError, match="optimisation level"):
            optimize(g, level)  # type: ignore[arg-type]
    assert [p.name for p in passes_for_level(1)] == ["remove_noops", "cse", "dce"]
    assert "merge_lora" not in [p.name for p in passes_for_level(2, bake_weights=False)]


def test_optimize_is_idempotent_and_independent_of_parameter_values() -> None:
    g = _mlp_like()
    o = optimize(g, verify=True)
    assert str(optimize(o, verify=True)) == str(o)
    g2 = g.copy()
    rng = np.random.default_rng(5)
    g2.param_data = {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in g.param_data.items()}
    o2 = optimize(g2, verify=True)
    assert str(o2) == str(o)
    assert {k: v.shape for k, v in o2.param_data.items()} == {k: v.shape for k, v in o.param_data.items()}
    assert_same_outputs(g2, o2, rtol=1e-4, atol=1e-5)


def test_optimize_verifies_its_input() -> None:
    b = GB()
    g = b.done(b.op("relu", b.input("x", (2,))))
    g.nodes[0].out.type = g.nodes[0].out.type.with_shape((3,))
    with pytest.raises(VerifyError, match="input of optimize"):
        optimize(g, verify=True)


def test_optimize_example_models() -> None:
    """Every example model keeps its outputs through optimize(level=2)."""
    import importlib
    import pathlib
    import sys

    root = pathlib.Path(__file__).resolve().parents[1] / "examples"
    models = sorted(root.glob("*/model.py"))
    assert len(models) >= 5
    for model_py in models:
        spec = importlib.util.spec_from_file_location(f"_ex_{model_py.parent.name}", model_py)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(model_py.parent))
        try:
            spec.loader.exec_module(mod)
        finally:
            sys.path.remove(str(model_py.parent))
        model, example = mod.model, mod.example_inputs
        if callable(model) and not isinstance(model, nn.Module):
            model = model()
        g = trace(model, example, getattr(mod, "dynamic", None))
        check_pass(lambda h: optimize(h, 2, verify=True), g, rtol=1e-4, atol=1e-4, seeds=(0,))


# ------------------------------------------------------------------------------ hypothesis: random graphs
hyp = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_CONSTS = [0.0, -0.0, 1.0, 2.0, 0.5, -4.0, 3.0]
_UNARY = ["neg", "relu", "tanh", "abs", "sigmoid", "identity", "dropout"]
_BINARY = ["add", "sub", "mul", "div", "maximum"]


@st.composite
def random_graph(draw: Any) -> Graph:
    b = GB("rand", dims={"B": (1, 6)})
    pool: list[Value] = [b.input("x", ("B", 3)), b.input("y", (1, 3))]
    pool.append(b.param("p", np.arange(3, dtype=np.float32) - 1.0))
    pool.append(b.param("q", np.linspace(-1, 1, 6).reshape(2, 3)))
    for _ in range(draw(st.integers(1, 10))):
        kind = draw(st.sampled_from(["unary", "binary", "const", "shape", "shape", "full"]))
        a = draw(st.sampled_from(pool))
        with contextlib.suppress(ShapeError):
            if kind == "unary":
                op = draw(st.sampled_from(_UNARY))
                v = b.op(op, a, p=0.5) if op == "dropout" else b.op(op, a)
            elif kind == "binary":
                v = b.op(draw(st.sampled_from(_BINARY)), a, draw(st.sampled_from(pool)))
            elif kind == "const":
                c = b.const(draw(st.sampled_from(_CONSTS)))
                v = b.op(draw(st.sampled_from(_BINARY)), *((a, c) if draw(st.booleans()) else (c, a)))
            elif kind == "full":
                c = b.op("full", shape=a.type.shape, value=draw(st.sampled_from(_CONSTS)), dtype=f32)
                v = b.op(draw(st.sampled_from(_BINARY)), a, c)
            else:
                nd = a.type.ndim
                which = draw(st.sampled_from(["reshape", "permute", "expand", "slice", "concat", "cast"]))
                if which == "reshape":
                    v = b.op("reshape", a, shape=a.type.shape)
                elif which == "permute":
                    v = b.op("permute", a, dims=tuple(draw(st.permutations(range(nd)))))
                elif which == "expand":
                    v = b.op("expand", a, shape=(2,) * (a.type.shape[0] == 1) + tuple(a.type.shape))
                elif which == "slice":
                    end = a.type.shape[-1]
                    v = b.op("slice", a, dim=nd - 1, start=draw(st.integers(0, 1)), end=end, step=1)
                elif which == "concat":
                    v = b.op("concat", *([a] * draw(st.integers(1, 2))), dim=nd - 1)
                else:
                    v = b.op("cast", b.op("cast", a, dtype=draw(st.sampled_from([f32, f64]))), dtype=f32)
            pool.append(v)
    outs = [pool[-1]] + ([pool[draw(st.integers(0, len(pool) - 1))]] if draw(st.booleans()) else [])
    return b.done(*outs)


@settings(max_examples=60, deadline=None)
@given(random_graph())
def test_optimize_preserves_random_graphs(g: Graph) -> None:
    out = optimize(g, 2, verify=True)
    assert str(optimize(g, 2)) == str(out)
    assert str(parse(str(out))) == str(out)
    assert_same_outputs(g, out, seeds=(0,), dim_values=(1, 4))
    g2 = g.copy()  # other parameter values: the same program (names, shapes, text)
    g2.param_data = {k: (v * 3 - 1).astype(v.dtype) for k, v in g.param_data.items()}
    assert str(optimize(g2, 2)) == str(out)
    for name in ("dce", "cse", "remove_noops", "fold_constants", "canonicalize"):
        res, changed = PASSES[name](g, verify=True)
        if not changed:
            assert str(res) == str(g), name
        assert_same_outputs(g, res, seeds=(0,), dim_values=(2,))
