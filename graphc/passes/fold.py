"""Passes that compute at compile time: constant folding and BatchNorm folding."""

from __future__ import annotations

import numpy as np

from .._dtype import bool_, dtype
from ..ir.graph import Graph, Node, Value
from ..ops.registry import get_op
from .base import (
    PassError,
    Rewriter,
    constant_node,
    derived_param,
    has_symbolic,
    make_node,
    new_param,
    param_array,
    producer,
    register_pass,
    static_numel,
)

# A folded result may be as large as the parameters it is computed from, or this many elements,
# whichever is more: big full/arange-derived tensors stay runtime ops instead of bloating the weights.
# `expand` is never folded into something bigger than its operand (a broadcast is free at run time).
FOLD_SIZE_LIMIT = 1 << 14

# Ops that create a tensor from attributes alone: they are the constants' spelling, not something to
# fold (folding `full` into a parameter would only move a memset into the weights file).
_SOURCES = ("constant", "full", "arange")


def _source_value(n: Node) -> np.ndarray | None:
    if has_symbolic(tuple(n.attrs.values())) or not n.out.type.is_static:
        return None
    return np.asarray(get_op(n.op).ref(**n.attrs)).astype(n.out.type.dtype.np, copy=False)


def _py_scalar(val: np.ndarray, dt: dtype) -> int | float | bool:
    if dt.is_floating_point:
        return float(val.astype(np.float64))
    if dt is bool_:
        return bool(val)
    return int(val)


@register_pass("fold_constants", level=2)
def fold_constants(g: Graph, *, size_limit: int = FOLD_SIZE_LIMIT) -> bool:
    """Evaluate nodes whose operands are all parameters (with data) or constants (`constant`, `full`,
    `arange` nodes) with the op's numpy reference.

    * A 0-d result computed from `constant`/`full`/`arange` nodes only becomes a `constant` node.
    * Any other result becomes a new parameter named ``<first parameter operand>.<op>`` (else
      ``<scope>.<op>``, else ``folded.<op>``), sanitised and de-duplicated: ``@fc.weight.cast``,
      ``@fc.weight.permute``. A 0-d result that depends on a parameter stays a parameter, so loading
      new weights never changes the code.
    * Nothing is folded whose result has more than max(size_limit, elements of its parameter operands)
      elements, whose shape or attributes are dynamic, or whose parameters have no data.
    So a cast of a weight, a transposed (permuted) weight feeding a batched matmul, or a weight
    expression such as ``w * 2 + 1`` are precomputed once. An op that fails on constant operands
    (e.g. an out-of-range index) would fail on every run: that is reported as a PassError.
    """
    rw = Rewriter(g)
    known: dict[Value, np.ndarray] = {}  # values of `constant`/`full`/`arange` nodes seen so far
    for name, v in g.params.items():
        data = g.param_data.get(name)
        if data is not None:
            known[v] = data

    def visit(n: Node) -> Value | None:
        if n.op in _SOURCES:
            val = _source_value(n)
            if val is not None and (static_numel(n.out.type) or 0) <= size_limit:
                known[n.out] = val
            return None
        ins = [v for v in n.inputs if v is not None]
        if not ins or any(v not in known for v in ins):
            return None
        if has_symbolic(tuple(n.attrs.values())) or not n.out.type.is_static:
            return None
        params = [v for v in ins if v.kind == "param"]
        budget = max(size_limit, sum(static_numel(v.type) or 0 for v in params))
        size = static_numel(n.out.type) or 0
        if size > budget or (n.op == "expand" and size > (static_numel(ins[0].type) or 0)):
            return None
        args = [None if v is None else known[v] for v in n.inputs]
        while args and args[-1] is None:
            args.pop()
        try:
            with np.errstate(all="ignore"):
                val = np.asarray(get_op(n.op).ref(*args, **n.attrs))
        except Exception as e:  # the op's own error, e.g. an index out of range
            where = f" in module '{n.scope}'" if n.scope else ""
            raise PassError(f"fold_constants: {n.out.ref} = {n.op}(...){where} fails on its constant "
                            f"operands, so it would fail on every run: {e}") from e
        val = val.astype(n.out.type.dtype.np, copy=False)
        if tuple(val.shape) != tuple(n.out.type.shape):
            raise PassError(f"fold_constants: the reference of {n.op} gave shape {list(val.shape)} for "
                            f"{n.out.ref} : {n.out.type}")
        if n.out.type.ndim == 0 and not params:
            c = rw.emit(constant_node(g, _py_scalar(val, n.out.type.dtype), n.out.type.dtype, like=n))
            known[c.out] = val
            return c.out
        base = params[0].name if params else (n.scope or "folded")
        p = new_param(g, f"{base}.{n.op}", val)
        known[p] = val
        return p

    return rw.run(visit)


