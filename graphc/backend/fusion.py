"""Elementwise fusion groups: which elementwise nodes a backend can emit as one loop.

A :class:`FusionGroup` is a tree (or DAG) of nodes whose op lowers as ``elementwise`` and whose
outputs all have the group's shape. Every value computed inside the group except the group's result
(its last node, the *root*) is used only by nodes of the same group and is not a graph output, so a
backend computes it in a register inside the loop and never stores it. Operands coming from outside
(graph inputs, parameters, other kernels' results) may broadcast to the group's shape. ``constant``
nodes used only by elementwise nodes are not kernels at all: the backend prints them as literals
(``constants`` lists the ones a group reads).

The analysis does not change the graph. The group runs where its root is in the node order; that is
valid because every member's operands are defined before the member, hence before the root, and
nothing outside the group reads a member other than the root.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from ..ir.graph import Graph, Node, Value
from ..ops.registry import get_op


@dataclass
class FusionGroup:
    """Nodes (in graph order, root last) computed by one loop over ``shape``."""

    nodes: list[Node]
    inputs: list[Value]  # values read from outside the group, in first-use order (no inlined constants)
    outputs: list[Value]  # values used outside the group: always [root.out]
    constants: list[Node] = field(default_factory=list)  # inlined constant nodes the group reads

    @property
    def root(self) -> Node:
        return self.nodes[-1]

    @property
    def shape(self) -> tuple:
        return self.root.out.type.shape


def is_elementwise(n: Node) -> bool:
    return get_op(n.op).family == "elementwise"


def inlined_constants(g: Graph) -> set[Node]:
    """``constant`` nodes whose every user is an elementwise node and that are not graph outputs."""
    users = g.users()
    outs = {v for _, v in g.outputs}
    found = set()
    for n in g.nodes:
        if n.op == "constant" and n.out not in outs and users[n.out] and all(is_elementwise(u) for u in users[n.out]):
            found.add(n)
    return found


def fusion_groups(g: Graph, *, fuse: bool = True, exclude: Collection[Node] = ()) -> list[FusionGroup]:
    """Partition the elementwise nodes of g into fusion groups, listed in the order of their roots.

    With ``fuse=False`` every elementwise node is its own group (used at opt_level 0). Nodes in
    ``exclude`` (a product's fused epilogue, :func:`gemm_epilogues`) belong to no group.
    """
    users = g.users()
    outs = {v for _, v in g.outputs}
    consts = inlined_constants(g)
    group_of: dict[Node, int] = {}
    members: dict[int, list[Node]] = {}
    # walk backwards: a node joins its users' group when all its users are in one group of its shape
    for n in reversed(g.nodes):
        if not is_elementwise(n) or n in exclude:
            continue
        target = None
        us = users[n.out]
        if fuse and us and n.out not in outs:
            gids = {group_of.get(u) for u in us}
            if len(gids) == 1:
                gid = gids.pop()
                if gid is not None and members[gid][0].out.type.shape == n.out.type.shape:
                    target = gid
        if target is None:
            target = len(members)
            members[target] = []
        group_of[n] = target
        members[target].append(n)
    order = {n: i for i, n in enumerate(g.nodes)}
    groups = []
    for gid in sorted(members, key=lambda k: order[members[k][0]]):
        nodes = sorted(members[gid], key=order.__getitem__)
        inside = {m.out for m in nodes}
        inputs: list[Value] = []
        constants: list[Node] = []
        for m in nodes:
            for v in m.inputs:
                if v is None or v in inside:
                    continue
                if v.node is not None and v.node in consts:
                    if v.node not in constants:
                        constants.append(v.node)
                elif v not in inputs:
                    inputs.append(v)
        groups.append(FusionGroup(nodes, inputs, [nodes[-1].out], constants))
    return groups


# ------------------------------------------------------------------------------------- product epilogues
# activations a product can apply to its output tile: op -> the epilogue's name (gelu by its approximation)
EPILOGUE_ACTS = {"relu": "relu", "sigmoid": "sigmoid", "silu": "silu", "tanh": "tanh", "hardtanh": "clamp",
                 "clamp": "clamp", ("gelu", "none"): "gelu", ("gelu", "tanh"): "gelu_tanh"}


@dataclass
class GemmEpilogue:
    """Elementwise nodes a product node applies to each element v of its output while the tile is in
    cache, as ``v = act(v) * scale + residual`` (each part optional, in this order: the nodes follow the
    product in a chain). Every value of the chain but the last is used only by the next node and is not a
    graph output; the last one is what the product's kernel writes. The kernel runs where the chain ends
    (the residual may be computed after the product)."""

    product: Node
    nodes: list[Node]  # the absorbed chain, in order
    act: str | None = None  # a key of EPILOGUE_ACTS' values
    lo: float = 0.0  # clamp's bounds
    hi: float = 0.0
    scale: float = 1.0
    residual: Value | None = None

    @property
    def out(self) -> Value:
        return self.nodes[-1].out


def _scalar_constant(v: Value, consts: set[Node]) -> float | None:
    """The value of an inlined float32 constant v (a 0-d ``constant`` node), else None."""
    n = v.node
    if n is None or n not in consts or v.type.shape != () or v.type.dtype.name != "float32":
        return None
    value = n.attrs["value"]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _is_residual(r: Value, v: Value, consts: set[Node]) -> bool:
    """r can be added to product result v in its epilogue: float32 of v's shape, with storage."""
    return r.type.shape == v.type.shape and r.type.dtype.name == "float32" and (r.node is None or r.node not in consts)


def _act_of(n: Node) -> tuple[str, float, float] | None:
    key = (n.op, n.attrs["approximate"]) if n.op == "gelu" else n.op
    act = EPILOGUE_ACTS.get(key)
    if act is None:
        return None
    if n.op == "hardtanh":
        return act, float(n.attrs["min_val"]), float(n.attrs["max_val"])
    if n.op == "clamp":
        lo, hi = n.attrs.get("min"), n.attrs.get("max")
        lo = float("-inf") if lo is None else lo
        hi = float("inf") if hi is None else hi
        if any(isinstance(b, bool) or not isinstance(b, (int, float)) for b in (lo, hi)):
            return None
        return act, float(lo), float(hi)
    return act, 0.0, 0.0


def gemm_epilogues(g: Graph, products: tuple[str, ...] = ("linear",)) -> dict[Node, GemmEpilogue]:
    """For each float32 product node (op in ``products``) followed by an activation, a multiplication by a
    scalar constant and/or the addition of a tensor of its own shape (a residual), the chain its kernel
    can apply as a fused epilogue (runtime gc_sgemm_ep). Keyed by the product node; products without one
    are absent. The graph is not changed."""
    users = g.users()
    outs = {v for _, v in g.outputs}
    consts = inlined_constants(g)
    found: dict[Node, GemmEpilogue] = {}
    claimed: set[Node] = set()  # nodes already in a chain: add(linear(a), linear(b)) joins one product's only
    for p in g.nodes:
        if p.op not in products or p.out.type.dtype.name != "float32":
            continue
        ep = GemmEpilogue(p, [])
        v = p.out
        stage = 0  # 0: an activation may come, 1: a scale, 2: a residual, 3: done
        while stage < 3 and v not in outs and len(users[v]) == 1:
            u = users[v][0]
            if u in claimed or u.out.type.shape != v.type.shape or u.out.type.dtype.name != "float32":
                break
            if v not in u.inputs:
                break
            others = [x for x in u.inputs if x is not v]
            act = _act_of(u) if stage == 0 and len(u.inputs) == 1 else None
            if act is not None:
                ep.act, ep.lo, ep.hi = act
                stage = 1
            elif u.op == "mul" and stage <= 1 and len(others) == 1 and _scalar_constant(others[0], consts) is not None:
                ep.scale = _scalar_constant(others[0], consts)  # type: ignore[assignment]
                stage = 2
            elif u.op == "add" and len(others) == 1 and _is_residual(others[0], v, consts):
                ep.residual = others[0]
                stage = 3
            else:
                break
            ep.nodes.append(u)
            v = u.out
        if ep.nodes:
            found[p] = ep
            claimed.update(ep.nodes)
    return found
