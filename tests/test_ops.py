"""Every registry op: its numpy reference agrees with its type rule, with PyTorch (an independent
implementation, when installed), and eager Tensor math, tracing and the interpreter agree.

How to add an op: define it in graphc/ops/*.py, then add sample cases to tests/op_table.py (and a
PyTorch twin to TORCH there when one exists); these tests pick it up.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc._dtype import from_numpy_dtype
from graphc.ir.graph import Graph
from graphc.ir.interpreter import interpret
from graphc.ir.verify import verify
from graphc.ops import OPS, TensorType
from graphc.ops.registry import get_op
from tests.op_table import SAMPLES, TORCH

CASES = [(name, i) for name in sorted(SAMPLES) for i in range(len(SAMPLES[name]))]


def test_every_op_has_samples():
    missing = sorted(set(OPS) - set(SAMPLES))
    assert not missing, f"ops without sample cases in tests/op_table.py: {missing}"


def test_every_op_is_complete():
    for name, op in OPS.items():
        assert op.ref is not None, f"op {name} has no numpy reference"
        assert op.lowering, f"op {name} names no lowering"
        if op.lowering == "elementwise":
            assert op.scalar, f"elementwise op {name} has no scalar C expression"


def _types(arrays):
    return [TensorType(tuple(a.shape), from_numpy_dtype(a.dtype)) for a in arrays]


@pytest.mark.parametrize("name,i", CASES)
def test_reference_matches_rule(name, i):
    arrays, attrs = SAMPLES[name][i]
    op = get_op(name)
    bound = op.bind_attrs(attrs)
    t = op.infer_type(_types(arrays), bound)
    out = np.asarray(op.ref(*arrays, **bound))
    assert tuple(out.shape) == t.shape, f"{name}: reference shape {out.shape} vs rule {t.shape}"
    assert out.dtype == t.dtype.np, f"{name}: reference dtype {out.dtype} vs rule {t.dtype}"


@pytest.mark.parametrize("name,i", [c for c in CASES if c[0] in TORCH])
def test_reference_matches_torch(name, i):
    torch = pytest.importorskip("torch")
    arrays, attrs = SAMPLES[name][i]
    op = get_op(name)
    bound = op.bind_attrs(attrs)
    want = TORCH[name](torch, *[torch.from_numpy(np.array(a)) for a in arrays], **attrs)
    got = np.asarray(op.ref(*arrays, **bound))
    want = want.numpy()
    assert got.shape == want.shape
    if got.dtype == np.bool_ or got.dtype.kind in "iu":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("name,i", CASES)
def test_interpreter_matches_reference(name, i):
    """A one-node graph per case: verify, print/parse-independent interpretation equals the reference."""
    arrays, attrs = SAMPLES[name][i]
    op = get_op(name)
    bound = op.bind_attrs(attrs)
    g = Graph("case")
    ins = [g.add_input(f"x{j}", t) for j, t in enumerate(_types(arrays))]
    n = g.add_node(name, ins, bound, op.infer_type([v.type for v in ins], bound))
    g.set_outputs([("y", n.out)])
    verify(g)
    got = interpret(g, {f"x{j}": a for j, a in enumerate(arrays)})["y"]
    np.testing.assert_array_equal(got, op.ref(*arrays, **bound))


def test_unknown_op_suggests():
    with pytest.raises(graphc.ShapeError, match="did you mean linear|unknown op 'lnear'"):
        get_op("lnear")


def test_attribute_errors_name_op_and_attribute():
    op = get_op("softmax")
    with pytest.raises(graphc.ShapeError, match="softmax: missing required attribute 'dim'"):
        op.bind_attrs({})
    with pytest.raises(graphc.ShapeError, match="softmax: unknown attribute"):
        op.bind_attrs({"dim": 0, "axis": 1})
    with pytest.raises(graphc.ShapeError, match="attribute 'dim' expects int"):
        op.bind_attrs({"dim": 1.5})


def test_arity_errors():
    with pytest.raises(graphc.ShapeError, match="add: expects 2 operand"):
        get_op("add").infer_type(_types([np.zeros(2, np.float32)]), {})


def test_binary_requires_one_dtype():
    with pytest.raises(graphc.ShapeError, match="same dtype"):
        get_op("add").infer_type(_types([np.zeros(2, np.float32), np.zeros(2, np.int64)]), {})
