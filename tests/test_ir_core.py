"""The IR core: the verifier's invariants, the reference interpreter, and the tracer's errors and naming."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc import nn
from graphc._dtype import float32, int64
from graphc.errors import TraceError, VerifyError
from graphc.ir import Graph, Value, interpret, print_graph, verify
from graphc.ir.interpreter import InterpreterError
from graphc.ops import OPS, TensorType
from graphc.sym import Sym
from graphc.trace import Dim, trace

B, T = Sym.var("B"), Sym.var("T")
HERE = Path(__file__).name
_SOURCE = Path(__file__).read_text(encoding="utf-8").splitlines()


def line_of(marker: str) -> str:
    """'test_ir_core.py:N' of the line carrying `# <marker>`."""
    hits = [i + 1 for i, line in enumerate(_SOURCE) if line.rstrip().endswith(f"# <{marker}>")]
    assert len(hits) == 1, marker
    return f"{HERE}:{hits[0]}"


def tt(*shape, dtype=float32) -> TensorType:
    return TensorType(tuple(shape), dtype)


def add(g: Graph, op: str, ins: list, *, name: str | None = None, scope: str = "", **attrs) -> Value:
    opdef = OPS[op]
    bound = opdef.bind_attrs(attrs)
    t = opdef.infer_type([None if v is None else v.type for v in ins], bound)
    return g.add_node(op, ins, bound, t, name=name, scope=scope).out


# ------------------------------------------------------------------------------------------ verifier
def base() -> Graph:
    g = Graph("g")
    g.dims["B"] = (1, 8)
    x = g.add_input("x", tt(B, 3))
    w = g.add_param("w", tt(3), np.ones(3, np.float32))
    h = add(g, "add", [x, w], scope="enc.fc")
    r = add(g, "relu", [h], scope="enc.act")
    g.set_outputs([("out", r)])
    verify(g)
    return g


def _undeclared_input_dim(g):
    del g.dims["B"]


def _duplicate_input(g):
    g.inputs.append(Value("x", tt(3), "input"))


def _input_kind(g):
    g.inputs.append(Value("y", tt(3), "node"))


def _param_table(g):
    g.params["v"] = g.params["w"]


def _param_dtype(g):
    g.param_data["w"] = np.ones(3, np.float64)


def _param_shape(g):
    g.param_data["w"] = np.ones((1, 3), np.float32)


def _unknown_op(g):
    g.nodes[1].op = "nope"


def _node_name_clash(g):
    g.nodes[0].out.name = "x"


def _unlinked(g):
    g.nodes[1].out.node = g.nodes[0]


def _use_before_def(g):
    g.nodes.reverse()


def _foreign_value(g):
    g.nodes[1].inputs = [base().nodes[0].out]


def _not_normalised(g):
    x = g.inputs[0]
    g.add_node("sum", [x], {"dims": [1]}, tt(B), name="s", scope="head")


def _missing_default(g):
    x = g.inputs[0]
    g.add_node("sum", [x], {"dims": (1,)}, tt(B), name="s")


def _bad_shapes(g):
    g.add_node("add", [g.inputs[0], g.add_param("v", tt(4))], {}, tt(B, 3), name="bad", scope="enc.mix")


def _wrong_type(g):
    g.nodes[1].out.type = tt(B, 4)


def _wrong_dtype(g):
    g.nodes[1].out.type = tt(B, 3, dtype=int64)


def _undeclared_node_dim(g):
    g.add_node("full", [], {"shape": (T,), "value": 0.0, "dtype": float32}, tt(T), name="f")


def _no_outputs(g):
    g.set_outputs([])


def _duplicate_output(g):
    g.set_outputs([("out", g.nodes[0].out), ("out", g.nodes[1].out)])


def _foreign_output(g):
    g.set_outputs([("out", Value("z", tt(3), "node"))])


@pytest.mark.parametrize("corrupt,message", [
    (_undeclared_input_dim, "input %x uses dynamic dim B that has no 'dim' declaration"),
    (_duplicate_input, "value name %x is defined twice"),
    (_input_kind, "graph input %y has kind 'node'"),
    (_param_table, "parameter table entry 'v' holds @w"),
    (_param_dtype, "parameter @w is declared f32[3] but holds float64[3]"),
    (_param_shape, "parameter @w is declared f32[3] but holds float32[1, 3]"),
    (_unknown_op, "node %relu = nope(...) in module 'enc.act': unknown op 'nope'"),
    (_node_name_clash, "node %x = add(...) in module 'enc.fc': value name %x is defined twice"),
    (_unlinked, "node %relu = relu(...) in module 'enc.act': output value is not linked to its node"),
    (_use_before_def, "node %relu = relu(...) in module 'enc.act': operand 0 (%add) is used before it is defined"),
    (_foreign_value, "node %relu = relu(...) in module 'enc.act': operand 0 (%add) is used before it is defined or "
                     "does not belong to this graph"),
    (_not_normalised, "node %s = sum(...) in module 'head': attributes are not normalised (expected {'dims': (1,), "
                      "'keepdim': False})"),
    (_missing_default, "node %s = sum(...): attributes are not normalised"),
    (_bad_shapes, "node %bad = add(...) in module 'enc.mix': add: shapes [B,3] and [4] do not broadcast"),
    (_wrong_type, "node %relu = relu(...) in module 'enc.act': declared type f32[B,4] but the op's rule gives "
                  "f32[B,3]"),
    (_wrong_dtype, "declared type i64[B,3] but the op's rule gives f32[B,3]"),
    (_undeclared_node_dim, "node %f = full(...): dynamic dim T is not declared"),
    (_no_outputs, "graph has no outputs"),
    (_duplicate_output, "output name 'out' is used twice"),
    (_foreign_output, "output 'out' refers to %z, which is not defined in this graph"),
], ids=lambda x: x.__name__.strip("_") if callable(x) else "")
def test_verifier_catches_each_invariant(corrupt, message):
    g = base()
    corrupt(g)
    with pytest.raises(VerifyError) as ei:
        verify(g)
    assert message in str(ei.value)


# --------------------------------------------------------------------------------------- interpreter
def test_interpreter_matches_numpy_on_a_hand_built_graph():
    g = Graph("h")
    g.dims["B"] = (1, 16)
    x = g.add_input("x", tt(B, 4))
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    lin = add(g, "linear", [x, g.add_param("w", tt(3, 4), w), g.add_param("b", tt(3), b)])
    sm = add(g, "softmax", [add(g, "relu", [lin])], dim=1)
    tail = add(g, "slice", [x], dim=0, start=1, end=B, step=1)
    g.set_outputs([("probs", sm), ("tail", tail)])
    xv = rng.standard_normal((5, 4)).astype(np.float32)
    out = interpret(g, x=xv)
    h = np.maximum(xv.astype(np.float64) @ w.T + b, 0)
    e = np.exp(h - h.max(1, keepdims=True))
    np.testing.assert_allclose(out["probs"], e / e.sum(1, keepdims=True), rtol=1e-6)
    np.testing.assert_array_equal(out["tail"], xv[1:])
    assert out["probs"].dtype == np.float32 and list(out) == ["probs", "tail"]


class Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.w = nn.Parameter(graphc.randn(d, d) * 0.5)
        self.scale = nn.Parameter(graphc.ones(d) * 0.7)

    def forward(self, x):
        h = (x @ self.w).tanh() * self.scale
        return x + h.sigmoid() * (h - h.mean(-1, keepdim=True))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Block(6), Block(6)])

    def forward(self, x, y):
        for blk in self.blocks:
            x = blk(x)
        z = graphc.cat([x, y * 2 - 1], dim=-1)
        return z.amax(-1), (z.clamp(min=-0.5) ** 2).sum(-1).sqrt()


def test_interpreter_matches_eager_tensor_math():
    graphc.manual_seed(3)
    net = Net()
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((2, 5, 6)).astype(np.float32), rng.standard_normal((2, 5, 3)).astype(np.float32)
    g = trace(net, (x, y), {"x": {0: "B", 1: "T"}, "y": {0: "B", 1: "T"}})
    assert {n.scope for n in g.nodes} >= {"blocks.0", "blocks.1", ""}
    for b, t in ((2, 5), (1, 1), (7, 3)):
        xv, yv = rng.standard_normal((b, t, 6)).astype(np.float32), rng.standard_normal((b, t, 3)).astype(np.float32)
        got = interpret(g, x=xv, y=yv)
        want = net(graphc.tensor(xv), graphc.tensor(yv))
        assert list(got) == ["output0", "output1"]
        for k, wv in zip(got, want):
            np.testing.assert_allclose(got[k], wv.numpy(), rtol=1e-6, atol=1e-6)


def _two_input_graph() -> Graph:
    g = Graph("two")
    g.dims["B"] = (1, 4)
    x = g.add_input("x", tt(B, 3))
    y = g.add_input("y", tt(B, 3, dtype=int64))
    z = g.add_input("z", tt(B * 2))
    g.set_outputs([("s", add(g, "add", [x, add(g, "cast", [y], dtype=float32)])), ("z", z)])
    return g


def _feeds(b=2, by=None, dtype=np.float32, **over):
    f = {"x": np.ones((b, 3), dtype), "y": np.ones((by or b, 3), np.int64), "z": np.ones(2 * b, np.float32)}
    f.update(over)
    return f


@pytest.mark.parametrize("feeds,message", [
    (_feeds(2, by=3), "input 'y' dim 0: dynamic dim B is 3 here but 2 elsewhere"),
    (_feeds(5), "input 'x' dim 0: dynamic dim B=5 is outside 1..4"),
    (_feeds(2, dtype=np.float64), "input 'x': expected dtype float32, got float64"),
    ({"x": np.ones((2, 3), np.float32), "z": np.ones(4, np.float32)}, "missing input 'y'"),
    (_feeds(2, x=np.ones((2, 3, 1), np.float32)), "input 'x': expected 2 dims f32[B,3], got shape [2, 3, 1]"),
    (_feeds(2, x=np.ones((2, 4), np.float32)), "input 'x': dim 1 should be 3 (= 3), got 4"),
    (_feeds(2, z=np.ones(5, np.float32)), "input 'z': dim 0 should be B*2 (= 4), got 5"),
    (_feeds(2, w=np.ones(1)), "unknown input(s) ['w']; the graph takes ['x', 'y', 'z']"),
])
def test_interpreter_input_binding_errors(feeds, message):
    with pytest.raises(ValueError) as ei:
        interpret(_two_input_graph(), feeds)
    assert message in str(ei.value)


def test_interpreter_binds_dims_and_runs():
    out = interpret(_two_input_graph(), _feeds(3))
    np.testing.assert_array_equal(out["s"], np.full((3, 3), 2, np.float32))


def test_interpreter_unreadable_polynomial_dim():
    g = Graph("p")
    g.dims["B"] = (1, 8)
    g.set_outputs([("out", add(g, "relu", [g.add_input("x", tt(B * 2 + 1))]))])
    with pytest.raises(ValueError, match=r"input 'x' dim 0 is B\*2\+1, but no input has B as a whole dim"):
        interpret(g, x=np.ones(5, np.float32))
    g = Graph("q")  # a multiple of a dim (a dynamic image size 2*B) is read off the input
    g.dims["B"] = (1, 8)
    g.set_outputs([("out", add(g, "relu", [g.add_input("x", tt(B * 2))]))])
    assert interpret(g, x=np.ones(4, np.float32))["out"].shape == (4,)
    with pytest.raises(ValueError, match=r"input 'x': dim 0 should be B\*2"):
        interpret(g, x=np.ones(5, np.float32))


def test_interpreter_errors_name_the_node_and_module():
    g = Graph("e")
    x = g.add_input("x", tt(3, 2))
    idx = g.add_input("idx", tt(2, dtype=int64))
    g.set_outputs([("out", add(g, "index_select", [x, idx], dim=0, scope="emb.lookup", name="rows"))])
    with pytest.raises(InterpreterError, match=r"While executing %rows = index_select\(\.\.\.\) in module "
                                               r"'emb.lookup': index_select: index 7 is out of bounds for size 3"):
        interpret(g, x=np.ones((3, 2), np.float32), idx=np.array([0, 7]))
    p = Graph("p")
    p.set_outputs([("out", add(p, "relu", [p.add_param("w", tt(2))]))])
    with pytest.raises(ValueError, match="parameter @w has no data"):
        interpret(p)
    np.testing.assert_array_equal(interpret(p, params={"w": np.array([-1, 2], np.float32)})["out"], [0, 2])


# ------------------------------------------------------------------------------------------- tracer
class Inner(nn.Module):
    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode
        self.w = nn.Parameter(graphc.ones(4))

    def forward(self, x):
        y = (x * self.w).relu()
        m = self.mode
        if m == "bool":
            return y if bool(y) else -y  # <bool>
        if m == "if":
            if y.sum() > 0:  # <if>
                return y
            return -y
        if m == "item":
            return y * y.sum().item()  # <item>
        if m == "numpy":
            return y * float(y.numpy().sum())  # <numpy>
        if m == "float":
            return y * float(y.sum())  # <float>
        if m == "setitem":
            y.expand(2, -1, -1)[0] = 1.0  # <setitem>
            return y
        if m == "fill":
            return y + self.w.fill_(0.0)  # <fill>
        if m == "mask":
            return y[y > 0]  # <mask>
        if m == "len":
            return y * len(y)  # <len>
        if m == "range":
            return sum(y[i] for i in range(y.shape[0]))  # <range>
        if m == "compare":
            return y if y.shape[0] > 2 else -y  # <compare>
        raise AssertionError(m)


class Wrapper(nn.Module):
    """Nests Inner two levels deep: its ops' module path is 'body.inner'."""

    def __init__(self, mode: str):
        super().__init__()
        self.body = nn.ModuleDict({"inner": Inner(mode)})

    def forward(self, x):
        return self.body["inner"](x)


