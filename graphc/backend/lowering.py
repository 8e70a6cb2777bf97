"""From a Graph to a :class:`Program`: the plain data that a backend's templates print.

The driver :func:`lower_program` is backend-neutral:

1. fusion groups (:mod:`graphc.backend.fusion`), views (ops of family ``"view"``: reshape, identity,
   dropout share their input's bytes) and inlined constants decide which nodes become kernels;
2. every kernel is described by a :class:`KernelBuilder`: the op's lowering rule (``Backend.lowering_for``:
   ``backend.lowerings`` by the op's family, ``backend.op_lowerings`` for one op a backend lowers apart
   from its family; elementwise groups use :func:`lower_elementwise`) asks the builder
   for operand pointers, dims as C expressions, scratch memory and a template, and the builder records
   the kernel's arguments and the schedule step (what it reads and writes);
3. outputs: a value returned by the graph is computed straight into the caller's output buffer when it
   can be; otherwise a copy kernel fills the buffer at the end;
4. the memory plan (:mod:`graphc.backend.memplan`) gives every intermediate an arena offset.

Nothing here prints C except small expressions (loop bounds, sizes) through :meth:`graphc.sym.Sym.to_c`
and the backend's knobs; templates print everything else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .._dtype import dtype
from ..errors import UnsupportedError
from ..ir.graph import Graph, Node, Value
from ..ir.printer import print_graph, print_node
from ..sym import Dim, Sym, evaluate, is_static, prod
from .epilogue import ConvEpilogue, ConvInputScale, conv_epilogues, conv_input_scales
from .fusion import FusionGroup, GemmEpilogue, fusion_groups, gemm_epilogues, inlined_constants
from .layouts import SdpaLayouts, fold_sdpa_layouts
from .memplan import MemoryPlan, Step, free_at, plan_memory, poly_max

if TYPE_CHECKING:
    from .base import Backend

def is_view(n: Node) -> bool:
    """Ops whose output is their input's bytes (reshape, identity, inference dropout)."""
    return n.opdef.family == "view"

# Names the templates use for locals in the run function and inside kernels; values never take them.
# RUN_LOCALS: model.c.j2's (work_bytes: w, floats, where, nthreads), which a dim name must not shadow either
RUN_LOCALS = ("ctx", "dims", "inputs", "outputs", "arena", "work", "work_at", "nt", "rc", "need", "i", "fail", "st",
              "mark", "w", "nthreads", "floats", "where")
KERNEL_LOCALS = tuple(f"i{k}" for k in range(16)) + tuple(f"j{k}" for k in range(16)) + (
    "nthreads", "work", "p", "j", "acc", "best", "bi", "pos", "at", "mean", "val", "pa", "pb", "pc")


# ------------------------------------------------------------------------------------- data model
@dataclass
class Arg:
    """One parameter of a kernel function and the expression the run function passes for it."""

    ctype: str  # "const float *", "int64_t", "int", "float *"
    name: str  # parameter name inside the kernel
    value: str  # C expression in the run function's scope


@dataclass
class Kernel:
    name: str
    template: str
    comment: list[str]
    args: list[Arg]
    data: dict[str, Any]
    dim_args: list[Arg]  # the dynamic dims it takes (first in args)
    status: bool = False  # returns a status code (kernels that can fail on data)
    error: str = ""  # message for a failure
    work: bool = False  # a companion "<name>_work(dims..., nthreads)" returns its scratch size in floats
    step: Step | None = None
    # no buffer it writes is one it reads (no in-place update): its pointers may be restrict-qualified,
    # which spares the C compiler loop versioning for aliasing (seconds per kernel with dynamic dims)
    noalias: bool = False
    # for the per-kernel profile: module path, ops, and the work (float ops, bytes moved) as C expressions
    scope: str = ""
    ops: str = ""
    flops_c: str = "0"
    bytes_c: str = "0"
    # where its runtime-sized scratch may go (memplan.free_at): the gaps between the blocks live at its step as
    # (offset, bytes) C expressions, and the top of them; the run takes the first gap that holds it, else the top
    work_gaps: list[tuple[str, str]] = field(default_factory=list)
    work_top: str = "0"


@dataclass
class DimInfo:
    name: str
    cname: str
    min: int
    max: int


@dataclass
class TensorInfo:
    """A graph input or output as the ABI exposes it."""

    name: str
    cname: str
    dtype: dtype
    ctype: str
    shape: tuple[Dim, ...]
    shape_c: list[str]  # each dim as a C expression over the dim variables


