"""The IR text form: print -> parse -> print is the identity, and bad text gives positioned errors.

Graphs come from three places: built by hand (every attribute kind, quoted names, absent optional
operands, several outputs, polynomial dims), generated at random by hypothesis from the op registry,
and traced from small graphc.nn models. Parsed graphs must also compute what the originals compute.
"""

from __future__ import annotations

import math
import sys
import types
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphc
from graphc import nn
from graphc._dtype import ALL_DTYPES, bfloat16, bool_, float16, float32, float64, int32, int64
from graphc.errors import IRParseError, ShapeError, TraceError
from graphc.ir import Graph, interpret, parse, parse_file, print_graph, verify
from graphc.ops import OPS, Attr, OpDef, TensorType
from graphc.sym import Sym, parse_dim
from graphc.trace import Dim, trace

B, T = Sym.var("B"), Sym.var("T")


# ------------------------------------------------------------------------------------------- helpers
def same(x: Any, y: Any) -> bool:
    """Equality that tells nan from nan-less, -0.0 from 0.0, 1 from 1.0 and True from 1."""
    if isinstance(x, float) and isinstance(y, float):
        if math.isnan(x) or math.isnan(y):
            return math.isnan(x) and math.isnan(y)
        return x == y and math.copysign(1.0, x) == math.copysign(1.0, y)
    if isinstance(x, (tuple, list)) and isinstance(y, (tuple, list)):
        return type(x) is type(y) and len(x) == len(y) and all(same(a, b) for a, b in zip(x, y))
    return type(x) is type(y) and x == y


def _ref(v) -> tuple | None:
    return None if v is None else (v.kind, v.name)


def assert_graphs_equal(a: Graph, b: Graph) -> None:
    assert a.name == b.name
    assert list(a.dims.items()) == list(b.dims.items())
    assert [(v.name, v.type) for v in a.inputs] == [(v.name, v.type) for v in b.inputs]
    assert [(k, v.type) for k, v in a.params.items()] == [(k, v.type) for k, v in b.params.items()]
    assert len(a.nodes) == len(b.nodes)
    for m, n in zip(a.nodes, b.nodes):
        where = f"node %{m.out.name}"
        assert (m.op, m.out.name, m.out.type) == (n.op, n.out.name, n.out.type), where
        assert [_ref(v) for v in m.inputs] == [_ref(v) for v in n.inputs], where
        assert list(m.attrs) == list(n.attrs), where
        for k in m.attrs:
            assert same(m.attrs[k], n.attrs[k]), f"{where} attribute {k}: {m.attrs[k]!r} != {n.attrs[k]!r}"
        assert (m.scope, m.loc) == (n.scope, n.loc), where
    assert [(k, _ref(v)) for k, v in a.outputs] == [(k, _ref(v)) for k, v in b.outputs]


def roundtrip(g: Graph) -> Graph:
    verify(g)
    text = print_graph(g)
    g2 = parse(text)
    assert print_graph(g2) == text
    assert_graphs_equal(g, g2)
    assert not g2.param_data
    return g2


def add(g: Graph, op: str, ins: list, *, name: str | None = None, scope: str = "", loc: str = "", **attrs):
    """Append a node through the op's own attribute and type rules; returns its Value."""
    opdef = OPS[op]
    bound = opdef.bind_attrs(attrs)
    t = opdef.infer_type([None if v is None else v.type for v in ins], bound)
    return g.add_node(op, ins, bound, t, name=name, scope=scope, loc=loc).out


def tt(*shape, dtype=float32) -> TensorType:
    return TensorType(tuple(shape), dtype)


class _AnyAttr(Attr):
    """An attribute kind the registry does not have: any printable value (nested lists included)."""

    def normalize(self, op: str, name: str, value: Any) -> Any:
        return value


@pytest.fixture
def test_op(monkeypatch):
    """A throw-away op (restored after the test) whose attributes hold any printable value."""
    op = OpDef(name="test_attrs", inputs=("x", "y?"),
               attrs={"nested": _AnyAttr("any"), "text": Attr("str", ""), "empty": _AnyAttr("any", ())},
               infer=lambda x, y=None, **_: x, family="none")
    monkeypatch.setitem(OPS, "test_attrs", op)
    return op