@pytest.mark.parametrize("mode,op,words", [
    ("bool", "relu", "bool()"),
    ("if", "gt", "bool() (an `if` or `while` on a tensor value)"),
    ("item", "sum", ".item()"),
    ("numpy", "relu", ".numpy()"),
    ("float", "sum", "float()"),
    ("setitem", None, "x[...] = v writes through an expanded (broadcast) view"),
    ("fill", None, "fill_ writes into the parameter 'body.inner.w' in place"),
    ("mask", "relu", "boolean-mask indexing gives a data-dependent shape"),
    ("len", "relu", "len() of a tensor whose first dim is the dynamic size B"),
    ("range", None, "the dynamic size B was used where a concrete int is needed"),
    ("compare", None, "'B > 2' depends on the value of a dynamic dim"),
])
def test_trace_errors_name_op_module_and_source_line(mode, op, words):
    model = Wrapper(mode)
    with pytest.raises(TraceError) as ei:
        trace(model, (np.ones((2, 4), np.float32),), {"x": 0})
    msg = str(ei.value)
    assert words in msg
    if op is not None:
        assert f"comes from op '{op}'" in msg
    assert "in module 'body.inner'" in msg
    assert f"at {line_of(mode)}" in msg, msg


def test_trace_error_in_a_plain_callable_names_the_top_level_forward():
    class Plain:
        def named_modules(self, remove_duplicate=True):
            yield "", self

        def named_parameters(self, remove_duplicate=True):
            return iter(())

        named_buffers = named_parameters

        def __call__(self, x):
            return x * len(range(x.shape[0]))  # <plain>

    with pytest.raises(TraceError) as ei:
        trace(Plain(), (np.ones((2, 4), np.float32),), {"x": 0})
    assert f"(in the top-level forward() at {line_of('plain')})" in str(ei.value)


