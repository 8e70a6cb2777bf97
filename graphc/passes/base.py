"""The pass protocol, the pass registry and the small rewriting toolkit the passes share.

A pass is a named function ``Graph -> Graph`` that never mutates its input. It is written as a
function that rewrites a *private copy* in place and returns whether it changed anything; the
:func:`register_pass` decorator wraps it into a :class:`Pass`, whose call copies the graph first:

    @register_pass("dce", level=1)
    def dce(g: Graph) -> bool:
        '''Drop nodes and parameters nothing uses.'''
        ...

    out, changed = PASSES["dce"](graph)        # a PassResult; `graph` is untouched

Rules every pass keeps:
* The input graph and its parameter arrays are never modified (the copy shares the arrays, so a pass
  makes new arrays and never writes into old ones).
* Structural decisions depend only on the graph text (ops, attributes, types, constants), never on
  parameter *values*: the C backend re-runs the pipeline on a fine-tuned state_dict and relies on the
  output's parameter names and shapes being the same.
* New values get deterministic names: nodes through ``Graph.fresh_name(op)``, parameters through
  :func:`new_param` (``<base>.<suffix>``, de-duplicated with ``_1``, ``_2``...).
* ``changed`` is True exactly when the output differs from the input.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np

from ..errors import GraphcError, ShapeError, VerifyError
from ..ir.graph import Graph, Node, Value
from ..ops.registry import TensorType, get_op
from ..sym import Sym, is_static, prod


class PassError(GraphcError):
    """A pass found a graph it cannot transform correctly (names the pass and the node)."""


class PassResult(NamedTuple):
    """What a pass returns: the new graph and whether it differs from the input."""

    graph: Graph
    changed: bool


def verify_enabled(flag: bool | None = None) -> bool:
    """An explicit flag wins; otherwise GRAPHC_VERIFY_PASSES=1 turns verification on."""
    if flag is not None:
        return flag
    return os.environ.get("GRAPHC_VERIFY_PASSES", "") not in ("", "0", "false", "no")


@dataclasses.dataclass(frozen=True)
class Pass:
    """A named graph-to-graph transformation.

    ``fn`` rewrites the graph it is given in place and returns whether it changed it; calling the
    Pass runs ``fn`` on a copy, so the caller's graph is never modified. ``level`` is the lowest
    optimisation level (-O<level>) whose pipeline runs it; ``needs_baked_weights`` marks passes that
    merge parameters in ways only valid when weights are compiled in.
    """

    name: str
    fn: Callable[..., bool]
    doc: str
    level: int
    needs_baked_weights: bool = False

    def __call__(self, g: Graph, *, verify: bool | None = None, **options: Any) -> PassResult:
        out = g.copy()
        changed = bool(self.fn(out, **options))
        if verify_enabled(verify):
            from ..ir.verify import verify as _verify

            try:
                _verify(out)
            except VerifyError as e:
                raise VerifyError(f"after pass '{self.name}': {e}") from None
        return PassResult(out, changed)

    def __repr__(self) -> str:
        return f"<pass {self.name} (-O{self.level})>"


PASSES: dict[str, Pass] = {}


def register_pass(name: str, *, level: int, needs_baked_weights: bool = False) -> Callable[[Callable[..., bool]], Pass]:
    """Register ``fn(g, **options) -> bool`` (rewrites g in place) as the pass ``name``."""
    if name in PASSES:
        raise ValueError(f"pass {name!r} is registered twice")

    def deco(fn: Callable[..., bool]) -> Pass:
        p = Pass(name, fn, (fn.__doc__ or "").strip(), level, needs_baked_weights)
        PASSES[name] = p
        return p

    return deco


def run_pass(name: str, g: Graph, *, verify: bool | None = None, **options: Any) -> PassResult:
    """Run one registered pass by name (see ``PASSES``)."""
    try:
        p = PASSES[name]
    except KeyError:
        raise ValueError(f"unknown pass {name!r}; the passes are {', '.join(sorted(PASSES))}") from None
    return p(g, verify=verify, **options)


# ------------------------------------------------------------------------------------------ queries
def producer(v: Value | None, op: str | tuple[str, ...] | None = None) -> Node | None:
    """The node defining v (optionally only if its op is `op` / one of `op`)."""
    if v is None or v.kind != "node" or v.node is None:
        return None
    if op is None or v.node.op == op or (isinstance(op, tuple) and v.node.op in op):
        return v.node
    return None


def const_value(v: Value | None) -> int | float | bool | None:
    """The scalar held by a `constant` node's output, else None."""
    n = producer(v, "constant")
    return None if n is None else n.attrs["value"]


