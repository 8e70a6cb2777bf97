"""The IR's canonical text form (parsed back by grammar.lark / parser.py).

    graph mlp(%x : f32[B,784]) -> (output) {
      dim B in 1..256
      param @fc1.weight : f32[256,784]
      param @fc1.bias : f32[256]
      %linear : f32[B,256] = linear(%x, @fc1.weight, @fc1.bias)  # fc1 @ model.py:12
      %relu : f32[B,256] = relu(%linear)  # act @ model.py:13
      return output=%relu
    }

One SSA value per line; attributes sorted by name inside ``[...]``; a missing optional operand is
``none``; ``# scope @ file:line`` records the module path and the user's source line. Names that are
not plain (``[A-Za-z0-9_.]``) are written as JSON strings.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .._dtype import dtype
from ..sym import Sym

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$|^[0-9]+$")
_PLAIN_LOC = re.compile(r"^[A-Za-z0-9_.\-/]+:[0-9]+$")


def quote_name(name: str) -> str:
    return name if _PLAIN.match(name) else json.dumps(name)


def format_float(v: float) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    r = repr(float(v))
    return r if ("." in r or "e" in r or "n" in r) else r + ".0"


def format_attr(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return format_float(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dtype):
        return v.short
    if isinstance(v, Sym):
        return str(v)
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(format_attr(x) for x in v) + "]"
    raise TypeError(f"cannot print attribute value {v!r} of type {type(v).__name__}")


def format_type(t) -> str:
    return f"{t.dtype.short}[{','.join(str(d) for d in t.shape)}]"


def value_ref(v) -> str:
    if v is None:
        return "none"
    return ("@" if v.kind == "param" else "%") + quote_name(v.name)


def print_node(n) -> str:
    attrs = ""
    if n.attrs:
        attrs = "[" + ", ".join(f"{k}={format_attr(n.attrs[k])}" for k in sorted(n.attrs)) + "]"
    line = f"%{quote_name(n.out.name)} : {format_type(n.out.type)} = {n.op}{attrs}(" + \
        ", ".join(value_ref(v) for v in n.inputs) + ")"
    meta = []
    if n.scope:
        meta.append(quote_name(n.scope))
    if n.loc:
        meta.append("@ " + (n.loc if _PLAIN_LOC.match(n.loc) else json.dumps(n.loc)))
    if meta:
        line += "  # " + " ".join(meta)
    return line


def print_graph(g) -> str:
    ins = ", ".join(f"%{quote_name(v.name)} : {format_type(v.type)}" for v in g.inputs)
    outs = ", ".join(quote_name(k) for k, _ in g.outputs)
    lines = [f"graph {quote_name(g.name)}({ins}) -> ({outs}) {{"]
    for name, (lo, hi) in g.dims.items():
        lines.append(f"  dim {name} in {lo}..{hi}")
    for name, v in g.params.items():
        lines.append(f"  param @{quote_name(name)} : {format_type(v.type)}")
    for n in g.nodes:
        lines.append("  " + print_node(n))
    lines.append("  return " + ", ".join(f"{quote_name(k)}={value_ref(v)}" for k, v in g.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"
