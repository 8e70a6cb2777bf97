"""Pictures of a model: its graph as Graphviz DOT and its memory plan as SVG (``graphc show``).

Plain functions of a Graph or an exported manifest that return text; the CLI writes them (and runs
Graphviz's ``dot`` for .svg/.png/.pdf graphs).
"""

from __future__ import annotations

from typing import Any

__all__ = ["graph_to_dot", "memory_plan_svg", "human_bytes"]


def human_bytes(n: float) -> str:
    """A byte count as people read it: 512 B, 1.5 KB, 3.0 MB, 2.0 GB."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def graph_to_dot(g, params: bool = False) -> str:
    """Graphviz DOT of a graph: nodes labelled with op, type and module path (parameters on request)."""
    from .ir.printer import format_attr

    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace('"', '\\"')

    def label(*lines: str) -> str:
        return "\\n".join(esc(x) for x in lines if x)

    lines = [f'digraph "{esc(g.name)}" {{', "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="Helvetica", fontsize=10];',
             '  edge [color="#555555", arrowsize=0.6];']
    ids: dict[int, str] = {}
    for i, v in enumerate(g.inputs):
        ids[id(v)] = f"in{i}"
        lines.append(f'  in{i} [label="{label(v.name, str(v.type))}", shape=ellipse, fillcolor="#d9f2d9"];')
    for i, n in enumerate(g.nodes):
        ids[id(n.out)] = f"n{i}"
        attrs = ", ".join(f"{k}={format_attr(v)}" for k, v in sorted(n.attrs.items()))
        head = n.op + (f"[{attrs}]" if attrs and len(attrs) <= 40 else "")
        weights = [v.name for v in n.inputs if v is not None and v.kind == "param"]
        extra = ("@" + ", @".join(weights)) if weights and not params else ""
        if len(extra) > 40:
            extra = f"{len(weights)} parameters"
        lines.append(f'  n{i} [label="{label(head, str(n.out.type), n.scope, extra)}"];')
    nparam = 0
    for i, n in enumerate(g.nodes):
        for v in n.inputs:
            if v is None:
                continue
            if v.kind == "param":
                if not params:
                    continue
                if id(v) not in ids:
                    ids[id(v)] = f"p{nparam}"
                    lines.append(f'  p{nparam} [label="{label("@" + v.name, str(v.type))}", shape=note, '
                                 'fillcolor="#fff4d6"];')
                    nparam += 1
            lines.append(f"  {ids[id(v)]} -> n{i};")
    for j, (name, v) in enumerate(g.outputs):
        if id(v) not in ids:  # an output that is a parameter
            ids[id(v)] = f"p{nparam}"
            lines.append(f'  p{nparam} [label="{label("@" + v.name, str(v.type))}", shape=note, fillcolor="#fff4d6"];')
            nparam += 1
        lines.append(f'  out{j} [label="{label(name, str(v.type))}", shape=ellipse, fillcolor="#f9dcdc"];')
        lines.append(f"  {ids[id(v)]} -> out{j};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _checked_blocks(plan: Any, ev: Any) -> list[dict]:
    """The blocks of a manifest's memory plan, each checked for what drawing it reads: a damaged or
    hand-edited plan is one ValueError naming the key (never a traceback from inside the drawing)."""
    def bad(where: str, why: str) -> ValueError:
        return ValueError(f"damaged manifest: 'memory_plan{where}' {why}; export the model again")

    if not isinstance(plan, dict):
        raise bad("", "is not an object")
    blocks = plan.get("blocks", [])
    if not isinstance(blocks, list):
        raise bad(".blocks", "is not a list")
    if not isinstance(plan.get("steps", []), list):
        raise bad(".steps", "is not a list")
    for i, b in enumerate(blocks):
        if not isinstance(b, dict):
            raise bad(f".blocks[{i}]", "is not an object")
        for key in ("value", "offset", "size", "first", "last"):
            if key not in b:
                raise bad(f".blocks[{i}].{key}", "is missing")
        for key in ("first", "last"):
            if not isinstance(b[key], int) or isinstance(b[key], bool) or b[key] < 0:
                raise bad(f".blocks[{i}].{key}", f"is {b[key]!r}, not a step number")
        for key in ("offset", "size"):
            try:
                ev(b[key])
            except (ValueError, TypeError, KeyError, ZeroDivisionError):
                raise bad(f".blocks[{i}].{key}", f"is {b[key]!r}, not a size in the model's dims") from None
    try:
        ev(plan.get("arena_bytes", 0))
    except (ValueError, TypeError, KeyError, ZeroDivisionError):
        raise bad(".arena_bytes", f"is {plan.get('arena_bytes')!r}, not a size in the model's dims") from None
    return blocks


def memory_plan_svg(manifest: dict) -> str:
    """Each intermediate as a box: its lifetime (x, schedule steps) against its arena offset (y)."""
    plan = manifest.get("memory_plan") or {}
    env = {d["name"]: d["max"] for d in manifest.get("dims", [])}

    def ev(x: Any) -> int:
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            return int(x)
        from .sym import evaluate, parse_dim

        return evaluate(parse_dim(str(x)), env)

    blocks = _checked_blocks(plan, ev)
    steps = max([len(plan.get("steps", []))] + [b["last"] + 1 for b in blocks] + [1])

    arena = max([ev(plan.get("arena_bytes", 0))] + [ev(b["offset"]) + ev(b["size"]) for b in blocks] + [1])
    W, H, L, T, R, B = 960, 560, 90, 50, 20, 60
    sx, sy = (W - L - R) / steps, (H - T - B) / arena
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="Helvetica" '
           f'font-size="10">', f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15">memory plan of {manifest.get("name", "")}: '
           f'arena {human_bytes(arena)} at {", ".join(f"{k}={v}" for k, v in env.items()) or "static shapes"}</text>',
           f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
           f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>',
           f'<text x="{(L + W - R) / 2}" y="{H - 20}" text-anchor="middle">schedule step (node index)</text>',
           f'<text x="18" y="{(T + H - B) / 2}" transform="rotate(-90 18 {(T + H - B) / 2})" '
           f'text-anchor="middle">arena offset (bytes)</text>']
    for k in range(5):
        off = arena * k / 4
        y = H - B - off * sy
        out.append(f'<text x="{L - 6}" y="{y + 3}" text-anchor="end">{human_bytes(int(off))}</text>')
        out.append(f'<line x1="{L - 3}" y1="{y}" x2="{L}" y2="{y}" stroke="black"/>')
    names = plan.get("steps", [])
    every = max(1, steps // 12)
    for k in range(0, steps, every):
        x = L + (k + 0.5) * sx
        out.append(f'<line x1="{x:.1f}" y1="{H - B}" x2="{x:.1f}" y2="{H - B + 4}" stroke="black"/>')
        tick = f"{k}" + (f" %{names[k]}" if k < len(names) and steps <= 8 else "")
        out.append(f'<text x="{x:.1f}" y="{H - B + 15}" text-anchor="middle">{tick}</text>')
    palette = ["#8ecae6", "#ffb703", "#90be6d", "#f28482", "#cdb4db", "#f6bd60", "#84a59d", "#e9c46a"]
    for i, b in enumerate(blocks):
        off, size = ev(b["offset"]), ev(b["size"])
        x0, x1 = L + b["first"] * sx, L + (b["last"] + 1) * sx
        y1, y0 = H - B - off * sy, H - B - (off + size) * sy
        color = palette[i % len(palette)]
        label = f'%{", %".join(b.get("values") or [b["value"]])}: {human_bytes(size)} at offset {off}'
        out.append(f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{max(x1 - x0, 1):.1f}" height="{max(y1 - y0, 1):.1f}" '
                   f'fill="{color}" stroke="#333" stroke-width="0.6"><title>{label}</title></rect>')
        if (y1 - y0) > 11 and (x1 - x0) > 40:
            out.append(f'<text x="{x0 + 3:.1f}" y="{(y0 + y1) / 2 + 3:.1f}">%{b["value"]} · {human_bytes(size)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