@dataclass
class ParamInfo:
    name: str
    cname: str
    dtype: dtype
    ctype: str
    shape: tuple[int, ...]
    index: int


@dataclass
class PackedWeight:
    """A constant GEMM operand that create packs once into the micro-kernel's panels of the CPU's ISA
    (gc_sgemm_pack_b of op(B) = param^T, the param being [n, k]): the context owns the copy, the kernel
    reads it as ``ctx->packed[slot]``."""

    slot: int
    param: int  # index into Program.params
    n: int
    k: int


@dataclass
class BufferInfo:
    """A pointer into the arena declared in the run function."""

    cname: str
    ctype: str
    offset: str  # C expression (bytes)
    comment: str


@dataclass
class Program:
    name: str
    graph: Graph
    dims: list[DimInfo]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    params: list[ParamInfo]
    buffers: list[BufferInfo]
    kernels: list[Kernel]
    plan: MemoryPlan
    plan_labels: list[str]
    fingerprint: str
    arena_c: str  # bytes for the given dims (C expression): what a run with those dims allocates
    threads: int  # default thread count (0 = omp_get_max_threads())
    packed: list[PackedWeight] = field(default_factory=list)  # weights create packs (linear layers)

    @property
    def work_kernels(self) -> list[Kernel]:
        return [k for k in self.kernels if k.work]

    @property
    def upper(self) -> str:
        return self.name.upper()

    @property
    def used_values(self) -> set[str]:
        """Run-function names that some kernel reads or writes."""
        return {a.value for k in self.kernels for a in k.args}

    @property
    def dim_index(self) -> dict[str, int]:
        return {d.cname: i for i, d in enumerate(self.dims)}

    def memory_table(self) -> list[dict[str, Any]]:
        """The memory plan as data: value, node, offset, size (polynomials as text), first and last step."""
        return self.plan.table()

    @property
    def arena_lifetimes(self) -> list[tuple[list[tuple[str, str]], list[tuple[str, str]]]]:
        """Per kernel: the arena blocks that come alive before it, as (offset, exact bytes) C expressions,
        and those that die after it, as (offset, block bytes). A sanitizer build poisons every arena byte
        that holds no live value, so a kernel that reads or writes past its tensors is reported."""
        cname = {d.name: d.cname for d in self.dims}.__getitem__
        exact: dict[int, Dim] = {}
        scratch = {k: n for kern in self.kernels if kern.step is not None for k, n in kern.step.scratch}
        for key, blk in self.plan.location.items():  # a value, or a scratch key
            size = scratch[key] if isinstance(key, str) else prod(key.type.shape) * key.type.dtype.itemsize
            old = exact.get(id(blk))
            exact[id(blk)] = size if old is None else poly_max([old, size])
        events: list[tuple[list[tuple[str, str]], list[tuple[str, str]]]] = []
        step = 0
        n_work = 0
        for kern in self.kernels:
            if kern.step is None:
                events.append(([], []))
                continue
            born = [(sym_c(b.offset, cname), sym_c(exact[id(b)], cname)) for b in self.plan.blocks if b.first == step]
            dead = [(sym_c(b.offset, cname), sym_c(b.size, cname)) for b in self.plan.blocks if b.last == step]
            if kern.work:  # its runtime-sized scratch, where the run put it (work_bytes in model.c.j2)
                dims = "".join(f"{a.value}, " for a in kern.dim_args)
                region = (f"work_at[{n_work}]", f"{kern.name}_work({dims}ctx->nthreads) * sizeof(float)")
                born.append(region)
                dead.append(region)
                n_work += 1
            events.append((born, dead))
            step += 1
        return events


def sym_c(d: Dim, name: Callable[[str], str]) -> str:
    """A size as a C expression: a plain dim is its variable, anything else is parenthesised."""
    if isinstance(d, Sym):
        if d.is_var:
            return name(d.symbols[0])
        return d.to_c(name)
    return str(int(d))


def fingerprint(g: Graph) -> str:
    """sha256 of the printed graph: weights files carry it and the library checks it."""
    return hashlib.sha256(print_graph(g).encode()).hexdigest()


def unsupported(node: Node | None, dt: Any = None, why: str = "", backend: str = "C") -> UnsupportedError:
    """"not supported by the <backend> backend: op X, dtype Y, at module path Z (why)"."""
    op = node.op if node is not None else "?"
    dts = ", ".join(sorted({v.type.dtype.name for v in node.inputs if v is not None} | {node.out.type.dtype.name})) \
        if node is not None and dt is None else getattr(dt, "name", str(dt))
    where = (node.scope or "<top level>") if node is not None else "<top level>"
    msg = f"not supported by the {backend} backend: op {op}, dtype {dts}, at module path {where}"
    return UnsupportedError(msg + (f" ({why})" if why else ""))