def uniform_value(v: Value | None) -> int | float | bool | None:
    """The value of a `constant` or `full` node's output (every element equal), else None."""
    n = producer(v, ("constant", "full"))
    return None if n is None else n.attrs["value"]


def param_array(g: Graph, v: Value | None) -> np.ndarray | None:
    """The array of a parameter value (None for other values or parameters without data)."""
    if v is None or v.kind != "param":
        return None
    return g.param_data.get(v.name)


def static_numel(t: TensorType) -> int | None:
    n = prod(t.shape)
    return n if is_static(n) else None


def has_symbolic(x: Any) -> bool:
    if isinstance(x, Sym):
        return True
    if isinstance(x, (tuple, list)):
        return any(has_symbolic(y) for y in x)
    return False


def use_counts(g: Graph) -> dict[Value, int]:
    """How many node operands and graph outputs refer to each value."""
    counts: dict[Value, int] = {}
    for n in g.nodes:
        for v in n.inputs:
            if v is not None:
                counts[v] = counts.get(v, 0) + 1
    for _, v in g.outputs:
        counts[v] = counts.get(v, 0) + 1
    return counts


# ------------------------------------------------------------------------------------------ building
_PARAM_CHARS = re.compile(r"[^A-Za-z0-9_.]")


def new_param(g: Graph, base: str, data: np.ndarray) -> Value:
    """Add a parameter named after `base` (sanitised; ``_1``, ``_2``... when taken) holding `data`."""
    from .._dtype import from_numpy_dtype

    base = _PARAM_CHARS.sub("_", base).strip(".") or "folded"
    name, i = base, 1
    while name in g.params:
        name = f"{base}_{i}"
        i += 1
    data = np.array(data, order="C")  # (np.ascontiguousarray would turn a 0-d array into [1])
    return g.add_param(name, TensorType(tuple(data.shape), from_numpy_dtype(data.dtype)), data)


def derived_param(g: Graph, rw: Rewriter, mine: set[str], old: Value | None, name: str, data: np.ndarray) -> Value:
    """The parameter for `data`, computed from `old` by the node being replaced: when `old` is a
    parameter this same pass created and nothing else uses it, its array is replaced and its name
    kept (so chained folds do not pile up suffixes); otherwise a new parameter named `name`."""
    if old is not None and old.name in mine and rw.uses(old) == 1 and old.type.shape == data.shape \
            and old.type.dtype.np == data.dtype:
        g.param_data[old.name] = data
        return old
    p = new_param(g, name, data)
    mine.add(p.name)
    return p


def make_node(g: Graph, op: str, inputs: Iterable[Value | None], attrs: dict[str, Any] | None = None, *,
              like: Node | None = None, name: str | None = None) -> Node:
    """A new node (not yet placed in g.nodes) with normalised attributes and its type from the op's
    rule; raises ShapeError when the rule rejects the operands. `like` lends scope and source line;
    `name` reuses the name of a node that the caller removes in the same pass."""
    opdef = get_op(op)
    ins = list(inputs)
    bound = opdef.bind_attrs(dict(attrs or {}))
    t = opdef.infer_type([None if v is None else v.type for v in ins], bound)
    out = Value(name if name is not None else g.fresh_name(op), t, "node")
    return Node(op, ins, bound, out, like.scope if like else "", like.loc if like else "")


