"""Convolution epilogues: the elementwise group after a convolution, computed in the conv's output write.

A float32 ``conv`` whose result is used only by one elementwise fusion group (:mod:`graphc.backend.fusion`)
of its own shape, and not returned, can take that group into its kernel when the group is exactly

    [r = add(y, res)]  [a = act(r or y)]  [add(a, res)]      (at least one of the three, in this order)

with y the conv's result, res a float32 tensor of y's shape (a residual: computed before the group's
root, so before the fused kernel runs) and act one of relu, hardtanh (relu6 and other clamps),
sigmoid, silu, tanh, gelu (either form) or hardswish's decomposition x * hardtanh(x + 3, 0, 6) / 6.
The backend's kernel then computes ``act(conv + bias [+ res])`` or ``act(conv + bias) + res`` as it
stores each output: one pass over the output instead of two or three, and the conv's own result is
never stored. A global average pool of that result (adaptive_avg_pool2d to 1x1: a squeeze-excitation)
goes into the same kernel as a second output, summed while each plane is in cache.

A 1x1 conv (stride 1, no padding) that reads ``mul(x, s)`` with s of shape [N, C, 1, 1] (a
squeeze-excitation's channel scaling, x * sigmoid(...)), the product used by nothing else, can take the
scale instead (:func:`conv_input_scales`): conv(x * s) is the conv of x with weights w[o, c] * s[n, c],
OC x C/groups multiplies per image instead of C x H x W for the product, which is then never stored nor
read back. Taken when OC < H x W (EfficientNet: the project convs down to 14x14 images; at 7x7 scaling
the weights would cost more than the product).

The analysis is backend-neutral and changes no graph: a backend that can print epilogues (its
``conv_epilogues`` capability) asks :func:`conv_epilogues` which conv each fusable group belongs to;
the driver (:mod:`graphc.backend.lowering`) then lowers the conv at the group's root, where every
operand of the group is defined, with :attr:`KernelBuilder.epilogue` set, and the conv's rule prints the
fields of :func:`epilogue_fields`. Nothing between the conv and the root reads the conv's result (the
group is its only user), so moving the conv down to the root changes no value.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._dtype import float32
from ..ir.graph import Graph, Node, Value
from ..sym import is_static
from .fusion import FusionGroup

__all__ = ["ConvEpilogue", "conv_epilogues", "ConvInputScale", "conv_input_scales", "EPILOGUE_ACTS"]

# the activations an epilogue applies (the names backends map to their own kinds)
EPILOGUE_ACTS = ("relu", "clamp", "sigmoid", "silu", "tanh", "gelu", "gelu_tanh", "hardswish")
_UNARY = {"relu": "relu", "sigmoid": "sigmoid", "silu": "silu", "tanh": "tanh"}


@dataclass
class ConvEpilogue:
    """The group ``group`` fused into ``conv``'s output write."""

    conv: Node
    group: FusionGroup
    act: str | None = None  # one of EPILOGUE_ACTS, or None
    lo: float = 0.0  # clamp bounds (act == "clamp")
    hi: float = 0.0
    residual: Value | None = None
    res_first: bool = False  # act(y + res) (True) or act(y) + res
    pool: Node | None = None  # a global average pool of the result, computed by the same kernel

    @property
    def out(self) -> Value:
        """The value the fused kernel writes: the group's root."""
        return self.group.root.out


def _const(v: Value, group: FusionGroup) -> float | None:
    n = v.node
    if n is not None and n.op == "constant" and n in group.constants:
        return float(n.attrs["value"])
    return None


def _same(v: Value, like: Value) -> bool:
    return v.type.dtype is float32 and v.type.shape == like.type.shape


def _act_at(nodes: list[Node], i: int, x: Value, group: FusionGroup) -> tuple[str, float, float, int] | None:
    """The activation of x starting at nodes[i]: (kind, lo, hi, nodes it takes), or None."""
    n = nodes[i]
    if n.inputs[0] is not x:
        return None
    if n.op in _UNARY and len(n.inputs) == 1:
        return _UNARY[n.op], 0.0, 0.0, 1
    if n.op == "gelu":
        return ("gelu" if n.attrs["approximate"] == "none" else "gelu_tanh"), 0.0, 0.0, 1
    if n.op == "hardtanh":
        return "clamp", float(n.attrs["min_val"]), float(n.attrs["max_val"]), 1
    if n.op == "add" and i + 3 < len(nodes):  # hardswish: mul(x, hardtanh(x + 3, 0, 6)) / 6
        h, m, d = nodes[i + 1:i + 4]
        if (_const(n.inputs[1], group) == 3.0 and h.op == "hardtanh" and h.inputs[0] is n.out
                and float(h.attrs["min_val"]) == 0.0 and float(h.attrs["max_val"]) == 6.0 and m.op == "mul"
                and list(m.inputs) == [x, h.out] and d.op == "div" and d.inputs[0] is m.out
                and _const(d.inputs[1], group) == 6.0):
            return "hardswish", 0.0, 0.0, 4
    return None


