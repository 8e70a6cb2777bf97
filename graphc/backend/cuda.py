"""The CUDA backend: the same lowering and memory plan as the C backend, printed as CUDA C++ from
``templates/cuda/`` into a library with the C backend's ABI (``NAME.h``), whose kernels run on a GPU.

How it differs from the C backend (``graphc/backend/c.py``)
-----------------------------------------------------------
* Every kernel is a host *launcher* ``cudaError_t NAME(args..., cudaStream_t gcx_stream)`` with the C
  kernel's arguments, which launches one or more ``__global__`` kernels on the context's stream and
  returns ``cudaGetLastError()``. The run function calls the launchers in schedule order.
* Elementwise groups and the data-movement ops are grid-stride kernels over the C backend's loop nests
  (one thread per element; the nest's extents decompose the flat index). The rules of slice, permute,
  expand, concat, pad, constant, full and arange are shared (``common.py``: they print through
  ``template_suffix``); every other family has a rule here, printing the shared per-family analysis
  (``analysis.py``).
* Reductions, arg-reductions, softmax and layer / RMS / group norms run one block per output row with a
  shared-memory tree reduction; matmul, linear, bilinear and conv share one tiled shared-memory GEMM
  (``gcx_gemm_tile`` in ``internal.cuh.j2``; conv goes through im2col into arena scratch, a chunk of
  images at a time); pools, batch norm and conv_transpose are one thread per output element; sdpa is
  one block per (batch, head, query row) with an online softmax over chunks of keys.
* Index ops never read out of range: a bad index sets a flag in device memory (one int per checking
  kernel), which the run function reads after the stream synchronises and turns into GC_ERR_INDEX.
* There is no thread count and no runtime scratch (``work``): loop nests are never "parallel"
  (``parallel_min``), scratch comes from the arena through ``kb.scratch``.

Rules raise :class:`graphc.errors.UnsupportedError` ("not supported by the CUDA backend: op X, dtype Y,
at module path Z") through ``kb.require`` for what they do not run.

A new op: elementwise ones need nothing (fusion groups print the registry's formula), nor does an op of
a family whose rule covers it. A new family gets a rule here, ``@lowers("<family>")``, as in c.py and
printing the same analysis (``graphc/backend/analysis.py``)
(``@lowers_op("<op>")`` for one op that its family's rule does not cover), with ``kb.input`` /
``kb.output`` / ``kb.dim`` / ``kb.scratch`` / ``kb.fails``, never ``kb.threads`` or ``kb.work``, and a
``templates/cuda/<family>.cu.j2`` with its ``__global__`` kernel(s) and launcher (``_macros.j2``:
``kernel``, ``launcher``, ``grid_loop``, ``launch_grid``). Without a GPU, tests/test_cuda_ops_emulated.py
runs it from the op table on a CPU emulation of CUDA.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._dtype import float32, float64, int32, int64
from ..ir.graph import Node
from ..sym import Dim, evaluate, is_static, prod
from .analysis import (
    adaptive_pool_params,
    axis_split,
    bilinear_shape,
    conv_is_pointwise,
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
from .build import BuildOptions, cflags, compiler_version
from .common import COMMON_LOWERINGS, rule_registrar
from .lowering import KernelBuilder, LowerFn, Program, contiguous_strides, merge_dims
from .registry import register_backend

# by op family: the shared data-movement and creation rules (common.py: slice, permute, expand, concat,
# pad, fill, arange print "<template>" + template_suffix, i.e. templates/cuda/<template>.cu.j2), then
# the CUDA rules
CUDA_LOWERINGS: dict[str, LowerFn] = dict(COMMON_LOWERINGS)
CUDA_OP_LOWERINGS: dict[str, LowerFn] = {}  # ops lowered apart from their family's rule
lowers = rule_registrar(CUDA_LOWERINGS)  # @lowers("<family>"): register a CUDA lowering rule
lowers_op = rule_registrar(CUDA_OP_LOWERINGS)  # @lowers_op("<op>"): one op its family's rule does not cover

BLOCK = 256  # threads per block of every kernel (GCX_BLOCK in the templates)
GEMM_BATCH_DIMS = 4  # batch dims a GEMM kernel can walk (GCX_GEMM_BATCH_DIMS)
IM2COL_FLOATS = 8 << 20  # conv: column buffer of a chunk of images, at most (32 MiB) unless one image needs more


def _max(kb: KernelBuilder, d: Dim) -> int:
    """The value of a size at the dims' maxima (what the arena is planned for)."""
    return int(evaluate(d, kb.lower.maxima)) if not is_static(d) else int(d)


