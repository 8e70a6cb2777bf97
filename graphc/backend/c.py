"""The C backend: OpenMP C for the host CPU, printed from ``templates/c/``.

How to lower a new op
---------------------
1. If the op is elementwise (``family="elementwise"`` and a ``scalar`` formula in the registry) there is
   nothing to do: fusion groups print it through :meth:`Backend.scalar_expr`, which reads the formula's
   properties off the op (``integer_scalar``, ``bool_closed``, ``helpers``, ``cost``). A ``scalar_<name>``
   method of :class:`Backend` is needed only for a formula that is not one expression (cast, clamp).
2. An op of an existing family (a new reduction, norm, pool, ...) is lowered by that family's rule:
   extend the rule where the op differs (it sees ``n.op``).
3. A new family gets a rule here, registered under the family's name::

       @lowers("my_family")
       def _my_family(kb: KernelBuilder, n: Node) -> None:
           x = n.inputs[0]
           kb.require(x.type.dtype is float32, "float32 only")
           kb.emit("my_family.c.j2", x=kb.input(x), y=kb.output(n.out), n=kb.numel(x.type.shape),
                   nthreads=kb.threads())

   ``kb.input``/``kb.output`` give the kernel's names for operand pointers (they become arguments and
   tell the memory planner what is read and written), ``kb.dim`` turns a size (maybe symbolic) into a C
   expression, ``kb.loops`` builds a loop nest, ``kb.scratch``/``kb.work`` hand out arena memory,
   ``kb.fails`` marks a kernel that returns a status. Raise through ``kb.require`` (an
   UnsupportedError naming op, dtype and module path) for what the rule cannot do.
   Print it in ``templates/c/<family>.c.j2`` (start from one that looks alike; ``_macros.j2`` has the
   signature, comment and loop helpers). Call the runtime (``runtime_c/graphc_rt.h``) for real work.
4. Add sample cases to the op table (``tests/op_table.py``): ``tests/test_backend_ops.py`` compiles them
   and compares with the reference. ``docs/adding-an-op.md`` lists every file each kind of op touches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._dtype import float32, float64, int32, int64
from ..ir.graph import Node
from ..ops.registry import broadcast_shapes
from ..sym import Dim, evaluate, is_static, prod
from .base import Backend
from .lowering import (
    KernelBuilder,
    LowerFn,
    Program,
    broadcast_strides,
    contiguous_strides,
    merge_dims,
)
from .registry import register_backend

LOWERINGS: dict[str, LowerFn] = {}


def lowers(*families: str):
    """Register a C lowering rule for the named op families (OpDef.family)."""

    def deco(fn: LowerFn) -> LowerFn:
        for family in families:
            LOWERINGS[family] = fn
        return fn

    return deco


def axis_split(shape: Sequence[Dim], a: int, b: int) -> tuple[Dim, Dim, Dim]:
    """(outer, n, inner) when shape is viewed as [prod(shape[:a]), prod(shape[a:b]), prod(shape[b:])]."""
    return prod(shape[:a]), prod(shape[a:b]), prod(shape[b:])


def _pair(v: Any, n: int = 2) -> list[int]:
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return v * n if len(v) == 1 else v


# ------------------------------------------------------------------------------------- data movement
def _strided_copy(kb: KernelBuilder, n: Node, strides: list[Dim], base: Dim, what: str) -> None:
    x, out = n.inputs[0], n.out
    shape = out.type.shape
    src = kb.input(x)
    dst = kb.output(out)
    nest = kb.loops(shape, [strides, contiguous_strides(shape)])
    kb.emit("strided" + kb.backend.template_suffix, nest=nest, src=src, dst=dst, base=kb.dim(base), what=what,
            ctype=kb.ctype(out.type.dtype))


@lowers("slice")
def _slice(kb: KernelBuilder, n: Node) -> None:
    x = n.inputs[0]
    d, start, step = n.attrs["dim"], n.attrs["start"], n.attrs["step"]
    st = contiguous_strides(x.type.shape)
    strides = list(st)
    strides[d] = st[d] * step
    _strided_copy(kb, n, strides, st[d] * start, f"slice dim {d}: start {start}, step {step}")


@lowers("permute")
def _permute(kb: KernelBuilder, n: Node) -> None:
    st = contiguous_strides(n.inputs[0].type.shape)
    dims = n.attrs["dims"]
    _strided_copy(kb, n, [st[p] for p in dims], 0, f"permute {list(dims)}")


@lowers("expand")
def _expand(kb: KernelBuilder, n: Node) -> None:
    _strided_copy(kb, n, broadcast_strides(n.inputs[0].type.shape, n.out.type.shape), 0, "broadcast")


@lowers("concat")
def _concat(kb: KernelBuilder, n: Node) -> None:
    d = n.attrs["dim"]
    out = n.out
    ost = contiguous_strides(out.type.shape)
    dst = kb.output(out)
    parts = []
    offset: Dim = 0
    for x in n.inputs:
        src = kb.input(x)
        shape = x.type.shape
        nest = kb.loops(shape, [contiguous_strides(shape), ost])
        parts.append({"src": src, "nest": nest, "base": kb.dim(offset * ost[d]), "what": f"{x.ref} {x.type}"})
        offset = offset + shape[d]
    kb.emit("concat" + kb.backend.template_suffix, parts=parts, dst=dst)


@lowers("pad")
def _pad(kb: KernelBuilder, n: Node) -> None:
    x, out = n.inputs[0], n.out
    pads, nd = n.attrs["pads"], x.type.ndim
    xsh, osh = list(x.type.shape), list(out.type.shape)
    xst, ost = contiguous_strides(xsh), contiguous_strides(osh)
    region = list(xsh)  # the part of x that lands in out
    src_base: Dim = 0
    dst_base: Dim = 0
    for i in range(len(pads) // 2):
        dim = nd - 1 - i
        lo, hi = pads[2 * i], pads[2 * i + 1]
        region[dim] = region[dim] - max(0, -lo) - max(0, -hi)
        src_base = src_base + max(0, -lo) * xst[dim]
        dst_base = dst_base + max(0, lo) * ost[dim]
    total = prod(osh)
    fill = kb.loops([total], [[1]])
    src = kb.input(x)
    dst = kb.output(out)
    nest = kb.loops(region, [xst, ost])
    kb.emit("pad" + kb.backend.template_suffix, fill=fill, nest=nest, src=src, dst=dst, src_base=kb.dim(src_base),
            dst_base=kb.dim(dst_base), value=kb.literal(n.attrs["value"], out.type.dtype),
            empty=any(is_static(r) and r <= 0 for r in region))


# ------------------------------------------------------------------------------------- creation
@lowers("fill")
def _fill(kb: KernelBuilder, n: Node) -> None:
    out = n.out
    dt = out.type.dtype
    nest = kb.loops([prod(out.type.shape)], [[1]])
    kb.emit("fill" + kb.backend.template_suffix, kind="fill", nest=nest, dst=kb.output(out),
            value=kb.literal(n.attrs["value"], dt), ctype=kb.ctype(dt))


@lowers("arange")
def _arange(kb: KernelBuilder, n: Node) -> None:
    out = n.out
    dt = out.type.dtype
    start, step = n.attrs["start"], n.attrs["step"]
    floating = isinstance(start, float) or isinstance(step, float)
    calc = float64 if floating else int64
    nest = kb.loops([out.type.shape[0]], [[1]])
    kb.emit("fill" + kb.backend.template_suffix, kind="arange", nest=nest, dst=kb.output(out), ctype=kb.ctype(dt),
            start=kb.literal(start, calc), step=kb.literal(step, calc), calc=kb.ctype(calc))


# ------------------------------------------------------------------------------------- matmul family
@dataclass
class Gemm:
    trans_a: int
    trans_b: int
    m: str
    n: str
    k: str
    lda: str
    ldb: str
    ldc: str
    bias: str = "NULL"


def _gemm_emit(kb: KernelBuilder, n: Node, a: str, b: str, c: str, gemm: Gemm, batch_shape: Sequence[Dim],
               strides: list[list[Dim]], acc: str) -> None:
    """Batched products over `batch_shape`; strides = element strides per batch dim for [A, B, C]."""
    dt = n.out.type.dtype
    ext, st = merge_dims(batch_shape, strides) if batch_shape else ([], [[], [], []])
    runtime = dt is float32
    inner = None
    if runtime and ext:  # the innermost batch dim goes to gc_sgemm_batched
        inner = {"count": kb.dim(ext[-1]), "sa": kb.dim(st[0][-1]), "sb": kb.dim(st[1][-1]),
                 "sc": kb.dim(st[2][-1])}
        ext, st = ext[:-1], [s[:-1] for s in st]
    nest = kb.loops(ext, st, merge=False, parallel=not runtime)
    kb.emit("matmul.c.j2", a=a, b=b, c=c, g=gemm, nest=nest, inner=inner, runtime=runtime,
            ctype=kb.ctype(dt), acc=acc, nthreads=kb.threads())


@lowers("matmul")
def _matmul(kb: KernelBuilder, n: Node) -> None:
    a, b = n.inputs
    dt = n.out.type.dtype
    kb.require(dt in (float32, float64, int64), "matmul runs on float32, float64 and int64")
    ash = list(a.type.shape) if a.type.ndim > 1 else [1, a.type.shape[0]]
    bsh = list(b.type.shape) if b.type.ndim > 1 else [b.type.shape[0], 1]
    M, K, N = ash[-2], ash[-1], bsh[-1]
    pa, pb, pc = kb.input(a), kb.input(b), kb.output(n.out)
    acc = "double" if dt.is_floating_point else "int64_t"
    if len(bsh) == 2:  # fold a's batch dims into M
        gemm = Gemm(0, 0, kb.dim(prod(ash[:-1])), kb.dim(N), kb.dim(K), kb.dim(K), kb.dim(N), kb.dim(N))
        _gemm_emit(kb, n, pa, pb, pc, gemm, [], [[], [], []], acc)
        return
    batch = broadcast_shapes("matmul", ash[:-2], bsh[:-2])
    sa = [s * (M * K) for s in broadcast_strides(ash[:-2], batch)]
    sb = [s * (K * N) for s in broadcast_strides(bsh[:-2], batch)]
    sc = [s * (M * N) for s in contiguous_strides(batch)]
    gemm = Gemm(0, 0, kb.dim(M), kb.dim(N), kb.dim(K), kb.dim(K), kb.dim(N), kb.dim(N))
    _gemm_emit(kb, n, pa, pb, pc, gemm, batch, [sa, sb, sc], acc)


@lowers("linear")
def _linear(kb: KernelBuilder, n: Node) -> None:
    x, w, bias = (list(n.inputs) + [None])[:3]
    kb.require(n.out.type.dtype is float32, "float32 only")
    K, N = w.type.shape[1], w.type.shape[0]
    M = prod(x.type.shape[:-1])
    px, pw = kb.input(x), kb.input(w)
    pb = kb.input(bias)
    gemm = Gemm(0, 1, kb.dim(M), kb.dim(N), kb.dim(K), kb.dim(K), kb.dim(K), kb.dim(N), pb)
    _gemm_emit(kb, n, px, pw, kb.output(n.out), gemm, [], [[], [], []], "double")


@lowers("bilinear")
def _bilinear(kb: KernelBuilder, n: Node) -> None:
    x1, x2, w, bias = (list(n.inputs) + [None])[:4]
    kb.require(n.out.type.dtype is float32, "float32 only")
    O, I1, I2 = w.type.shape
    M = prod(x1.type.shape[:-1])
    p1, p2, pw, pb = kb.input(x1), kb.input(x2), kb.input(w), kb.input(bias)
    tmp = kb.scratch(M * O * I2 * 4, float32)
    kb.emit("bilinear.c.j2", x1=p1, x2=p2, w=pw, bias=pb, y=kb.output(n.out), tmp=tmp, m=kb.dim(M), o=kb.dim(O),
            i1=kb.dim(I1), i2=kb.dim(I2), nthreads=kb.threads(),
            nest=kb.loops([M, O], [[O * I2, I2], [I2, 0], [O, 1]], merge=False))


# ------------------------------------------------------------------------------------- reductions
_RUNTIME_REDUCE = {"sum": "GC_REDUCE_SUM", "mean": "GC_REDUCE_MEAN", "amax": "GC_REDUCE_MAX",
                   "amin": "GC_REDUCE_MIN", "prod": "GC_REDUCE_PROD"}


def _runs(dims: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive runs [a, b) of sorted dims."""
    out: list[tuple[int, int]] = []
    for d in dims:
        if out and out[-1][1] == d:
            out[-1] = (out[-1][0], d + 1)
        else:
            out.append((d, d + 1))
    return out