# ------------------------------------------------------------------------------------- loop nests
@dataclass
class LoopNest:
    """Nested loops ``for (i0 < extents[0]) for (i1 < extents[1]) ...`` after merging dims that are
    contiguous for every operand. ``strides[k]`` holds operand k's element stride per loop (None for 0)."""

    extents: list[str]
    strides: list[list[str | None]]
    total: str
    parallel: bool
    parallel_if: str  # "" or a C condition for an if() clause
    collapse: int


def contiguous_strides(shape: Sequence[Dim]) -> list[Dim]:
    out: list[Dim] = []
    acc: Dim = 1
    for d in reversed(shape):
        out.append(acc)
        acc = acc * d
    return out[::-1]


def broadcast_strides(shape: Sequence[Dim], out_shape: Sequence[Dim]) -> list[Dim]:
    """Element strides to read a tensor of `shape` broadcast to `out_shape` (0 where broadcast)."""
    st = contiguous_strides(shape)
    off = len(out_shape) - len(shape)
    res: list[Dim] = []
    for i, d in enumerate(out_shape):
        j = i - off
        if j < 0 or (shape[j] == 1 and not (d == 1)):
            res.append(0)
        else:
            res.append(st[j])
    return res


def merge_dims(extents: Sequence[Dim], strides: Sequence[Sequence[Dim]]) -> tuple[list[Dim], list[list[Dim]]]:
    """Drop size-1 dims and merge neighbours that are contiguous for every operand."""
    dims = [(e, [s[i] for s in strides]) for i, e in enumerate(extents) if not (is_static(e) and e == 1)]
    merged: list[tuple[Dim, list[Dim]]] = []
    for e, st in dims:
        if merged:
            pe, pst = merged[-1]
            if all(ps == s * e for ps, s in zip(pst, st)):
                merged[-1] = (pe * e, st)
                continue
        merged.append((e, st))
    return [e for e, _ in merged], [[st[k] for _, st in merged] for k in range(len(strides))]


