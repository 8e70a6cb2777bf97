"""The reference interpreter: executes a Graph with the ops' numpy references."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import GraphcError
from ..ops.registry import get_op
from ..sym import Sym


class InterpreterError(GraphcError):
    pass


def bind_dims(g, inputs: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Read the dynamic dims' values off the inputs and check every static dim and dtype."""
    env: dict[str, int] = {}
    for v in g.inputs:
        if v.name not in inputs:
            raise ValueError(f"missing input '{v.name}'")
        arr = inputs[v.name]
        if arr.ndim != len(v.type.shape):
            raise ValueError(f"input '{v.name}': expected {len(v.type.shape)} dims {v.type}, got shape "
                             f"{list(arr.shape)}")
        if arr.dtype != v.type.dtype.np:
            raise ValueError(f"input '{v.name}': expected dtype {v.type.dtype.name}, got {arr.dtype}")
        for i, (d, n) in enumerate(zip(v.type.shape, arr.shape)):
            if isinstance(d, Sym) and d.is_var:
                name = d.symbols[0]
                if env.setdefault(name, n) != n:
                    raise ValueError(f"input '{v.name}' dim {i}: dynamic dim {name} is {n} here but "
                                     f"{env[name]} elsewhere")
                lo, hi = g.dims.get(name, (0, 2**62))
                if not lo <= n <= hi:
                    raise ValueError(f"input '{v.name}' dim {i}: dynamic dim {name}={n} is outside {lo}..{hi}")
    for v in g.inputs:
        for i, (d, n) in enumerate(zip(v.type.shape, inputs[v.name].shape)):
            unbound = [s for s in d.symbols if s not in env] if isinstance(d, Sym) else []
            if unbound:
                raise ValueError(f"input '{v.name}' dim {i} is {d}, but no input has {' or '.join(unbound)} as a "
                                 "whole dim, so its value cannot be read off the inputs")
            want = d.evaluate(env) if isinstance(d, Sym) else d
            if want != n:
                raise ValueError(f"input '{v.name}': dim {i} should be {d} (= {want}), got {n}")
    return env


def _resolve(x: Any, env: Mapping[str, int]) -> Any:
    if isinstance(x, Sym):
        return x.evaluate(env)
    if isinstance(x, tuple):
        return tuple(_resolve(y, env) for y in x)
    return x


def interpret(g, inputs: Mapping[str, Any] | None = None, params: Mapping[str, np.ndarray] | None = None,
              **kw: Any) -> dict[str, np.ndarray]:
    """Run g on named numpy inputs; returns {output name: array}. ``params`` overrides g.param_data."""
    feeds = {k: np.asarray(v) for k, v in {**(inputs or {}), **kw}.items()}
    unknown = set(feeds) - {v.name for v in g.inputs}
    if unknown:
        raise ValueError(f"unknown input(s) {sorted(unknown)}; the graph takes {[v.name for v in g.inputs]}")
    env = bind_dims(g, feeds)
    vals: dict[Any, np.ndarray] = {}
    for v in g.inputs:
        vals[v] = feeds[v.name]
    for name, v in g.params.items():
        data = (params or {}).get(name, g.param_data.get(name))
        if data is None:
            raise ValueError(f"parameter @{name} has no data")
        vals[v] = np.asarray(data)
    for n in g.nodes:
        op = get_op(n.op)
        args = [None if v is None else vals[v] for v in n.inputs]
        while args and args[-1] is None:
            args.pop()
        attrs = {k: _resolve(a, env) for k, a in n.attrs.items()}
        try:
            out = np.asarray(op.ref(*args, **attrs))
        except Exception as e:
            where = f" in module '{n.scope}'" if n.scope else ""
            raise InterpreterError(f"While executing %{n.out.name} = {n.op}(...){where}: {e}") from e
        vals[n.out] = out.astype(n.out.type.dtype.np, copy=False)
    return {k: vals[v] for k, v in g.outputs}