# ------------------------------------------------------------------------------------ fold_batchnorm
BN_SUFFIX = ".bn_folded"


def _bias_name(weight_name: str) -> str:
    return (weight_name[: -len("weight")] + "bias") if weight_name.endswith("weight") else weight_name + ".bias"


@register_pass("fold_batchnorm", level=2)
def fold_batchnorm(g: Graph) -> bool:
    """Fold an eval-mode ``batch_norm`` into the ``conv`` (1-d or 2-d, any groups) or the ``linear``
    (on [N, C]) that feeds it, when that producer's output has no other use and every weight involved
    is a parameter with data:

        scale = bn.weight / sqrt(bn.var + eps)          (bn.weight = 1 when absent)
        W'    = W * scale  (per output channel)
        b'    = (b - bn.mean) * scale + bn.bias         (b = 0, bn.bias = 0 when absent)

    computed in float64 and stored in the producer's dtype as new parameters ``<W name>.bn_folded``
    and ``<b name>.bn_folded`` (a conv without bias gets ``<W name with weight -> bias>.bn_folded``,
    e.g. ``@conv1.bias.bn_folded``). The rewritten producer replaces the batch_norm's value and
    keeps the producer's name, scope and source line; a second batch_norm right after folds into the
    same parameters (no ``.bn_folded.bn_folded``)."""
    rw = Rewriter(g)
    mine: set[str] = set()  # parameters this run created

    def visit(n: Node) -> Value | None:
        if n.op != "batch_norm":
            return None
        x, mean, var, bw, bb = (list(n.inputs) + [None, None])[:5]
        prod_node = producer(x, ("conv", "linear"))
        if prod_node is None or rw.uses(x) != 1:
            return None
        if prod_node.op == "linear" and x.type.ndim != 2:
            return None  # BatchNorm1d on [N, C, L] normalises dim 1, not linear's features
        w, b = (list(prod_node.inputs) + [None])[1:3]
        arrays = {}
        for key, v in (("w", w), ("b", b), ("mean", mean), ("var", var), ("bw", bw), ("bb", bb)):
            if v is None:
                if key in ("w", "mean", "var"):
                    return None
                continue
            a = param_array(g, v)
            if a is None:
                return None
            arrays[key] = a.astype(np.float64)
        eps = float(n.attrs["eps"])
        oc = arrays["mean"].shape[0]
        scale = arrays.get("bw", np.ones(oc)) / np.sqrt(arrays["var"] + eps)
        shift = arrays.get("bb", np.zeros(oc)) - arrays["mean"] * scale
        dt = w.type.dtype.np
        w_new = arrays["w"] * scale.reshape((oc,) + (1,) * (arrays["w"].ndim - 1))
        b_new = arrays.get("b", np.zeros(oc)) * scale + shift
        with np.errstate(over="ignore"):
            w_param = derived_param(g, rw, mine, w, w.name + BN_SUFFIX, w_new.astype(dt))
            b_param = derived_param(g, rw, mine, b, (b.name if b is not None else _bias_name(w.name)) + BN_SUFFIX,
                                    b_new.astype(dt))
        folded = rw.emit(make_node(g, prod_node.op, [prod_node.inputs[0], w_param, b_param], prod_node.attrs,
                                   like=prod_node, name=prod_node.out.name))
        return folded.out

    return rw.run(visit)


__all__ = ["BN_SUFFIX", "FOLD_SIZE_LIMIT", "fold_batchnorm", "fold_constants"]