def _empty_check(kb: KernelBuilder, n: Node, count: Dim) -> dict[str, str] | None:
    """max/min and argmax/argmin have no value over an empty dim (the reference raises, and the kernels
    read the first element): when the reduced size can be 0 for dims in range, the kernel fails instead
    (only when it has outputs to write; an empty output is just empty)."""
    if evaluate(count, {d.name: d.min for d in kb.lower.dims}) != 0:
        return None
    kb.fails("the reduced dim is empty (size 0), and the reduction has no value there")
    return {"count": kb.dim(count), "out": kb.dim(prod(n.out.type.shape))}


@lowers("reduce")
def _reduce(kb: KernelBuilder, n: Node) -> None:
    x, out = n.inputs[0], n.out
    dims = list(n.attrs["dims"])
    shape = list(x.type.shape)
    src = kb.input(x)
    dst = kb.output(out)
    empty = _empty_check(kb, n, prod([shape[i] for i in dims])) if n.op in ("amax", "amin") else None
    if x.type.dtype is float32 and out.type.dtype is float32 and n.op in _RUNTIME_REDUCE:
        runs = _runs(dims) or [(len(shape), len(shape))]
        passes = []
        cur, cur_ptr = list(shape), src
        for i, (a, b) in enumerate(reversed(runs)):
            outer, size, inner = axis_split(cur, a, b)
            cur = cur[:a] + [1] * (b - a) + cur[b:]
            last = i == len(runs) - 1
            target = dst if last else kb.scratch(prod(cur) * 4, float32)
            passes.append({"outer": kb.dim(outer), "n": kb.dim(size), "inner": kb.dim(inner), "src": cur_ptr,
                           "dst": target, "dims": list(range(a, b))})
            cur_ptr = target
        kb.emit("reduce.c.j2", runtime=True, passes=passes, kind=_RUNTIME_REDUCE[n.op], nthreads=kb.threads(),
                empty=empty)
        return
    dt = x.type.dtype
    kb.ctype(dt)
    kb.require(dt.name != "bool" or n.op in ("sum", "prod"), "bool")
    st = contiguous_strides(shape)
    kept = [i for i in range(len(shape)) if i not in dims]
    kept_shape = [shape[i] for i in kept]
    outer = kb.loops(kept_shape, [[st[i] for i in kept], contiguous_strides(kept_shape)], cost=8)
    red_shape = [shape[i] for i in dims]
    inner = kb.loops(red_shape, [[st[i] for i in dims]], parallel=False)
    acc = "double" if dt.is_floating_point else ("int64_t" if n.op in ("sum", "prod") else kb.ctype(dt))
    count = prod(red_shape)
    kb.emit("reduce.c.j2", runtime=False, op=n.op, src=src, dst=dst, outer=outer, inner=inner, acc=acc,
            ctype=kb.ctype(dt), out_ctype=kb.ctype(out.type.dtype), count=kb.dim(count),
            correction=n.attrs.get("correction", 0), floating=dt.is_floating_point, empty=empty,
            init="0" if n.op in ("sum", "mean", "var") else ("1" if n.op == "prod" else None))


