"""A third backend is one module plus one templates folder, and the two built-in backends keep apart.

tests/null_backend/ holds a compile-only backend ("null", after tinygrad's NULL device): backend.py
(rules over the shared analysis, knobs) and templates/ (a listing instead of code). Registered from
here, it compiles the examples' kind of models and every family of the op table through graphc.compile
and the CLI's backend list, with no file of graphc changed. The source checks: no backend-name
comparison outside the backends' own modules, and c.py / cuda.py import nothing from each other.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc.backend import registry
from graphc.backend.analysis import linear_shape
from graphc.compiler import generate
from graphc.ir import Graph
from graphc.ops import OPS
from graphc.ops.registry import TensorType
from tests.null_backend.backend import NullBackend

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "graphc"


@pytest.fixture()
def null_backend():
    registry.register_backend(NullBackend)
    try:
        yield NullBackend
    finally:
        registry.BACKENDS.pop(NullBackend.name, None)


def _mlp_graph() -> Graph:
    rng = np.random.default_rng(0)
    g = Graph("mlp")
    g.dims["B"] = (1, 8)
    from graphc.sym import Sym

    B = Sym.var("B")
    x = g.add_input("x", TensorType((B, 16), graphc.float32))
    w1 = g.add_param("fc1.weight", TensorType((32, 16), graphc.float32), rng.standard_normal((32, 16)).astype("f4"))
    b1 = g.add_param("fc1.bias", TensorType((32,), graphc.float32), rng.standard_normal(32).astype("f4"))
    h = g.add_node("linear", [x, w1, b1], {}, TensorType((B, 32), graphc.float32), scope="fc1").out
    r = g.add_node("relu", [h], {}, TensorType((B, 32), graphc.float32), scope="act").out
    s = g.add_node("softmax", [r], {"dim": 1}, TensorType((B, 32), graphc.float32), scope="").out
    g.outputs.append(("y", s))
    return g


def test_the_null_backend_compiles_through_graphc_compile(null_backend, tmp_path):
    g = _mlp_graph()
    assert "null" in registry.backend_names()  # what the CLI offers as --backend choices
    out = tmp_path / "mlp_null"
    assert graphc.compile(g, backend="null", emit_only=True, out_dir=out) is None
    listing = (out / "mlp_kernels0.lst").read_text()
    # the shared analysis, printed by this backend: linear's M (the dynamic batch), N and K
    M, N, K = linear_shape(next(n for n in g.nodes if n.op == "linear"))
    assert "template op.lst.j2" in listing and f"n = {N}" in listing and f"k = {K}" in listing
    assert "m = B" in listing and str(M) == "B"
    # relu went through the shared elementwise lowering, softmax through the axis split [outer, n, inner]
    assert "template elementwise.lst.j2" in listing and "split = ['B', '32', '1']" in listing
    schedule = (out / "mlp_model.lst").read_text()
    assert re.findall(r"^\s+\d+: \w+ \((\w+)\)$", schedule, re.M) == ["linear", "relu", "softmax"]
    # the shared layout: the backend's own templates plus templates/common/ (main.c, weights.S)
    assert {"mlp.h", "mlp_internal.lsth", "mlp_model.lst", "mlp_kernels0.lst", "main.c", "mlp_weights.S",
            "Makefile", "mlp_cffi.h"} <= {p.name for p in out.iterdir()}


def test_the_null_backend_lowers_every_family_of_the_op_table(null_backend):
    from tests import test_backend_ops as T

    families = set()
    for c in T.all_cases():
        if not T.buildable(c) or c.variant != "static":
            continue
        g = T.build_graph(f"null_{c.op}", [c])
        prog, sources, _ = generate(g, backend="null", name=f"null_{c.op}")
        assert prog.kernels or OPS[c.op].family == "view", c.op
        families.add(OPS[c.op].family)
        assert any(name.endswith(".lst") for name in sources)
    # every family of the registry has cases (so the loop above covered them all)
    assert families == {op.family for op in OPS.values()}


# ------------------------------------------------------------------------------------- source checks
_BACKEND_MODULES = {PKG / "backend" / "c.py", PKG / "backend" / "cuda.py"}
# a backend name compared as a string: == "c", "cuda" != x, in ("c", "cuda"), .startswith("cuda")
_NAME_TEST = re.compile(r"""(==|!=)\s*["'](c|cuda)["']|["'](c|cuda)["']\s*(==|!=)|\bin\s+[(\[{]\s*["'](c|cuda)["']"""
                        r"""|["'](c|cuda)["']\s+(not\s+)?in\b|startswith\(\s*["'](c|cuda)["']""")
# torch's device API (graphc.device("cuda").type == "cuda") compares device types, not backends
_DEVICE_TYPE = re.compile(r"""\.type\s*(==|!=)\s*["']cuda["']""")


def test_no_backend_name_comparisons_outside_the_backends():
    found = []
    for path in sorted(PKG.rglob("*.py")):
        if path in _BACKEND_MODULES:
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if _NAME_TEST.search(code) and not _DEVICE_TYPE.search(code):
                found.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not found, "backend names compared outside graphc/backend/c.py and cuda.py:\n" + "\n".join(found)


def _imports(path: Path) -> set[str]:
    """The modules a graphc/backend module imports, resolved to dotted names."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "graphc.backend" if node.level == 1 else "graphc" if node.level == 2 else ""
            mod = ".".join(x for x in (base, node.module or "") if x)
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # from . import c
    return out


def test_the_c_and_cuda_backends_import_nothing_from_each_other():
    c_imports = _imports(PKG / "backend" / "c.py")
    cuda_imports = _imports(PKG / "backend" / "cuda.py")
    assert not {m for m in cuda_imports if m == "graphc.backend.c" or m.startswith("graphc.backend.c.")}
    assert not {m for m in c_imports if m == "graphc.backend.cuda" or m.startswith("graphc.backend.cuda.")}
    # and both take the shared analysis instead
    assert "graphc.backend.analysis" in c_imports and "graphc.backend.analysis" in cuda_imports


def test_backend_knobs_are_the_backends_own_options():
    """The neutral BuildOptions carry no CUDA field; CUDA's arch/nvcc_flags are its subclass's, checked by
    its build_options, and another backend refuses them naming the backend that takes them."""
    import dataclasses

    from graphc.backend.build import BuildOptions
    from graphc.compiler import build_options

    assert not {"arch", "nvcc_flags"} & {f.name for f in dataclasses.fields(BuildOptions)}
    o = build_options("cuda", name="m", arch="sm_80")
    assert isinstance(o, BuildOptions) and o.arch == "sm_80" and "-arch=sm_80" in o.nvcc_flags
    with pytest.raises(ValueError, match="arch is an option of the CUDA backend, not of backend 'c'"):
        build_options("c", name="m", arch="sm_80")
    assert not hasattr(build_options("c", name="m"), "arch")
