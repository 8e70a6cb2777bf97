"""graphc.nn layers against torch.nn (when installed): the same constructor arguments, torch's
state_dict loaded into graphc, outputs equal in eval mode over several shapes; state_dict keys and
order, reprs, default initialisation, errors for bad inputs, LoRA, and tracing of models built
from the layers."""

from __future__ import annotations

import math

import numpy as np
import pytest

import graphc
import graphc.nn as gnn
from graphc import ShapeError
from graphc.ir import interpret
from graphc.trace import trace

rng = np.random.default_rng(2)
pytestmark = [pytest.mark.filterwarnings("ignore:Using padding='same'"),
              pytest.mark.filterwarnings("ignore:Support for mismatched")]


def arr(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def _torch():
    return pytest.importorskip("torch")


def randomize(tmod) -> None:
    """Give every float parameter/buffer of a torch module random values (variances positive), so
    zero/one defaults cannot hide a mistake."""
    torch = _torch()
    with torch.no_grad():
        for name, t in list(tmod.named_parameters()) + list(tmod.named_buffers()):
            if t.dtype.is_floating_point:
                vals = torch.from_numpy(arr(*t.shape))
                if t.ndim >= 2:  # weights at the scale of the default init keep activations O(1)
                    vals = vals / math.sqrt(math.prod(t.shape[1:]))
                t.copy_(vals.abs() + 0.5 if name.endswith("running_var") else vals)


def twins(name: str, *args, **kwargs):
    """(torch module, graphc module) built with the same arguments, graphc loaded from torch, both eval."""
    torch = _torch()
    t = getattr(torch.nn, name)(*args, **kwargs)
    g = getattr(gnn, name)(*args, **kwargs)
    randomize(t)
    tsd = t.state_dict()
    assert list(g.state_dict().keys()) == list(tsd.keys())
    g.load_state_dict(tsd)
    for k, v in g.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), tsd[k].numpy(), err_msg=k)
    t.eval()
    g.eval()
    assert repr(g) == repr(t)
    return t, g


def compare(t, g, *inputs, rtol=1e-5, atol=1e-6):
    torch = _torch()
    with torch.no_grad():
        ref = t(*[torch.from_numpy(np.array(x)) for x in inputs])
    out = g(*[graphc.tensor(np.array(x)) for x in inputs])
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=rtol, atol=atol)


