"""The neural-network ops of graphc/ops/nn.py: numpy references against torch.nn.functional (when
installed) over many shapes and attribute combinations, and the type rules' errors."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import ShapeError
from graphc.backend.c import CBackend
from graphc.ops import OPS, TensorType
from graphc.sym import Sym
from graphc.tensor import apply

rng = np.random.default_rng(0)


def arr(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def run(op: str, *arrays, **attrs) -> np.ndarray:
    """Evaluate through graphc.tensor.apply: type rule + reference, and the check that they agree."""
    ts = [None if a is None else graphc.from_numpy(np.ascontiguousarray(a)) for a in arrays]
    out = apply(op, *ts, **attrs).numpy()
    assert out.dtype == np.float32 or op == "embedding"
    return out


def T(a):  # noqa: N802
    import torch

    return None if a is None else torch.from_numpy(np.ascontiguousarray(a))


def close(a, b, rtol=1e-5, atol=1e-5):
    np.testing.assert_allclose(a, b.detach().numpy() if hasattr(b, "detach") else b, rtol=rtol, atol=atol)


def infer(op: str, *types, **attrs) -> TensorType:
    o = OPS[op]
    return o.infer_type(list(types), o.bind_attrs(attrs))


f32 = graphc.float32


def tt(*shape, dt=f32):
    return TensorType(tuple(shape), dt)


# ------------------------------------------------------------------------------------------ linear
@pytest.mark.parametrize("xshape", [(3,), (1, 3), (2, 5, 3), (4, 1, 1, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(xshape, bias):
    torch = pytest.importorskip("torch")
    x, w = arr(*xshape), arr(7, 3)
    b = arr(7) if bias else None
    close(run("linear", x, w, b), torch.nn.functional.linear(T(x), T(w), T(b)))


@pytest.mark.parametrize("lead", [(), (1,), (4,), (2, 3)])
def test_bilinear(lead):
    torch = pytest.importorskip("torch")
    x1, x2, w, b = arr(*lead, 3), arr(*lead, 5), arr(4, 3, 5), arr(4)
    close(run("bilinear", x1, x2, w, b), torch.nn.functional.bilinear(T(x1), T(x2), T(w), T(b)))
    close(run("bilinear", x1, x2, w), torch.nn.functional.bilinear(T(x1), T(x2), T(w)))


def test_linear_rules():
    assert infer("linear", tt(Sym.var("B"), 3), tt(5, 3)).shape == (Sym.var("B"), 5)
    with pytest.raises(ShapeError, match=r"linear: input \[2,4\] has 4 features.*expects 3"):
        infer("linear", tt(2, 4), tt(5, 3))
    with pytest.raises(ShapeError, match=r"linear: bias must have shape \[5\]"):
        infer("linear", tt(2, 3), tt(5, 3), tt(4))
    with pytest.raises(ShapeError, match="linear: weight must be 2-d"):
        infer("linear", tt(2, 3), tt(3))
    with pytest.raises(ShapeError, match="linear: operands must have the same dtype"):
        infer("linear", tt(2, 3, dt=graphc.float64), tt(5, 3))
    with pytest.raises(ShapeError, match="linear: expects a floating-point tensor"):
        infer("linear", tt(2, 3, dt=graphc.int64), tt(5, 3, dt=graphc.int64))
    with pytest.raises(ShapeError, match="bilinear: input1 .* same leading"):
        infer("bilinear", tt(2, 3), tt(4, 5), tt(4, 3, 5))


# -------------------------------------------------------------------------------------------- conv
CONV2D = [
    # x shape, weight shape, stride, padding, dilation, groups
    ((1, 1, 1, 1), (1, 1, 1, 1), 1, 0, 1, 1),
    ((2, 3, 7, 5), (4, 3, 3, 3), 1, 1, 1, 1),
    ((2, 3, 8, 9), (6, 3, 3, 2), (2, 3), (1, 0), 1, 1),
    ((1, 4, 9, 7), (6, 2, 3, 3), 1, 2, 2, 2),
    ((2, 6, 5, 5), (6, 1, 3, 3), 2, 1, 1, 6),  # depthwise
    ((1, 2, 11, 4), (3, 2, 5, 1), (3, 1), (2, 0), (2, 1), 1),
    ((3, 1, 4, 4), (2, 1, 4, 4), 1, 0, 1, 1),  # kernel = input
]


def _pair(v, n=2):
    return tuple(v) if isinstance(v, tuple) else (v,) * n


@pytest.mark.parametrize("xs,ws,s,p,d,g", CONV2D)
def test_conv2d(xs, ws, s, p, d, g):
    torch = pytest.importorskip("torch")
    x, w, b = arr(*xs), arr(*ws), arr(ws[0])
    for bias in (b, None):
        y = run("conv", x, w, bias, stride=_pair(s), padding=_pair(p), dilation=_pair(d), groups=g)
        close(y, torch.nn.functional.conv2d(T(x), T(w), T(bias), s, p, d, g))


@pytest.mark.parametrize("xs,ws,s,p,d,g", [
    ((1, 1, 1), (1, 1, 1), 1, 0, 1, 1),
    ((2, 3, 10), (4, 3, 3), 1, 1, 1, 1),
    ((2, 4, 13), (6, 2, 4), 3, 2, 2, 2),
    ((1, 5, 7), (5, 1, 7), 1, 3, 1, 5),
])
def test_conv1d(xs, ws, s, p, d, g):
    torch = pytest.importorskip("torch")
    x, w, b = arr(*xs), arr(*ws), arr(ws[0])
    y = run("conv", x, w, b, stride=(s,), padding=(p,), dilation=(d,), groups=g)
    close(y, torch.nn.functional.conv1d(T(x), T(w), T(b), s, p, d, g))


CONVT2D = [
    # x shape, weight shape, stride, padding, output_padding, dilation, groups
    ((1, 1, 1, 1), (1, 1, 1, 1), 1, 0, 0, 1, 1),
    ((2, 3, 4, 5), (3, 4, 3, 3), 1, 0, 0, 1, 1),
    ((2, 3, 4, 5), (3, 2, 3, 3), 2, 1, 1, 1, 1),
    ((1, 4, 3, 3), (4, 3, 2, 3), (2, 3), (0, 1), (1, 2), 1, 2),
    ((1, 2, 5, 4), (2, 3, 3, 2), 1, 1, 0, 2, 1),
    ((2, 6, 3, 3), (6, 1, 4, 4), 2, 1, 0, 1, 6),
]


@pytest.mark.parametrize("xs,ws,s,p,op,d,g", CONVT2D)
def test_conv_transpose2d(xs, ws, s, p, op, d, g):
    torch = pytest.importorskip("torch")
    x, w = arr(*xs), arr(*ws)
    b = arr(ws[1] * g)
    y = run("conv_transpose", x, w, b, stride=_pair(s), padding=_pair(p), output_padding=_pair(op),
            dilation=_pair(d), groups=g)
    close(y, torch.nn.functional.conv_transpose2d(T(x), T(w), T(b), s, p, op, g, d))


@pytest.mark.parametrize("xs,ws,s,p,op,d,g", [
    ((1, 1, 1), (1, 1, 1), 1, 0, 0, 1, 1),
    ((2, 3, 6), (3, 5, 4), 2, 1, 1, 1, 1),
    ((1, 4, 5), (4, 2, 3), 3, 2, 2, 2, 2),
])
def test_conv_transpose1d(xs, ws, s, p, op, d, g):
    torch = pytest.importorskip("torch")
    x, w = arr(*xs), arr(*ws)
    b = arr(ws[1] * g)
    y = run("conv_transpose", x, w, b, stride=(s,), padding=(p,), output_padding=(op,), dilation=(d,), groups=g)
    close(y, torch.nn.functional.conv_transpose1d(T(x), T(w), T(b), s, p, op, g, d))
    y = run("conv_transpose", x, w, stride=(s,), padding=(p,), output_padding=(op,), dilation=(d,), groups=g)
    close(y, torch.nn.functional.conv_transpose1d(T(x), T(w), None, s, p, op, g, d))


def test_conv_rules():
    a = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)}
    B = Sym.var("B")
    assert infer("conv", tt(B, 3, 8, 8), tt(4, 3, 3, 3), **a).shape == (B, 4, 6, 6)
    assert infer("conv", tt(2, 4, 8, 8), tt(6, 2, 3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1),
                 groups=2).shape == (2, 6, 4, 4)
    with pytest.raises(ShapeError, match=r"conv: input \[2,5,8,8\] has 5 channels.*expects 3"):
        infer("conv", tt(2, 5, 8, 8), tt(4, 3, 3, 3), **a)
    with pytest.raises(ShapeError, match="conv: input must be 4-d"):
        infer("conv", tt(3, 8, 8), tt(4, 3, 3, 3), **a)
    with pytest.raises(ShapeError, match="conv: out_channels 5 is not divisible by groups 2"):
        infer("conv", tt(1, 6, 8, 8), tt(5, 3, 3, 3), stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=2)
    with pytest.raises(ShapeError, match="conv: stride needs 2 value"):
        infer("conv", tt(1, 3, 8, 8), tt(4, 3, 3, 3), stride=(1,), padding=(0, 0), dilation=(1, 1))
    with pytest.raises(ShapeError, match="conv: .* smaller than the dilated kernel"):
        infer("conv", tt(1, 3, 2, 8), tt(4, 3, 3, 3), **a)
    H = Sym.var("H")
    assert infer("conv", tt(1, 3, H, 8), tt(4, 3, 3, 3), **a).shape == (1, 4, H - 2, 6)
    with pytest.raises(ShapeError, match=r"conv: the output size \(H-3\)//2 \+ 1 of a dynamic spatial dim"):
        infer("conv", tt(1, 3, H, 8), tt(4, 3, 3, 3), stride=(2, 2), padding=(0, 0), dilation=(1, 1))
    assert infer("conv", tt(1, 3, H * 4, 8), tt(4, 3, 3, 3), stride=(2, 2), padding=(1, 1),
                 dilation=(1, 1)).shape == (1, 4, H * 2, 4)
    with pytest.raises(ShapeError, match="conv: bias must have shape"):
        infer("conv", tt(1, 3, 8, 8), tt(4, 3, 3, 3), tt(3), **a)
    with pytest.raises(ShapeError, match="conv: weight must be 3-d"):
        infer("conv", tt(1, 3, 8, 8, 8), tt(4, 3, 3, 3, 3), **a)
    with pytest.raises(ShapeError, match="conv: missing required attribute 'stride'"):
        infer("conv", tt(1, 3, 8, 8), tt(4, 3, 3, 3))
    t = {"stride": (2, 2), "padding": (0, 0), "dilation": (1, 1)}
    with pytest.raises(ShapeError, match="conv_transpose: output_padding .* smaller than either stride"):
        infer("conv_transpose", tt(1, 3, 4, 4), tt(3, 2, 3, 3), output_padding=(2, 0), **t)
    with pytest.raises(ShapeError, match=r"conv_transpose: input \[1,4,4,4\] has 4 channels"):
        infer("conv_transpose", tt(1, 4, 4, 4), tt(3, 2, 3, 3), output_padding=(0, 0), **t)
    assert infer("conv_transpose", tt(B, 3, 4, 4), tt(3, 2, 3, 3), output_padding=(1, 1), groups=1,
                 **t).shape == (B, 2, 10, 10)


# ----------------------------------------------------------------------------------------- pooling
MAXPOOL = [
    # shape, kernel, stride, padding, dilation, ceil_mode
    ((1, 1, 1, 1), 1, 1, 0, 1, False),
    ((2, 3, 8, 8), 2, 2, 0, 1, False),
    ((2, 3, 7, 9), 3, 2, 1, 1, False),
    ((2, 3, 7, 9), 3, 2, 1, 1, True),
    ((1, 2, 6, 6), 2, 2, 1, 1, True),  # ceil: a last window starting in the right padding is dropped
    ((1, 2, 10, 11), (3, 2), (2, 3), (1, 1), (2, 1), True),
    ((1, 1, 5, 5), 3, 3, 0, 1, True),
    ((1, 1, 5, 5), 4, 1, 2, 1, False),
]


@pytest.mark.parametrize("shape,k,s,p,d,ceil", MAXPOOL)
def test_max_pool2d(shape, k, s, p, d, ceil):
    torch = pytest.importorskip("torch")
    x = arr(*shape)
    y = run("max_pool2d", x, kernel=_pair(k), stride=_pair(s), padding=_pair(p), dilation=_pair(d), ceil_mode=ceil)
    close(y, torch.nn.functional.max_pool2d(T(x), k, s, p, d, ceil_mode=ceil), rtol=0, atol=0)


AVGPOOL = [
    # shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override
    ((1, 1, 1, 1), 1, 1, 0, False, True, None),
    ((2, 3, 8, 8), 2, 2, 0, False, True, None),
    ((2, 3, 7, 9), 3, 2, 1, False, True, None),
    ((2, 3, 7, 9), 3, 2, 1, False, False, None),
    ((2, 3, 7, 9), 3, 2, 1, True, True, None),
    ((2, 3, 7, 9), 3, 2, 1, True, False, None),
    ((1, 2, 6, 5), (3, 2), (2, 1), (1, 1), True, True, None),
    ((1, 2, 6, 5), (3, 2), (2, 1), (1, 0), True, False, 5),
    ((1, 1, 5, 5), 4, 3, 2, True, True, None),
    ((1, 1, 5, 5), 4, 3, 2, True, False, None),
]


@pytest.mark.parametrize("shape,k,s,p,ceil,cip,div", AVGPOOL)
def test_avg_pool2d(shape, k, s, p, ceil, cip, div):
    torch = pytest.importorskip("torch")
    x = arr(*shape)
    y = run("avg_pool2d", x, kernel=_pair(k), stride=_pair(s), padding=_pair(p), ceil_mode=ceil,
            count_include_pad=cip, divisor_override=div)
    close(y, torch.nn.functional.avg_pool2d(T(x), k, s, p, ceil, cip, div))


@pytest.mark.parametrize("shape,out", [((1, 1, 1, 1), (1, 1)), ((2, 3, 7, 9), (3, 4)), ((1, 2, 5, 5), (5, 5)),
                                       ((1, 2, 4, 6), (7, 1)), ((2, 1, 10, 3), (3, 2))])
def test_adaptive_avg_pool2d(shape, out):
    torch = pytest.importorskip("torch")
    x = arr(*shape)
    close(run("adaptive_avg_pool2d", x, output_size=out), torch.nn.functional.adaptive_avg_pool2d(T(x), out))


def test_pool_rules():
    B = Sym.var("B")
    assert infer("max_pool2d", tt(B, 3, 7, 7), kernel=(3, 3), stride=(2, 2), ceil_mode=True).shape == (B, 3, 3, 3)
    with pytest.raises(ShapeError, match="max_pool2d: input must be 4-d"):
        infer("max_pool2d", tt(3, 7, 7), kernel=(3, 3), stride=(2, 2))
    with pytest.raises(ShapeError, match="max_pool2d: padding .* at most half of the kernel"):
        infer("max_pool2d", tt(1, 3, 7, 7), kernel=(3, 3), stride=(2, 2), padding=(2, 2))
    with pytest.raises(ShapeError, match="avg_pool2d: output size .* too small"):
        infer("avg_pool2d", tt(1, 3, 2, 7), kernel=(3, 3), stride=(1, 1))
    assert infer("avg_pool2d", tt(1, 3, Sym.var("H"), 7), kernel=(3, 3), stride=(1, 1)).shape == (
        1, 3, Sym.var("H") - 2, 5)
    with pytest.raises(ShapeError, match="avg_pool2d: the output size .* not a polynomial"):
        infer("avg_pool2d", tt(1, 3, Sym.var("H"), 7), kernel=(2, 2), stride=(2, 2))
    assert infer("avg_pool2d", tt(1, 3, Sym.var("H") * 2, 7), kernel=(3, 3), stride=(2, 2),
                 ceil_mode=True).shape == (1, 3, Sym.var("H"), 3)
    with pytest.raises(ShapeError, match="avg_pool2d: divisor_override must be non-zero"):
        infer("avg_pool2d", tt(1, 3, 7, 7), kernel=(3, 3), stride=(1, 1), divisor_override=0)
    with pytest.raises(ShapeError, match="adaptive_avg_pool2d: output_size needs 2"):
        infer("adaptive_avg_pool2d", tt(1, 3, 7, 7), output_size=(3,))
    with pytest.raises(ShapeError, match="max_pool2d: expects a floating-point tensor"):
        infer("max_pool2d", tt(1, 3, 7, 7, dt=graphc.int64), kernel=(3, 3), stride=(1, 1))


# ----------------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("shape", [(1, 1), (4, 3), (2, 3, 5), (2, 3, 4, 5), (1, 2, 1, 1, 3)])
def test_batch_norm(shape):
    torch = pytest.importorskip("torch")
    c = shape[1]
    x, m, v, w, b = arr(*shape), arr(c), np.abs(arr(c)) + 0.1, arr(c), arr(c)
    close(run("batch_norm", x, m, v, w, b, eps=1e-3),
          torch.nn.functional.batch_norm(T(x), T(m), T(v), T(w), T(b), False, 0.1, 1e-3))
    close(run("batch_norm", x, m, v, None, b), torch.nn.functional.batch_norm(T(x), T(m), T(v), None, T(b)))
    close(run("batch_norm", x, m, v), torch.nn.functional.batch_norm(T(x), T(m), T(v)))


@pytest.mark.parametrize("shape,nd", [((5,), 1), ((2, 7), 1), ((2, 3, 4), 2), ((1, 1, 1), 1), ((2, 3, 4, 5), 3)])
def test_layer_norm_and_rms_norm(shape, nd):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    ns = shape[len(shape) - nd:]
    x, w, b = arr(*shape) * 3 + 1, arr(*ns), arr(*ns)
    close(run("layer_norm", x, w, b, ndim=nd, eps=1e-5), F.layer_norm(T(x), ns, T(w), T(b), 1e-5))
    close(run("layer_norm", x, ndim=nd, eps=1e-6), F.layer_norm(T(x), ns, eps=1e-6))
    close(run("layer_norm", x, None, b, ndim=nd), F.layer_norm(T(x), ns, None, T(b)))
    close(run("rms_norm", x, w, ndim=nd, eps=1e-6), F.rms_norm(T(x), ns, T(w), 1e-6))
    eps = float(np.finfo(np.float32).eps)
    close(run("rms_norm", x, ndim=nd, eps=eps), F.rms_norm(T(x), ns))


@pytest.mark.parametrize("shape,g", [((1, 1, 2), 1), ((2, 6), 3), ((2, 6, 5), 2), ((2, 4, 3, 3), 4), ((1, 6, 2, 3), 1)])
def test_group_norm(shape, g):
    torch = pytest.importorskip("torch")
    c = shape[1]
    x, w, b = arr(*shape) * 2 - 1, arr(c), arr(c)
    close(run("group_norm", x, w, b, num_groups=g, eps=1e-5),
          torch.nn.functional.group_norm(T(x), g, T(w), T(b), 1e-5))
    close(run("group_norm", x, num_groups=g), torch.nn.functional.group_norm(T(x), g))


def test_norm_rules():
    B = Sym.var("B")
    assert infer("layer_norm", tt(B, 5, 8), tt(8), tt(8), ndim=1).shape == (B, 5, 8)
    with pytest.raises(ShapeError, match=r"layer_norm: weight must have the normalized shape \[8\].*got \[7\]"):
        infer("layer_norm", tt(2, 8), tt(7), ndim=1)
    with pytest.raises(ShapeError, match="layer_norm: ndim must be in 1..2"):
        infer("layer_norm", tt(2, 8), ndim=3)
    with pytest.raises(ShapeError, match=r"batch_norm: running_mean must have shape \[3\]"):
        infer("batch_norm", tt(2, 3, 4), tt(4), tt(3))
    with pytest.raises(ShapeError, match=r"batch_norm: input must be \[N, C, \*\]"):
        infer("batch_norm", tt(3), tt(3), tt(3))
    with pytest.raises(ShapeError, match="group_norm: 6 channels .* num_groups=4"):
        infer("group_norm", tt(2, 6, 3), num_groups=4)
    with pytest.raises(ShapeError, match="rms_norm: missing required attribute 'eps'"):
        infer("rms_norm", tt(2, 6), ndim=1)
    with pytest.raises(ShapeError, match="rms_norm: weight must have the normalized shape"):
        infer("rms_norm", tt(2, 6), tt(2, 6), ndim=1, eps=1e-6)


# --------------------------------------------------------------------------------------- attention
SDPA = [
    # q shape (..., Tq, D), Tk, Dv, mask shape or None, causal
    ((1, 1), 1, 1, None, False),
    ((2, 3, 5, 8), 7, 6, None, False),
    ((2, 3, 5, 8), 5, 8, None, True),
    ((2, 3, 4, 8), 6, 8, None, True),  # Tq < Tk: top-left causal
    ((2, 3, 6, 8), 4, 8, None, True),  # Tq > Tk
    ((2, 3, 5, 8), 7, 4, (5, 7), False),
    ((2, 3, 5, 8), 7, 4, (2, 1, 1, 7), False),
    ((2, 3, 5, 8), 7, 4, (2, 3, 5, 7), True),
    ((4, 3, 8), 3, 8, (4, 1, 3), False),
]


@pytest.mark.parametrize("qs,tk,dv,ms,causal", SDPA)
def test_sdpa(qs, tk, dv, ms, causal):
    torch = pytest.importorskip("torch")
    q, k, v = arr(*qs), arr(*qs[:-2], tk, qs[-1]), arr(*qs[:-2], tk, dv)
    mask = None if ms is None else np.where(rng.random(ms) < 0.2, -np.inf, arr(*ms)).astype(np.float32)
    if mask is not None:
        mask[..., 0] = 0.0  # no fully-masked rows (see test_sdpa_fully_masked_row)
    scale = 1 / np.sqrt(qs[-1])
    y = run("sdpa", q, k, v, mask, scale=float(scale), is_causal=causal)
    tq = qs[-2]
    tmask = T(mask)
    if causal:  # torch does not take both; fold the causal mask into the additive one
        cm = torch.triu(torch.full((tq, tk), float("-inf")), 1)
        tmask = cm if tmask is None else tmask + cm
    ref = torch.nn.functional.scaled_dot_product_attention(T(q), T(k), T(v), attn_mask=tmask)
    close(y, ref)
    y2 = run("sdpa", q, k, v, mask, scale=0.3, is_causal=causal)
    close(y2, torch.nn.functional.scaled_dot_product_attention(T(q), T(k), T(v), attn_mask=tmask, scale=0.3))


def test_sdpa_causal_matches_torch_is_causal():
    torch = pytest.importorskip("torch")
    for tq, tk in [(5, 5), (3, 6), (1, 4)]:
        q, k, v = arr(2, tq, 4), arr(2, tk, 4), arr(2, tk, 3)
        close(run("sdpa", q, k, v, scale=0.5, is_causal=True),
              torch.nn.functional.scaled_dot_product_attention(T(q), T(k), T(v), is_causal=True, scale=0.5))


def test_sdpa_fully_masked_row_and_no_keys():
    # as torch 2.13 (and runtime_c/graphc_rt.h): a fully masked row gives zeros; no keys gives zeros
    q, k, v = arr(1, 3, 4), arr(1, 3, 4), arr(1, 3, 2)
    mask = np.zeros((3, 3), np.float32)
    mask[1] = -np.inf
    y = run("sdpa", q, k, v, mask, scale=0.5)
    assert (y[0, 1] == 0).all() and np.isfinite(y[0, [0, 2]]).all()
    assert (run("sdpa", q, arr(1, 0, 4), arr(1, 0, 2), scale=0.5) == 0).all()


def test_sdpa_rules():
    B = Sym.var("B")
    assert infer("sdpa", tt(B, 2, 5, 8), tt(B, 2, 7, 8), tt(B, 2, 7, 3), scale=0.1).shape == (B, 2, 5, 3)
    with pytest.raises(ShapeError, match="sdpa: q .* and k .* same head size"):
        infer("sdpa", tt(2, 5, 8), tt(2, 7, 4), tt(2, 7, 4), scale=0.1)
    with pytest.raises(ShapeError, match="sdpa: k .* and v .* same number of keys"):
        infer("sdpa", tt(2, 5, 8), tt(2, 7, 8), tt(2, 6, 4), scale=0.1)
    with pytest.raises(ShapeError, match="sdpa: .* same batch/head dims"):
        infer("sdpa", tt(2, 5, 8), tt(3, 7, 8), tt(3, 7, 4), scale=0.1)
    with pytest.raises(ShapeError, match=r"sdpa: mask \[5,6\] does not broadcast to the scores \[2,5,7\]"):
        infer("sdpa", tt(2, 5, 8), tt(2, 7, 8), tt(2, 7, 4), tt(5, 6), scale=0.1)
    with pytest.raises(ShapeError, match="sdpa: operands must have the same dtype"):
        infer("sdpa", tt(2, 5, 8), tt(2, 7, 8), tt(2, 7, 4), tt(5, 7, dt=graphc.bool), scale=0.1)
    with pytest.raises(ShapeError, match="sdpa: missing required attribute 'scale'"):
        infer("sdpa", tt(2, 5, 8), tt(2, 7, 8), tt(2, 7, 4))


# --------------------------------------------------------------------------------------- embedding
@pytest.mark.parametrize("ishape", [(), (1,), (5,), (2, 3), (2, 1, 4)])
@pytest.mark.parametrize("idt", [np.int64, np.int32])
def test_embedding(ishape, idt):
    torch = pytest.importorskip("torch")
    w = arr(10, 3)
    idx = rng.integers(0, 10, size=ishape).astype(idt)
    y = run("embedding", idx, w)
    close(y, torch.nn.functional.embedding(T(idx.astype(np.int64)), T(w)), rtol=0, atol=0)


def test_embedding_errors():
    w = arr(4, 3)
    with pytest.raises(IndexError, match="embedding: index 4 is out of range .* 4 rows"):
        run("embedding", np.array([0, 4]), w)
    with pytest.raises(IndexError, match="embedding: index -1 is out of range"):
        run("embedding", np.array([[-1]]), w)
    with pytest.raises(ShapeError, match="embedding: indices must be int64 or int32, got float32"):
        infer("embedding", tt(3), tt(4, 3))
    with pytest.raises(ShapeError, match="embedding: weight must be 2-d"):
        infer("embedding", tt(3, dt=graphc.int64), tt(4))
    assert infer("embedding", tt(Sym.var("B"), 7, dt=graphc.int64), tt(4, 3)).shape == (Sym.var("B"), 7, 3)


# ------------------------------------------------------------------------------------- identities
def test_dropout_identity():
    x = arr(2, 3)
    assert (run("dropout", x, p=0.3) == x).all()
    assert (run("identity", x) == x).all()
    with pytest.raises(ShapeError, match=r"dropout: probability p must be in \[0, 1\]"):
        infer("dropout", tt(2), p=1.5)
    assert OPS["dropout"].lowering == OPS["identity"].lowering == "view"
    for name in ("linear", "conv", "conv_transpose", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "batch_norm",
                 "layer_norm", "group_norm", "rms_norm", "sdpa", "embedding", "bilinear"):
        assert OPS[name].ref is not None
        assert CBackend().lowering_for(OPS[name]) is not None, f"{name}: no C rule for family {OPS[name].family}"


def test_every_contract_op_is_defined():
    import graphc.ops.nn as nn_ops

    heads = []
    for line in nn_ops.__doc__.splitlines():
        head = line.strip().split("(")[0].split("[")[0]
        if head and head.isidentifier() and head.islower() and ("(" in line) and line.startswith("  ") \
                and not line.startswith("      "):
            heads.append(head)
    assert len(heads) == 15
    for head in heads:
        assert head in OPS, head
