"""Render the op registry as a Markdown reference: ``python -m graphc.ops.doc > docs/ops.md``.

tests/test_docs.py checks that docs/ops.md is up to date, so the reference cannot drift from the code.
"""

from __future__ import annotations

from . import OPS
from .registry import REQUIRED


def _attr(name: str, spec) -> str:
    if spec.default is REQUIRED:
        return f"`{name}: {spec.kind}`"
    d = spec.default
    d = repr(list(d)) if isinstance(d, tuple) else repr(d)
    return f"`{name}: {spec.kind} = {d}`"


def render() -> str:
    lines = [
        "# Op reference",
        "",
        "Generated from the registry by `python -m graphc.ops.doc > docs/ops.md` (a test keeps it current).",
        "Each op is one record in `graphc/ops/*.py`: operands (`?` optional, `*` variadic), attributes with",
        "their kinds and defaults, a type rule, a numpy reference, and its family (how backends lower it).",
        "",
        "| op | operands | attributes | family | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in sorted(OPS):
        op = OPS[name]
        if op.family == "custom":  # registered by user code (graphc.library), not graphc's own
            continue
        attrs = ", ".join(_attr(k, v) for k, v in op.attrs.items()) or "—"
        doc = " ".join(op.doc.split()) if op.doc else ""
        if not doc and op.scalar:
            doc = f"elementwise: `{op.scalar}`"
        doc = doc.replace("|", "\\|")
        lines.append(f"| `{name}` | {', '.join(op.inputs) or '—'} | {attrs} | {op.family} | {doc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