# ------------------------------------------------------------------------------------- the builder
class KernelBuilder:
    """What a lowering rule talks to: it hands out operand names and records the kernel."""

    def __init__(self, lower: Lowering, nodes: Sequence[Node], label: str, name_hint: str):
        from .base import Namespace

        self.lower = lower
        self.backend = lower.backend
        self.nodes = list(nodes)
        self.node: Any = self.nodes[-1] if self.nodes else None
        self.ns = Namespace(KERNEL_LOCALS + tuple(d.cname for d in lower.dims))
        self.args: list[Arg] = []
        self.dims_used: set[str] = set()
        self.step = Step(label, [], [])
        # a fresh name for every kernel: keyed by id(self), a builder freed after finish() handed its id,
        # hence its name, to the next one with the same hint (two functions of one name, a C error)
        self.name = lower.ns.name(name_hint)
        self.template = ""
        self.data: dict[str, Any] = {}
        self.status = False
        self.error = ""
        self.has_work = False
        self._names: dict[Any, str] = {}
        self._threads = False
        # a conv kernel's fused epilogue (graphc.backend.epilogue), set by the driver for the conv's rule
        self.epilogue: ConvEpilogue | None = None
        # a product's fused epilogue (fusion.gemm_epilogues: the elementwise chain its kernel applies), set by
        # the driver for the product's rule
        self.gemm_epilogue: GemmEpilogue | None = None

    # operands -------------------------------------------------------------------------------------
    def input(self, v: Value | None) -> str:
        """The kernel's name for a read-only operand (``NULL`` for a missing optional one)."""
        if v is None:
            return "NULL"
        if v in self._names:
            return self._names[v]
        name = self.ns.name(self.lower.hint(v), v)
        self.args.append(Arg(f"const {self.ctype(v.type.dtype)} *", name, self.lower.cname(v)))
        self._names[v] = name
        self.step.reads.append(v)
        return name

    def packed_weight(self, w: Value) -> str | None:
        """The kernel's name for the packed copy of linear weight w ([n, k], a float32 parameter: B = w^T
        packed by create, see PackedWeight), or None when w is not a parameter (a computed value changes
        with every run)."""
        b = self.lower.base.get(w, w)
        if b.kind != "param" or b is not w or len(w.type.shape) != 2 or not all(is_static(d) for d in w.type.shape):
            return None
        pw = self.lower.packed_weight(w)
        key = ("packed", pw.slot)
        if key in self._names:
            return self._names[key]
        name = self.ns.name(self.lower.hint(w) + "_packed", key)
        self.args.append(Arg("const float *", name, f"ctx->packed[{pw.slot}]"))
        self._names[key] = name
        return name

    def output(self, v: Value) -> str:
        name = self.ns.name(self.lower.hint(v), ("out", v))
        self.args.append(Arg(f"{self.ctype(v.type.dtype)} *", name, self.lower.cname(v)))
        self.step.writes.append(v)
        return name

    def output_slot(self, index: int, dt: dtype) -> str:
        info = self.lower.outputs[index]
        name = self.ns.name(info.name, ("slot", index))
        self.args.append(Arg(f"{self.ctype(dt)} *", name, info.cname))
        return name

    def dim(self, d: Dim) -> str:
        """A C expression for a (possibly symbolic) size; the dims it uses become kernel arguments."""
        if isinstance(d, Sym):
            self.dims_used.update(d.symbols)
        return sym_c(d, self.lower.dim_cname.__getitem__)

    def numel(self, shape: Sequence[Dim]) -> str:
        return self.dim(prod(shape))

    def threads(self) -> str:
        self._threads = True
        return "nthreads"

    def scratch(self, nbytes: Dim, dt: dtype) -> str:
        """A scratch buffer from the arena, live only while this kernel runs."""
        key = self.lower.ns.name(f"{self.name}_scratch", ("scratch", self.name, len(self.step.scratch)))
        self.step.scratch.append((key, nbytes))
        self.lower.scratch_types[key] = self.ctype(dt)
        name = self.ns.name("scratch", key)
        self.args.append(Arg(f"{self.ctype(dt)} *", name, key))
        return name

    def work(self) -> str:
        """The context's runtime-sized scratch region (for runtime kernels with a *_work_floats())."""
        self.has_work = True
        self.args.append(Arg("float *", "work", "work"))
        return "work"

    def fails(self, message: str) -> None:
        """The kernel returns a status (e.g. GC_ERR_INDEX); run() reports message when it is not 0."""
        self.status = True
        where = f" in module '{self.node.scope}'" if self.node is not None and self.node.scope else ""
        self.error = f"{self.node.op} %{self.node.out.name}{where}: {message}"

    # types and literals ---------------------------------------------------------------------------
    def ctype(self, dt: dtype) -> str:
        t = self.backend.ctype(dt)
        if t is None:
            raise unsupported(self.node, dt, backend=self.backend.display_name)
        return t

    def literal(self, value: Any, dt: dtype) -> str:
        return self.backend.literal(value, dt)

    def require(self, ok: bool, why: str = "") -> None:
        if not ok:
            raise unsupported(self.node, None, why, backend=self.backend.display_name)

    # loops ----------------------------------------------------------------------------------------
    def loops(self, extents: Sequence[Dim], strides: Sequence[Sequence[Dim]], *, merge: bool = True,
              parallel: bool = True, cost: int = 1) -> LoopNest:
        """A loop nest over `extents`; strides[k] are operand k's element strides per dim."""
        if merge:
            ext, st = merge_dims(extents, strides)
        else:
            ext, st = list(extents), [list(s) for s in strides]
        total = prod(ext)
        par, cond = False, ""
        limit = max(1, self.backend.parallel_min // max(1, cost))
        if parallel and ext:
            big = evaluate(total, self.lower.maxima)
            if big >= limit:
                par = True
                if not is_static(total):
                    cond = f"{self.dim(total)} >= {limit}"
        if par:
            self.threads()
        collapse = 1
        if par and len(ext) >= 2 and not (is_static(ext[0]) and ext[0] >= 64):
            collapse = 2
        return LoopNest([self.dim(e) for e in ext],
                        [[None if (is_static(s) and s == 0) else self.dim(s) for s in ss] for ss in st],
                        self.dim(total), par, cond, collapse)

    # finishing ------------------------------------------------------------------------------------
    def emit(self, template: str, **data: Any) -> None:
        """Choose the kernel's template and the fields it prints (available as ``d.<field>``)."""
        self.template = template
        self.data.update(data)

    def finish(self) -> Kernel:
        if not self.template:
            raise AssertionError(f"lowering of {self.node.op} did not call emit()")
        dim_args = [Arg("int64_t", d.cname, d.cname) for d in self.lower.dims if d.name in self.dims_used]
        args = dim_args + self.args
        if self._threads or self.has_work:
            args.append(Arg("int", "nthreads", "nt"))
            self._threads = True
        comment = [print_node(n) for n in self.nodes] if self.nodes else []
        k = Kernel(self.name, self.template, comment, args, dict(self.data), dim_args, self.status,
                   self.error, self.has_work, self.step)
        flops, nbytes = kernel_work(self.nodes, self.step)
        k.scope = next((n.scope for n in reversed(self.nodes) if n.scope), "")
        if self.gemm_epilogue is not None and self.gemm_epilogue.product.scope:
            k.scope = self.gemm_epilogue.product.scope  # a fused epilogue belongs to its product's module
        k.ops = "+".join(dict.fromkeys(n.op for n in self.nodes)) or self.template.split(".")[0]
        k.flops_c, k.bytes_c = (sym_c(x, self.lower.dim_cname.__getitem__) for x in (flops, nbytes))
        k.data.setdefault("threads", self._threads)
        return k


def kernel_work(nodes: Sequence[Node], step: Step | None) -> tuple[Dim, Dim]:
    """(float ops, bytes) of a kernel, for the profile's GFLOP/s and GB/s: 2*M*N*K for products and
    convolutions, the attention's two products, one op per output element for everything else; bytes are
    the values read and written once each."""
    flops: Dim = 0
    for n in nodes:
        out = prod(n.out.type.shape)
        ins = [v.type.shape for v in n.inputs if v is not None]
        if n.op in ("linear", "matmul") and ins and ins[0]:
            flops = flops + 2 * out * ins[0][-1]
        elif n.op == "conv" and len(ins) > 1:
            flops = flops + 2 * out * prod(ins[1][1:])
        elif n.op == "conv_transpose" and len(ins) > 1:
            flops = flops + 2 * prod(ins[0]) * prod(ins[1][1:])
        elif n.op == "sdpa" and len(ins) > 2:
            q, k, v = ins[:3]
            flops = flops + 2 * prod(q[:-1]) * k[-2] * (q[-1] + v[-1])
        else:
            flops = flops + out
    nbytes: Dim = 0
    if step is not None:
        for v in dict.fromkeys([*step.reads, *step.writes]):
            nbytes = nbytes + prod(v.type.shape) * v.type.dtype.itemsize
    return flops, nbytes


LowerFn = Callable[[KernelBuilder, Node], None]


# ------------------------------------------------------------------------------------- elementwise
def lower_elementwise(kb: KernelBuilder, group: FusionGroup) -> None:
    """One loop over the group's shape: load each outside operand (broadcast), compute every member in
    registers, store the root."""
    root = group.root
    shape = root.out.type.shape
    be = kb.backend
    loads = []
    strides: list[list[Dim]] = []
    local: dict[Value, str] = {}
    for v in group.inputs:
        ptr = kb.input(v)
        strides.append(broadcast_strides(v.type.shape, shape))
        name = kb.ns.name("v_" + kb.lower.hint(v), ("load", v))
        loads.append({"ctype": kb.ctype(v.type.dtype), "name": name, "ptr": ptr})
        local[v] = name
    for c in group.constants:
        local[c.out] = be.literal(c.attrs["value"], c.out.type.dtype)
    out = kb.output(root.out)
    strides.append(contiguous_strides(shape))
    stmts = []
    cost = 1
    for n in group.nodes:
        kb.node = n  # an error names the member it comes from (op, dtypes, module path)
        args = [local[v] for v in n.inputs if v is not None]
        try:
            expr = be.scalar_expr(n, args)
        except UnsupportedError as e:
            if str(e).startswith("not supported by"):
                raise
            raise unsupported(n, None, str(e), backend=be.display_name) from None
        except (KeyError, ValueError) as e:
            raise unsupported(n, None, str(e), backend=be.display_name) from None
        kb.ctype(n.out.type.dtype)
        for v in n.inputs:
            if v is not None:
                kb.ctype(v.type.dtype)
        if n is root:
            local[n.out] = expr
        else:
            name = kb.ns.name("t_" + kb.lower.hint(n.out), ("tmp", n.out))
            stmts.append({"ctype": kb.ctype(n.out.type.dtype), "name": name, "expr": expr})
            local[n.out] = name
        cost += be.op_cost(n.op)
    kb.node = root
    nest = kb.loops(shape, strides, cost=cost)
    for ld, st in zip(loads, nest.strides):
        ld["strides"] = st
    kb.step.inplace = [v for v in group.inputs
                       if v.type.shape == shape and v.type.dtype is root.out.type.dtype]
    kb.emit("elementwise" + be.template_suffix, nest=nest, loads=loads, stmts=stmts, out=out,
            out_strides=nest.strides[-1], result=local[root.out], out_ctype=kb.ctype(root.out.type.dtype))


# ------------------------------------------------------------------------------------- the driver
class Lowering:
    """The state of one lowering: names, storage decisions and the kernels built so far."""

    def __init__(self, g: Graph, backend: Backend, *, name: str, fuse: bool = True):
        from .base import Namespace

        self.g = g
        self.backend = backend
        self.name = name
        self.ns = Namespace(RUN_LOCALS + (name, name.upper()))
        self.dims = [DimInfo(d, self.ns.name(d, ("dim", d)), lo, hi) for d, (lo, hi) in g.dims.items()]
        self.dim_cname = {d.name: d.cname for d in self.dims}
        self.maxima = {d.name: d.max for d in self.dims}
        self.fuse = fuse
        self.base: dict[Value, Value] = {}
        self.scratch_types: dict[str, str] = {}
        self._cname: dict[Any, str] = {}
        self.outputs: list[TensorInfo] = []
        self.layouts = SdpaLayouts()
        self.packed: dict[Value, PackedWeight] = {}
        # 1x1 convs that take their input's channel scale into their weights (epilogue.conv_input_scales)
        self.conv_scales: dict[Node, ConvInputScale] = {}

    def packed_weight(self, w: Value) -> PackedWeight:
        """The create-time packing of parameter w (one per parameter, whatever uses it)."""
        if w not in self.packed:
            index = list(self.g.params.values()).index(w)
            n, k = (int(d) for d in w.type.shape)
            self.packed[w] = PackedWeight(len(self.packed), index, n, k)
        return self.packed[w]

    def hint(self, v: Value) -> str:
        return v.name

    def cname(self, v: Value) -> str:
        b = self.base.get(v, v)
        if b not in self._cname:
            self._cname[b] = self.ns.name(b.name, b)
        return self._cname[b]

    def tensor_info(self, name: str, cname: str, v: Value) -> TensorInfo:
        t = self.backend.ctype(v.type.dtype)
        if t is None:
            who = f"not supported by the {self.backend.display_name} backend"
            if v.node is not None:
                n = v.node
                raise UnsupportedError(
                    f"{who}: op {n.op}, dtype {v.type.dtype.name}, at module path "
                    f"{n.scope or '<top level>'}" + (f" ({n.loc})" if n.loc else "") + f" (output '{name}')")
            raise UnsupportedError(f"{who}: {v.kind} '{name}' of dtype {v.type.dtype.name}")
        shape_c = [sym_c(d, self.dim_cname.__getitem__) for d in v.type.shape]
        return TensorInfo(name, cname, v.type.dtype, t, v.type.shape, shape_c)

    def run(self) -> Program:
        g, be = self.g, self.backend
        consts = inlined_constants(g)
        # product epilogues: the product is lowered where its chain ends, the chain in its tiles' epilogue
        gemm_eps = gemm_epilogues(g, be.gemm_epilogue_ops) if self.fuse and be.gemm_epilogue_ops else {}
        epilogue_end = {ep.nodes[-1]: ep for ep in gemm_eps.values()}
        absorbed = {m for ep in gemm_eps.values() for m in ep.nodes}
        groups = fusion_groups(g, fuse=self.fuse, exclude=absorbed)
        root_group = {grp.root: grp for grp in groups}
        members = {n for grp in groups for n in grp.nodes}
        if self.fuse and be.sdpa_strides:
            self.layouts = fold_sdpa_layouts(g, consts)
        # conv epilogues: the conv is lowered at its group's root, with the group in its output write
        epilogues = conv_epilogues(g, groups) if self.fuse and be.conv_epilogues else {}
        fused_convs = {e.conv for e in epilogues.values()} | {e.pool for e in epilogues.values() if e.pool}
        if self.fuse and be.conv_input_scales:
            self.conv_scales = conv_input_scales(g, groups)
        scaled = {sc.mul for sc in self.conv_scales.values()}
        for n in g.nodes:
            if is_view(n) and n.inputs and n.inputs[0] is not None:
                src = n.inputs[0]
                self.base[n.out] = self.base.get(src, src)

        inputs = [self.tensor_info(v.name, self.cname(v), v) for v in g.inputs]
        params = []
        for i, (pname, v) in enumerate(g.params.items()):
            t = be.ctype(v.type.dtype)
            if t is None:
                raise UnsupportedError(f"not supported by the {be.display_name} backend: parameter @{pname} of dtype "
                                       f"{v.type.dtype.name}")
            params.append(ParamInfo(pname, self.cname(v), v.type.dtype, t, tuple(int(d) for d in v.type.shape), i))

        # outputs: bind each to the base value that can be computed in place, else copy at the end
        bound: dict[Value, int] = {}
        copies: list[tuple[int, Value]] = []
        for k, (oname, v) in enumerate(g.outputs):
            b = self.base.get(v, v)
            cname = self.ns.name(oname, ("output", k))
            if b.kind == "node" and b not in bound and b.node not in consts:
                bound[b] = k
                self._cname[b] = cname
            else:
                copies.append((k, v))
            self.outputs.append(self.tensor_info(oname, cname, v))

        kernels: list[Kernel] = []
        for n in g.nodes:
            if (is_view(n) or n in consts or n in fused_convs or n in gemm_eps or n in self.layouts.folded
                    or n in scaled):
                continue
            if n in epilogues:
                e = epilogues[n]
                grp = e.group
                fn = be.lowering_for(e.conv.opdef)
                pool = [e.pool] if e.pool is not None else []
                mul = [self.conv_scales[e.conv].mul] if e.conv in self.conv_scales else []
                kb = KernelBuilder(self, [*mul, e.conv, *grp.constants, *grp.nodes, *pool], n.out.name,
                                   self.kernel_name([*mul, e.conv, *grp.nodes, *pool]))
                kb.epilogue = e
                kb.node = e.conv
                fn(kb, e.conv)
                kernels.append(kb.finish())
                continue
            if n in absorbed:
                ep = epilogue_end.get(n)
                if ep is None:
                    continue
                # the product runs where its epilogue chain ends, writing the chain's result
                p = ep.product
                fn = be.lowering_for(p.opdef)
                if fn is None:
                    raise unsupported(p, None, "no lowering rule", backend=be.display_name)
                kb = KernelBuilder(self, [p, *ep.nodes], n.out.name, self.kernel_name([p, *ep.nodes]))
                kb.gemm_epilogue = ep
                fn(kb, p)
            elif n in members:
                grp = root_group.get(n)
                if grp is None:
                    continue
                kb = KernelBuilder(self, [*grp.constants, *grp.nodes], n.out.name, self.kernel_name(grp.nodes))
                if not be.lower_group(kb, grp):
                    lower_elementwise(kb, grp)
            else:
                fn = be.lowering_for(n.opdef)
                if fn is None:
                    raise unsupported(n, None, "no lowering rule", backend=be.display_name)
                nodes = [self.conv_scales[n].mul, n] if n in self.conv_scales else [n]
                kb = KernelBuilder(self, nodes, n.out.name, self.kernel_name(nodes))
                fn(kb, n)
            kernels.append(kb.finish())
        for k, v in copies:
            kb = KernelBuilder(self, [], f"output {g.outputs[k][0]}", f"{self.name}_output_{g.outputs[k][0]}")
            src = kb.input(v)
            dst = kb.output_slot(k, v.type.dtype)
            kb.emit("copy" + be.template_suffix, src=src, dst=dst, numel=kb.numel(v.type.shape),
                    ctype=kb.ctype(v.type.dtype), what=f"output '{g.outputs[k][0]}' = {v.ref}")
            kernels.append(kb.finish())

        # memory plan over the schedule
        steps = [k.step for k in kernels if k.step is not None]
        arena_values = []
        seen = set()
        for st in steps:
            for v in st.writes:
                b = self.base.get(v, v)
                if b.kind == "node" and b not in bound and b not in seen:
                    seen.add(b)
                    arena_values.append(b)
        nbytes = {b: prod(b.type.shape) * b.type.dtype.itemsize for b in arena_values}
        names = {b: b.name for b in arena_values}
        plan = plan_memory(steps, arena_values, self.base, nbytes, names, self.maxima, inplace=self.fuse)
        step_of = {id(st): i for i, st in enumerate(steps)}
        n_work = 0
        for k in kernels:
            if k.step is not None:
                written = {self.storage(v, plan) for v in k.step.writes}
                k.noalias = not written & {self.storage(v, plan) for v in k.step.reads}
            if k.work:
                gaps, top = free_at(plan, step_of[id(k.step)], self.maxima)
                k.work_gaps = [(self.size_c(o), self.size_c(r)) for o, r in gaps]
                k.work_top = self.size_c(top)
                k.args = [replace(a, value=f"(float *)(ctx->arena + work_at[{n_work}])") if a.value == "work" else a
                          for a in k.args]
                n_work += 1
        buffers = []
        to_c = self.size_c
        for blk in plan.blocks:
            for b, loc in plan.location.items():
                if loc is not blk:
                    continue
                if isinstance(b, str):
                    buffers.append(BufferInfo(b, self.scratch_types[b], to_c(blk.offset),
                                              f"scratch, {blk.size} bytes, step {blk.first}"))
                else:
                    buffers.append(BufferInfo(self.cname(b), be.ctype(b.type.dtype), to_c(blk.offset),
                                              f"{b.type}, steps {blk.first}..{blk.last}"))
        return Program(self.name, g, self.dims, inputs, self.outputs, params, buffers, kernels, plan,
                       [k.step.label for k in kernels], fingerprint(g), to_c(plan.arena), 0,
                       list(self.packed.values()))

    def storage(self, v: Value, plan: MemoryPlan) -> Any:
        """Where v's bytes are: its arena block (shared by an in-place chain), else its buffer's name."""
        b = self.base.get(v, v)
        blk = plan.location.get(b)
        return ("block", id(blk)) if blk is not None else ("buffer", self.cname(b))

    def size_c(self, d: Dim, maxima: bool = False) -> str:
        if maxima:
            return str(evaluate(d, self.maxima))
        return sym_c(d, self.dim_cname.__getitem__)

    def kernel_name(self, nodes: Sequence[Node]) -> str:
        root = nodes[-1]
        ops: list[str] = []
        for n in nodes:
            if n.op not in ops:
                ops.append(n.op)
        if len(ops) > 3:
            ops = ops[:2] + ops[-1:]
        scope = root.scope.replace(".", "_")
        return "_".join(p for p in (self.name, scope, "_".join(ops)) if p)


# the most bytes a tensor or the arena may take at the dims' maxima: far below 2**63, so that the C size
# expressions (int64_t, times a thread count and an element size at most) never overflow
MAX_BYTES = 2**52


def _negative_at(d: Dim, ranges: dict[str, tuple[int, int]]) -> dict[str, int] | None:
    """Dims in their ranges at which the size d is negative, or None. Checked at every corner of the
    ranges (exact for sizes linear in each dim) and the midpoints."""
    if not isinstance(d, Sym) or all(c >= 0 for c in d.coeffs().values()):
        return None
    points: list[dict[str, int]] = [{}]
    for s in sorted(d.symbols):
        lo, hi = ranges[s]
        points = [{**p, s: v} for p in points for v in dict.fromkeys((lo, hi, (lo + hi) // 2))]
    return next((p for p in points if evaluate(d, p) < 0), None)


def check_sizes(prog: Program) -> None:
    """Reject dim ranges the compiled code cannot run: a size that is negative for dims in range (a
    slice 1:T with T allowed to be 0 has T-1 rows; the kernels and the memory plan would work with -1),
    or maxima that make the arena or an input/output too big to address (the C code would compute
    wrapped sizes: a tiny arena, then writes past it)."""
    ranges = {d.name: (d.min, d.max) for d in prog.dims}
    values = [*prog.graph.inputs, *(n.out for n in prog.graph.nodes)]
    for v in values:
        for d in v.type.shape:
            bad = _negative_at(d, ranges)
            if bad is not None:
                node = f"node %{v.name} = {v.node.op}(...)" if v.node is not None else f"input %{v.name}"
                where = f" in module '{v.node.scope}'" if v.node is not None and v.node.scope else ""
                at = ", ".join(f"{k}={x}" for k, x in bad.items())
                within = ", ".join(f"{k} in {ranges[k][0]}..{ranges[k][1]}" for k in bad)
                raise UnsupportedError(f"model '{prog.name}': {node}{where} has type {v.type}, a negative size "
                                       f"{d} = {evaluate(d, bad)} at {at} ({within}): raise the dims' minima")
    maxima = {d.name: d.max for d in prog.dims}
    sizes = [("the arena of intermediates", prog.plan.capacity)]
    sizes += [(f"{kind} '{t.name}'", prod(t.shape) * t.dtype.itemsize)
              for kind, ts in (("input", prog.inputs), ("output", prog.outputs)) for t in ts]
    for what, size in sizes:
        n = evaluate(size, maxima)
        if n > MAX_BYTES:
            at = ", ".join(f"{k}={v}" for k, v in maxima.items())
            raise UnsupportedError(f"model '{prog.name}': {what} takes {n} bytes at the dims' maxima ({at}), more "
                                   f"than the {MAX_BYTES} a compiled library addresses: lower the dims' maxima")


def lower_program(g: Graph, backend: Backend, *, name: str, fuse: bool = True, threads: int | None = None) -> Program:
    """Lower a verified graph for `backend` (see the module docstring)."""
    prog = Lowering(g, backend, name=name, fuse=fuse).run()
    prog.threads = int(threads or 0)
    check_sizes(prog)
    return prog
