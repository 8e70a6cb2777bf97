"""The IR verifier: the invariants every pass must keep (fx's lint, autodidax's typecheck_jaxpr)."""

from __future__ import annotations

from ..errors import ShapeError, VerifyError
from ..ops import registry as _registry  # a module: the registry imports this package
from ..sym import Sym


def _where(n) -> str:
    s = f"node %{n.out.name} = {n.op}(...)"
    if n.scope:
        s += f" in module '{n.scope}'"
    return s


def verify(g) -> None:
    """Raise VerifyError naming the node when the graph breaks an invariant:
    unique names, every operand defined before use, parameters declared and holding data of their
    type, each node's type equal to its op's rule applied to its operands, dynamic dims declared,
    outputs defined and named uniquely."""
    defined = set()
    names: set[str] = set()
    for v in g.inputs:
        if v.kind != "input":
            raise VerifyError(f"graph input %{v.name} has kind {v.kind!r}")
        if v.name in names:
            raise VerifyError(f"value name %{v.name} is defined twice")
        names.add(v.name)
        defined.add(v)
        for d in v.type.shape:
            if isinstance(d, Sym):
                for s in d.symbols:
                    if s not in g.dims:
                        raise VerifyError(f"input %{v.name} uses dynamic dim {s} that has no 'dim' declaration")
    for name, v in g.params.items():
        if v.kind != "param" or v.name != name:
            raise VerifyError(f"parameter table entry {name!r} holds {v!r}")
        if any(c == "\0" or "\ud800" <= c <= "\udfff" for c in name):
            raise VerifyError(f"parameter name {name!r} contains a NUL or a lone surrogate character, which "
                              "C sources and safetensors headers (UTF-8) cannot hold")
        defined.add(v)
        data = g.param_data.get(name)
        if data is not None:
            if tuple(data.shape) != tuple(v.type.shape) or data.dtype != v.type.dtype.np:
                raise VerifyError(f"parameter @{name} is declared {v.type} but holds "
                                  f"{data.dtype}{list(data.shape)}")
    for n in g.nodes:
        op = _registry.OPS.get(n.op)
        if op is None:
            raise VerifyError(f"{_where(n)}: unknown op '{n.op}'")
        if n.out.name in names:
            raise VerifyError(f"{_where(n)}: value name %{n.out.name} is defined twice")
        if n.out.node is not n:
            raise VerifyError(f"{_where(n)}: output value is not linked to its node")
        for i, v in enumerate(n.inputs):
            if v is None:
                continue
            if v not in defined:
                raise VerifyError(f"{_where(n)}: operand {i} ({v.ref}) is used before it is defined "
                                  "or does not belong to this graph")
        try:
            bound = op.bind_attrs(n.attrs)
            if bound != n.attrs:
                raise VerifyError(f"{_where(n)}: attributes are not normalised (expected {bound})")
            t = op.infer_type([None if v is None else v.type for v in n.inputs], n.attrs)
        except ShapeError as e:
            raise VerifyError(f"{_where(n)}: {e}") from None
        if t != n.out.type:
            raise VerifyError(f"{_where(n)}: declared type {n.out.type} but the op's rule gives {t}")
        for d in t.shape:
            if isinstance(d, Sym):
                for s in d.symbols:
                    if s not in g.dims:
                        raise VerifyError(f"{_where(n)}: dynamic dim {s} is not declared")
        names.add(n.out.name)
        defined.add(n.out)
    if not g.outputs:
        raise VerifyError("graph has no outputs")
    seen = set()
    for k, v in g.outputs:
        if k in seen:
            raise VerifyError(f"output name {k!r} is used twice")
        seen.add(k)
        if v not in defined:
            raise VerifyError(f"output {k!r} refers to {v.ref}, which is not defined in this graph")