# --------------------------------------------------------------------------------- hand-built graphs
def test_every_attribute_kind_round_trips():
    g = Graph("attrs")
    g.dims["B"] = (1, 64)
    g.dims["T"] = (2, 16)
    x = g.add_input("x", tt(B, T, 4))
    idx = g.add_input("idx", tt(3, dtype=int64))
    add(g, "leaky_relu", [x], negative_slope=1e-30)                                     # float
    add(g, "elu", [x], alpha=-0.0)
    add(g, "hardtanh", [x], min_val=-math.inf, max_val=math.inf)
    add(g, "softplus", [x], beta=1e-05, threshold=1.7976931348623157e308)
    add(g, "clamp", [x], min=None, max=5)                                                 # scalar?: none, int
    add(g, "clamp", [x], min=-2.5)
    add(g, "gelu", [x], approximate="tanh")                                               # str
    for dt in ALL_DTYPES:                                                                 # dtype
        add(g, "cast", [x], dtype=dt)
    add(g, "constant", [], value=math.nan, dtype=float32)                                 # scalar: float
    add(g, "constant", [], value=True, dtype=bool_)                                       # scalar: bool
    add(g, "constant", [], value=-7, dtype=int64)                                         # scalar: int
    add(g, "constant", [], value=5e-324, dtype=float64)
    add(g, "full", [], shape=(B, 2, T * 3 + 1), value=-0.0, dtype=float16)                 # dims
    add(g, "reshape", [x], shape=(B * T * 4,))
    add(g, "reshape", [x], shape=(B, T * 4))
    add(g, "slice", [x], dim=1, start=1, end=T - 1, step=1)                               # dim attrs
    add(g, "slice", [x], dim=2, start=0, end=4, step=3)
    add(g, "sum", [x], dims=(0, 2), keepdim=True)                                         # ints, bool
    add(g, "var", [x], dims=(1,), correction=0)
    add(g, "argmax", [x], dim=2)
    add(g, "permute", [x], dims=(2, 0, 1))
    add(g, "expand", [add(g, "reshape", [x], shape=(B, 1, T, 4))], shape=(B, 5, T, 4))
    add(g, "pad", [x], pads=(-1, 2), value=-1.5)
    add(g, "arange", [], end=B)
    add(g, "arange", [], start=0.5, end=10, step=0.25, dtype=float32)
    add(g, "concat", [x, x, x], dim=1)                                                    # variadic
    add(g, "index_select", [x, idx], dim=2)
    add(g, "softmax", [x], dim=2)
    g.set_outputs([("output", x)])
    g2 = roundtrip(g)
    text = print_graph(g2)
    for piece in ("negative_slope=1e-30", "alpha=-0.0", "max_val=inf, min_val=-inf", "max=5, min=none",
                  "max=none, min=-2.5", 'approximate="tanh"', "dtype=bf16", "value=nan", "value=true",
                  "value=-7", "value=5e-324", "shape=[B, 2, T*3+1]",
                  "end=T-1", "dims=[0, 2], keepdim=true", "pads=[-1, 2]", "end=B", "start=0.5",
                  "f16[B,2,T*3+1]", "f32[B,T-2,4]", "f32[B,T*4]"):
        assert piece in text, piece


def test_nested_lists_and_odd_strings_round_trip(test_op):
    g = Graph("g")
    g.dims["B"] = (1, 8)
    x = g.add_input("x", tt(B, 2))
    nested = ((1, (2.5, -3, ())), (), ("s", None, True, float32, B * 2 - 1, -math.inf), (((),),))
    texts = ['quote " and back\\slash', "new\nline\ttab", "ünïcødé ✓ 😀", "\x00\x1f\u2028", "", "// not a comment",
             "# not a meta", "@ loc.py:1"]
    for i, s in enumerate(texts):
        add(g, "test_attrs", [x, None if i % 2 else x], nested=nested, text=s)
    add(g, "test_attrs", [x], nested=-0.0)
    g.set_outputs([("output", x)])
    g2 = roundtrip(g)
    assert 'nested=[[1, [2.5, -3, []]], [], ["s", none, true, f32, B*2-1, -inf], [[[]]]]' in print_graph(g2)
    assert print_graph(g2).count("none)") == len(texts) // 2


def test_quoted_names_scopes_and_locations_round_trip():
    g = Graph("my graph ü")
    g.dims["B"] = (0, 3)
    xs = [g.add_input(n, tt(B, 3)) for n in ("x y", "0", "é", "none", "a.b")]
    params = [g.add_param(n, tt(3)) for n in ("layers.0.weight", "w/0", "none", "%p", '"')]
    names = ['a"b', "return", "1x", "%pct", "graph", "dim", "-", "ok_name.1", "new\nline"]
    scopes = ["enc.layers[0]/attn", "0.attn", "a b", "layers.0", "", "#", "@", "x@y", "ü"]
    locs = ["model.py:12", "my file.py:3", 'we"ird.py:1', "no-line", "a//b.py:4", "/abs/path.py:7", "",
            "C:\\x.py:2", "f.py:1:2"]
    v = xs[0]
    for i, (n, s, loc) in enumerate(zip(names, scopes, locs)):
        v = add(g, "add", [v, params[i % len(params)] if i % 2 else xs[i % len(xs)]], name=n, scope=s, loc=loc)
    g.set_outputs([("out put", v), ("none", xs[1]), ("0", params[1]), ("return", xs[2])])
    text = print_graph(roundtrip(g))
    for piece in ('graph "my graph \\u00fc"(%"x y" : f32[B,3], %0 : f32[B,3], %"\\u00e9" : f32[B,3], %none',
                  '-> ("out put", none, 0, return) {', '%"a\\"b" : ', "%return : ", '%"1x"', '@"w/0"', "@none",
                  'param @"\\"" : f32[3]', '# "enc.layers[0]/attn" @ model.py:12', '# "0.attn" @ "my file.py:3"',
                  '# layers.0 @ "no-line"', "# @ a//b.py:4", '# "#" @ /abs/path.py:7', '  # "@"\n',
                  '# "x@y" @ "C:\\\\x.py:2"', '@ "f.py:1:2"',
                  'return "out put"=%"new\\nline", none=%0, 0=@"w/0", return=%"\\u00e9"'):
        assert piece in text, piece