@lowers("argreduce")
def _argreduce(kb: KernelBuilder, n: Node) -> None:
    x, out = n.inputs[0], n.out
    d = n.attrs["dim"]
    shape = list(x.type.shape)
    outer, size, inner = axis_split(shape, d, d + 1)
    src, dst = kb.input(x), kb.output(out)
    empty = _empty_check(kb, n, size)
    if x.type.dtype is float32:
        kb.emit("argreduce.c.j2", runtime=True, is_min=int(n.op == "argmin"), outer=kb.dim(outer),
                n=kb.dim(size), inner=kb.dim(inner), src=src, dst=dst, nthreads=kb.threads(), empty=empty)
        return
    kb.require(x.type.dtype.name != "bool", "bool")
    nest = kb.loops([outer, inner], [[size * inner, 1], [inner, 1]], cost=8)
    kb.emit("argreduce.c.j2", runtime=False, is_min=int(n.op == "argmin"), n=kb.dim(size), inner=kb.dim(inner),
            src=src, dst=dst, nest=nest, ctype=kb.ctype(x.type.dtype), floating=x.type.dtype.is_floating_point,
            empty=empty)


@lowers("softmax")
def _softmax(kb: KernelBuilder, n: Node) -> None:
    x = n.inputs[0]
    kb.require(x.type.dtype is float32, "float32 only")
    d = n.attrs["dim"]
    outer, size, inner = axis_split(x.type.shape, d, d + 1)
    kb.emit("softmax.c.j2", src=kb.input(x), dst=kb.output(n.out), outer=kb.dim(outer), n=kb.dim(size),
            inner=kb.dim(inner), log=int(n.op == "log_softmax"), nthreads=kb.threads())


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


