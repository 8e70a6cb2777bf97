"""canonicalize: rewrite equivalent spellings into the one form the backends optimise."""

from __future__ import annotations

import math

import numpy as np

from .._dtype import dtype
from ..ir.graph import Graph, Node, Value
from ..ops.registry import TensorType
from ..sym import Dim
from .base import Rewriter, const_value, constant_node, make_node, producer, register_pass, rule_gives


def _transposed_param(b: Value) -> Value | None:
    """W when b is permute[1, 0] of a 2-d parameter W."""
    t = producer(b, "permute")
    if t is not None and tuple(t.attrs["dims"]) == (1, 0) and t.inputs[0] is not None \
            and t.inputs[0].kind == "param":
        return t.inputs[0]
    return None


def _bias_shape_ok(b: Value, n_out: Dim) -> bool:
    """b broadcasts over the last dim only: [N], [1, N], [1, 1, N], ..."""
    shape = b.type.shape
    return bool(shape) and shape[-1] == n_out and all(d == 1 for d in shape[:-1])


def _exact_reciprocal(c: float, dt: dtype) -> float | None:
    """1/c when c is a power of two whose reciprocal the dtype holds exactly (then x / c == x * (1/c)
    bit for bit: both round the same real number)."""
    if not math.isfinite(c) or c == 0 or abs(math.frexp(c)[0]) != 0.5:
        return None
    r = 1.0 / c
    with np.errstate(over="ignore", under="ignore"):
        held = float(np.asarray(r, dtype=np.float64).astype(dt.np).astype(np.float64))
    return r if held == r else None


def _negated(c: int | float | bool, dt: dtype) -> int | float | None:
    if isinstance(c, bool):
        return None
    if dt.is_floating_point:
        return -float(c)
    if not dt.is_signed:
        return None
    info = np.iinfo(dt.np)
    return -int(c) if info.min <= -int(c) <= info.max else None


@register_pass("canonicalize", level=2)
def canonicalize(g: Graph) -> bool:
    """Rewrite into canonical forms (each exact, and only when the op's type rule gives the same type):

    * matmul(x, permute[1,0](W)) -> linear(x, W) for a 2-d parameter W (no data movement);
      matmul(x, P) with a 2-d parameter P -> linear(x, permute[1,0](P)) (fold_constants then stores
      the pre-transposed weight, so -O2 leaves no permute behind). Only float dtypes (linear's rule);
      a runtime right operand (attention's q @ k^T) stays a matmul.
    * add(linear(x, W), b) and add(b, linear(x, W)) -> linear(x, W, b) when the bias-less linear
      has no other use and b broadcasts over the last dim only ([N], [1, N], ...: reshaped to [N]).
    * sub(x, c) -> add(x, -c) for a `constant` c (float, or signed int whose negation fits): IEEE
      defines x - c as x + (-c), so the result is identical.
    * div(x, c) -> mul(x, 1/c) for a `constant` c = +-2^k whose reciprocal is exact in the dtype.
    * reshape(linear(x, W, b)) keeping the last dim, and permute(linear(x, W, b)) keeping the last dim
      last, -> linear(reshape(x) / permute(x), W, b) when the linear has no other use (a permute only
      when in_features <= out_features, so the copy gets no wider). linear maps each row alone, so
      moving layout ops over leading dims to its input is exact; the GEMM's result then feeds its
      users directly and its epilogue can take the activation or residual add after them. This is
      how torch's batch_first MultiheadAttention comes in: out_proj on [T*B, E], reshaped to
      [T, B, E] and transposed to [B, T, E] before the residual add; it becomes graphc.nn's
      linear on [B, T, E] with the add fused.
    """
    rw = Rewriter(g)

    def _linear_after_layout(n: Node) -> Value | None:
        lin_v = n.inputs[0]
        lin = producer(lin_v, "linear")
        if lin is None or rw.uses(lin_v) != 1 or lin.inputs[0] is None or lin.inputs[1] is None:
            return None
        x, rest = lin.inputs[0], lin.inputs[1:]
        shape = n.out.type.shape
        if not shape or shape[-1] != lin_v.type.shape[-1]:
            return None
        if n.op == "reshape":
            attrs = {"shape": tuple(shape[:-1]) + (x.type.shape[-1],)}
        else:
            dims = tuple(n.attrs["dims"])
            if dims[-1] != len(dims) - 1 or x.type.ndim != len(dims) \
                    or not isinstance(x.type.shape[-1], int) or not isinstance(shape[-1], int) \
                    or x.type.shape[-1] > shape[-1]:
                return None
            attrs = {"dims": dims}
        if not rule_gives(n.op, [x], attrs, TensorType(attrs["shape"] if n.op == "reshape" else
                                                       tuple(x.type.shape[d] for d in attrs["dims"]),
                                                       x.type.dtype)):
            return None
        moved = make_node(g, n.op, [x], attrs, like=n)
        if not rule_gives("linear", [moved.out, *rest], None, n.out.type):
            return None
        rw.emit(moved)
        return rw.emit(make_node(g, "linear", [moved.out, *rest], like=lin)).out

    def visit(n: Node) -> Value | None:
        if n.op == "matmul":
            x, b = n.inputs
            if x is None or b is None or b.type.ndim != 2:
                return None
            w = _transposed_param(b)
            wt = TensorType((b.type.shape[1], b.type.shape[0]), b.type.dtype)
            if (w is None and b.kind != "param") or not rule_gives("linear", [x, wt], None, n.out.type):
                return None
            if w is None:
                w = rw.emit(make_node(g, "permute", [b], {"dims": (1, 0)}, like=n)).out
            return rw.emit(make_node(g, "linear", [x, w], like=n)).out
        if n.op == "add":
            for lin_v, b in (n.inputs, n.inputs[::-1]):
                lin = producer(lin_v, "linear")
                if lin is None or b is None or len(lin.inputs) > 2 and lin.inputs[2] is not None \
                        or rw.uses(lin_v) != 1:
                    continue
                x, w = lin.inputs[0], lin.inputs[1]
                if w is None or not _bias_shape_ok(b, w.type.shape[0]):
                    continue
                vec = TensorType((w.type.shape[0],), b.type.dtype)
                if not rule_gives("linear", [x, w, vec], None, n.out.type):
                    continue
                if b.type.ndim != 1:
                    b = rw.emit(make_node(g, "reshape", [b], {"shape": vec.shape}, like=n)).out
                return rw.emit(make_node(g, "linear", [x, w, b], like=lin, name=lin.out.name)).out
            return None
        if n.op in ("reshape", "permute"):
            return _linear_after_layout(n)
        if n.op == "sub":
            x, c = n.inputs
            cv = const_value(c)
            if cv is None or x is None or x.type != n.out.type:
                return None
            neg = _negated(cv, c.type.dtype)
            if neg is None:
                return None
            if not rule_gives("add", [x, c], None, n.out.type):
                return None
            k = rw.emit(constant_node(g, neg, c.type.dtype, like=producer(c)))
            return rw.emit(make_node(g, "add", [x, k.out], like=n)).out
        if n.op == "div":
            x, c = n.inputs
            cv = const_value(c)
            if cv is None or x is None or isinstance(cv, bool):
                return None
            r = _exact_reciprocal(float(cv), c.type.dtype)
            if r is None:
                return None
            if not rule_gives("mul", [x, c], None, n.out.type):
                return None
            k = rw.emit(constant_node(g, r, c.type.dtype, like=producer(c)))
            return rw.emit(make_node(g, "mul", [x, k.out], like=n)).out
        return None

    return rw.run(visit)