def test_missing_optional_operands_and_multiple_outputs():
    g = Graph("opt")
    g.dims["B"] = (1, 4)
    x = g.add_input("x", tt(B, 8))
    w, b = g.add_param("w", tt(3, 8)), g.add_param("b", tt(3))
    h1 = add(g, "linear", [x, w, None])
    h2 = add(g, "linear", [x, w, b])
    ln = add(g, "layer_norm", [h1, None, b], ndim=1, eps=1e-6)
    q = add(g, "reshape", [h2], shape=(B, 1, 3))
    at = add(g, "sdpa", [q, q, q, None], scale=0.5)
    g.set_outputs([("z", ln), ("a", at), ("x_again", x), ("weight", w)])
    g2 = roundtrip(g)
    assert [n.inputs[-1] for n in g2.nodes[:3]] == [None, g2.params["b"], g2.params["b"]]
    assert g2.nodes[2].inputs[1] is None
    assert [k for k, _ in g2.outputs] == ["z", "a", "x_again", "weight"]
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((3, 8)).astype(np.float32)}
    pdata = {"w": rng.standard_normal((3, 8)).astype(np.float32), "b": rng.standard_normal(3).astype(np.float32)}
    r1, r2 = interpret(g, feeds, params=pdata), interpret(g2, feeds, params=pdata)
    for k in r1:
        np.testing.assert_array_equal(r1[k], r2[k])


def test_polynomial_dims_round_trip():
    g = Graph("dims")
    g.dims["B"] = (1, 256)
    g.dims["T"] = (0, 9)
    x = g.add_input("x", tt(B, T, 4))
    y = g.add_input("y", tt(B, 1, 4))
    z = g.add_input("z", tt(B * T * 4 + 1, dtype=int32))
    cat = add(g, "concat", [x, y], dim=1)                          # T+1
    flat = add(g, "reshape", [cat], shape=(B * (T + 1) * 4,))
    sl = add(g, "slice", [x, ], dim=1, start=0, end=T - 1, step=1)  # T-1
    neg = add(g, "full", [], shape=(T * 3 - B * 2 + 300,), value=1, dtype=int64)
    g.set_outputs([("flat", flat), ("sl", sl), ("z", z), ("neg", neg)])
    text = print_graph(roundtrip(g))
    assert "dim B in 1..256\n  dim T in 0..9\n" in text
    assert "%z : i32[B*T*4+1]" in text and "f32[B*T*4+B*4]" in text and "f32[B,T-1,4]" in text
    assert "i64[-B*2+T*3+300]" in text


def test_unicode_and_underscore_dim_names_round_trip():
    g = Graph("u")
    g.dims["Б"] = (1, 4)
    g.dims["_n2"] = (0, 3)
    b, n = Sym.var("Б"), Sym.var("_n2")
    x = g.add_input("x", tt(b, n + 1))
    g.set_outputs([("out", add(g, "slice", [x], dim=1, start=0, end=n, step=1))])
    assert "dim Б in 1..4" in print_graph(roundtrip(g))


def test_hand_written_text_is_canonicalised():
    text = (
        "// an MLP, annotated by hand\r\n"
        "\n"
        "graph mlp ( %x:f32[ B , 4 ] ) -> ( out ) {\n"
        "\t// the batch\n"
        "  dim B in 1 .. 8\n"
        "\n"
        "  param @w : f32[3,4]   // trailing comments are fine too\n"
        "  %h : f32[B,3] = linear(%x, @w, none)\n"
        "  %s : f32[B,3] = softmax[dim=1](%h)#head@m.py:3\n"
        "  %c : f32[] = constant[value=2, dtype=f32]()\n"
        "  %m : f32[B] = sum[dims=[1]](%s)\n"
        "  return out=%m\n"
        "}\n"
        "// end\n"
    )
    g = parse(text)
    assert print_graph(g) == (
        "graph mlp(%x : f32[B,4]) -> (out) {\n"
        "  dim B in 1..8\n"
        "  param @w : f32[3,4]\n"
        "  %h : f32[B,3] = linear(%x, @w, none)\n"
        "  %s : f32[B,3] = softmax[dim=1](%h)  # head @ m.py:3\n"
        "  %c : f32[] = constant[dtype=f32, value=2]()\n"
        "  %m : f32[B] = sum[dims=[1], keepdim=false](%s)\n"
        "  return out=%m\n"
        "}\n"
    )
    assert g.nodes[2].attrs["value"] == 2 and type(g.nodes[2].attrs["value"]) is int
    roundtrip(g)


FLOATS = [math.nan, math.inf, -math.inf, -0.0, 0.0, 1e-30, -1e-30, 5e-324, 2.2250738585072014e-308,
          1.7976931348623157e308, 0.1, 1 / 3, 1e16, 123456789.0, 1e-05, -2.5e-08, 1e22, 9007199254740993.0]