# op -> (initial value, operator, what it computes)
_SCAN_COMBINE = {"cumsum": ("0", "+", "sum"), "cumprod": ("1", "*", "product")}


@lowers("scan")
def _scan(kb: KernelBuilder, n: Node) -> None:
    f = scan_fields(kb, n)
    outer, size, inner = f.pop("split")
    f["nest"] = kb.loops([outer, inner], [[size * inner, 1]], cost=8)
    kb.emit("scan.c.j2", **f)


# ------------------------------------------------------------------------------------- indexing
@lowers("index_select")
def _index_select(kb: KernelBuilder, n: Node) -> None:
    x, index = n.inputs
    d = n.attrs["dim"]
    outer, size, inner = axis_split(x.type.shape, d, d + 1)
    kb.fails("an index is out of range for the selected dim")
    nidx = index.type.shape[0]
    kb.emit("index.c.j2", kind="index_select", src=kb.input(x), idx=kb.input(index), dst=kb.output(n.out),
            outer=kb.dim(outer), size=kb.dim(size), inner=kb.dim(inner), nidx=kb.dim(nidx),
            ctype=kb.ctype(x.type.dtype), negative=True,
            nest=kb.loops([outer, nidx], [[0, 1], [nidx * inner, inner]], merge=False, cost=max(1, 8)))


