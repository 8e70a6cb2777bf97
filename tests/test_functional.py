"""graphc.nn.functional against torch.nn.functional (when installed): argument resolution ('same'
padding, unbatched inputs, bool masks, GQA, None strides), activations, losses and the clear errors
for what graphc does not support."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
import graphc.nn.functional as F
from graphc import ShapeError, TraceError
from graphc.trace import trace

rng = np.random.default_rng(1)


def arr(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def G(a):  # noqa: N802
    return None if a is None else graphc.tensor(a)


def T(a):  # noqa: N802
    import torch

    return None if a is None else torch.from_numpy(np.ascontiguousarray(a))


def close(g, t, rtol=1e-5, atol=1e-5):
    np.testing.assert_allclose(g.numpy(), t.detach().numpy(), rtol=rtol, atol=atol)


@pytest.fixture
def TF():  # noqa: N802
    torch = pytest.importorskip("torch")
    return torch.nn.functional


# ------------------------------------------------------------------------------------------- conv
@pytest.mark.parametrize("xs,ws,kw", [
    ((2, 3, 9, 8), (4, 3, 3, 3), {"padding": "same"}),
    ((2, 3, 9, 8), (4, 3, 4, 2), {"padding": "same"}),  # even kernels: extra padding on the right
    ((2, 3, 9, 8), (4, 3, 4, 3), {"padding": "same", "dilation": (1, 3)}),
    ((2, 3, 9, 8), (4, 3, 3, 3), {"padding": "valid", "stride": 2}),
    ((3, 9, 8), (4, 3, 3, 3), {"padding": (1, 2), "stride": (2, 1)}),  # unbatched
    ((1, 4, 6, 6), (4, 2, 3, 3), {"padding": 1, "groups": 2}),
])
@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_conv2d(TF, xs, ws, kw):
    x, w, b = arr(*xs), arr(*ws), arr(ws[0])
    close(F.conv2d(G(x), G(w), G(b), **kw), TF.conv2d(T(x), T(w), T(b), **kw))


@pytest.mark.parametrize("xs,ws,kw", [
    ((2, 3, 10), (4, 3, 3), {"padding": "same"}),
    ((2, 3, 10), (4, 3, 4), {"padding": "same", "dilation": 3}),
    ((3, 10), (4, 3, 2), {"stride": 2, "padding": 1}),
])
@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_conv1d(TF, xs, ws, kw):
    x, w = arr(*xs), arr(*ws)
    close(F.conv1d(G(x), G(w), None, **kw), TF.conv1d(T(x), T(w), None, **kw))


def test_conv_transpose(TF):
    x, w, b = arr(2, 4, 5, 3), arr(4, 3, 3, 2), arr(6)
    kw = {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2, "dilation": 1}
    close(F.conv_transpose2d(G(x), G(w), G(b), **kw), TF.conv_transpose2d(T(x), T(w), T(b), **kw))
    close(F.conv_transpose2d(G(x[0]), G(w), G(b), **kw), TF.conv_transpose2d(T(x[0]), T(w), T(b), **kw))
    x1, w1 = arr(2, 4, 7), arr(4, 2, 3)
    close(F.conv_transpose1d(G(x1), G(w1), stride=3, dilation=2),
          TF.conv_transpose1d(T(x1), T(w1), stride=3, dilation=2))


def test_conv_errors():
    x, w = G(arr(2, 3, 8, 8)), G(arr(4, 3, 3, 3))
    with pytest.raises(ValueError, match="conv2d: padding='same' is not supported for strided"):
        F.conv2d(x, w, padding="same", stride=2)
    with pytest.raises(ValueError, match="conv2d: invalid padding string 'full'"):
        F.conv2d(x, w, padding="full")
    with pytest.raises(ValueError, match=r"conv2d: expected a 3-d \(unbatched\) or 4-d \(batched\) input"):
        F.conv2d(G(arr(8, 8)), w)
    with pytest.raises(ValueError, match="conv2d: stride must be an int or a tuple of 2 ints"):
        F.conv2d(x, w, stride=(1, 2, 3))
    with pytest.raises(ShapeError, match="conv: input .* has 5 channels"):
        F.conv2d(G(arr(2, 5, 8, 8)), w)


# ---------------------------------------------------------------------------------------- pooling
def test_pools(TF):
    x = arr(2, 3, 9, 7)
    close(F.max_pool2d(G(x), 3, None, 1, ceil_mode=True), TF.max_pool2d(T(x), 3, None, 1, ceil_mode=True))
    close(F.max_pool2d(G(x[0]), (2, 3), (1, 2), dilation=(2, 1)),
          TF.max_pool2d(T(x[0]), (2, 3), (1, 2), dilation=(2, 1)))
    close(F.avg_pool2d(G(x), 3, 2, 1, True, False), TF.avg_pool2d(T(x), 3, 2, 1, True, False))
    close(F.avg_pool2d(G(x[1]), 2, divisor_override=3), TF.avg_pool2d(T(x[1]), 2, divisor_override=3))
    close(F.adaptive_avg_pool2d(G(x), (4, None)), TF.adaptive_avg_pool2d(T(x), (4, None)))
    close(F.adaptive_avg_pool2d(G(x[0]), 1), TF.adaptive_avg_pool2d(T(x[0]), 1))
    x1 = arr(2, 3, 11)
    close(F.max_pool1d(G(x1), 3, 2, 1, ceil_mode=True), TF.max_pool1d(T(x1), 3, 2, 1, ceil_mode=True))
    close(F.max_pool1d(G(x1[0]), 2, dilation=2), TF.max_pool1d(T(x1[0]), 2, dilation=2))
    close(F.avg_pool1d(G(x1), 4, 3, 2, True, False), TF.avg_pool1d(T(x1), 4, 3, 2, True, False))
    close(F.adaptive_avg_pool1d(G(x1), 4), TF.adaptive_avg_pool1d(T(x1), 4))
    close(F.adaptive_avg_pool1d(G(x1[0]), 3), TF.adaptive_avg_pool1d(T(x1[0]), 3))


def test_pool_errors():
    with pytest.raises(NotImplementedError, match="max_pool2d: return_indices=True is not supported"):
        F.max_pool2d(G(arr(1, 1, 4, 4)), 2, return_indices=True)
    with pytest.raises(ValueError, match="max_pool2d: expected a 3-d .* or 4-d"):
        F.max_pool2d(G(arr(4, 4)), 2)


# ---------------------------------------------------------------------------------- normalisation
def test_batch_norm_eval_and_training(TF):
    torch = pytest.importorskip("torch")
    x, w, b = arr(4, 3, 5), arr(3), arr(3)
    m, v = arr(3), np.abs(arr(3)) + 0.5
    close(F.batch_norm(G(x), G(m), G(v), G(w), G(b)), TF.batch_norm(T(x), T(m), T(v), T(w), T(b)))
    gm, gv = G(m), G(v)
    tm, tv = torch.tensor(m), torch.tensor(v)
    close(F.batch_norm(G(x), gm, gv, G(w), G(b), training=True, momentum=0.3),
          TF.batch_norm(T(x), tm, tv, T(w), T(b), training=True, momentum=0.3))
    close(gm, tm)
    close(gv, tv)
    close(F.batch_norm(G(x), None, None, training=False), TF.batch_norm(T(x), None, None, training=True))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        F.batch_norm(G(arr(1, 3)), None, None, training=True)


def test_layer_group_rms_norm(TF):
    x = arr(2, 4, 6) * 2 + 1
    w6, b6 = arr(6), arr(6)
    close(F.layer_norm(G(x), (6,), G(w6), G(b6)), TF.layer_norm(T(x), (6,), T(w6), T(b6)))
    close(F.layer_norm(G(x), 6), TF.layer_norm(T(x), (6,)))
    w46 = arr(4, 6)
    close(F.layer_norm(G(x), (4, 6), G(w46), eps=1e-3), TF.layer_norm(T(x), (4, 6), T(w46), eps=1e-3))
    close(F.group_norm(G(x), 2, G(arr(4) * 0 + 1)), TF.group_norm(T(x), 2))
    close(F.rms_norm(G(x), (6,), G(w6)), TF.rms_norm(T(x), (6,), T(w6)))
    close(F.rms_norm(G(x), [4, 6], eps=1e-2), TF.rms_norm(T(x), [4, 6], eps=1e-2))
    with pytest.raises(ValueError, match=r"layer_norm: given normalized_shape=\[5\], expected input with shape "
                                         r"\[\*, 5\], but got input of size \[2, 4, 6\]"):
        F.layer_norm(G(x), (5,))


def test_normalize(TF):
    x = arr(3, 5)
    for p in (2, 1, 3.0, float("inf")):
        close(F.normalize(G(x), p=p), TF.normalize(T(x), p=p))
    close(F.normalize(G(x), dim=0), TF.normalize(T(x), dim=0))
    z = np.zeros((2, 3), np.float32)
    close(F.normalize(G(z)), TF.normalize(T(z)))


# -------------------------------------------------------------------------------------- embedding
def test_embedding(TF):
    w = arr(7, 3)
    idx = np.array([[0, 6, 2], [1, 1, 3]])
    close(F.embedding(G(idx), G(w), padding_idx=1), TF.embedding(T(idx), T(w), padding_idx=1))
    with pytest.raises(NotImplementedError, match="embedding: max_norm"):
        F.embedding(G(idx), G(w), max_norm=1.0)
    with pytest.raises(IndexError, match="embedding: index 7 is out of range"):
        F.embedding(G(np.array([7])), G(w))
    oh = F.one_hot(G(np.array([0, 2, 1])), 4)
    assert oh.dtype is graphc.int64 and oh.tolist() == TF.one_hot(T(np.array([0, 2, 1])), 4).tolist()


# ---------------------------------------------------------------------------------------- dropout
def test_dropout():
    x = G(arr(200, 100))
    assert (F.dropout(x, 0.3, training=False).numpy() == x.numpy()).all()
    graphc.manual_seed(0)
    y = F.dropout(x, 0.3, training=True).numpy()
    kept = y != 0
    assert 0.65 < kept.mean() < 0.75
    np.testing.assert_allclose(y[kept], x.numpy()[kept] / 0.7, rtol=1e-6)
    assert (F.dropout(x, 1.0).numpy() == 0).all()
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got 1.5"):
        F.dropout(x, 1.5)


# ------------------------------------------------------------------------------------ activations
ACTS = [
    ("relu", {}), ("relu6", {}), ("leaky_relu", {"negative_slope": 0.2}), ("gelu", {}),
    ("gelu", {"approximate": "tanh"}), ("silu", {}), ("sigmoid", {}), ("tanh", {}), ("elu", {"alpha": 0.7}),
    ("selu", {}), ("celu", {"alpha": 1.5}), ("softplus", {"beta": 2.0, "threshold": 5.0}),
    ("hardtanh", {"min_val": -0.5, "max_val": 2.0}), ("mish", {}), ("hardswish", {}), ("hardsigmoid", {}),
    ("logsigmoid", {}), ("softsign", {}), ("tanhshrink", {}), ("softmax", {"dim": 1}),
    ("log_softmax", {"dim": -1}), ("softmin", {"dim": 0}), ("glu", {"dim": 1}),
]


@pytest.mark.parametrize("name,kw", ACTS)
def test_activations(TF, name, kw):
    x = arr(3, 8) * 4
    close(getattr(F, name)(G(x), **kw), getattr(TF, name)(T(x), **kw))


def test_inplace_activation():
    x = G(arr(4))
    y = F.relu(x, inplace=True)
    assert y is x and (x.numpy() >= 0).all()


# -------------------------------------------------------------------------------------------- pad
def test_pad(TF):
    x = arr(2, 3, 4)
    for p in [(1, 2), (0, 1, 2, 0), (1, 1, 1, 1, 1, 1), (-1, 2)]:
        close(F.pad(G(x), p, value=1.5), TF.pad(T(x), p, value=1.5))
    close(F.pad(G(x), (1, 1), mode="reflect"), TF.pad(T(x), (1, 1), mode="reflect"))  # more in test_nn_more.py


# -------------------------------------------------------------------------------------- attention
def test_sdpa_masks(TF):
    q, k, v = arr(2, 4, 5, 8), arr(2, 4, 7, 8), arr(2, 4, 7, 6)
    bmask = rng.random((5, 7)) > 0.3
    bmask[:, 0] = True
    fmask = arr(2, 1, 5, 7)
    for m in (bmask, fmask, None):
        close(F.scaled_dot_product_attention(G(q), G(k), G(v), G(m)),
              TF.scaled_dot_product_attention(T(q), T(k), T(v), T(m)))
    close(F.scaled_dot_product_attention(G(q), G(k), G(v), is_causal=True, scale=0.2),
          TF.scaled_dot_product_attention(T(q), T(k), T(v), is_causal=True, scale=0.2))
    with pytest.raises(RuntimeError, match="attn_mask should not be set when is_causal=True"):
        F.scaled_dot_product_attention(G(q), G(k), G(v), G(bmask), is_causal=True)


def test_sdpa_gqa_and_broadcast(TF):
    q, k, v = arr(2, 6, 5, 4), arr(2, 2, 7, 4), arr(2, 2, 7, 3)
    close(F.scaled_dot_product_attention(G(q), G(k), G(v), enable_gqa=True),
          TF.scaled_dot_product_attention(T(q), T(k), T(v), enable_gqa=True))
    k1, v1 = arr(1, 6, 7, 4), arr(1, 6, 7, 3)
    close(F.scaled_dot_product_attention(G(q), G(k1), G(v1)), TF.scaled_dot_product_attention(T(q), T(k1), T(v1)))


def test_sdpa_dropout_eager_only():
    q = G(arr(1, 3, 4))
    graphc.manual_seed(0)
    y = F.scaled_dot_product_attention(q, q, q, dropout_p=0.5)
    assert y.shape == (1, 3, 4)

    class M(graphc.nn.Module):
        def forward(self, x):
            return F.scaled_dot_product_attention(x, x, x, dropout_p=0.5)

    with pytest.raises(TraceError, match="dropout_p > 0 is random and cannot be traced"):
        trace(M(), (q,))


# ----------------------------------------------------------------------------------------- losses
def test_losses(TF):
    x = arr(4, 5)
    t = np.array([0, 4, 2, -100])
    w = np.abs(arr(5)) + 0.1
    for kw in ({}, {"reduction": "sum"}, {"reduction": "none"}, {"label_smoothing": 0.2}):
        close(F.cross_entropy(G(x), G(t), **kw), TF.cross_entropy(T(x), T(t), **kw))
        close(F.cross_entropy(G(x), G(t), G(w), **kw), TF.cross_entropy(T(x), T(t), T(w), **kw))
    probs = np.abs(arr(4, 5))
    probs /= probs.sum(1, keepdims=True)
    close(F.cross_entropy(G(x), G(probs)), TF.cross_entropy(T(x), T(probs)))
    x3, t3 = arr(2, 5, 3), np.array([[0, 1, 4], [2, 2, 3]])
    close(F.cross_entropy(G(x3), G(t3)), TF.cross_entropy(T(x3), T(t3)))
    close(F.nll_loss(G(x), G(t), reduction="sum"), TF.nll_loss(T(x), T(t), reduction="sum"))
    y = arr(4, 5)
    close(F.mse_loss(G(x), G(y)), TF.mse_loss(T(x), T(y)))
    close(F.l1_loss(G(x), G(y), reduction="none"), TF.l1_loss(T(x), T(y), reduction="none"))
    with pytest.raises(ValueError, match="'avg' is not a valid value for reduction"):
        F.mse_loss(G(x), G(y), reduction="avg")


# ------------------------------------------------------------------------------------------- trace
def test_functional_traces_with_dynamic_batch():
    w, b = G(arr(4, 3, 3, 3)), G(arr(4))

    class M(graphc.nn.Module):
        def forward(self, x):
            y = F.conv2d(x, w, b, padding="same")
            y = F.max_pool2d(F.relu(y), 2)
            y = F.adaptive_avg_pool2d(y, 1).flatten(1)
            return F.log_softmax(y, -1)

    x = arr(2, 3, 8, 8)
    g = trace(M(), (G(x),), dynamic={"x": {0: "B"}})
    for n in (1, 3):
        xi = arr(n, 3, 8, 8)
        out = graphc.ir.interpret(g, x=xi)["output"]
        np.testing.assert_allclose(out, M()(G(xi)).numpy(), rtol=1e-6)