def _residual_add(n: Node, x: Value) -> Value | None:
    """The other operand when n is add(x, r) or add(r, x) with r of x's shape (no broadcast)."""
    if n.op != "add" or len(n.inputs) != 2:
        return None
    a, b = n.inputs
    r = b if a is x else a if b is x else None
    if r is None or r is x or not _same(r, x):
        return None
    return r


def _match(conv: Node, group: FusionGroup) -> ConvEpilogue | None:
    nodes, y = group.nodes, conv.out
    e = ConvEpilogue(conv, group)
    i, cur = 0, y
    r = _residual_add(nodes[0], cur)
    if r is not None and r.node is not conv:
        e.residual, e.res_first = r, True
        cur, i = nodes[0].out, 1
    if i < len(nodes):
        act = _act_at(nodes, i, cur, group)
        if act is not None:
            e.act, e.lo, e.hi, k = act
            cur, i = nodes[i + k - 1].out, i + k
    if i < len(nodes) and e.residual is None:
        r = _residual_add(nodes[i], cur)
        if r is not None:
            e.residual, e.res_first = r, False
            cur, i = nodes[i].out, i + 1
    if i != len(nodes) or cur is not group.root.out or (e.act is None and e.residual is None):
        return None
    if e.residual is not None and (e.residual is y or e.residual.node in nodes):
        return None  # relu(y) + y: the conv's own result is not stored, so it cannot be read back
    # inside the group only the chain's own values are read: y once per use, constants, the residual
    allowed = {y, *(m.out for m in nodes), *(c.out for c in group.constants)}
    if e.residual is not None:
        allowed.add(e.residual)
    if any(v is not None and v not in allowed for m in nodes for v in m.inputs):
        return None
    return e


def conv_epilogues(g: Graph, groups: list[FusionGroup]) -> dict[Node, ConvEpilogue]:
    """The fusable (conv, group) pairs of g, keyed by the group's root."""
    users = g.users()
    outs = {v for _, v in g.outputs}
    found: dict[Node, ConvEpilogue] = {}
    for grp in groups:
        members = set(grp.nodes)
        # either operand of the first node may be the conv (x + conv(h) where x is another conv's result
        # that has users elsewhere: the conv whose only user is the group takes it)
        for src in dict.fromkeys(grp.nodes[0].inputs):
            if src is None or src.node is None or src.node.op != "conv" or src in outs:
                continue
            conv = src.node
            if (not _same(src, grp.root.out) or conv.out.type.ndim not in (3, 4)
                    or any(v is not None and v.type.dtype is not float32 for v in conv.inputs)):
                continue
            if not users[src] or any(u not in members for u in users[src]):
                continue
            e = _match(conv, grp)
            if e is not None:
                e.pool = next((u for u in users[e.out] if u.op == "adaptive_avg_pool2d" and u.inputs[0] is e.out
                               and list(u.attrs["output_size"]) == [1, 1] and u.out.type.dtype is float32
                               and u.out not in outs), None) if e.out.type.ndim == 4 else None
                found[grp.root] = e
                break
    return found


@dataclass
class ConvInputScale:
    """``conv`` reads ``mul(x, scale)``: its kernel reads x and scale instead, the mul is not lowered."""

    conv: Node
    mul: Node
    x: Value
    scale: Value  # [N, C, 1, 1]


def _pointwise(conv: Node) -> bool:
    """A 2-d 1x1 conv with stride 1 and no padding (static sizes)."""
    shape = list(conv.inputs[0].type.shape)
    w = list(conv.inputs[1].type.shape)
    if conv.op != "conv" or len(shape) != 4 or len(w) != 4 or not all(is_static(d) for d in (*shape, *w)):
        return False
    a = conv.attrs

    def ints(v: object) -> list:
        return list(v) if isinstance(v, (list, tuple)) else [v, v]

    return (w[2] == 1 and w[3] == 1 and all(s == 1 for s in ints(a["stride"]))
            and all(isinstance(q, int) and q == 0 for q in ints(a["padding"])))


def conv_input_scales(g: Graph, groups: list[FusionGroup]) -> dict[Node, ConvInputScale]:
    """The 1x1 convs of g that take a channel scale of their input into their weights, keyed by the conv."""
    users = g.users()
    outs = {v for _, v in g.outputs}
    single = {grp.root for grp in groups if len(grp.nodes) == 1 and not grp.constants}
    found: dict[Node, ConvInputScale] = {}
    for n in g.nodes:
        if n.op != "conv" or len(n.inputs) < 2 or n.inputs[0] is None or n.inputs[0].node is None:
            continue
        v, m = n.inputs[0], n.inputs[0].node
        if (m not in single or m.op != "mul" or len(m.inputs) != 2 or v in outs or users[v] != [n]
                or any(u is not None and u.type.dtype is not float32 for u in (*n.inputs, *m.inputs))
                or not _pointwise(n)):
            continue
        x, s = m.inputs
        if x.type.shape != v.type.shape:
            x, s = s, x
        N, C, H, W = v.type.shape
        if x.type.shape != v.type.shape or tuple(s.type.shape) != (N, C, 1, 1) or x is s:
            continue
        if n.out.type.shape[1] >= H * W:
            continue  # scaling the weights would cost more than the product
        found[n] = ConvInputScale(n, m, x, s)
    return found