@lowers("gather")
def _gather(kb: KernelBuilder, n: Node) -> None:
    x, index = n.inputs
    d = n.attrs["dim"]
    xst = contiguous_strides(x.type.shape)
    ish = index.type.shape
    xs = list(xst)
    xs[d] = 0
    kb.fails("an index is out of range for the gathered dim")
    nest = kb.loops(ish, [xs, contiguous_strides(ish)])
    kb.emit("index.c.j2", kind="gather", src=kb.input(x), idx=kb.input(index), dst=kb.output(n.out),
            size=kb.dim(x.type.shape[d]), stride=kb.dim(xst[d]), nidx=kb.numel(ish), nest=nest,
            ctype=kb.ctype(x.type.dtype), negative=True)


@lowers("embedding")
def _embedding(kb: KernelBuilder, n: Node) -> None:
    idx, w = n.inputs[:2]
    V, D = w.type.shape
    count = prod(idx.type.shape)
    kb.fails(f"an index is out of range 0..{V - 1}")
    if idx.type.dtype is int64 and w.type.dtype is float32:
        kb.emit("index.c.j2", kind="embedding", idx=kb.input(idx), src=kb.input(w), dst=kb.output(n.out),
                nidx=kb.dim(count), size=kb.dim(V), inner=kb.dim(D), nthreads=kb.threads())
        return
    kb.require(idx.type.dtype in (int64, int32), "indices must be int64 or int32")
    kb.emit("index.c.j2", kind="index_select", src=kb.input(w), idx=kb.input(idx), dst=kb.output(n.out),
            outer="1", size=kb.dim(V), inner=kb.dim(D), nidx=kb.dim(count), ctype=kb.ctype(w.type.dtype),
            negative=False, nest=kb.loops([1, count], [[0, 1], [count * D, D]], merge=False))


# ------------------------------------------------------------------------------------- nn kernels
def _f32(kb: KernelBuilder, n: Node) -> None:
    for v in [*n.inputs, n.out]:
        if v is not None:
            kb.require(v.type.dtype is float32, "float32 only")


