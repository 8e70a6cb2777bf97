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


def fusion_groups(g: Graph, *, fuse: bool = True) -> list[FusionGroup]:
    """Partition the elementwise nodes of g into fusion groups, listed in the order of their roots.

    With ``fuse=False`` every elementwise node is its own group (used at opt_level 0).
    """
    users = g.users()
    outs = {v for _, v in g.outputs}
    consts = inlined_constants(g)
    group_of: dict[Node, int] = {}
    members: dict[int, list[Node]] = {}
    # walk backwards: a node joins its users' group when all its users are in one group of its shape
    for n in reversed(g.nodes):
        if not is_elementwise(n):
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