# ------------------------------------------------------------------------------------- GEMM
def _gemm(kb: KernelBuilder, a: str, b: str, c: str, bias: str, *, m: Dim, n: Dim, k: Dim,
          sa: tuple[Dim, Dim], sb: tuple[Dim, Dim], scm: Dim, sbias: tuple[Dim, Dim] = (0, 0),
          batch: Sequence[Dim] = (), strides: Sequence[Sequence[Dim]] = ((), (), (), ()),
          merge: bool = True) -> dict[str, Any]:
    """The fields of one (batched) product C[i, j] = sum_l A[i, l] B[l, j] (+ bias[i, j]):
    A[i, l] = a[i*sa[0] + l*sa[1]], B[l, j] = b[l*sb[0] + j*sb[1]], C[i, j] = c[i*scm + j], and for each
    batch dim the element strides of a, b, c and bias (merged where contiguous unless merge is False)."""
    if merge and batch:
        ext, st = merge_dims(batch, strides)
    else:
        ext, st = list(batch), [list(s) for s in strides]
    kb.require(len(ext) <= GEMM_BATCH_DIMS, f"more than {GEMM_BATCH_DIMS} batch dims that do not merge")
    return {"a": a, "b": b, "c": c, "bias": bias, "m": kb.dim(m), "n": kb.dim(n), "k": kb.dim(k),
            "sam": kb.dim(sa[0]), "sak": kb.dim(sa[1]), "sbk": kb.dim(sb[0]), "sbn": kb.dim(sb[1]),
            "scm": kb.dim(scm), "sbias_m": kb.dim(sbias[0]), "sbias_n": kb.dim(sbias[1]),
            "batch": [kb.dim(e) for e in ext], "batch_strides": [[kb.dim(s) for s in ss] for ss in st]}


@lowers("matmul")
def _matmul(kb: KernelBuilder, n: Node) -> None:
    a, b = n.inputs
    dt = n.out.type.dtype
    kb.require(dt in (float32, float64, int64), "matmul runs on float32, float64 and int64")
    sh = matmul_shape(n)
    M, N, K = sh.m, sh.n, sh.k
    pa, pb, pc = kb.input(a), kb.input(b), kb.output(n.out)
    g = _gemm(kb, pa, pb, pc, "NULL", m=M, n=N, k=K, sa=(K, 1), sb=(N, 1), scm=N, batch=sh.batch,
              strides=[*sh.strides, [0] * len(sh.batch)])
    kb.emit("gemm.cu.j2", g=g, ctype=kb.ctype(dt), acc=kb.ctype(dt))


@lowers("linear")
def _linear(kb: KernelBuilder, n: Node) -> None:
    x, w, bias = (list(n.inputs) + [None])[:3]
    require_float32(kb, n)
    M, N, K = linear_shape(n)
    px, pw, pb = kb.input(x), kb.input(w), kb.input(bias)
    g = _gemm(kb, px, pw, kb.output(n.out), pb, m=M, n=N, k=K, sa=(K, 1), sb=(1, K), scm=N, sbias=(0, 1))
    kb.emit("gemm.cu.j2", g=g, ctype="float", acc="float")