def _conv_params(kb: KernelBuilder, n: Node, transpose: bool) -> dict[str, str]:
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
    stride, pad, dil = _pair(a["stride"], nsp), _pair(a["padding"], nsp), _pair(a["dilation"], nsp)
    if nsp == 1:
        stride, pad, dil = [1] + stride, [0] + pad, [1] + dil
    return {"n": kb.dim(xs[0]), "c": kb.dim(xs[1]), "h": kb.dim(xs[2]), "w": kb.dim(xs[3]),
            "oc": kb.dim(ys[1]), "kh": kb.dim(ws[2]), "kw": kb.dim(ws[3]), "oh": kb.dim(ys[2]), "ow": kb.dim(ys[3]),
            "stride_h": str(stride[0]), "stride_w": str(stride[1]), "pad_h": str(pad[0]), "pad_w": str(pad[1]),
            "dil_h": str(dil[0]), "dil_w": str(dil[1]), "groups": str(a.get("groups", 1))}


@lowers("conv")
def _conv(kb: KernelBuilder, n: Node) -> None:
    _f32(kb, n)
    x, w, bias = (list(n.inputs) + [None])[:3]
    transpose = n.op == "conv_transpose"
    p = _conv_params(kb, n, transpose)
    kind = "gc_conv_transpose2d" if transpose else "gc_conv2d"
    kb.emit("conv.c.j2", kind=kind, p=p, x=kb.input(x), w=kb.input(w), bias=kb.input(bias), y=kb.output(n.out),
            work=kb.work())


def pool_params(kb: KernelBuilder, n: Node) -> dict[str, str]:
    """The fields of gc_pool2d_params for a max_pool2d / avg_pool2d node, as C expressions."""
    x = n.inputs[0]
    a = n.attrs
    N, C, H, W = x.type.shape
    OH, OW = n.out.type.shape[2:]
    k = _pair(a["kernel"])
    s = _pair(a["stride"]) if a.get("stride") else k
    pd = _pair(a.get("padding", 0))
    dil = _pair(a.get("dilation", 1))
    return {"n": kb.dim(N), "c": kb.dim(C), "h": kb.dim(H), "w": kb.dim(W), "oh": kb.dim(OH), "ow": kb.dim(OW),
            "kh": str(k[0]), "kw": str(k[1]), "stride_h": str(s[0]), "stride_w": str(s[1]), "pad_h": str(pd[0]),
            "pad_w": str(pd[1]), "dil_h": str(dil[0]), "dil_w": str(dil[1]),
            "count_include_pad": str(int(bool(a.get("count_include_pad", True)))),
            "divisor_override": str(int(a.get("divisor_override") or 0))}


@lowers("pool")
def _pool(kb: KernelBuilder, n: Node) -> None:
    _f32(kb, n)
    p = pool_params(kb, n)
    fn = "gc_max_pool2d" if n.op == "max_pool2d" else "gc_avg_pool2d"
    kb.emit("pool.c.j2", kind="window", fn=fn, p=p, x=kb.input(n.inputs[0]), y=kb.output(n.out),
            nthreads=kb.threads())


@lowers("adaptive_pool")
def _adaptive_pool(kb: KernelBuilder, n: Node) -> None:
    _f32(kb, n)
    x = n.inputs[0]
    N, C, H, W = x.type.shape
    OH, OW = n.out.type.shape[2:]
    kb.emit("pool.c.j2", kind="adaptive", n=kb.dim(N), c=kb.dim(C), h=kb.dim(H), w=kb.dim(W), oh=kb.dim(OH),
            ow=kb.dim(OW), x=kb.input(x), y=kb.output(n.out), nthreads=kb.threads())


