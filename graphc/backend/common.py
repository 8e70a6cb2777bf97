"""The lowering rules every backend shares, and the decorator that fills a backend's rule table.

Data movement (slice, permute, expand, concat, pad) and creation (fill, arange) need no analysis beyond
loop nests and strides: their rules live here once and print ``"<template>" + backend.template_suffix``,
so each backend supplies only the templates (``templates/c/strided.c.j2``, ``templates/cuda/strided.cu.j2``,
...). A backend starts its table from :data:`COMMON_LOWERINGS` and adds or replaces families with
``lowers = rule_registrar(MY_LOWERINGS)``; ``@lowers("<family>")`` then registers a rule::

    MY_LOWERINGS: dict[str, LowerFn] = dict(COMMON_LOWERINGS)
    lowers = rule_registrar(MY_LOWERINGS)

The per-family analysis the other rules print (matmul shapes, axis splits, conv/pool parameters, norms,
attention) is in :mod:`graphc.backend.analysis`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._dtype import float64, int64
from ..ir.graph import Node
from ..sym import Dim, is_static, prod
from .lowering import KernelBuilder, LowerFn, broadcast_strides, contiguous_strides

COMMON_LOWERINGS: dict[str, LowerFn] = {}


def rule_registrar(table: dict[str, LowerFn]) -> Callable[..., Callable[[LowerFn], LowerFn]]:
    """A decorator factory registering lowering rules into `table` under the given keys (op families,
    or op names for a backend's ``op_lowerings``)."""

    def lowers(*keys: str) -> Callable[[LowerFn], LowerFn]:
        def deco(fn: LowerFn) -> LowerFn:
            for key in keys:
                table[key] = fn
            return fn

        return deco

    return lowers


_lowers = rule_registrar(COMMON_LOWERINGS)


# ------------------------------------------------------------------------------------- data movement
def _strided_copy(kb: KernelBuilder, n: Node, strides: list[Dim], base: Dim, what: str) -> None:
    x, out = n.inputs[0], n.out
    shape = out.type.shape
    src = kb.input(x)
    dst = kb.output(out)
    nest = kb.loops(shape, [strides, contiguous_strides(shape)])
    kb.emit("strided" + kb.backend.template_suffix, nest=nest, src=src, dst=dst, base=kb.dim(base), what=what,
            ctype=kb.ctype(out.type.dtype))


@_lowers("slice")
def _slice(kb: KernelBuilder, n: Node) -> None:
    x = n.inputs[0]
    d, start, step = n.attrs["dim"], n.attrs["start"], n.attrs["step"]
    st = contiguous_strides(x.type.shape)
    strides = list(st)
    strides[d] = st[d] * step
    _strided_copy(kb, n, strides, st[d] * start, f"slice dim {d}: start {start}, step {step}")


@_lowers("permute")
def _permute(kb: KernelBuilder, n: Node) -> None:
    st = contiguous_strides(n.inputs[0].type.shape)
    dims = n.attrs["dims"]
    _strided_copy(kb, n, [st[p] for p in dims], 0, f"permute {list(dims)}")


@_lowers("expand")
def _expand(kb: KernelBuilder, n: Node) -> None:
    _strided_copy(kb, n, broadcast_strides(n.inputs[0].type.shape, n.out.type.shape), 0, "broadcast")


@_lowers("concat")
def _concat(kb: KernelBuilder, n: Node) -> None:
    d = n.attrs["dim"]
    out = n.out
    ost = contiguous_strides(out.type.shape)
    dst = kb.output(out)
    parts: list[dict[str, Any]] = []
    offset: Dim = 0
    for x in n.inputs:
        src = kb.input(x)
        shape = x.type.shape
        nest = kb.loops(shape, [contiguous_strides(shape), ost])
        parts.append({"src": src, "nest": nest, "base": kb.dim(offset * ost[d]), "what": f"{x.ref} {x.type}"})
        offset = offset + shape[d]
    kb.emit("concat" + kb.backend.template_suffix, parts=parts, dst=dst)


@_lowers("pad")
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
@_lowers("fill")
def _fill(kb: KernelBuilder, n: Node) -> None:
    out = n.out
    dt = out.type.dtype
    nest = kb.loops([prod(out.type.shape)], [[1]])
    kb.emit("fill" + kb.backend.template_suffix, kind="fill", nest=nest, dst=kb.output(out),
            value=kb.literal(n.attrs["value"], dt), ctype=kb.ctype(dt))


@_lowers("arange")
def _arange(kb: KernelBuilder, n: Node) -> None:
    out = n.out
    dt = out.type.dtype
    start, step = n.attrs["start"], n.attrs["step"]
    floating = isinstance(start, float) or isinstance(step, float)
    calc = float64 if floating else int64
    nest = kb.loops([out.type.shape[0]], [[1]])
    kb.emit("fill" + kb.backend.template_suffix, kind="arange", nest=nest, dst=kb.output(out), ctype=kb.ctype(dt),
            start=kb.literal(start, calc), step=kb.literal(step, calc), calc=kb.ctype(calc))