@lowers("bilinear")
def _bilinear(kb: KernelBuilder, n: Node) -> None:
    x1, x2, w, bias = (list(n.inputs) + [None])[:4]
    require_float32(kb, n)
    M, O, I1, I2 = bilinear_shape(n)
    p1, p2, pw, pb = kb.input(x1), kb.input(x2), kb.input(w), kb.input(bias)
    y = kb.output(n.out)
    tmp = kb.scratch(M * O * I2 * 4, float32)
    # tmp[m, o, j] = sum_i x1[m, i] * w[o, i, j]: one product per output feature o
    g = _gemm(kb, p1, pw, tmp, "NULL", m=M, n=I2, k=I1, sa=(I1, 1), sb=(I2, 1), scm=O * I2, batch=[O],
              strides=[[0], [I1 * I2], [I2], [0]])
    kb.emit("bilinear.cu.j2", g=g, x2=p2, bias=pb, y=y, tmp=tmp, m=kb.dim(M), o=kb.dim(O), i2=kb.dim(I2),
            total=kb.dim(M * O))


# ------------------------------------------------------------------------------------- reductions
def _row_block(count: Dim, kb: KernelBuilder) -> int:
    """Threads per block of a one-block-per-row kernel: a power of two from 32 to BLOCK covering the row."""
    n = max(1, _max(kb, count))
    b = 32
    while b < BLOCK and b < n:
        b *= 2
    return b


def _no_empty_reduction(kb: KernelBuilder, count: Any) -> None:
    """max/min/argmax/argmin have no value over an empty dim. The C backend checks at run time; the CUDA
    kernels would read the first element, so a graph whose reduced size can be 0 for dims in range is
    refused at compile time instead."""
    kb.require(not may_be_empty(kb, count), "a reduced dim that can be empty (a dynamic dim whose range starts at 0)")


@lowers("reduce")
def _reduce(kb: KernelBuilder, n: Node) -> None:
    x, out = n.inputs[0], n.out
    lay = reduce_layout(n)
    dt = x.type.dtype
    kb.ctype(dt)
    kb.require(dt.name != "bool" or n.op in ("sum", "prod"), "bool")
    src, dst = kb.input(x), kb.output(out)
    outer = kb.loops(lay.kept_shape, [lay.kept_strides, contiguous_strides(lay.kept_shape)], parallel=False)
    if n.op in ("amax", "amin"):
        _no_empty_reduction(kb, lay.count)
    inner = kb.loops(lay.red_shape, [lay.red_strides], parallel=False)
    acc = kb.ctype(dt) if dt.is_floating_point else ("int64_t" if n.op in ("sum", "prod") else kb.ctype(dt))
    count = lay.count
    kb.emit("reduce.cu.j2", op=n.op, src=src, dst=dst, outer=outer, inner=inner, acc=acc, ctype=kb.ctype(dt),
            out_ctype=kb.ctype(out.type.dtype), count=kb.dim(count), correction=n.attrs.get("correction", 0),
            floating=dt.is_floating_point, block=_row_block(count, kb))


@lowers("argreduce")
def _argreduce(kb: KernelBuilder, n: Node) -> None:
    x, out = n.inputs[0], n.out
    d = n.attrs["dim"]
    kb.require(x.type.dtype.name != "bool", "bool")
    outer, size, inner = axis_split(x.type.shape, d, d + 1)
    _no_empty_reduction(kb, size)
    kb.emit("argreduce.cu.j2", is_min=int(n.op == "argmin"), rows=kb.dim(outer * inner), n=kb.dim(size),
            inner=kb.dim(inner), src=kb.input(x), dst=kb.output(out), ctype=kb.ctype(x.type.dtype),
            floating=x.type.dtype.is_floating_point, block=_row_block(size, kb))


@lowers("softmax")
def _softmax(kb: KernelBuilder, n: Node) -> None:
    x = n.inputs[0]
    kb.require(x.type.dtype is float32, "float32 only")
    d = n.attrs["dim"]
    outer, size, inner = axis_split(x.type.shape, d, d + 1)
    kb.emit("softmax.cu.j2", src=kb.input(x), dst=kb.output(n.out), rows=kb.dim(outer * inner), n=kb.dim(size),
            inner=kb.dim(inner), log=int(n.op == "log_softmax"), block=_row_block(size, kb))


