"""The backend-neutral analysis of each op family, computed once and handed to whichever backend prints it.

A lowering rule (``c.py``, ``cuda.py``, a new backend's module) asks here how a node's operands are laid
out — a matmul's M/N/K and batch broadcasting, the (outer, n, inner) split around an axis, a reduction's
kept and reduced dims, a norm's rows, a convolution's or pool's window parameters, an attention's
(batch, head, query, key) view and its mask strides — and decides only how to print it (which kernel,
which runtime call, which template). What a backend can run (dtypes, ranks) stays in its rules
(``kb.require``); the checks below are the ones every backend shares.

Two kinds of helpers:

* shape analyses return :mod:`graphc.sym` sizes (``Dim``: int or symbolic) and IR values; the rule prints
  sizes with ``kb.dim`` and asks ``kb.input`` / ``kb.output`` for operands in the order its kernel takes them;
* the *fields* helpers (:func:`conv_params`, :func:`pool_params`, :func:`sdpa_fields`) return the C
  expressions of a runtime parameter struct that every backend prints with the same names (their
  ``kb.input`` calls come in a fixed order, which becomes the kernel's argument order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._dtype import float32, float64, int64
from ..ir.graph import Node, Value
from ..ops.registry import broadcast_shapes
from ..sym import Dim, evaluate, is_static, prod
from .lowering import KernelBuilder, broadcast_strides, contiguous_strides

__all__ = ["axis_split", "pair", "require_float32", "may_be_empty", "MatmulShape", "matmul_shape",
           "linear_shape", "bilinear_shape", "ReduceLayout", "reduce_layout", "gather_strides", "scan_fields",
           "sort_fields",
           "NormShape", "norm_shape", "conv_params", "conv_is_pointwise", "pool_params", "adaptive_pool_params",
           "sdpa_fields"]


# ------------------------------------------------------------------------------------- shared checks
def axis_split(shape: Sequence[Dim], a: int, b: int) -> tuple[Dim, Dim, Dim]:
    """(outer, n, inner) when shape is viewed as [prod(shape[:a]), prod(shape[a:b]), prod(shape[b:])]."""
    return prod(shape[:a]), prod(shape[a:b]), prod(shape[b:])


def pair(v: Any, n: int = 2) -> list[int]:
    """An int-or-list attribute (kernel, stride, padding, dilation) as a list of n values."""
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return v * n if len(v) == 1 else v


def require_float32(kb: KernelBuilder, n: Node) -> None:
    """Every operand and the result of n are float32 (the runtime kernels' and device kernels' type)."""
    for v in [*n.inputs, n.out]:
        if v is not None:
            kb.require(v.type.dtype is float32, "float32 only")


def may_be_empty(kb: KernelBuilder, count: Dim) -> bool:
    """True when a reduced size can be 0 for dims in their declared range (max/min and argmax/argmin
    have no value there: the reference raises)."""
    return evaluate(count, {d.name: d.min for d in kb.lower.dims}) == 0


# ------------------------------------------------------------------------------------- matmul family
@dataclass
class MatmulShape:
    """A matmul node as products C[m, n] = A[m, k] B[k, n], batched over ``batch`` (the broadcast of a's
    and b's leading dims) with the element strides of a, b and c per batch dim. When b is 2-d, a's
    leading dims fold into m (``batch`` empty)."""

    m: Dim
    n: Dim
    k: Dim
    batch: list[Dim] = field(default_factory=list)
    strides: list[list[Dim]] = field(default_factory=lambda: [[], [], []])  # [a, b, c] per batch dim


def matmul_shape(n: Node) -> MatmulShape:
    a, b = n.inputs
    ash = list(a.type.shape) if a.type.ndim > 1 else [1, a.type.shape[0]]
    bsh = list(b.type.shape) if b.type.ndim > 1 else [b.type.shape[0], 1]
    M, K, N = ash[-2], ash[-1], bsh[-1]
    if len(bsh) == 2:  # fold a's batch dims into M
        return MatmulShape(prod(ash[:-1]), N, K)
    batch = broadcast_shapes("matmul", ash[:-2], bsh[:-2])
    sa = [s * (M * K) for s in broadcast_strides(ash[:-2], batch)]
    sb = [s * (K * N) for s in broadcast_strides(bsh[:-2], batch)]
    sc = [s * (M * N) for s in contiguous_strides(batch)]
    return MatmulShape(M, N, K, list(batch), [sa, sb, sc])


def linear_shape(n: Node) -> tuple[Dim, Dim, Dim]:
    """(M, N, K) of linear: y[M, N] = x[M, K] w[N, K]^T (+ bias[N]), x's leading dims folded into M."""
    x, w = n.inputs[:2]
    return prod(x.type.shape[:-1]), w.type.shape[0], w.type.shape[1]


def bilinear_shape(n: Node) -> tuple[Dim, Dim, Dim, Dim]:
    """(M, O, I1, I2) of bilinear: y[M, O] = x1[M, I1] w[O, I1, I2] x2[M, I2] (+ bias[O])."""
    x1, w = n.inputs[0], n.inputs[2]
    O, I1, I2 = w.type.shape
    return prod(x1.type.shape[:-1]), O, I1, I2


# ------------------------------------------------------------------------------------- reductions, indexing
@dataclass
class ReduceLayout:
    """A reduction over ``dims`` of a contiguous tensor: the kept dims (the output's, in order) and the
    reduced ones, each with the input's element strides; ``count`` elements reduce into each output."""

    shape: list[Dim]
    dims: list[int]
    kept_shape: list[Dim]
    kept_strides: list[Dim]
    red_shape: list[Dim]
    red_strides: list[Dim]

    @property
    def count(self) -> Dim:
        return prod(self.red_shape)


def reduce_layout(n: Node) -> ReduceLayout:
    shape = list(n.inputs[0].type.shape)
    dims = list(n.attrs["dims"])
    st = contiguous_strides(shape)
    kept = [i for i in range(len(shape)) if i not in dims]
    return ReduceLayout(shape, dims, [shape[i] for i in kept], [st[i] for i in kept], [shape[i] for i in dims],
                        [st[i] for i in dims])


def gather_strides(n: Node) -> tuple[list[Dim], list[Dim]]:
    """gather along dim d: (x's contiguous strides, the same with dim d's set to 0: the index supplies it)."""
    x = n.inputs[0]
    xst = contiguous_strides(x.type.shape)
    xs = list(xst)
    xs[n.attrs["dim"]] = 0
    return xst, xs


# op -> (initial value, operator, what it computes)
_SCAN_COMBINE = {"cumsum": ("0", "+", "sum"), "cumprod": ("1", "*", "product")}


def scan_fields(kb: KernelBuilder, n: Node) -> dict[str, Any]:
    """A scan node (cumsum, cumprod) as rows of [outer, n, inner], its combining operator and accumulator:
    double for floats (PyTorch's CPU kernels accumulate float32 in double), uint64_t for integers and bools
    (wraps like PyTorch's int64, without C's signed-overflow UB)."""
    x, out = n.inputs[0], n.out
    d = n.attrs["dim"]
    outer, size, inner = axis_split(x.type.shape, d, d + 1)
    floating = x.type.dtype.is_floating_point
    return {"src": kb.input(x), "dst": kb.output(out), "n": kb.dim(size), "inner": kb.dim(inner),
            "rows": kb.dim(outer * inner), "combine": _SCAN_COMBINE[n.op], "acc": "double" if floating else "uint64_t",
            "ctype": kb.ctype(out.type.dtype), "what": n.op,
            "split": (outer, size, inner)}


def sort_fields(kb: KernelBuilder, n: Node) -> dict[str, Any]:
    """An argsort node as rows of [outer, n, inner], each sorted by a stable merge sort of its elements'
    order keys (templates/common/_sort.j2) in 4 * n int64 of scratch per row; with k (topk) only the
    first k positions are written, and a dynamic n below k fails at run time."""
    x, out = n.inputs[0], n.out
    d, k = n.attrs["dim"], n.attrs["k"]
    outer, size, inner = axis_split(x.type.shape, d, d + 1)
    dt = x.type.dtype
    kind = "float" if dt in (float32, float64) else (
        "unsigned" if dt.name in ("bool", "uint8") else "signed" if not dt.is_floating_point else None)
    kb.require(kind is not None, "argsort runs on float32, float64, integers and bools")
    check = k is not None and not is_static(size)
    if check:
        kb.fails(f"k={k} is larger than the sorted dim (selected index k out of range)")
    rows = outer * inner
    return {"src": kb.input(x), "dst": kb.output(out), "n": kb.dim(size), "inner": kb.dim(inner),
            "k": kb.dim(size if k is None else k), "rows": kb.dim(rows), "ctype": kb.ctype(dt), "kind": kind,
            "descending": n.attrs["descending"], "topk": k is not None, "check": check,
            "scratch": kb.scratch(rows * size * 32, int64), "row_count": rows}


# ------------------------------------------------------------------------------------- norms
@dataclass
class NormShape:
    """A norm node as rows: batch/group norm over [outer, size = channels, inner]; layer/RMS norm over
    [outer, size = the normalised trailing elements] (inner 1). Operands absent from the op are None."""

    kind: str
    outer: Dim
    size: Dim
    inner: Dim
    x: Value
    weight: Value | None = None
    bias: Value | None = None
    mean: Value | None = None
    var: Value | None = None


def norm_shape(n: Node) -> NormShape:
    ins = list(n.inputs) + [None] * 5
    x = ins[0]
    shape = list(x.type.shape)
    if n.op == "batch_norm":
        outer, c, inner = axis_split(shape, 1, 2)
        return NormShape(n.op, outer, c, inner, x, weight=ins[3], bias=ins[4], mean=ins[1], var=ins[2])
    if n.op == "group_norm":
        outer, c, inner = axis_split(shape, 1, 2)
        return NormShape(n.op, outer, c, inner, x, weight=ins[1], bias=ins[2])
    nd = n.attrs["ndim"]
    outer, size, _ = axis_split(shape, len(shape) - nd, len(shape))
    return NormShape(n.op, outer, size, 1, x, weight=ins[1], bias=ins[2] if n.op == "layer_norm" else None)


# ------------------------------------------------------------------------------------- convolution, pools
def conv_params(kb: KernelBuilder, n: Node) -> dict[str, str]:
    """The fields of gc_conv2d_params for a conv / conv_transpose node (1-d as 2-d with height 1)."""
    x, w = n.inputs[:2]
    nsp = x.type.ndim - 2
    kb.require(nsp in (1, 2), "1-d and 2-d only")
    xs, ys = list(x.type.shape), list(n.out.type.shape)
    ws = list(w.type.shape)
    if nsp == 1:
        xs.insert(2, 1)
        ys.insert(2, 1)
        ws.insert(2, 1)
    a = n.attrs
    stride, pad, dil = pair(a["stride"], nsp), pair(a["padding"], nsp), pair(a["dilation"], nsp)
    if nsp == 1:
        stride, pad, dil = [1] + stride, [0] + pad, [1] + dil
    return {"n": kb.dim(xs[0]), "c": kb.dim(xs[1]), "h": kb.dim(xs[2]), "w": kb.dim(xs[3]),
            "oc": kb.dim(ys[1]), "kh": kb.dim(ws[2]), "kw": kb.dim(ws[3]), "oh": kb.dim(ys[2]), "ow": kb.dim(ys[3]),
            "stride_h": str(stride[0]), "stride_w": str(stride[1]), "pad_h": str(pad[0]), "pad_w": str(pad[1]),
            "dil_h": str(dil[0]), "dil_w": str(dil[1]), "groups": str(a.get("groups", 1))}


def conv_is_pointwise(n: Node) -> bool:
    """A 1x1 (or 1-tap 1-d) convolution with stride 1 and no padding: a plain product, no im2col."""
    w = n.inputs[1]
    ws = list(w.type.shape)
    taps = prod(ws[2:])
    a = n.attrs
    return (is_static(taps) and taps == 1 and all(s == 1 for s in pair(a["stride"], len(ws) - 2))
            and all(q == 0 for q in pair(a["padding"], len(ws) - 2)))


def pool_params(kb: KernelBuilder, n: Node) -> dict[str, str]:
    """The fields of gc_pool2d_params for a max_pool2d / avg_pool2d node, as C expressions."""
    x = n.inputs[0]
    a = n.attrs
    N, C, H, W = x.type.shape
    OH, OW = n.out.type.shape[2:]
    k = pair(a["kernel"])
    s = pair(a["stride"]) if a.get("stride") else k
    pd = pair(a.get("padding", 0))
    dil = pair(a.get("dilation", 1))
    return {"n": kb.dim(N), "c": kb.dim(C), "h": kb.dim(H), "w": kb.dim(W), "oh": kb.dim(OH), "ow": kb.dim(OW),
            "kh": str(k[0]), "kw": str(k[1]), "stride_h": str(s[0]), "stride_w": str(s[1]), "pad_h": str(pd[0]),
            "pad_w": str(pd[1]), "dil_h": str(dil[0]), "dil_w": str(dil[1]),
            "count_include_pad": str(int(bool(a.get("count_include_pad", True)))),
            "divisor_override": str(int(a.get("divisor_override") or 0))}


def adaptive_pool_params(kb: KernelBuilder, n: Node) -> dict[str, str]:
    """The sizes of an adaptive_avg_pool2d node (input N, C, H, W; output OH, OW), as C expressions."""
    N, C, H, W = n.inputs[0].type.shape
    OH, OW = n.out.type.shape[2:]
    return {"n": kb.dim(N), "c": kb.dim(C), "h": kb.dim(H), "w": kb.dim(W), "oh": kb.dim(OH), "ow": kb.dim(OW)}


# ------------------------------------------------------------------------------------- attention
def sdpa_fields(kb: KernelBuilder, n: Node, read: dict[int, Value] | None = None,
                write: Value | None = None) -> dict[str, Any]:
    """An sdpa node as [b, h, tq, d] x [b, h, tk, d|dv] with the mask's element strides over (b, h, i, j).
    read[i] / write: the values operand i is read from and the output written to when those are strided
    views of other values (graphc.backend.layouts); the caller prints their strides."""
    q, k, v, mask = (list(n.inputs) + [None])[:4]
    read = read or {}
    qs, ks, vs = q.type.shape, k.type.shape, v.type.shape
    kb.require(qs[:-2] == ks[:-2] == vs[:-2], "q, k and v must have the same leading dims")
    lead = list(qs[:-2])
    tq, d, tk, dv = qs[-2], qs[-1], ks[-2], vs[-1]
    if len(lead) == 2:
        b, h = lead
    else:
        b, h = 1, prod(lead)
    ms: list[Dim] = [0, 0, 0, 0]
    if mask is not None:
        full = lead + [tq, tk]
        mst = broadcast_strides(mask.type.shape, full)
        if len(lead) == 2:
            ms = mst
        else:
            lead_st = mst[:len(lead)]
            kb.require(all(is_static(s) and s == 0 for s in lead_st) or lead_st == contiguous_strides(full)[:len(lead)],
                       "the mask must broadcast over all leading dims or none")
            ms = [0, lead_st[-1] if lead_st else 0, mst[-2], mst[-1]]
    scale = n.attrs.get("scale")
    return dict(b=kb.dim(b), h=kb.dim(h), tq=kb.dim(tq), tk=kb.dim(tk), d=kb.dim(d), dv=kb.dim(dv),
                q=kb.input(read.get(0, q)), k=kb.input(read.get(1, k)), v=kb.input(read.get(2, v)),
                mask=kb.input(mask), ms=[kb.dim(s) for s in ms],
                scale=kb.literal(scale if scale is not None else 1.0 / math.sqrt(int(d) if is_static(d) else 1),
                                 float32),
                causal=int(bool(n.attrs.get("is_causal", False))), out=kb.output(write or n.out))
