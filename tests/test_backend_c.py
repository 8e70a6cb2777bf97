"""Tests of the C backend: graphs compiled to shared libraries and compared with the numpy reference
interpreter (graphc.ir.interpret), which defines every op's semantics.

Many ops go into one library (a graph with many outputs) so that the suite compiles only a handful of
libraries; the build cache (one folder per test session) makes repeated builds free. Every library
runs with the dynamic batch at 1 and 7. Generated code is compiled with -Wall -Werror.

Adding an op lowering: add a line to one of the graphs below (or a new graph for a new family), with
inputs that exercise broadcasting, odd sizes and size 1.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import graphc
from graphc.backend import generate
from graphc.backend.memplan import nonneg
from graphc.errors import UnsupportedError
from graphc.ir import Graph, interpret, verify
from graphc.ops import get_op
from graphc.ops.registry import TensorType
from graphc.sym import Sym
from tests.shared_build import shared_cache_dir

f32, f64, i64, i32, b8 = graphc.float32, graphc.float64, graphc.int64, graphc.int32, graphc.bool
B = Sym.var("B")


@pytest.fixture(scope="session")
def cache_dir():
    """A build cache shared by the backend test files and kept between sessions (content-addressed, so
    it is never stale); GRAPHC_TEST_CACHE_DIR overrides its place."""
    return shared_cache_dir()


@pytest.fixture(autouse=True)
def _strict_cflags(monkeypatch):
    monkeypatch.setenv("GRAPHC_CFLAGS", os.environ.get("GRAPHC_TEST_CFLAGS", "-Wall -Wextra -Werror"))


class GB:
    """A small graph builder: node types come from the op rules."""

    def __init__(self, name: str, dims: dict[str, tuple[int, int]] | None = None):
        self.g = Graph(name)
        self.g.dims.update(dims or {"B": (1, 16)})
        self.outs: list[tuple[str, Any]] = []
        self.rng = np.random.default_rng(0)

    def input(self, name: str, shape, dt=f32):
        return self.g.add_input(name, TensorType(tuple(shape), dt))

    def param(self, name: str, shape, dt=f32, data=None):
        if data is None:
            data = self.rng.standard_normal(shape).astype(dt.np)
        return self.g.add_param(name, TensorType(tuple(shape), dt), data)

    def __call__(self, op: str, *ins, scope: str = "", **attrs):
        o = get_op(op)
        attrs = o.bind_attrs(attrs)
        t = o.infer_type([None if v is None else v.type for v in ins], attrs)
        return self.g.add_node(op, list(ins), attrs, t, scope=scope).out

    def out(self, name: str, v) -> None:
        self.outs.append((name, v))

    def graph(self) -> Graph:
        self.g.set_outputs(self.outs)
        verify(self.g)
        return self.g


def feeds(g: Graph, batch: int, seed: int = 0, ints: Callable | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + batch)
    out = {}
    for v in g.inputs:
        shape = tuple(d.evaluate({"B": batch}) if isinstance(d, Sym) else d for d in v.type.shape)
        dt = v.type.dtype
        if dt.is_floating_point:
            out[v.name] = rng.standard_normal(shape).astype(dt.np)
        elif dt is b8:
            out[v.name] = rng.random(shape) > 0.5
        else:
            out[v.name] = (ints(v.name, shape, rng) if ints else rng.integers(-5, 6, shape)).astype(dt.np)
    return out


def check(model, g: Graph, batches=(1, 7), rtol=1e-5, atol=1e-5, ints=None, tol: dict | None = None):
    for b in batches:
        f = feeds(g, b, ints=ints)
        want = interpret(g, f)
        got = model.run(**f)
        for name, w in want.items():
            r, a = (tol or {}).get(name, (rtol, atol))
            assert got[name].dtype == w.dtype, name
            assert got[name].shape == w.shape, name
            if w.dtype.kind == "f":
                np.testing.assert_allclose(got[name], w, rtol=r, atol=a, err_msg=f"output {name}, B={b}")
            else:
                np.testing.assert_array_equal(got[name], w, err_msg=f"output {name}, B={b}")


# ------------------------------------------------------------------------------------- elementwise
def elementwise_graph() -> Graph:
    gb = GB("elementwise")
    x = gb.input("x", (B, 5, 3))
    y = gb.input("y", (5, 1))
    z = gb.input("z", (3,))
    i = gb.input("i", (B, 5, 3), i64)
    j = gb.input("j", (3,), i64)
    c = gb.input("c", (B, 1, 3), b8)
    k = gb.input("k", (B, 5, 3), i32)
    ax = gb("abs", x)
    pos = gb("add", ax, gb("constant", value=0.5, dtype=f32))
    for op in ("neg", "abs", "exp", "sin", "cos", "tanh", "erf", "floor", "ceil", "round", "sign", "relu",
               "sigmoid", "silu"):
        gb.out(op, gb(op, x, scope=f"act.{op}"))
    for op in ("log", "sqrt", "rsqrt", "reciprocal"):
        gb.out(op, gb(op, pos))
    gb.out("softplus", gb("softplus", x, beta=2.0, threshold=1.0))
    gb.out("leaky_relu", gb("leaky_relu", x, negative_slope=0.1))
    gb.out("elu", gb("elu", x, alpha=0.7))
    gb.out("hardtanh", gb("hardtanh", x, min_val=-0.5, max_val=0.25))
    gb.out("gelu", gb("gelu", x))
    gb.out("gelu_tanh", gb("gelu", x, approximate="tanh"))
    for op in ("add", "sub", "mul", "maximum", "minimum", "remainder"):
        gb.out(f"{op}_xy", gb(op, x, y))
    gb.out("div_xz", gb("div", x, z))
    gb.out("pow_pos", gb("pow", pos, z))
    for op in ("eq", "ne", "lt", "le", "gt", "ge"):
        gb.out(op, gb(op, x, y))
    gb.out("where", gb("where", c, x, z))
    gb.out("clamp", gb("clamp", x, min=-0.3, max=0.6))
    gb.out("clamp_lo", gb("clamp", x, min=0.1))
    gb.out("logic", gb("logical_xor", gb("logical_and", c, gb("gt", x, y)), gb("logical_not", c)))
    gb.out("logic_or", gb("logical_or", c, gb("lt", x, z)))
    # a fused chain with a shared intermediate (DAG) and a broadcast operand
    t = gb("mul", x, y)
    gb.out("chain", gb("tanh", gb("add", gb("exp", gb("neg", gb("abs", t))), t)))
    # integers
    for op in ("add", "sub", "mul", "maximum", "minimum", "remainder"):
        gb.out(f"{op}_i", gb(op, i, j))
    gb.out("abs_i", gb("abs", gb("neg", i)))
    gb.out("sign_i", gb("sign", i))
    gb.out("relu_i32", gb("relu", k))
    gb.out("clamp_i", gb("clamp", i, min=-2, max=3))
    gb.out("where_i", gb("where", c, i, j))
    # casts and float64
    gb.out("cast_f_i", gb("cast", gb("mul", x, gb("constant", value=3.0, dtype=f32)), dtype=i64))
    gb.out("cast_i_f", gb("cast", i, dtype=f32))
    gb.out("cast_f_b", gb("cast", gb("round", x), dtype=b8))
    gb.out("cast_b_f", gb("add", gb("cast", c, dtype=f32), x))
    gb.out("cast_i32_i64", gb("cast", k, dtype=i64))
    x64 = gb("cast", x, dtype=f64)
    gb.out("f64", gb("add", gb("exp", x64), gb("maximum", x64, gb("constant", value=0.25, dtype=f64))))
    gb.out("f64_gelu", gb("gelu", x64))
    gb.out("bool_add", gb("add", c, gb("gt", x, y)))
    return gb.graph()


def test_elementwise(cache_dir):
    g = elementwise_graph()
    m = graphc.compile(g, cache_dir=cache_dir)
    check(m, g, tol={"pow_pos": (1e-5, 1e-5), "f64": (1e-12, 1e-12), "f64_gelu": (1e-6, 1e-6)})
    # the chain is one loop whose comment lists its six nodes
    kern = "".join(t for n, t in m.sources.items() if "_kernels" in n)
    assert "void elementwise_abs_neg_tanh(" in kern  # abs, neg, exp, add, tanh


def test_fusion_groups_shape():
    from graphc.backend.fusion import fusion_groups

    g = elementwise_graph()
    groups = fusion_groups(g)
    users = g.users()
    outs = {v for _, v in g.outputs}
    for grp in groups:
        inside = {n.out for n in grp.nodes}
        assert grp.outputs == [grp.root.out]
        for n in grp.nodes[:-1]:
            assert n.out not in outs
            assert all(u.out in inside for u in users[n.out])
            assert n.out.type.shape == grp.shape
    chain = [grp for grp in groups if grp.root.op == "tanh" and len(grp.nodes) == 6]
    assert chain, "mul/abs/neg/exp/add/tanh chain was not fused"


# ------------------------------------------------------------------------------------- matmul
def matmul_graph() -> Graph:
    gb = GB("matmuls")
    a = gb.input("a", (B, 4, 6))
    bb = gb.input("b", (B, 6, 3))
    w = gb.input("w", (6, 5))
    p = gb.input("p", (2, 1, 4, 6))
    q = gb.input("q", (3, 6, 2))
    v = gb.input("v", (6,))
    m2 = gb.input("m2", (4, 6))
    ai = gb.input("ai", (B, 3, 4), i64)
    bi = gb.input("bi", (4, 2), i64)
    a64 = gb("cast", a, dtype=f64)
    gb.out("fold_m", gb("matmul", a, w))
    gb.out("batched", gb("matmul", a, bb))
    gb.out("broadcast", gb("matmul", p, q))
    gb.out("vec_mat", gb("matmul", v, w))
    gb.out("mat_vec", gb("matmul", m2, v))
    gb.out("dot", gb("matmul", v, v))
    gb.out("batch_vec", gb("matmul", a, v))
    gb.out("int", gb("matmul", ai, bi))
    gb.out("f64", gb("matmul", a64, gb("cast", bb, dtype=f64)))
    wl = gb.param("fc.weight", (5, 6))
    bl = gb.param("fc.bias", (5,))
    gb.out("linear", gb("relu", gb("linear", a, wl, bl, scope="fc")))
    gb.out("linear_nobias", gb("linear", v, wl))
    w3 = gb.param("bil.weight", (2, 6, 3))
    x1 = gb("slice", a, dim=1, start=0, end=3, step=1)
    x2 = gb("slice", bb, dim=1, start=0, end=3, step=1)
    gb.out("bilinear", gb("bilinear", x1, x2, w3, gb.param("bil.bias", (2,)), scope="bil"))
    return gb.graph()


def test_matmul(cache_dir):
    g = matmul_graph()
    m = graphc.compile(g, cache_dir=cache_dir)
    check(m, g, rtol=1e-4, atol=1e-4, tol={"f64": (1e-12, 1e-12)})


# ------------------------------------------------------------------------------------- reductions
def reduce_graph() -> Graph:
    gb = GB("reductions")
    x = gb.input("x", (B, 5, 3, 2))
    i = gb.input("i", (B, 4), i64)
    c = gb.input("c", (B, 4), b8)
    for op in ("sum", "mean", "amax", "amin", "prod"):
        gb.out(f"{op}_last", gb(op, x, dims=(3,)))
        gb.out(f"{op}_mid", gb(op, x, dims=(1, 2), keepdim=True))
        gb.out(f"{op}_split", gb(op, x, dims=(0, 2)))
    gb.out("sum_all", gb("sum", x, dims=(0, 1, 2, 3)))
    gb.out("var", gb("var", x, dims=(1,)))
    gb.out("var0", gb("var", x, dims=(0, 3), keepdim=True, correction=0))
    gb.out("sum_i", gb("sum", i, dims=(1,)))
    gb.out("amax_i", gb("amax", i, dims=(0,)))
    gb.out("sum_bool", gb("sum", c, dims=(0, 1)))
    gb.out("mean_f64", gb("mean", gb("cast", x, dtype=f64), dims=(1, 3)))
    for op in ("argmax", "argmin"):
        gb.out(f"{op}_1", gb(op, x, dim=1))
        gb.out(f"{op}_3k", gb(op, x, dim=3, keepdim=True))
        gb.out(f"{op}_i", gb(op, i, dim=1))
    gb.out("softmax_1", gb("softmax", x, dim=1))
    gb.out("softmax_3", gb("softmax", x, dim=3))
    gb.out("log_softmax_0", gb("log_softmax", x, dim=0))
    return gb.graph()


def test_reductions(cache_dir):
    g = reduce_graph()
    m = graphc.compile(g, cache_dir=cache_dir)
    check(m, g, rtol=2e-5, atol=2e-5, tol={"mean_f64": (1e-12, 1e-12)})


# ------------------------------------------------------------------------------------- shape ops
def shape_graph() -> Graph:
    gb = GB("shapes")
    x = gb.input("x", (B, 6, 5))
    y = gb.input("y", (B, 2, 5))
    s = gb.input("s", (1, 5))
    t = gb.input("t", (7,), i64)
    gi = gb.input("gi", (B, 3, 5), i64)
    si = gb.input("si", (4,), i64)
    gb.out("slice_step", gb("slice", x, dim=1, start=1, end=6, step=2))
    gb.out("slice_last", gb("slice", x, dim=2, start=2, end=4, step=1))
    gb.out("slice_b", gb("slice", x, dim=0, start=0, end=B, step=1))
    gb.out("concat", gb("concat", x, y, x, dim=1))
    gb.out("concat0", gb("concat", gb("slice", x, dim=1, start=0, end=2, step=1), y, dim=0))
    gb.out("pad", gb("pad", x, pads=(1, 2, 0, 1), value=0.5))
    gb.out("pad_crop", gb("pad", x, pads=(-1, 2, 1, -2)))
    gb.out("permute", gb("permute", x, dims=(2, 0, 1)))
    gb.out("permute_i", gb("permute", gi, dims=(0, 2, 1)))
    gb.out("expand", gb("expand", s, shape=(B, 3, 5)))
    gb.out("reshape_add", gb("add", gb("reshape", x, shape=(B, 30)), gb("constant", value=1.0, dtype=f32)))
    gb.out("view_out", gb("reshape", gb("mul", x, x), shape=(B * 6, 5)))
    gb.out("input_out", gb("reshape", y, shape=(B, 10)))
    gb.out("index_select", gb("index_select", x, si, dim=1))
    gb.out("gather", gb("gather", x, gi, dim=1))
    gb.out("gather2", gb("gather", x, gb("slice", gi, dim=1, start=0, end=2, step=1), dim=2))
    gb.out("arange", gb("arange", start=2, end=11, step=3, dtype=i64))
    gb.out("arange_f", gb("arange", start=0.5, end=3, step=0.75, dtype=f32))
    gb.out("arange_dyn", gb("add", gb("arange", end=B, dtype=f32), gb("constant", value=0.0, dtype=f32)))
    gb.out("full", gb("full", shape=(B, 2), value=1.5, dtype=f32))
    gb.out("const", gb("constant", value=7, dtype=i64))
    t2 = gb("mul", t, t)
    gb.out("t2", t2)
    gb.out("t2_again", t2)
    gb.out("param_out", gb.param("table", (3, 2)))
    return gb.graph()


def shape_ints(name, shape, rng):
    if name == "gi":
        return rng.integers(-5, 5, shape)
    if name == "si":
        return rng.integers(-6, 6, shape)
    return rng.integers(-5, 6, shape)


def test_shape_ops(cache_dir):
    g = shape_graph()
    m = graphc.compile(g, cache_dir=cache_dir, opt_level=1)
    check(m, g, ints=shape_ints)


def test_index_out_of_range_is_an_error(cache_dir):
    g = shape_graph()
    m = graphc.compile(g, cache_dir=cache_dir, opt_level=1)
    f = feeds(g, 2, ints=shape_ints)
    f["si"] = np.array([0, 1, 6, 2], dtype=np.int64)
    with pytest.raises(graphc.backend.RuntimeErrorC, match="index_select.*out of range") as e:
        m.run(**f)
    assert e.value.status == -6


# ------------------------------------------------------------------------------------- nn ops
def nn_graph() -> Graph:
    gb = GB("nnops")
    x = gb.input("x", (B, 3, 9, 8))
    s = gb.input("s", (B, 3, 11))
    q = gb.input("q", (B, 2, 5, 4))
    kv = gb.input("kv", (B, 2, 6, 4))
    mask = gb.input("mask", (B, 1, 5, 6))
    ids = gb.input("ids", (B, 4), i64)
    ids32 = gb.input("ids32", (3,), i32)
    cw = gb.param("conv.weight", (4, 3, 3, 2))
    gb.out("conv", gb("conv", x, cw, gb.param("conv.bias", (4,)), stride=(2, 1), padding=(1, 0), dilation=(1, 2),
                      scope="conv"))
    gb.out("conv_g", gb("conv", x, gb.param("convg.weight", (6, 1, 3, 3)), stride=(1, 1), padding=(1, 1),
                        dilation=(1, 1), groups=3))
    gb.out("conv1d", gb("conv", s, gb.param("c1.weight", (2, 3, 3)), stride=(2,), padding=(1,), dilation=(1,)))
    gb.out("convt", gb("conv_transpose", x, gb.param("ct.weight", (3, 2, 3, 3)), gb.param("ct.bias", (2,)),
                       stride=(2, 2), padding=(1, 0), output_padding=(1, 0), dilation=(1, 1)))
    gb.out("maxpool", gb("max_pool2d", x, kernel=(3, 2), stride=(2, 2), padding=(1, 1), ceil_mode=True))
    gb.out("avgpool", gb("avg_pool2d", x, kernel=(2, 3), stride=(2, 1), padding=(1, 1), count_include_pad=False))
    gb.out("adaptive", gb("adaptive_avg_pool2d", x, output_size=(4, 3)))
    var = gb.param("bn.var", (3,), data=np.full(3, 0.7, np.float32))
    gb.out("bn", gb("batch_norm", x, gb.param("bn.mean", (3,)), var, gb.param("bn.weight", (3,)),
                    gb.param("bn.bias", (3,)), eps=1e-5))
    gb.out("ln", gb("layer_norm", x, gb.param("ln.weight", (9, 8)), gb.param("ln.bias", (9, 8)), ndim=2, eps=1e-5))
    gb.out("gn", gb("group_norm", gb("concat", x, x, dim=1), gb.param("gn.weight", (6,)), None, num_groups=3,
                    eps=1e-5))
    gb.out("rms", gb("rms_norm", s, gb.param("rms.weight", (11,)), ndim=1, eps=1e-6))
    gb.out("sdpa", gb("sdpa", q, kv, kv, mask, scale=0.5))
    gb.out("sdpa_causal", gb("sdpa", q, kv, kv, scale=0.3, is_causal=True))
    gb.out("emb", gb("embedding", ids, gb.param("emb.weight", (10, 3))))
    gb.out("emb32", gb("embedding", ids32, gb.param("emb2.weight", (4, 2))))
    return gb.graph()


def nn_ints(name, shape, rng):
    return rng.integers(0, 10 if name == "ids" else 4, shape)


def test_nn_ops(cache_dir):
    g = nn_graph()
    m = graphc.compile(g, cache_dir=cache_dir, opt_level=1)
    check(m, g, rtol=1e-4, atol=1e-4, ints=nn_ints)
    # more threads than at create: the kernels' scratch region grows, results stay the same
    m.set_num_threads(8)
    check(m, g, batches=(5,), rtol=1e-4, atol=1e-4, ints=nn_ints)
    assert m.num_threads == 8


# ------------------------------------------------------------------------------------- properties
def test_weights_file_mode_and_dynamic_batch(cache_dir, tmp_path):
    g = matmul_graph()
    m = graphc.compile(g, cache_dir=cache_dir, weights="file")
    assert m.weights_path is not None and m.weights_path.exists()
    check(m, g, batches=(1, 7, 16), rtol=1e-4, atol=1e-4, tol={"f64": (1e-12, 1e-12)})


def test_sources_are_deterministic():
    a = generate(reduce_graph(), weights="file")[1]
    b = generate(reduce_graph(), weights="file")[1]
    assert a == b
    c = generate(elementwise_graph())[1]
    d = generate(elementwise_graph())[1]
    assert c == d
    assert all("/tmp" not in t and "/home" not in t for t in c.values())


def test_cache_hit(cache_dir):
    g = reduce_graph()
    graphc.compile(g, cache_dir=cache_dir)
    m = graphc.compile(reduce_graph(), cache_dir=cache_dir)
    assert m.cache_hit


def test_memory_plan_is_valid_for_every_dim():
    g = nn_graph()
    prog = generate(g)[0]
    blocks = prog.plan.blocks
    for i, a in enumerate(blocks):
        assert nonneg(a.offset)
        for b in blocks[i + 1:]:
            if a.first <= b.last and b.first <= a.last:
                assert nonneg(b.offset - a.end) or nonneg(a.offset - b.end), (a, b)
    for b in blocks:
        for d in (1, 16):
            assert (b.offset if isinstance(b.offset, int) else b.offset.evaluate({"B": d})) % 64 == 0
    table = prog.memory_table()
    assert {"value", "node", "offset", "size", "first", "last"} <= set(table[0])


def test_memory_plan_reuses_and_works_in_place():
    gb = GB("chainplan")
    x = gb.input("x", (B, 64))
    h = x
    for i in range(6):
        h = gb("softmax", gb("exp", h), dim=1, scope=f"l{i}")
    gb.out("y", h)
    prog = generate(gb.graph())[0]
    # six exp + five intermediate softmax results live two at a time: two blocks suffice
    offsets = {str(b.offset) for b in prog.plan.blocks}
    assert len(offsets) <= 2, offsets
    assert str(prog.plan.arena) == "B*512"


def test_unsupported_op_dtype_names_module():
    gb = GB("bad")
    x = gb.input("x", (3,), f64)
    gb.out("y", gb("softmax", x, dim=0, scope="head.attn"))
    with pytest.raises(UnsupportedError, match=r"op softmax, dtype float64, at module path head\.attn"):
        generate(gb.graph())


def test_large_models_split_into_translation_units(cache_dir, monkeypatch):
    from graphc.backend.c import CBackend

    monkeypatch.setattr(CBackend, "unit_chars", 3000)
    g = reduce_graph()
    files = generate(g)[1]
    units = sorted(n for n in files if "_kernels" in n)
    assert len(units) >= 3, units
    m = graphc.compile(reduce_graph(), cache_dir=cache_dir)
    check(m, g, batches=(3,), rtol=2e-5, atol=2e-5, tol={"mean_f64": (1e-12, 1e-12)})


def test_opt_level_0_no_fusion_no_in_place(cache_dir):
    g = elementwise_graph()
    m = graphc.compile(g, cache_dir=cache_dir, opt_level=0)
    assert all(len(b["values"]) == 1 for b in m.memory_plan)
    check(m, g, batches=(2,), tol={"f64_gelu": (1e-6, 1e-6)})


def test_compiler_errors_carry_the_compiler_output(cache_dir, tmp_path, monkeypatch):
    from graphc.backend.build import build_library
    from graphc.errors import CompileError

    prog, files, options = generate(shape_graph(), weights="file")
    files = dict(files)
    name = next(n for n in files if "_kernels" in n)
    files[name] += "\nthis is not C;\n"
    with pytest.raises(CompileError, match=rf"(?s)failed on {name} \(in .*failed-.*error") as e:
        build_library(files, options, cache_dir=cache_dir)
    folder = str(e.value).split("(in ", 1)[1].split(")", 1)[0]
    assert "this is not C" in open(os.path.join(folder, name)).read()
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.raises(CompileError, match="cannot run the C compiler"):
        graphc.compile(shape_graph(), cache_dir=tmp_path)


def test_graphc_compile_is_the_backend():
    import graphc.backend

    assert graphc.compile is graphc.backend.compile
    assert graphc.load_compiled is graphc.backend.load_compiled


def test_every_registry_op_has_a_c_lowering():
    from graphc.backend.c import CBackend
    from graphc.ops import OPS

    be = CBackend()
    missing = [name for name, op in OPS.items()
               if not (op.family == "elementwise" and op.scalar) and op.family != "view"
               and be.lowering_for(op) is None]
    assert not missing, f"ops without a C lowering: {missing}"


def test_reexport_to_the_same_folder_loads_the_new_library(cache_dir, tmp_path):
    def model(scale: float) -> Graph:
        gb = GB("same")
        gb.out("y", gb("mul", gb.input("x", (B, 3)), gb("constant", value=scale, dtype=f32)))
        return gb.graph()

    x = np.ones((2, 3), np.float32)
    m1 = graphc.compile(model(2.0), cache_dir=cache_dir, out_dir=tmp_path / "m")
    np.testing.assert_array_equal(m1(x), 2 * x)
    m2 = graphc.compile(model(3.0), cache_dir=cache_dir, out_dir=tmp_path / "m")
    np.testing.assert_array_equal(m2(x), 3 * x)
    np.testing.assert_array_equal(m1(x), 2 * x)  # the old model keeps its library


def test_portable_target_flags(monkeypatch):
    from graphc.backend.build import cflags

    monkeypatch.delenv("GRAPHC_CFLAGS", raising=False)
    assert "-march=native" in cflags("native")
    portable = cflags("portable")
    assert "-march=native" not in portable and "-fopenmp" in portable and "-fvisibility=hidden" in portable
    with pytest.raises(ValueError, match="target"):
        cflags("gpu")


def test_an_unused_input_does_not_shift_the_inputs_after_it(cache_dir):
    # the run function's input pointers are indexed over all inputs, not over the used ones only
    g = Graph("unused_first")
    g.add_input("unused", TensorType((2, 0, 4), graphc.float32))
    b = g.add_input("b", TensorType((3, 4), graphc.float32))
    n = g.add_node("relu", [b], {}, TensorType((3, 4), graphc.float32))
    g.set_outputs([("y", n.out)])
    lib = graphc.compile(g, cache_dir=cache_dir)
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    y = lib.run(unused=np.zeros((2, 0, 4), np.float32), b=x)["y"]
    np.testing.assert_array_equal(y, np.maximum(x, 0))
