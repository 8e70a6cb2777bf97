"""Neural-network ops: linear, convolution, pooling, normalisation, attention, embedding.

The contract (names, operands, attributes) that the front end (graphc.nn.functional), the passes and
the backends agree on. All float ops require operands of one float dtype.

  linear(x, weight, bias?)                         x[..., K] weight[N, K] bias[N] -> [..., N]
  bilinear(x1, x2, weight, bias?)                  x1[..., I1] x2[..., I2] weight[O, I1, I2] -> [..., O]
  conv[stride, padding, dilation, groups](x, weight, bias?)
        1-d or 2-d by weight rank: x[N, C, *S] weight[OC, C/groups, *K] -> [N, OC, *S'];
        stride/padding/dilation are int lists of len(S); padding is symmetric (the front end turns
        'same' with an even kernel into a `pad` op first)
  conv_transpose[stride, padding, output_padding, dilation, groups](x, weight, bias?)
        x[N, C, *S] weight[C, OC/groups, *K] -> [N, OC, *S'] (PyTorch ConvTranspose semantics)
  max_pool2d[kernel, stride, padding, dilation, ceil_mode](x)           x[N, C, H, W]
  avg_pool2d[kernel, stride, padding, ceil_mode, count_include_pad, divisor_override?](x)
  adaptive_avg_pool2d[output_size](x)                                   x[N, C, H, W]
  batch_norm[eps](x, mean, var, weight?, bias?)    eval mode; x[N, C, *], params [C]
  layer_norm[ndim, eps](x, weight?, bias?)         normalise over the last `ndim` dims
  group_norm[num_groups, eps](x, weight?, bias?)   x[N, C, *], weight/bias [C]
  rms_norm[ndim, eps](x, weight?)                  eps resolved by the front end (finfo eps if None)
  sdpa[scale, is_causal](q, k, v, mask?)           q[..., Tq, D] k[..., Tk, D] v[..., Tk, Dv];
        mask is an additive float mask broadcastable to [..., Tq, Tk] (the front end converts bool
        masks with where(mask, 0, -inf)); scale is always resolved (1/sqrt(D) by default)
  embedding(indices, weight)                       indices int64/int32 [...], weight [V, D] -> [..., D]
  dropout[p](x)                                    inference semantics: identity (removed by passes)
  identity(x)                                      identity (importers produce it; removed by passes)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._dtype import int32, int64
from ..errors import GraphcError, ShapeError
from ..sym import Dim, floor_div, is_static
from .registry import Attr, TensorType, broadcast_shapes, defop, float_only, same_dtype


# ------------------------------------------------------------------------------------------ helpers
def _fmt(shape: Sequence[Dim]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


def _floats(op: str, *types: TensorType | None) -> None:
    """All present operands float and of one dtype."""
    present = [t for t in types if t is not None]
    float_only(op, present[0])
    same_dtype(op, *present)


def _vector(op: str, name: str, t: TensorType | None, n: Dim) -> None:
    if t is not None and (t.ndim != 1 or t.shape[0] != n):
        raise ShapeError(f"{op}: {name} must have shape [{n}], got {_fmt(t.shape)}")


def _positive(op: str, name: str, vals: Sequence[int], n: int, *, minimum: int = 1) -> None:
    if len(vals) != n:
        raise ShapeError(f"{op}: {name} needs {n} value(s) (one per spatial dim), got {list(vals)}")
    if any(v < minimum for v in vals):
        raise ShapeError(f"{op}: {name} values must be >= {minimum}, got {list(vals)}")


def _spatial(x: TensorType, nsp: int) -> list[Dim]:
    """The spatial dims: ints, or Syms (dynamic H and W) whose output sizes the rules keep polynomial."""
    return list(x.shape[x.ndim - nsp:])


def _div(op: str, num: Dim, s: int) -> Dim:
    q = floor_div(num, s)
    if q is None:
        raise ShapeError(
            f"{op}: the output size ({num})//{s} + 1 of a dynamic spatial dim is not a polynomial of the dims "
            f"(stride {s}); declare the input size as a multiple of the total stride, e.g. "
            f"dynamic={{'x': {{2: 32 * graphc.Dim('h', 1, 8)}}}}")
    return q


def _too_small(o: Dim) -> bool:
    """o < 1, for a static size; a dynamic one is checked against the dims' ranges where they are
    known (while tracing), else left to the library's run-time range checks."""
    if is_static(o):
        return o < 1
    try:
        return o < 1
    except GraphcError:
        return False


