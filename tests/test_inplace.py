"""In-place ops and aliasing: eager graphc, the traced graph (reference interpreter and compiled C
library) and PyTorch agree on every in-place method, augmented assignment, `x[...] = v`, `inplace=True`
activations and dropout, through aliases and views (graphc/functionalize.py). Writes the tracer cannot
express are refused with a TraceError naming the user's line.

All cases run inside one module, so the whole file compiles one library.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import graphc
from graphc.errors import TraceError
from graphc.ir.interpreter import interpret
from graphc.tensor import INPLACE_METHODS

# (method, args) for every name in graphc.tensor.INPLACE_METHODS; args may use the operand y
METHOD_ARGS = {
    "add": (0.5,), "sub": (0.25,), "mul": (2.0,), "div": (4.0,), "true_divide": (2.0,), "multiply": (3.0,),
    "subtract": (1.0,), "divide": (2.0,), "clamp": (0.7, 1.2), "clamp_min": (0.9,), "clamp_max": (1.1,),
    "clip": (0.8, 1.0), "pow": (2,), "remainder": (0.7,), "relu": (), "sigmoid": (), "tanh": (), "exp": (),
    "log": (), "sqrt": (), "rsqrt": (), "abs": (), "neg": (), "negative": (), "sign": (), "floor": (),
    "ceil": (), "round": (), "reciprocal": (), "sin": (), "cos": (), "erf": (), "square": (), "tril": (),
    "triu": (1,), "logical_not": (), "logical_and": ("y",), "logical_or": ("y",), "logical_xor": ("y",),
    "eq": (1.0,), "ne": (1.0,), "lt": (1.0,), "le": (1.0,), "gt": (1.0,), "ge": (1.0,),
}


def test_every_inplace_method_has_a_case():
    assert set(METHOD_ARGS) == set(INPLACE_METHODS)


def _methods(lib, x):
    out = {}
    for name, args in METHOD_ARGS.items():
        t = x.abs() + 0.5
        y = t > 1.0
        v = t[:, 1:]  # the write goes through a view: t must change too
        r = getattr(v, name + "_")(*[y[:, 1:] if a == "y" else a for a in args])
        out[f"m_{name}"] = t
        out[f"m_{name}_ret"] = r * 1.0  # in-place methods return self
    return out


def _activations(lib, x):
    F = lib.nn.functional
    nn = lib.nn
    fns = {
        "relu": lambda v: F.relu(v, inplace=True), "relu_mod": lambda v: nn.ReLU(inplace=True)(v),
        "relu6": lambda v: F.relu6(v, inplace=True), "relu6_mod": lambda v: nn.ReLU6(inplace=True)(v),
        "hardtanh": lambda v: F.hardtanh(v, -0.5, 0.5, inplace=True),
        "hardtanh_mod": lambda v: nn.Hardtanh(-0.5, 0.5, inplace=True)(v),
        "leaky_relu": lambda v: F.leaky_relu(v, 0.2, inplace=True),
        "leaky_relu_mod": lambda v: nn.LeakyReLU(0.2, inplace=True)(v),
        "elu": lambda v: F.elu(v, 0.5, inplace=True), "elu_mod": lambda v: nn.ELU(0.5, inplace=True)(v),
        "celu": lambda v: F.celu(v, 2.0, inplace=True), "celu_mod": lambda v: nn.CELU(2.0, inplace=True)(v),
        "selu": lambda v: F.selu(v, inplace=True), "selu_mod": lambda v: nn.SELU(inplace=True)(v),
        "silu": lambda v: F.silu(v, inplace=True), "silu_mod": lambda v: nn.SiLU(inplace=True)(v),
        "mish": lambda v: F.mish(v, inplace=True), "mish_mod": lambda v: nn.Mish(inplace=True)(v),
        "hardsigmoid": lambda v: F.hardsigmoid(v, inplace=True),
        "hardsigmoid_mod": lambda v: nn.Hardsigmoid(inplace=True)(v),
        "hardswish": lambda v: F.hardswish(v, inplace=True),
        "hardswish_mod": lambda v: nn.Hardswish(inplace=True)(v),
        "dropout": lambda v: F.dropout(v, 0.3, training=False, inplace=True),
        "dropout_mod": lambda v: nn.Dropout(0.3, inplace=True).eval()(v),
    }
    out = {}
    for name, fn in fns.items():
        t = x.clone()
        r = fn(t[:, 0])  # through a view
        out[f"a_{name}"] = t
        out[f"a_{name}_ret"] = r + 0.0
    return out


def _aliasing(lib, x, w):
    out = {}
    t = x.clone()
    t.add_(1)
    t.mul_(3)
    out["issue_example"] = t.sum(-1)
    h = x.clone()
    saved = h
    h += 1
    out["saved_alias"] = saved
    t = x.clone()
    t -= 0.5
    t *= 2
    t /= 4
    t **= 2
    t //= 0.25
    t %= 3
    out["augmented"] = t
    t = x.clone()
    v = t[:, 0]
    v.add_(1)
    out["index_view"] = t
    t = x.clone()
    v = t.view(t.shape[0], -1)
    v.mul_(2)
    out["view_write"] = t
    t = x.clone()
    t.transpose(1, 2)[:, 0] = 0
    out["transpose_setitem"] = t
    t = x.clone()
    c = t.transpose(1, 2).contiguous()  # a copy: the write must not reach t
    c += 1
    out["contiguous_copy"] = t
    out["contiguous_copy_c"] = c
    t = x.clone()
    r = t.reshape(t.shape[0], -1)  # a view of a contiguous tensor
    r[:, 3] = -1
    out["reshape_view"] = t
    t = x.clone()
    r = t.transpose(1, 2).reshape(t.shape[0], -1)  # no view possible: a copy
    r.fill_(5)
    out["reshape_copy"] = t
    t = x.clone()
    t[:, :, 1:3] = 5
    out["slice_setitem"] = t
    t = x.clone()
    t[t < 0] = 0
    out["mask_setitem"] = t
    t = x.clone()
    t[t > 0.5] = t.sum() * 0.0 + 2.0  # a traced 0-d value
    out["mask_setitem_tensor"] = t
    t = x.clone()
    v = t[:, 1:3]
    t.fill_(2)  # a write to the base reaches a view taken before it
    out["view_sees_base"] = v
    t = x.clone()
    v = t.view(t.shape[0], -1)[:, 2:10]
    v.fill_(7)  # view of a view
    out["nested_view"] = t
    t = x.clone()
    c = t.clone()
    c.add_(1)
    out["clone_isolated"] = t
    t = x.clone()
    t.copy_(w)  # broadcast source
    out["copy_broadcast"] = t
    t = x.clone()
    t[:, -1, ::1] = t[:, 0] * 10
    out["setitem_tensor"] = t
    t = x.clone()
    t.zero_()
    t.masked_fill_(x > 0, 1.5)
    out["zero_masked_fill"] = t
    t = x.clone()
    u = t.unsqueeze(1)
    u[:, :, 2] = 9
    out["unsqueeze_view"] = t
    t = x.clone()
    e = t[:, :1].expand(-1, 4, -1)  # read-only use of an expanded view after a base write
    t.add_(1)
    out["expand_sees_base"] = e + 0
    z = lib.zeros(4, 6)  # a constant built in forward, written with traced values
    z[1] = x[0, 0]
    z[2:] += 1
    out["constant_written"] = z * x[:, :1]
    t = x.clone()
    t.clamp_(-0.5, 0.5).relu_()
    out["chained"] = t
    t = x.clone()
    t[:, :, ::2] = 0  # strided slices of static dims
    t[:, 1:4:2] += 3
    t.transpose(1, 2)[:, 1::3].mul_(-1)
    out["strided"] = t
    return out


def forward_cases(lib, x, w):
    return {**_aliasing(lib, x, w), **_methods(lib, x), **_activations(lib, x)}


class Cases(graphc.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = graphc.nn.Parameter(graphc.arange(6).float() * 0.1)

    def forward(self, x):
        return forward_cases(graphc, x, self.w)


def _inputs(b: int) -> np.ndarray:
    return np.random.RandomState(b).randn(b, 4, 6).astype(np.float32)


def _torch_outputs(x: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    torch = pytest.importorskip("torch")
    with torch.no_grad():
        out = forward_cases(torch, torch.tensor(x), torch.tensor(w))
    return {k: v.numpy().astype(np.float32) for k, v in out.items()}


def test_inplace_eager_traced_compiled_and_torch_agree(tmp_path, shared_cache):
    model = Cases()
    x3 = _inputs(3)
    eager = {k: v.numpy() for k, v in model(graphc.tensor(x3)).items()}
    g = graphc.trace(model, (x3,), {"x": {0: "B"}})
    traced = interpret(g, {"x": x3})
    cm = graphc.compile(model, (x3,), {"x": {0: "B"}}, cache_dir=shared_cache)
    for b in (3, 5):
        x = _inputs(b)
        ref = _torch_outputs(x, model.w.numpy())
        eager = {k: v.numpy() for k, v in model(graphc.tensor(x)).items()}
        compiled = dict(zip(eager, cm(x)))
        traced = interpret(g, {"x": x})
        assert list(ref) == list(eager) == list(traced)
        for k in ref:
            np.testing.assert_allclose(eager[k], ref[k], rtol=1e-5, atol=1e-5, err_msg=f"eager {k}")
            np.testing.assert_allclose(traced[k], ref[k], rtol=1e-5, atol=1e-5, err_msg=f"traced {k}")
            np.testing.assert_allclose(compiled[k], ref[k], rtol=1e-4, atol=1e-4, err_msg=f"compiled {k}")


def test_the_issue_example_compiles_to_the_eager_value():
    class M(graphc.nn.Module):
        def forward(self, x):
            x.add_(1)
            x.mul_(3)
            return x.sum(-1)

    x = np.ones((2, 4), np.float32)
    g = graphc.trace(M(), (x,))
    np.testing.assert_array_equal(interpret(g, {"x": x})["output"], [24.0, 24.0])
    np.testing.assert_array_equal(M()(graphc.tensor(x)).numpy(), [24.0, 24.0])


def test_eager_views_share_memory_like_torch():
    torch = pytest.importorskip("torch")
    for lib in (graphc, torch):
        x = lib.zeros(2, 3)
        x[0].add_(1)
        x.t()[1] += 2
        x.view(-1)[5] = 7
        x.transpose(0, 1).contiguous().fill_(100)  # a copy
        assert x.tolist() == [[1.0, 3.0, 1.0], [0.0, 2.0, 7.0]], lib
        assert not x.t().is_contiguous() and x.t().contiguous().is_contiguous()


# ------------------------------------------------------------------------------------ refusals
def _line(marker: str) -> str:
    src = open(__file__).read().splitlines()
    n = next(i for i, s in enumerate(src, 1) if s.rstrip().endswith(f"# <{marker}>"))
    return f"test_inplace.py:{n}"


class Refused(graphc.nn.Module):
    def __init__(self, mode):
        super().__init__()
        self.mode = mode
        self.w = graphc.nn.Parameter(graphc.ones(6))
        self.register_buffer("count", graphc.zeros(6))
        self.cache = graphc.zeros(6)

    def forward(self, x):
        m = self.mode
        if m == "param":
            self.w.mul_(2)  # <param>
        elif m == "buffer":
            self.count += x[0]  # <buffer>
        elif m == "buffer_view":
            self.count[:3] = 1  # <buffer_view>
        elif m == "attribute":
            self.cache.copy_(x[0])  # <attribute>
        elif m == "strided":
            x[::2] = 0  # <strided>
        elif m == "expanded":
            x[:1].expand(2, 6).add_(1)  # <expanded>
        elif m == "index_put":
            x[graphc.tensor([0, 1])] = 0  # <index_put>
        return x + self.w


@pytest.mark.parametrize("mode,words", [
    ("param", "mul_ writes into the parameter 'w' in place"),
    ("buffer", "__iadd__ writes into the buffer 'count' in place"),
    ("buffer_view", "x[...] = v writes into the buffer 'count' in place"),
    ("attribute", "copy_ writes into the tensor attribute 'cache' in place"),
    ("strided", "writes through a strided slice (step 2) of the dynamic size h*2"),
    ("expanded", "more than one element of the written-to tensor refers to a single memory location"),
    ("index_put", "x[index_tensor] = v (index_put) is not supported while tracing"),
])
def test_writes_the_graph_cannot_hold_are_refused_at_the_users_line(mode, words):
    model = Refused(mode)
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    with pytest.raises(TraceError) as ei:
        dyn = {"x": {0: 2 * graphc.Dim("h", 1, 4) if mode == "strided" else "B"}}
        graphc.trace(model, (np.ones((2, 6), np.float32),), dyn)
    msg = str(ei.value)
    assert words in msg and _line(mode) in msg, msg
    assert "\n" not in msg
    for k, v in model.state_dict().items():  # the trace did not touch the module's state
        np.testing.assert_array_equal(v.numpy(), before[k])
    assert model.cache._tracer is None and model.cache.numpy().tolist() == [0.0] * 6


def test_eager_errors_match_torch():
    torch = pytest.importorskip("torch")
    for lib in (graphc, torch):
        with pytest.raises(RuntimeError, match="can't be cast to the desired output type"):
            lib.ones(3, dtype=lib.int64).add_(1.5)
        with pytest.raises(RuntimeError, match="doesn't match the broadcast shape"):
            lib.ones(1, 3).add_(lib.ones(2, 3))
        with pytest.raises(RuntimeError, match="single memory location"):
            lib.ones(1, 3).expand(2, 3).mul_(2)


def test_cast_error_while_tracing_names_the_line():
    class M(graphc.nn.Module):
        def forward(self, x):
            i = x.long()
            i.div_(2)  # <cast>
            return i

    with pytest.raises(RuntimeError, match=re.escape("div_: result type Float can't be cast")) as ei:
        graphc.trace(M(), (np.ones((2, 6), np.float32),))
    assert _line("cast") in str(ei.value)


def test_generic_inplace_fallback_for_methods_without_an_explicit_form():
    # a method `name` with no `name_` defined gets one through Tensor.__getattr__ (a method added at
    # run time here, as a later torch-API method would be)
    graphc.Tensor.twice = lambda self: self * 2
    try:
        x = graphc.ones(2, 3)
        v = x[0]
        assert v.twice_() is v
        assert x.tolist() == [[2.0, 2.0, 2.0], [1.0, 1.0, 1.0]]
        with pytest.raises(AttributeError, match="no attribute 'nothing_'"):
            x.nothing_()
        with pytest.raises(RuntimeError, match="doesn't match the broadcast shape"):
            x.sum_()
    finally:
        del graphc.Tensor.twice