class Reshaper(nn.Module):
    def forward(self, x):
        a = x.view(x.shape[0], -1)
        b = x.flatten(1)
        c = x.reshape(-1, 48)
        d = x.view(x.size(0), 3, 16).transpose(1, 2).reshape(x.shape[0] * 16, 3)
        e = b.unflatten(1, (3, 16))[:, :, :-1]
        return a + b + c, d, e


def test_dynamic_batch_survives_view_flatten_and_reshape():
    g = trace(Reshaper(), (np.zeros((2, 3, 4, 4), np.float32),), {"x": 0})
    text = print_graph(g)
    assert "reshape[shape=[B, 48]](%x)" in text
    assert re.search(r"%add_1 : f32\[B,48\] = add", text)
    assert "f32[B*16,3]" in text and "f32[B,3,15]" in text
    x = np.random.default_rng(0).standard_normal((5, 3, 4, 4)).astype(np.float32)
    out = interpret(g, x=x)
    np.testing.assert_array_equal(out["output0"], 3 * x.reshape(5, 48))
    np.testing.assert_array_equal(out["output1"], x.reshape(5, 3, 16).transpose(0, 2, 1).reshape(80, 3))
    np.testing.assert_array_equal(out["output2"], x.reshape(5, 3, 16)[:, :, :-1])


