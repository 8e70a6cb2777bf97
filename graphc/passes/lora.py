"""merge_lora: fold LoRA adapters into the base weight when weights are baked into the library."""

from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node, Value
from .base import Rewriter, const_value, derived_param, make_node, param_array, producer, register_pass

LORA_SUFFIX = ".lora_merged"


def _through_identities(v: Value | None) -> Value | None:
    """Look through identity/dropout (inference no-ops) to the value they pass on."""
    n = producer(v, ("identity", "dropout"))
    while n is not None:
        v = n.inputs[0]
        n = producer(v, ("identity", "dropout"))
    return v


def _scalar(g: Graph, v: Value | None) -> float | None:
    """The value of a one-element scaling factor: a `constant` node or a one-element parameter."""
    c = const_value(v)
    if c is not None:
        return None if isinstance(c, bool) else float(c)
    a = param_array(g, v)
    if a is not None and a.size == 1 and v is not None and v.type.ndim <= 1:
        return float(a.astype(np.float64).reshape(()))
    return None


@register_pass("merge_lora", level=2, needs_baked_weights=True)
def merge_lora(g: Graph) -> bool:
    """Merge LoRA adapters into their base linear (valid only when weights are baked in):

        add(linear(x, W, b), s * linear(linear(x, A), B))  ->  linear(x, W + s * B @ A, b)

    in either add order, with the scale s a `constant` or one-element parameter multiplied on
    either side of either adapter linear (or absent), identity/dropout allowed between x and the
    adapter, the adapter linears without bias, and every intermediate value (base output, adapter
    outputs, scaled value) used only on this path. W, A and B must be parameters with data; the sum is
    computed in float64 and stored in W's dtype as ``<W name>.lora_merged``; the merged linear keeps
    the base linear's name, scope and line. Several adapters on one base (``base + d1 + d2``) merge
    one after the other into that same parameter. This is the graph graphc.nn.lora.LoraLinear traces
    to (``add(base_layer(x), mul(lora_B(lora_A(lora_dropout(x))), scaling))``)."""
    rw = Rewriter(g)
    mine: set[str] = set()  # parameters this run created (their arrays are replaced when merged again)

    def peel_scale(v: Value | None, scale: float) -> tuple[Value | None, float] | None:
        """Strip single-use mul-by-scalar (and identity/dropout) nodes above an adapter linear."""
        while True:
            n = producer(v, ("mul", "identity", "dropout"))
            if n is None:
                return v, scale
            if rw.uses(v) != 1:
                return None
            if n.op != "mul":
                v = n.inputs[0]
                continue
            a, b = n.inputs
            for val, s in ((a, b), (b, a)):
                f = _scalar(g, s)
                if f is not None and val is not None and val.type == n.out.type:
                    v, scale = val, scale * f
                    break
            else:
                return None

    def adapter(v: Value | None) -> tuple[Value, np.ndarray] | None:
        """(x, s * B @ A) when v computes s * linear(linear(x, A), B) on single-use values."""
        got = peel_scale(v, 1.0)
        if got is None:
            return None
        v, scale = got
        lin_b = producer(v, "linear")
        if lin_b is None or rw.uses(v) != 1 or len(lin_b.inputs) > 2 and lin_b.inputs[2] is not None:
            return None
        got = peel_scale(lin_b.inputs[0], scale)
        if got is None:
            return None
        h, scale = got
        lin_a = producer(h, "linear")
        if lin_a is None or rw.uses(h) != 1 or len(lin_a.inputs) > 2 and lin_a.inputs[2] is not None:
            return None
        a, b = param_array(g, lin_a.inputs[1]), param_array(g, lin_b.inputs[1])
        x = _through_identities(lin_a.inputs[0])
        if a is None or b is None or x is None:
            return None
        return x, scale * (b.astype(np.float64) @ a.astype(np.float64))

    def visit(n: Node) -> Value | None:
        if n.op != "add":
            return None
        for base_v, delta_v in (n.inputs, n.inputs[::-1]):
            base = producer(base_v, "linear")
            if base is None or rw.uses(base_v) != 1 or base.out.type != n.out.type:
                continue
            w = base.inputs[1]
            w_data = param_array(g, w)
            found = adapter(delta_v)
            if w is None or w_data is None or found is None:
                continue
            x, delta = found
            if _through_identities(base.inputs[0]) is not x or delta.shape != w_data.shape:
                continue
            merged = (w_data.astype(np.float64) + delta).astype(w_data.dtype)
            w_new = derived_param(g, rw, mine, w, w.name + LORA_SUFFIX, merged)
            bias = base.inputs[2] if len(base.inputs) > 2 else None
            # the base linear goes away with the add (its only user), so its name is free
            return rw.emit(make_node(g, "linear", [base.inputs[0], w_new, bias], like=base,
                                     name=base.out.name)).out
        return None

    return rw.run(visit)
