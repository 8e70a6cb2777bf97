"""The IR's data structures: a Graph of typed SSA Values produced by Nodes.

A Value is one of: a graph input (``%x``), a parameter or buffer (``@fc1.weight``, its array kept in
``Graph.param_data`` outside the text), or the single output of a Node (``%linear_3``). Nodes carry the
op name from the registry, operands (``None`` for an absent optional operand), normalised attributes,
the module path that produced them (``encoder.layers.3.attn``) and the user's source line.
Outputs are named (``return logits=%5``) so a compiled library can expose them by name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..ops import registry as _registry  # a module: the registry imports this package's types.py
from ..sym import Sym
from .types import TensorType

if TYPE_CHECKING:
    from ..ops.registry import OpDef

_NAME_RE = re.compile(r"[^A-Za-z0-9_.]")


class Value:
    """A typed SSA value. ``kind`` is 'input', 'param' or 'node'."""

    __slots__ = ("name", "type", "kind", "node", "__weakref__")

    def __init__(self, name: str, type: TensorType, kind: str, node: Node | None = None):  # noqa: A002
        self.name = name
        self.type = type
        self.kind = kind
        self.node = node

    @property
    def ref(self) -> str:
        """How the text form spells a use of this value."""
        return ("@" if self.kind == "param" else "%") + self.name

    def __repr__(self) -> str:
        return f"{self.ref} : {self.type}"


class Node:
    """One op application. ``out`` is the Value it defines."""

    __slots__ = ("op", "inputs", "attrs", "out", "scope", "loc")

    def __init__(self, op: str, inputs: list[Value | None], attrs: dict[str, Any], out: Value,
                 scope: str = "", loc: str = ""):
        self.op = op
        self.inputs = inputs
        self.attrs = attrs
        self.out = out
        self.scope = scope
        self.loc = loc
        out.node = self

    @property
    def opdef(self) -> OpDef:
        return _registry.get_op(self.op)

    def __repr__(self) -> str:
        ins = ", ".join("none" if v is None else v.ref for v in self.inputs)
        return f"{self.out.ref} : {self.out.type} = {self.op}({ins})" + (f"  # {self.scope}" if self.scope else "")


class Graph:
    """A function from named inputs to named outputs, over named parameters."""

    def __init__(self, name: str = "model"):
        self.name = name
        self.inputs: list[Value] = []
        self.params: dict[str, Value] = {}
        self.param_data: dict[str, np.ndarray] = {}
        self.nodes: list[Node] = []
        self.outputs: list[tuple[str, Value]] = []
        # dynamic dims: name -> (min, max) inclusive; the C library checks them on every run
        self.dims: dict[str, tuple[int, int]] = {}
        self._names: set[str] = set()

    # naming ------------------------------------------------------------------------------------------
    def fresh_name(self, base: str) -> str:
        base = _NAME_RE.sub("_", base) or "v"
        if base[0].isdigit() and not base.isdigit():
            base = "v" + base
        name, i = base, 1
        while name in self._names:
            name = f"{base}_{i}"
            i += 1
        self._names.add(name)
        return name

    def _claim(self, name: str) -> str:
        if name in self._names:
            raise ValueError(f"value name %{name} is already defined")
        self._names.add(name)
        return name

    # building ----------------------------------------------------------------------------------------
    def add_input(self, name: str, type: TensorType) -> Value:  # noqa: A002
        v = Value(self._claim(name), type, "input")
        self.inputs.append(v)
        return v

    def add_param(self, name: str, type: TensorType, data: np.ndarray | None = None) -> Value:  # noqa: A002
        if name in self.params:
            raise ValueError(f"parameter @{name} is already defined")
        v = Value(name, type, "param")
        self.params[name] = v
        if data is not None:
            self.param_data[name] = data
        return v

    def add_node(self, op: str, inputs: Iterable[Value | None], attrs: dict[str, Any], out_type: TensorType,
                 *, name: str | None = None, scope: str = "", loc: str = "") -> Node:
        out = Value(self._claim(name) if name else self.fresh_name(op), out_type, "node")
        node = Node(op, list(inputs), dict(attrs), out, scope, loc)
        self.nodes.append(node)
        return node

    def set_outputs(self, outputs: Iterable[tuple[str, Value]]) -> None:
        self.outputs = list(outputs)

    # queries -----------------------------------------------------------------------------------------
    def values(self) -> Iterator[Value]:
        yield from self.inputs
        yield from self.params.values()
        for n in self.nodes:
            yield n.out

    def users(self) -> dict[Value, list[Node]]:
        out: dict[Value, list[Node]] = {v: [] for v in self.values()}
        for n in self.nodes:
            for v in n.inputs:
                if v is not None:
                    out.setdefault(v, []).append(n)
        return out

    def symbols(self) -> list[str]:
        """The dynamic dim names used by the inputs, in order of appearance."""
        seen: list[str] = []
        for v in self.inputs:
            for d in v.type.shape:
                if isinstance(d, Sym):
                    for s in d.symbols:
                        if s not in seen:
                            seen.append(s)
        return seen

    def copy(self) -> Graph:
        """A structural copy (Values and Nodes new, parameter arrays shared)."""
        g = Graph(self.name)
        g.dims = dict(self.dims)
        m: dict[Value, Value] = {}
        for v in self.inputs:
            m[v] = g.add_input(v.name, v.type)
        for name, v in self.params.items():
            m[v] = g.add_param(name, v.type, self.param_data.get(name))
        for n in self.nodes:
            nn = g.add_node(n.op, [None if v is None else m[v] for v in n.inputs], n.attrs, n.out.type,
                            name=n.out.name, scope=n.scope, loc=n.loc)
            m[n.out] = nn.out
        g.outputs = [(k, m[v]) for k, v in self.outputs]
        return g

    def rebuild_names(self) -> None:
        """Recompute the set of taken names after a pass removed or renamed nodes."""
        self._names = {v.name for v in self.inputs} | {n.out.name for n in self.nodes}

    def __str__(self) -> str:
        from .printer import print_graph

        return print_graph(self)

    def __repr__(self) -> str:
        return f"<Graph {self.name}: {len(self.inputs)} inputs, {len(self.params)} params, {len(self.nodes)} nodes>"