@pytest.mark.parametrize("value", FLOATS, ids=repr)
def test_float_attributes_round_trip_exactly(value):
    g = Graph("f")
    c = add(g, "constant", [], value=value, dtype=float64)
    lr = add(g, "leaky_relu", [add(g, "full", [], shape=(2,), value=value, dtype=float32)], negative_slope=value)
    g.set_outputs([("c", c), ("lr", lr)])
    g2 = roundtrip(g)
    assert same(g2.nodes[0].attrs["value"], float(value))
    assert same(g2.nodes[2].attrs["negative_slope"], float(value))
    with np.errstate(over="ignore"):
        out = interpret(g2)["c"]
    assert same(float(out), float(value))


def test_parse_dim_reads_every_printed_dim():
    for d in (B * -3, T - B * 3, B * T * 4 + B + 1, -B + 5, 5 - B, B * B, -B, 1 - B * T, B * T * -2 - 7):
        assert parse_dim(str(d)) == d
        assert "*-" not in str(d)


# --------------------------------------------------------------------------- hypothesis: random graphs
_FLOAT_DT = [float32, float64, float16, bfloat16]
_ALL_DT = list(ALL_DTYPES)
_UNARY = sorted(n for n, op in OPS.items() if op.lowering == "elementwise" and op.inputs == ("x",))
_BINARY = sorted(n for n, op in OPS.items() if op.inputs == ("a", "b"))
_REDUCE = sorted(n for n, op in OPS.items() if op.lowering in ("reduce", "argreduce", "softmax"))
_SHAPE = ["reshape", "permute", "expand", "slice", "concat", "pad", "constant", "full", "arange", "where"]

special_floats = st.sampled_from([0.0, -0.0, 1.0, -1.5, 1e-30, 5e-324, 1e300, math.inf, -math.inf, math.nan])
any_float = st.one_of(special_floats, st.floats(allow_nan=True, allow_infinity=True, width=64))
scalar = st.one_of(st.integers(-5, 5), any_float, st.booleans())
odd_text = st.text(min_size=1, max_size=6)
plain = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.]{0,5}", fullmatch=True)
names = st.one_of(plain, odd_text, st.integers(0, 99).map(str))


def _dim_pool(g: Graph) -> list:
    syms = [Sym.var(s) for s in g.dims]
    return [1, 2, 3, 4] + syms + [s * 2 for s in syms] + [s + 1 for s in syms]


def _attrs_for(draw, opname: str, types: list[TensorType], g: Graph) -> dict[str, Any]:
    op = OPS[opname]
    x = types[0] if types else None
    nd = x.ndim if x is not None else 0
    if opname == "reshape":
        shape = list(x.shape)
        choice = draw(st.integers(0, 2))
        if choice == 0:
            from graphc.sym import prod
            return {"shape": (prod(shape),)}
        if choice == 1:
            return {"shape": tuple(shape[:1] + [1] + shape[1:])}
        return {"shape": tuple(d for d in shape if d != 1)}
    if opname == "permute":
        return {"dims": tuple(draw(st.permutations(range(nd))))}
    if opname == "expand":
        return {"shape": (draw(st.sampled_from(_dim_pool(g))),) + tuple(
            draw(st.sampled_from(_dim_pool(g))) if d == 1 else d for d in x.shape)}
    if opname == "slice":
        d = draw(st.integers(0, max(nd - 1, 0)))
        size = x.shape[d] if nd else 1
        start = draw(st.sampled_from([0, 1]))
        end = draw(st.sampled_from([size, size - 1, start]))
        return {"dim": d, "start": start, "end": end, "step": 1 if not isinstance(size, int) else draw(
            st.integers(1, 3))}
    if opname in ("concat", "softmax", "log_softmax", "argmax", "argmin"):
        out = {"dim": draw(st.integers(0, max(nd - 1, 0)))}
        if opname in ("argmax", "argmin"):
            out["keepdim"] = draw(st.booleans())
        return out
    if op.lowering == "reduce":
        dims = sorted(draw(st.sets(st.integers(0, max(nd - 1, 0)), max_size=nd)))
        out = {"dims": tuple(dims), "keepdim": draw(st.booleans())}
        if opname == "var":
            out["correction"] = draw(st.integers(0, 2))
        return out
    if opname == "pad":
        return {"pads": tuple(draw(st.lists(st.integers(-1, 2), min_size=0, max_size=2 * min(nd, 2)).filter(
            lambda p: len(p) % 2 == 0))), "value": draw(scalar)}
    if opname == "constant":
        return {"value": draw(scalar), "dtype": draw(st.sampled_from(_ALL_DT))}
    if opname == "full":
        shape = draw(st.lists(st.sampled_from(_dim_pool(g)), max_size=3))
        return {"shape": tuple(shape), "value": draw(scalar), "dtype": draw(st.sampled_from(_ALL_DT))}
    if opname == "arange":
        pool = [s for s in _dim_pool(g) if isinstance(s, Sym) and s.is_var]
        if pool and draw(st.booleans()):
            return {"end": draw(st.sampled_from(pool))}
        return {"start": draw(st.integers(-3, 3)), "end": draw(st.integers(4, 9)),
                "step": draw(st.sampled_from([1, 2, 0.5])), "dtype": draw(st.sampled_from([int64, float32]))}
    attrs: dict[str, Any] = {}
    for k, spec in op.attrs.items():
        kind = spec.kind.rstrip("?")
        if spec.default is not REQUIRED_DEFAULT and draw(st.booleans()):
            continue  # leave it to the default
        if kind == "float":
            attrs[k] = draw(any_float)
        elif kind == "scalar":
            attrs[k] = draw(st.one_of(st.none(), scalar) if spec.kind.endswith("?") else scalar)
        elif kind == "dtype":
            attrs[k] = draw(st.sampled_from(_ALL_DT))
        elif kind == "str":
            attrs[k] = draw(st.sampled_from(["none", "tanh"]))
        elif kind == "bool":
            attrs[k] = draw(st.booleans())
        elif kind == "int":
            attrs[k] = draw(st.integers(-1, 3))
    return attrs