@lowers("norm")
def _norm(kb: KernelBuilder, n: Node) -> None:
    _f32(kb, n)
    ins = list(n.inputs) + [None] * 5
    x = ins[0]
    shape = list(x.type.shape)
    eps = kb.literal(n.attrs["eps"], float32)
    if n.op == "batch_norm":
        _, mean, var, w, b = ins[:5]
        outer, c, inner = axis_split(shape, 1, 2)
        args = [kb.dim(outer), kb.dim(c), kb.dim(inner), kb.input(x), kb.input(mean), kb.input(var), kb.input(w),
                kb.input(b), eps]
    elif n.op == "group_norm":
        _, w, b = ins[:3]
        outer, c, inner = axis_split(shape, 1, 2)
        args = [kb.dim(outer), kb.dim(c), kb.dim(inner), str(n.attrs["num_groups"]), kb.input(x), kb.input(w),
                kb.input(b), eps]
    elif n.op == "layer_norm":
        _, w, b = ins[:3]
        nd = n.attrs["ndim"]
        outer, size, _ = axis_split(shape, len(shape) - nd, len(shape))
        args = [kb.dim(outer), kb.dim(size), kb.input(x), kb.input(w), kb.input(b), eps]
    else:
        _, w = ins[:2]
        nd = n.attrs["ndim"]
        outer, size, _ = axis_split(shape, len(shape) - nd, len(shape))
        args = [kb.dim(outer), kb.dim(size), kb.input(x), kb.input(w), eps]
    kb.emit("norm.c.j2", fn=f"gc_{n.op}", args=args, y=kb.output(n.out), nthreads=kb.threads())


def sdpa_fields(kb: KernelBuilder, n: Node) -> dict[str, Any]:
    """An sdpa node as [b, h, tq, d] x [b, h, tk, d|dv] with the mask's element strides over (b, h, i, j)."""
    q, k, v, mask = (list(n.inputs) + [None])[:4]
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
                q=kb.input(q), k=kb.input(k), v=kb.input(v), mask=kb.input(mask), ms=[kb.dim(s) for s in ms],
                scale=kb.literal(scale if scale is not None else 1.0 / math.sqrt(int(d) if is_static(d) else 1),
                                 float32),
                causal=int(bool(n.attrs.get("is_causal", False))), out=kb.output(n.out))


@lowers("sdpa")
def _sdpa(kb: KernelBuilder, n: Node) -> None:
    _f32(kb, n)
    fields = sdpa_fields(kb, n)
    kb.emit("sdpa.c.j2", work=kb.work(), **fields)


# ------------------------------------------------------------------------------------- the backend
@register_backend
class CBackend(Backend):
    """C99 + OpenMP for the host, calling the hand-written runtime (runtime_c/)."""

    name = "c"
    display_name = "C"
    description = "a C library for the CPU"
    sanitizer_builds = True
    template_folder = "c"
    lowerings = LOWERINGS
    # kernels of one translation unit, at most (by rendered characters): keeps each file quick to compile
    unit_chars = 60_000

    def render_kernels(self, program: Program) -> list[str]:
        return [self.render(k.template, k=k, d=k.data) for k in program.kernels]

    def split_units(self, texts: list[str]) -> list[list[int]]:
        """Kernels per translation unit: consecutive, each unit up to unit_chars (deterministic)."""
        units: list[list[int]] = [[]]
        size = 0
        for i, t in enumerate(texts):
            if units[-1] and size + len(t) > self.unit_chars:
                units.append([])
                size = 0
            units[-1].append(i)
            size += len(t)
        return units

    def render_sources(self, program: Program, options: Any) -> dict[str, str]:
        name = program.name
        texts = self.render_kernels(program)
        units = self.split_units(texts)
        ctx = {"p": program, "o": options, "M": program.upper, "B": self}
        files: dict[str, str] = {}
        files[f"{name}.h"] = self.render("model.h.j2", **ctx)
        files[f"{name}_internal.h"] = self.render("internal.h.j2", **ctx)
        files[f"{name}_model.c"] = self.render("model.c.j2", **ctx)
        for i, unit in enumerate(units):
            files[f"{name}_kernels{i}.c"] = self.render("kernels.c.j2", unit=i, texts=[texts[j] for j in unit], **ctx)
        if options.weights == "embed":
            files[f"{name}_weights.S"] = self.render("common/weights.S.j2", **ctx)
        files["main.c"] = self.render("common/main.c.j2", **ctx)
        files["Makefile"] = self.render("Makefile.j2", units=len(units), **ctx)
        files[f"{name}_cffi.h"] = self.render("cffi.h.j2", **ctx)
        return files