# --------------------------------------------------------------------------- single-input layers
CASES = [
    ("Linear", (5, 3), {}, [(5,), (1, 5), (2, 4, 5)]),
    ("Linear", (5, 3), {"bias": False}, [(7, 5)]),
    ("Identity", (3,), {"unused": 1}, [(2, 3)]),
    ("Conv1d", (3, 4, 3), {}, [(2, 3, 10), (3, 10), (1, 3, 3)]),
    ("Conv1d", (4, 6, 4), {"stride": 2, "padding": 1, "dilation": 2, "groups": 2, "bias": False}, [(2, 4, 11)]),
    ("Conv1d", (3, 4, 4), {"padding": "same"}, [(2, 3, 9), (3, 1)]),
    ("Conv2d", (3, 4, 3), {}, [(2, 3, 8, 9), (3, 7, 7), (1, 3, 3, 3)]),
    ("Conv2d", (4, 8, (3, 2)), {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 2), "groups": 4},
     [(2, 4, 9, 8)]),
    ("Conv2d", (3, 5, 4), {"padding": "same"}, [(2, 3, 6, 5)]),
    ("Conv2d", (3, 5, 3), {"padding": "valid", "bias": False}, [(1, 3, 5, 6)]),
    ("ConvTranspose1d", (4, 3, 3), {"stride": 2, "padding": 1, "output_padding": 1}, [(2, 4, 5), (4, 1)]),
    ("ConvTranspose2d", (4, 6, (3, 2)), {"stride": 2, "padding": 1, "output_padding": (1, 0), "groups": 2},
     [(2, 4, 3, 4), (4, 2, 2)]),
    ("ConvTranspose2d", (4, 3, 3), {"dilation": 2, "bias": False}, [(1, 4, 3, 3)]),
    ("MaxPool1d", (3, 2, 1), {"ceil_mode": True}, [(2, 3, 10), (3, 7)]),
    ("MaxPool2d", (3,), {}, [(2, 3, 9, 10), (3, 6, 6)]),
    ("MaxPool2d", ((2, 3),), {"stride": (1, 2), "padding": 1, "dilation": (2, 1), "ceil_mode": True},
     [(1, 2, 7, 8)]),
    ("AvgPool1d", (3, 2, 1), {"count_include_pad": False}, [(2, 3, 10), (3, 7)]),
    ("AvgPool2d", (3, 2, 1), {"ceil_mode": True, "count_include_pad": False}, [(2, 3, 9, 10), (3, 6, 6)]),
    ("AvgPool2d", (2,), {"divisor_override": 3}, [(1, 2, 4, 5)]),
    ("AdaptiveAvgPool1d", (4,), {}, [(2, 3, 10), (3, 7)]),
    ("AdaptiveAvgPool2d", ((3, None),), {}, [(2, 3, 7, 5), (3, 4, 4)]),
    ("AdaptiveAvgPool2d", (1,), {}, [(2, 3, 7, 5)]),
    ("BatchNorm1d", (4,), {}, [(3, 4), (2, 4, 5)]),
    ("BatchNorm1d", (4,), {"affine": False, "eps": 1e-3}, [(3, 4)]),
    ("BatchNorm2d", (3,), {"momentum": None}, [(2, 3, 4, 5), (1, 3, 1, 2)]),
    ("BatchNorm2d", (3,), {"track_running_stats": False}, [(2, 3, 4, 5)]),  # eval uses batch statistics
    ("LayerNorm", (6,), {}, [(6,), (2, 6), (2, 3, 6)]),
    ("LayerNorm", ((4, 6),), {"elementwise_affine": False}, [(2, 4, 6)]),
    ("LayerNorm", (6,), {"bias": False, "eps": 1e-3}, [(3, 6)]),
    ("GroupNorm", (2, 4), {}, [(2, 4), (2, 4, 5), (1, 4, 3, 3)]),
    ("GroupNorm", (4, 4), {"affine": False}, [(2, 4, 5)]),
    ("RMSNorm", (6,), {}, [(2, 6), (2, 3, 6)]),
    ("RMSNorm", ((4, 6),), {"eps": 1e-3, "elementwise_affine": False}, [(2, 4, 6)]),
    ("Dropout", (0.3,), {}, [(4, 5)]),
    ("Flatten", (), {}, [(2, 3, 4), (2, 3)]),
    ("Flatten", (0, 1), {}, [(2, 3, 4)]),
    ("Unflatten", (1, (2, 3)), {}, [(4, 6, 5)]),
    ("ReLU", (), {}, [(3, 4)]),
    ("ReLU", (), {"inplace": True}, [(3, 4)]),
    ("LeakyReLU", (0.2,), {}, [(3, 4)]),
    ("GELU", (), {}, [(3, 4)]),
    ("GELU", (), {"approximate": "tanh"}, [(3, 4)]),
    ("SiLU", (), {}, [(3, 4)]),
    ("Sigmoid", (), {}, [(3, 4)]),
    ("Tanh", (), {}, [(3, 4)]),
    ("Softmax", (), {"dim": 1}, [(3, 4), (2, 3, 4)]),
    ("LogSoftmax", (), {"dim": -1}, [(3, 4)]),
    ("Softmin", (1,), {}, [(3, 4)]),
    ("ELU", (0.5,), {}, [(3, 4)]),
    ("CELU", (1.5,), {}, [(3, 4)]),
    ("SELU", (), {}, [(3, 4)]),
    ("Softplus", (2.0, 3.0), {}, [(3, 4)]),
    ("Hardtanh", (-2.0, 3.0), {}, [(3, 4)]),
    ("ReLU6", (), {}, [(3, 4)]),
    ("Mish", (), {}, [(3, 4)]),
    ("Hardswish", (), {}, [(3, 4)]),
    ("Hardsigmoid", (), {}, [(3, 4)]),
    ("LogSigmoid", (), {}, [(3, 4)]),
    ("Softsign", (), {}, [(3, 4)]),
    ("Tanhshrink", (), {}, [(3, 4)]),
    ("GLU", (), {}, [(3, 4)]),
]


@pytest.mark.parametrize("name,args,kwargs,shapes", CASES, ids=[f"{c[0]}{i}" for i, c in enumerate(CASES)])
def test_layer_matches_torch(name, args, kwargs, shapes):
    t, g = twins(name, *args, **kwargs)
    for shape in shapes:
        x = arr(*shape) * 3
        compare(t, g, x)


def test_bilinear():
    t, g = twins("Bilinear", 4, 3, 2)
    for lead in [(), (1,), (5,), (2, 3)]:
        compare(t, g, arr(*lead, 4), arr(*lead, 3))
    t, g = twins("Bilinear", 4, 3, 2, bias=False)
    compare(t, g, arr(5, 4), arr(5, 3))


