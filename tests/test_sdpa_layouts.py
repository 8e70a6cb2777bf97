"""Permutes and slices around attention folded into the sdpa kernel's strides (graphc/backend/layouts.py).

Multi-head attention written the usual way (a fused qkv projection reshaped to [B, T, 3, H, D], permuted,
sliced into q, k, v; the output transposed back) compiles to a library whose sdpa reads the projection's
output through strides and writes the [B, T, H, D] layout itself: no permute or slice kernel is left,
and the results match PyTorch (fixed and dynamic T and batch, causal, a mask, 1 and 2 threads). Where a
permuted value has another use, or a reshape cannot be expressed by strides, the copy stays and the
results are still right. reshape_strides is checked against numpy's own views.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.backend.layouts import reshape_strides

torch = pytest.importorskip("torch")


def attention_classes(nn, F):
    class SelfAttention(nn.Module):
        def __init__(self, d, heads, causal=False, extra_use=False, split_first=False):
            super().__init__()
            self.heads, self.causal, self.extra_use, self.split_first = heads, causal, extra_use, split_first
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)

        def forward(self, x, mask=None):
            b, t, d = x.shape
            h = self.heads
            if self.split_first:  # q, k, v as [B, T, H, D] slices of [B, T, 3 * D], each transposed
                y = self.qkv(x)
                q, k, v = (y[:, :, i * d:(i + 1) * d].reshape(b, t, h, d // h).transpose(1, 2) for i in range(3))
            else:
                qkv = self.qkv(x).reshape(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
                q, k, v = qkv[0], qkv[1], qkv[2]
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=self.causal)
            out = self.proj(o.transpose(1, 2).reshape(b, t, d))
            if self.extra_use:  # the permuted q is read by something else too: its copy must stay
                out = out + q.sum(1).reshape(b, t, d // h).mean(-1, keepdim=True)
            return out

    return SelfAttention


def build(heads=4, d=32, **kw):
    torch.manual_seed(0)
    tm = attention_classes(torch.nn, torch.nn.functional)(d, heads, **kw).eval()
    gm = attention_classes(graphc.nn, graphc.nn.functional)(d, heads, **kw)
    gm.load_state_dict({k: v.detach().numpy().copy() for k, v in tm.state_dict().items()})
    gm.eval()
    return tm, gm


def kernel_ops(cm, *xs):
    cm.enable_profile()
    cm(*xs)
    ops = [r["op"] for r in cm.profile()]
    cm.enable_profile(False)
    return ops


def reference(tm, *xs):
    with torch.inference_mode():
        return tm(*(torch.from_numpy(x) for x in xs)).numpy()


@pytest.mark.parametrize("kw", [{}, {"causal": True}, {"split_first": True}], ids=["plain", "causal", "split"])
def test_folded_attention_matches_torch(kw, tmp_path, shared_cache):
    tm, gm = build(**kw)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 13, 32)).astype(np.float32)
    cm = graphc.compile(gm, (x,), {"x": {0: "B", 1: "T"}}, cache_dir=shared_cache)
    ops = kernel_ops(cm, x)
    assert "sdpa" in ops and not {"permute", "slice"} & set(ops), ops
    for nt in (1, 2):
        cm.set_num_threads(nt)
        for b, t in ((2, 13), (1, 1), (3, 40), (1, 129)):
            xb = rng.standard_normal((b, t, 32)).astype(np.float32)
            np.testing.assert_allclose(cm(xb), reference(tm, xb), rtol=1e-4, atol=1e-5, err_msg=f"B={b} T={t}")


def test_folded_attention_with_a_mask(tmp_path, shared_cache):
    tm, gm = build(heads=2, d=16)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 9, 16)).astype(np.float32)
    mask = np.where(rng.random((2, 1, 9, 9)) > 0.3, 0.0, -np.inf).astype(np.float32)
    mask[..., 0] = 0.0
    cm = graphc.compile(gm, (x, mask), cache_dir=shared_cache)
    assert not {"permute", "slice"} & set(kernel_ops(cm, x, mask))
    np.testing.assert_allclose(cm(x, mask), reference(tm, x, mask), rtol=1e-4, atol=1e-5)


def test_a_permute_with_another_use_keeps_its_copy(tmp_path, shared_cache):
    tm, gm = build(extra_use=True)
    x = np.random.default_rng(3).standard_normal((1, 7, 32)).astype(np.float32)
    cm = graphc.compile(gm, (x,), cache_dir=shared_cache)
    assert "permute" in kernel_ops(cm, x)
    np.testing.assert_allclose(cm(x), reference(tm, x), rtol=1e-4, atol=1e-5)


def test_reshape_strides_match_numpy_views():
    base = np.zeros((4, 6, 5, 8), np.float32)
    cases = [
        (base.transpose(2, 0, 1, 3), (5, 24, 8)),      # merge two contiguous dims
        (base.transpose(2, 0, 1, 3), (5, 4, 3, 2, 8)),  # split one
        (base[:, :, 1], (4, 2, 3, 8)),
        (base[::2].transpose(1, 0, 2, 3), (6, 2, 40)),
        (base[:1, :, :1], (6, 8)),                      # size-1 dims dropped
        (base.transpose(1, 0, 2, 3), (24, 5, 8)),       # not expressible: 6 x 4 transposed do not merge
        (base[:, :, ::2], (4, 6, 24)),                  # nor a strided dim merged with the next
    ]
    for view, shape in cases:
        got = reshape_strides(view.shape, [s // 4 for s in view.strides], shape)
        try:
            want = np.reshape(view, shape, copy=False)  # numpy refuses exactly when a copy is needed
        except ValueError:
            assert got is None, (view.shape, view.strides, shape)
            continue
        assert got is not None, (view.shape, shape)
        assert [s for s, n in zip(got, shape) if n != 1] == [s // 4 for s, n in zip(want.strides, shape) if n != 1]