def pool_out_size(size: Dim, k: int, s: int, p: int, d: int, ceil_mode: bool, op: str = "pool") -> Dim:
    """PyTorch's pooling_output_shape (symmetric padding)."""
    num = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = _div(op, num, s) + 1
    # the last window must start inside the input or the left padding; (out - 1) * s - size is static
    # whenever out is a polynomial (floor_div keeps size's non-constant part exact)
    if ceil_mode and (out - 1) * s - (size + p) >= 0:
        out -= 1
    return out


def conv_out_size(size: Dim, k: int, s: int, p: int, d: int, op: str = "conv") -> Dim:
    return _div(op, size + 2 * p - d * (k - 1) - 1, s) + 1


def conv_transpose_out_size(size: int, k: int, s: int, p: int, op: int, d: int) -> int:
    return (size - 1) * s - 2 * p + d * (k - 1) + op + 1


def _windows(xp: np.ndarray, out: Sequence[int], k: Sequence[int], s: Sequence[int], d: Sequence[int]):
    """Yield (kernel offset, strided view [..., *out]) over the last len(k) dims of a padded array."""
    nsp = len(k)
    lead = (slice(None),) * (xp.ndim - nsp)
    for off in np.ndindex(*k):
        idx = tuple(slice(o * dd, o * dd + ss * (n - 1) + 1, ss) for o, dd, ss, n in zip(off, d, s, out))
        yield off, xp[lead + idx]


# ----------------------------------------------------------------------------------------- linear
@defop("linear", ("x", "weight", "bias?"), family="linear")
def linear(x: TensorType, weight: TensorType, bias: TensorType | None = None) -> TensorType:
    """x[..., K] @ weight[N, K]^T + bias[N] -> [..., N]."""
    _floats("linear", x, weight, bias)
    if weight.ndim != 2:
        raise ShapeError(f"linear: weight must be 2-d [out_features, in_features], got {_fmt(weight.shape)}")
    if x.ndim < 1:
        raise ShapeError("linear: input must have at least 1 dim [..., in_features], got a 0-d tensor")
    if x.shape[-1] != weight.shape[1]:
        raise ShapeError(f"linear: input {_fmt(x.shape)} has {x.shape[-1]} features in its last dim, "
                         f"weight {_fmt(weight.shape)} expects {weight.shape[1]}")
    _vector("linear", "bias", bias, weight.shape[0])
    return TensorType((*x.shape[:-1], weight.shape[0]), x.dtype)


@linear.reference
def _(x, weight, bias=None):
    y = np.matmul(x.astype(np.float64), weight.astype(np.float64).T)
    if bias is not None:
        y = y + bias.astype(np.float64)
    return y.astype(x.dtype)


@defop("bilinear", ("x1", "x2", "weight", "bias?"), family="bilinear")
def bilinear(x1: TensorType, x2: TensorType, weight: TensorType, bias: TensorType | None = None) -> TensorType:
    """y[..., o] = sum_ij x1[..., i] weight[o, i, j] x2[..., j] + bias[o]."""
    _floats("bilinear", x1, x2, weight, bias)
    if weight.ndim != 3:
        raise ShapeError(f"bilinear: weight must be 3-d [out, in1, in2], got {_fmt(weight.shape)}")
    if x1.ndim < 1 or x2.ndim < 1:
        raise ShapeError("bilinear: inputs must have at least 1 dim")
    if x1.shape[:-1] != x2.shape[:-1]:
        raise ShapeError(f"bilinear: input1 {_fmt(x1.shape)} and input2 {_fmt(x2.shape)} must have the same "
                         "leading (batch) dims")
    if x1.shape[-1] != weight.shape[1] or x2.shape[-1] != weight.shape[2]:
        raise ShapeError(f"bilinear: inputs {_fmt(x1.shape)} and {_fmt(x2.shape)} do not match weight "
                         f"{_fmt(weight.shape)} (in1={weight.shape[1]}, in2={weight.shape[2]})")
    _vector("bilinear", "bias", bias, weight.shape[0])
    return TensorType((*x1.shape[:-1], weight.shape[0]), x1.dtype)