@pytest.mark.parametrize("kwargs", [{}, {"padding_idx": -2}, {"padding_idx": 0}])
def test_embedding(kwargs):
    torch = _torch()
    t, g = twins("Embedding", 10, 3, **kwargs)
    for shape in [(), (1,), (4,), (2, 5)]:
        idx = rng.integers(0, 10, size=shape)
        compare(t, g, idx, rtol=0, atol=0)
    w = arr(6, 2)
    te = torch.nn.Embedding.from_pretrained(torch.from_numpy(w), padding_idx=1)
    ge = gnn.Embedding.from_pretrained(graphc.tensor(w), padding_idx=1)
    assert repr(te) == repr(ge) and not ge.weight.requires_grad
    compare(te, ge, np.array([[1, 5], [0, 2]]))


def test_conv_transpose_output_size():
    torch = _torch()
    t, g = twins("ConvTranspose2d", 3, 2, 3, stride=2, padding=1)
    x = arr(1, 3, 4, 5)
    for size in [(7, 9), (8, 10), [1, 2, 8, 9]]:
        with torch.no_grad():
            ref = t(torch.from_numpy(x), output_size=size)
        np.testing.assert_allclose(g(graphc.tensor(x), output_size=size).numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ShapeError, match=r"ConvTranspose2d: requested an output size of \[10, 9\]"):
        g(graphc.tensor(x), output_size=(10, 9))


