"""NaN-aware output comparison: `graphc compile --verify` and graphc.ir.interpreter.compare_outputs
fail when an output holds NaN on one side only, and accept NaN in the same places on both sides."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import graphc
from graphc import _dtype as D
from graphc.cli import UserError, _verify
from graphc.ir.interpreter import compare_outputs, interpret


def test_compare_outputs_is_nan_aware():
    ref = {"y": np.array([1.0, np.nan, 3.0, np.inf], np.float32)}
    same = compare_outputs({"y": ref["y"].copy()}, ref)[0]
    assert same["rel"] == 0.0 and same["nan_mismatch"] == 0
    one_side = compare_outputs({"y": np.array([1.0, 2.0, np.nan, np.inf], np.float32)}, ref)[0]
    assert one_side["nan_mismatch"] == 2 and one_side["rel"] == float("inf")
    inf_vs_finite = compare_outputs({"y": np.array([1.0, np.nan, 3.0, 5.0], np.float32)}, ref)[0]
    assert not inf_vs_finite["rel"] <= 1e-3
    close = compare_outputs({"y": np.array([1.0, np.nan, 3.000001, np.inf], np.float32)}, ref)[0]
    assert 0 < close["rel"] < 1e-6
    assert compare_outputs({"y": np.zeros(3)}, ref)[0]["rel"] == float("inf")  # shape differs


class _Log(graphc.nn.Module):
    def forward(self, x):
        return x.log()  # NaN for the negative random inputs


def _fake_library(graph, corrupt):
    """A stand-in for a compiled library: the reference interpreter, with its output changed."""
    def run(**feeds):
        out = interpret(graph, feeds)
        return {k: corrupt(v.copy()) for k, v in out.items()}

    inputs = [SimpleNamespace(name=v.name, dims=[str(d) if not isinstance(d, int) else d for d in v.type.shape],
                              dtype=v.type.dtype) for v in graph.inputs]
    return SimpleNamespace(inputs=inputs, dims=dict(graph.dims), run=run)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_verify_fails_on_nan_on_one_side_only(capsys):
    g = graphc.trace(_Log(), (np.ones((2, 8), np.float32),))
    assert g.inputs[0].type.dtype is D.float32

    def nan_to_zero(a):
        a[np.isnan(a)] = 0.0  # the library "loses" the NaNs: a max over errors that skips NaN saw 0
        return a

    _verify(_fake_library(g, lambda a: a), g)  # NaN in the same places on both sides: OK
    assert "NaN on one side" not in capsys.readouterr().out
    with pytest.raises(UserError, match=r"NaN on one side only in output"):
        _verify(_fake_library(g, nan_to_zero), g)

    def one_nan(a):
        a[np.isfinite(a)] = np.nan
        return a

    with pytest.raises(UserError, match=r"NaN on one side only in output"):
        _verify(_fake_library(g, one_nan), g)