@lowers("scan")
def _scan(kb: KernelBuilder, n: Node) -> None:
    f = scan_fields(kb, n)
    f.pop("split")
    kb.emit("scan.cu.j2", **f)


@lowers("custom")
def _custom(kb: KernelBuilder, n: Node) -> None:
    from ..library import call_fields

    kb.emit("custom.cu.j2", **call_fields(kb, n, cuda=True))


@lowers("sort")
def _sort(kb: KernelBuilder, n: Node) -> None:
    f = sort_fields(kb, n)
    f.pop("row_count")
    kb.emit("sort.cu.j2", **f)


# ------------------------------------------------------------------------------------- indexing
@lowers("index_select")
def _index_select(kb: KernelBuilder, n: Node) -> None:
    x, index = n.inputs
    d = n.attrs["dim"]
    kb.require(index.type.dtype in (int64, int32), "indices must be int64 or int32")
    outer, size, inner = axis_split(x.type.shape, d, d + 1)
    nidx = index.type.shape[0]
    kb.fails("an index is out of range for the selected dim")
    kb.emit("index.cu.j2", kind="index_select", src=kb.input(x), idx=kb.input(index), dst=kb.output(n.out),
            size=kb.dim(size), inner=kb.dim(inner), nidx=kb.dim(nidx), total=kb.dim(outer * nidx * inner),
            ctype=kb.ctype(x.type.dtype), negative=True)


@lowers("gather")
def _gather(kb: KernelBuilder, n: Node) -> None:
    x, index = n.inputs
    d = n.attrs["dim"]
    kb.require(index.type.dtype in (int64, int32), "indices must be int64 or int32")
    xst, xs = gather_strides(n)
    ish = index.type.shape
    kb.fails("an index is out of range for the gathered dim")
    nest = kb.loops(ish, [xs, contiguous_strides(ish)], parallel=False)
    kb.emit("index.cu.j2", kind="gather", src=kb.input(x), idx=kb.input(index), dst=kb.output(n.out),
            size=kb.dim(x.type.shape[d]), stride=kb.dim(xst[d]), nest=nest, ctype=kb.ctype(x.type.dtype),
            negative=True)


@lowers("embedding")
def _embedding(kb: KernelBuilder, n: Node) -> None:
    idx, w = n.inputs[:2]
    V, D = w.type.shape
    kb.require(idx.type.dtype in (int64, int32), "indices must be int64 or int32")
    count = prod(idx.type.shape)
    kb.fails(f"an index is out of range 0..{V - 1}")
    kb.emit("index.cu.j2", kind="index_select", src=kb.input(w), idx=kb.input(idx), dst=kb.output(n.out),
            size=kb.dim(V), inner=kb.dim(D), nidx=kb.dim(count), total=kb.dim(count * D),
            ctype=kb.ctype(w.type.dtype), negative=False)