@bilinear.reference
def _(x1, x2, weight, bias=None):
    y = np.einsum("...i,oij,...j->...o", x1.astype(np.float64), weight.astype(np.float64),
                  x2.astype(np.float64), optimize=True)
    if bias is not None:
        y = y + bias.astype(np.float64)
    return y.astype(x1.dtype)


# ------------------------------------------------------------------------------------ convolution
_CONV_ATTRS = {"stride": Attr("ints"), "padding": Attr("ints"), "dilation": Attr("ints"),
               "groups": Attr("int", 1)}


@defop("conv", ("x", "weight", "bias?"), _CONV_ATTRS, family="conv")
def conv(x: TensorType, weight: TensorType, bias: TensorType | None = None, *,
         stride: tuple[int, ...], padding: tuple[int, ...], dilation: tuple[int, ...], groups: int) -> TensorType:
    """1-d/2-d convolution (cross-correlation, PyTorch's conv1d/conv2d) with symmetric zero padding."""
    _floats("conv", x, weight, bias)
    if weight.ndim not in (3, 4):
        raise ShapeError(f"conv: weight must be 3-d [OC, C/groups, K] (conv1d) or 4-d [OC, C/groups, KH, KW] "
                         f"(conv2d), got {_fmt(weight.shape)}")
    nsp = weight.ndim - 2
    if x.ndim != weight.ndim:
        raise ShapeError(f"conv: input must be {weight.ndim}-d [N, C, {'L' if nsp == 1 else 'H, W'}] for a "
                         f"{weight.ndim}-d weight, got {_fmt(x.shape)}")
    _positive("conv", "stride", stride, nsp)
    _positive("conv", "padding", padding, nsp, minimum=0)
    _positive("conv", "dilation", dilation, nsp)
    if groups < 1:
        raise ShapeError(f"conv: groups must be >= 1, got {groups}")
    oc, cg = weight.shape[0], weight.shape[1]
    if oc % groups:
        raise ShapeError(f"conv: out_channels {oc} is not divisible by groups {groups}")
    if x.shape[1] != cg * groups:
        raise ShapeError(f"conv: input {_fmt(x.shape)} has {x.shape[1]} channels, weight {_fmt(weight.shape)} "
                         f"with groups={groups} expects {cg * groups}")
    _vector("conv", "bias", bias, oc)
    sp = _spatial(x, nsp)
    out = []
    for i, n in enumerate(sp):
        k = weight.shape[2 + i]
        o = conv_out_size(n, k, stride[i], padding[i], dilation[i])
        if _too_small(o):
            raise ShapeError(f"conv: input {_fmt(x.shape)} with padding {list(padding)} is smaller than the "
                             f"dilated kernel {_fmt(weight.shape[2:])} (dilation {list(dilation)})")
        out.append(o)
    return TensorType((x.shape[0], oc, *out), x.dtype)


def _as2d(x: np.ndarray, nsp: int) -> np.ndarray:
    return x[..., None, :] if nsp == 1 else x


