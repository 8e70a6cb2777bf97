"""The reference interpreter: executes a Graph with the ops' numpy references."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import GraphcError
from ..ops import registry as _registry  # a module: the registry imports this package
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
            scaled = isinstance(d, Sym) and len(d.terms) == 1 and len(d.terms[0][0]) == 1 and d.terms[0][1] > 1
            if scaled and d.symbols[0] not in env and n % d.terms[0][1] == 0:
                n //= d.terms[0][1]  # a dim declared as a multiple (32 * h): h is the size / 32
            if isinstance(d, Sym) and (d.is_var or scaled):
                name = d.symbols[0]
                if scaled and name in env:
                    continue  # checked against the bound value below
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
                                 "whole dim (or a multiple of it), so its value cannot be read off the inputs")
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
        op = _registry.get_op(n.op)
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


def compare_outputs(got: Mapping[str, Any], want: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Compare outputs (e.g. a compiled library's) with reference ones, NaN-aware.

    One row per output of `want`: ``abs_err`` over the elements finite on both sides (an infinity
    matches only the same infinity), ``scale`` (max |ref| over finite elements), ``nan_mismatch``
    (elements NaN on one side only: NaN in the same places on both sides is agreement), and ``rel``
    = abs_err / scale, infinite when a NaN appears on one side only or the shapes differ."""
    rows = []
    for k in want:
        a, b = np.asarray(got[k], np.float64), np.asarray(want[k], np.float64)
        if a.shape != b.shape:
            rows.append({"name": k, "abs_err": float("inf"), "scale": 0.0, "nan_mismatch": 0,
                         "rel": float("inf"), "shape": (a.shape, b.shape)})
            continue
        nan_a, nan_b = np.isnan(a), np.isnan(b)
        nan_mismatch = int(np.count_nonzero(nan_a != nan_b))
        both = ~(nan_a | nan_b) & ~(np.isinf(a) & (a == b))
        with np.errstate(invalid="ignore"):
            err = float(np.max(np.abs(a[both] - b[both]))) if both.any() else 0.0
        finite_b = b[np.isfinite(b)]
        scale = float(np.max(np.abs(finite_b))) if finite_b.size else 0.0
        rel = float("inf") if nan_mismatch or np.isnan(err) else err / max(scale, 1e-30)
        rows.append({"name": k, "abs_err": err, "scale": scale, "nan_mismatch": nan_mismatch, "rel": rel})
    return rows
