"""Layouts folded into attention: the permutes and slices around ``sdpa`` that need no kernel.

Multi-head attention is usually written ``qkv(x).reshape(B, T, 3, H, D).permute(2, 0, 3, 1, 4)``, then
``q, k, v = qkv[0], qkv[1], qkv[2]`` and ``sdpa(q, k, v).transpose(1, 2).reshape(B, T, H * D)``: one
permute copy, three slice copies and one more permute copy per layer, moving more bytes than the
attention reads. A backend whose sdpa kernel takes (batch, head, row) strides (``Backend.sdpa_strides``)
lets :func:`fold_sdpa_layouts` describe each q/k/v operand as a strided view of the value it was cut
from (through permutes, slices and reshapes that strides can express) and the output as a strided view
of the one permute that consumes it; those permute and slice nodes then get no kernel. A node is folded
only when every use of its value (through views) is such an operand, so nothing else ever reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..ir.graph import Graph, Node, Value
from ..sym import Dim, is_static

FOLDABLE = ("permute", "slice")


@dataclass
class StridedView:
    """Element (i0, i1, ...) of a value is ``root[offset + sum(i_k * strides[k])]``."""

    root: Value
    offset: Dim
    strides: list[Dim]


@dataclass
class SdpaLayouts:
    folded: set[Node] = field(default_factory=set)  # nodes that get no kernel
    inputs: dict[tuple[Node, int], StridedView] = field(default_factory=dict)  # (sdpa, operand index)
    outputs: dict[Node, StridedView] = field(default_factory=dict)  # sdpa -> where its output goes


def contiguous(shape: Sequence[Dim]) -> list[Dim]:
    out: list[Dim] = []
    acc: Dim = 1
    for d in reversed(shape):
        out.append(acc)
        acc = acc * d
    return out[::-1]


def _one(d: Dim) -> bool:
    return is_static(d) and d == 1


def reshape_strides(old: Sequence[Dim], strides: Sequence[Dim], new: Sequence[Dim]) -> list[Dim] | None:
    """Strides of the reshape of a strided tensor to `new`, or None when no strides express it: each group
    of dims either stays, splits one dim or merges dims that are contiguous with each other."""
    src = [(d, s) for d, s in zip(old, strides) if not _one(d)]
    dst = [i for i, d in enumerate(new) if not _one(d)]
    out: list[Dim] = [0] * len(new)
    i = j = 0
    while i < len(src) and j < len(dst):
        if src[i][0] == new[dst[j]]:
            out[dst[j]] = src[i][1]
            i, j = i + 1, j + 1
            continue
        # merge: old dims i..i2 make one new dim
        acc, i2 = src[i][0], i + 1
        while i2 < len(src) and not acc == new[dst[j]] and i2 - i < 8:
            acc, i2 = acc * src[i2][0], i2 + 1
        if acc == new[dst[j]]:
            if any(src[a][1] != src[a + 1][1] * src[a + 1][0] for a in range(i, i2 - 1)):
                return None
            out[dst[j]] = src[i2 - 1][1]
            i, j = i2, j + 1
            continue
        # split: new dims j..j2 make one old dim
        acc, j2 = new[dst[j]], j + 1
        while j2 < len(dst) and not acc == src[i][0] and j2 - j < 8:
            acc, j2 = acc * new[dst[j2]], j2 + 1
        if not acc == src[i][0]:
            return None
        st = src[i][1]
        for b in reversed(range(j, j2)):
            out[dst[b]] = st
            st = st * new[dst[b]]
        i, j = i + 1, j2
    if i < len(src) or j < len(dst):
        return None
    return out


def _walk(v: Value, cands: set[Node], skip: set[Node], seen: set[Node]) -> StridedView:
    """v as a strided view of the first value up its producers that is not a candidate (or a view of
    one); the candidates traversed go into `seen`."""
    n = v.node
    if n is None or n in skip or not n.inputs or n.inputs[0] is None:
        return StridedView(v, 0, contiguous(v.type.shape))
    if n.opdef.family == "view":
        trail: set[Node] = set()
        inner = _walk(n.inputs[0], cands, skip, trail)
        st = reshape_strides(n.inputs[0].type.shape, inner.strides, v.type.shape) if trail else None
        if st is None:
            return StridedView(v, 0, contiguous(v.type.shape))
        seen |= trail
        return StridedView(inner.root, inner.offset, st)
    if n in cands:
        inner = _walk(n.inputs[0], cands, skip, seen)
        seen.add(n)
        st = list(inner.strides)
        if n.op == "permute":
            return StridedView(inner.root, inner.offset, [st[p] for p in n.attrs["dims"]])
        d = n.attrs["dim"]
        off = inner.offset + n.attrs["start"] * st[d]
        st[d] = st[d] * n.attrs["step"]
        return StridedView(inner.root, off, st)
    return StridedView(v, 0, contiguous(v.type.shape))


def head_strides(lead: Sequence[Dim], strides: Sequence[Dim]) -> list[Dim] | None:
    """(batch, head, row) element strides of an sdpa operand [*lead, T, D] with the given strides, the
    lead dims seen as [b, h] like :func:`graphc.backend.analysis.sdpa_fields` does (b = 1 and h = all of
    them unless there are two); None when the lead dims do not merge into one stride."""
    if len(lead) == 2:
        return [strides[0], strides[1], strides[2]]
    kept = [(n, s) for n, s in zip(lead, strides) if not _one(n)]
    for (_, s_out), (n_in, s_in) in zip(kept, kept[1:]):  # the merged head index steps by the last stride
        if s_out != s_in * n_in:
            return None
    return [0, kept[-1][1] if kept else 0, strides[len(lead)]]


def fold_sdpa_layouts(g: Graph, skip: set[Node]) -> SdpaLayouts:
    """The layouts to fold (see the module docstring). `skip`: nodes that are no buffers (inlined
    constants)."""
    outs = {v for _, v in g.outputs}
    uses: dict[Value, list[tuple[Node, int]]] = {}
    for n in g.nodes:
        for i, v in enumerate(n.inputs):
            if v is not None:
                uses.setdefault(v, []).append((n, i))
    sdpas = [n for n in g.nodes if n.op == "sdpa"]
    res = SdpaLayouts()
    if not sdpas:
        return res
    cands = {n for n in g.nodes if n.op in FOLDABLE and n.out not in outs and n not in skip}

    def terminal_uses(v: Value) -> list[tuple[Node, int]] | None:
        """Uses of v through views; None when a view of it is a graph output."""
        found: list[tuple[Node, int]] = []
        for u, i in uses.get(v, []):
            if u.opdef.family == "view":
                if u.out in outs:
                    return None
                more = terminal_uses(u.out)
                if more is None:
                    return None
                found += more
            else:
                found.append((u, i))
        return found

    while True:
        walks: dict[tuple[Node, int], tuple[StridedView, set[Node]]] = {}
        for s in sdpas:
            lead = len(s.inputs[0].type.shape) - 2
            for i in range(3):
                seen: set[Node] = set()
                view = _walk(s.inputs[i], cands, skip, seen)
                if seen and view.strides[-1] == 1 and head_strides([*s.inputs[i].type.shape[:lead]],
                                                                     view.strides) is not None:
                    walks[(s, i)] = (view, seen)
        # x folds when every use is an operand whose walk passes x, or a candidate that such a walk passes
        # on its way to x (a reshape strides cannot express stops a walk: what is below it stays)
        seens = [seen for _, seen in walks.values()]
        drop = set()
        for x in cands:
            tu = terminal_uses(x.out)
            if not tu or not all(x in walks[(u, i)][1] if (u, i) in walks else
                                 u in cands and any(u in seen and x in seen for seen in seens) for u, i in tu):
                drop.add(x)
        if not drop:
            break
        cands -= drop
    res.folded = set(cands)
    res.inputs = {key: view for key, (view, _) in walks.items()}
    # the output: the one permute that reads it (keeping the last dim last) is written through strides
    for s in sdpas:
        tu = uses.get(s.out, [])
        if s.out in outs or len(tu) != 1:
            continue
        p = tu[0][0]
        dims = list(p.attrs.get("dims", ())) if p.op == "permute" else []
        if not dims or dims[-1] != len(dims) - 1 or p in skip or p in res.folded:
            continue
        cs = contiguous(p.out.type.shape)
        st: list[Dim] = [0] * len(dims)
        for k, a in enumerate(dims):
            st[a] = cs[k]
        lead = len(s.out.type.shape) - 2
        if head_strides([*s.out.type.shape[:lead]], st) is None:
            continue
        res.outputs[s] = StridedView(p.out, 0, st)
        res.folded.add(p)
    return res