def test_batchnorm_training_mode_updates_running_stats():
    torch = _torch()
    for momentum in (0.1, None):
        t, g = twins("BatchNorm2d", 3, momentum=momentum)
        t.train()
        g.train()
        for _ in range(2):
            x = arr(4, 3, 2, 5)
            with torch.no_grad():
                ref = t(torch.from_numpy(x))
            np.testing.assert_allclose(g(graphc.tensor(x)).numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)
        for k, v in t.state_dict().items():
            np.testing.assert_allclose(g.state_dict()[k].numpy(), v.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
        assert g.num_batches_tracked.dtype is graphc.int64 and g.num_batches_tracked.ndim == 0


def test_batchnorm_loads_old_checkpoint_without_num_batches_tracked():
    g = gnn.BatchNorm1d(3)
    sd = {k: v for k, v in g.state_dict().items() if k != "num_batches_tracked"}
    g.load_state_dict(sd)


def test_dropout_training_is_random_and_eval_is_identity():
    g = gnn.Dropout(0.5)
    x = graphc.ones(100, 100)
    graphc.manual_seed(3)
    y = g(x).numpy()
    assert set(np.unique(y)) <= {0.0, 2.0} and 0.4 < (y == 0).mean() < 0.6
    g.eval()
    assert (g(x).numpy() == 1).all()


# ----------------------------------------------------------------------------- multi-head attention
def _mha_inputs(batch_first, batched, L, S, E, kdim, vdim, n=2):
    if not batched:
        return arr(L, E), arr(S, kdim), arr(S, vdim)
    if batch_first:
        return arr(n, L, E), arr(n, S, kdim), arr(n, S, vdim)
    return arr(L, n, E), arr(S, n, kdim), arr(S, n, vdim)


def _run_mha(t, g, q, k, v, *, self_attn=False, **kw):
    torch = _torch()
    tk = {key: (torch.from_numpy(val) if isinstance(val, np.ndarray) else val) for key, val in kw.items()}
    gk = {key: (graphc.tensor(val) if isinstance(val, np.ndarray) else val) for key, val in kw.items()}
    if self_attn:
        tq = torch.from_numpy(q)
        gq = graphc.tensor(q)
        targs, gargs = (tq, tq, tq), (gq, gq, gq)
    else:
        targs = tuple(torch.from_numpy(a) for a in (q, k, v))
        gargs = tuple(graphc.tensor(a) for a in (q, k, v))
    with torch.no_grad():
        ref, refw = t(*targs, **tk)
    out, w = g(*gargs, **gk)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-5, atol=2e-6)
    if refw is None:
        assert w is None
    else:
        np.testing.assert_allclose(w.numpy(), refw.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("kv", [(None, None), (5, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_mha(batch_first, kv, bias):
    E, H, L, S, n = 8, 2, 4, 6, 3
    kdim, vdim = kv
    t, g = twins("MultiheadAttention", E, H, bias=bias, kdim=kdim, vdim=vdim, batch_first=batch_first)
    kd, vd = kdim or E, vdim or E
    q, k, v = _mha_inputs(batch_first, True, L, S, E, kd, vd, n)
    kpm = rng.random((n, S)) < 0.3
    kpm[:, 0] = False  # no fully masked rows here (see test_mha_fully_masked_rows)
    am_bool = rng.random((L, S)) < 0.3
    am_bool[:, 0] = False  # column 0 stays visible under every mask combination
    am_float = arr(L, S)
    am3 = arr(n * H, L, S)
    for need_weights in (True, False):
        for masks in ({}, {"key_padding_mask": kpm}, {"attn_mask": am_bool}, {"attn_mask": am_float},
                      {"attn_mask": am3, "key_padding_mask": kpm}, {"attn_mask": am_float,
                                                                    "key_padding_mask": arr(n, S)}):
            _run_mha(t, g, q, k, v, need_weights=need_weights, **masks)
    _run_mha(t, g, q, k, v, need_weights=True, average_attn_weights=False, attn_mask=am_bool)
    # unbatched
    q1, k1, v1 = _mha_inputs(batch_first, False, L, S, E, kd, vd)
    _run_mha(t, g, q1, k1, v1, key_padding_mask=kpm[0])
    _run_mha(t, g, q1, k1, v1, need_weights=False, attn_mask=am3[:H])


def test_mha_self_attention_and_causal():
    torch = _torch()
    E, H, L, n = 8, 4, 5, 2
    t, g = twins("MultiheadAttention", E, H, batch_first=True)
    x = arr(n, L, E)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(L).numpy()
    for need_weights in (True, False):
        _run_mha(t, g, x, None, None, self_attn=True, need_weights=need_weights)
        _run_mha(t, g, x, None, None, self_attn=True, need_weights=need_weights, attn_mask=causal, is_causal=True)
    with pytest.raises(RuntimeError, match="Need attn_mask if specifying the is_causal hint"):
        g(graphc.tensor(x), graphc.tensor(x), graphc.tensor(x), is_causal=True)


def test_mha_fully_masked_rows():
    # torch's functional path: zeros through scaled_dot_product_attention (need_weights=False), NaN through the
    # explicit softmax (need_weights=True). (Its no_grad fast path gives NaN for both; graphc follows the former.)
    torch = _torch()
    t, g = twins("MultiheadAttention", 8, 2, batch_first=True)
    x = arr(2, 3, 8)
    kpm = np.zeros((2, 3), bool)
    kpm[1] = True
    tx = torch.from_numpy(x)
    ref = t(tx, tx, tx, key_padding_mask=torch.from_numpy(kpm), need_weights=False)[0].detach().numpy()
    out = g(*(graphc.tensor(x),) * 3, key_padding_mask=graphc.tensor(kpm), need_weights=False)[0].numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    out_w, w = g(*(graphc.tensor(x),) * 3, key_padding_mask=graphc.tensor(kpm))
    assert np.isnan(out_w.numpy()[1]).all() and np.isnan(w.numpy()[1]).all() and np.isfinite(out_w.numpy()[0]).all()


def test_mha_state_dict_names():
    g = gnn.MultiheadAttention(8, 2)
    assert list(g.state_dict()) == ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    g = gnn.MultiheadAttention(8, 2, kdim=4, vdim=3, bias=False)
    assert list(g.state_dict()) == ["q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj.weight"]
    assert g.in_proj_weight is None and g.bias_k is None and g.head_dim == 4
    with pytest.raises(NotImplementedError, match="add_bias_kv=True is not supported"):
        gnn.MultiheadAttention(8, 2, add_bias_kv=True)
    with pytest.raises(AssertionError, match="embed_dim must be divisible by num_heads"):
        gnn.MultiheadAttention(8, 3)


# ------------------------------------------------------------------------------------ transformer
@pytest.mark.parametrize("kw", [
    {},
    {"batch_first": True, "norm_first": True, "activation": "gelu"},
    {"batch_first": True, "bias": False, "layer_norm_eps": 1e-3},
])
def test_transformer_encoder_layer(kw):
    torch = _torch()
    E, H, L, n = 8, 2, 5, 3
    t, g = twins("TransformerEncoderLayer", E, H, 16, 0.1, **kw)
    bf = kw.get("batch_first", False)
    x = arr(n, L, E) if bf else arr(L, n, E)
    kpm = rng.random((n, L)) < 0.3
    kpm[:, 0] = False
    causal = torch.nn.Transformer.generate_square_subsequent_mask(L).numpy()
    for masks in ({}, {"src_key_padding_mask": kpm}, {"src_mask": causal, "is_causal": True},
                  {"src_mask": causal, "src_key_padding_mask": kpm}):
        with torch.no_grad():
            ref = t(torch.from_numpy(x), **{k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                                            for k, v in masks.items()})
        out = g(graphc.tensor(x), **{k: graphc.tensor(v) if isinstance(v, np.ndarray) else v for k, v in masks.items()})
        np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)
    x1 = arr(L, E)  # unbatched
    compare(t, g, x1, rtol=1e-5, atol=1e-5)


def test_transformer_encoder_layer_callable_activation():
    torch = _torch()
    t = torch.nn.TransformerEncoderLayer(8, 2, 16, activation=torch.nn.functional.silu, batch_first=True)
    g = gnn.TransformerEncoderLayer(8, 2, 16, activation=gnn.functional.silu, batch_first=True)
    randomize(t)
    g.load_state_dict(t.state_dict())
    t.eval()
    g.eval()
    compare(t, g, arr(2, 5, 8), rtol=1e-5, atol=1e-5)


def test_transformer_encoder():
    torch = _torch()
    tl = torch.nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    t = torch.nn.TransformerEncoder(tl, 2, norm=torch.nn.LayerNorm(8), enable_nested_tensor=False)
    g = gnn.TransformerEncoder(gnn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 2, norm=gnn.LayerNorm(8),
                               enable_nested_tensor=False)
    randomize(t)
    assert list(g.state_dict()) == list(t.state_dict())
    g.load_state_dict(t.state_dict())
    assert repr(g) == repr(t)
    t.eval()
    g.eval()
    x = arr(3, 5, 8)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(5)
    with torch.no_grad():
        ref = t(torch.from_numpy(x), mask=causal)
    np.testing.assert_allclose(g(graphc.tensor(x), mask=graphc.tensor(causal.numpy())).numpy(), ref.numpy(),
                               rtol=1e-5, atol=1e-5)
    compare(t, g, x, rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------------------------------------- init
def _uniform_ok(w, bound):
    a = w.numpy()
    assert np.abs(a).max() <= bound + 1e-7
    assert abs(a.std() - bound / math.sqrt(3)) < 0.06 * bound
    assert abs(a.mean()) < 0.05 * bound


def test_default_initialisation():
    graphc.manual_seed(0)
    lin = gnn.Linear(200, 300)
    _uniform_ok(lin.weight, 1 / math.sqrt(200))
    _uniform_ok(lin.bias, 1 / math.sqrt(200))
    conv = gnn.Conv2d(16, 64, 3)
    _uniform_ok(conv.weight, 1 / math.sqrt(16 * 9))
    _uniform_ok(conv.bias, 1 / math.sqrt(16 * 9))
    convt = gnn.ConvTranspose2d(16, 32, 3)
    _uniform_ok(convt.weight, 1 / math.sqrt(32 * 9))  # fan_in is weight.size(1) * kernel, as in PyTorch
    bil = gnn.Bilinear(30, 20, 40)
    _uniform_ok(bil.weight, 1 / math.sqrt(30))
    mha = gnn.MultiheadAttention(64, 4)
    _uniform_ok(mha.in_proj_weight, math.sqrt(6 / (64 + 3 * 64)))
    assert (mha.in_proj_bias.numpy() == 0).all() and (mha.out_proj.bias.numpy() == 0).all()
    _uniform_ok(mha.out_proj.weight, 1 / math.sqrt(64))
    emb = gnn.Embedding(500, 64, padding_idx=3)
    w = emb.weight.numpy()
    assert (w[3] == 0).all() and abs(w.std() - 1) < 0.03 and abs(w.mean()) < 0.03
    bn = gnn.BatchNorm2d(5)
    assert (bn.weight.numpy() == 1).all() and (bn.bias.numpy() == 0).all()
    assert (bn.running_mean.numpy() == 0).all() and (bn.running_var.numpy() == 1).all()
    assert bn.num_batches_tracked.item() == 0
    ln = gnn.LayerNorm((3, 4))
    assert ln.weight.shape == (3, 4) and (ln.weight.numpy() == 1).all() and (ln.bias.numpy() == 0).all()
    assert (gnn.RMSNorm(6).weight.numpy() == 1).all()
    assert (gnn.GroupNorm(2, 6).weight.numpy() == 1).all()
    d = gnn.Linear(3, 4, dtype=graphc.float64)
    assert d.weight.dtype is graphc.float64 and d.bias.dtype is graphc.float64


# ----------------------------------------------------------------------------------------- errors
def G(*shape, dtype=np.float32):  # noqa: N802
    return graphc.tensor(arr(*shape, dtype=dtype))


def test_bad_inputs_name_the_layer():
    with pytest.raises(ShapeError, match=r"^Conv2d: expected input with 4 dims \(N, C, H, W\) or 3 \(C, H, W\), "
                                         r"got \[2, 3\]$"):
        gnn.Conv2d(3, 4, 3)(G(2, 3))
    with pytest.raises(ShapeError, match=r"Conv2d: expected input with 3 channels \(in_channels=3\) in dim -3, "
                                         r"got 5"):
        gnn.Conv2d(3, 4, 3)(G(2, 5, 8, 8))
    with pytest.raises(ShapeError, match=r"Conv1d: expected input with 3 dims \(N, C, L\) or 2 \(C, L\)"):
        gnn.Conv1d(3, 4, 3)(G(1, 3, 8, 8))
    with pytest.raises(ShapeError, match=r"Linear: expected input with 5 features \(in_features=5\) in dim -1, "
                                         r"got 4 \(shape \[2, 4\]\)"):
        gnn.Linear(5, 3)(G(2, 4))
    with pytest.raises(ShapeError, match="Linear: expected a floating-point input .* got dtype int64"):
        gnn.Linear(5, 3)(graphc.tensor(np.ones((2, 5), np.int64)))
    with pytest.raises(ShapeError, match="Linear: input dtype float64 does not match the layer's parameter dtype "
                                         "float32"):
        gnn.Linear(5, 3)(G(2, 5, dtype=np.float64))
    with pytest.raises(ShapeError, match="Linear: expected input with at least 1 dim"):
        gnn.Linear(5, 3)(graphc.tensor(1.0))
    with pytest.raises(ShapeError, match=r"BatchNorm2d: expected input with 4 dims \(N, C, H, W\), got \[2, 3, 4\]"):
        gnn.BatchNorm2d(3)(G(2, 3, 4))
    with pytest.raises(ShapeError, match=r"BatchNorm1d: expected input with 4 channels \(num_features=4\)"):
        gnn.BatchNorm1d(4)(G(2, 3))
    with pytest.raises(ShapeError, match=r"LayerNorm: expected input with shape \[\*, 6\] .* got \[2, 5\]"):
        gnn.LayerNorm(6)(G(2, 5))
    with pytest.raises(ShapeError, match="GroupNorm: expected input with 4 channels"):
        gnn.GroupNorm(2, 4)(G(2, 6, 3))
    with pytest.raises(ShapeError, match="Embedding: expected integer indices .* got dtype float32"):
        gnn.Embedding(5, 2)(G(3))
    with pytest.raises(IndexError, match="embedding: index 5 is out of range"):
        gnn.Embedding(5, 2)(graphc.tensor([1, 5]))
    with pytest.raises(ShapeError, match=r"MaxPool2d: expected input with 4 dims \(N, C, H, W\) or 3"):
        gnn.MaxPool2d(2)(G(4, 4))
    with pytest.raises(ShapeError, match="MaxPool2d: expected a floating-point input"):
        gnn.MaxPool2d(2)(graphc.tensor(np.ones((1, 1, 4, 4), np.int64)))
    with pytest.raises(ShapeError, match=r"MultiheadAttention: expected query with 8 features \(embed_dim=8\)"):
        m = gnn.MultiheadAttention(8, 2)
        m(G(3, 2, 6), G(3, 2, 8), G(3, 2, 8))
    with pytest.raises(ShapeError, match="MultiheadAttention: the shape of the 2D attn_mask is"):
        m = gnn.MultiheadAttention(8, 2)
        x = G(3, 2, 8)
        m(x, x, x, attn_mask=G(2, 2))
    with pytest.raises(TypeError, match="Linear: input must be a graphc.Tensor, got ndarray"):
        gnn.Linear(5, 3)(arr(2, 5))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        gnn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding='same' is not supported for strided convolutions"):
        gnn.Conv2d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="padding_mode must be one of .* but got padding_mode='mirror'"):
        gnn.Conv2d(3, 4, 3, padding_mode="mirror")
    with pytest.raises(NotImplementedError, match="MaxPool2d: return_indices=True is not supported"):
        gnn.MaxPool2d(2, return_indices=True)
    with pytest.raises(NotImplementedError, match="Embedding: max_norm"):
        gnn.Embedding(4, 2, max_norm=1.0)
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got 2"):
        gnn.Dropout(2)
    with pytest.raises(ValueError, match="num_channels must be divisible by num_groups"):
        gnn.GroupNorm(3, 4)


# ------------------------------------------------------------------------------------------- LoRA
def test_lora_adapters_switching_and_merge():
    base = gnn.Linear(6, 4)
    m = gnn.LoraLinear(base, r=2, lora_alpha=4)
    assert m.base_layer is base and m.scaling == {"default": 2.0}
    x = G(3, 6)
    np.testing.assert_allclose(m(x).numpy(), base(x).numpy(), rtol=1e-6)  # B starts at zero
    m.add_adapter("other", r=3, lora_alpha=6)
    for name in ("default", "other"):
        m.lora_B[name].weight.numpy()[...] = arr(*m.lora_B[name].weight.shape)
    assert list(m.state_dict()) == ["base_layer.weight", "base_layer.bias", "lora_A.default.weight",
                                    "lora_A.other.weight", "lora_B.default.weight", "lora_B.other.weight"]
    assert m.active_adapter == "default"
    xn = x.numpy().astype(np.float64)
    W, b = base.weight.numpy().astype(np.float64), base.bias.numpy().astype(np.float64)

    def manual(name):
        A = m.lora_A[name].weight.numpy().astype(np.float64)
        B = m.lora_B[name].weight.numpy().astype(np.float64)
        return xn @ W.T + b + m.scaling[name] * (xn @ A.T @ B.T)

    y_default = m(x).numpy()
    np.testing.assert_allclose(y_default, manual("default"), rtol=1e-5, atol=1e-6)
    m.set_adapter("other")
    y_other = m(x).numpy()
    np.testing.assert_allclose(y_other, manual("other"), rtol=1e-5, atol=1e-6)
    assert not np.allclose(y_default, y_other)
    w_before = base.weight.numpy().copy()
    m.merge()
    assert m.merged and m.merged_adapters == ["other"]
    np.testing.assert_allclose(m(x).numpy(), y_other, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(base(x).numpy(), y_other, rtol=1e-5, atol=1e-5)
    m.unmerge()
    assert not m.merged
    np.testing.assert_allclose(base.weight.numpy(), w_before, rtol=0, atol=1e-6)
    np.testing.assert_allclose(m(x).numpy(), y_other, rtol=1e-5, atol=1e-6)
    with pytest.raises(KeyError, match="no adapter named 'nope'"):
        m.set_adapter("nope")


def test_lora_state_dict_roundtrip_and_trace():
    torch = _torch()
    m = gnn.LoraLinear((5, 3), r=2, lora_alpha=8, lora_dropout=0.1, bias=False)
    assert list(m.state_dict()) == ["base_layer.weight", "lora_A.default.weight", "lora_B.default.weight"]
    sd = {"base_layer.weight": torch.randn(3, 5), "lora_A.default.weight": torch.randn(2, 5),
          "lora_B.default.weight": torch.randn(3, 2)}
    m.load_state_dict(sd)
    m.eval()
    x = arr(4, 5)
    ref = (torch.from_numpy(x) @ sd["base_layer.weight"].T
           + 4.0 * (torch.from_numpy(x) @ sd["lora_A.default.weight"].T @ sd["lora_B.default.weight"].T))
    np.testing.assert_allclose(m(graphc.tensor(x)).numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)
    g = trace(m, (graphc.tensor(x),), dynamic={"x": {0: "B"}})
    np.testing.assert_allclose(interpret(g, x=arr(2, 5) * 0 + x[:2])["output"], ref.numpy()[:2], rtol=1e-5,
                               atol=1e-5)


# ------------------------------------------------------------------------------------------ tracing
class ConvNet(gnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = gnn.Sequential(
            gnn.Conv2d(3, 8, 3, padding=1), gnn.BatchNorm2d(8), gnn.ReLU(inplace=True), gnn.MaxPool2d(2),
            gnn.Conv2d(8, 8, 4, padding="same", groups=2), gnn.GroupNorm(2, 8), gnn.SiLU(),
            gnn.ConvTranspose2d(8, 4, 2, stride=2), gnn.AvgPool2d(3, 2, 1, ceil_mode=True),
            gnn.AdaptiveAvgPool2d((2, 2)),
        )
        self.head = gnn.Sequential(gnn.Flatten(), gnn.Dropout(0.2), gnn.Linear(16, 10), gnn.GELU(),
                                   gnn.LayerNorm(10), gnn.Linear(10, 5), gnn.LogSoftmax(dim=-1))

    def forward(self, x):
        return self.head(self.features(x))


class TinyEncoder(gnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = gnn.Embedding(20, 8, padding_idx=0)
        layer = gnn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True, norm_first=True)
        self.encoder = gnn.TransformerEncoder(layer, 2, norm=gnn.RMSNorm(8), enable_nested_tensor=False)
        self.attn = gnn.MultiheadAttention(8, 4, kdim=5, vdim=5)  # sequence-first, separate projections
        self.out = gnn.Linear(8, 3)

    def forward(self, tokens, memory):
        h = self.encoder(self.emb(tokens))
        a, w = self.attn(h.transpose(0, 1), memory, memory)
        return self.out(a.mean(0)), w


def test_models_trace_and_interpret_like_eager():
    graphc.manual_seed(0)
    net = ConvNet()
    bn = net.features[1]
    bn.running_mean.numpy()[...] = arr(8)
    bn.running_var.numpy()[...] = np.abs(arr(8)) + 0.5
    net.eval()
    g = trace(net, (G(2, 3, 8, 8),), dynamic={"x": {0: "B"}})
    for n in (1, 3):
        x = arr(n, 3, 8, 8)
        np.testing.assert_allclose(interpret(g, x=x)["output"], net(graphc.tensor(x)).numpy(), rtol=1e-5, atol=1e-5)
    assert net.training is False
    assert sorted(g.params) == sorted(net.state_dict().keys() - {"features.1.num_batches_tracked"})

    enc = TinyEncoder().eval()
    tokens = rng.integers(0, 20, size=(2, 6))
    g = trace(enc, (graphc.tensor(tokens), G(7, 2, 5)), dynamic={"tokens": {0: "B", 1: "T"}, "memory": {1: "B"}})
    for b, t, s in [(1, 6, 7), (3, 4, 7), (2, 9, 7)]:
        tk, mem = rng.integers(0, 20, size=(b, t)), arr(s, b, 5)
        got = interpret(g, tokens=tk, memory=mem)
        out, w = enc(graphc.tensor(tk), graphc.tensor(mem))
        np.testing.assert_allclose(got["output0"], out.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got["output1"], w.numpy(), rtol=1e-5, atol=1e-6)
    assert sorted(g.params) == sorted(enc.state_dict())  # packed-weight slices stay on the named parameters


def test_traced_parameters_keep_their_names():
    mha = gnn.MultiheadAttention(8, 2, batch_first=True).eval()
    q, kv, kpm = G(2, 3, 8), G(2, 5, 8), graphc.tensor(np.zeros((2, 5), bool))
    g = trace(mha, (q, kv, kv, kpm), dynamic={"query": {0: "B"}, "key": {0: "B"}, "value": {0: "B"},
                                             "key_padding_mask": {0: "B"}})
    assert sorted(g.params) == sorted(mha.state_dict())
    out, w = mha(q, kv, kv, kpm)
    got = interpret(g, query=q.numpy(), key=kv.numpy(), value=kv.numpy(), key_padding_mask=kpm.numpy())
    np.testing.assert_allclose(got["output0"], out.numpy(), rtol=1e-6)
    np.testing.assert_allclose(got["output1"], w.numpy(), rtol=1e-6)
    bn = gnn.Sequential(gnn.Linear(4, 4), gnn.BatchNorm1d(4, track_running_stats=False))
    assert sorted(trace(bn, (G(3, 4),)).params) == ["0.bias", "0.weight", "1.bias", "1.weight"]


def test_conv_with_dynamic_length():
    from graphc.ir.interpreter import interpret

    net = gnn.Sequential(gnn.Conv1d(2, 2, 3))
    g = trace(net, (G(1, 2, 8),), dynamic={"input": {2: "T"}})
    x = np.random.RandomState(0).randn(1, 2, 13).astype(np.float32)
    np.testing.assert_allclose(interpret(g, {"input": x})["output"], net(graphc.tensor(x)).numpy(), rtol=1e-5,
                               atol=1e-6)
    strided = gnn.Sequential(gnn.Conv1d(2, 2, 3, stride=2))
    with pytest.raises(ShapeError, match=r"conv: the output size \(T-3\)//2 \+ 1 .*in module '0'"):
        trace(strided, (G(1, 2, 8),), dynamic={"input": {2: "T"}})


def test_trace_puts_layers_in_eval_mode():
    net = gnn.Sequential(gnn.Linear(4, 4), gnn.Dropout(0.5), gnn.BatchNorm1d(4))
    net.train()
    g = trace(net, (G(3, 4),))
    ops = [n.op for n in g.nodes]
    assert "dropout" in ops and "batch_norm" in ops
    assert net.training