REQUIRED_DEFAULT = __import__("graphc.ops.registry", fromlist=["REQUIRED"]).REQUIRED


@st.composite
def random_graphs(draw) -> Graph:
    g = Graph(draw(names))
    for s in draw(st.lists(st.sampled_from(["B", "T", "N"]), unique=True, max_size=2)):
        lo = draw(st.integers(0, 2))
        g.dims[s] = (lo, lo + draw(st.integers(2, 6)))
    used: set[str] = set()

    def fresh(base: str) -> str:
        n, i = base, 0
        while n in used:
            i += 1
            n = f"{base}_{i}"
        used.add(n)
        return n

    values = []
    for _ in range(draw(st.integers(1, 3))):
        pool = [1, 2, 3, 4] + [Sym.var(s) for s in g.dims]
        shape = tuple(draw(st.lists(st.sampled_from(pool), max_size=3)))
        dt = draw(st.sampled_from([float32, float32, float64, int64, bool_]))
        values.append(g.add_input(fresh(draw(names)), TensorType(shape, dt)))
    nparams = 0
    for _ in range(draw(st.integers(2, 14))):
        kind = draw(st.sampled_from(["unary", "binary", "reduce", "shape", "matmul"]))
        opname = draw(st.sampled_from({"unary": _UNARY, "binary": _BINARY, "reduce": _REDUCE, "shape": _SHAPE,
                                       "matmul": ["matmul"]}[kind]))
        op = OPS[opname]
        a = draw(st.sampled_from(values))
        if opname in ("slice", "concat") and a.type.ndim == 0:
            continue  # their rules index the shape before checking the rank (IndexError, not ShapeError)
        if op.inputs == ():
            ins = []
        elif opname == "concat":
            ins = [a] * draw(st.integers(1, 3))
        elif len(op.inputs) == 1:
            ins = [a]
        elif opname == "matmul":
            if a.type.ndim == 0 or a.type.dtype is bool_:
                continue
            k = a.type.shape[-1]
            if not isinstance(k, int):
                continue
            ins = [a, g.add_param(fresh(f"w{nparams}"), TensorType((k, draw(st.integers(1, 3))), a.type.dtype))]
            nparams += 1
        else:
            # the other operand: the same value, another value, or a parameter that broadcasts against it
            pick = draw(st.integers(0, 2))
            if pick == 0:
                b = a
            elif pick == 1:
                b = draw(st.sampled_from(values))
            else:
                pshape = tuple(d if isinstance(d, int) else 1 for d in a.type.shape[draw(st.integers(0, a.type.ndim)):])
                b = g.add_param(fresh(f"p{nparams}"), TensorType(pshape, a.type.dtype))
                nparams += 1
            ins = [a, b]
            if opname == "where":
                cond = next((v for v in values if v.type.dtype is bool_), None)
                if cond is None:
                    continue
                ins = [cond, a, b]
        try:
            attrs = op.bind_attrs(_attrs_for(draw, opname, [v.type for v in ins], g))
            out_t = op.infer_type([v.type for v in ins], attrs)
        except (ShapeError, TraceError):
            continue  # not a valid application: draw another op
        scope = draw(st.one_of(st.just(""), plain, odd_text))
        loc = draw(st.one_of(st.just(""), st.builds("{}.py:{}".format, plain, st.integers(1, 999)), odd_text))
        node = g.add_node(opname, ins, attrs, out_t, name=fresh(draw(names)), scope=scope, loc=loc)
        values.append(node.out)
    outs = draw(st.lists(st.sampled_from(values), min_size=1, max_size=3))
    onames = draw(st.lists(names, min_size=len(outs), max_size=len(outs), unique=True))
    g.set_outputs(list(zip(onames, outs)))
    return g