def rule_gives(op: str, inputs: Iterable[Value | TensorType | None], attrs: dict[str, Any] | None,
               want: TensorType) -> bool:
    """Whether op's type rule accepts these operands (values or bare types) and gives `want`."""
    opdef = get_op(op)
    types = [v.type if isinstance(v, Value) else v for v in inputs]
    try:
        return opdef.infer_type(types, opdef.bind_attrs(dict(attrs or {}))) == want
    except ShapeError:
        return False


def constant_node(g: Graph, value: int | float | bool, dt: Any, *, like: Node | None = None) -> Node:
    return make_node(g, "constant", [], {"value": value, "dtype": dt}, like=like)


class Rewriter:
    """Walks g.nodes in order, letting a visitor keep, replace or add nodes; then tidies up.

    The visitor gets each node with its operands already substituted and returns None (keep it) or
    the Value that replaces its output (the node is dropped). Nodes it ``emit``s are placed before
    the node being visited. Afterwards the graph outputs are substituted, and nodes and parameters
    that became unused *because of this rewrite* are removed (other dead code is dce's business).
    """

    def __init__(self, g: Graph):
        self.g = g
        self.subst: dict[Value, Value] = {}
        self._out: list[Node] = []
        self._dropped: list[Node] = []
        self._counts = use_counts(g)
        self.changed = False

    def uses(self, v: Value) -> int:
        """How many operands and outputs refer to v now (kept up to date while rewriting)."""
        return self._counts.get(v, 0)

    def resolve(self, v: Value | None) -> Value | None:
        while v is not None and v in self.subst:
            v = self.subst[v]
        return v

    def emit(self, n: Node) -> Node:
        self._out.append(n)
        for v in n.inputs:
            if v is not None:
                self._counts[v] = self._counts.get(v, 0) + 1
        self.changed = True
        return n

    def run(self, visit: Callable[[Node], Value | None]) -> bool:
        g = self.g
        for n in g.nodes:
            n.inputs = [self.resolve(v) for v in n.inputs]
            rep = visit(n)
            if rep is None:
                self._out.append(n)
            else:
                if rep.type != n.out.type:
                    raise PassError(f"internal error: replacing {n.out.ref} : {n.out.type} by {rep.ref} : {rep.type}")
                self.subst[n.out] = rep
                self._counts[rep] = self._counts.get(rep, 0) + self._counts.pop(n.out, 0)
                for v in n.inputs:
                    if v is not None:
                        self._counts[v] -= 1
                self._dropped.append(n)
                self.changed = True
        g.nodes = self._out
        g.outputs = [(k, self.resolve(v)) for k, v in g.outputs]
        self._sweep()
        g.rebuild_names()
        return self.changed

    def _sweep(self) -> None:
        """Remove nodes/params whose last user was dropped by this rewrite."""
        g = self.g
        counts = use_counts(g)
        seeds = [v for n in self._dropped for v in n.inputs if v is not None]
        present = set(g.nodes)
        dead_nodes: set[Node] = set()
        dead_params: set[str] = set()
        while seeds:
            v = seeds.pop()
            if counts.get(v, 0) != 0:
                continue
            if v.kind == "param" and v.name in g.params and g.params[v.name] is v:
                dead_params.add(v.name)
            elif v.kind == "node" and v.node is not None and v.node not in dead_nodes and v.node in present:
                dead_nodes.add(v.node)
                for u in v.node.inputs:
                    if u is not None:
                        counts[u] -= 1
                        seeds.append(u)
        if dead_nodes:
            g.nodes = [n for n in g.nodes if n not in dead_nodes]
        for name in sorted(dead_params):
            del g.params[name]
            g.param_data.pop(name, None)

