"""CompiledModel.__call__'s fast path (a model without dynamic dims, positional numpy inputs of exactly
the compiled dtypes, shapes and C strides): the same results as the full path, and every other input
(another dtype, a non-contiguous or misaligned array, a torch tensor, keywords, a wrong shape) still
takes the full path, with its copies and its error messages."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
import graphc.nn as nn


@pytest.fixture(scope="module")
def model(tmp_path_factory, shared_cache):
    m = nn.Sequential(nn.Linear(12, 9), nn.ReLU(), nn.Linear(9, 5))
    x = np.random.default_rng(0).standard_normal((3, 12)).astype(np.float32)
    cm = graphc.compile(m, (x,), cache_dir=shared_cache)
    ref = graphc.compile(m, (x,), cache_dir=shared_cache, opt_level=0)
    return cm, ref, x


def _spy(cm):
    """Count the calls that reach the full path's input check."""
    calls = []
    real = cm._check
    cm._check = lambda args: (calls.append(1), real(args))[1]
    return calls


def test_fast_path_matches_full_path(model):
    cm, ref, x = model
    calls = _spy(cm)
    try:
        got = cm(x)
        assert calls == []  # the fast path took it
        np.testing.assert_allclose(got, ref(x), rtol=1e-6, atol=1e-6)
        assert np.array_equal(got, cm.run(**{cm.input_names[0]: x})[cm.output_names[0]])
        assert got is not cm(x)  # a fresh output each call
    finally:
        del cm._check


def test_other_inputs_take_the_full_path(model):
    cm, ref, x = model
    want = ref(x)
    calls = _spy(cm)
    try:
        wide = np.zeros((3, 24), np.float32)
        wide[:, ::2] = x
        raw = np.empty(x.nbytes + 8, np.uint8)
        start = -raw.ctypes.data % 16 + 2
        odd = np.frombuffer(raw.data, np.float32, x.size, start).reshape(x.shape)  # 2 bytes off alignment
        odd[...] = x
        assert not odd.flags.aligned
        for arg in (wide[:, ::2], odd, x.tolist()):
            np.testing.assert_allclose(cm(arg), want, rtol=1e-6, atol=1e-6)
        assert len(calls) == 3
        with pytest.raises(ValueError, match="f32"):
            cm(x.astype(np.float64))
        with pytest.raises(ValueError):
            cm(x[:2])
        with pytest.raises(ValueError, match="takes 1 input"):
            cm(x, x)
    finally:
        del cm._check
