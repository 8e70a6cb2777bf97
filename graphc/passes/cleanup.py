"""The -O1 passes: dead-code elimination, common-subexpression elimination, no-op removal."""

from __future__ import annotations

from typing import Any

from ..ir.graph import Graph, Node, Value
from .base import Rewriter, register_pass, uniform_value


# ----------------------------------------------------------------------------------------------- dce
@register_pass("dce", level=1)
def dce(g: Graph) -> bool:
    """Dead-code elimination: drop nodes whose value reaches no output, and parameters (with their
    arrays) that no remaining node or output uses. Graph inputs are the library's interface and stay.
    Every op is pure, so "unused" is the only criterion (torch.fx's eliminate_dead_code)."""
    live: set[Value] = {v for _, v in g.outputs}
    keep: list[Node] = []
    for n in reversed(g.nodes):
        if n.out in live:
            keep.append(n)
            live.update(v for v in n.inputs if v is not None)
    keep.reverse()
    dead_params = [name for name, v in g.params.items() if v not in live]
    stray_data = [name for name in g.param_data if name not in g.params]
    changed = len(keep) != len(g.nodes) or bool(dead_params) or bool(stray_data)
    g.nodes = keep
    for name in dead_params + stray_data:
        g.params.pop(name, None)
        g.param_data.pop(name, None)
    g.rebuild_names()
    return changed


# ----------------------------------------------------------------------------------------------- cse
def _attr_key(v: Any) -> Any:
    """A hashable key that is equal only for attribute values with the same meaning: floats by bit
    pattern (so 0.0 and -0.0 differ and NaN equals NaN), bool/int/float never conflated."""
    if isinstance(v, bool):
        return ("b", v)
    if isinstance(v, int):
        return ("i", v)
    if isinstance(v, float):
        return ("f", v.hex())
    if isinstance(v, (tuple, list)):
        return ("t", tuple(_attr_key(x) for x in v))
    return ("o", type(v).__name__, v)


@register_pass("cse", level=1)
def cse(g: Graph) -> bool:
    """Common-subexpression elimination: a node with the same op, the same operands and the same
    attributes as an earlier one is replaced by it. Constants are keyed by value (bit pattern) and
    dtype; the operands of commutative ops (add, mul, maximum, ...) are compared as a set.
    Parameters are never merged by value (that would make the output depend on the weights)."""
    order: dict[Value, int] = {}
    for i, v in enumerate(list(g.inputs) + list(g.params.values())):
        order[v] = i
    seen: dict[Any, Value] = {}
    rw = Rewriter(g)

    def visit(n: Node) -> Value | None:
        ids = [-1 if v is None else order[v] for v in n.inputs]
        if n.opdef.commutative and len(ids) == 2:  # swapping the operands changes no bit (OpDef.commutative)
            ids.sort()
        key = (n.op, tuple(ids), tuple((k, _attr_key(n.attrs[k])) for k in sorted(n.attrs)), n.out.type)
        prev = seen.get(key)
        if prev is not None:
            return prev
        seen[key] = n.out
        order[n.out] = len(order)
        return None

    return rw.run(visit)


# ---------------------------------------------------------------------------------------- remove_noops
def _noop_source(n: Node) -> Value | None:
    """The operand that n merely passes through, or None when n does real work."""
    ins = n.inputs
    x = ins[0] if ins else None
    if n.op in ("identity", "dropout"):
        return x
    if x is None:
        return None
    same = x.type == n.out.type
    if n.op in ("reshape", "expand", "cast"):
        return x if same else None
    if n.op == "permute":
        return x if tuple(n.attrs["dims"]) == tuple(range(x.type.ndim)) else None
    if n.op == "slice":
        return x if same and n.attrs["start"] == 0 else None
    if n.op == "pad":
        return x if same and not any(n.attrs["pads"]) else None
    if n.op == "concat":
        return x if len(ins) == 1 and same else None
    if n.op in ("add", "sub", "mul", "div") and len(ins) == 2:
        a, b = ins
        neutral = 0 if n.op in ("add", "sub") else 1
        # x op neutral; for add and mul also neutral op x
        cands = [(a, b)] + ([(b, a)] if n.op in ("add", "mul") else [])
        for keep, other in cands:
            c = uniform_value(other)  # bools compare as 0/1: x or False, x and True
            if c is not None and c == neutral and keep is not None and keep.type == n.out.type:
                return keep
    return None


@register_pass("remove_noops", level=1)
def remove_noops(g: Graph) -> bool:
    """Replace nodes that return their operand unchanged by that operand: identity, dropout
    (inference), reshape/expand to the same shape, permute by the identity order, cast to the same
    dtype, a slice covering the whole dim, pad by zeros, concat of one tensor, x*1, 1*x, x/1, x+0, 0+x,
    x-0 (with `constant` or `full` neutral elements, and only when the result has x's exact type).

    Float caveat: x + 0.0 turns -0.0 into +0.0, so removing it changes the sign of zero results;
    that is accepted for inference (x - 0.0, x + -0.0, x * 1 and x / 1 are exact)."""
    rw = Rewriter(g)
    return rw.run(_noop_source)