class Heads(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, tokens, mask, *extra):
        h = tokens * mask
        if self.kind == "single":
            return h
        if self.kind == "tuple":
            return h, h.sum(-1), None
        if self.kind == "dict":
            return {"logits": h, "probs": h.softmax(-1)}
        return h, {"aux": h.amax(-1), "pair": (h, extra[0])}


@pytest.mark.parametrize("kind,names", [
    ("single", ["output"]),
    ("tuple", ["output0", "output1"]),
    ("dict", ["logits", "probs"]),
    ("nested", ["output0", "output1_aux", "output1_pair_0", "output1_pair_1"]),
])
def test_output_and_input_names(kind, names):
    x, m, e = np.ones((2, 3), np.float32), np.ones((2, 3), np.float32), np.ones(2, np.float32)
    g = trace(Heads(kind), (x, m, e, e), {"tokens": 0, "mask": 0})
    assert [v.name for v in g.inputs] == ["tokens", "mask", "extra0", "extra1"]
    assert [k for k, _ in g.outputs] == names
    assert g.inputs[0].type == g.inputs[1].type == tt(B, 3)
    out = interpret(g, tokens=x, mask=m * 2, extra0=e, extra1=e)
    assert list(out) == names
    np.testing.assert_array_equal(out[names[0]], x * 2)


def test_one_dim_name_shared_by_inputs_is_one_dim():
    g = trace(Heads("single"), (np.ones((2, 3), np.float32), np.ones((2, 3), np.float32)),
              {"tokens": {0: Dim("N", 1, 9)}, "mask": {0: Dim("N", 1, 9)}})
    assert g.dims == {"N": (1, 9)} and g.symbols() == ["N"]
    with pytest.raises(ValueError, match="dynamic dim N is 3 here but 2 elsewhere"):
        interpret(g, tokens=np.ones((2, 3), np.float32), mask=np.ones((3, 3), np.float32))