@conv.reference
def _(x, weight, bias=None, *, stride, padding, dilation, groups):
    nsp = weight.ndim - 2
    x2, w2 = _as2d(x, nsp).astype(np.float64), _as2d(weight, nsp).astype(np.float64)
    s, p, d = ((1, *stride), (0, *padding), (1, *dilation)) if nsp == 1 else (stride, padding, dilation)
    n, c, h, w = x2.shape
    oc, cg, kh, kw = w2.shape
    oh, ow = conv_out_size(h, kh, s[0], p[0], d[0]), conv_out_size(w, kw, s[1], p[1], d[1])
    xp = np.pad(x2, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    cols = np.empty((n, c, kh, kw, oh, ow))
    for (a, b), view in _windows(xp, (oh, ow), (kh, kw), s, d):
        cols[:, :, a, b] = view
    cols = cols.reshape(n, groups, cg, kh, kw, oh, ow)
    wg = w2.reshape(groups, oc // groups, cg, kh, kw)
    y = np.einsum("ngcabhw,gocab->ngohw", cols, wg, optimize=True).reshape(n, oc, oh, ow)
    if bias is not None:
        y = y + bias.astype(np.float64)[:, None, None]
    if nsp == 1:
        y = y[:, :, 0, :]
    return y.astype(x.dtype)


@defop("conv_transpose", ("x", "weight", "bias?"),
       {"stride": Attr("ints"), "padding": Attr("ints"), "output_padding": Attr("ints"),
        "dilation": Attr("ints"), "groups": Attr("int", 1)}, family="conv")
def conv_transpose(x: TensorType, weight: TensorType, bias: TensorType | None = None, *,
                   stride: tuple[int, ...], padding: tuple[int, ...], output_padding: tuple[int, ...],
                   dilation: tuple[int, ...], groups: int) -> TensorType:
    """1-d/2-d transposed convolution (PyTorch's conv_transpose1d/2d); weight [C, OC/groups, *K]."""
    op = "conv_transpose"
    _floats(op, x, weight, bias)
    if weight.ndim not in (3, 4):
        raise ShapeError(f"{op}: weight must be 3-d [C, OC/groups, K] or 4-d [C, OC/groups, KH, KW], "
                         f"got {_fmt(weight.shape)}")
    nsp = weight.ndim - 2
    if x.ndim != weight.ndim:
        raise ShapeError(f"{op}: input must be {weight.ndim}-d [N, C, {'L' if nsp == 1 else 'H, W'}] for a "
                         f"{weight.ndim}-d weight, got {_fmt(x.shape)}")
    _positive(op, "stride", stride, nsp)
    _positive(op, "padding", padding, nsp, minimum=0)
    _positive(op, "output_padding", output_padding, nsp, minimum=0)
    _positive(op, "dilation", dilation, nsp)
    for i in range(nsp):
        if output_padding[i] >= stride[i] and output_padding[i] >= dilation[i]:
            raise ShapeError(f"{op}: output_padding {list(output_padding)} must be smaller than either stride "
                             f"{list(stride)} or dilation {list(dilation)}")
    if groups < 1:
        raise ShapeError(f"{op}: groups must be >= 1, got {groups}")
    c = weight.shape[0]
    if c % groups:
        raise ShapeError(f"{op}: in_channels {c} is not divisible by groups {groups}")
    if x.shape[1] != c:
        raise ShapeError(f"{op}: input {_fmt(x.shape)} has {x.shape[1]} channels, weight {_fmt(weight.shape)} "
                         f"expects {c}")
    oc = weight.shape[1] * groups
    _vector(op, "bias", bias, oc)
    sp = _spatial(x, nsp)
    out = []
    for i, n in enumerate(sp):
        o = conv_transpose_out_size(n, weight.shape[2 + i], stride[i], padding[i], output_padding[i],
                                    dilation[i])
        if _too_small(o):
            raise ShapeError(f"{op}: output size {o} is too small (input {_fmt(x.shape)}, padding "
                             f"{list(padding)})")
        out.append(o)
    return TensorType((x.shape[0], oc, *out), x.dtype)


@conv_transpose.reference
def _(x, weight, bias=None, *, stride, padding, output_padding, dilation, groups):
    nsp = weight.ndim - 2
    x2, w2 = _as2d(x, nsp).astype(np.float64), _as2d(weight, nsp).astype(np.float64)
    if nsp == 1:
        s, p, op, d = (1, *stride), (0, *padding), (0, *output_padding), (1, *dilation)
    else:
        s, p, op, d = stride, padding, output_padding, dilation
    n, c, h, w = x2.shape
    _, ocg, kh, kw = w2.shape
    oh = conv_transpose_out_size(h, kh, s[0], p[0], op[0], d[0])
    ow = conv_transpose_out_size(w, kw, s[1], p[1], op[1], d[1])
    full = np.zeros((n, groups, ocg, (h - 1) * s[0] + d[0] * (kh - 1) + 1 + op[0],
                     (w - 1) * s[1] + d[1] * (kw - 1) + 1 + op[1]))
    xg = x2.reshape(n, groups, c // groups, h, w)
    wg = w2.reshape(groups, c // groups, ocg, kh, kw)
    for a in range(kh):
        for b in range(kw):
            contrib = np.einsum("ngchw,gco->ngohw", xg, wg[..., a, b], optimize=True)
            full[:, :, :, a * d[0]: a * d[0] + s[0] * (h - 1) + 1: s[0],
                 b * d[1]: b * d[1] + s[1] * (w - 1) + 1: s[1]] += contrib
    y = full.reshape(n, groups * ocg, *full.shape[3:])[:, :, p[0]: p[0] + oh, p[1]: p[1] + ow]
    if bias is not None:
        y = y + bias.astype(np.float64)[:, None, None]
    if nsp == 1:
        y = y[:, :, 0, :]
    return np.asarray(y, order="C").astype(x.dtype)


# ---------------------------------------------------------------------------------------- pooling
def _pool_rule(op: str, x: TensorType, kernel, stride, padding, dilation, ceil_mode) -> TensorType:
    float_only(op, x)
    if x.ndim != 4:
        raise ShapeError(f"{op}: input must be 4-d [N, C, H, W], got {_fmt(x.shape)}")
    _positive(op, "kernel", kernel, 2)
    _positive(op, "stride", stride, 2)
    _positive(op, "padding", padding, 2, minimum=0)
    _positive(op, "dilation", dilation, 2)
    for k, p in zip(kernel, padding):
        if p > k // 2:
            raise ShapeError(f"{op}: padding {list(padding)} must be at most half of the kernel {list(kernel)}")
    sp = _spatial(x, 2)
    out = [pool_out_size(n, k, s, p, d, ceil_mode, op)
           for n, k, s, p, d in zip(sp, kernel, stride, padding, dilation)]
    if any(_too_small(o) for o in out):
        raise ShapeError(f"{op}: output size {out} is too small for input {_fmt(x.shape)} (kernel {list(kernel)}, "
                         f"stride {list(stride)}, padding {list(padding)}, dilation {list(dilation)})")
    return TensorType((x.shape[0], x.shape[1], *out), x.dtype)


@defop("max_pool2d", ("x",), {"kernel": Attr("ints"), "stride": Attr("ints"), "padding": Attr("ints", (0, 0)),
                              "dilation": Attr("ints", (1, 1)), "ceil_mode": Attr("bool", False)},
       family="pool")
def max_pool2d(x: TensorType, kernel, stride, padding, dilation, ceil_mode) -> TensorType:
    """Max over windows; padding counts as -inf; the front end resolves stride=None to the kernel."""
    return _pool_rule("max_pool2d", x, kernel, stride, padding, dilation, ceil_mode)


def _pad_for_windows(x: np.ndarray, out, k, s, p, d, value: float) -> np.ndarray:
    widths = [(0, 0)] * (x.ndim - 2)
    for i in range(2):
        need = (out[i] - 1) * s[i] + d[i] * (k[i] - 1) + 1
        widths.append((p[i], max(0, need - x.shape[-2 + i] - p[i])))
    return np.pad(x, widths, constant_values=value)


@max_pool2d.reference
def _(x, kernel, stride, padding, dilation, ceil_mode):
    out = [pool_out_size(n, k, s, p, d, ceil_mode)
           for n, k, s, p, d in zip(x.shape[2:], kernel, stride, padding, dilation)]
    xp = _pad_for_windows(x, out, kernel, stride, padding, dilation, -np.inf)
    y = None
    for _, view in _windows(xp, out, kernel, stride, dilation):
        y = view.copy() if y is None else np.maximum(y, view)
    return y


@defop("avg_pool2d", ("x",), {"kernel": Attr("ints"), "stride": Attr("ints"), "padding": Attr("ints", (0, 0)),
                              "ceil_mode": Attr("bool", False), "count_include_pad": Attr("bool", True),
                              "divisor_override": Attr("int?", None)}, family="pool")
def avg_pool2d(x: TensorType, kernel, stride, padding, ceil_mode, count_include_pad,
               divisor_override) -> TensorType:
    """Mean over windows (PyTorch's count_include_pad / divisor_override rules)."""
    if divisor_override is not None and divisor_override == 0:
        raise ShapeError("avg_pool2d: divisor_override must be non-zero")
    return _pool_rule("avg_pool2d", x, kernel, stride, padding, (1, 1), ceil_mode)


def _avg_divisors(size: int, out: int, k: int, s: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output index along one dim: window length including padding (clipped to size + p), and
    the length of its part inside the input."""
    start = np.arange(out) * s - p
    end = np.minimum(start + k, size + p)
    with_pad = end - start
    inside = np.minimum(end, size) - np.maximum(start, 0)
    return with_pad.astype(np.float64), inside.astype(np.float64)


@avg_pool2d.reference
def _(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
    out = [pool_out_size(n, k, s, p, 1, ceil_mode) for n, k, s, p in zip(x.shape[2:], kernel, stride, padding)]
    xp = _pad_for_windows(x.astype(np.float64), out, kernel, stride, padding, (1, 1), 0.0)
    total = np.zeros((*x.shape[:2], *out))
    for _, view in _windows(xp, out, kernel, stride, (1, 1)):
        total += view
    if divisor_override is not None:
        div: np.ndarray | float = float(divisor_override)
    else:
        (ph, ih), (pw, iw) = (_avg_divisors(n, o, k, s, p)
                              for n, o, k, s, p in zip(x.shape[2:], out, kernel, stride, padding))
        div = np.outer(ph, pw) if count_include_pad else np.outer(ih, iw)
    return (total / div).astype(x.dtype)


@defop("adaptive_avg_pool2d", ("x",), {"output_size": Attr("ints")}, family="adaptive_pool")
def adaptive_avg_pool2d(x: TensorType, output_size: tuple[int, ...]) -> TensorType:
    """Mean over bins [floor(i*H/OH), ceil((i+1)*H/OH)) per output index i (PyTorch)."""
    float_only("adaptive_avg_pool2d", x)
    if x.ndim != 4:
        raise ShapeError(f"adaptive_avg_pool2d: input must be 4-d [N, C, H, W], got {_fmt(x.shape)}")
    _positive("adaptive_avg_pool2d", "output_size", output_size, 2)
    sp = _spatial(x, 2)
    if any(_too_small(d) for d in sp):
        raise ShapeError(f"adaptive_avg_pool2d: input {_fmt(x.shape)} has an empty spatial dim")
    return TensorType((x.shape[0], x.shape[1], *output_size), x.dtype)


def _adaptive_mean(x: np.ndarray, axis: int, out: int) -> np.ndarray:
    n = x.shape[axis]
    parts = []
    for i in range(out):
        lo, hi = (i * n) // out, -((-(i + 1) * n) // out)
        parts.append(np.take(x, range(lo, hi), axis=axis).mean(axis=axis, keepdims=True))
    return np.concatenate(parts, axis=axis)


@adaptive_avg_pool2d.reference
def _(x, output_size):
    y = _adaptive_mean(x.astype(np.float64), 2, output_size[0])
    return _adaptive_mean(y, 3, output_size[1]).astype(x.dtype)


# ---------------------------------------------------------------------------------- normalisation
@defop("batch_norm", ("x", "mean", "var", "weight?", "bias?"), {"eps": Attr("float", 1e-5)},
       family="norm")
def batch_norm(x: TensorType, mean: TensorType, var: TensorType, weight: TensorType | None = None,
               bias: TensorType | None = None, *, eps: float) -> TensorType:
    """Eval-mode batch norm: (x - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c] over x[N, C, *]."""
    _floats("batch_norm", x, mean, var, weight, bias)
    if x.ndim < 2:
        raise ShapeError(f"batch_norm: input must be [N, C, *] (at least 2 dims), got {_fmt(x.shape)}")
    c = x.shape[1]
    for name, t in (("running_mean", mean), ("running_var", var), ("weight", weight), ("bias", bias)):
        if t is not None and (t.ndim != 1 or t.shape[0] != c):
            raise ShapeError(f"batch_norm: {name} must have shape [{c}] for input {_fmt(x.shape)} "
                             f"(channels in dim 1), got {_fmt(t.shape)}")
    return x


def _channel(v: np.ndarray | None, ndim: int) -> np.ndarray | None:
    return None if v is None else v.astype(np.float64).reshape((1, -1) + (1,) * (ndim - 2))


@batch_norm.reference
def _(x, mean, var, weight=None, bias=None, *, eps):
    nd = x.ndim
    y = (x.astype(np.float64) - _channel(mean, nd)) / np.sqrt(_channel(var, nd) + eps)
    if weight is not None:
        y = y * _channel(weight, nd)
    if bias is not None:
        y = y + _channel(bias, nd)
    return y.astype(x.dtype)


@defop("layer_norm", ("x", "weight?", "bias?"), {"ndim": Attr("int"), "eps": Attr("float", 1e-5)},
       family="norm")
def layer_norm(x: TensorType, weight: TensorType | None = None, bias: TensorType | None = None, *,
               ndim: int, eps: float) -> TensorType:
    """Normalise over the last `ndim` dims (biased variance); weight/bias have those dims' shape."""
    _floats("layer_norm", x, weight, bias)
    if not 1 <= ndim <= x.ndim:
        raise ShapeError(f"layer_norm: ndim must be in 1..{x.ndim} for input {_fmt(x.shape)}, got {ndim}")
    norm_shape = x.shape[x.ndim - ndim:]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.shape != norm_shape:
            raise ShapeError(f"layer_norm: {name} must have the normalized shape {_fmt(norm_shape)} (the last "
                             f"{ndim} dim(s) of input {_fmt(x.shape)}), got {_fmt(t.shape)}")
    return x


@layer_norm.reference
def _(x, weight=None, bias=None, *, ndim, eps):
    axes = tuple(range(x.ndim - ndim, x.ndim))
    x64 = x.astype(np.float64)
    mu = x64.mean(axis=axes, keepdims=True)
    var = ((x64 - mu) ** 2).mean(axis=axes, keepdims=True)
    y = (x64 - mu) / np.sqrt(var + eps)
    if weight is not None:
        y = y * weight.astype(np.float64)
    if bias is not None:
        y = y + bias.astype(np.float64)
    return y.astype(x.dtype)


@defop("group_norm", ("x", "weight?", "bias?"), {"num_groups": Attr("int"), "eps": Attr("float", 1e-5)},
       family="norm")
def group_norm(x: TensorType, weight: TensorType | None = None, bias: TensorType | None = None, *,
               num_groups: int, eps: float) -> TensorType:
    """Normalise x[N, C, *] over each group of C/num_groups channels and all spatial positions."""
    _floats("group_norm", x, weight, bias)
    if x.ndim < 2:
        raise ShapeError(f"group_norm: input must be [N, C, *] (at least 2 dims), got {_fmt(x.shape)}")
    c = x.shape[1]
    if num_groups < 1 or not is_static(c) or c % num_groups:
        raise ShapeError(f"group_norm: {c} channels (input {_fmt(x.shape)}) are not divisible into "
                         f"num_groups={num_groups} groups")
    _vector("group_norm", "weight", weight, c)
    _vector("group_norm", "bias", bias, c)
    return x


@group_norm.reference
def _(x, weight=None, bias=None, *, num_groups, eps):
    n, c = x.shape[:2]
    g = x.astype(np.float64).reshape(n, num_groups, -1)
    mu = g.mean(axis=2, keepdims=True)
    var = ((g - mu) ** 2).mean(axis=2, keepdims=True)
    y = ((g - mu) / np.sqrt(var + eps)).reshape(x.shape)
    if weight is not None:
        y = y * _channel(weight, x.ndim)
    if bias is not None:
        y = y + _channel(bias, x.ndim)
    return y.astype(x.dtype)


@defop("rms_norm", ("x", "weight?"), {"ndim": Attr("int"), "eps": Attr("float")}, family="norm")
def rms_norm(x: TensorType, weight: TensorType | None = None, *, ndim: int, eps: float) -> TensorType:
    """x / sqrt(mean(x^2 over the last `ndim` dims) + eps) * weight."""
    _floats("rms_norm", x, weight)
    if not 1 <= ndim <= x.ndim:
        raise ShapeError(f"rms_norm: ndim must be in 1..{x.ndim} for input {_fmt(x.shape)}, got {ndim}")
    norm_shape = x.shape[x.ndim - ndim:]
    if weight is not None and weight.shape != norm_shape:
        raise ShapeError(f"rms_norm: weight must have the normalized shape {_fmt(norm_shape)} (the last {ndim} "
                         f"dim(s) of input {_fmt(x.shape)}), got {_fmt(weight.shape)}")
    return x


@rms_norm.reference
def _(x, weight=None, *, ndim, eps):
    axes = tuple(range(x.ndim - ndim, x.ndim))
    x64 = x.astype(np.float64)
    y = x64 / np.sqrt((x64 * x64).mean(axis=axes, keepdims=True) + eps)
    if weight is not None:
        y = y * weight.astype(np.float64)
    return y.astype(x.dtype)


# -------------------------------------------------------------------------------------- attention
@defop("sdpa", ("q", "k", "v", "mask?"), {"scale": Attr("float"), "is_causal": Attr("bool", False)},
       family="sdpa")
def sdpa(q: TensorType, k: TensorType, v: TensorType, mask: TensorType | None = None, *,
         scale: float, is_causal: bool) -> TensorType:
    """softmax(q @ k^T * scale + mask, causal: key j > query i masked) @ v; q/k/v share batch dims."""
    _floats("sdpa", q, k, v, mask)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.ndim < 2:
            raise ShapeError(f"sdpa: {name} must be [..., T, D] (at least 2 dims), got {_fmt(t.shape)}")
    if not (q.ndim == k.ndim == v.ndim) or q.shape[:-2] != k.shape[:-2] or q.shape[:-2] != v.shape[:-2]:
        raise ShapeError(f"sdpa: q {_fmt(q.shape)}, k {_fmt(k.shape)} and v {_fmt(v.shape)} must have the same "
                         "batch/head dims (the front end expands them)")
    if q.shape[-1] != k.shape[-1]:
        raise ShapeError(f"sdpa: q {_fmt(q.shape)} and k {_fmt(k.shape)} must have the same head size (last dim)")
    if k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"sdpa: k {_fmt(k.shape)} and v {_fmt(v.shape)} must have the same number of keys "
                         "(dim -2)")
    scores = (*q.shape[:-1], k.shape[-2])
    if mask is not None:
        if mask.ndim > len(scores):
            raise ShapeError(f"sdpa: mask {_fmt(mask.shape)} has more dims than the scores {_fmt(scores)}")
        try:
            b = broadcast_shapes("sdpa", mask.shape, scores)
        except ShapeError:
            b = None
        if b is None or tuple(b) != scores:
            raise ShapeError(f"sdpa: mask {_fmt(mask.shape)} does not broadcast to the scores {_fmt(scores)} "
                             "[..., Tq, Tk]")
    return TensorType((*q.shape[:-1], v.shape[-1]), q.dtype)


@sdpa.reference
def _(q, k, v, mask=None, *, scale, is_causal):
    tq, tk = q.shape[-2], k.shape[-2]
    if tk == 0:
        return np.zeros((*q.shape[:-1], v.shape[-1]), dtype=q.dtype)
    s = np.matmul(q.astype(np.float64), np.swapaxes(k.astype(np.float64), -1, -2)) * scale
    if mask is not None:
        s = s + mask.astype(np.float64)
    if is_causal:
        s = np.where(np.arange(tk)[None, :] > np.arange(tq)[:, None], -np.inf, s)
    with np.errstate(invalid="ignore"):
        m = s.max(axis=-1, keepdims=True)
        e = np.exp(s - m)
        p = e / e.sum(axis=-1, keepdims=True)
    p = np.where(np.isneginf(m), 0.0, p)  # a fully masked row attends to nothing: zeros, as PyTorch 2.x
    return np.matmul(p, v.astype(np.float64)).astype(q.dtype)


# -------------------------------------------------------------------------------------- embedding
@defop("embedding", ("indices", "weight"), family="embedding")
def embedding(indices: TensorType, weight: TensorType) -> TensorType:
    """Rows of weight[V, D] picked by integer indices [...] -> [..., D]; indices outside 0..V-1 fail."""
    if indices.dtype not in (int64, int32):
        raise ShapeError(f"embedding: indices must be int64 or int32, got {indices.dtype.name}")
    if weight.ndim != 2:
        raise ShapeError(f"embedding: weight must be 2-d [num_embeddings, embedding_dim], got {_fmt(weight.shape)}")
    return TensorType((*indices.shape, weight.shape[1]), weight.dtype)


@embedding.reference
def _(indices, weight):
    v = weight.shape[0]
    if indices.size:
        bad = (indices < 0) | (indices >= v)
        if bad.any():
            raise IndexError(f"embedding: index {int(indices[bad].flat[0])} is out of range for an embedding "
                             f"table of {v} rows (valid: 0..{v - 1})")
    return weight[indices]


# ------------------------------------------------------------------------------------- identities
@defop("dropout", ("x",), {"p": Attr("float", 0.5)}, family="view")
def dropout(x: TensorType, p: float) -> TensorType:
    """Inference-mode dropout: the identity (passes remove it)."""
    if not 0.0 <= p <= 1.0:
        raise ShapeError(f"dropout: probability p must be in [0, 1], got {p}")
    return x


@dropout.reference
def _(x, p):
    return x


@defop("identity", ("x",), family="view")
def identity(x: TensorType) -> TensorType:
    """The identity (importers produce it; passes remove it)."""
    return x


@identity.reference
def _(x):
    return x