def _random_array(t: TensorType, env: dict[str, int], rng: np.random.Generator) -> np.ndarray:
    shape = tuple(d.evaluate(env) if isinstance(d, Sym) else d for d in t.shape)
    if t.dtype is bool_:
        return rng.random(shape) > 0.5
    if not t.dtype.is_floating_point:
        return rng.integers(-3, 4, size=shape).astype(t.dtype.np)
    return rng.standard_normal(shape).astype(t.dtype.np)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # random data: var over one element, overflow...
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(random_graphs(), st.integers(0, 2**32 - 1))
def test_random_graphs_round_trip_and_compute_the_same(g, seed):
    g2 = roundtrip(g)
    rng = np.random.default_rng(seed)
    env = {s: rng.integers(max(lo, 1), hi + 1) for s, (lo, hi) in g.dims.items()}
    feeds = {v.name: _random_array(v.type, env, rng) for v in g.inputs}
    pdata = {k: _random_array(v.type, env, rng) for k, v in g.params.items()}
    with np.errstate(all="ignore"):
        try:
            want = interpret(g, feeds, params=pdata)
        except Exception as e:  # an op's reference may reject these values; the copy must fail alike
            with pytest.raises(type(e)):
                interpret(g2, feeds, params=pdata)
            return
        got = interpret(g2, feeds, params=pdata)
    assert list(got) == list(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


# ------------------------------------------------------------------------------------- traced models
class Dense(nn.Module):
    def __init__(self, i: int, o: int, act: bool = True):
        super().__init__()
        self.weight = nn.Parameter(graphc.randn(i, o) * 0.3)
        self.bias = nn.Parameter(graphc.randn(o) * 0.1)
        self.act = act

    def forward(self, x):
        y = x @ self.weight + self.bias
        return y.relu() if self.act else y


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(Dense(12, 16), Dense(16, 16), Dense(16, 5, act=False))

    def forward(self, x):
        h = x.view(x.shape[0], -1)
        return self.layers(h).softmax(-1)


class Norm(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.gain = nn.Parameter(graphc.ones(d) * 1.5)
        self.register_buffer("eps", graphc.tensor([1e-5]))

    def forward(self, x):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / (var + self.eps).sqrt() * self.gain


class Mixer(nn.Module):
    """Two inputs, a dynamic sequence dim, slicing to T-1, concat, a dict of outputs."""

    def __init__(self):
        super().__init__()
        self.proj = Dense(6, 6, act=False)
        self.norm = Norm(6)

    def forward(self, tokens, mask):
        h = self.norm(self.proj(tokens))
        shifted = graphc.cat([h[:, :1], h[:, :-1]], dim=1)
        scores = (h * shifted).sum(-1) + mask.float() * -1e9
        w = scores.softmax(-1)
        return {"mixed": (w.unsqueeze(-1) * h).sum(1), "scores": scores, "tail": h[:, 1:].flatten(1)}


class ConvNet(nn.Module):
    """graphc.nn layers: conv, batch norm, pooling, flatten, linear."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x):
        return self.head(self.features(x))


class Encoder(nn.Module):
    """graphc.nn layers: embedding, a transformer encoder layer (attention, layer norm, GELU), linear."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 8)
        self.layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, activation="gelu",
                                                batch_first=True)
        self.out = nn.Linear(8, 11, bias=False)

    def forward(self, ids):
        return self.out(self.layer(self.emb(ids)))


SEQ = Dim("T", 2, 64)


def _floats(*shape):
    return lambda rng, b: (rng.standard_normal((b, *shape)).astype(np.float32),)


MODELS = [
    ("mlp", MLP, _floats(3, 4), {"x": 0}),
    ("norm", lambda: Norm(7), _floats(7), {"x": {0: Dim("N", 1, 32)}}),
    ("mixer", Mixer, lambda rng, b: (rng.standard_normal((b, 5, 6)).astype(np.float32), rng.random((b, 5)) > 0.7),
     {"tokens": {0: "B", 1: SEQ}, "mask": {0: "B", 1: SEQ}}),
    ("convnet", ConvNet, _floats(3, 8, 8), {"x": 0}),
    ("encoder", Encoder, lambda rng, b: (rng.integers(0, 11, (b, 4 + b)),), {"ids": {0: "B", 1: SEQ}}),
]


@pytest.mark.parametrize("name,make,inputs,dynamic", MODELS, ids=[m[0] for m in MODELS])
def test_traced_models_round_trip_and_compute_the_same(name, make, inputs, dynamic):
    graphc.manual_seed(0)
    model = make().eval()  # graphs are inference graphs: batch norm uses its running statistics
    rng = np.random.default_rng(1)
    examples = inputs(rng, 2)
    g = trace(model, examples, dynamic)
    g2 = roundtrip(g)
    assert all(n.loc.startswith("test_ir_text.py:") or n.loc == "" for n in g2.nodes)
    assert any(n.loc.startswith("test_ir_text.py:") for n in g2.nodes)
    if name != "norm":
        assert len({n.scope for n in g2.nodes}) > 1  # the submodules' paths survive
    for feeds in (examples, inputs(rng, 3), inputs(rng, 1)):  # other sizes than the example's
        named = {v.name: a for v, a in zip(g.inputs, feeds)}
        want = interpret(g, named)
        got = interpret(g2, named, params=g.param_data)
        eager = model(*[graphc.tensor(a) for a in feeds])
        eager = eager if isinstance(eager, dict) else {"output": eager}
        assert list(got) == list(want) == list(eager)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
            np.testing.assert_allclose(got[k], eager[k].numpy(), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------- errors
GOOD = """\
graph g(%x : f32[B,4]) -> (out) {
  dim B in 1..8
  param @w : f32[3,4]
  %h : f32[B,3] = linear(%x, @w, none)  # fc @ m.py:1
  %r : f32[B,3] = relu(%h)
  return out=%r
}
"""


def perr(text: str, source: str = "model.gir") -> IRParseError:
    with pytest.raises(IRParseError) as ei:
        parse(text, source=source)
    e = ei.value
    first, src, caret = str(e).split("\n")
    assert first.startswith(f"{source}:{e.line}:{e.column}: ")
    line_text = text.split("\n")[e.line - 1].rstrip("\r")
    assert src.endswith(" | " + line_text) if line_text else src.endswith(" |")
    assert caret.index("^") - caret.index("|") - 2 == e.column - 1  # the caret sits under the column
    return e


def bad(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


def test_the_good_text_parses():
    assert print_graph(parse(GOOD)) == GOOD


def test_unexpected_token_names_line_column_token_and_expected_set():
    e = perr(bad("%h : f32[B,3]", "%h : f32[B,3)"))
    assert (e.line, e.column, e.token) == (4, 15, ")")
    assert e.expected == ("'*'", "'+'", "','", "'-'", "']'")
    assert str(e).startswith("model.gir:4:15: unexpected token ')' — expected one of: '*', '+', ',', '-', ']'\n")


def test_unexpected_character_end_of_line_and_end_of_input():
    e = perr(bad("relu(%h)", "relu($h)"))
    assert (e.line, e.column, e.token) == (5, 24, "$")
    assert "unexpected token '$'" in str(e) and "a value (%name)" in e.expected and "'none'" in e.expected
    e = perr(bad("relu(%h)", "relu(%h"))
    assert (e.line, e.token) == (5, "\n") and e.column == len("  %r : f32[B,3] = relu(%h") + 1
    assert "unexpected end of line — expected one of: ')', ','" in str(e)
    e = perr(GOOD.replace("}\n", ""))
    assert e.line == 6 and e.token == "" and "unexpected end of input — expected '}'" in str(e)
    e = perr("")
    assert (e.line, e.column) == (1, 1) and e.expected == ("'graph'", "end of line")


def test_bad_dtype_and_bad_keyword():
    e = perr(bad("@w : f32", "@w : f33"))
    assert (e.line, e.column, e.token) == (3, 14, "f33") and "expected a dtype (bool, u8" in str(e)
    e = perr(bad("dim B", "dims B"))
    assert e.token == "dims" and {"'dim'", "'param'", "'return'", "a value (%name)"} == set(e.expected)
    e = perr(bad("1..8", "1..-8"))
    assert e.token == "-" and e.expected == ("an integer",)


@pytest.mark.parametrize("old,new,line,col,token,message", [
    ("relu(%h)", "relu(%hh)", 5, 24, "%hh", "unknown value %hh (did you mean %h?)"),
    ("linear(%x", "linear(%r", 4, 26, "%r", "value %r is used before its definition on line 5"),
    ("%r : f32", "%h : f32", 5, 3, "%h", "duplicate definition of %h (first defined on line 4)"),
    ("%r : f32", "%x : f32", 5, 3, "%x", "duplicate definition of %x (first defined on line 1)"),
    ("@w, none", "@v, none", 4, 30, "@v", "unknown parameter @v"),
    ("= relu(", "= reluu(", 5, 19, "reluu", "unknown op 'reluu' (did you mean relu"),
    ("= relu(", "= lnear(", 5, 19, "lnear", "unknown op 'lnear' (did you mean linear"),
    ("relu(%h)", "relu(%h, %h)", 5, 28, "%h", "node %r: relu takes 1 operand(s) (x), got 2"),
    ("linear(%x, @w, none)", "linear(%x)", 4, 19, "linear",
     "node %h: linear takes 2 to 3 operand(s) (x, weight, bias?), got 1"),
    ("linear(%x, @w", "linear(none, @w", 4, 26, "none", "node %h: operand 'x' of linear is required, got none"),
    ("%r : f32[B,3]", "%r : f32[B,4]", 5, 8, "f32",
     "type mismatch for node %r: declared f32[B,4] but relu's type rule gives f32[B,3]"),
    ("%r : f32[B,3]", "%r : f64[B,3]", 5, 8, "f64", "declared f64[B,3] but relu's type rule gives f32[B,3]"),
    ("@w : f32[3,4]", "@w : f32[3,5]", 4, 19, "linear", "node %h: linear: input [B,4] has 4 features"),
    ("= relu(%h)", "= relu[inplace=true](%h)", 5, 24, "inplace", "node %r: relu has no attribute 'inplace'; it "
                                                                  "takes no attributes"),
    ("= relu(%h)", "= softmax[dm=1](%h)", 5, 27, "dm", "softmax has no attribute 'dm' (did you mean dim?)"),
    ("= relu(%h)", "= softmax[dim=true](%h)", 5, 31, "true",
     "node %r: softmax: attribute 'dim' expects int, got True"),
    ("= relu(%h)", "= softmax[dim=1.5](%h)", 5, 31, "1.5", "attribute 'dim' expects int, got 1.5"),
    ("= relu(%h)", "= softmax(%h)", 5, 19, "softmax", "node %r: softmax: missing required attribute 'dim'"),
    ("= relu(%h)", "= softmax[dim=1, dim=1](%h)", 5, 34, "dim", "node %r: attribute 'dim' is given twice"),
    ("= relu(%h)", "= softmax[dim=5](%h)", 5, 19, "softmax", "node %r: softmax: dim 5 out of range"),
    ("f32[B,4]) ->", "f32[T,4]) ->", 1, 18, "T", "dynamic dim T is not declared; add a line `dim T in MIN..MAX`"),
    ("f32[B,4]) ->", "f32[B,-4]) ->", 1, 21, "4", "dim -4 is negative"),
    ("dim B in 1..8", "dim B in 8..1", 2, 15, "1", "dim B: empty range 8..1"),
    ("dim B in 1..8", "dim inf in 1..8", 2, 7, "inf", "'inf' cannot name a dim"),
    ("dim B in 1..8", "dim B in 1..8\n  dim B in 1..8", 3, 7, "B", "dim B is declared twice (first on line 2)"),
    ("param @w : f32[3,4]", "param @w : f32[3,4]\n  param @w : f32[3,4]", 4, 9, "@w",
     "duplicate declaration of parameter @w (first on line 3)"),
    ("-> (out)", "-> (output)", 1, 28, "output",
     "the header declares outputs (output) but `return` on line 6 gives (out)"),
    ("return out=%r", "return out=%r, out=%h", 6, 18, "out", "output name 'out' is used twice (first on line 6)"),
    ("return out=%r", "return", 6, 3, "return", "the graph has no outputs"),
    ("return out=%r", "return out=%nope", 6, 14, "%nope", "unknown value %nope"),
    ("# fc @", '# "fc\\q" @', 4, 43, '"fc\\q"', 'invalid string literal "fc\\q": Invalid \\escape'),
])
def test_semantic_errors_name_line_column_and_token(old, new, line, col, token, message):
    e = perr(bad(old, new))
    assert (e.line, e.column, e.token) == (line, col, token), str(e)
    assert message in str(e).split("\n")[0], str(e)


def test_dim_names_that_collide_with_attribute_words_are_rejected():
    for word in ("true", "false", "none", "nan", "f32", "bool", "i64"):
        e = perr(GOOD.replace("dim B in", f"dim {word} in"))
        assert e.token == word and "cannot name a dim" in str(e)


def test_error_carets_respect_tabs():
    e = perr(bad("  %r : f32[B,3] = relu(%h)", "\t%r : f32[B,3] = relu(%q)"))
    caret = str(e).split("\n")[2]
    assert caret.endswith("| \t" + " " * (e.column - 2) + "^")


# ------------------------------------------------------------------------------------------ parse_file
def _write(tmp_path, text=GOOD):
    p = tmp_path / "model.gir"
    p.write_text(text, encoding="utf-8")
    return p


def test_parse_file_without_weights_declares_params_without_data(tmp_path):
    g = parse_file(_write(tmp_path))
    assert list(g.params) == ["w"] and not g.param_data


def test_parse_file_checks_weights_against_declarations(tmp_path):
    p = _write(tmp_path)
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    g = parse_file(p, weights={"w": w, "unused": np.zeros(1)})
    assert g.param_data["w"] is w
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(interpret(g, x=x)["out"], np.maximum(x @ w.T, 0))
    with pytest.raises(IRParseError) as ei:
        parse_file(p, weights={"v": w})
    assert ei.value.line == 3 and str(ei.value).startswith(f"{p}:3:9: parameter @w (f32[3,4]) has no tensor named 'w'")
    with pytest.raises(IRParseError, match=r"parameter @w is declared f32\[3,4\] but the weights holds f16\[3,4\]"):
        parse_file(p, weights={"w": w.astype(np.float16)})
    with pytest.raises(IRParseError, match=r"parameter @w is declared f32\[3,4\] but the weights holds f32\[4,3\]"):
        parse_file(p, weights={"w": w.T.copy()})


def test_parse_file_reads_safetensors(tmp_path, monkeypatch):
    st_numpy = pytest.importorskip("safetensors.numpy")
    try:
        import graphc.serialization  # noqa: F401
    except ModuleNotFoundError:
        # the serialization module is another part of graphc; stand in for it with the reference reader
        fake = types.ModuleType("graphc.serialization")
        fake.load_file = st_numpy.load_file
        monkeypatch.setitem(sys.modules, "graphc.serialization", fake)
    p = _write(tmp_path)
    wfile = tmp_path / "model.safetensors"
    w = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    st_numpy.save_file({"w": w}, str(wfile))
    g = parse_file(p, weights=wfile)
    np.testing.assert_array_equal(g.param_data["w"], w)
    st_numpy.save_file({"w": w.astype(np.float64)}, str(wfile))
    with pytest.raises(IRParseError, match=rf"parameter @w is declared f32\[3,4\] but {wfile} holds f64\[3,4\]"):
        parse_file(p, weights=wfile)
