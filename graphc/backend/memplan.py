"""The memory plan: one arena for every intermediate value and scratch buffer of a run.

Input: the schedule as a list of :class:`Step` (what each kernel reads and writes, and the scratch it
needs), plus which values are *views* (they share their base value's bytes). Output: a byte offset for
every block, and the arena size, both as polynomials in the dynamic dims (:data:`graphc.sym.Dim`).

* A block is live from the step that writes it to the last step that reads it or any view of it.
* Blocks whose lifetimes overlap never overlap in memory, for *every* value of the dims in range:
  block A may sit above block B only when ``off(A) - end(B)`` has no negative coefficient (dims are
  never negative, so that difference is never negative). The coefficient-wise maximum of a set of
  polynomials is above all of them, so a valid place always exists.
* Greedy best-fit: blocks are placed biggest first (size at the dims' maxima), each at the lowest
  candidate offset (0 or the end of a placed block, also compared at the maxima) that conflicts with no
  placed block it is live with.
* In place: a step may name inputs it can overwrite (elementwise, same shape and dtype); when such an
  input's block dies at that step, the output takes over the block instead of getting a new one.
* Every size is rounded up to 64 bytes coefficient by coefficient (a polynomial that is a multiple of
  64 for every integer dim and at least the real size), so every offset is 64-byte aligned.
* Runtime kernels' scratch whose size only a run knows (``*_work_floats``: dims and thread count) is no
  block: :func:`free_at` lists each step's free bytes (the gaps between its live blocks, then the top)
  and the run puts that scratch in the first gap that holds it (model.c.j2's work_bytes), so the arena
  is the values' plan unless some scratch outgrows every gap of its step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..sym import Dim, Monomial, Sym, evaluate, simplify

ALIGN = 64


# ------------------------------------------------------------------------------------ polynomials
def coeffs(d: Dim) -> dict[Monomial, int]:
    if isinstance(d, Sym):
        return d.coeffs()
    return {(): int(d)} if d else {}


def from_coeffs(c: Mapping[Monomial, int]) -> Dim:
    return simplify(Sym(dict(c)))


def round_up(d: Dim, align: int = ALIGN) -> Dim:
    """The smallest coefficient-wise round-up of d to multiples of align (an upper bound for dims >= 0)."""
    return from_coeffs({m: -((-c) // align) * align for m, c in coeffs(d).items()})


def nonneg(d: Dim) -> bool:
    """True when d >= 0 for every non-negative value of its symbols (all coefficients >= 0)."""
    return all(c >= 0 for c in coeffs(d).values())


def poly_max(ds: Sequence[Dim]) -> Dim:
    """The coefficient-wise maximum: >= every d for all non-negative dims."""
    out: dict[Monomial, int] = {}
    for d in ds:
        for m, c in coeffs(d).items():
            out[m] = max(out.get(m, 0), c)
    return from_coeffs(out)


def positive_part(d: Dim) -> Dim:
    """d without its negative terms: >= d, and non-decreasing in every dim."""
    return from_coeffs({m: c for m, c in coeffs(d).items() if c > 0})


# ------------------------------------------------------------------------------------ schedule
@dataclass
class Step:
    """One kernel call of the schedule."""

    label: str  # the node it comes from (the root's value name for a fused group)
    reads: list[Any]  # Values read (views allowed)
    writes: list[Any]  # Values written (the step defines them)
    scratch: list[tuple[str, Dim]] = field(default_factory=list)  # (key, bytes) live only in this step
    inplace: list[Any] = field(default_factory=list)  # reads the (single) written value may overwrite


@dataclass
class Block:
    """One region of the arena."""

    key: Any  # the base Value, or the scratch key
    name: str  # value name (or scratch key) for display
    label: str  # node that defines it
    size: Dim  # bytes, rounded up to ALIGN
    first: int  # step index of the definition
    last: int  # step index of the last use
    offset: Dim = 0
    members: list[str] = field(default_factory=list)  # value names stored here (in-place chain)

    @property
    def end(self) -> Dim:
        return self.offset + self.size


@dataclass
class MemoryPlan:
    blocks: list[Block]
    arena: Dim  # bytes needed for given dims (a polynomial)
    location: dict[Any, Block]  # base Value or scratch key -> its block

    @property
    def capacity(self) -> Dim:
        """An upper bound of ``arena`` that is non-decreasing in every dim (allocate it at the maxima)."""
        return positive_part(self.arena)

    def table(self) -> list[dict[str, Any]]:
        """The plan as plain data: value, node, offset, size, first and last use (for tools and manifests)."""
        return [{"value": b.name, "node": b.label, "offset": str(b.offset), "size": str(b.size),
                 "first": b.first, "last": b.last, "values": list(b.members)} for b in self.blocks]


def plan_memory(steps: Sequence[Step], arena_values: Sequence[Any], base: Mapping[Any, Any],
                nbytes: Mapping[Any, Dim], names: Mapping[Any, str], maxima: Mapping[str, int],
                *, inplace: bool = True) -> MemoryPlan:
    """Plan the arena.

    ``arena_values``: the base values stored in the arena, in definition order; ``base`` maps every
    value (views included) to its base value; ``nbytes`` gives each base value's size; ``maxima`` the
    dims' upper bounds (used to order blocks and pick offsets, never to decide validity).
    """
    in_arena = set(arena_values)
    first: dict[Any, int] = {}
    last: dict[Any, int] = {}
    label: dict[Any, str] = {}
    for i, st in enumerate(steps):
        for v in st.writes:
            b = base.get(v, v)
            if b in in_arena:
                first.setdefault(b, i)
                last[b] = max(last.get(b, i), i)
                label.setdefault(b, st.label)
        for v in st.reads:
            b = base.get(v, v)
            if b in in_arena:
                last[b] = max(last.get(b, i), i)

    def at_max(d: Dim) -> int:
        return evaluate(d, maxima)

    # 1. blocks, with in-place sharing along the schedule
    blocks: list[Block] = []
    block_of: dict[Any, Block] = {}
    for i, st in enumerate(steps):
        for v in st.writes:
            b = base.get(v, v)
            if b not in in_arena or b in block_of or first.get(b) != i:
                continue
            size = round_up(nbytes[b])
            chosen = None
            if inplace:
                for r in st.inplace:
                    rb = base.get(r, r)
                    blk = block_of.get(rb)
                    if blk is not None and blk.last == i and last.get(rb) == i and blk.size == size:
                        chosen = blk
                        break
            if chosen is not None:
                chosen.last = max(chosen.last, last[b])
                chosen.members.append(names[b])
                block_of[b] = chosen
                continue
            blk = Block(b, names[b], label[b], size, i, last[b], members=[names[b]])
            blocks.append(blk)
            block_of[b] = blk
        for key, size in st.scratch:
            blk = Block(key, key, st.label, round_up(size), i, i, members=[key])
            blocks.append(blk)
            block_of[key] = blk

    # 2. offsets: biggest first, lowest valid candidate
    order = sorted(range(len(blocks)), key=lambda k: (-at_max(blocks[k].size), blocks[k].first, k))
    placed: list[Block] = []
    for k in order:
        blk = blocks[k]
        live = [p for p in placed if p.first <= blk.last and blk.first <= p.last]
        cands: list[Dim] = [0] + [p.end for p in live] + [poly_max([p.end for p in live])]
        best = None
        for c in cands:
            if not nonneg(c):
                continue
            ok = all(nonneg(c - p.end) or nonneg(p.offset - (c + blk.size)) for p in live)
            if ok:
                key = (at_max(c + blk.size), at_max(c), str(c))
                if best is None or key < best[0]:
                    best = (key, c)
        assert best is not None  # the coefficient-wise maximum is always valid
        blk.offset = best[1]
        placed.append(blk)
    arena = poly_max([b.end for b in blocks]) if blocks else 0
    return MemoryPlan(blocks, arena, block_of)



def top_at(plan: MemoryPlan, step: int) -> Dim:
    """The end of the highest block live at a step (0 when none is): bytes from there up hold no value
    that step reads or writes."""
    ends = [b.end for b in plan.blocks if b.first <= step <= b.last]
    return poly_max(ends) if ends else 0


def free_at(plan: MemoryPlan, step: int, maxima: Mapping[str, int]) -> tuple[list[tuple[Dim, Dim]], Dim]:
    """The arena's free bytes at a step, for a kernel's scratch whose size only the run knows (its
    *_work_floats: dims and thread count): the gaps between the blocks live at that step, as (offset,
    bytes) with bytes >= 0 for every value of the dims, lowest first, and the top (top_at), above which
    everything is free. A run puts the scratch in the first gap that holds it, else at the top."""
    live = sorted((b for b in plan.blocks if b.first <= step <= b.last),
                  key=lambda b: (evaluate(b.offset, maxima), evaluate(b.end, maxima)))
    gaps: list[tuple[Dim, Dim]] = []
    below: list[Dim] = []  # ends of the blocks under the next one
    for b in live:
        start = poly_max(below) if below else 0
        room = b.offset - start
        if nonneg(room) and evaluate(room, maxima) >= ALIGN:
            gaps.append((start, room))
        below.append(b.end)
    return gaps, (poly_max(below) if below else 0)