# ------------------------------------------------------------------------------------- convolution, pools
@lowers("conv")
def _conv(kb: KernelBuilder, n: Node) -> None:
    require_float32(kb, n)
    x, w, bias = (list(n.inputs) + [None])[:3]
    p = conv_params(kb, n)
    xs, ys, ws = list(x.type.shape), list(n.out.type.shape), list(w.type.shape)
    N, C, OC, G = xs[0], xs[1], ys[1], int(n.attrs.get("groups", 1))
    taps = prod(ws[2:])
    positions = prod(ys[2:])
    Cg, OCg = C // G, OC // G
    K = Cg * taps
    pointwise = conv_is_pointwise(n)
    px, pw, pb, py = kb.input(x), kb.input(w), kb.input(bias), kb.output(n.out)
    per_image = C * taps * positions
    chunk, col = 1, px
    if not pointwise:
        one = max(1, _max(kb, per_image))
        chunk = max(1, min(_max(kb, N), IM2COL_FLOATS // one))
        col = kb.scratch(chunk * one * 4, float32)
    # per (image in the chunk, group): y[n, g*OCg:(g+1)*OCg, :] = w[g] @ col[n, g] + bias
    cst = [C * positions, Cg * positions] if pointwise else [C * taps * positions, K * positions]
    # batch dims (images, groups); the chunked path sets the image count of each pass at run time
    g = _gemm(kb, pw, col, py, pb, m=OCg, n=positions, k=K, sa=(K, 1), sb=(positions, 1), scm=positions,
              sbias=(1, 0), batch=[N, G], merge=False,
              strides=[[0, OCg * K], cst, [OC * positions, OCg * positions], [0, OCg]])
    kb.emit("conv.cu.j2", kind="conv", p=p, x=px, w=pw, bias=pb, y=py, col=col, g=g, pointwise=pointwise,
            chunk=str(chunk), image_x=kb.dim(C * prod(xs[2:])), image_y=kb.dim(OC * positions),
            image_col=kb.dim(per_image))


@lowers_op("conv_transpose")  # one thread per output element, not the GEMM of conv
def _conv_transpose(kb: KernelBuilder, n: Node) -> None:
    require_float32(kb, n)
    x, w, bias = (list(n.inputs) + [None])[:3]
    p = conv_params(kb, n)
    kb.emit("conv.cu.j2", kind="transpose", p=p, x=kb.input(x), w=kb.input(w), bias=kb.input(bias),
            y=kb.output(n.out), total=kb.numel(n.out.type.shape))


@lowers("pool")
def _pool(kb: KernelBuilder, n: Node) -> None:
    require_float32(kb, n)
    p = pool_params(kb, n)
    kb.emit("pool.cu.j2", kind=n.op, p=p, x=kb.input(n.inputs[0]), y=kb.output(n.out),
            total=kb.numel(n.out.type.shape))


@lowers("adaptive_pool")
def _adaptive_pool(kb: KernelBuilder, n: Node) -> None:
    require_float32(kb, n)
    a = adaptive_pool_params(kb, n)
    kb.emit("pool.cu.j2", kind="adaptive", p={k: a[k] for k in ("h", "w", "oh", "ow")}, x=kb.input(n.inputs[0]),
            y=kb.output(n.out), total=kb.numel(n.out.type.shape))


# ------------------------------------------------------------------------------------- norms, attention
@lowers("norm")
def _norm(kb: KernelBuilder, n: Node) -> None:
    require_float32(kb, n)
    s = norm_shape(n)
    f: dict[str, Any] = {"kind": n.op, "eps": kb.literal(n.attrs["eps"], float32), "x": kb.input(s.x)}
    if s.kind == "batch_norm":
        f.update(mean=kb.input(s.mean), var=kb.input(s.var), w=kb.input(s.weight), b=kb.input(s.bias),
                 c=kb.dim(s.size), inner=kb.dim(s.inner), total=kb.numel(s.x.type.shape))
    elif s.kind == "group_norm":
        c = s.size
        kb.require(is_static(c), "a dynamic channel count")
        groups = int(n.attrs["num_groups"])
        f.update(w=kb.input(s.weight), b=kb.input(s.bias), rows=kb.dim(s.outer * groups), groups=str(groups),
                 size=kb.dim(c // groups * s.inner), inner=kb.dim(s.inner), per_group=kb.dim(c // groups),
                 block=_row_block(c // groups * s.inner, kb))
    else:
        f.update(w=kb.input(s.weight), b=kb.input(s.bias) if s.bias is not None else "NULL", rows=kb.dim(s.outer),
                 size=kb.dim(s.size), block=_row_block(s.size, kb))
    f["y"] = kb.output(n.out)
    kb.emit("norm.cu.j2", **f)


@lowers("sdpa")
def _sdpa(kb: KernelBuilder, n: Node) -> None:
    require_float32(kb, n)
    f = sdpa_fields(kb, n)
    dv = n.inputs[2].type.shape[-1]
    # each thread owns output columns tid, tid + BLOCK, ...: that many accumulators in registers
    f["cols"] = max(1, -(-_max(kb, dv) // BLOCK))
    kb.require(f["cols"] <= 16, f"value head size above {16 * BLOCK}")
    kb.emit("sdpa.cu.j2", **f)


# ------------------------------------------------------------------------------------- toolchain
def nvcc() -> list[str]:
    """The CUDA compiler: ``$NVCC`` (split like a shell would) or ``nvcc``."""
    return shlex.split(os.environ.get("NVCC", "") or "nvcc")


NVCC_HINT = "install the CUDA toolkit or set NVCC; emit_only=True / --emit-c writes the sources without it"


def nvcc_flags(arch: str, opt_level: int = 2) -> list[str]:
    """Flags of the CUDA units: host code at -O0 for opt_level 0, else -O3 (device code is always
    optimised by ptxas); ``$GRAPHC_NVCCFLAGS`` is appended."""
    flags = ["-O0" if opt_level == 0 else "-O3", "-std=c++17", f"-arch={arch}", "-Xcompiler",
             "-fPIC,-fvisibility=hidden,-fno-math-errno"]
    return flags + shlex.split(os.environ.get("GRAPHC_NVCCFLAGS", ""))


def cuda_ldflags() -> list[str]:
    """nvcc links a shared library with the CUDA runtime static (the default) and hides its symbols."""
    return ["-shared", "-Xlinker", "--no-undefined,--exclude-libs,ALL", "-lm"]


@functools.lru_cache(maxsize=1)
def gpu_available() -> bool:
    """True when a CUDA device is visible: ``nvidia-smi -L`` lists one, or the driver reports
    cuDeviceGetCount > 0. Never raises (no driver, no tool: False)."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            res = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
            if res.returncode == 0 and "GPU" in res.stdout:
                return True
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        import ctypes

        drv = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(0)
        return drv.cuInit(0) == 0 and drv.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    except (OSError, AttributeError):
        return False


def nvcc_available() -> bool:
    """True when the CUDA compiler (``$NVCC`` or ``nvcc``) can be found."""
    cmd = nvcc()
    return bool(cmd) and shutil.which(cmd[0]) is not None


@functools.lru_cache(maxsize=4)
def nvcc_archs(nvcc: tuple[str, ...]) -> tuple[str, ...]:
    """The real GPU architectures (sm_XX) the installed nvcc compiles for, oldest first."""
    try:
        res = subprocess.run([*nvcc, "--list-gpu-arch"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    found = {int(m) for m in re.findall(r"compute_(\d+)", res.stdout)}
    return tuple(f"sm_{v}" for v in sorted(found))


DEFAULT_ARCH = "sm_70"


def default_arch() -> str:
    """``$GRAPHC_CUDA_ARCH``, else ``native`` when a GPU is visible, else sm_70 (Volta and newer) or, when the
    installed nvcc no longer knows sm_70 (CUDA 13 starts at sm_75), the oldest architecture it lists.
    nvcc's -arch=sm_XX also embeds PTX, which newer GPUs compile at load time."""
    env = os.environ.get("GRAPHC_CUDA_ARCH")
    if env:
        return check_arch(env)
    if gpu_available():
        return "native"
    archs = nvcc_archs(tuple(nvcc()))
    if not archs or DEFAULT_ARCH in archs:
        return DEFAULT_ARCH
    return archs[0]


def check_arch(arch: str) -> str:
    """arch itself when nvcc's -arch can take it, else a ValueError."""
    if arch == "native" or re.fullmatch(r"(sm|compute)_\d+[af]?", arch) or arch in ("all", "all-major"):
        return arch
    raise ValueError(f"arch must be 'native', 'all', 'all-major' or an architecture like sm_80, got {arch!r}")


# ------------------------------------------------------------------------------------- the backend
@dataclass
class CudaBuildOptions(BuildOptions):
    """The build options of a CUDA library: the neutral ones plus nvcc's -arch and the .cu units' flags
    (checked and filled by :meth:`CudaBackend.build_options`; printed by templates/cuda/Makefile.j2)."""

    arch: str = ""  # the -arch of nvcc
    nvcc_flags: list[str] = field(default_factory=list)  # flags of the .cu units


@register_backend
class CudaBackend(Backend):
    """CUDA C++ for NVIDIA GPUs (nvcc), with the C backend's ABI: see the module docstring."""

    name = "cuda"
    display_name = "CUDA"
    description = ("a CUDA library with the same C API (built with nvcc, runs on an NVIDIA GPU; see "
                   "docs/cuda-backend.md)")
    option_names = frozenset({"arch"})
    context_at_open = False  # a CUDA context needs a GPU: created at the first call, so a library loads without one
    # a library with the CUDA runtime linked in registers exit handlers and driver state: it stays loaded
    # for the process (one per distinct library file; a model dropped and compiled again reuses it)
    unload_on_release = False
    host_arena = False  # NAME_set_arena takes device memory
    template_folder = "cuda"
    template_suffix = ".cu.j2"
    source_suffix = ".cu"
    header_suffix = ".cuh"
    lowerings = CUDA_LOWERINGS
    op_lowerings = CUDA_OP_LOWERINGS
    # a GPU kernel covers the whole loop nest: no loop is a host-parallel region, no kernel takes nthreads
    parallel_min = 1 << 62
    runtime_sources = ("gc_safetensors.c", "gc_status.c")
    # kernels per translation unit, at most (rendered characters): nvcc's fixed cost per unit is about a
    # second, so units are larger than the C backend's
    unit_chars = 240_000
    block = BLOCK

    @staticmethod
    def status_index(program: Program) -> dict[str, int]:
        """The flag slot of each kernel that checks indices, in schedule order."""
        out: dict[str, int] = {}
        for k in program.kernels:
            if k.status:
                out[k.name] = len(out)
        return out

    def render_context(self, program: Program, options: Any) -> dict[str, Any]:
        """The templates' fields, and ``flags``: the flag slot of each kernel that checks indices."""
        return {**super().render_context(program, options), "flags": self.status_index(program)}

    # --------------------------------------------------------------------------------- toolchain
    def build_options(self, *, name: str, weights: str, opt_level: int, target: str, threads: int | None,
                      version: str, arch: str | None = None, **options: Any) -> CudaBuildOptions:
        """nvcc's -arch (``arch``, default :func:`default_arch`), host code without OpenMP."""
        self.check_options(options)
        arch = check_arch(arch) if arch is not None else default_arch()
        return CudaBuildOptions(name=name, weights=weights, opt_level=opt_level, target=target, threads=threads,
                            version=version, cflags=cflags(target, opt_level, openmp=False), ldflags=cuda_ldflags(),
                            backend=self.name, runtime_sources=self._runtime_list(), arch=arch,
                            nvcc_flags=nvcc_flags(arch, opt_level))

    def manifest_options(self, options: Any) -> dict[str, Any]:
        return {"arch": options.arch, "nvcc_flags": options.nvcc_flags}

    def cache_key_parts(self, options: Any) -> list[str]:
        """nvcc, its version, its flags and the link flags."""
        nv = nvcc()
        return ["cuda", " ".join(nv), compiler_version(tuple(nv), "CUDA compiler", NVCC_HINT),
                " ".join(options.nvcc_flags), " ".join(options.ldflags)]

    def compile_command(self, unit: str, cc: list[str], flags: list[str], options: Any) -> tuple[list[str], str]:
        """The .cu units go to nvcc, the others (weights, C) to the C compiler."""
        if unit.endswith(self.source_suffix):
            return [*nvcc(), *options.nvcc_flags, "-I.", "-Iruntime", "-c", unit, "-o", unit + ".o"], "CUDA compiler"
        return super().compile_command(unit, cc, flags, options)

    def link_command(self, lib: str, objs: list[str], cc: list[str], flags: list[str],
                     options: Any) -> tuple[list[str], str]:
        """nvcc links (the CUDA runtime statically)."""
        return [*nvcc(), *options.nvcc_flags, "-o", lib, *objs, *options.ldflags, "-Xlinker", f"-soname,{lib}"], \
            "CUDA compiler"
