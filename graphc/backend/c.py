"""The C backend: OpenMP C for the host CPU, printed from ``templates/c/``.

How to lower a new op
---------------------
1. If the op is elementwise (``family="elementwise"`` and a ``scalar`` formula in the registry) there is
   nothing to do: fusion groups print it through :meth:`Backend.scalar_expr`, which reads the formula's
   properties off the op (``integer_scalar``, ``bool_closed``, ``helpers``, ``cost``). A ``scalar_<name>``
   method of :class:`Backend` is needed only for a formula that is not one expression (cast, clamp).
2. An op of an existing family (a new reduction, norm, pool, ...) is lowered by that family's rule:
   extend the rule where the op differs (it sees ``n.op``).
3. A new family gets a rule here, registered under the family's name. What its kernel needs to know
   about the node that is not C (row splits, strides, window parameters) goes in
   ``graphc/backend/analysis.py``, once for every backend; the rule only prints it::

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

from collections.abc import Sequence
from dataclasses import dataclass

from .._dtype import float32, float64, int32, int64
from ..ir.graph import Node
from ..sym import Dim, is_static, prod
from .analysis import (
    adaptive_pool_params,
    axis_split,
    bilinear_shape,
    conv_params,
    gather_strides,
    linear_shape,
    matmul_shape,
    may_be_empty,
    norm_shape,
    pool_params,
    reduce_layout,
    require_float32,
    scan_fields,
    sdpa_fields,
    sort_fields,
)
from .base import Backend
from .common import COMMON_LOWERINGS, rule_registrar
from .fusion import FusionGroup
from .layouts import head_strides
from .lowering import KernelBuilder, LowerFn, contiguous_strides, merge_dims
from .registry import register_backend

# the rules by op family: the shared data-movement and creation rules (common.py), then the C ones
LOWERINGS: dict[str, LowerFn] = dict(COMMON_LOWERINGS)
lowers = rule_registrar(LOWERINGS)  # @lowers("<family>"): register a C lowering rule


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
    sh = matmul_shape(n)
    pa, pb, pc = kb.input(a), kb.input(b), kb.output(n.out)
    acc = "double" if dt.is_floating_point else "int64_t"
    M, N, K = kb.dim(sh.m), kb.dim(sh.n), kb.dim(sh.k)
    _gemm_emit(kb, n, pa, pb, pc, Gemm(0, 0, M, N, K, K, N, N), sh.batch, sh.strides, acc)


# a fused epilogue's activation (fusion.EPILOGUE_ACTS) -> the runtime's kind (graphc_rt.h)
_EPILOGUE_KIND = {None: "0", "sigmoid": "GC_ACT_SIGMOID", "silu": "GC_ACT_SILU", "tanh": "GC_ACT_TANH",
                  "gelu": "GC_ACT_GELU", "gelu_tanh": "GC_ACT_GELU_TANH", "relu": "GC_ACT_RELU",
                  "clamp": "GC_ACT_CLAMP"}


# gc_sgemm's products with M or N at most this never pack B (its dot / axpy paths): no packed copy for them
_UNPACKED_SIDE = 16


@lowers("linear")
def _linear(kb: KernelBuilder, n: Node) -> None:
    x, w, bias = (list(n.inputs) + [None])[:3]
    kb.require(n.out.type.dtype is float32, "float32 only")
    M, N, K = linear_shape(n)
    px, pw = kb.input(x), kb.input(w)
    pb = kb.input(bias)
    gemm = Gemm(0, 1, kb.dim(M), kb.dim(N), kb.dim(K), kb.dim(K), kb.dim(K), kb.dim(N), pb)
    # a weight parameter is packed once at create into the GEMM's panels (the packed path's B), unless every
    # product of this shape takes the unpacked small-M / small-N paths
    small = any(is_static(d) and int(d) <= _UNPACKED_SIDE for d in (M, N))
    packed = None if small else kb.packed_weight(w)
    ep = kb.gemm_epilogue
    if ep is not None or packed is not None:  # gc_sgemm_ep applies the chain on each finished tile
        fields = None
        if ep is not None:
            fields = {"act": _EPILOGUE_KIND[ep.act], "lo": kb.literal(ep.lo, float32),
                      "hi": kb.literal(ep.hi, float32), "scale": kb.literal(ep.scale, float32),
                      "residual": kb.input(ep.residual)}
        kb.emit("matmul.c.j2", a=px, b=pw, c=kb.output(ep.out if ep is not None else n.out), g=gemm,
                nest=kb.loops([], [[], [], []]), inner=None, runtime=True, ep=fields, packed=packed,
                nthreads=kb.threads())
        return
    _gemm_emit(kb, n, px, pw, kb.output(n.out), gemm, [], [[], [], []], "double")


@lowers("bilinear")
def _bilinear(kb: KernelBuilder, n: Node) -> None:
    x1, x2, w, bias = (list(n.inputs) + [None])[:4]
    kb.require(n.out.type.dtype is float32, "float32 only")
    M, O, I1, I2 = bilinear_shape(n)
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
    if not may_be_empty(kb, count):
        return None
    kb.fails("the reduced dim is empty (size 0), and the reduction has no value there")
    return {"count": kb.dim(count), "out": kb.dim(prod(n.out.type.shape))}


@lowers("reduce")
def _reduce(kb: KernelBuilder, n: Node) -> None:
    x, out = n.inputs[0], n.out
    lay = reduce_layout(n)
    dims, shape = lay.dims, lay.shape
    src = kb.input(x)
    dst = kb.output(out)
    empty = _empty_check(kb, n, lay.count) if n.op in ("amax", "amin") else None
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
    outer = kb.loops(lay.kept_shape, [lay.kept_strides, contiguous_strides(lay.kept_shape)], cost=8)
    inner = kb.loops(lay.red_shape, [lay.red_strides], parallel=False)
    acc = "double" if dt.is_floating_point else ("int64_t" if n.op in ("sum", "prod") else kb.ctype(dt))
    kb.emit("reduce.c.j2", runtime=False, op=n.op, src=src, dst=dst, outer=outer, inner=inner, acc=acc,
            ctype=kb.ctype(dt), out_ctype=kb.ctype(out.type.dtype), count=kb.dim(lay.count),
            correction=n.attrs.get("correction", 0), floating=dt.is_floating_point, empty=empty,
            init="0" if n.op in ("sum", "mean", "var") else ("1" if n.op == "prod" else None))


@lowers("argreduce")
def _argreduce(kb: KernelBuilder, n: Node) -> None:
    x, out = n.inputs[0], n.out
    d = n.attrs["dim"]
    outer, size, inner = axis_split(x.type.shape, d, d + 1)
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


@lowers("scan")
def _scan(kb: KernelBuilder, n: Node) -> None:
    f = scan_fields(kb, n)
    outer, size, inner = f.pop("split")
    f["nest"] = kb.loops([outer, inner], [[size * inner, 1]], cost=8)
    kb.emit("scan.c.j2", **f)


@lowers("custom")
def _custom(kb: KernelBuilder, n: Node) -> None:
    from ..library import call_fields

    kb.emit("custom.c.j2", **call_fields(kb, n))


@lowers("sort")
def _sort(kb: KernelBuilder, n: Node) -> None:
    f = sort_fields(kb, n)
    f["nest"] = kb.loops([f.pop("row_count")], [[1]], merge=False, cost=64)
    kb.emit("sort.c.j2", **f)


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
    xst, xs = gather_strides(n)
    ish = index.type.shape
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
@lowers("conv")
def _conv(kb: KernelBuilder, n: Node) -> None:
    require_float32(kb, n)
    x, w, bias = (list(n.inputs) + [None])[:3]
    p = conv_params(kb, n)
    kind = "gc_conv_transpose2d" if n.op == "conv_transpose" else "gc_conv2d"
    sc = kb.lower.conv_scales.get(n)  # x = mul(x', s): the kernel reads x' and scales its weights by s
    px, pw, pb = kb.input(x if sc is None else sc.x), kb.input(w), kb.input(bias)
    scale = kb.input(sc.scale) if sc is not None else None
    e = kb.epilogue
    epi = None
    if e is not None:
        epi = {"act": _EPILOGUE_ACT[e.act] if e.act else "0", "res_first": int(e.res_first),
               "lo": kb.literal(e.lo, float32), "hi": kb.literal(e.hi, float32),
               "res": kb.input(e.residual) if e.residual is not None else None,
               "pool": kb.output(e.pool.out) if e.pool is not None else None}
    kb.emit("conv.c.j2", kind=kind, p=p, x=px, w=pw, bias=pb, y=kb.output(n.out if e is None else e.out),
            work=kb.work(), epi=epi, scale=scale)


# an epilogue's activation (graphc.backend.epilogue.EPILOGUE_ACTS) as the runtime's kind
_EPILOGUE_ACT = {"relu": "GC_ACT_RELU", "clamp": "GC_ACT_CLAMP", "sigmoid": "GC_ACT_SIGMOID", "silu": "GC_ACT_SILU",
                 "tanh": "GC_ACT_TANH", "gelu": "GC_ACT_GELU", "gelu_tanh": "GC_ACT_GELU_TANH",
                 "hardswish": "GC_ACT_HARDSWISH"}


@lowers("pool")
def _pool(kb: KernelBuilder, n: Node) -> None:
    require_float32(kb, n)
    p = pool_params(kb, n)
    fn = "gc_max_pool2d" if n.op == "max_pool2d" else "gc_avg_pool2d"
    kb.emit("pool.c.j2", kind="window", fn=fn, p=p, x=kb.input(n.inputs[0]), y=kb.output(n.out),
            nthreads=kb.threads())


@lowers("adaptive_pool")
def _adaptive_pool(kb: KernelBuilder, n: Node) -> None:
    require_float32(kb, n)
    p = adaptive_pool_params(kb, n)
    kb.emit("pool.c.j2", kind="adaptive", **p, x=kb.input(n.inputs[0]), y=kb.output(n.out), nthreads=kb.threads())


@lowers("norm")
def _norm(kb: KernelBuilder, n: Node) -> None:
    require_float32(kb, n)
    s = norm_shape(n)
    eps = kb.literal(n.attrs["eps"], float32)
    if s.kind == "batch_norm":
        args = [kb.dim(s.outer), kb.dim(s.size), kb.dim(s.inner), kb.input(s.x), kb.input(s.mean), kb.input(s.var),
                kb.input(s.weight), kb.input(s.bias), eps]
    elif s.kind == "group_norm":
        args = [kb.dim(s.outer), kb.dim(s.size), kb.dim(s.inner), str(n.attrs["num_groups"]), kb.input(s.x),
                kb.input(s.weight), kb.input(s.bias), eps]
    elif s.kind == "layer_norm":
        args = [kb.dim(s.outer), kb.dim(s.size), kb.input(s.x), kb.input(s.weight), kb.input(s.bias), eps]
    else:
        args = [kb.dim(s.outer), kb.dim(s.size), kb.input(s.x), kb.input(s.weight), eps]
    kb.emit("norm.c.j2", fn=f"gc_{n.op}", args=args, y=kb.output(n.out), nthreads=kb.threads())


@lowers("sdpa")
def _sdpa(kb: KernelBuilder, n: Node) -> None:
    require_float32(kb, n)
    lay = kb.lower.layouts
    views = {i: lay.inputs[(n, i)] for i in range(3) if (n, i) in lay.inputs}
    out_view = lay.outputs.get(n)
    fields = sdpa_fields(kb, n, {i: w.root for i, w in views.items()}, out_view.root if out_view else None)
    lead = list(n.inputs[0].type.shape[:-2])
    for i, (key, val) in enumerate((("q", n.inputs[0]), ("k", n.inputs[1]), ("v", n.inputs[2]), ("o", n.out))):
        w = out_view if key == "o" else views.get(i)
        st = head_strides(lead, w.strides if w else contiguous_strides(val.type.shape))
        kb.require(st is not None, f"{key}'s lead dims do not merge into one stride")
        fields[f"{key}_off"] = kb.dim(w.offset if w else 0)
        fields[f"{key}_st"] = [kb.dim(x) for x in st]
    kb.emit("sdpa.c.j2", work=kb.work(), **fields)


# ------------------------------------------------------------------------------------- activations
# elementwise ops the runtime evaluates on whole vectors (runtime_c/gc_act.c), by kind constant
_RUNTIME_ACT = {"exp": "GC_ACT_EXP", "sigmoid": "GC_ACT_SIGMOID", "silu": "GC_ACT_SILU", "tanh": "GC_ACT_TANH",
                ("gelu", "none"): "GC_ACT_GELU", ("gelu", "tanh"): "GC_ACT_GELU_TANH"}


def runtime_activation(group: FusionGroup) -> str | None:
    """The gc_act kind of a fusion group that is one such op on a float32 tensor of its own shape, else
    None (a chain or a broadcast stays a generated loop)."""
    if len(group.nodes) != 1 or group.constants or len(group.inputs) != 1:
        return None
    n = group.root
    x = group.inputs[0]
    if x.type.dtype is not float32 or n.out.type.dtype is not float32 or x.type.shape != n.out.type.shape:
        return None
    key = (n.op, n.attrs["approximate"]) if n.op == "gelu" else n.op
    return _RUNTIME_ACT.get(key)


# ------------------------------------------------------------------------------------- the backend
@register_backend
class CBackend(Backend):
    """C99 + OpenMP for the host, calling the hand-written runtime (runtime_c/)."""

    name = "c"
    display_name = "C"
    description = "a C library for the CPU"
    gemm_epilogue_ops = ("linear",)
    sanitizer_builds = True
    template_folder = "c"
    lowerings = LOWERINGS
    conv_epilogues = True
    conv_input_scales = True
    sdpa_strides = True

    def lower_group(self, kb: KernelBuilder, group: FusionGroup) -> bool:
        kind = runtime_activation(group)
        if kind is None:
            return False
        x = group.inputs[0]
        kb.step.inplace = [x]
        kb.emit("act.c.j2", kind=kind, x=kb.input(x), y=kb.output(group.root.out), n=kb.numel(x.type.shape),
                nthreads=kb.threads())
        return True
