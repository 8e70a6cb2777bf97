"""A compile-only third backend, "null": the proof that a backend is one module plus one templates folder.

Like tinygrad's NULL device it runs nothing: it lowers every op family through graphc's shared lowering
(fusion groups, the data-movement and creation rules of ``graphc/backend/common.py``, the memory plan)
and the per-family analysis of ``graphc/backend/analysis.py``, and prints a listing (``NAME_model.lst``,
``NAME_kernels0.lst``, ...) from ``tests/null_backend/templates/`` instead of code a compiler builds.
``tests/test_backend_null.py`` registers it and compiles with ``backend="null", emit_only=True``.
Nothing outside this module and that folder knows it exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graphc.backend.analysis import (
    adaptive_pool_params,
    axis_split,
    bilinear_shape,
    conv_params,
    gather_strides,
    linear_shape,
    matmul_shape,
    norm_shape,
    pool_params,
    reduce_layout,
    scan_fields,
    sdpa_fields,
)
from graphc.backend.base import Backend
from graphc.backend.common import COMMON_LOWERINGS, rule_registrar
from graphc.backend.lowering import KernelBuilder, LowerFn
from graphc.ir.graph import Node

TEMPLATES = Path(__file__).resolve().parent / "templates"

LOWERINGS: dict[str, LowerFn] = dict(COMMON_LOWERINGS)
lowers = rule_registrar(LOWERINGS)


def _listing(kb: KernelBuilder, node: Node, operands: bool = True, **fields: Any) -> None:
    """One listing entry: the node's operands and result (unless the analysis asked for them) and the
    analysis' fields, by name."""
    if operands:
        for v in node.inputs:
            kb.input(v)
        kb.output(node.out)
    kb.emit("op.lst.j2", op=node.op, family=node.opdef.family, fields=sorted(fields.items()))


@lowers("matmul")
def _matmul(kb: KernelBuilder, n: Node) -> None:
    s = matmul_shape(n)
    _listing(kb, n, m=kb.dim(s.m), n=kb.dim(s.n), k=kb.dim(s.k), batch=[kb.dim(b) for b in s.batch])


@lowers("linear")
def _linear(kb: KernelBuilder, n: Node) -> None:
    M, N, K = linear_shape(n)
    _listing(kb, n, m=kb.dim(M), n=kb.dim(N), k=kb.dim(K))


@lowers("bilinear")
def _bilinear(kb: KernelBuilder, n: Node) -> None:
    _listing(kb, n, sizes=[kb.dim(d) for d in bilinear_shape(n)])


@lowers("reduce")
def _reduce(kb: KernelBuilder, n: Node) -> None:
    lay = reduce_layout(n)
    _listing(kb, n, kept=[kb.dim(d) for d in lay.kept_shape], reduced=[kb.dim(d) for d in lay.red_shape],
             count=kb.dim(lay.count))


@lowers("argreduce", "softmax", "index_select")
def _around_dim(kb: KernelBuilder, n: Node) -> None:
    d = n.attrs["dim"]
    _listing(kb, n, split=[kb.dim(e) for e in axis_split(n.inputs[0].type.shape, d, d + 1)])


@lowers("gather")
def _gather(kb: KernelBuilder, n: Node) -> None:
    _, xs = gather_strides(n)
    _listing(kb, n, strides=[kb.dim(s) for s in xs])


@lowers("scan")
def _scan(kb: KernelBuilder, n: Node) -> None:
    f = scan_fields(kb, n)
    f.pop("split")
    _listing(kb, n, operands=False, **f)


@lowers("conv")
def _conv(kb: KernelBuilder, n: Node) -> None:
    _listing(kb, n, **conv_params(kb, n))


@lowers("pool")
def _pool(kb: KernelBuilder, n: Node) -> None:
    _listing(kb, n, **pool_params(kb, n))


@lowers("adaptive_pool")
def _adaptive_pool(kb: KernelBuilder, n: Node) -> None:
    _listing(kb, n, **adaptive_pool_params(kb, n))


@lowers("norm")
def _norm(kb: KernelBuilder, n: Node) -> None:
    s = norm_shape(n)
    _listing(kb, n, rows=kb.dim(s.outer), size=kb.dim(s.size), inner=kb.dim(s.inner))


@lowers("sdpa")
def _sdpa(kb: KernelBuilder, n: Node) -> None:
    _listing(kb, n, operands=False, **sdpa_fields(kb, n))


def _any_family(kb: KernelBuilder, n: Node) -> None:
    """A family this backend has no analysis for (one added after it): its operands only."""
    _listing(kb, n)


class NullBackend(Backend):
    """Prints a listing of the lowered program; builds nothing (compile with emit_only=True)."""

    name = "null"
    display_name = "null"
    description = "a listing of the lowered program (compile-only, for tests)"
    template_folder = str(TEMPLATES)  # an absolute folder: looked up first, then graphc's templates root
    template_suffix = ".lst.j2"
    source_suffix = ".lst"
    header_suffix = ".lsth"
    lowerings = LOWERINGS
    parallel_min = 1 << 62  # no loop is a parallel region

    def lowering_for(self, op: Any) -> Any:
        return super().lowering_for(op) or _any_family
