"""The op table: sample operands and attributes for every registry op.

How to add an op: after defining it in graphc/ops/*.py, add an entry to SAMPLES below — a list of
cases, each (operand arrays, attributes) — covering odd sizes, size 1 and broadcasting, and its PyTorch
twin to TORCH when one exists. Who reads the table:

* tests/test_ops.py: every op's numpy reference against its type rule, and against PyTorch (TORCH);
* tests/test_backend_ops.py: every case compiled by the C backend (static, dynamic batch, parameters,
  other dtypes, NaN/inf) against the reference interpreter. A non-elementwise op needs a dynamic-batch
  rule there (DYNAMIC: which operands get a leading B dim; or NO_DYNAMIC with a reason), weight-like
  operands go in WEIGHTS, and a new family may get its own test library in FAMILIES (else "misc");
* tests/test_cuda_ops_emulated.py: the same cases through the CUDA backend, run on a CPU emulation of
  CUDA (the CUDA backend must accept every case the C backend accepts);
* tests/test_backend_null.py: one case of every family through the compile-only null backend.

tests/test_ops.py and tests/test_backend_ops.py fail when an op of the registry has no entry here or
no dynamic-batch rule.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

F32 = np.float32
I64 = np.int64


def _r(shape, dtype=F32, lo=None, seed=0):
    rng = np.random.default_rng(zlib.crc32(repr((tuple(shape), str(np.dtype(dtype)), seed)).encode()))
    if np.dtype(dtype) == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool)
    if np.dtype(dtype).kind in "iu":
        return rng.integers(-5 if lo is None else lo, 6, size=shape).astype(dtype)
    x = rng.standard_normal(shape).astype(dtype)
    if lo is not None:
        x = np.abs(x) + lo
    return x


def _pos(*shape):
    return _r(shape, F32, lo=0.1)


Case = tuple[list[Any], dict[str, Any]]

UNARY_FLOAT = ["neg", "abs", "exp", "tanh", "erf", "floor", "ceil", "round", "sign", "relu", "sigmoid", "silu",
               "sin", "cos", "softplus", "leaky_relu", "elu", "hardtanh", "gelu", "expm1"]
POSITIVE = ["log", "sqrt", "rsqrt", "reciprocal", "log2", "log1p"]
BINARY = ["add", "sub", "mul", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge"]
BOOL_BINARY = ["logical_and", "logical_or", "logical_xor"]
BCAST = [((3, 5), (3, 5)), ((1,), (7,)), ((2, 1, 4), (3, 1)), ((), (2, 3)), ((1, 1), (1, 1))]

SAMPLES: dict[str, list[Case]] = {}
for _n in UNARY_FLOAT:
    SAMPLES[_n] = [([_r((3, 5))], {}), ([_r((1,))], {}), ([_r((2, 3, 7))], {})]
SAMPLES["gelu"].append(([_r((4, 9))], {"approximate": "tanh"}))
SAMPLES["leaky_relu"].append(([_r((5,))], {"negative_slope": 0.2}))
SAMPLES["neg"].append(([_r((4,), I64)], {}))
SAMPLES["abs"].append(([_r((4,), I64)], {}))
SAMPLES["relu"].append(([_r((6,), I64)], {}))
for _n in POSITIVE:
    SAMPLES[_n] = [([_pos(3, 5)], {}), ([_pos(1)], {}), ([_pos(2, 3, 7)], {})]
for _n in BINARY:
    SAMPLES[_n] = [([_r(a), _r(b, seed=1)], {}) for a, b in BCAST]
    SAMPLES[_n].append(([_r((5,), I64), _r((5,), I64, seed=1)], {}))
SAMPLES["div"] = [([_r(a), _pos(*b)], {}) for a, b in BCAST]
SAMPLES["pow"] = [([_pos(*a), _r(b, seed=1)], {}) for a, b in BCAST]
SAMPLES["remainder"] = [([_r((3, 5)), _pos(3, 5)], {}), ([_r((6,), I64), np.array([3, -3, 2, 5, -4, 1], I64)], {})]
for _n in BOOL_BINARY:
    SAMPLES[_n] = [([_r((3, 4), bool), _r((3, 4), bool, seed=1)], {}), ([_r((1,), bool), _r((2, 3), bool)], {})]
SAMPLES["logical_not"] = [([_r((3, 4), bool)], {})]
SAMPLES["where"] = [([_r((3, 4), bool), _r((3, 4)), _r((3, 4), seed=1)], {}),
                    ([_r((1, 4), bool), _r((3, 1)), _r((), seed=1)], {})]
SAMPLES["cast"] = [([_r((3, 4))], {"dtype": "i64"}), ([_r((5,), I64)], {"dtype": "f32"}),
                   ([_r((2, 2))], {"dtype": "bool"}), ([_r((4,), bool)], {"dtype": "f32"})]
SAMPLES["clamp"] = [([_r((3, 5))], {"min": -0.5, "max": 0.5}), ([_r((4,))], {"min": 0.0}),
                    ([_r((4,), I64)], {"max": 2})]
SAMPLES["reshape"] = [([_r((2, 3, 4))], {"shape": [6, 4]}), ([_r((5,))], {"shape": [1, 5, 1]})]
SAMPLES["permute"] = [([_r((2, 3, 4))], {"dims": [2, 0, 1]}), ([_r((3, 5))], {"dims": [1, 0]})]
SAMPLES["expand"] = [([_r((3, 1))], {"shape": [2, 3, 4]}), ([_r((1,))], {"shape": [5]})]
SAMPLES["slice"] = [([_r((5, 7))], {"dim": 1, "start": 1, "end": 6, "step": 2}),
                    ([_r((4, 3))], {"dim": 0, "start": 3, "end": 4, "step": 1})]
SAMPLES["concat"] = [([_r((2, 3)), _r((4, 3), seed=1)], {"dim": 0}),
                     ([_r((2, 1, 3)), _r((2, 2, 3), seed=1), _r((2, 5, 3), seed=2)], {"dim": 1})]
SAMPLES["pad"] = [([_r((2, 3, 4))], {"pads": [1, 2], "value": 0.0}),
                  ([_r((2, 3, 4))], {"pads": [0, 1, 2, 0], "value": -1.5}),
                  ([_r((3, 5))], {"pads": [-1, 1], "value": 0.0})]
SAMPLES["index_select"] = [([_r((5, 3)), np.array([4, 0, 0, 2], I64)], {"dim": 0}),
                           ([_r((2, 6)), np.array([-1, 1], I64)], {"dim": 1})]
SAMPLES["gather"] = [([_r((3, 4)), np.array([[0, 3], [1, 1], [2, 0]], I64)], {"dim": 1}),
                     ([_r((4, 2)), np.array([[3, 0], [0, 1]], I64)], {"dim": 0})]
SAMPLES["constant"] = [([], {"value": 2.5, "dtype": "f32"}), ([], {"value": 3, "dtype": "i64"})]
SAMPLES["full"] = [([], {"shape": [2, 3], "value": 1.5, "dtype": "f32"})]
SAMPLES["arange"] = [([], {"end": 7}), ([], {"start": 1, "end": 10, "step": 3, "dtype": "f32"})]
for _n in ("sum", "mean", "amax", "amin", "prod"):
    SAMPLES[_n] = [([_r((3, 4, 5))], {"dims": [1]}), ([_r((3, 4, 5))], {"dims": [0, 2], "keepdim": True}),
                   ([_r((7,))], {"dims": [0]})]
SAMPLES["sum"].append(([_r((3, 4), I64)], {"dims": [1]}))
SAMPLES["var"] = [([_r((3, 6))], {"dims": [1]}), ([_r((2, 3, 4))], {"dims": [0, 2], "correction": 0})]
SAMPLES["argmax"] = [([_r((3, 5))], {"dim": 1}), ([_r((4, 2, 3))], {"dim": 0, "keepdim": True})]
SAMPLES["argmin"] = [([_r((3, 5))], {"dim": 1})]
SAMPLES["softmax"] = [([_r((3, 5))], {"dim": 1}), ([_r((2, 3, 4))], {"dim": 1}), ([_r((1,))], {"dim": 0})]
SAMPLES["log_softmax"] = [([_r((3, 5))], {"dim": 1}), ([_r((2, 3, 4))], {"dim": 0})]
SAMPLES["cumsum"] = [([_r((3, 5))], {"dim": 1}), ([_r((4, 3, 2))], {"dim": 0}), ([_r((2, 7, 3))], {"dim": 1}),
                     ([_r((6,), I64)], {"dim": 0}), ([_r((1,))], {"dim": 0})]
SAMPLES["cumprod"] = [([_r((3, 5))], {"dim": 1}), ([_r((4, 3, 2))], {"dim": 0}), ([_r((5,), I64)], {"dim": 0})]
SAMPLES["argsort"] = [([_r((3, 5))], {"dim": 1}), ([_r((4, 3, 2))], {"dim": 0, "descending": True}),
                      ([_r((2, 7, 3))], {"dim": 1, "k": 3, "descending": True}), ([_r((6, 9))], {"dim": 1, "k": 2}),
                      ([_r((3, 17), I64)], {"dim": 1}), ([_r((2, 12), I64)], {"dim": 1, "descending": True}),
                      ([_r((1,))], {"dim": 0})]
SAMPLES["matmul"] = [([_r((3, 4)), _r((4, 5))], {}), ([_r((4,)), _r((4, 2))], {}), ([_r((2, 3, 4)), _r((4,))], {}),
                     ([_r((2, 1, 3, 4)), _r((5, 4, 2))], {}), ([_r((1, 1)), _r((1, 1))], {})]


# PyTorch twins: op -> function(torch, *tensors, **attrs) computing the same thing independently.
def _t_argsort(t, x, dim, descending=False, k=None):
    if k is not None:  # the table's topk cases have no ties, whose order torch.topk leaves open
        return t.topk(x, k, dim, largest=descending).indices
    return t.sort(x, dim=dim, descending=descending, stable=True).indices


def _t_reduce(name):
    def f(torch, x, dims, keepdim=False, **_):
        fn = {"sum": torch.sum, "mean": torch.mean, "amax": torch.amax, "amin": torch.amin}.get(name)
        if name == "prod":
            out = x
            for d in sorted(dims, reverse=True):
                out = torch.prod(out, d, keepdim=keepdim)
            return out
        return fn(x, dim=tuple(dims), keepdim=keepdim)

    return f


TORCH: dict[str, Any] = {
    "neg": lambda t, x: -x, "abs": lambda t, x: t.abs(x), "exp": lambda t, x: t.exp(x),
    "tanh": lambda t, x: t.tanh(x), "erf": lambda t, x: t.erf(x), "floor": lambda t, x: t.floor(x),
    "ceil": lambda t, x: t.ceil(x), "round": lambda t, x: t.round(x), "sign": lambda t, x: t.sign(x),
    "relu": lambda t, x: t.relu(x), "sigmoid": lambda t, x: t.sigmoid(x),
    "silu": lambda t, x: t.nn.functional.silu(x), "sin": lambda t, x: t.sin(x), "cos": lambda t, x: t.cos(x),
    "softplus": lambda t, x, beta=1.0, threshold=20.0: t.nn.functional.softplus(x, beta, threshold),
    "leaky_relu": lambda t, x, negative_slope=0.01: t.nn.functional.leaky_relu(x, negative_slope),
    "elu": lambda t, x, alpha=1.0: t.nn.functional.elu(x, alpha),
    "hardtanh": lambda t, x, min_val=-1.0, max_val=1.0: t.nn.functional.hardtanh(x, min_val, max_val),
    "gelu": lambda t, x, approximate="none": t.nn.functional.gelu(x, approximate=approximate),
    "log": lambda t, x: t.log(x), "sqrt": lambda t, x: t.sqrt(x), "rsqrt": lambda t, x: t.rsqrt(x),
    "reciprocal": lambda t, x: t.reciprocal(x),
    "expm1": lambda t, x: t.expm1(x), "log2": lambda t, x: t.log2(x), "log1p": lambda t, x: t.log1p(x),
    "add": lambda t, a, b: a + b, "sub": lambda t, a, b: a - b, "mul": lambda t, a, b: a * b,
    "div": lambda t, a, b: a / b, "pow": lambda t, a, b: t.pow(a, b), "remainder": lambda t, a, b: t.remainder(a, b),
    "maximum": lambda t, a, b: t.maximum(a, b), "minimum": lambda t, a, b: t.minimum(a, b),
    "eq": lambda t, a, b: a == b, "ne": lambda t, a, b: a != b, "lt": lambda t, a, b: a < b,
    "le": lambda t, a, b: a <= b, "gt": lambda t, a, b: a > b, "ge": lambda t, a, b: a >= b,
    "logical_and": lambda t, a, b: t.logical_and(a, b), "logical_or": lambda t, a, b: t.logical_or(a, b),
    "logical_xor": lambda t, a, b: t.logical_xor(a, b), "logical_not": lambda t, a: t.logical_not(a),
    "where": lambda t, c, a, b: t.where(c, a, b),
    "clamp": lambda t, x, min=None, max=None: t.clamp(x, min, max),  # noqa: A006
    "permute": lambda t, x, dims: x.permute(*dims), "expand": lambda t, x, shape: x.expand(*shape),
    "concat": lambda t, *xs, dim: t.cat(xs, dim),
    "pad": lambda t, x, pads, value: t.nn.functional.pad(x, tuple(pads), value=value),
    "index_select": lambda t, x, i, dim: t.index_select(x, dim, i % x.shape[dim]),
    "gather": lambda t, x, i, dim: t.gather(x, dim, i),
    "sum": _t_reduce("sum"), "mean": _t_reduce("mean"), "amax": _t_reduce("amax"), "amin": _t_reduce("amin"),
    "prod": _t_reduce("prod"),
    "var": lambda t, x, dims, keepdim=False, correction=1: t.var(x, dim=tuple(dims), keepdim=keepdim,
                                                                  correction=correction),
    "argmax": lambda t, x, dim, keepdim=False: t.argmax(x, dim, keepdim),
    "argmin": lambda t, x, dim, keepdim=False: t.argmin(x, dim, keepdim),
    "softmax": lambda t, x, dim: t.softmax(x, dim), "log_softmax": lambda t, x, dim: t.log_softmax(x, dim),
    "matmul": lambda t, a, b: t.matmul(a, b),
    "argsort": _t_argsort,
    "cumsum": lambda t, x, dim: t.cumsum(x, dim), "cumprod": lambda t, x, dim: t.cumprod(x, dim),
}

# ------------------------------------------------------------------------------------------ nn ops
SAMPLES["linear"] = [([_r((4, 6)), _r((5, 6), seed=1), _r((5,), seed=2)], {}),
                     ([_r((2, 3, 7)), _r((1, 7), seed=1)], {}), ([_r((1, 1)), _r((3, 1), seed=1)], {})]
SAMPLES["bilinear"] = [([_r((4, 3)), _r((4, 5), seed=1), _r((2, 3, 5), seed=2), _r((2,), seed=3)], {})]
SAMPLES["conv"] = [
    ([_r((2, 3, 7, 6)), _r((4, 3, 3, 3), seed=1), _r((4,), seed=2)],
     {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1]}),
    ([_r((1, 4, 9, 8)), _r((4, 1, 3, 3), seed=1)],
     {"stride": [2, 1], "padding": [0, 2], "dilation": [1, 2], "groups": 4}),
    ([_r((2, 6, 5, 5)), _r((4, 3, 1, 1), seed=1), _r((4,), seed=2)],
     {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 2}),
    ([_r((2, 3, 11)), _r((5, 3, 4), seed=1), _r((5,), seed=2)], {"stride": [2], "padding": [1], "dilation": [1]}),
]
SAMPLES["conv_transpose"] = [
    ([_r((2, 4, 5, 4)), _r((4, 3, 3, 3), seed=1), _r((3,), seed=2)],
     {"stride": [2, 2], "padding": [1, 0], "output_padding": [1, 0], "dilation": [1, 1]}),
    ([_r((1, 4, 3, 3)), _r((4, 1, 2, 2), seed=1)],
     {"stride": [1, 2], "padding": [0, 0], "output_padding": [0, 1], "dilation": [2, 1], "groups": 2}),
    ([_r((2, 3, 6)), _r((3, 2, 3), seed=1)], {"stride": [2], "padding": [1], "output_padding": [0], "dilation": [1]}),
]
SAMPLES["max_pool2d"] = [([_r((2, 3, 7, 6))], {"kernel": [2, 2], "stride": [2, 2]}),
                         ([_r((1, 2, 5, 5))], {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1],
                                               "ceil_mode": True}),
                         ([_r((1, 1, 7, 7))], {"kernel": [2, 3], "stride": [1, 2], "dilation": [2, 1]})]
SAMPLES["avg_pool2d"] = [([_r((2, 3, 7, 6))], {"kernel": [2, 2], "stride": [2, 2]}),
                         ([_r((1, 2, 5, 5))], {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1],
                                               "ceil_mode": True, "count_include_pad": False}),
                         ([_r((1, 2, 6, 6))], {"kernel": [3, 3], "stride": [3, 3], "padding": [1, 1],
                                               "divisor_override": 4})]
SAMPLES["adaptive_avg_pool2d"] = [([_r((2, 3, 7, 6))], {"output_size": [1, 1]}),
                                  ([_r((1, 2, 7, 5))], {"output_size": [3, 2]})]
SAMPLES["batch_norm"] = [([_r((2, 3, 4, 5)), _r((3,), seed=1), _pos(3), _r((3,), seed=2), _r((3,), seed=3)],
                          {"eps": 1e-5}),
                         ([_r((4, 3)), _r((3,), seed=1), _pos(3)], {})]
SAMPLES["layer_norm"] = [([_r((3, 8)), _r((8,), seed=1), _r((8,), seed=2)], {"ndim": 1}),
                         ([_r((2, 3, 4)), _r((3, 4), seed=1)], {"ndim": 2, "eps": 1e-6}),
                         ([_r((5, 1))], {"ndim": 1})]
SAMPLES["group_norm"] = [([_r((2, 6, 3, 3)), _r((6,), seed=1), _r((6,), seed=2)], {"num_groups": 3}),
                         ([_r((1, 4, 5))], {"num_groups": 1})]
SAMPLES["rms_norm"] = [([_r((3, 8)), _r((8,), seed=1)], {"ndim": 1, "eps": 1e-6}),
                       ([_r((2, 3, 4))], {"ndim": 2, "eps": 1.1920928955078125e-07})]
SAMPLES["sdpa"] = [
    ([_r((2, 3, 5, 8)), _r((2, 3, 6, 8), seed=1), _r((2, 3, 6, 4), seed=2)], {"scale": 8 ** -0.5}),
    ([_r((1, 2, 4, 8)), _r((1, 2, 4, 8), seed=1), _r((1, 2, 4, 8), seed=2)], {"scale": 0.3, "is_causal": True}),
    ([_r((2, 2, 3, 4)), _r((2, 2, 5, 4), seed=1), _r((2, 2, 5, 4), seed=2), _r((2, 1, 3, 5), seed=3)],
     {"scale": 0.5}),
    ([_r((3, 4, 8)), _r((3, 4, 8), seed=1), _r((3, 4, 8), seed=2)], {"scale": 0.25}),
    # a fully masked query row (padding): zeros, as PyTorch 2.x
    ([_r((1, 3, 4)), _r((1, 5, 4), seed=1), _r((1, 5, 2), seed=2),
      np.where(np.arange(3)[:, None] == 1, -np.inf, 0.0).repeat(5, 1).astype(F32)], {"scale": 0.5}),
]
SAMPLES["embedding"] = [([np.array([[0, 3], [2, 2]], I64), _r((5, 4))], {}), ([np.array([1], I64), _r((2, 3))], {})]
SAMPLES["dropout"] = [([_r((3, 4))], {"p": 0.1})]
SAMPLES["identity"] = [([_r((3, 4))], {})]


def _t_pool_kw(kernel, stride, padding=(0, 0), **kw):
    return {"kernel_size": tuple(kernel), "stride": tuple(stride), "padding": tuple(padding), **kw}


TORCH.update({
    "linear": lambda t, x, w, b=None: t.nn.functional.linear(x, w, b),
    "bilinear": lambda t, x1, x2, w, b=None: t.nn.functional.bilinear(x1, x2, w, b),
    "conv": lambda t, x, w, b=None, stride=(), padding=(), dilation=(), groups=1: (
        t.nn.functional.conv2d if w.ndim == 4 else t.nn.functional.conv1d)(
        x, w, b, tuple(stride), tuple(padding), tuple(dilation), groups),
    "conv_transpose": lambda t, x, w, b=None, stride=(), padding=(), output_padding=(), dilation=(), groups=1: (
        t.nn.functional.conv_transpose2d if w.ndim == 4 else t.nn.functional.conv_transpose1d)(
        x, w, b, tuple(stride), tuple(padding), tuple(output_padding), groups, tuple(dilation)),
    "max_pool2d": lambda t, x, **a: t.nn.functional.max_pool2d(x, **_t_pool_kw(**a)),
    "avg_pool2d": lambda t, x, **a: t.nn.functional.avg_pool2d(x, **_t_pool_kw(**a)),
    "adaptive_avg_pool2d": lambda t, x, output_size: t.nn.functional.adaptive_avg_pool2d(x, tuple(output_size)),
    "batch_norm": lambda t, x, m, v, w=None, b=None, eps=1e-5: t.nn.functional.batch_norm(x, m, v, w, b, False,
                                                                                            0.1, eps),
    "layer_norm": lambda t, x, w=None, b=None, ndim=1, eps=1e-5: t.nn.functional.layer_norm(
        x, tuple(x.shape[-ndim:]), w, b, eps),
    "group_norm": lambda t, x, w=None, b=None, num_groups=1, eps=1e-5: t.nn.functional.group_norm(
        x, num_groups, w, b, eps),
    "rms_norm": lambda t, x, w=None, ndim=1, eps=None: t.nn.functional.rms_norm(x, tuple(x.shape[-ndim:]), w, eps),
    "sdpa": lambda t, q, k, v, m=None, scale=None, is_causal=False: t.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=m, is_causal=is_causal, scale=scale),
    "embedding": lambda t, i, w: t.nn.functional.embedding(i, w),
    "dropout": lambda t, x, p: x, "identity": lambda t, x: x,
})
